"""Notebook sources and the table of contents: what scripts/build_book.py relies on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def load_build_book():
    """scripts/build_book.py as a module (scripts/ is not a package)."""
    if "build_book" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_book"] = module
        spec.loader.exec_module(module)
    return sys.modules["build_book"]


build_book = load_build_book()


def test_toc_and_notebooks_agree():
    assert build_book.check_toc() == []


def test_toc_has_the_fixed_chapters_in_order():
    files = build_book.toc_files()
    assert files[0] == "intro"
    assert {"reference", "bibliography", "generated/reproduction_report"} <= set(files)
    notebooks = build_book.toc_notebooks()
    assert notebooks[-1] == "reproduction_report", "the report is the last chapter: it reads every notebook's results"


def test_check_toc_reports_both_directions(tmp_path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "new.ipynb").write_text("{}")
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nchapters:\n  - file: generated/gone\n  - file: missing_page\n")
    (tmp_path / "intro.md").write_text("# x")
    problems = build_book.check_toc(toc, tmp_path / "nb", tmp_path)
    assert any("generated/gone" in p and "does not exist" in p for p in problems)
    assert any("notebooks/new.ipynb is not in" in p for p in problems)
    assert any("missing_page" in p for p in problems)
    assert len(problems) == 3


def test_progress_lines_are_echoed_live_and_everything_is_logged(tmp_path, monkeypatch, capsys):
    """A real papermill run of a two-cell notebook: lines starting with '[' reach the terminal."""
    for name in ("NOTEBOOKS", "GENERATED", "LOGS"):
        (tmp_path / name).mkdir()
        monkeypatch.setattr(build_book, name, tmp_path / name)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "x"\noutput_dir = "."', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('print("[demo] step 1 of 2")\nprint("a table row")\nprint("[demo] step 2", end="")\nprint(" of 2")'),
    ]
    nbformat.write(nb, tmp_path / "NOTEBOOKS" / "demo.ipynb")
    wall = build_book.execute_notebook("demo", build_book.Profile("ci", cell_timeout_s=60), tmp_path)
    assert wall > 0
    echoed = [line for line in capsys.readouterr().out.splitlines() if "demo" in line]
    assert echoed == ["    [demo] step 1 of 2", "    [demo] step 2 of 2"]
    log = (tmp_path / "LOGS" / "ci" / "demo.log").read_text()
    assert "a table row" in log and "[demo] step 2 of 2" in log
    executed = nbformat.read(tmp_path / "GENERATED" / "demo.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all("hide-input" in c.metadata.get("tags", []) for c in code), "code cells are folded in the built page"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_one_parameters_cell_with_profile_and_output_dir(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', expected exactly one"
    params = papermill.inspect_notebook(str(path))
    assert {"profile", "output_dir"} <= set(params), f"{path.name} parameters: {sorted(params)}"
    assert params["profile"]["default"].strip("'\"") in build_book.PROFILES
    if "run_cached(" in path.read_text():
        assert "reference_dir" in params, f"{path.name} stores results but takes no reference_dir (the build's cache)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_sources_are_stripped_and_use_the_python3_kernel(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: clear the outputs before committing"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert not any("sys.path" in c.source for c in code), f"{path.name}: no sys.path edits (qattn is installed editable)"
