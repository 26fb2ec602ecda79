#!/usr/bin/env python
"""Commit-ready reference results: copy a profile's results JSON into results/.

    .venv/bin/python scripts/save_reference.py --profile full   # after a full `make book`
    .venv/bin/python scripts/save_reference.py --profile ci     # after `make book PROFILE=ci`

The full profile's files go to ``results/<name>.json`` with the assets each lists (example audio,
attention maps, checkpoints: what its chapter's pages need when the build reuses the reference),
another profile's to ``results/<profile>/<name>.json`` (the reference that ``make test`` compares
its ci run with; JSON only). Files of experiments that no longer exist in the run are removed
from the reference folder, so the reference is exactly one run. ``--only CHAPTER`` saves one
chapter and leaves the others (``make reference CHAPTER=<slug>``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from qattn.book import paths
from qattn.book.report import load_results, reference_dir_for

ROOT = Path(__file__).resolve().parents[1]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def save(name: str, source: Path, target: Path, with_assets: bool) -> None:
    """Copy ``<name>.json`` (and, ``with_assets``, the assets it lists) from ``source`` to ``target``."""
    path = source / f"{name}.json"  # run_cached's file name
    old = target / path.name
    if old.exists():
        for asset in json.loads(old.read_text()).get("assets", []):
            _remove(target / asset)
    assets = json.loads(path.read_text()).get("assets", []) if with_assets else []
    for asset in assets:
        if not (source / asset).exists():
            raise FileNotFoundError(f"{name}.json lists the asset {asset}, which is not in {source}")
        _remove(target / asset)
        if (source / asset).is_dir():
            shutil.copytree(source / asset, target / asset)
        else:
            shutil.copy2(source / asset, target / asset)
    shutil.copy2(path, old)
    size = sum(f.stat().st_size for a in assets for f in ([target / a] if (target / a).is_file() else (target / a).rglob("*")))
    extra = f" with {len(assets)} asset(s), {size / 2**20:.1f} MiB" if assets else ""
    print(f"save_reference: {path.name}{extra} -> {target.relative_to(ROOT)}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--results-dir", type=Path, help="default: build/results/<profile>")
    parser.add_argument("--only", metavar="CHAPTER", help="save this chapter's results only (the others stay as they are)")
    args = parser.parse_args(argv)
    source = args.results_dir or paths.results_dir(args.profile)
    results = load_results(source)
    if not results:
        print(f"save_reference: no results in {source}; run `make book PROFILE={args.profile}` first", file=sys.stderr)
        return 1
    target = reference_dir_for(args.profile)
    target.mkdir(parents=True, exist_ok=True)
    with_assets = args.profile == "full"  # only the full profile's references are reused by the build
    if args.only is not None:
        if args.only not in results:
            print(f"save_reference: no results of {args.only!r} in {source}; there are {sorted(results)}", file=sys.stderr)
            return 1
        save(args.only, source, target, with_assets)
        return 0
    for old in target.glob("*.json"):
        if old.stem not in results:
            for asset in json.loads(old.read_text()).get("assets", []):
                _remove(target / asset)
            old.unlink()
    for name in results:
        save(name, source, target, with_assets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
