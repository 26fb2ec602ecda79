"""A small train / validate loop for the classifiers of the vision and NLP experiments.

Model selection uses the VALIDATION split only: the model is evaluated on it at evenly spaced
checkpoints, the state with the best validation accuracy is kept and restored at the end. The
test split never enters this module; the experiments evaluate it once, on the restored model.

Models are called as ``model(*inputs, need_weights=False)`` and return ``(logits, maps)``.
Inputs are tuples of tensors whose first dimension is the example; ``collate`` may trim a
batch (e.g. padding columns of token ids).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TrainConfig", "Split", "evaluate", "train_classifier", "time_inference", "accuracy_stats", "torch_threads"]

Collate = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule: AdamW, linear warm-up then cosine decay to 0, per step.

    Attributes
    ----------
    epochs : passes over the training split
    batch_size : examples per step
    lr, weight_decay : AdamW settings
    warmup_fraction : share of the steps spent warming up linearly
    checkpoints : validation evaluations, evenly spaced in steps (the last at the end)
    grad_clip : maximum gradient norm (0: no clipping)
    label_smoothing : of the cross-entropy loss
    """

    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    checkpoints: int = 6
    grad_clip: float = 1.0
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class Split:
    """Inputs ``(n, ...)`` tensors and labels ``(n,)``."""

    inputs: tuple[Tensor, ...]
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: Tensor | slice) -> tuple[tuple[Tensor, ...], Tensor]:
        return tuple(t[idx] for t in self.inputs), self.labels[idx]


def _identity(inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return inputs


@torch.inference_mode()
def evaluate(model: nn.Module, data: Split, batch_size: int = 512, collate: Collate = _identity) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``data`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(data), batch_size):
        inputs, labels = data.take(slice(start, start + batch_size))
        logits, _ = model(*collate(inputs), need_weights=False)
        correct += int((logits.argmax(-1) == labels).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
    model.train(was_training)
    return {"accuracy": correct / len(data), "loss": loss / len(data)}


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def train_classifier(
    model: nn.Module,
    train: Split,
    val: Split,
    config: TrainConfig,
    generator: torch.Generator,
    collate: Collate = _identity,
    on_checkpoint: Callable[[nn.Module], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    name: str = "model",
) -> dict[str, Any]:
    """Train ``model`` in place; keep the checkpoint with the best validation accuracy.

    Parameters
    ----------
    model : classifier returning ``(logits, maps)``
    train, val : training and validation splits
    config : optimiser and schedule
    generator : shuffles the training data (dropout draws from torch's default generator)
    collate : applied to every batch's inputs
    on_checkpoint : called at initialisation and at every checkpoint (model in eval mode, no
        gradients); its dict is merged into that checkpoint's history entry
    log : receives one progress line per checkpoint
    name : used in the progress lines

    Returns
    -------
    dict with ``history`` (one entry per checkpoint: step, epoch, train_loss, val_accuracy,
    val_loss and the ``on_checkpoint`` values; the first entry is the untrained model),
    ``best_step``, ``best_val_accuracy``, ``epoch_time_s`` (training steps only, mean per epoch)
    and ``steps``. The model holds the best checkpoint's parameters on return.
    """
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, round(config.warmup_fraction * total))
    at = sorted({round(total * (i + 1) / config.checkpoints) for i in range(config.checkpoints)})
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, total, warmup))

    def checkpoint(step: int, train_loss: float | None) -> dict[str, Any]:
        scores = evaluate(model, val, collate=collate)
        entry: dict[str, Any] = {
            "step": step,
            "epoch": step / steps_per_epoch,
            "train_loss": train_loss,
            "val_accuracy": scores["accuracy"],
            "val_loss": scores["loss"],
        }
        if on_checkpoint is not None:
            model.eval()
            with torch.inference_mode():
                entry.update(on_checkpoint(model))
        return entry

    history = [checkpoint(0, None)]
    best = (history[0]["val_accuracy"], 0, copy.deepcopy(model.state_dict()))
    train_time, step, running, count = 0.0, 0, 0.0, 0
    started = time.perf_counter()
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), config.batch_size):
            tick = time.perf_counter()
            inputs, labels = train.take(order[start:start + config.batch_size])
            logits, _ = model(*collate(inputs), need_weights=False)
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            schedule.step()
            train_time += time.perf_counter() - tick
            step += 1
            running += float(loss.detach()) * len(labels)
            count += len(labels)
            if step in at:
                entry = checkpoint(step, running / count)
                running, count = 0.0, 0
                history.append(entry)
                model.train()
                if entry["val_accuracy"] > best[0]:
                    best = (entry["val_accuracy"], step, copy.deepcopy(model.state_dict()))
                if log is not None:
                    log(
                        f"  {name}: epoch {entry['epoch']:.2f} train loss {entry['train_loss']:.4f} "
                        f"val acc {entry['val_accuracy']:.4f} ({time.perf_counter() - started:.0f} s)"
                    )
    model.load_state_dict(best[2])
    model.eval()
    return {
        "history": history,
        "best_step": best[1],
        "best_val_accuracy": best[0],
        "epoch_time_s": train_time / config.epochs,
        "steps": total,
    }


@torch.inference_mode()
def time_inference(
    models: dict[str, nn.Module],
    inputs: tuple[Tensor, ...],
    rounds: int = 7,
    repeats: int = 5,
    warmup: int = 2,
) -> dict[str, dict[str, float]]:
    """Forward-pass time of several models on the same batch, measured INTERLEAVED.

    Every round times ``repeats`` forward passes (``need_weights=False``, eval mode) of each model
    in turn, so that drifts of the machine's load hit all models alike; the median over rounds is
    reported.

    Returns
    -------
    ``{name: {"seconds_per_batch": median, "examples_per_second": ..., "rounds": [...]}}``
    """
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(*inputs, need_weights=False)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            tick = time.perf_counter()
            for _ in range(repeats):
                model(*inputs, need_weights=False)
            samples[name].append((time.perf_counter() - tick) / repeats)
    batch = len(inputs[0])
    out = {}
    for name, times in samples.items():
        median = sorted(times)[len(times) // 2]
        out[name] = {"seconds_per_batch": median, "examples_per_second": batch / median, "rounds": times}
    return out


def accuracy_stats(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) of a list of accuracies."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


class torch_threads:
    """Context manager: run with ``n`` intra-op threads (``None``: unchanged), then restore.

    On a machine whose cores other jobs share, one thread avoids OpenMP oversubscription,
    which otherwise slows small models down many times.
    """

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.previous: int | None = None

    def __enter__(self) -> "torch_threads":
        if self.n is not None:
            self.previous = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            torch.set_num_threads(self.previous)
