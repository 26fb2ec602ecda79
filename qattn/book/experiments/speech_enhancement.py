"""Speech enhancement (the paper's main experiment), heavily scaled down to this project's machines.

Paper set-up (qsa.md §5-6): VoiceBank+DEMAND, release-sized models (0.80 M QConformer, 0.62 M
QTransformer, 3.19 M real Conformer), 400 epochs; table 2 (PESQ/STOI) and table 3 (RTF).
Here: the synthetic corpus of :mod:`qattn.book.data.speech` (a DIFFERENT, much easier-to-make corpus;
the paper's numbers are shown beside ours, never compared), NARROW models of the same
architecture (:class:`~qattn.book.models.speech.SpeechModelConfig` sizes per profile) trained for
about a hundred steps with the release's loss, and the release-sized models built untrained for
timing. Optimiser: AdamW, lr 1e-3 with a 10-step warm-up and cosine decay, betas (0.9, 0.999)
in the full profile (the release: lr 2e-4 constant, betas (0.5, 0.999), for 400 epochs; with
those betas and a constant lr our short runs diverged after 50-100 steps).

Variants (:data:`VARIANTS`): the real Conformer, and the QTransformer and QConformer each with
Hamilton and shared scores. Every variant sees the same batches (same seed), the same number of
steps and the same initial values where the parameters coincide (shared vs hamilton:
identical). The checkpoint is chosen by validation SI-SDR (validation split only); the test set
is evaluated once per trained model, plus the unprocessed noisy input. Nothing uses the clean
reference at inference (no sign flip, no loudness matching, unlike the release's evaluation).

Timing: real-time factor = (STFT + network + mask + iSTFT time) / audio duration at batch 1,
``threads`` threads, median (min, max) of ``repeats`` interleaved runs, after ``timing_warmup``
warm-up rounds before the first (shortest) length of each sweep (warm-up pays the first-call
costs once; rounds at the long lengths, up to 15 s each with materialised maps, are not repeated):
(a) the trained narrow models at each length, Hamilton also with its four maps materialised
(:class:`MaterialisedMaps`: the release's way of computing them; our ``score="hamilton"`` runs a
fused kernel that never stores them) where they fit in ``maps_limit_gb``; (b) release-sized
models: the attention layers alone at the exact bottleneck shapes at every length, and the whole
model, shared and Hamilton interleaved, directly at ``release_whole_s`` (6.86 s); RTFs at the
other lengths are COMPOSED as (whole − attention)·L/``release_whole_s`` + attention(L).
Memory: the peak resident memory of one whole-model forward at the longest length, each model in
a fresh process (:func:`peak_memory`): the trained sizes always, the release sizes where
``release_memory`` (off in the full profile: four more whole 6.86 s forwards, about 100 s, for
numbers that do not depend on the score: 732 MiB for all four in the run of 2026-12-02).

>>> cfg = config_for("ci")
>>> cfg.profile, cfg.variants[0]
('ci', 'real_conformer')
"""

from __future__ import annotations

import copy
import math
import os
import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qattn.metrics import mean_pairwise_js
from qattn.attention import QuaternionMultiheadAttention
from qattn.book.data.speech import SpeechCorpusConfig, SpeechSplit, load_speech_corpus, make_noise, mix_at_snr
from qattn.book.models.speech import HOP, N_FFT, SpeechEnhancer, SpeechModelConfig, count_parameters, release_config
from qattn.book.speech.losses import total_loss
from qattn.book.speech.metrics import evaluate_pair, si_sdr

__all__ = [
    "VARIANTS",
    "LABELS",
    "PAPER_QUALITY",
    "PAPER_RTF",
    "SpeechExperimentConfig",
    "config_for",
    "build_model",
    "train_one",
    "enhance_waves",
    "time_rtf",
    "run",
]

VARIANTS: dict[str, dict[str, str]] = {
    "real_conformer": {"kind": "real", "bottleneck": "conformer", "score": "shared"},
    "qtransformer_hamilton": {"kind": "quaternion", "bottleneck": "transformer", "score": "hamilton"},
    "qtransformer_shared": {"kind": "quaternion", "bottleneck": "transformer", "score": "shared"},
    "qconformer_hamilton": {"kind": "quaternion", "bottleneck": "conformer", "score": "hamilton"},
    "qconformer_shared": {"kind": "quaternion", "bottleneck": "conformer", "score": "shared"},
}
LABELS = {
    "noisy": "Noisy input",
    "real_conformer": "Conformer (real-valued)",
    "qtransformer_hamilton": "QTransformer, Hamilton",
    "qtransformer_shared": "QTransformer, shared",
    "qconformer_hamilton": "QConformer, Hamilton",
    "qconformer_shared": "QConformer, shared",
}
#: Paper table 2 (VoiceBank+DEMAND): PESQ, STOI.
PAPER_QUALITY = {
    "noisy": (1.97, 0.91),
    "real_conformer": (3.25, 0.95),
    "qtransformer_hamilton": (3.07, 0.95),
    "qtransformer_shared": (3.07, 0.95),
    "qconformer_hamilton": (3.11, 0.95),
    "qconformer_shared": (3.18, 0.95),
}
#: Paper table 3 (DNS-3, 6.86 s): CPU RTF hamilton, shared, reduction %; GPU likewise.
PAPER_RTF = {
    "qtransformer": {"cpu": (0.594, 0.249, 58.1), "gpu": (0.0192, 0.0107, 44.3)},
    "qconformer": {"cpu": (0.610, 0.259, 57.5), "gpu": (0.0202, 0.0157, 22.3)},
}
#: Frequency bins after the encoder's stride-2 convolution (F = n_fft/2 + 1 = 201 → 101).
FREQ_BOTTLENECK = (N_FFT // 2 + 2) // 2
PAPER_PARAMS = {"qconformer": 0.80e6, "qtransformer": 0.62e6, "real_conformer": 3.19e6}


@dataclass
class SpeechExperimentConfig:
    """Everything one run does; ``config_for(profile)`` gives the two profiles."""

    profile: str = "full"
    seed: int = 0
    corpus: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    quaternion_seeds: int = 2
    real_seeds: int = 1
    steps: int = 36
    batch_size: int = 4
    crop_s: float = 0.5
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    warmup_steps: int = 0
    cosine_decay: bool = False
    clip_norm: float = 1.0
    valid_every: int = 8
    valid_crop_s: float = 1.0
    n_test: int | None = None
    train_threads: int = 1
    threads: int = 2
    timing_lengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 6.86])
    timing_warmup: int = 1
    timing_repeats: int = 5
    release_timing: bool = True
    release_whole_s: float = 6.86
    release_whole_repeats: int = 3
    maps_limit_gb: float = 8.0
    memory: bool = True
    release_memory: bool = True
    divergence_s: float = 1.0
    divergence_sequences: int = 8
    n_examples: int = 3
    real_clip: str = "/usr/share/sounds/alsa/Front_Center.wav"


def config_for(profile: str, seed: int = 0, **overrides: Any) -> SpeechExperimentConfig:
    """The ``ci`` (about 2 minutes) or ``full`` (about 25 minutes on 2 cores) profile."""
    narrow = dict(growth=8, dense_width=16, d_model=16, num_heads=2, ffn_dim=32, conv_kernel=7,
                  n_time_blocks=1, n_freq_blocks=1, encoder_dilations=[1, 2], decoder_dilations=[2, 1],
                  dropout=0.0, attn_dropout=0.0)
    if profile == "full":
        cfg = SpeechExperimentConfig(
            profile="full", seed=seed, model=narrow,
            corpus=dict(n_train=120, n_valid=8, n_test=12, max_seconds=2.5, seed=seed),
            steps=80, valid_every=10, warmup_steps=10, cosine_decay=True, betas=(0.9, 0.999), train_threads=2,
            timing_repeats=3, release_whole_repeats=2, release_memory=False,
        )
    elif profile == "ci":
        tiny = dict(narrow, encoder_dilations=[1], decoder_dilations=[1], growth=4, dense_width=8)
        cfg = SpeechExperimentConfig(
            profile="ci", seed=seed, model=tiny,
            corpus=dict(n_train=8, n_valid=2, n_test=3, max_seconds=1.5, seed=seed),
            quaternion_seeds=1, steps=2, batch_size=2, valid_every=2, valid_crop_s=0.5,
            timing_lengths=[1.0], timing_repeats=2, release_timing=False, release_whole_s=1.0,
            divergence_s=0.5, divergence_sequences=2, n_examples=1,
        )
    else:
        raise ValueError(f"profile must be 'ci' or 'full', got {profile!r}")
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"unknown config field {key!r}")
        setattr(cfg, key, value)
    return cfg


def _as_config(config: SpeechExperimentConfig | Mapping[str, Any]) -> SpeechExperimentConfig:
    if isinstance(config, SpeechExperimentConfig):
        return config
    names = {f.name for f in dataclasses.fields(SpeechExperimentConfig)}
    return SpeechExperimentConfig(**{k: v for k, v in config.items() if k in names})


def _model_config(base: Mapping[str, Any], variant: str) -> SpeechModelConfig:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")
    kw = dict(base)
    for key in ("encoder_dilations", "decoder_dilations"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return SpeechModelConfig(**{**kw, **VARIANTS[variant]})  # type: ignore[arg-type]


def build_model(base: Mapping[str, Any], variant: str, seed: int) -> SpeechEnhancer:
    """The model of ``variant``, initialised under ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SpeechEnhancer(_model_config(base, variant))


# -- data ------------------------------------------------------------------------------------------

def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    if len(x) < n:  # shorter clips are tiled, as in the release
        x = np.tile(x, n // len(x) + 1)
    start = int(rng.integers(len(x) - n + 1))
    return start, x[start:start + n]


def _batches(split: SpeechSplit, steps: int, batch: int, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed sequence of training batches ``(noisy, clean)`` each ``(batch, n)`` for a seed."""
    rng = np.random.default_rng([seed, 11])
    out = []
    for _ in range(steps):
        noisy, clean = [], []
        for i in rng.integers(len(split), size=batch):
            start, c = _crop(split.clean[i], n, rng)
            tiled = np.tile(split.noisy[i], n // len(split.noisy[i]) + 1) if len(split.noisy[i]) < n else split.noisy[i]
            noisy.append(tiled[start:start + n])
            clean.append(c)
        out.append((torch.from_numpy(np.stack(noisy)), torch.from_numpy(np.stack(clean))))
    return out


def _valid_batch(split: SpeechSplit, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    noisy = [np.resize(x, n) for x in split.noisy]  # first n samples (tiled if shorter)
    clean = [np.resize(x, n) for x in split.clean]
    return torch.from_numpy(np.stack(noisy)), torch.from_numpy(np.stack(clean))


# -- training --------------------------------------------------------------------------------------

@torch.inference_mode()
def _valid_si_sdr(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    est = model(batch[0]).numpy()
    model.train()
    return float(np.mean([si_sdr(c, e) for c, e in zip(batch[1].numpy(), est)]))


def _lr_factor(step: int, total: int, warmup: int, cosine: bool) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then constant or cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_one(
    cfg: SpeechExperimentConfig, variant: str, seed: int, batches: list, valid: tuple[torch.Tensor, torch.Tensor], log: Callable[[str], None]
) -> tuple[SpeechEnhancer, dict[str, Any]]:
    """Train ``variant`` on ``batches``; keep the state with the best validation SI-SDR.

    Returns the best model (eval mode) and its history: per-step losses, validation curve, best
    step, wall time and parameter count.
    """
    model = build_model(cfg.model, variant, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, len(batches), cfg.warmup_steps, cfg.cosine_decay))
    history: dict[str, Any] = {"loss": [], "terms": [], "valid_step": [], "valid_si_sdr": [], "params": count_parameters(model)}
    best = (-float("inf"), 0, copy.deepcopy(model.state_dict()))
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1000)  # dropout masks
        model.train()
        for step, (noisy, clean) in enumerate(batches, 1):
            terms = total_loss(model(noisy), clean)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            sched.step()
            history["loss"].append(float(terms["total"].detach()))
            history["terms"].append({k: float(v.detach()) for k, v in terms.items() if k != "total"})
            if step % cfg.valid_every == 0 or step == len(batches):
                score = _valid_si_sdr(model, valid)
                history["valid_step"].append(step)
                history["valid_si_sdr"].append(score)
                if score > best[0]:
                    best = (score, step, copy.deepcopy(model.state_dict()))
                log(f"  {variant} seed {seed} step {step}/{len(batches)}: loss {terms['total']:.3f}, valid SI-SDR {score:.2f} dB")
    model.load_state_dict(best[2])
    history.update(best_step=best[1], best_valid_si_sdr=best[0], wall_s=time.perf_counter() - start)
    return model.eval(), history


@torch.inference_mode()
def enhance_waves(model: nn.Module, waves: list[np.ndarray]) -> list[np.ndarray]:
    """Enhance each wave at batch 1 (full length); float32 arrays of the same lengths."""
    model.eval()
    return [model(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))[None])[0].numpy() for w in waves]


def _evaluate(clean: list[np.ndarray], processed: list[np.ndarray], meta: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [evaluate_pair(c, p) for c, p in zip(clean, processed)]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["per_utterance_pesq"] = [r["pesq"] for r in rows]
    by_noise: dict[str, list[float]] = {}
    for r, m in zip(rows, meta):
        by_noise.setdefault(m["noise"], []).append(r["pesq"])
    out["pesq_by_noise"] = {k: float(np.mean(v)) for k, v in sorted(by_noise.items())}
    return out


# -- timing ----------------------------------------------------------------------------------------

def _time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, dict[str, float]]:
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(warmup + repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            if rep >= warmup:
                samples[n].append(time.perf_counter() - t0)
    return {n: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s), "repeats": len(s)} for n, s in samples.items()}


def _need_weights_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return args, {**kwargs, "need_weights": True, "average_attn_weights": False}


class MaterialisedMaps(nn.Module):
    """Run a quaternion model's Hamilton attention the release's way: the four N×N maps built.

    Our ``score="hamilton"`` attention runs one fused kernel that never stores the four weight
    maps; the release computes and stores them (``A_c = softmax(S_c)``, then ``A_c V_c``). This
    wrapper asks every attention module for its weights (``need_weights=True``), which makes it
    take that path; the output is identical, only time and memory differ. For timing only.
    """

    def __init__(self, model: SpeechEnhancer) -> None:
        super().__init__()
        if model.cfg.kind != "quaternion" or model.cfg.score != "hamilton":
            raise ValueError("MaterialisedMaps wraps a quaternion model with score='hamilton'")
        self.model = model

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        handles = [m.register_forward_pre_hook(_need_weights_hook, with_kwargs=True) for m in self.model.attention_modules()]
        try:
            return self.model(wave)
        finally:
            for h in handles:
                h.remove()


def maps_bytes(model_cfg: SpeechModelConfig, seconds: float) -> int:
    """Bytes of the four float32 weight maps of one time-axis attention layer (all F′ sequences at once)."""
    frames = int(round(seconds * 16000)) // HOP + 1
    return 4 * 4 * model_cfg.num_heads * FREQ_BOTTLENECK * frames * frames


def _memory_probe(model: dict[str, Any], seconds: float, threads: int, materialise_maps: bool) -> dict[str, Any]:
    """Child-process body of :func:`peak_memory`: one forward, peak resident memory above the start."""
    from qattn.book.experiments.performance import _status_kb

    torch.set_num_threads(threads)
    cfg = SpeechModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})
    torch.manual_seed(0)
    net: nn.Module = SpeechEnhancer(cfg).eval()
    if materialise_maps:
        net = MaterialisedMaps(net)  # type: ignore[arg-type]
    wave = 0.1 * torch.randn(1, int(round(seconds * 16000)), generator=torch.Generator().manual_seed(0))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    with torch.inference_mode():
        net(wave)
    elapsed = time.perf_counter() - t0
    return {"ok": True, "peak_bytes": _status_kb("VmHWM") * 1024 - base, "time_s": elapsed}


def peak_memory(model_cfg: SpeechModelConfig, seconds: float, threads: int = 2, materialise_maps: bool = False, timeout: float = 600) -> dict[str, Any]:
    """Peak extra resident memory (bytes) of one whole-model forward at batch 1, in a fresh process.

    Weights are random (memory does not depend on them). Returns ``{"ok", "peak_bytes", "time_s"}``
    or ``{"ok": False, "error"}``. Linux only (``/proc/self/clear_refs``).
    """
    import json
    import subprocess
    import sys

    args = {"model": model_cfg.to_dict(), "seconds": seconds, "threads": threads, "materialise_maps": materialise_maps}
    code = "import json, sys; from qattn.book.experiments.speech_enhancement import _memory_probe; print(json.dumps(_memory_probe(**json.loads(sys.argv[1]))))"
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "error": (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:200]}
    return json.loads(lines[-1])


def time_rtf(models: dict[str, nn.Module], lengths: list[float], warmup: int, repeats: int, seed: int = 0) -> list[dict[str, Any]]:
    """Interleaved whole-model real-time factors at batch 1 for each length (seconds).

    ``warmup`` rounds run before the first length only (later lengths reuse the warm kernels).
    """
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for i, seconds in enumerate(lengths):
        wave = 0.1 * torch.randn(1, int(round(seconds * 16000)), generator=gen)
        fns = {}
        for name, model in models.items():
            model.eval()
            fns[name] = (lambda m=model: m(wave))
        with torch.inference_mode():
            timed = _time_interleaved(fns, warmup if i == 0 else 0, repeats)
        for name, t in timed.items():
            rows.append({"model": name, "seconds": seconds, **t, "rtf": t["median_s"] / seconds,
                         "rtf_min": t["min_s"] / seconds, "rtf_max": t["max_s"] / seconds})
    return rows


@torch.inference_mode()
def _attention_share(model: SpeechEnhancer, seconds: float) -> float:
    """Share of one forward's time spent inside the bottleneck's attention modules (hooks)."""
    spent = [0.0]
    starts: list[float] = []
    handles = []
    for mha in model.attention_modules():
        handles.append(mha.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter())))
        handles.append(mha.register_forward_hook(lambda *_: spent.__setitem__(0, spent[0] + time.perf_counter() - starts.pop())))
    wave = 0.1 * torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0))
    model(wave)
    t0 = time.perf_counter()
    spent[0] = 0.0
    model(wave)
    total = time.perf_counter() - t0
    for h in handles:
        h.remove()
    return spent[0] / total


def _release_params() -> dict[str, int]:
    """Parameter counts of the release-sized QConformer, QTransformer and real Conformer."""
    return {
        "qconformer": count_parameters(SpeechEnhancer(release_config("conformer"))),
        "qtransformer": count_parameters(SpeechEnhancer(release_config("transformer"))),
        "real_conformer": count_parameters(SpeechEnhancer(release_config(kind="real"))),
    }


def _release_timing(cfg: SpeechExperimentConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Release-sized models (untrained): attention layers at every length, whole models at one length.

    - ``attention``: one time-axis and one frequency-axis release attention layer at the exact
      bottleneck shapes, interleaved: shared, Hamilton (fused) and Hamilton with materialised maps
      (only where the maps fit in ``maps_limit_gb``; otherwise the row records why not).
    - ``whole``: the whole release-sized model, shared and Hamilton interleaved, at
      ``release_whole_s`` (a direct measurement).
    - ``composed``: RTF at every length as (whole − attention)·L/``release_whole_s`` + attention(L),
      with the non-attention part taken from the shared model; at ``release_whole_s`` the direct
      values are reported beside it.
    """
    rel = release_config()
    out: dict[str, Any] = {"params": _release_params(), "attention": [], "whole": [], "composed": [], "maps_skipped": []}
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        mhas = {s: QuaternionMultiheadAttention(rel.d_model, rel.num_heads, score=s, batch_first=True).eval() for s in ("hamilton", "shared")}
    attn_time: dict[tuple[str, float], float] = {}
    for i, seconds in enumerate(cfg.timing_lengths):
        t = int(round(seconds * 16000)) // HOP + 1
        x_time = torch.randn(FREQ_BOTTLENECK, t, rel.d_model, generator=gen)
        x_freq = torch.randn(t, FREQ_BOTTLENECK, rel.d_model, generator=gen)
        fns: dict[str, Callable[[], Any]] = {}
        for s, mha in mhas.items():
            fns[s] = (lambda m=mha: (m(x_time, x_time, x_time, need_weights=False), m(x_freq, x_freq, x_freq, need_weights=False)))
        need = 2 * maps_bytes(rel, seconds)  # the maps and their scores
        if need <= cfg.maps_limit_gb * 2**30:
            fns["hamilton_maps"] = (lambda m=mhas["hamilton"]: (m(x_time, x_time, x_time, average_attn_weights=False),
                                                               m(x_freq, x_freq, x_freq, average_attn_weights=False)))
        else:
            out["maps_skipped"].append({"seconds": seconds, "needs_gb": need / 2**30, "limit_gb": cfg.maps_limit_gb})
        with torch.inference_mode():
            timed = _time_interleaved(fns, cfg.timing_warmup if i == 0 else 0, cfg.timing_repeats)
        for s, row in timed.items():
            # one time-axis and one frequency-axis layer per call; the release has n_time_blocks of each
            per_model = row["median_s"] * rel.n_time_blocks
            attn_time[(s, seconds)] = per_model
            out["attention"].append({"score": s, "seconds": seconds, "frames": t, **row, "model_attention_s": per_model})
        log(f"  release attention layers at {seconds} s: " + ", ".join(f"{s} {attn_time[(s, seconds)]:.3f} s" for s in timed))
    whole_s = cfg.release_whole_s
    for family, bottleneck in (("qconformer", "conformer"), ("qtransformer", "transformer")):
        models = {}
        for s in ("hamilton", "shared"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                models[s] = SpeechEnhancer(release_config(bottleneck, score=s)).eval()
        wave = 0.1 * torch.randn(1, int(round(whole_s * 16000)), generator=gen)
        with torch.inference_mode():
            for m in models.values():
                m(wave[:, :16000])  # warm-up on one second
            timed = _time_interleaved({s: (lambda m=m: m(wave)) for s, m in models.items()}, 0, cfg.release_whole_repeats)
        for s, row in timed.items():
            out["whole"].append({"family": family, "score": s, "seconds": whole_s, **row, "rtf": row["median_s"] / whole_s})
        log(f"  release {family} whole model at {whole_s} s: hamilton {timed['hamilton']['median_s']:.2f} s, shared {timed['shared']['median_s']:.2f} s")
        rest = timed["shared"]["median_s"] - attn_time.get(("shared", whole_s), 0.0)
        for seconds in cfg.timing_lengths:
            row = {"family": family, "seconds": seconds}
            for s in ("hamilton", "shared", "hamilton_maps"):
                if (s, seconds) not in attn_time:
                    continue
                total = rest * seconds / whole_s + attn_time[(s, seconds)]
                row[f"rtf_{s}"] = total / seconds
                row[f"attention_share_{s}"] = attn_time[(s, seconds)] / total
            row["reduction_pct"] = 100 * (1 - row["rtf_shared"] / row["rtf_hamilton"])
            if "rtf_hamilton_maps" in row:
                row["reduction_vs_maps_pct"] = 100 * (1 - row["rtf_shared"] / row["rtf_hamilton_maps"])
            if seconds == whole_s:
                row["rtf_hamilton_direct"] = timed["hamilton"]["median_s"] / seconds
                row["rtf_shared_direct"] = timed["shared"]["median_s"] / seconds
                row["reduction_direct_pct"] = 100 * (1 - row["rtf_shared_direct"] / row["rtf_hamilton_direct"])
            out["composed"].append(row)
    return out


def _memory_table(cfg: SpeechExperimentConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Peak memory of one whole-model forward at the longest length: trained sizes and release size."""
    longest = max(cfg.timing_lengths)
    rows = []
    cases: list[tuple[str, str, SpeechModelConfig, bool]] = []
    for v in cfg.variants:
        if VARIANTS[v]["kind"] == "quaternion":
            mc = _model_config(cfg.model, v)
            cases.append(("trained", v, mc, False))
            if VARIANTS[v]["score"] == "hamilton" and 2 * maps_bytes(mc, longest) <= cfg.maps_limit_gb * 2**30:
                cases.append(("trained", v + "_maps", mc, True))
    if cfg.release_timing and cfg.release_memory:
        for family, bottleneck in (("qtransformer", "transformer"), ("qconformer", "conformer")):
            for s in ("hamilton", "shared"):
                cases.append(("release", f"{family}_{s}", release_config(bottleneck, score=s), False))
    for size, name, mc, maps in cases:
        r = peak_memory(mc, longest, cfg.threads, materialise_maps=maps)
        rows.append({"size": size, "model": name, "seconds": longest, **r})
        log(f"  peak memory {size} {name} at {longest} s: " + (f"{r['peak_bytes'] / 2**20:.0f} MiB" if r["ok"] else r["error"]))
    return rows


# -- divergence ------------------------------------------------------------------------------------

@torch.inference_mode()
def _divergence(model: SpeechEnhancer, wave: np.ndarray, sequences: int) -> dict[str, Any]:
    _, time_maps, freq_maps = model.forward_with_maps(torch.from_numpy(wave)[None], maps_for=sequences)
    def js(m: torch.Tensor) -> float:
        four = m if m.dim() == 5 else m.unsqueeze(2).expand(-1, -1, 4, -1, -1)  # shared: one map, four times
        return float(mean_pairwise_js(four.double(), component_dim=2).mean())
    return {"time": [js(m) for m in time_maps], "freq": [js(m) for m in freq_maps]}


# -- run -------------------------------------------------------------------------------------------

def _real_clip(path: str, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The alsa-utils voice clip at 16 kHz and a noisy copy (babble-free pink noise + hum, 5 dB)."""
    from qattn.book.speech.audio import read_wav, to_mono_16k

    if not Path(path).exists():
        return None
    wave, rate = read_wav(path)
    clean = to_mono_16k(wave, rate)
    rng = np.random.default_rng([seed, 99])
    noise = make_noise("pink", len(clean), rng) + 0.5 * make_noise("hum", len(clean), rng)
    return mix_at_snr(clean, noise, 5.0)


def run(
    config: SpeechExperimentConfig | Mapping[str, Any], log: Callable[[str], None] = print, save_dir: str | Path | None = None
) -> dict[str, Any]:
    """Generate the corpus, train every variant, evaluate, time, measure divergence; return metrics.

    Checkpoints (``save_dir/speech_models/<variant>.pt``, seed ``cfg.seed``), example waves
    (``speech_examples.npz``) and attention maps (``speech_maps.npz``) go to ``save_dir`` when set.
    """
    cfg = _as_config(config)
    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    save = Path(save_dir) if save_dir is not None else None
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"wall_s": {}}
    try:
        t0 = time.perf_counter()
        corpus_cfg = SpeechCorpusConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.corpus.items()})
        corpus = load_speech_corpus(corpus_cfg)
        metrics["wall_s"]["corpus"] = time.perf_counter() - t0
        metrics["corpus"] = {
            "config": corpus_cfg.to_dict(), "cache_key": corpus_cfg.cache_key(),
            "sizes": {s: len(corpus.split(s)) for s in ("train", "valid", "test")},
            "seconds": {s: corpus.split(s).seconds() for s in ("train", "valid", "test")},
            "unseen_test_noises": list(corpus_cfg.unseen_test_noises()),
            "test_meta": corpus.test.meta,
        }
        log(f"[speech] corpus {corpus_cfg.cache_key()}: {metrics['corpus']['sizes']} ({metrics['wall_s']['corpus']:.1f} s)")

        # training ------------------------------------------------------------------------------
        torch.set_num_threads(cfg.train_threads)
        n_crop = int(cfg.crop_s * 16000)
        valid = _valid_batch(corpus.valid, int(cfg.valid_crop_s * 16000))
        test = corpus.test
        n_test = len(test) if cfg.n_test is None else min(cfg.n_test, len(test))
        clean_test, noisy_test, meta_test = test.clean[:n_test], test.noisy[:n_test], test.meta[:n_test]
        t0 = time.perf_counter()
        metrics["test"] = {"noisy": _evaluate(clean_test, noisy_test, meta_test)}
        metrics["wall_s"]["evaluate_noisy"] = time.perf_counter() - t0
        training: dict[str, list[dict[str, Any]]] = {}
        per_seed: dict[str, list[dict[str, Any]]] = {}
        best_models: dict[str, SpeechEnhancer] = {}
        examples: dict[str, np.ndarray] = {}
        t_train = t_eval = 0.0
        for variant in cfg.variants:
            n_seeds = cfg.real_seeds if VARIANTS[variant]["kind"] == "real" else cfg.quaternion_seeds
            for k in range(n_seeds):
                seed = cfg.seed + k
                batches = _batches(corpus.train, cfg.steps, cfg.batch_size, n_crop, seed)
                t0 = time.perf_counter()
                model, hist = train_one(cfg, variant, seed, batches, valid, log)
                t_train += time.perf_counter() - t0
                t0 = time.perf_counter()
                enhanced = enhance_waves(model, noisy_test)
                scores = _evaluate(clean_test, enhanced, meta_test)
                t_eval += time.perf_counter() - t0
                training.setdefault(variant, []).append({"seed": seed, **hist})
                per_seed.setdefault(variant, []).append({"seed": seed, **scores})
                log(f"[speech] {variant} seed {seed}: PESQ {scores['pesq']:.3f}, STOI {scores['stoi']:.3f}, SI-SDR {scores['si_sdr']:.2f} dB ({hist['wall_s']:.0f} s)")
                if k == 0:
                    best_models[variant] = model
                    for i in range(min(cfg.n_examples, n_test)):
                        examples[f"{variant}/{i}"] = enhanced[i]
                    if save is not None:
                        (save / "speech_models").mkdir(parents=True, exist_ok=True)
                        torch.save({"config": _model_config(cfg.model, variant).to_dict(), "state_dict": model.state_dict()},
                                   save / "speech_models" / f"{variant}.pt")
        metrics["wall_s"]["train"] = t_train
        metrics["wall_s"]["evaluate"] = t_eval
        metrics["training"] = training
        metrics["test"].update({v: _mean_over_seeds(rows) for v, rows in per_seed.items()})
        metrics["test_per_seed"] = per_seed

        # divergence ----------------------------------------------------------------------------
        t0 = time.perf_counter()
        div_wave = np.resize(noisy_test[0], int(cfg.divergence_s * 16000)).astype(np.float32)
        metrics["divergence"] = {v: _divergence(m, div_wave, cfg.divergence_sequences) for v, m in best_models.items() if VARIANTS[v]["kind"] == "quaternion"}
        if save is not None:
            _save_maps(best_models, div_wave, save)
        metrics["wall_s"]["divergence"] = time.perf_counter() - t0

        # examples (and the real recorded clip) ---------------------------------------------------
        if save is not None:
            real = _real_clip(cfg.real_clip, cfg.seed)
            for i in range(min(cfg.n_examples, n_test)):
                examples[f"clean/{i}"], examples[f"noisy/{i}"] = clean_test[i], noisy_test[i]
            if real is not None:
                examples["clean/real"], examples["noisy/real"] = real
                for v, m in best_models.items():
                    examples[f"{v}/real"] = enhance_waves(m, [real[1]])[0]
            np.savez_compressed(save / "speech_examples.npz", **{k.replace("/", "__"): v for k, v in examples.items()})
            metrics["real_clip"] = cfg.real_clip if real is not None else None

        # timing --------------------------------------------------------------------------------
        torch.set_num_threads(cfg.threads)
        t0 = time.perf_counter()
        timed: dict[str, nn.Module] = {v: m for v, m in best_models.items() if VARIANTS[v]["kind"] == "quaternion"}
        longest = max(cfg.timing_lengths)
        metrics["attention_share_trained"] = {v: _attention_share(m, longest) for v, m in timed.items()}
        maps_lengths = [L for L in cfg.timing_lengths if 2 * maps_bytes(_model_config(cfg.model, "qtransformer_hamilton"), L) <= cfg.maps_limit_gb * 2**30]
        rows = time_rtf(timed, [L for L in cfg.timing_lengths if L not in maps_lengths], cfg.timing_warmup, cfg.timing_repeats, cfg.seed)
        with_maps = {**timed, **{f"{v}_maps": MaterialisedMaps(m) for v, m in timed.items() if VARIANTS[v]["score"] == "hamilton"}}
        rows += time_rtf(with_maps, maps_lengths, cfg.timing_warmup, cfg.timing_repeats, cfg.seed)
        metrics["rtf_trained"] = sorted(rows, key=lambda r: (r["seconds"], r["model"]))
        metrics["wall_s"]["timing_trained"] = time.perf_counter() - t0
        log(f"[speech] timed trained models ({metrics['wall_s']['timing_trained']:.0f} s)")
        if cfg.release_timing:
            t0 = time.perf_counter()
            metrics["release"] = _release_timing(cfg, log)
            metrics["wall_s"]["timing_release"] = time.perf_counter() - t0
        if cfg.memory:
            t0 = time.perf_counter()
            metrics["memory"] = _memory_table(cfg, log)
            metrics["wall_s"]["memory"] = time.perf_counter() - t0
        metrics["params_trained"] = {v: count_parameters(m) for v, m in best_models.items()}
        metrics["params_release"] = metrics["release"]["params"] if "release" in metrics else _release_params()
        metrics["threads"] = {"train": cfg.train_threads, "timing": cfg.threads}
    finally:
        torch.set_num_threads(threads_before)
    metrics["wall_s"]["total"] = time.perf_counter() - t_start
    metrics["headline"] = headline(metrics)
    return metrics


def _mean_over_seeds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out.update({f"{k}_std": float(np.std([r[k] for r in rows])) for k in ("pesq", "stoi", "si_sdr")})
    out["pesq_by_noise"] = {n: float(np.mean([r["pesq_by_noise"][n] for r in rows])) for n in rows[0]["pesq_by_noise"]}
    out["seeds"] = [r["seed"] for r in rows]
    return out


@torch.inference_mode()
def _save_maps(models: dict[str, SpeechEnhancer], wave: np.ndarray, save: Path) -> None:
    """First time-block maps (sequence 0, head 0) for the figure: 4 Hamilton maps and the shared map."""
    arrays = {}
    for v, m in models.items():
        if VARIANTS[v]["kind"] != "quaternion":
            continue
        _, time_maps, _ = m.forward_with_maps(torch.from_numpy(wave)[None], maps_for=1)
        arrays[v] = time_maps[0][0, 0].float().numpy()
    np.savez_compressed(save / "speech_maps.npz", **arrays)


def _rtf_row(rows: list[dict[str, Any]], model: str, seconds: float) -> float | None:
    for r in rows:
        if r["model"] == model and r["seconds"] == seconds:
            return r["rtf"]
    return None


def headline(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Headline entries (qattn.book.report format). Quality numbers have no paper target: different corpus."""
    from qattn.book.report import headline as entry

    rows = []
    test = metrics["test"]
    for v in ["noisy", *VARIANTS]:
        if v in test:
            rows.append(entry(f"test PESQ, {LABELS[v]}", round(test[v]["pesq"], 4), tolerance=0.1, kind="relative"))
    for family in ("qtransformer", "qconformer"):
        h, s = test.get(f"{family}_hamilton"), test.get(f"{family}_shared")
        if h and s:
            rows.append(entry(f"{family} PESQ shared − hamilton", round(s["pesq"] - h["pesq"], 4), tolerance=0.15, kind="exact"))
    longest = max(r["seconds"] for r in metrics["rtf_trained"]) if metrics.get("rtf_trained") else None
    for family in ("qtransformer", "qconformer"):
        h = _rtf_row(metrics.get("rtf_trained", []), f"{family}_hamilton", longest)
        s = _rtf_row(metrics.get("rtf_trained", []), f"{family}_shared", longest)
        if h and s:
            rows.append(entry(f"{family} (trained, narrow) CPU RTF reduction % at {longest} s", round(100 * (1 - s / h), 2), tolerance=0.5, kind="ratio"))
        hm = _rtf_row(metrics.get("rtf_trained", []), f"{family}_hamilton_maps", longest)
        if hm and s:
            rows.append(entry(f"{family} (trained, narrow) CPU RTF reduction % at {longest} s vs Hamilton with materialised maps",
                              round(100 * (1 - s / hm), 2), tolerance=0.5, kind="ratio", paper=PAPER_RTF[family]["cpu"][2]))
    release = metrics.get("release")
    if release:
        for family in ("qtransformer", "qconformer"):
            row = [r for r in release["composed"] if r["family"] == family and r["seconds"] == max(x["seconds"] for x in release["composed"])][0]
            value = row.get("reduction_direct_pct", row["reduction_pct"])
            how = "measured" if "reduction_direct_pct" in row else "composed"
            rows.append(entry(f"{family} (release size, {how}) CPU RTF reduction % at {row['seconds']} s", round(value, 2),
                              tolerance=0.5, kind="ratio", paper=PAPER_RTF[family]["cpu"][2]))
        for name, n in release["params"].items():
            rows.append(entry(f"release-size parameters, {name}", n, tolerance=0.05, kind="relative", paper=PAPER_PARAMS[name]))
    for v, d in metrics.get("divergence", {}).items():
        for axis in ("time", "freq"):
            value = float(np.mean(d[axis])) if d[axis] else 0.0
            if VARIANTS[v]["score"] == "shared":
                rows.append(entry(f"JS divergence, {LABELS[v]}, {axis} blocks", value, tolerance=0.0, kind="exact"))
            else:
                rows.append(entry(f"JS divergence, {LABELS[v]}, {axis} blocks", round(value, 6), tolerance=0.5, kind="relative"))
    return rows
