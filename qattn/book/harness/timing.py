"""Interleaved timing: the one way the book times things that are compared with each other.

:func:`time_interleaved` times several callables by name. After ``warmup`` untimed rounds, every
round times each callable once, in an order rotated by one place per round, so that drifts of the
machine's load (another job starting, frequency scaling) hit all of them alike. Each callable gets
at least ``repeats`` samples; with a time budget ``min_time_s`` one whose timed calls add up to
less keeps being sampled (still interleaved with the others that are not done) until they do, or until
it has ``max_repeats`` samples: a fast call then gets enough samples that one slow outlier cannot
move its median. A sample is the mean time of ``calls_per_sample`` consecutive calls (for calls
too short to time one by one). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock
starts and before it stops, so asynchronous work is inside the sample.

>>> stats = time_interleaved({"a": lambda: None, "b": lambda: sum(range(100))}, repeats=3)
>>> sorted(stats["a"]), stats["a"]["repeats"]
(['max_s', 'median_s', 'min_s', 'repeats', 'samples'], 3)
>>> summary(stats)["b"].keys()
dict_keys(['median_s', 'min_s', 'max_s', 'repeats'])
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["time_interleaved", "summary", "rotated", "crossover", "SUMMARY_KEYS"]

#: What :func:`summary` keeps of each callable's statistics (the results schema of the chapters).
SUMMARY_KEYS = ("median_s", "min_s", "max_s", "repeats")


def rotated(names: list[str], round_index: int) -> list[str]:
    """``names`` rotated left by ``round_index`` places (modulo its length): the order of one round.

    >>> rotated(["a", "b", "c"], 1), rotated(["a", "b", "c"], 5)
    (['b', 'c', 'a'], ['c', 'a', 'b'])
    """
    shift = round_index % len(names) if names else 0
    return names[shift:] + names[:shift]


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 0,
    min_time_s: float = 0.0,
    max_repeats: int | None = None,
    calls_per_sample: int = 1,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, Any]]:
    """Time every callable of ``fns`` interleaved (see the module doc).

    Parameters
    ----------
    fns : name → callable taking no argument (its result is discarded)
    repeats : least number of timed samples per callable (≥ 1)
    warmup : untimed rounds first (each runs every callable ``calls_per_sample`` times)
    min_time_s : time budget: a callable whose timed calls add up to less is sampled again
    max_repeats : most samples per callable (default ``repeats``; must be ≥ ``repeats``)
    calls_per_sample : consecutive calls per sample; a sample is their mean time
    sync : called before the clock starts and before it stops (e.g. ``torch.cuda.synchronize``)
    clock : seconds, monotonic (tests pass a fake one)

    Returns
    -------
    ``{name: {"median_s", "min_s", "max_s", "repeats", "samples"}}`` in the order of ``fns``;
    ``repeats`` is the number of samples, ``samples`` their values (seconds per call) in the
    order taken. Round ``r`` (counting the warm-up rounds) starts at place ``r`` modulo the
    number of callables still being sampled in it.
    """
    names = list(fns)
    if not names:
        raise ValueError("time_interleaved needs at least one callable")
    if not all(callable(f) for f in fns.values()):
        raise TypeError("every value of fns must be callable with no argument")
    max_repeats = repeats if max_repeats is None else max_repeats
    if not (isinstance(repeats, int) and isinstance(max_repeats, int) and 1 <= repeats <= max_repeats):
        raise ValueError(f"need 1 <= repeats <= max_repeats, got repeats={repeats!r}, max_repeats={max_repeats!r}")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    if not (isinstance(calls_per_sample, int) and calls_per_sample >= 1):
        raise ValueError(f"calls_per_sample must be a positive integer, got {calls_per_sample!r}")
    if not min_time_s >= 0:
        raise ValueError(f"min_time_s must be >= 0, got {min_time_s!r}")
    samples: dict[str, list[float]] = {n: [] for n in names}
    totals = dict.fromkeys(names, 0.0)

    def needs_more(n: str) -> bool:
        k = len(samples[n])
        return k < repeats or (totals[n] < min_time_s and k < max_repeats)

    def one_sample(fn: Callable[[], Any]) -> float:
        if sync is not None:
            sync()
        start = clock()
        for _ in range(calls_per_sample):
            fn()
        if sync is not None:
            sync()
        return (clock() - start) / calls_per_sample

    round_index = 0
    while round_index < warmup or any(needs_more(n) for n in names):
        active = names if round_index < warmup else [n for n in names if needs_more(n)]
        for n in rotated(active, round_index):
            elapsed = one_sample(fns[n])
            if round_index >= warmup:
                samples[n].append(elapsed)
                totals[n] += elapsed * calls_per_sample
        round_index += 1
    return {
        n: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s), "repeats": len(s), "samples": s} for n, s in samples.items()
    }


def summary(stats: Mapping[str, Mapping[str, Any]], keys: tuple[str, ...] = SUMMARY_KEYS) -> dict[str, dict[str, Any]]:
    """``stats`` of :func:`time_interleaved` reduced to ``keys`` per name (by default without the samples)."""
    return {n: {k: s[k] for k in keys} for n, s in stats.items()}


def crossover(lengths: list[int], faster: list[bool]) -> int | None:
    """The smallest length from which ``faster`` holds at every larger length measured, or None.

    ``lengths`` ascending, ``faster[i]`` whether one method beat the other at ``lengths[i]``: a
    length where it held but a larger one where it did not is no crossover.

    >>> crossover([256, 512, 1024, 2048], [False, True, False, True]), crossover([1, 2], [False, False])
    (2048, None)
    >>> crossover([1088, 2176, 4224], [False, True, True]), crossover([1, 2], [True, False])
    (2176, None)
    """
    if len(lengths) != len(faster):
        raise ValueError(f"expected one verdict per length, got {len(lengths)} lengths and {len(faster)} verdicts")
    result = None
    for n, ok in zip(reversed(lengths), reversed(faster)):
        if not ok:
            break
        result = n
    return result
