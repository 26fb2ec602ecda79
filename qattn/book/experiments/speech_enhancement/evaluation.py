"""Evaluation of trained enhancers: quality metrics, attention-map divergence, examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qattn.book.data.speech import make_noise, mix_at_snr
from qattn.book.experiments.speech_enhancement.config import VARIANTS
from qattn.book.models.speech import SpeechEnhancer
from qattn.book.speech.metrics import evaluate_pair
from qattn.metrics import mean_pairwise_js


@torch.inference_mode()
def enhance_waves(model: nn.Module, waves: list[np.ndarray]) -> list[np.ndarray]:
    """Enhance each wave at batch 1 (full length); float32 arrays of the same lengths."""
    model.eval()
    return [model(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))[None])[0].numpy() for w in waves]


def score_waves(clean: list[np.ndarray], processed: list[np.ndarray], meta: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [evaluate_pair(c, p) for c, p in zip(clean, processed)]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    for key in ("pesq", "stoi", "si_sdr"):
        out[f"per_utterance_{key}"] = [r[key] for r in rows]
    by_noise: dict[str, list[float]] = {}
    for r, m in zip(rows, meta):
        by_noise.setdefault(m["noise"], []).append(r["pesq"])
    out["pesq_by_noise"] = {k: float(np.mean(v)) for k, v in sorted(by_noise.items())}
    return out


def mean_over_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out.update({f"{k}_std": float(np.std([r[k] for r in rows])) for k in ("pesq", "stoi", "si_sdr")})
    out["pesq_by_noise"] = {n: float(np.mean([r["pesq_by_noise"][n] for r in rows])) for n in rows[0]["pesq_by_noise"]}
    out["seeds"] = [r["seed"] for r in rows]
    return out


@torch.inference_mode()
def component_divergence(model: SpeechEnhancer, wave: np.ndarray, sequences: int) -> dict[str, Any]:
    _, time_maps, freq_maps = model.forward_with_maps(torch.from_numpy(wave)[None], maps_for=sequences)

    def js(m: torch.Tensor) -> float:
        four = m if m.dim() == 5 else m.unsqueeze(2).expand(-1, -1, 4, -1, -1)  # shared: one map, four times
        return float(mean_pairwise_js(four.double(), component_dim=2).mean())

    return {"time": [js(m) for m in time_maps], "freq": [js(m) for m in freq_maps]}


@torch.inference_mode()
def save_maps(models: dict[str, SpeechEnhancer], wave: np.ndarray, save: Path) -> None:
    """First time-block maps (sequence 0, head 0) for the figure: 4 Hamilton maps and the shared map."""
    arrays = {}
    for v, m in models.items():
        if VARIANTS[v]["kind"] != "quaternion":
            continue
        _, time_maps, _ = m.forward_with_maps(torch.from_numpy(wave)[None], maps_for=1)
        arrays[v] = time_maps[0][0, 0].float().numpy()
    np.savez_compressed(save / "speech_maps.npz", **arrays)


def real_clip(path: str, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The alsa-utils voice clip at 16 kHz and a noisy copy (babble-free pink noise + hum, 5 dB)."""
    from qattn.book.speech.audio import read_wav, to_mono_16k

    if not Path(path).exists():
        return None
    wave, rate = read_wav(path)
    clean = to_mono_16k(wave, rate)
    rng = np.random.default_rng([seed, 99])
    noise = make_noise("pink", len(clean), rng) + 0.5 * make_noise("hum", len(clean), rng)
    return mix_at_snr(clean, noise, 5.0)
