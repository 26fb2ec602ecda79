#!/usr/bin/env python
"""Commit-ready reference results: copy a profile's results JSON into results/.

    .venv/bin/python scripts/save_reference.py --profile full   # after a full `make book`
    .venv/bin/python scripts/save_reference.py --profile ci     # after `make book PROFILE=ci`

The full profile's files go to ``results/<name>.json``, another profile's to
``results/<profile>/<name>.json`` (the reference that ``make test`` compares its ci run with).
Only results files are copied (JSON with ``metrics``); files of experiments that no longer exist
in the run are removed from the reference folder, so the reference is exactly one run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from qattn.book import paths
from qattn.book.report import load_results, reference_dir_for

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--results-dir", type=Path, help="default: build/results/<profile>")
    args = parser.parse_args(argv)
    source = args.results_dir or paths.results_dir(args.profile)
    results = load_results(source)
    if not results:
        print(f"save_reference: no results in {source}; run `make book PROFILE={args.profile}` first", file=sys.stderr)
        return 1
    target = reference_dir_for(args.profile)
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.json"):
        old.unlink()
    for name in results:
        path = source / f"{name}.json"  # run_cached's file name
        shutil.copy2(path, target / path.name)
        print(f"save_reference: {path.name} -> {target.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
