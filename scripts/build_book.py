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
   time. While a notebook runs, its progress lines (printed lines that start with ``[``, e.g.
   ``[speech] qconformer_shared seed 1: PESQ ...``) are echoed indented, and everything it
   prints is kept in ``build/logs/<profile>/<stem>.log``. A failing notebook stops the build
   (exit status 1) and shows the failing cell. The wall time of each notebook is written to
   ``build/logs/<profile>/times.json``.
3. Builds HTML with Jupyter Book 1.x, strict (``-W --keep-going``), execution off, and prints the
   path of ``index.html``.

At the full profile a chapter reuses the committed reference in ``results/`` when its
configuration and code version are unchanged (see :func:`qattn.book.provenance.run_cached`);
``FRESH=1`` in the environment makes every experiment re-run instead of reusing anything.
``--only STEM`` executes one notebook and builds no HTML (``make reference CHAPTER=STEM``).
"""

from __future__ import annotations

import argparse
import json
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

from qattn.book import paths

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
TOC = BOOK / "_toc.yml"
NOTEBOOKS = ROOT / "notebooks"
GENERATED = BOOK / "generated"
GENERATED_PREFIX = "generated/"
HTML = BOOK / "_build" / "html"
LOGS = ROOT / "build" / "logs"
KERNEL = "python3"


@dataclass(frozen=True)
class Profile:
    """How long one notebook cell may run at a profile, in seconds."""

    name: str
    cell_timeout_s: int
    reuse_reference: bool = False  # reuse the committed reference results of the same config and code


PROFILES = {
    "ci": Profile("ci", cell_timeout_s=600, reuse_reference=False),
    "full": Profile("full", cell_timeout_s=4 * 3600, reuse_reference=True),
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
    return [f[len(GENERATED_PREFIX) :] for f in toc_files(toc) if f.startswith(GENERATED_PREFIX)]


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


class ProgressEcho:
    """Where a notebook's standard output goes while papermill runs it (papermill's ``stdout_file``).

    Every line is appended to ``log``; lines that start with ``[`` (the experiments' progress
    lines) are also echoed to ``echo``, indented, as soon as they are complete.

    >>> import io
    >>> log, term = io.StringIO(), io.StringIO()
    >>> sink = ProgressEcho(log, term)
    >>> sink.write("[vqa] data ready"); sink.write(" in 3 s\\nplain line\\n[vqa] done\\n")
    >>> term.getvalue()
    '    [vqa] data ready in 3 s\\n    [vqa] done\\n'
    >>> log.getvalue().count("\\n")
    3
    """

    def __init__(self, log: Any, echo: Any = None) -> None:
        self.log, self.echo, self._partial = log, echo, ""

    def write(self, text: str) -> None:
        self.log.write(text)
        echo = self.echo or sys.stdout
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            if line.startswith("["):
                echo.write(f"    {line}\n")
        echo.flush()

    def flush(self) -> None:
        self.log.flush()


def execute_notebook(stem: str, profile: Profile, results_dir: Path) -> float:
    """Execute ``notebooks/<stem>.ipynb`` into ``book/generated/<stem>.ipynb``; return the wall time in s.

    The full profile passes the committed references (``results/``) as ``reference_dir``: a
    chapter whose configuration and code version equal its reference's reuses it instead of
    recomputing. Other profiles pass none, so ``make test``'s ci build always computes.
    """
    import papermill  # the heavy imports only when executing

    reference_dir = str(paths.reference_dir(profile.name)) if profile.reuse_reference else ""

    logs = LOGS / profile.name
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(logs / f"{stem}.log", "w") as log:
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{stem}.ipynb"),
            str(GENERATED / f"{stem}.ipynb"),
            parameters={"profile": profile.name, "output_dir": str(results_dir), "reference_dir": reference_dir},
            kernel_name=KERNEL,
            cwd=str(NOTEBOOKS),
            execution_timeout=profile.cell_timeout_s,
            progress_bar=False,
            log_output=False,
            # The kernel's start-up notice about unencrypted loopback TCP is noise for a local build.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
            stdout_file=ProgressEcho(log),
        )
    fold_code(GENERATED / f"{stem}.ipynb")
    return time.perf_counter() - start


FOLD_TAG = "hide-input"


def fold_code(path: Path) -> None:
    """Fold every code cell of an executed notebook behind a toggle (tag ``hide-input``): the page
    shows the narrative, tables and figures; the code is one click away."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            tags = cell.metadata.setdefault("tags", [])
            if FOLD_TAG not in tags:
                tags.append(FOLD_TAG)
    nbformat.write(nb, path)


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
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="results folder (default: qattn.book.paths.results_dir(profile): build/results/<profile> in a checkout)",
    )
    parser.add_argument("--skip-execute", action="store_true", help="only rebuild the HTML from book/generated")
    parser.add_argument(
        "--only",
        metavar="STEM",
        help="execute only notebooks/<STEM>.ipynb (other executed notebooks are kept) and build no HTML (make reference)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    results_dir = (args.results_dir or paths.results_dir(profile.name)).resolve()

    problems = check_toc()
    if problems:
        print("build_book: the table of contents and notebooks/ disagree:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    stems = toc_notebooks()
    if args.only is not None:
        if args.only not in stems:
            print(f"build_book: no chapter {args.only!r}; the chapters are {stems}", file=sys.stderr)
            return 2
        stems = [args.only]
    total_start = time.perf_counter()
    if not args.skip_execute:
        logging.getLogger("papermill").setLevel(logging.WARNING)
        if GENERATED.exists() and args.only is None:
            shutil.rmtree(GENERATED)
        GENERATED.mkdir(parents=True, exist_ok=True)
        results_dir.mkdir(parents=True, exist_ok=True)
        fresh = " (FRESH=1: no reuse)" if os.environ.get("FRESH") == "1" else ""
        print(f"build_book: profile {profile.name}, results in {results_dir}{fresh}", flush=True)
        times: dict[str, float] = {}
        for i, stem in enumerate(stems, 1):
            print(f"[{i}/{len(stems)}] {stem}.ipynb: running (its output: {LOGS / profile.name / (stem + '.log')})", flush=True)
            try:
                times[stem] = execute_notebook(stem, profile, results_dir)
            except Exception as err:  # papermill's execution error, a timeout, a dead kernel
                report_failure(stem, err)
                return 1
            print(f"[{i}/{len(stems)}] {stem}.ipynb: done in {times[stem]:.1f} s", flush=True)
        summary = {
            "profile": profile.name,
            "notebooks_s": {k: round(v, 1) for k, v in times.items()},
            "total_s": round(sum(times.values()), 1),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        times_file = LOGS / profile.name / ("times.json" if args.only is None else f"times-{args.only}.json")
        times_file.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"build_book: notebooks done in {summary['total_s'] / 60:.1f} min", flush=True)
    if args.only is not None:
        return 0
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
