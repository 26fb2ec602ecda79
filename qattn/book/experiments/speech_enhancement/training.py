"""Training of one speech-enhancement variant: fixed batch sequence, validation SI-SDR selection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from qattn.book.data.speech import SpeechSplit
from qattn.book.experiments.speech_enhancement.config import SpeechExperimentConfig, build_model
from qattn.book.harness.training import LoopConfig, StepLoss, every, fit
from qattn.book.models.blocks import count_parameters
from qattn.book.models.speech import SpeechEnhancer
from qattn.book.speech.losses import total_loss
from qattn.book.speech.metrics import si_sdr


def _crop(x: np.ndarray, n: int, rng: np.random.Generator) -> tuple[int, np.ndarray]:
    if len(x) < n:  # shorter clips are tiled, as in the release
        x = np.tile(x, n // len(x) + 1)
    start = int(rng.integers(len(x) - n + 1))
    return start, x[start : start + n]


def training_batches(split: SpeechSplit, steps: int, batch: int, n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed sequence of training batches ``(noisy, clean)`` each ``(batch, n)`` for a seed."""
    rng = np.random.default_rng([seed, 11])
    out = []
    for _ in range(steps):
        noisy, clean = [], []
        for i in rng.integers(len(split), size=batch):
            start, c = _crop(split.clean[i], n, rng)
            tiled = np.tile(split.noisy[i], n // len(split.noisy[i]) + 1) if len(split.noisy[i]) < n else split.noisy[i]
            noisy.append(tiled[start : start + n])
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


def train_model(
    model: nn.Module,
    cfg: SpeechExperimentConfig,
    seed: int,
    batches: list,
    valid: tuple[torch.Tensor, torch.Tensor],
    log: Callable[[str], None],
    name: str,
    steps: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``batches`` (:func:`~qattn.book.harness.training.fit`: AdamW,
    warm-up then constant or cosine, clipping, dropout from ``seed + 1000``), keeping the state
    with the best validation SI-SDR (every ``valid_every`` steps and at the last).

    Returns the history: per-step losses and loss terms, validation curve, best step, wall time
    and parameter count. ``steps`` (default ``len(batches)``) sets the schedule's length.
    """
    steps = len(batches) if steps is None else steps
    loop = LoopConfig(
        steps=steps,
        lr=cfg.lr,
        optimizer="adamw",
        weight_decay=0.01,
        betas=cfg.betas,  # torch's AdamW default decay
        warmup_steps=min(cfg.warmup_steps, steps // 2),
        decay="cosine" if cfg.cosine_decay else "constant",
        grad_clip=cfg.clip_norm,
        validate_at=every(steps, min(cfg.valid_every, steps)),
        dropout_seed=seed + 1000,
    )

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepLoss:
        noisy, clean = batch
        terms = total_loss(model(noisy), clean)
        return StepLoss(terms["total"], terms={k: v for k, v in terms.items() if k != "total"})

    result = fit(
        model,
        batches[:steps],
        loss_fn,
        lambda m: {"valid_si_sdr": _valid_si_sdr(m, valid)},
        loop,
        select="valid_si_sdr",
        log=log,
        name=name,
    )
    return {
        "loss": result.step_losses,
        "terms": result.step_terms,
        "valid_step": [h["step"] for h in result.history],
        "valid_si_sdr": [h["valid_si_sdr"] for h in result.history],
        "params": count_parameters(model),
        "best_step": result.best_step,
        "best_valid_si_sdr": result.best_score,
        "wall_s": result.wall_s,
    }


def train_one(
    cfg: SpeechExperimentConfig,
    variant: str,
    seed: int,
    batches: list,
    valid: tuple[torch.Tensor, torch.Tensor],
    log: Callable[[str], None],
) -> tuple[SpeechEnhancer, dict[str, Any]]:
    """Build ``variant`` under ``seed`` and train it (:func:`train_model`); returns the best model
    (eval mode) and its history."""
    model = build_model(cfg.model, variant, seed)
    history = train_model(model, cfg, seed, batches, valid, log, f"{variant} seed {seed}")
    return model, history
