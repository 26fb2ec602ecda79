"""Results with provenance: atomic JSON writing, code versions, and cached runs.

Every experiment and proof notebook stores what it measured through :func:`run_cached`::

    {
      "name": "...",            # the experiment
      "config": {...},          # the full configuration (JSON-serialisable)
      "metrics": {...},         # what run(config) returned
      "provenance": {           # where, when and from what code it came
        "code_version": "...", "git_commit": "...", "git_dirty": false, "date": "...",
        "wall_time_s": 1.2, "python": "...", "packages": {...}, "cpu": "...", "threads": 2, ...
      }
    }

A file whose ``config`` and ``code_version`` equal the current ones is reused instead of
re-running; ``fresh=True`` (or the environment variable ``FRESH=1``) forces a new run. Files are
written atomically (temporary file + rename), so a failed run never overwrites good results.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import qattn
from qattn.book.imports import project_files

__all__ = ["collect_provenance", "code_version", "write_json_atomic", "read_json", "run_cached"]

#: The source of the installed ``qattn`` package: the code a result is computed with (hashed by
#: :func:`code_version`; only read, never written to).
SOURCE_DIR = Path(qattn.__file__).resolve().parent
_PACKAGES = ("torch", "numpy", "sympy", "matplotlib", "papermill", "jupyter-book", "qattn")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=SOURCE_DIR, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


#: Modules that decide where and whether a result is stored, never what it is: left out of a
#: chapter's code version (with what only they import), so that bookkeeping changes keep results valid.
BOOKKEEPING_MODULES = ("qattn.book.provenance", "qattn.book.paths", "qattn.book.imports")


def _code_cells(path: Path) -> list[str]:
    """The sources of a notebook's code cells up to and including the first that calls
    ``run_cached`` (all of them if none does): the cells its computation can depend on. The cell
    papermill injects (tagged ``injected-parameters``) is left out."""
    cells = []
    for cell in json.loads(path.read_text()).get("cells", []):
        if cell.get("cell_type") != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell.get("source", ""))
        cells.append(source)
        if "run_cached(" in source:
            break
    return cells


def _content(path: Path) -> bytes:
    """What counts as code in a file: all of it, except for a notebook (see :func:`code_version`)."""
    if path.suffix != ".ipynb":
        return path.read_bytes()
    return json.dumps(_code_cells(path)).encode()


def code_version(extra_files: Iterable[str | Path] = (), source_dir: Path = SOURCE_DIR) -> str:
    """SHA-256 (first 16 hex digits) of the code a result is computed with.

    With a notebook among ``extra_files`` (a chapter), the version covers exactly the chapter's
    computation: the notebook's code cells up to and including the one that calls
    :func:`run_cached`, and every project source file (``qattn``, ``proofs``) those cells reach
    through imports (:func:`qattn.book.imports.project_files`), bookkeeping modules
    (:data:`BOOKKEEPING_MODULES`) aside. A change anywhere else in the project, or in the
    notebook's later cells (plots, tables, prose), leaves the version, and the stored result, valid.
    Without a notebook it covers every ``qattn/**/*.py`` file plus ``extra_files``.
    ``source_dir`` is the ``qattn`` package folder whose project is hashed (default: this one).

    A notebook counts by the sources of those cells only: outputs, execution counts, metadata and
    the cell papermill injects are left out, so a notebook and its executed copy
    (``book/generated/``, where nbval re-runs it) have the same code version.
    """
    digest = hashlib.sha256()
    root = source_dir.parent
    extra = [Path(f) for f in extra_files]
    notebooks = [f for f in extra if f.suffix == ".ipynb"]
    if notebooks:
        cells = [c for nb in notebooks for c in _code_cells(nb)]
        project = sorted(project_files(cells, root, skip=BOOKKEEPING_MODULES))
    else:
        project = sorted(source_dir.rglob("*.py"))
    for f in project + extra:
        name = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        digest.update(name.encode())
        digest.update(_content(f))
    return digest.hexdigest()[:16]


def collect_provenance(
    wall_time_s: float | None = None, extra_files: Iterable[str | Path] = (), version: str | None = None
) -> dict[str, Any]:
    """Where, when and from what code a result comes: git state, versions, machine, date."""
    import torch  # local import: keep ``import qattn.book.provenance`` light

    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    status = _git("status", "--porcelain")
    return {
        "code_version": version if version is not None else code_version(extra_files),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "wall_time_s": wall_time_s,
        "python": platform.python_version(),
        "packages": packages,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a results file written by :func:`write_json_atomic`."""
    with open(path) as f:
        return json.load(f)


def run_cached(
    name: str,
    config: Mapping[str, Any],
    run: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    out_dir: str | Path,
    extra_files: Iterable[str | Path] = (),
    fresh: bool | None = None,
) -> dict[str, Any]:
    """Run ``run(config)`` and store its metrics with provenance in ``out_dir/<name>.json``.

    An existing file with the same ``config`` (compared as JSON) and the same code version
    (``qattn/`` plus ``extra_files``) is returned instead of re-running, unless ``fresh`` is True
    or, when ``fresh`` is None, the environment variable ``FRESH`` is ``1``.
    Progress lines go to stdout.
    """
    path = Path(out_dir) / f"{name}.json"
    config = json.loads(json.dumps(dict(config)))  # normalise (tuples → lists) and check it serialises
    extra_files = list(extra_files)
    version = code_version(extra_files)
    if fresh is None:
        fresh = os.environ.get("FRESH", "0") == "1"
    if not fresh and path.exists():
        old = read_json(path)
        if old.get("config") == config and old.get("provenance", {}).get("code_version") == version:
            print(f"[{name}] reusing {path} (same config and code version {version})")
            return old
    print(f"[{name}] running ...", flush=True)
    start = time.perf_counter()
    metrics = dict(run(config))
    wall = time.perf_counter() - start
    result = {
        "name": name,
        "config": config,
        "metrics": metrics,
        "provenance": collect_provenance(
            wall_time_s=round(wall, 3), extra_files=extra_files, version=version
        ),  # the code the run started with
    }
    write_json_atomic(path, result)
    print(f"[{name}] done in {wall:.1f} s -> {path}")
    return result
