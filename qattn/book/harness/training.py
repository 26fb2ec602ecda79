"""The one training loop of the book's experiments, and the classifiers' use of it.

:func:`fit` owns what every experiment's training shares: the optimiser (AdamW or Adam), the
learning-rate schedule (:func:`lr_factor`: linear warm-up, then constant or cosine), gradient
clipping, validation at declared steps with model selection on the VALIDATION split only (the
best validated state is restored), the random draws of training (dropout) from an explicit seed
under :func:`torch.random.fork_rng` (the global state is left untouched), progress lines, the
learning curve and the training time. An experiment passes what is its own: its batches (the same
sequence for every variant of a comparison), its loss (:class:`StepLoss`) and its validation score.
The test split never enters this module; the experiments evaluate it once, on the restored model.

:func:`train_classifier` is the vision and NLP experiments' use of it: models are called as
``model(*inputs, need_weights=False)`` and return ``(logits, maps)``; inputs are tuples of tensors
whose first dimension is the example; ``collate`` may trim a batch (e.g. padding columns of token
ids).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LoopConfig",
    "StepLoss",
    "TrainResult",
    "fit",
    "lr_factor",
    "evenly_spaced",
    "every",
    "weighted_mean",
    "TrainConfig",
    "Split",
    "Augment",
    "evaluate",
    "train_classifier",
    "time_inference",
    "accuracy_stats",
    "torch_threads",
]

Collate = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]
#: ``augment(inputs, generator)``: a random transformation of a TRAINING batch's inputs, drawing
#: only from ``generator``.
Augment = Callable[[tuple[Tensor, ...], torch.Generator], tuple[Tensor, ...]]
Decay = Literal["constant", "cosine"]


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

    @classmethod
    def of(cls, config: Any) -> TrainConfig:
        """The training settings held by an experiment's config: every field of this class that
        ``config`` has (by name), the defaults for the rest.

        >>> from types import SimpleNamespace
        >>> config = TrainConfig.of(SimpleNamespace(epochs=3, lr=1e-3, width=64))
        >>> config.epochs, config.lr, config.batch_size == TrainConfig.batch_size
        (3, 0.001, True)
        """
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)})


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


def lr_factor(step: int, total: int, warmup: int, decay: Decay = "cosine") -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up over ``warmup`` steps, then
    constant (``decay="constant"``) or a cosine decay that reaches 0 at ``total``.

    >>> [lr_factor(s, 10, 2) for s in (0, 1, 2)]
    [0.5, 1.0, 1.0]
    >>> lr_factor(10, 10, 2), lr_factor(5, 10, 0, "constant")
    (0.0, 1.0)
    """
    if decay not in ("constant", "cosine"):
        raise ValueError(f"decay must be 'constant' or 'cosine', got {decay!r}")
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def evenly_spaced(total: int, n: int) -> tuple[int, ...]:
    """``n`` validation steps evenly spaced over ``total`` steps, the last at ``total`` (duplicates
    and step 0 left out).

    >>> evenly_spaced(10, 3)
    (3, 7, 10)
    """
    return tuple(sorted({round(total * (i + 1) / n) for i in range(n)} - {0}))


def every(total: int, k: int) -> tuple[int, ...]:
    """Every ``k``-th step and the last one.

    >>> every(7, 3)
    (3, 6, 7)
    """
    return tuple(s for s in range(1, total + 1) if s % k == 0 or s == total)


@dataclass(frozen=True)
class LoopConfig:
    """What :func:`fit` does around the experiment's own batches, loss and validation score.

    Attributes
    ----------
    steps : optimiser steps (the number of batches)
    lr, optimizer, weight_decay, betas : ``"adamw"`` (decoupled weight decay) or ``"adam"``
    warmup_steps, decay : the schedule, :func:`lr_factor` per step
    grad_clip : maximum gradient norm (0: no clipping)
    validate_at : steps after which the model is validated (0: before the first step)
    steps_per_epoch : gives history entries an ``epoch``
    dropout_seed : seeds torch's CPU generator (under ``fork_rng``: the global state is left as it
        was) for the training's random draws (dropout)
    """

    steps: int
    lr: float
    optimizer: Literal["adamw", "adam"] = "adamw"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    decay: Decay = "constant"
    grad_clip: float = 0.0
    validate_at: tuple[int, ...] = ()
    steps_per_epoch: int | None = None
    dropout_seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(f"optimizer must be 'adamw' or 'adam', got {self.optimizer!r}")
        if self.decay not in ("constant", "cosine"):
            raise ValueError(f"decay must be 'constant' or 'cosine', got {self.decay!r}")
        bad = [s for s in self.validate_at if not 0 <= s <= self.steps]
        if bad:
            raise ValueError(f"validate_at must lie in 0..{self.steps}, got {bad}")

    def optimiser(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        kind = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return kind(parameters, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)


@dataclass
class StepLoss:
    """What an experiment's loss function returns for one batch.

    ``loss`` is minimised; ``weight`` weighs it in the train loss of the history (e.g. the batch's
    examples); ``terms`` (optional) are recorded per step.
    """

    loss: Tensor
    weight: float = 1.0
    terms: Mapping[str, Tensor] | None = None


@dataclass
class TrainResult:
    """The learning curve and the selection of :func:`fit`.

    ``history``: one entry per validation (``step``, ``epoch`` where the loop knows the epoch
    length, ``train_loss`` since the previous validation or None at step 0, and the validation's
    values); ``step_losses`` / ``step_terms``: every step's loss and terms; ``best_step`` /
    ``best_score``: the selected validation (step 0 and ``-inf`` if none was validated);
    ``train_time_s``: the training steps alone; ``wall_s``: the whole loop, validations included.
    """

    history: list[dict[str, Any]]
    step_losses: list[float]
    step_terms: list[dict[str, float]]
    best_step: int
    best_score: float
    train_time_s: float
    wall_s: float
    steps: int


def weighted_mean(losses: Sequence[float], weights: Sequence[float]) -> float:
    """Mean of ``losses`` weighted by ``weights``, summed in order."""
    total, count = 0.0, 0
    for loss, weight in zip(losses, weights):
        total += loss * weight
        count += weight
    return total / count


def fit(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], StepLoss],
    validate: Callable[[nn.Module], Mapping[str, Any]],
    config: LoopConfig,
    select: str,
    log: Callable[[str], None] | None = None,
    name: str = "model",
    summarise_losses: Callable[[Sequence[float], Sequence[float]], float] = weighted_mean,
) -> TrainResult:
    """The one training loop: train ``model`` in place on ``batches``, keep the best validated state.

    Every step: ``loss_fn(model, batch)`` (model in train mode), zero the gradients, backward,
    clip, optimiser step, schedule step. After each step in ``config.validate_at`` (and before
    the first if 0 is in it), ``validate(model)`` runs in eval mode without gradients; its
    ``select`` value is maximised (strictly greater replaces) and only the VALIDATION split
    should enter it. The model holds the best validated state on return (eval mode), the initial
    state if nothing was validated. Random draws during training (dropout) come from
    ``config.dropout_seed`` under :func:`torch.random.fork_rng`: torch's global state is the same
    after the call as before.

    ``summarise_losses(losses, weights)`` gives the history's ``train_loss`` from the steps since
    the previous validation (default :func:`weighted_mean`).
    """
    optimiser = config.optimiser(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: lr_factor(s, config.steps, config.warmup_steps, config.decay))
    at = set(config.validate_at)
    history: list[dict[str, Any]] = []
    step_losses: list[float] = []
    step_terms: list[dict[str, float]] = []
    window: tuple[list[float], list[float]] = ([], [])
    best: tuple[float, int, dict[str, Any]] = (-math.inf, 0, copy.deepcopy(model.state_dict()))
    started = time.perf_counter()
    train_time = 0.0

    def validation(step: int) -> None:
        nonlocal best
        model.eval()
        with torch.no_grad():
            scores = dict(validate(model))
        model.train()
        entry: dict[str, Any] = {"step": step}
        if config.steps_per_epoch:
            entry["epoch"] = step / config.steps_per_epoch
        entry["train_loss"] = summarise_losses(*window) if window[0] else None
        entry.update(scores)
        window[0].clear()
        window[1].clear()
        history.append(entry)
        if entry[select] > best[0]:
            best = (entry[select], step, copy.deepcopy(model.state_dict()))
        if log is not None and step > 0:
            epoch = f" (epoch {entry['epoch']:.2f})" if "epoch" in entry else ""
            log(
                f"  {name}: step {step}/{config.steps}{epoch} train loss {entry['train_loss']:.4f} "
                f"{select} {entry[select]:.4f} ({time.perf_counter() - started:.0f} s)"
            )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.dropout_seed)
        model.train()
        if 0 in at:
            validation(0)
        step = 0
        iterator = iter(batches)
        while True:
            tick = time.perf_counter()
            batch = next(iterator, _END)
            if batch is _END:
                break
            out = loss_fn(model, batch)
            optimiser.zero_grad(set_to_none=True)
            out.loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            schedule.step()
            train_time += time.perf_counter() - tick
            step += 1
            value = float(out.loss.detach())
            step_losses.append(value)
            window[0].append(value)
            window[1].append(out.weight)
            if out.terms is not None:
                step_terms.append({k: float(v.detach()) for k, v in out.terms.items()})
            if step in at:
                validation(step)
    if step != config.steps:
        raise ValueError(f"{name}: got {step} batches for {config.steps} steps")
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(history, step_losses, step_terms, best[1], best[0], train_time, time.perf_counter() - started, step)


_END = object()


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
    dropout_seed: int = 0,
    augment: Augment | None = None,
) -> dict[str, Any]:
    """Train a classifier with :func:`fit`; keep the checkpoint with the best validation accuracy.

    Parameters
    ----------
    model : classifier returning ``(logits, maps)``
    train, val : training and validation splits
    config : optimiser and schedule (AdamW, warm-up then cosine decay, evenly spaced checkpoints)
    generator : shuffles the training data (a new order every epoch)
    collate : applied to every batch's inputs
    on_checkpoint : called at initialisation and at every checkpoint (model in eval mode, no
        gradients); its dict is merged into that checkpoint's history entry
    log : receives one progress line per checkpoint
    name : used in the progress lines
    dropout_seed : seeds the dropout masks (see :func:`fit`)
    augment : applied to every TRAINING batch's inputs (before ``collate``), never to validation;
        its generator is seeded by one draw from ``generator`` before the first epoch (so every
        variant trained with the same ``generator`` seed sees the same augmented batches)

    Returns
    -------
    dict with ``history`` (one entry per checkpoint: step, epoch, train_loss, val_accuracy,
    val_loss and the ``on_checkpoint`` values; the first entry is the untrained model),
    ``best_step``, ``best_val_accuracy``, ``epoch_time_s`` (training steps only, mean per epoch)
    and ``steps``. The model holds the best checkpoint's parameters on return.
    """
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    loop = LoopConfig(
        steps=total,
        lr=config.lr,
        optimizer="adamw",
        weight_decay=config.weight_decay,
        warmup_steps=max(1, round(config.warmup_fraction * total)),
        decay="cosine",
        grad_clip=config.grad_clip,
        validate_at=(0, *evenly_spaced(total, config.checkpoints)),
        steps_per_epoch=steps_per_epoch,
        dropout_seed=dropout_seed,
    )

    augment_generator = None
    if augment is not None:
        augment_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))

    def batches() -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        for _ in range(config.epochs):
            order = torch.randperm(len(train), generator=generator)
            for start in range(0, len(train), config.batch_size):
                inputs, labels = train.take(order[start : start + config.batch_size])
                if augment is not None:
                    inputs = augment(inputs, augment_generator)
                yield inputs, labels

    def loss_fn(model: nn.Module, batch: tuple[tuple[Tensor, ...], Tensor]) -> StepLoss:
        inputs, labels = batch
        logits, _ = model(*collate(inputs), need_weights=False)
        return StepLoss(F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing), weight=len(labels))

    def validate(model: nn.Module) -> dict[str, Any]:
        scores = evaluate(model, val, collate=collate)
        entry = {"val_accuracy": scores["accuracy"], "val_loss": scores["loss"]}
        if on_checkpoint is not None:
            with torch.inference_mode():
                entry.update(on_checkpoint(model))
        return entry

    result = fit(model, batches(), loss_fn, validate, loop, select="val_accuracy", log=log, name=name)
    return {
        "history": result.history,
        "best_step": result.best_step,
        "best_val_accuracy": result.best_score,
        "epoch_time_s": result.train_time_s / config.epochs,
        "steps": total,
    }


@torch.inference_mode()
def time_inference(
    models: dict[str, nn.Module],
    inputs: tuple[Tensor, ...],
    rounds: int = 7,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, dict[str, float]]:
    """Forward-pass time of several models on the same batch, measured INTERLEAVED.

    Through :func:`qattn.book.harness.timing.time_interleaved`: after ``warmup`` untimed rounds,
    every round times ``repeats`` consecutive forward passes (``need_weights=False``, eval mode)
    of each model, the models in an order rotated per round, so that drifts of the machine's load
    hit all models alike; the median over rounds of the mean time per pass is reported.

    Returns
    -------
    ``{name: {"seconds_per_batch": median, "examples_per_second": ..., "rounds": [...]}}``
    """
    from qattn.book.harness.timing import time_interleaved

    for model in models.values():
        model.eval()
    fns = {name: (lambda m=model: m(*inputs, need_weights=False)) for name, model in models.items()}
    stats = time_interleaved(fns, repeats=rounds, warmup=warmup, calls_per_sample=repeats)
    batch = len(inputs[0])
    return {
        name: {"seconds_per_batch": s["median_s"], "examples_per_second": batch / s["median_s"], "rounds": s["samples"]}
        for name, s in stats.items()
    }


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

    def __enter__(self) -> torch_threads:
        if self.n is not None:
            self.previous = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            torch.set_num_threads(self.previous)
