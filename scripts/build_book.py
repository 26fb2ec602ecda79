#!/usr/bin/env python
"""Build the book: execute every notebook of the table of contents with papermill, then Jupyter Book.

Usage (through the Makefile: ``make book`` or ``make book PROFILE=ci``)::

    .venv/bin/python scripts/build_book.py --profile ci

1. Checks that ``book/_toc.yml`` and ``notebooks/`` agree: every entry ``generated/<stem>`` of the
   toc has a source ``notebooks/<stem>.ipynb`` and every source notebook is in the toc.
2. Executes each listed notebook in toc order with papermill (kernel ``python3``, working
   directory ``notebooks/``, a per-cell timeout of the profile), injecting ``profile`` and
   ``output_dir`` (the absolute per-profile results folder, ``build/results/<profile>/`` by
   default) into ``book/generated/<stem>.ipynb``; one progress line per notebook with its wall
   time. A failing notebook stops the build (exit status 1) and shows the failing cell.
3. Builds HTML with Jupyter Book 1.x, strict (``-W --keep-going``), execution off, and prints the
   path of ``index.html``.

``FRESH=1`` in the environment makes every experiment re-run instead of reusing results of the
same config and code version (see :mod:`qattn.provenance`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
TOC = BOOK / "_toc.yml"
NOTEBOOKS = ROOT / "notebooks"
GENERATED = BOOK / "generated"
GENERATED_PREFIX = "generated/"
HTML = BOOK / "_build" / "html"
KERNEL = "python3"


@dataclass(frozen=True)
class Profile:
    """How long one notebook cell may run at a profile, in seconds."""

    name: str
    cell_timeout_s: int


PROFILES = {
    "ci": Profile("ci", cell_timeout_s=600),
    "full": Profile("full", cell_timeout_s=4 * 3600),
}


def _walk_files(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "file" in node:
            yield str(node["file"])
        for key in ("root", "parts", "chapters", "sections"):
            if key == "root" and key in node:
                yield str(node["root"])
            elif key in node:
                yield from _walk_files(node[key])
    elif isinstance(node, list):
        for item in node:
            yield from _walk_files(item)


def toc_files(toc: Path = TOC) -> list[str]:
    """Every page of the table of contents, in reading order (paths relative to ``book/``, no suffix)."""
    return list(_walk_files(yaml.safe_load(toc.read_text())))


def toc_notebooks(toc: Path = TOC) -> list[str]:
    """Stems of the executed notebooks the toc lists (entries ``generated/<stem>``), in reading order."""
    return [f[len(GENERATED_PREFIX):] for f in toc_files(toc) if f.startswith(GENERATED_PREFIX)]


def check_toc(toc: Path = TOC, notebooks: Path = NOTEBOOKS, book: Path = BOOK) -> list[str]:
    """Problems that would make the book wrong: the toc and ``notebooks/`` must list the same notebooks."""
    problems = []
    listed = toc_notebooks(toc)
    sources = sorted(p.stem for p in notebooks.glob("*.ipynb"))
    for stem in sorted(set(listed) - set(sources)):
        problems.append(f"{toc.name} lists {GENERATED_PREFIX}{stem} but notebooks/{stem}.ipynb does not exist")
    for stem in sorted(set(sources) - set(listed)):
        problems.append(f"notebooks/{stem}.ipynb is not in {toc.name}: add '- file: {GENERATED_PREFIX}{stem}' to its part")
    for stem in sorted({s for s in listed if listed.count(s) > 1}):
        problems.append(f"{toc.name} lists {GENERATED_PREFIX}{stem} more than once")
    for page in toc_files(toc):
        if not page.startswith(GENERATED_PREFIX) and not any((book / f"{page}{ext}").exists() for ext in (".md", ".ipynb", ".rst")):
            problems.append(f"{toc.name} lists {page} but book/{page}.md does not exist")
    return problems


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def execute_notebook(stem: str, profile: Profile, results_dir: Path) -> float:
    """Execute ``notebooks/<stem>.ipynb`` into ``book/generated/<stem>.ipynb``; return the wall time in s."""
    import papermill  # the heavy imports only when executing

    start = time.perf_counter()
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{stem}.ipynb"),
        str(GENERATED / f"{stem}.ipynb"),
        parameters={"profile": profile.name, "output_dir": str(results_dir)},
        kernel_name=KERNEL,
        cwd=str(NOTEBOOKS),
        execution_timeout=profile.cell_timeout_s,
        progress_bar=False,
        log_output=False,
        # The kernel's start-up notice about unencrypted loopback TCP is noise for a local build.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )
    return time.perf_counter() - start


def report_failure(stem: str, err: Exception) -> None:
    """Print the failing cell of a notebook (papermill's error carries its source and traceback)."""
    print(f"\nbuild_book: notebooks/{stem}.ipynb FAILED", file=sys.stderr)
    source = getattr(err, "source", None)
    if source is not None:
        print(f"--- failing cell (execution count {getattr(err, 'exec_count', '?')}) ---", file=sys.stderr)
        print(source, file=sys.stderr)
        print("--- error ---", file=sys.stderr)
        print(_ANSI.sub("", "\n".join(getattr(err, "traceback", []) or [])) or f"{err.ename}: {err.evalue}", file=sys.stderr)
    else:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
    print(f"The partly executed notebook is {GENERATED / (stem + '.ipynb')}", file=sys.stderr)


def build_html() -> Path:
    """Run ``jupyter-book build`` strictly (warnings are errors) and return the path of index.html."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(BOOK), "--builder", "html", "--all", "-W", "--keep-going", "-q"]
    subprocess.run(command, cwd=ROOT, check=True)
    index = HTML / "index.html"
    if not index.exists():
        raise FileNotFoundError(f"jupyter-book finished but {index} is missing")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--results-dir", type=Path, help="results folder (default: build/results/<profile>)")
    parser.add_argument("--skip-execute", action="store_true", help="only rebuild the HTML from book/generated")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    results_dir = (args.results_dir or ROOT / "build" / "results" / profile.name).resolve()

    problems = check_toc()
    if problems:
        print("build_book: the table of contents and notebooks/ disagree:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    stems = toc_notebooks()
    total_start = time.perf_counter()
    if not args.skip_execute:
        logging.getLogger("papermill").setLevel(logging.WARNING)
        if GENERATED.exists():
            shutil.rmtree(GENERATED)
        GENERATED.mkdir(parents=True)
        results_dir.mkdir(parents=True, exist_ok=True)
        fresh = " (FRESH=1: no reuse)" if os.environ.get("FRESH") == "1" else ""
        print(f"build_book: profile {profile.name}, results in {results_dir}{fresh}", flush=True)
        for i, stem in enumerate(stems, 1):
            print(f"[{i}/{len(stems)}] {stem}.ipynb: running", flush=True)
            try:
                wall = execute_notebook(stem, profile, results_dir)
            except Exception as err:  # papermill's execution error, a timeout, a dead kernel
                report_failure(stem, err)
                return 1
            print(f"[{i}/{len(stems)}] {stem}.ipynb: done in {wall:.1f} s", flush=True)
    html_start = time.perf_counter()
    print("build_book: jupyter-book build (strict, execution off) ...", flush=True)
    try:
        index = build_html()
    except subprocess.CalledProcessError as err:
        print(f"build_book: jupyter-book failed (exit status {err.returncode}); see the warnings above", file=sys.stderr)
        return 1
    now = time.perf_counter()
    print(f"build_book: HTML in {now - html_start:.1f} s; total {now - total_start:.1f} s")
    print(f"build_book: open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
