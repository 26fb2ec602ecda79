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

__all__ = ["paired_bootstrap", "seed_interval", "two_way_bootstrap", "equivalence"]


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


def two_way_bootstrap(diff: Any, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Mean of per-(seed, example) differences and a bootstrap interval over seeds AND examples.

    ``diff[s, u]`` is a paired difference (e.g. model A − model B, both trained with seed ``s``,
    on test example ``u``). Each resample draws the seeds with replacement and, independently, the
    examples with replacement, so the interval carries both the spread of retraining and the
    spread of the test set. With one seed only the examples are resampled.

    >>> d = np.array([[0.1, 0.2, 0.0, 0.1], [0.2, 0.3, 0.1, 0.2]])
    >>> ci = two_way_bootstrap(d, resamples=500)
    >>> round(ci["mean"], 3), ci["low"] <= ci["mean"] <= ci["high"], ci["seeds"], ci["n"]
    (0.15, True, 2, 4)
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"diff must be a non-empty (seeds, examples) array, got shape {d.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not np.isfinite(d).all():
        raise ValueError("diff holds non-finite values")
    rng = np.random.default_rng([seed, 7])
    n_seeds, n = d.shape
    means = np.empty(resamples)
    for r in range(resamples):
        rows = rng.integers(n_seeds, size=n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        cols = rng.integers(n, size=n)
        means[r] = d[np.ix_(rows, cols)].mean()
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {
        "mean": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "level": level,
        "seeds": n_seeds,
        "n": n,
        "resamples": resamples,
    }


def equivalence(interval: dict[str, Any], margin: float) -> str:
    """The verdict of an interval against a margin declared before the run.

    ``"equivalent"``: the whole interval lies within ``±margin``; ``"different"``: the whole
    interval lies beyond the margin on one side; ``"inconclusive"`` otherwise (the interval
    straddles a margin).

    >>> equivalence({"low": -0.05, "high": 0.04}, 0.1), equivalence({"low": 0.2, "high": 0.3}, 0.1)
    ('equivalent', 'different')
    >>> equivalence({"low": -0.02, "high": 0.15}, 0.1)
    'inconclusive'
    """
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    low, high = interval["low"], interval["high"]
    if -margin <= low and high <= margin:
        return "equivalent"
    if low > margin or high < -margin:
        return "different"
    return "inconclusive"
