"""Headline numbers: the reproduction report's three questions, answered from results files.

An experiment declares the numbers that matter in its results JSON (written by
:func:`qattn.book.provenance.run_cached`) under ``metrics["headline"]``, entries built with
:func:`qattn.book.headline.headline`::

    {"name": "shared-score terms", "value": 64, "paper": 64, "tolerance": 0, "kind": "exact"}

``kind`` and ``tolerance`` say how a value is compared (:func:`within`):

- ``"exact"``: ``|value - target| <= tolerance`` (an absolute tolerance, usually 0);
- ``"relative"``: ``|value - target| <= tolerance * |target|``;
- ``"ratio"``: like ``"relative"``, for ratios of two measurements on the same machine (timings
  are only ever compared as ratios, never as seconds across machines).

The report answers three questions separately, never mixing their targets:

- :func:`repeatability`: this build against the committed reference of its profile (``reused``
  when the chapter was not recomputed, so nothing was tested);
- :func:`paper_agreement`: every number a paper states, ours beside it with the rule and our
  setting (:data:`qattn.book.claims.CHAPTER_SETTINGS`);
- :func:`qattn.book.claims.ledger`: every claim of every seed work and its status.

Example
-------
>>> from qattn.book.headline import headline
>>> run = {"counts": {"metrics": {"headline": [headline("softmax maps per head", 1, tolerance=0, paper=1)]}}}
>>> repeatability(run, run)[0].status, paper_agreement(run)[0].agrees
('reproduced', True)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qattn.book import paths
from qattn.book.claims import CHAPTER_SETTINGS
from qattn.book.headline import KINDS
from qattn.book.provenance import read_json

__all__ = [
    "REPEAT_STATUSES",
    "RepeatRow",
    "PaperRow",
    "repeatability",
    "paper_agreement",
    "rule_text",
    "repeatability_markdown",
    "paper_markdown",
    "ledger_markdown",
    "counts",
    "within",
    "load_results",
    "collect_headlines",
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


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    return f"{x:.4g}"


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


# -- the three questions of the report: repeatability, agreement with the paper, the claims ledger --

REPEAT_STATUSES = ("reused", "reproduced", "differs", "new", "no longer produced")


@dataclass(frozen=True)
class RepeatRow:
    """Did this build reproduce the committed reference of its profile (one headline number)?"""

    experiment: str
    name: str
    kind: str
    value: float | None
    reference: float | None
    tolerance: float
    status: str  # one of REPEAT_STATUSES


def _run_id(result: Mapping[str, Any] | None) -> str | None:
    return (result or {}).get("provenance", {}).get("run_id")


def repeatability(run: Mapping[str, Mapping[str, Any]], reference: Mapping[str, Mapping[str, Any]]) -> list[RepeatRow]:
    """Each headline number of ``run`` beside the same profile's ``reference`` (both from :func:`load_results`).

    ``"reused"``: the chapter's result IS the reference run (nothing was recomputed, so nothing is
    tested); ``"reproduced"``: recomputed and within the entry's tolerance (seeded numbers usually
    exactly; ratios of timings within their tolerance); ``"differs"``; ``"new"``: no reference
    value; ``"no longer produced"``: in the reference only.
    """
    run_heads, ref_heads = collect_headlines(run), collect_headlines(reference)
    rows = []
    for key in list(run_heads) + [k for k in ref_heads if k not in run_heads]:
        entry, ref = run_heads.get(key), ref_heads.get(key)
        source = entry if entry is not None else ref
        assert source is not None
        kind, tolerance = str(source["kind"]), float(source["tolerance"])
        if entry is None:
            status = "no longer produced"
        elif ref is None:
            status = "new"
        elif _run_id(run.get(key[0])) is not None and _run_id(run.get(key[0])) == _run_id(reference.get(key[0])):
            status = "reused"
        else:
            status = "reproduced" if within(entry["value"], ref["value"], tolerance, kind) else "differs"
        rows.append(
            RepeatRow(
                key[0],
                key[1],
                kind,
                entry["value"] if entry else None,
                ref["value"] if ref else None,
                tolerance,
                status,
            )
        )
    return rows


@dataclass(frozen=True)
class PaperRow:
    """One number the paper states, ours beside it."""

    experiment: str
    name: str
    value: float
    paper: float
    rule: str
    setting: str
    agrees: bool


def rule_text(kind: str, tolerance: float) -> str:
    """The comparison rule of a headline entry in words.

    >>> rule_text("exact", 0), rule_text("ratio", 0.5)
    ('equal', 'within ±50 % of the paper (ratio of two timings on one machine)')
    """
    if kind == "exact":
        return "equal" if tolerance == 0 else f"within ±{tolerance:g}"
    extra = " (ratio of two timings on one machine)" if kind == "ratio" else ""
    return f"within ±{100 * tolerance:g} % of the paper{extra}"


def paper_agreement(run: Mapping[str, Mapping[str, Any]], settings: Mapping[str, str] | None = None) -> list[PaperRow]:
    """Every headline number of ``run`` for which the paper states a value, with the rule and our setting."""
    settings = CHAPTER_SETTINGS if settings is None else settings
    rows = []
    for (experiment, name), entry in collect_headlines(run).items():
        paper = entry.get("paper")
        if paper is None:
            continue
        kind, tolerance = str(entry["kind"]), float(entry["tolerance"])
        rows.append(
            PaperRow(
                experiment,
                name,
                entry["value"],
                paper,
                rule_text(kind, tolerance),
                settings.get(experiment, "–"),
                within(entry["value"], paper, tolerance, kind),
            )
        )
    return rows


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def repeatability_markdown(rows: Iterable[RepeatRow]) -> str:
    """The repeatability rows as one Markdown table."""
    bold = {"differs": "**differs**", "no longer produced": "**no longer produced**"}
    return _table(
        ["experiment", "headline number", "this build", "reference", "rule", "status"],
        (
            [
                r.experiment,
                r.name,
                _fmt(r.value),
                _fmt(r.reference),
                rule_text(r.kind, r.tolerance).replace("the paper", "the reference"),
                bold.get(r.status, r.status),
            ]
            for r in rows
        ),
    )


def paper_markdown(rows: Iterable[PaperRow]) -> str:
    """The paper-agreement rows as one Markdown table."""
    return _table(
        ["experiment", "number", "ours", "paper", "rule", "our setting", "agrees"],
        ([r.experiment, r.name, _fmt(r.value), _fmt(r.paper), r.rule, r.setting, "yes" if r.agrees else "**no**"] for r in rows),
    )


def ledger_markdown(rows: Iterable[Mapping[str, str]]) -> str:
    """The claims ledger (:func:`qattn.book.claims.ledger`) as one Markdown table."""
    return _table(
        ["work", "claim", "chapter", "status", "why"],
        (
            [r["work"], r["claim"], r["chapter"], f"**{r['status']}**", r["reason"] + (f" — {r['setting']}" if r["setting"] else "")]
            for r in rows
        ),
    )


def counts(statuses: Iterable[str], order: Iterable[str]) -> str:
    """``"3 reproduced, 1 differs"``: how many of each status, in ``order``, zeros left out.

    >>> counts(["a", "b", "a"], ("a", "b", "c"))
    '2 a, 1 b'
    """
    statuses = list(statuses)
    parts = [f"{statuses.count(s)} {s}" for s in order if statuses.count(s)]
    return ", ".join(parts) if parts else "none"
