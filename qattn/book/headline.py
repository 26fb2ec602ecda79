"""The one headline schema: how an experiment declares the numbers that matter.

Kept apart from :mod:`qattn.book.report` (which compares and renders them) so that the
experiments depend only on this small schema: changing how the report looks leaves every
chapter's code version (:func:`qattn.book.provenance.code_version`) as it was.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KINDS", "TARGET_OPS", "headline"]

KINDS = ("exact", "relative", "ratio")


class _Unstated:
    """The default of :func:`headline`'s ``paper``: left out, the entry has no ``paper`` key."""

    def __repr__(self) -> str:
        return "<not stated>"


_UNSTATED: Any = _Unstated()

TARGET_OPS = ("<=", ">=")


def headline(
    name: str,
    value: float,
    tolerance: float,
    kind: str = "exact",
    paper: float | None = _UNSTATED,
    note: str | None = None,
    target: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """Build one headline entry for ``metrics["headline"]`` (the one schema of every chapter).

    Parameters
    ----------
    name : str
        What the number is, unique within its experiment (e.g. ``"PESQ, shared score"``).
    value : float
        This run's value (a ratio for timings).
    tolerance : float
        Absolute tolerance for ``kind="exact"``, relative tolerance otherwise.
    kind : {"exact", "relative", "ratio"}
        How the value is compared with its target.
    paper : float or None, optional
        The paper's value where it is comparable with ours; ``None`` records that the paper has
        no comparable number (stored as ``null``); left out, the entry has no ``paper`` key.
    note : str, optional
        How to read the number (stored as ``note`` when given).
    target : (op, threshold), optional
        The chapter's own declared target, ``op`` in ``"<="``/``">="`` (e.g. ``("<=", 1.10)``);
        stored as ``target_op``, ``target`` and ``target_met`` (whether ``value op threshold``).
        It is shown beside the number; the report still judges ``value`` against its reference.

    Returns
    -------
    dict
        A JSON-serialisable entry: ``name, value, tolerance, kind`` and the optional keys given.

    >>> headline("t", 1.2, 0.5, "ratio", target=("<=", 1.1))["target_met"]
    False
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance!r}")
    entry: dict[str, Any] = {"name": name, "value": value, "tolerance": tolerance, "kind": kind}
    if paper is not _UNSTATED:
        entry["paper"] = paper
    if note is not None:
        entry["note"] = note
    if target is not None:
        op, threshold = target
        if op not in TARGET_OPS:
            raise ValueError(f"target must be (op, threshold) with op in {TARGET_OPS}, got {target!r}")
        entry.update(target_op=op, target=threshold, target_met=bool(value <= threshold if op == "<=" else value >= threshold))
    return entry
