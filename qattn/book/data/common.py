"""Helpers shared by the offline data loaders: the missing-data error and stratified splits."""

from __future__ import annotations

import numpy as np

__all__ = ["MissingDataError", "stratified_split"]


class MissingDataError(FileNotFoundError):
    """A data set that a package ships is not installed; the message names the package."""


def stratified_split(
    labels: np.ndarray,
    fractions: tuple[float, ...],
    seed: int,
) -> tuple[np.ndarray, ...]:
    """Split indices ``0..len(labels)-1`` into parts with (almost) the same class proportions.

    Each class's indices are shuffled by ``numpy.random.default_rng(seed)`` (a local generator,
    no global state) and cut by ``fractions``; the last part takes the remainder.

    Parameters
    ----------
    labels : (n,) integer array
        Class of every example.
    fractions : tuple of float
        Share of each part but the last, e.g. ``(0.8, 0.1)`` gives 80/10/10 %.
    seed : int
        Seed of the split: the same seed gives the same split.

    Returns
    -------
    tuple of (n_part,) int64 arrays
        ``len(fractions) + 1`` sorted, disjoint index arrays that together cover every example.

    Examples
    --------
    >>> train, test = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), (0.5,), seed=0)
    >>> len(train), len(test), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[test].tolist())
    (4, 4, [0, 0, 1, 1])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if any(f < 0 for f in fractions) or sum(fractions) > 1:
        raise ValueError(f"fractions must be non-negative and sum to at most 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        cuts = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
