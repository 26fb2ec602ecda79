"""The comparison loop shared by the vision and NLP experiments.

For every seed, every variant (``shared``, ``hamilton``, ``real_same_width``,
``real_same_params``) is built from a ``torch.Generator`` seeded with that seed, so the
shared and Hamilton models start from identical parameters, and trained on the same batches
(the shuffling generator and the dropout seed are the same for every model; torch's global
generator is left untouched). Model selection is on validation accuracy (:func:`qattn.book.harness.training.train_classifier`); the
test split is evaluated ONCE per model, after the best checkpoint is restored.

Also measured: the mean pairwise Jensen-Shannon divergence of each quaternion layer's
component maps on a fixed probe batch of validation examples, at initialisation, at every
checkpoint and for the selected model (exactly 0 for the shared score); training time per
epoch; and forward-pass time of the first seed's models, interleaved (:func:`time_inference`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from qattn.book.harness.training import Augment, Collate, Split, TrainConfig, accuracy_stats, evaluate, time_inference, train_classifier
from qattn.book.models.blocks import QUATERNION_VARIANTS, count_parameters
from qattn.metrics import divergence_by_layer

__all__ = ["compare_variants", "train_one", "summarise_runs", "Log"]

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def train_one(
    build: Callable[[str, torch.Generator], nn.Module],
    variant: str,
    seed: int,
    train: Split,
    val: Split,
    test: Split,
    train_config: TrainConfig,
    probe: tuple[Tensor, ...],
    probe_query_mask: Tensor | None = None,
    collate: Collate | None = None,
    log: Log = _print,
    augment: Augment | None = None,
) -> tuple[dict[str, Any], nn.Module]:
    """Build ``variant`` from ``seed``, train it, test the selected checkpoint once.

    The model's initial values come from a generator seeded with ``seed``, its batch order from
    another, its dropout masks from ``seed``: the same for every variant of that seed.

    Returns
    -------
    (run, model): ``run`` with variant, seed, parameters, test accuracy and loss, best validation
    accuracy and step, steps, training time per epoch, wall time, the selected model's component
    divergence (quaternion variants) and the learning curve; ``model`` holds the selected checkpoint.
    """
    collate = collate if collate is not None else (lambda inputs: inputs)

    def divergence_hook(model: nn.Module) -> dict[str, Any]:
        _, maps = model(*probe, need_weights=True)
        return {"divergence": divergence_by_layer(maps, probe_query_mask)}

    model = build(variant, torch.Generator().manual_seed(seed))
    started = time.perf_counter()
    log(f"[seed {seed}] {variant}: {count_parameters(model):,} parameters")
    result = train_classifier(
        model,
        train,
        val,
        train_config,
        generator=torch.Generator().manual_seed(seed),
        collate=collate,
        on_checkpoint=divergence_hook if variant in QUATERNION_VARIANTS else None,
        log=log,
        name=f"{variant} seed {seed}",
        dropout_seed=seed,  # dropout masks: the same sequence for every variant
        augment=augment,
    )
    test_scores = evaluate(model, test, collate=collate)  # once, on the selected checkpoint
    with torch.inference_mode():
        final_divergence = divergence_hook(model)["divergence"] if variant in QUATERNION_VARIANTS else None
    wall = time.perf_counter() - started
    log(
        f"[seed {seed}] {variant}: best val acc {result['best_val_accuracy']:.4f} at step "
        f"{result['best_step']}/{result['steps']}, test acc {test_scores['accuracy']:.4f} ({wall:.0f} s)"
    )
    run = {
        "variant": variant,
        "seed": seed,
        "parameters": count_parameters(model),
        "test_accuracy": test_scores["accuracy"],
        "test_loss": test_scores["loss"],
        "best_val_accuracy": result["best_val_accuracy"],
        "best_step": result["best_step"],
        "steps": result["steps"],
        "epoch_time_s": result["epoch_time_s"],
        "wall_time_s": wall,
        "final_divergence": final_divergence,
        "history": result["history"],
    }
    return run, model


def summarise_runs(
    runs: Sequence[dict[str, Any]],
    variants: Sequence[str],
    first_models: dict[str, nn.Module],
    timing_inputs: tuple[Tensor, ...],
    timing_rounds: int = 7,
    log: Log = _print,
) -> dict[str, Any]:
    """Per-variant summaries of :func:`train_one`'s ``runs`` and the interleaved inference timing
    of ``first_models`` (one trained model per variant) on ``timing_inputs``.

    Returns ``variants`` (per-variant summaries), ``runs``, ``divergence``, ``inference``.
    """
    runs = list(runs)
    summary: dict[str, Any] = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {
            "parameters": mine[0]["parameters"],
            "test_accuracy": {**accuracy_stats([r["test_accuracy"] for r in mine]), "per_seed": [r["test_accuracy"] for r in mine]},
            "val_accuracy": accuracy_stats([r["best_val_accuracy"] for r in mine]),
            "epoch_time_s": accuracy_stats([r["epoch_time_s"] for r in mine]),
        }
    divergence: dict[str, Any] = {}
    for variant in variants:
        if variant not in QUATERNION_VARIANTS:
            continue
        per_seed = [r["final_divergence"] for r in runs if r["variant"] == variant]
        layers = list(zip(*per_seed))
        divergence[variant] = {
            "final_per_layer": [accuracy_stats(list(layer)) for layer in layers],
            "final_per_seed": per_seed,
        }
    timing = time_inference(first_models, timing_inputs, rounds=timing_rounds)
    reference = timing.get("shared", next(iter(timing.values())))["seconds_per_batch"]
    inference = {
        "batch_size": len(timing_inputs[0]),
        "per_variant": timing,
        "time_ratio_vs_shared": {v: t["seconds_per_batch"] / reference for v, t in timing.items()},
    }
    log("inference time per batch: " + ", ".join(f"{v} {t['seconds_per_batch'] * 1e3:.1f} ms" for v, t in timing.items()))
    return {"variants": summary, "runs": runs, "divergence": divergence, "inference": inference}


def compare_variants(
    build: Callable[[str, torch.Generator], nn.Module],
    variants: Sequence[str],
    seeds: Sequence[int],
    train: Split,
    val: Split,
    test: Split,
    train_config: TrainConfig,
    probe: tuple[Tensor, ...],
    probe_query_mask: Tensor | None = None,
    collate: Collate | None = None,
    timing_inputs: tuple[Tensor, ...] | None = None,
    timing_rounds: int = 7,
    log: Log = _print,
    augment: Augment | None = None,
) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """Train and evaluate every variant for every seed in this process (:func:`train_one`, then
    :func:`summarise_runs`).

    Parameters
    ----------
    build : ``build(variant, generator)`` returns an initialised model
    variants, seeds : what to train
    train, val, test : the splits (test is evaluated once per trained model)
    train_config : optimiser and schedule
    probe : inputs of the probe batch for the divergence (validation examples)
    probe_query_mask : (B, N) bool, True at query rows to leave out (padding)
    collate : applied to every batch's inputs
    timing_inputs : batch for the interleaved inference timing (default: ``probe``)
    timing_rounds : rounds of the timing
    log : progress lines
    augment : random transformation of the training batches (see
        :func:`~qattn.book.harness.training.train_classifier`); the same draws for every variant of a seed

    Returns
    -------
    (metrics, models): ``metrics`` with ``variants`` (per-variant summaries), ``runs`` (one per
    variant and seed with its learning curve), ``divergence``, ``inference``; ``models`` are the
    first seed's trained models (for attention examples).
    """
    runs: list[dict[str, Any]] = []
    first_models: dict[str, nn.Module] = {}
    for seed in seeds:
        for variant in variants:
            run, model = train_one(build, variant, seed, train, val, test, train_config, probe, probe_query_mask, collate, log, augment)
            runs.append(run)
            if seed == seeds[0]:
                first_models[variant] = model
    metrics = summarise_runs(runs, variants, first_models, timing_inputs if timing_inputs is not None else probe, timing_rounds, log)
    return metrics, first_models
