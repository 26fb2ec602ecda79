"""Headline numbers: how experiments declare them and how the reproduction report compares them.

An experiment declares the numbers that matter in its results JSON (written by
:func:`qattn.book.provenance.run_cached`) under ``metrics["headline"]``, a list of entries built with
:func:`qattn.book.headline.headline`::

    {"name": "shared-score terms", "value": 64, "paper": 64, "tolerance": 0, "kind": "exact"}

Optional keys: ``paper``, ``note`` (how to read the number) and a chapter's own declared target
(``target_op``, ``target``, ``target_met``), shown beside the number but not used to judge it.

``kind`` says how a value is compared with its target:

- ``"exact"``: ``|value - target| <= tolerance`` (an absolute tolerance, usually 0);
- ``"relative"``: ``|value - target| <= tolerance * |target|``;
- ``"ratio"``: like ``"relative"``, for ratios of two measurements on the same machine (timings
  are only ever compared as ratios, never as seconds across machines).

The target is the committed reference value when the run and the reference come from the same
profile, otherwise the paper's value where the experiment gives one; with neither the number is
shown but not judged.

Example
-------
>>> from qattn.book.headline import headline
>>> h = headline("softmax maps per head", 1, tolerance=0, kind="exact", paper=1)
>>> row = compare_one("counts", h, reference=h, same_profile=True)
>>> (row.value, row.target, row.holds)
(1, 'reference', True)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qattn.book import paths
from qattn.book.headline import KINDS
from qattn.book.provenance import read_json

__all__ = [
    "Row",
    "within",
    "load_results",
    "collect_headlines",
    "compare_one",
    "compare",
    "to_markdown",
    "provenance_markdown",
    "reference_dir_for",
]


def reference_dir_for(profile: str) -> Path:
    """The committed reference of a profile: ``results/`` for ``full``, ``results/<profile>/`` otherwise.

    Defined in :func:`qattn.book.paths.reference_dir`.

    >>> reference_dir_for("full").name, reference_dir_for("ci").relative_to(reference_dir_for("full")).as_posix()
    ('results', 'ci')
    """
    return paths.reference_dir(profile)


def within(value: float, target: float, tolerance: float, kind: str) -> bool:
    """Whether ``value`` matches ``target`` under ``kind`` and ``tolerance`` (see the module doc).

    >>> within(0.52, 0.5, 0.05, "relative"), within(3, 3, 0, "exact"), within(2.0, 1.0, 0.5, "ratio")
    (True, True, False)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not (math.isfinite(value) and math.isfinite(target)):
        return False
    if kind == "exact":
        return abs(value - target) <= tolerance
    return abs(value - target) <= tolerance * abs(target)


def load_results(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Every results JSON (``*.json``) directly in ``directory``, keyed by experiment name.

    A missing directory gives an empty mapping; files that are not results (no ``metrics``) are
    skipped.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    results = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = read_json(path)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
            results[str(data.get("name", path.stem))] = data
    return results


def collect_headlines(results: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The headline entries of ``results`` (as from :func:`load_results`), keyed by (experiment, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for experiment, data in results.items():
        for entry in data["metrics"].get("headline", []):
            missing = {"name", "value", "tolerance", "kind"} - set(entry)
            if missing:
                raise ValueError(f"headline entry of {experiment!r} lacks {sorted(missing)}: {entry}")
            key = (experiment, str(entry["name"]))
            if key in found:
                raise ValueError(f"headline {key[1]!r} appears twice in {experiment!r}")
            found[key] = dict(entry)
    return found


@dataclass(frozen=True)
class Row:
    """One line of the reproduction report."""

    experiment: str
    name: str
    kind: str
    value: float | None
    reference: float | None
    paper: float | None
    tolerance: float
    target: str | None  # "reference", "paper" or None (not judged)
    holds: bool | None


def compare_one(
    experiment: str,
    entry: Mapping[str, Any] | None,
    reference: Mapping[str, Any] | None,
    same_profile: bool,
) -> Row:
    """Compare one headline entry of this run with its committed reference (either may be None)."""
    source = entry if entry is not None else reference
    if source is None:
        raise ValueError("compare_one needs the run's entry, the reference entry, or both")
    kind, tolerance = str(source["kind"]), float(source["tolerance"])
    paper = source.get("paper", reference.get("paper") if reference else None)
    value = entry["value"] if entry is not None else None
    ref_value = reference["value"] if reference is not None else None
    target: str | None = None
    holds: bool | None = None
    if value is not None:
        if same_profile and ref_value is not None:
            target, holds = "reference", within(value, ref_value, tolerance, kind)
        elif paper is not None:
            target, holds = "paper", within(value, paper, tolerance, kind)
    elif same_profile:
        holds = False  # in the reference but no longer produced by this run
    return Row(experiment, str(source["name"]), kind, value, ref_value, paper, tolerance, target, holds)


def compare(
    run_dir: str | Path,
    reference_dir: str | Path | None = None,
    same_profile: bool = True,
) -> list[Row]:
    """Every headline number of the run in ``run_dir`` beside the reference in ``reference_dir``.

    Parameters
    ----------
    run_dir, reference_dir : path
        Folders of results JSON files (``reference_dir`` defaults to the committed full reference).
    same_profile : bool
        Whether run and reference come from the same profile. If not, values are judged against the
        paper's numbers only (a ``ci`` run is not expected to match the ``full`` reference).

    Returns
    -------
    list of Row
        Sorted by experiment, then in the order each experiment declared its headlines; reference
        entries the run no longer produces come last within their experiment.
    """
    run = collect_headlines(load_results(run_dir))
    ref = collect_headlines(load_results(reference_dir if reference_dir is not None else paths.reference_dir("full")))
    keys = list(run) + [k for k in ref if k not in run]
    order = {experiment: i for i, experiment in enumerate(sorted({k[0] for k in keys}))}
    keys.sort(key=lambda k: order[k[0]])  # stable: keeps the declared order within an experiment
    return [compare_one(k[0], run.get(k), ref.get(k), same_profile) for k in keys]


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    return f"{x:.4g}"


def to_markdown(rows: Iterable[Row]) -> str:
    """The rows as one Markdown table (this run, reference, paper, tolerance, holds)."""
    lines = [
        "| experiment | headline number | kind | this run | reference | paper | tolerance | judged against | holds |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | :---: |",
    ]
    verdict = {True: "yes", False: "**no**", None: "–"}
    for r in rows:
        tol = _fmt(r.tolerance) if r.kind == "exact" else f"±{r.tolerance * 100:.3g}%"
        lines.append(
            f"| {r.experiment} | {r.name} | {r.kind} | {_fmt(r.value)} | {_fmt(r.reference)} | "
            f"{_fmt(r.paper)} | {tol} | {r.target or '–'} | {verdict[r.holds]} |"
        )
    return "\n".join(lines)


def provenance_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Where each result of ``results`` (as from :func:`load_results`) comes from, as a Markdown table."""
    lines = [
        "| experiment | code version | git commit | dirty | date (UTC) | CPU | threads | wall time (s) |",
        "| --- | --- | --- | :---: | --- | --- | ---: | ---: |",
    ]
    for name, data in results.items():
        p = data.get("provenance", {})
        commit = (p.get("git_commit") or "–")[:10]
        dirty = {True: "yes", False: "no"}.get(p.get("git_dirty"), "–")
        lines.append(
            f"| {name} | {p.get('code_version', '–')} | {commit} | {dirty} | {p.get('date', '–')} | "
            f"{p.get('cpu', '–')} | {p.get('threads', '–')} | {_fmt(p.get('wall_time_s'))} |"
        )
    return "\n".join(lines)
