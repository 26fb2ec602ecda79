"""Tiny end-to-end runs of the vision and NLP experiments (seconds): schema, selection, determinism."""

import json

import pytest

from qattn.book.experiments import nlp, vision
from qattn.book.models.blocks import VARIANTS
from qattn.book.provenance import run_cached

TINY_VISION = dict(
    train_size=300,
    val_size=100,
    test_size=100,
    epochs=1,
    checkpoints=2,
    batch_size=64,
    width=32,
    probe_size=16,
    n_examples=2,
    timing_batch=16,
    timing_rounds=1,
)
TINY_NLP = dict(
    train_size=300,
    eval_size=300,
    epochs=1,
    checkpoints=2,
    width=32,
    probe_size=16,
    timing_batch=16,
    timing_rounds=1,
    secondary_variants=("shared",),
    max_vocab=500,
)


def _check_common(task: dict, variants, wide_factor: float) -> None:
    assert list(task["variants"]) == list(variants)
    for v in variants:
        acc = task["variants"][v]["test_accuracy"]
        assert 0.0 <= acc["mean"] <= 1.0 and acc["n"] == 1
    runs = {r["variant"]: r for r in task["runs"]}
    for r in runs.values():
        steps = [h["step"] for h in r["history"]]
        assert steps[0] == 0 and steps[-1] == r["steps"]
        assert r["best_step"] in steps
        assert r["best_val_accuracy"] == max(h["val_accuracy"] for h in r["history"])
    # shared and hamilton: identical parameter counts; the real model at the same width is larger
    # (by less in the text model, whose token table is real-sized in every variant)
    assert runs["shared"]["parameters"] == runs["hamilton"]["parameters"]
    assert runs["real_same_width"]["parameters"] > wide_factor * runs["shared"]["parameters"]
    # the shared score's four maps are one map: divergence exactly 0 at every checkpoint
    assert all(d == 0.0 for h in runs["shared"]["history"] for d in h["divergence"])
    assert all(d > 0.0 for d in task["divergence"]["hamilton"]["final_per_seed"][0])
    assert "divergence" not in runs["real_same_width"]["history"][0]
    assert task["inference"]["time_ratio_vs_shared"]["shared"] == 1.0


def _check_headline(metrics: dict) -> None:
    assert metrics["headline"]
    for h in metrics["headline"]:
        assert set(h) == {"name", "value", "paper", "tolerance", "kind", "note"}
        assert h["kind"] in ("exact", "relative", "ratio")
        assert isinstance(h["value"], float) and h["tolerance"] >= 0
    names = [h["name"] for h in metrics["headline"]]
    assert len(names) == len(set(names))


def test_vision_tiny_end_to_end(tmp_path):
    config = vision.config_for("ci", seed=1, **TINY_VISION)
    result = run_cached("vision", config.to_dict(), vision.run, out_dir=tmp_path, fresh=True)
    m = result["metrics"]
    json.dumps(m, allow_nan=False)
    _check_common(m, VARIANTS, wide_factor=2.0)
    _check_headline(m)
    assert m["data"] == {**m["data"], "train": 300, "val": 100, "test": 100}
    ex = m["examples"]
    assert len(ex["images"]) == 2 and len(ex["maps"]["hamilton"][-1][0]) == 4  # four component grids
    assert len(ex["maps"]["shared"][-1][0]) == 4 and len(ex["maps"]["shared"][-1][0][0]) == 4  # 4×4 patch grid
    assert (tmp_path / "vision.json").exists()


def test_nlp_tiny_end_to_end():
    m = nlp.run(nlp.config_for("ci", **TINY_NLP))
    json.dumps(m, allow_nan=False)
    _check_common(m["polarity"], VARIANTS, wide_factor=1.2)
    _check_headline(m)
    assert list(m["sentiment3"]["variants"]) == ["shared"]
    assert m["polarity"]["data"]["classes"] == ["negative", "positive"]
    ex = m["polarity"]["examples"]
    for tokens, shared, ham in zip(ex["tokens"], ex["maps"]["shared"][-1], ex["maps"]["hamilton"][-1]):
        assert tokens[0] == "<cls>" and len(shared) == len(tokens) and len(ham) == 4
        assert sum(shared) == pytest.approx(1.0, abs=1e-3)


def test_same_seed_same_result():
    cfg = vision.config_for("ci", **{**TINY_VISION, "variants": ("shared",), "train_size": 200})
    a, b = vision.run(cfg), vision.run(cfg.to_dict())  # a dataclass or its dict
    assert a["runs"][0]["history"] == b["runs"][0]["history"]
    assert a["runs"][0]["test_accuracy"] == b["runs"][0]["test_accuracy"]


def test_config_profiles_and_errors():
    full, ci = vision.config_for("full"), vision.config_for("ci")
    assert full.n_seeds >= 3 and ci.n_seeds == 1 and full.variants == VARIANTS
    assert nlp.config_for("full").n_seeds >= 3
    with pytest.raises(ValueError, match="profile"):
        vision.config_for("huge")
    with pytest.raises(ValueError, match="unknown"):
        nlp.run({"profile": "ci", "bogus": 1})
