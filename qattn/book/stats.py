"""Uncertainty of the book's comparisons: confidence intervals from paired per-example scores.

A comparison of two models (or of one model with two attention mechanisms) on the SAME test
examples is paired: the per-example differences carry the comparison, and resampling the
examples (the bootstrap) gives an interval for their mean without assuming a distribution.

>>> import torch
>>> a = torch.tensor([1.0, 1, 1, 0, 1, 1, 0, 1]); b = torch.tensor([1.0, 0, 1, 0, 0, 1, 0, 1])
>>> ci = paired_bootstrap(a, b, resamples=2000, seed=0)
>>> round(ci["mean"], 3), ci["low"] <= ci["mean"] <= ci["high"], ci["n"]
(0.25, True, 8)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["paired_bootstrap", "seed_interval"]


def paired_bootstrap(a: Tensor, b: Tensor, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean of ``a − b`` over paired examples and its percentile bootstrap interval.

    Parameters
    ----------
    a, b : Tensor
        ``(n,)`` per-example scores of the two sides on the same examples (e.g. 0/1 correct).
    resamples : int
        Bootstrap resamples of the ``n`` examples (with replacement).
    seed : int
        Seeds the resampling's own generator.
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    dict
        ``mean`` (of a − b), ``low`` / ``high`` (the interval), ``level``, ``n``, ``resamples``.
    """
    a, b = torch.as_tensor(a, dtype=torch.float64).flatten(), torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"a and b must be non-empty per-example scores of the same length, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    diff = a - b
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(diff.numel(), (resamples, diff.numel()), generator=generator)
    means = diff[idx].mean(1)
    tail = (1.0 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return {"mean": float(diff.mean()), "low": low, "high": high, "level": level, "n": diff.numel(), "resamples": resamples}


def seed_interval(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean over training seeds and its Student-t interval: the spread of retraining.

    ``values`` holds one number per seed (e.g. a test metric, or a paired difference of two
    variants trained with the same seed). With one seed ``low = high = mean`` (no interval).

    >>> ci = seed_interval([1.0, 2.0, 3.0])
    >>> ci["mean"], round(ci["high"] - ci["mean"], 3), ci["seeds"]
    (2.0, 2.484, 3)
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"expected a non-empty list of per-seed values, got shape {x.shape}")
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "low": mean, "high": mean, "level": level, "seeds": len(x), "per_seed": x.tolist()}
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "level": level, "seeds": len(x), "per_seed": x.tolist()}
