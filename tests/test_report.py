"""qattn.book.report: headline entries, tolerances, and the run-vs-reference comparison."""

import json
from pathlib import Path

import pytest

from qattn.book.headline import headline
from qattn.book.report import collect_headlines, compare, load_results, to_markdown, within


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
    assert compare(tmp_path / "missing", tmp_path / "also-missing") == []


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


def test_compare_against_reference_and_paper(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    write(run, "b_speech", [headline("PESQ", 3.0, 0.05, "relative", paper=3.18), headline("RTF ratio", 0.5, 0.2, "ratio")])
    write(run, "a_counts", [headline("terms", 64, 0, "exact", paper=64), headline("new", 1, 0)])
    write(ref, "a_counts", [headline("terms", 64, 0, "exact", paper=64), headline("gone", 5, 0)])
    write(ref, "b_speech", [headline("PESQ", 2.5, 0.05, "relative", paper=3.18), headline("RTF ratio", 0.45, 0.2, "ratio")])

    rows = compare(run, ref, same_profile=True)
    table = {(r.experiment, r.name): r for r in rows}
    assert [r.experiment for r in rows] == ["a_counts"] * 3 + ["b_speech"] * 2
    assert table["a_counts", "terms"].holds is True and table["a_counts", "terms"].target == "reference"
    assert table["a_counts", "new"].holds is None and table["a_counts", "new"].reference is None
    assert table["a_counts", "gone"].holds is False and table["a_counts", "gone"].value is None
    assert table["b_speech", "PESQ"].holds is False
    assert table["b_speech", "RTF ratio"].holds is True

    # A ci run is not judged against the full reference, only against the paper where given.
    other = {(r.experiment, r.name): r for r in compare(run, ref, same_profile=False)}
    assert other["b_speech", "PESQ"].target == "paper" and other["b_speech", "PESQ"].holds is False
    assert other["a_counts", "terms"].target == "paper" and other["a_counts", "terms"].holds is True
    assert other["b_speech", "RTF ratio"].holds is None
    assert other["a_counts", "gone"].holds is None

    md = to_markdown(rows)
    assert md.count("\n") == len(rows) + 1
    assert "| b_speech | PESQ | relative | 3 | 2.5 | 3.18 | ±5% | reference | **no** |" in md


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
