#!/usr/bin/env python
"""Compare the seeded numbers of two results folders BITWISE, leaving measurements of time and memory aside.

    .venv/bin/python scripts/compare_results.py build/results/ci results/ci

A refactor must not change what a seeded run computes: this walks the ``metrics`` of every
results JSON present in both folders and reports each leaf value that differs (floats compared
exactly, not within a tolerance). Leaves whose key path names a measurement of the machine
(time, speed, memory, real-time factor, throughput, the speed headlines, lengths where one timing
overtakes another) are skipped, and so are
the headline entries of kind ``ratio`` (timing ratios) or whose name says they come from the clock
(time, speed, memory, real-time factor, throughput: e.g. a time exponent, a share of the forward
time). Exit status 0 when nothing else differs.

>>> a = {"metrics": {"acc": 0.5, "wall_s": 1.0, "curve": [1, 2]}}
>>> b = {"metrics": {"acc": 0.5, "wall_s": 9.0, "curve": [1, 3]}}
>>> differences(a, b)
['metrics.curve[1]: 2 != 3']
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

#: Key-path fragments of measurements that depend on the machine and its load.
MACHINE = re.compile(
    r"(time|_s$|_s\b|seconds_per|per_second|rtf|throughput|flops|memory|peak|bytes|wall|median|"
    r"repeats|rounds|longest|limited_by|inference|timing|speed|ratio|reduction|attention_share|threads|crossover|"
    r"probe_error|\bok\b|achieved|fraction|\bseconds\b|(?:^|\.)share(?:\.|$))",
    re.I,
)


#: Headline names of numbers measured from the machine's clock (the rule of the repeatability test).
TIMING_NAME = re.compile(r"\btime\b|speed|memory|\brtf\b|throughput", re.I)


def _skip(path: str) -> bool:
    return bool(MACHINE.search(path))


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Leaf paths where ``a`` and ``b`` differ (exact comparison), machine measurements left out."""
    if _skip(path):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if "kind" in a and "name" in a and (a.get("kind") == "ratio" or TIMING_NAME.search(str(a["name"]))):
            return []  # a timing headline: a ratio of times, or a number fitted to or shared out of times
        out = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if _skip(sub):
                continue
            if key not in a or key not in b:
                out.append(f"{sub}: only in {'second' if key not in a else 'first'}")
            else:
                out += differences(a[key], b[key], sub)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--show", type=int, default=10, help="differences shown per file")
    args = parser.parse_args(argv)
    names = sorted({p.stem for p in args.first.glob("*.json")} & {p.stem for p in args.second.glob("*.json")})
    if not names:
        print(f"compare_results: no results file is in both {args.first} and {args.second}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        a = json.loads((args.first / f"{name}.json").read_text())
        b = json.loads((args.second / f"{name}.json").read_text())
        diff = differences({"metrics": a.get("metrics")}, {"metrics": b.get("metrics")})
        print(f"{name}: {'identical' if not diff else f'{len(diff)} differences'}")
        for line in diff[: args.show]:
            print(f"    {line}")
        failed += bool(diff)
    only = sorted({p.stem for p in args.first.glob("*.json")} ^ {p.stem for p in args.second.glob("*.json")})
    if only:
        print(f"(in one folder only: {', '.join(only)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
