#!/usr/bin/env python
"""Declare a chapter's committed full reference valid for the current code, on bitwise evidence.

    FRESH=1 .venv/bin/python scripts/build_book.py --profile ci --only vision   # the evidence
    .venv/bin/python scripts/declare_equivalent.py --only vision

A change to the library (a faster assembly of the same weights, a clearer name) changes the code
version of every chapter that imports it, and with it the build's cache: ``make book`` would
recompute hours of chapters whose numbers cannot have changed. This script lets the committed
reference stand for the new code only when the chapter's **ci profile, recomputed with the current
code** (``build/results/ci/<chapter>.json``, a run of this code version, not a copy) **gives
bitwise the seeded numbers of the committed ci reference** (``results/ci/<chapter>.json``, whose
code version must be the full reference's or one declared equivalent to it); measurements of the
machine (times, speeds, memory) are left out of the comparison, as in
``scripts/compare_results.py``. Then it appends to ``results/equivalent_code.json``::

    {"chapter": ..., "reference_version": <full reference's>, "code_version": <current>,
     "evidence": "...", "commit": <HEAD>, "git_dirty": false, "date": ...}

``--baseline DIR`` compares with a ci run of the reference's code made beside the new one
instead (e.g. in a ``git worktree`` of the reference's commit, on the same machine), for a
chapter whose committed ci reference differs from a fresh run of its own code in the low bits
(another machine state); the evidence sentence then names that run's commit.

The full build then reuses the reference, saying so at the top of the chapter (with the reminder
that its timings were measured with the reference's code). Anything else (numbers that differ, a
missing or reused ci run, a dirty work tree) is refused with the reason; nothing is written then.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

from qattn.book.paths import notebook_path, reference_dir
from qattn.book.provenance import EQUIVALENCE_LEDGER, code_version, declared_equivalence, read_json, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from compare_results import differences  # noqa: E402


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def evidence_for(name: str, ci_run: Path, full_dir: Path, ci_dir: Path, version: str, committed: bool = True) -> tuple[str, str]:
    """``(reference_version, evidence sentence)`` for chapter ``name``; raises ``ValueError`` with the reason otherwise.

    ``ci_dir`` holds the baseline: the committed ci reference (``committed``), or a ci run of the
    reference's code made beside the new one (same machine, same environment).
    """
    full_path, ci_ref_path, run_path = full_dir / f"{name}.json", ci_dir / f"{name}.json", ci_run / f"{name}.json"
    baseline = "ci reference" if committed else "baseline ci run"
    for path, what in ((full_path, "full reference"), (ci_ref_path, baseline), (run_path, "ci run of the current code")):
        if not path.is_file():
            raise ValueError(f"{name}: no {what} at {path}")
    full, ci_ref, run = read_json(full_path), read_json(ci_ref_path), read_json(run_path)
    reference_version = full["provenance"]["code_version"]
    if reference_version == version:
        raise ValueError(f"{name}: the full reference already has the current code version {version}; nothing to declare")
    if run["provenance"].get("code_version") != version:
        raise ValueError(
            f"{name}: {run_path} was computed by code version {run['provenance'].get('code_version')}, not the current "
            f"{version}: rebuild it (FRESH=1 scripts/build_book.py --profile ci --only {name})"
        )
    if run["provenance"].get("run_id") is not None and run["provenance"].get("run_id") == ci_ref["provenance"].get("run_id"):
        raise ValueError(f"{name}: {run_path} is a copy of the ci reference, not a new run")
    ci_version = ci_ref["provenance"].get("code_version")
    if ci_version != reference_version and declared_equivalence(full_dir, name, reference_version, ci_version) is None:
        raise ValueError(
            f"{name}: the ci reference (code version {ci_version}) is not of the full reference's code version "
            f"{reference_version} nor declared equivalent to it: it cannot vouch for the full reference"
        )
    if run.get("config") != ci_ref.get("config"):
        raise ValueError(f"{name}: the ci run's configuration differs from the ci reference's: not the same experiment")
    diff = differences({"metrics": run.get("metrics")}, {"metrics": ci_ref.get("metrics")})
    if diff:
        shown = "; ".join(diff[:5])
        raise ValueError(f"{name}: {len(diff)} seeded numbers differ from the ci reference (e.g. {shown}): not equivalent")
    if committed:
        against = f"the committed ci reference (code version `{ci_version}`)"
    else:
        commit = str(ci_ref["provenance"].get("git_commit") or "unknown")[:10]
        against = f"a ci run of the reference's code (code version `{ci_version}`, commit `{commit}`) made beside it on the same machine"
    sentence = (
        f"the ci profile recomputed with code version `{version}` gave bitwise the seeded numbers of {against} "
        f"(times, speeds and memory left out of the comparison)."
    )
    return reference_version, sentence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", required=True, help="comma-separated chapter slugs (notebook stems)")
    parser.add_argument("--ci-run", type=Path, default=ROOT / "build" / "results" / "ci", help="the ci build of the current code")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a ci run of the reference's code made beside the new one (default: the committed ci reference, results/ci)",
    )
    args = parser.parse_args(argv)
    if _git("status", "--porcelain", "--untracked-files=no"):
        print("declare_equivalent: the work tree has uncommitted changes; commit first (the declaration names a commit)", file=sys.stderr)
        return 2
    full_dir = reference_dir("full")
    ci_dir = args.baseline if args.baseline is not None else reference_dir("ci")
    ledger_path = full_dir / EQUIVALENCE_LEDGER
    ledger = read_json(ledger_path) if ledger_path.is_file() else {"entries": []}
    commit, date = _git("rev-parse", "HEAD"), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    declared, failed = [], []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        version = code_version([notebook_path(name)])
        try:
            reference_version, sentence = evidence_for(name, args.ci_run, full_dir, ci_dir, version, committed=args.baseline is None)
        except ValueError as error:
            failed.append(str(error))
            continue
        if declared_equivalence(full_dir, name, reference_version, version) is None:
            ledger["entries"].append(
                {
                    "chapter": name,
                    "reference_version": reference_version,
                    "code_version": version,
                    "evidence": sentence,
                    "commit": commit,
                    "git_dirty": False,
                    "date": date,
                }
            )
        declared.append(f"{name}: reference {reference_version} declared equivalent to {version}")
    if declared:
        ledger["note"] = (
            "Code versions under which a committed full reference stays valid: each entry was written by "
            "scripts/declare_equivalent.py after the chapter's ci profile, recomputed with that code version, "
            "gave bitwise the committed ci reference's seeded numbers."
        )
        write_json_atomic(ledger_path, ledger)
    for line in declared:
        print(f"declare_equivalent: {line}")
    for line in failed:
        print(f"declare_equivalent: REFUSED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
