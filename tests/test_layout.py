"""Layout: the library (everything under ``qattn/`` except ``qattn/book/``) imports only the standard
library, torch, numpy and itself, and never the book side.

The imports are read with :mod:`ast` from the source files, so an import that only runs inside a
function, under ``if TYPE_CHECKING:`` or in a ``try:`` counts as well as a top-level one. Relative
imports are resolved against the importing module; ``from pkg import name`` counts as importing
``pkg`` and ``pkg.name`` (the name may be a submodule); ``importlib.import_module("...")`` and
``__import__("...")`` with a literal name count too. The list of library modules comes from the
tree, so a new library file is checked without touching this test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qattn"
BOOK = "qattn.book"
THIRD_PARTY_ALLOWED = frozenset({"torch", "numpy"})
FIRST_PARTY = "qattn"


def library_files() -> list[Path]:
    """Every ``.py`` file under ``qattn/`` that is not under ``qattn/book/``."""
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "book")


def module_of(path: Path) -> tuple[str, bool]:
    """The dotted module name of a source file under the repository root, and whether it is a package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        raise ImportError(f"relative import beyond the top-level package in {module}")
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source``, read as the module ``module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What a library module may not import: ``qattn.book`` (or below) and third-party packages but torch and numpy."""
    problems: dict[tuple[int, str], str] = {}  # one report per line and offending package
    for line, name in imported_names(source, module, is_package):
        top = name.split(".")[0]
        if name == BOOK or name.startswith(BOOK + "."):
            problems.setdefault((line, BOOK), f"{module}:{line} imports the book side ({name})")
        elif top != FIRST_PARTY and top not in THIRD_PARTY_ALLOWED and top not in sys.stdlib_module_names:
            message = f"{module}:{line} imports the third-party package {top!r} ({name}); the library may use only torch and numpy"
            problems.setdefault((line, top), message)
    return list(problems.values())


# --- the checker itself: it must report what it exists to catch, and only that -----------------------------


@pytest.mark.parametrize(
    "source, module, is_package",
    [
        ("import qattn.book.paths\n", "qattn.attention.fake", False),
        ("from qattn.book.paths import results_dir\n", "qattn.layers", False),
        ("from qattn import book\n", "qattn.layers", False),
        ("from ..book import paths\n", "qattn.attention.fake", False),
        ("from .book.report import headline\n", "qattn", True),
        ("from . import book\n", "qattn", True),
        (
            "def f():\n    try:\n        from qattn.book.paths import home\n    except ImportError:\n        pass\n",
            "qattn.metrics.divergence",
            False,
        ),
        ("import importlib\nM = importlib.import_module('qattn.book.provenance')\n", "qattn.quaternion", False),
    ],
)
def test_checker_reports_an_import_of_the_book_side(source, module, is_package):
    found = violations(source, module, is_package)
    assert found and all("book side" in v for v in found), found


@pytest.mark.parametrize(
    "source",
    [
        "import scipy.signal\n",
        "from matplotlib import pyplot\n",
        "def plot():\n    import sympy\n",
        "import torchvision\n",
        "import numpyro\n",
    ],
)
def test_checker_reports_a_third_party_import(source):
    found = violations(source, "qattn.metrics.divergence")
    assert len(found) == 1 and "third-party" in found[0], found


def test_checker_accepts_stdlib_torch_numpy_and_the_library():
    source = (
        "from __future__ import annotations\nimport math, os.path\nimport torch.nn.functional as F\nimport numpy as np\n"
        "from typing import Any\nfrom . import _masks\nfrom ..layers import QuaternionLinear\nfrom qattn.quaternion import hamilton\n"
        "from .. import quaternion\nimport qattn.bookkeeping\n"
    )
    assert violations(source, "qattn.attention.fake") == []


def test_relative_imports_resolve_to_absolute_names():
    names = [n for _, n in imported_names("from ..book import x\nfrom . import y\nfrom .z import w\n", "qattn.attention.fake")]
    assert names == ["qattn.book", "qattn.book.x", "qattn.attention", "qattn.attention.y", "qattn.attention.z", "qattn.attention.z.w"]
    names = [n for _, n in imported_names("from . import a\nfrom .b import c\n", "qattn.attention", is_package=True)]
    assert names == ["qattn.attention", "qattn.attention.a", "qattn.attention.b", "qattn.attention.b.c"]


# --- the library as it is in the tree ----------------------------------------------------------------------


def test_library_modules_are_every_file_under_qattn_but_the_book():
    files = library_files()
    every = sorted(PACKAGE.rglob("*.py"))
    book = [p for p in every if p.is_relative_to(PACKAGE / "book")]
    assert book, "qattn/book/ holds the book side"
    assert sorted(files + book) == every and not set(files) & set(book)
    names = {module_of(p)[0] for p in files}
    assert {"qattn", "qattn.quaternion", "qattn.layers", "qattn.attention", "qattn.metrics"} <= names
    assert not any(n == BOOK or n.startswith(BOOK + ".") for n in names)


def test_every_folder_of_python_files_is_a_package():
    """setuptools' package discovery (and so the wheel) skips a folder without ``__init__.py``."""
    folders = {p.parent for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_module_imports_neither_the_book_nor_third_party_packages(path):
    module, is_package = module_of(path)
    assert violations(path.read_text(), module, is_package) == []
