"""The chapter runner ``python -m qattn.book.experiments``: the book's cache, its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qattn.book.experiments import __main__ as runner
from qattn.book.experiments import performance
from qattn.book.paths import notebook_path
from qattn.book.provenance import code_version


def test_every_chapter_with_an_experiment_is_runnable() -> None:
    import importlib

    for chapter in runner.CHAPTERS:
        module = importlib.import_module(f"qattn.book.experiments.{chapter}")
        config = module.config_for("ci", seed=0)
        assert config.to_dict()["profile"] == "ci"
        assert callable(module.run)


def test_runs_once_then_reuses_the_result_like_the_book(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_run(config):
        calls.append(config)
        return {"headline": [{"name": "x", "value": 1.5, "tolerance": 0, "kind": "exact"}]}

    monkeypatch.setattr(performance, "run", fake_run)
    first = runner.run_chapter("performance", "ci", results_dir=tmp_path)
    stored = json.loads((tmp_path / "performance.json").read_text())
    assert stored["config"] == performance.config_for("ci").to_dict() == first["config"]
    # the code version the notebook's run_cached computes (qattn/ plus the notebook): the book reuses it
    assert stored["provenance"]["code_version"] == code_version([notebook_path("performance")]) != code_version([])
    runner.run_chapter("performance", "ci", results_dir=tmp_path)
    assert len(calls) == 1  # same config and code: reused
    runner.run_chapter("performance", "ci", results_dir=tmp_path, fresh=True)
    assert len(calls) == 2


def test_unknown_chapter_is_refused_with_the_list() -> None:
    with pytest.raises(ValueError, match=r"unknown chapter 'speech'.*speech_enhancement"):
        runner.run_chapter("speech")
    done = subprocess.run([sys.executable, "-m", "qattn.book.experiments", "speech"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "invalid choice: 'speech'" in done.stderr and "speech_enhancement" in done.stderr
