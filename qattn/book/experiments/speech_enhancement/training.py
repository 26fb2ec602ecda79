"""Training of one speech-enhancement variant: fixed batch sequence, validation SI-SDR selection."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from qattn.book.data.speech import SpeechSplit
from qattn.book.experiments.speech_enhancement.config import SpeechExperimentConfig, build_model
from qattn.book.models.speech import SpeechEnhancer, count_parameters
from qattn.book.speech.losses import total_loss
from qattn.book.speech.metrics import si_sdr


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    if len(x) < n:  # shorter clips are tiled, as in the release
        x = np.tile(x, n // len(x) + 1)
    start = int(rng.integers(len(x) - n + 1))
    return start, x[start:start + n]


def training_batches(split: SpeechSplit, steps: int, batch: int, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
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


def validation_batch(split: SpeechSplit, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    noisy = [np.resize(x, n) for x in split.noisy]  # first n samples (tiled if shorter)
    clean = [np.resize(x, n) for x in split.clean]
    return torch.from_numpy(np.stack(noisy)), torch.from_numpy(np.stack(clean))


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
