"""Which project source files a piece of code depends on, read statically from its imports.

:func:`project_files` follows ``import`` statements (at any depth: inside functions too, relative
imports resolved) from some Python source through the project's packages (``qattn`` and ``proofs``
under one root) and returns every source file reached, with the ``__init__.py`` of each package on
the way (importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too). Imports of
other packages (torch, numpy, ...) are not followed: their versions are recorded separately.
Nothing is imported or executed.

This is what a chapter's code version hashes (:func:`qattn.book.provenance.code_version`): the
code its computation can reach, so that a change elsewhere in the project leaves it valid.

>>> from qattn.book.provenance import SOURCE_DIR
>>> files = project_files(["from qattn.attention import shared_score_attention"], SOURCE_DIR.parent)
>>> names = {f.relative_to(SOURCE_DIR.parent).as_posix() for f in files}
>>> {"qattn/__init__.py", "qattn/attention/__init__.py", "qattn/attention/shared_score.py"} <= names
True
>>> any("book" in f.parts for f in files)
False
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PROJECT_PACKAGES", "imported_modules", "module_file", "project_files"]

PROJECT_PACKAGES = ("qattn", "proofs")


def imported_modules(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Absolute names of everything ``source`` imports, read as the module ``module``.

    ``from pkg import name`` yields ``pkg`` and ``pkg.name`` (``name`` may be a submodule; a name
    that is not a module is dropped later by :func:`module_file`). Lines of IPython magics and
    shell escapes (``%...``, ``!...``) are skipped so that notebook cells parse.
    """
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    names: set[str] = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n}


def module_file(name: str, root: Path) -> Path | None:
    """The source file of the project module ``name`` under ``root``, or None (not a project module)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def project_files(sources: Iterable[str], root: Path, skip: Iterable[str] = ()) -> set[Path]:
    """Every project file (under ``root``) that the Python ``sources`` reach through imports.

    Modules named in ``skip`` are neither returned nor followed.
    """
    pending: set[str] = set().union(*(imported_modules(s) for s in sources))
    seen_names: set[str] = set(skip)
    files: set[Path] = set()
    while pending:
        name = pending.pop()
        if name in seen_names:
            continue
        seen_names.add(name)
        parts = name.split(".")
        pending.update(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        path = module_file(name, root)
        if path is None or path in files:
            continue
        files.add(path)
        module, is_package = _module_name(path, root)
        pending.update(imported_modules(path.read_text(), module, is_package) - seen_names)
    return files
