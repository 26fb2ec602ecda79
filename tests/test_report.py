"""qattn.book.report: headline entries, tolerances, and the run-vs-reference comparison."""

import json
from pathlib import Path

import pytest

from qattn.book.headline import headline
from qattn.book.report import (
    collect_headlines,
    counts,
    ledger_markdown,
    load_results,
    paper_agreement,
    paper_markdown,
    repeatability,
    repeatability_markdown,
    within,
)


def write(directory: Path, name: str, headlines: list[dict], **extra) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "config": {}, "metrics": {"headline": headlines, **extra}, "provenance": {}}
    (directory / f"{name}.json").write_text(json.dumps(data))


def test_headline_validates_kind_and_tolerance():
    assert headline("x", 1.0, 0.1, "relative", paper=2.0) == {"name": "x", "value": 1.0, "tolerance": 0.1, "kind": "relative", "paper": 2.0}
    assert "paper" not in headline("x", 1, 0)
    with pytest.raises(ValueError, match="kind"):
        headline("x", 1, 0, kind="approximate")
    with pytest.raises(ValueError, match="tolerance"):
        headline("x", 1, -1)


@pytest.mark.parametrize(
    "value, target, tol, kind, expected",
    [
        (64, 64, 0, "exact", True),
        (63, 64, 0, "exact", False),
        (3.1, 3.0, 0.05, "relative", True),
        (3.2, 3.0, 0.05, "relative", False),
        (0.45, 0.42, 0.1, "ratio", True),
        (0.6, 0.42, 0.1, "ratio", False),
        (float("nan"), 1.0, 1.0, "relative", False),
    ],
)
def test_within(value, target, tol, kind, expected):
    assert within(value, target, tol, kind) is expected


def test_no_results_is_not_an_error(tmp_path):
    assert load_results(tmp_path / "missing") == {}
    assert repeatability(load_results(tmp_path / "missing"), load_results(tmp_path / "also-missing")) == []
    assert paper_agreement(load_results(tmp_path / "missing")) == []


def test_load_results_skips_non_results_and_rejects_bad_json(tmp_path):
    (tmp_path / "notes.json").write_text('{"no": "metrics"}')
    write(tmp_path, "exp", [])
    assert list(load_results(tmp_path)) == ["exp"]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        load_results(tmp_path)


def test_collect_rejects_incomplete_and_duplicate_entries():
    with pytest.raises(ValueError, match="lacks"):
        collect_headlines({"e": {"metrics": {"headline": [{"name": "a", "value": 1}]}}})
    twice = [headline("a", 1, 0), headline("a", 2, 0)]
    with pytest.raises(ValueError, match="twice"):
        collect_headlines({"e": {"metrics": {"headline": twice}}})


def test_repeatability_against_the_reference(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    write(run, "b_speech", [headline("PESQ", 3.0, 0.05, "relative", paper=3.18), headline("RTF ratio", 0.5, 0.2, "ratio")])
    write(run, "a_counts", [headline("terms", 64, 0, "exact", paper=64), headline("new", 1, 0)])
    write(ref, "a_counts", [headline("terms", 64, 0, "exact", paper=64), headline("gone", 5, 0)])
    write(ref, "b_speech", [headline("PESQ", 2.5, 0.05, "relative", paper=3.18), headline("RTF ratio", 0.45, 0.2, "ratio")])

    rows = repeatability(load_results(run), load_results(ref))
    status = {(r.experiment, r.name): r.status for r in rows}
    assert status == {
        ("a_counts", "terms"): "reproduced",
        ("a_counts", "new"): "new",
        ("a_counts", "gone"): "no longer produced",
        ("b_speech", "PESQ"): "differs",
        ("b_speech", "RTF ratio"): "reproduced",
    }
    md = repeatability_markdown(rows)
    assert md.count("\n") == len(rows) + 1
    assert "| b_speech | PESQ | 3 | 2.5 | within ±5 % of the reference | **differs** |" in md
    assert counts([r.status for r in rows], ("reproduced", "differs", "new")) == "2 reproduced, 1 differs, 1 new"


def test_a_reused_result_is_reported_as_reused_not_as_reproduced(tmp_path):
    """The same run in the build and in the reference tests nothing: the report must say so."""
    write(tmp_path, "a", [headline("x", 1.0, 0)])
    results = load_results(tmp_path)
    results["a"]["provenance"] = {"run_id": "abc"}
    same = {"a": dict(results["a"])}
    assert repeatability(results, same)[0].status == "reused"
    other = {"a": {**results["a"], "provenance": {"run_id": "def"}}}
    assert repeatability(results, other)[0].status == "reproduced"


def test_paper_agreement_lists_only_numbers_the_paper_states(tmp_path):
    write(tmp_path, "speech_enhancement", [headline("RTF cut %", 94.3, 0.5, "ratio", paper=58.1), headline("PESQ", 1.4, 0.1, "relative")])
    write(tmp_path, "theory_counts", [headline("terms", 64, 0, "exact", paper=64), headline("maps", 2, 0, "exact", paper=1)])
    rows = {(r.experiment, r.name): r for r in paper_agreement(load_results(tmp_path))}
    assert set(rows) == {("speech_enhancement", "RTF cut %"), ("theory_counts", "terms"), ("theory_counts", "maps")}
    assert rows["theory_counts", "terms"].agrees and not rows["theory_counts", "maps"].agrees
    assert not rows["speech_enhancement", "RTF cut %"].agrees  # 94.3 is not within ±50 % of 58.1
    assert rows["speech_enhancement", "RTF cut %"].setting.startswith("proxy")
    assert "within ±50 % of the paper" in paper_markdown(rows.values())


def test_the_claims_ledger_covers_every_seed_work_and_can_fail():
    from qattn.book.claims import CLAIMS, STATUSES, Check, Claim, assess, ledger

    works = {c.work for c in CLAIMS}
    assert len(works) == 6, works
    empty = ledger({})
    assert {r["status"] for r in empty} <= {"not testable here", "not yet tested", "no result in this build"}
    assert all(r["status"] in STATUSES for r in empty)
    claim = Claim("W", "x beats y", "c", (Check("c", "x", ">", 0.0, minus="y"), Check("c", "x", ">=", 0.5)))
    assert assess(claim, {("c", "x"): {"value": 0.6}, ("c", "y"): {"value": 0.1}})[0] == "reproduced"
    assert assess(claim, {("c", "x"): {"value": 0.4}, ("c", "y"): {"value": 0.1}})[0] == "partly reproduced"
    assert assess(claim, {("c", "x"): {"value": 0.0}, ("c", "y"): {"value": 0.1}})[0] == "not reproduced"
    assert assess(Claim("W", "untouched", None), {})[0] == "not yet tested"
    rows = [dict(empty[0], status="not yet tested")]
    assert "**not yet tested**" in ledger_markdown(rows)


def test_reference_dir_and_provenance_table(tmp_path):
    from qattn.book.report import provenance_markdown, reference_dir_for

    root = Path(__file__).resolve().parents[1]  # the tests run inside the checkout
    assert reference_dir_for("full") == root / "results" and reference_dir_for("ci") == root / "results" / "ci"
    write(tmp_path, "exp", [])
    results = load_results(tmp_path)
    results["exp"]["provenance"] = {
        "code_version": "abc",
        "git_commit": "0123456789abcdef",
        "git_dirty": False,
        "cpu": "cpu",
        "threads": 2,
        "wall_time_s": 1.5,
        "date": "d",
    }
    table = provenance_markdown(results)
    assert table.splitlines()[-1] == "| exp | abc | 0123456789 | no | d | cpu | 2 | 1.5 |"
