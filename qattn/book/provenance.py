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

A committed reference whose code version differs from the current one is still reused when the
two versions were *declared equivalent* in the ledger ``equivalent_code.json`` beside it
(:func:`declared_equivalence`): an entry is written by ``scripts/declare_equivalent.py`` only
after the chapter's ci profile, recomputed with the current code, gave bitwise the seeded numbers
of the committed ci reference (a refactor that changes no number, e.g. a faster assembly of the
same weights). The reused result keeps its own provenance (its code version, commit, timings).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import qattn
from qattn.book.imports import project_files

__all__ = [
    "collect_provenance",
    "code_version",
    "write_json_atomic",
    "read_json",
    "run_cached",
    "origin",
    "declared_equivalence",
    "EQUIVALENCE_LEDGER",
]

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
        "run_id": uuid.uuid4().hex,  # tells this run apart from any other (origin: reused or computed)
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


def _matches(path: Path, config: Mapping[str, Any], version: str) -> dict[str, Any] | None:
    """The results file at ``path`` if it holds ``config`` computed by code version ``version``."""
    if not path.is_file():
        return None
    old = read_json(path)
    if old.get("config") == config and old.get("provenance", {}).get("code_version") == version:
        return old
    return None


#: File name of the ledger of declared code-version equivalences, beside the references.
EQUIVALENCE_LEDGER = "equivalent_code.json"


def declared_equivalence(reference_dir: str | Path, name: str, reference_version: str, version: str) -> dict[str, Any] | None:
    """The ledger entry (in ``reference_dir/equivalent_code.json``) declaring that experiment
    ``name``'s reference, computed by code version ``reference_version``, stands for code version
    ``version``; None if there is none (or no ledger)."""
    ledger = Path(reference_dir) / EQUIVALENCE_LEDGER
    if not ledger.is_file():
        return None
    for entry in read_json(ledger).get("entries", []):
        if entry.get("chapter") == name and entry.get("reference_version") == reference_version and entry.get("code_version") == version:
            return entry
    return None


def _reference_for(ref_dir: Path, name: str, config: Mapping[str, Any], version: str) -> dict[str, Any] | None:
    """The committed reference of ``name`` for ``config`` at code version ``version``: same version,
    or a version declared equivalent (the returned copy then carries the ledger entry as ``equivalence``)."""
    path = ref_dir / f"{name}.json"
    ref = _matches(path, config, version)
    if ref is not None or not path.is_file():
        return ref
    ref = read_json(path)
    if ref.get("config") != config:
        return None
    entry = declared_equivalence(ref_dir, name, ref.get("provenance", {}).get("code_version", ""), version)
    if entry is None:
        return None
    return {**ref, "equivalence": entry}


def _copy_atomic(source: Path, target: Path) -> None:
    """Copy a file or a folder to ``target`` through a temporary name and a rename."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    if source.is_dir():
        shutil.copytree(source, tmp)
        if target.exists():
            shutil.rmtree(target)
    else:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def run_cached(
    name: str,
    config: Mapping[str, Any],
    run: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    out_dir: str | Path,
    extra_files: Iterable[str | Path] = (),
    fresh: bool | None = None,
    reference_dir: str | Path | None = None,
    assets: Iterable[str] = (),
) -> dict[str, Any]:
    """Run ``run(config)`` and store its metrics with provenance in ``out_dir/<name>.json``.

    Reuse, unless ``fresh`` is True (or, when ``fresh`` is None, the environment variable
    ``FRESH`` is ``1``):

    1. ``out_dir/<name>.json`` with the same ``config`` (compared as JSON) and the same code
       version (:func:`code_version` of ``extra_files``) is returned as it is;
    2. else, with ``reference_dir`` given, a committed reference ``reference_dir/<name>.json`` of
       the same config and code version is copied into ``out_dir`` with its ``assets`` (files or
       folders the chapter's pages need, e.g. example audio) and returned: the reference run is
       this build's result.

    Otherwise ``run`` runs; its result lists ``assets`` (written by ``run`` into ``out_dir``) so
    that :mod:`scripts/save_reference.py <scripts>` can commit them with the JSON. Progress lines go to stdout.
    Use :func:`origin` to tell a reader where the returned numbers come from.
    """
    out = Path(out_dir)
    path = out / f"{name}.json"
    config = json.loads(json.dumps(dict(config)))  # normalise (tuples → lists) and check it serialises
    extra_files = list(extra_files)
    assets = list(assets)
    version = code_version(extra_files)
    if fresh is None:
        fresh = os.environ.get("FRESH", "0") == "1"
    if not fresh:
        old = _matches(path, config, version)
        if old is not None and all((out / a).exists() for a in old.get("assets", [])):
            print(f"[{name}] reusing {path} (same config and code version {version})")
            return old
        if reference_dir is not None:
            ref_dir = Path(reference_dir)
            ref = _reference_for(ref_dir, name, config, version)
            if ref is not None and all((ref_dir / a).exists() for a in ref.get("assets", [])):
                out.mkdir(parents=True, exist_ok=True)
                for asset in ref.get("assets", []):
                    _copy_atomic(ref_dir / asset, out / asset)
                write_json_atomic(path, ref)
                why = f"same config and code version {version}"
                if "equivalence" in ref:
                    why = f"same config; its code version {ref['provenance']['code_version']} is declared equivalent to {version}"
                print(f"[{name}] reusing the committed reference {ref_dir / (name + '.json')} ({why})")
                return ref
    print(f"[{name}] running ...", flush=True)
    start = time.perf_counter()
    metrics = dict(run(config))
    wall = time.perf_counter() - start
    missing = [a for a in assets if not (out / a).exists()]
    if missing:
        raise FileNotFoundError(f"[{name}] the run did not write its declared assets {missing} into {out}")
    result = {
        "name": name,
        "config": config,
        "metrics": metrics,
        "provenance": collect_provenance(
            wall_time_s=round(wall, 3), extra_files=extra_files, version=version
        ),  # the code the run started with
    }
    if assets:
        result["assets"] = assets
    write_json_atomic(path, result)
    print(f"[{name}] done in {wall:.1f} s -> {path}")
    return result


def origin(result: Mapping[str, Any], reference_dir: str | Path | None = None) -> str:
    """One Markdown paragraph for the top of a chapter: where its numbers come from and how to recompute them.

    "Reused from the committed reference" when ``reference_dir`` holds this very run (the same
    ``run_id``; for files older than that field: the same code version, commit and date), else
    "computed in this build".
    """
    prov = result.get("provenance", {})
    name = result.get("name", "?")
    minutes = (prov.get("wall_time_s") or 0) / 60
    commit = (prov.get("git_commit") or "unknown")[:10]
    dirty = " with uncommitted changes" if prov.get("git_dirty") else ""
    where = f"{prov.get('cpu', '?')}, {prov.get('threads', '?')} threads"
    version = prov.get("code_version", "?")
    run = f"commit `{commit}`{dirty}, {prov.get('date', '?')}, on {where}, in {minutes:.1f} min (code version `{version}`)"
    how = (
        f"Recompute it with `FRESH=1 make book` (every chapter) or `make reference CHAPTER={name}` "
        f"(this chapter, stored as the new reference)."
    )
    reference = Path(reference_dir) / f"{name}.json" if reference_dir else None
    if reference is not None and reference.is_file():
        ref = read_json(reference).get("provenance", {})
        keys = ("run_id",) if "run_id" in prov else ("code_version", "git_commit", "date")
        if all(ref.get(k) == prov.get(k) for k in keys):
            equivalence = result.get("equivalence")
            if equivalence:
                return (
                    f"**Where these numbers come from:** the committed reference run ({run}), reused because this "
                    f"build's configuration is the same and its code version `{equivalence['code_version']}` was "
                    f"declared equivalent to the reference's: {equivalence['evidence']} Times and speeds in it were "
                    f"measured with the reference's code. {how}"
                )
            return (
                f"**Where these numbers come from:** the committed reference run ({run}), reused because "
                f"this build's configuration and code version are the same. {how}"
            )
    return f"**Where these numbers come from:** computed in this build ({run}). {how}"
