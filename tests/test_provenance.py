"""qattn.book.provenance: atomic writes, reuse by config and code version, FRESH=1, provenance fields."""

import json
from pathlib import Path

import pytest

from qattn.book import provenance
from qattn.book.provenance import code_version, read_json, run_cached, write_json_atomic


class Counter:
    """A run function that counts its calls and returns a seeded-looking metric."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, config):
        self.calls += 1
        return {"score": config["n"] * 2, "calls": self.calls}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": float("nan")})  # not valid JSON: refused before the rename
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"], "no temporary file left behind"


def test_a_failing_run_keeps_the_previous_results(tmp_path):
    run_cached("exp", {"n": 1}, Counter(), tmp_path, fresh=True)
    before = (tmp_path / "exp.json").read_text()

    def broken(config):
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        run_cached("exp", {"n": 2}, broken, tmp_path)
    assert (tmp_path / "exp.json").read_text() == before


def test_reuse_on_same_config_and_code_version(tmp_path, monkeypatch):
    monkeypatch.delenv("FRESH", raising=False)
    run = Counter()
    first = run_cached("exp", {"n": 3, "shape": (2, 4)}, run, tmp_path)
    second = run_cached("exp", {"n": 3, "shape": [2, 4]}, run, tmp_path)
    assert run.calls == 1 and second == first
    assert first["config"] == {"n": 3, "shape": [2, 4]}
    run_cached("exp", {"n": 4, "shape": [2, 4]}, run, tmp_path)
    assert run.calls == 2, "a different config runs again"


def test_a_new_code_version_runs_again(tmp_path, monkeypatch):
    monkeypatch.delenv("FRESH", raising=False)
    notebook = tmp_path / "nb.ipynb"
    notebook.write_text('{"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}}]}')
    run = Counter()
    run_cached("exp", {"n": 1}, run, tmp_path / "out", extra_files=[notebook])
    run_cached("exp", {"n": 1}, run, tmp_path / "out", extra_files=[notebook])
    assert run.calls == 1
    notebook.write_text('{"cells": [{"cell_type": "code", "source": "x = 2", "metadata": {}}]}')
    run_cached("exp", {"n": 1}, run, tmp_path / "out", extra_files=[notebook])
    assert run.calls == 2


def test_fresh_env_and_argument_force_a_new_run(tmp_path, monkeypatch):
    run = Counter()
    monkeypatch.delenv("FRESH", raising=False)
    run_cached("exp", {"n": 1}, run, tmp_path)
    monkeypatch.setenv("FRESH", "1")
    result = run_cached("exp", {"n": 1}, run, tmp_path)
    assert run.calls == 2 and result["metrics"]["calls"] == 2
    assert read_json(tmp_path / "exp.json")["metrics"]["calls"] == 2
    run_cached("exp", {"n": 1}, run, tmp_path, fresh=False)  # the argument wins over FRESH
    assert run.calls == 2
    monkeypatch.setenv("FRESH", "0")
    run_cached("exp", {"n": 1}, run, tmp_path, fresh=True)
    assert run.calls == 3


def test_provenance_fields(tmp_path):
    result = run_cached("exp", {"n": 1}, Counter(), tmp_path, fresh=True)
    stored = json.loads((tmp_path / "exp.json").read_text())
    assert stored == result
    assert set(stored) == {"name", "config", "metrics", "provenance"}
    prov = stored["provenance"]
    for field in (
        "code_version",
        "git_commit",
        "git_dirty",
        "date",
        "wall_time_s",
        "python",
        "packages",
        "cpu",
        "cpu_count",
        "threads",
        "platform",
    ):
        assert field in prov, field
    assert prov["code_version"] == code_version()
    assert prov["wall_time_s"] >= 0 and prov["threads"] >= 1
    assert {"torch", "numpy", "qattn"} <= set(prov["packages"])
    assert prov["date"].endswith("+00:00")
    if provenance._git("rev-parse", "HEAD") is not None:  # inside a git checkout
        assert len(prov["git_commit"]) == 40 and isinstance(prov["git_dirty"], bool)


def test_code_version_covers_the_package_and_extra_files(tmp_path):
    extra = tmp_path / "x.py"
    extra.write_text("a")
    v1 = code_version([extra])
    assert v1 != code_version() and len(v1) == 16
    extra.write_text("b")
    assert code_version([extra]) != v1


def test_a_notebook_and_its_executed_copy_have_the_same_code_version(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    source, executed = tmp_path / "src" / "nb.ipynb", tmp_path / "run" / "nb.ipynb"
    source.parent.mkdir(), executed.parent.mkdir()
    nb = new_notebook(cells=[new_code_cell("profile = 'full'", metadata={"tags": ["parameters"]}), new_code_cell("print(1)")])
    nbformat.write(nb, source)
    run = new_notebook(
        cells=[
            nb.cells[0],
            new_code_cell("profile = 'ci'", metadata={"tags": ["injected-parameters"]}),
            new_code_cell("print(1)", execution_count=1, outputs=[new_output("stream", text="1\n")]),
        ],
        metadata={"papermill": {"duration": 1.0}},
    )
    nbformat.write(run, executed)
    assert code_version([source]) == code_version([executed])
    nb.cells[1].source = "print(2)"
    nbformat.write(nb, source)
    assert code_version([source]) != code_version([executed])


def _edit(path, text="\n# an edit\n"):
    path.write_text(path.read_text() + text)


def test_a_chapter_version_covers_exactly_what_its_computation_imports(tmp_path):
    """Per-chapter code versions: an edit in a module the chapter's experiment imports (directly or
    through others) or in its computation cells changes the version; an edit elsewhere in the
    project, in a bookkeeping module or in the notebook's later cells does not."""
    import json
    import shutil

    from qattn.book.provenance import SOURCE_DIR

    root = SOURCE_DIR.parent
    for folder in ("qattn", "proofs"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    notebook = tmp_path / "vision.ipynb"
    shutil.copy(root / "notebooks" / "vision.ipynb", notebook)
    source = tmp_path / "qattn"

    def version():
        return code_version([notebook], source_dir=source)

    base = version()
    assert base == code_version([notebook], source_dir=source)  # deterministic
    for unrelated in ("book/experiments/vqa.py", "book/models/speech.py", "book/report.py", "book/provenance.py", "book/paths.py"):
        _edit(source / unrelated)
        assert version() == base, f"editing {unrelated} changed the vision chapter's version"
    nb = json.loads(notebook.read_text())
    last_code = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    last_code["source"] = ["# a plot tweak\n", *last_code["source"]]
    notebook.write_text(json.dumps(nb))
    assert version() == base, "a cell after the computation changed the version"
    for imported in (
        "book/experiments/vision.py",
        "book/models/vit.py",
        "book/harness/training.py",
        "attention/hamilton.py",
        "quaternion.py",
    ):
        before = version()
        _edit(source / imported)
        assert version() != before, f"editing {imported}, which the vision experiment imports, kept the version"
    before = version()
    run_cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "run_cached(" in "".join(c["source"]))
    run_cell["source"] = [*run_cell["source"], "\n# changed\n"]
    notebook.write_text(json.dumps(nb))
    assert version() != before, "editing the cell that runs the experiment kept the version"


def test_theory_chapters_cover_the_proofs(tmp_path):
    import shutil

    from qattn.book.provenance import SOURCE_DIR

    root = SOURCE_DIR.parent
    for folder in ("qattn", "proofs"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    notebook = root / "notebooks" / "theory_counts.ipynb"
    before = code_version([notebook], source_dir=tmp_path / "qattn")
    _edit(tmp_path / "proofs" / "interaction_subspace.py")  # another proof: unrelated
    assert code_version([notebook], source_dir=tmp_path / "qattn") == before
    _edit(tmp_path / "proofs" / "counts.py")
    assert code_version([notebook], source_dir=tmp_path / "qattn") != before


class WritesAssets(Counter):
    """A run that also writes a file and a folder of assets into ``out``."""

    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def __call__(self, config):
        (self.out / "exp_audio.npz").write_bytes(b"audio")
        (self.out / "exp_models").mkdir(exist_ok=True)
        (self.out / "exp_models" / "m.pt").write_bytes(b"weights")
        return super().__call__(config)


ASSETS = ("exp_audio.npz", "exp_models")


def test_a_committed_reference_is_the_builds_cache(tmp_path, monkeypatch):
    """A reference of the same config and code version is copied into the build with its assets and
    not recomputed; another config, FRESH=1 or a missing asset recompute; origin() says which."""
    monkeypatch.delenv("FRESH", raising=False)
    reference, build = tmp_path / "results", tmp_path / "build"
    reference.mkdir()
    made = run_cached("exp", {"n": 1}, WritesAssets(reference), reference, assets=ASSETS)
    assert made["assets"] == list(ASSETS)
    assert "computed in this build" in provenance.origin(made)

    run = WritesAssets(build)
    reused = run_cached("exp", {"n": 1}, run, build, reference_dir=reference, assets=ASSETS)
    assert run.calls == 0 and reused == made
    assert (build / "exp.json").read_text() == (reference / "exp.json").read_text()
    assert (build / "exp_audio.npz").read_bytes() == b"audio" and (build / "exp_models" / "m.pt").read_bytes() == b"weights"
    assert "committed reference run" in provenance.origin(reused, reference)
    assert "computed in this build" in provenance.origin(reused, None)

    run_cached("exp", {"n": 2}, run, build, reference_dir=reference, assets=ASSETS)
    assert run.calls == 1, "another config is computed"
    computed = run_cached("exp", {"n": 1}, run, build, reference_dir=reference, assets=ASSETS, fresh=True)
    assert run.calls == 2 and "computed in this build" in provenance.origin(computed, reference)

    (reference / "exp_audio.npz").unlink()  # a reference without its assets is not reused
    (build / "exp.json").unlink()
    run_cached("exp", {"n": 1}, run, build, reference_dir=reference, assets=ASSETS)
    assert run.calls == 3


def test_a_run_that_does_not_write_its_declared_assets_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="exp_audio.npz"):
        run_cached("exp", {"n": 1}, Counter(), tmp_path, assets=ASSETS, fresh=True)
    assert not (tmp_path / "exp.json").exists()


def test_a_reference_of_another_code_version_is_reused_only_when_declared_equivalent(tmp_path, monkeypatch):
    """The ledger lets a reference stand for new code; without an entry for exactly this pair of
    versions the chapter is recomputed, and the reused result keeps its own provenance."""
    monkeypatch.delenv("FRESH", raising=False)
    reference, build = tmp_path / "results", tmp_path / "build"
    reference.mkdir()
    made = run_cached("exp", {"n": 1}, Counter(), reference)
    old = dict(made, provenance=dict(made["provenance"], code_version="0ld"))
    provenance.write_json_atomic(reference / "exp.json", old)
    current = provenance.code_version()

    counter = Counter()
    run_cached("exp", {"n": 1}, counter, build, reference_dir=reference)
    assert counter.calls == 1, "no ledger: another code version is recomputed"

    ledger = reference / provenance.EQUIVALENCE_LEDGER
    entry = {"chapter": "exp", "reference_version": "0ld", "code_version": "other", "evidence": "ci identical."}
    provenance.write_json_atomic(ledger, {"entries": [entry]})
    (build / "exp.json").unlink()
    run_cached("exp", {"n": 1}, counter, build, reference_dir=reference)
    assert counter.calls == 2, "an entry for another code version does not count"

    provenance.write_json_atomic(ledger, {"entries": [entry, dict(entry, code_version=current)]})
    (build / "exp.json").unlink()
    reused = run_cached("exp", {"n": 1}, counter, build, reference_dir=reference)
    assert counter.calls == 2 and reused["provenance"]["code_version"] == "0ld"
    assert reused["equivalence"]["code_version"] == current
    text = provenance.origin(reused, reference)
    assert "declared equivalent" in text and "ci identical." in text and "measured with the reference's code" in text
    assert run_cached("exp", {"n": 2}, counter, build, reference_dir=reference) and counter.calls == 3, "another config"


def test_declare_equivalent_needs_bitwise_identical_ci_numbers(tmp_path):
    """The script's evidence check: identical seeded numbers pass (timings may differ), one changed
    number, a stale or copied ci run, or a ci reference of another version are refused."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "declare_equivalent.py"
    spec = importlib.util.spec_from_file_location("declare_equivalent", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full, ci, run = tmp_path / "full", tmp_path / "ci", tmp_path / "run"

    def write(folder, version, run_id, acc=0.5, wall_s=1.0):
        provenance.write_json_atomic(
            folder / "ch.json",
            {"config": {"n": 1}, "metrics": {"acc": acc, "wall_s": wall_s}, "provenance": {"code_version": version, "run_id": run_id}},
        )

    write(full, "X", "f")
    write(ci, "X", "c")
    write(run, "Y", "r", wall_s=9.0)
    reference_version, sentence = module.evidence_for("ch", run, full, ci, "Y")
    assert reference_version == "X" and "bitwise" in sentence and "committed ci reference" in sentence
    assert "made beside it on the same machine" in module.evidence_for("ch", run, full, ci, "Y", committed=False)[1]
    write(run, "Y", "r", acc=0.5000001)
    with pytest.raises(ValueError, match="1 seeded numbers differ"):
        module.evidence_for("ch", run, full, ci, "Y")
    write(run, "Z", "r")
    with pytest.raises(ValueError, match="not the current"):
        module.evidence_for("ch", run, full, ci, "Y")
    write(run, "Y", "c")
    with pytest.raises(ValueError, match="copy of the ci reference"):
        module.evidence_for("ch", run, full, ci, "Y")
    write(run, "Y", "r")
    write(ci, "W", "c")
    with pytest.raises(ValueError, match="cannot vouch"):
        module.evidence_for("ch", run, full, ci, "Y")
