"""Checks of the built book (marker ``book``; ``make test`` runs them after the ci build)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from qattn.book import paths
from qattn.book.claims import CLAIMS
from qattn.book.report import load_results, paper_agreement, reference_dir_for, repeatability

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"
CI_RESULTS = paths.results_dir("ci")

pytestmark = [
    pytest.mark.book,
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="the book is not built (scripts/build_book.py)"),
]


def pages() -> list[Path]:
    return [p for p in HTML.rglob("*.html") if not p.relative_to(HTML).parts[0].startswith("_")]


def test_every_toc_entry_has_its_page():
    from test_notebooks import load_build_book

    for entry in load_build_book().toc_files():
        assert (HTML / f"{entry}.html").exists(), f"{entry} has no page in the built book"


def test_math_is_served_locally_and_nothing_is_loaded_from_outside():
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "_static/mathjax/tex-chtml.js" in (HTML / "intro.html").read_text()
    loaded = re.compile(r"<(?:script|img|link|iframe)\b[^>]*\b(?:src|href)=\"((?:https?:)?//[^\"]+)\"[^>]*>")
    for page in pages():
        for tag in loaded.finditer(page.read_text()):
            if tag.group(0).startswith("<link") and not re.search(r'rel="(?:stylesheet|preload|icon|modulepreload)', tag.group(0)):
                continue  # plain links (rel="canonical", citations) are not loaded by the browser
            pytest.fail(f"{page.relative_to(HTML)} loads {tag.group(1)}")


def test_the_report_answers_its_three_questions():
    """Every headline number of the run, every number a paper states and every claim is on the page."""
    report = html.unescape(re.sub(r"<[^>]+>", "", (HTML / "generated" / "reproduction_report.html").read_text()))
    report = report.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')  # Sphinx's smart quotes
    run, reference = load_results(CI_RESULTS), load_results(reference_dir_for("ci"))
    rows = repeatability(run, reference)
    assert rows, "the ci build declares headline numbers"
    for row in rows:
        assert row.name in report, f"{row.experiment}: {row.name} is missing from the report"
    for row in paper_agreement(run):
        assert f"{row.name}" in report
    for claim in CLAIMS:
        assert claim.claim in report, f"claim missing from the ledger: {claim.claim}"
    for question in ("Repeatability", "Agreement with the paper", "Claims ledger"):
        assert question in report


def test_seeded_ci_numbers_match_the_committed_ci_reference():
    """A notebook whose seeded numbers changed fails here; timing ratios and numbers fitted to timings
    (e.g. a time exponent) are machine- and load-dependent and skipped."""
    rows = repeatability(load_results(CI_RESULTS), load_results(reference_dir_for("ci")))
    timing = re.compile(r"\btime\b|speed|memory|\brtf\b|throughput", re.IGNORECASE)
    failing = [r for r in rows if r.kind != "ratio" and not timing.search(r.name) and r.status in ("differs", "no longer produced")]
    assert not failing, (
        "ci numbers differ from results/ci (refresh them with scripts/save_reference.py --profile ci if intended): "
        + "; ".join(f"{r.experiment}: {r.name} = {r.value} vs {r.reference}" for r in failing)
    )
