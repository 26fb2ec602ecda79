"""Re-run one chapter's experiment from the command line, as the book does.

``python -m qattn.book.experiments <chapter> [--profile ci|full] [--seed N] [--results-dir DIR] [--fresh]``

The experiment runs through :func:`qattn.book.provenance.run_cached` with the same configuration,
code version and results folder as the chapter's notebook in ``make book``: a book built
afterwards reuses the result instead of running it again, and a result that is already there
(same configuration and code; at the full profile also the committed reference in ``results/``)
is reused here too unless ``--fresh``.
Progress lines go to stdout; the results file is written atomically at the end, so a failed run
never overwrites a good one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qattn.book import paths
from qattn.book.provenance import run_cached

__all__ = ["CHAPTERS", "run_chapter", "main"]

#: chapter name (= notebook, module and results name) → does its ``run`` take ``save_dir`` (models, assets)
CHAPTERS: dict[str, bool] = {
    "vision": False,
    "nlp": False,
    "vqa": False,
    "speech_enhancement": True,
    "performance": False,
    "clustered_attention": False,
    "cogview_sparse_attention": True,
    "multilinear_attention": False,
    "concentrate_attention": False,
}


def run_chapter(
    chapter: str, profile: str = "ci", seed: int = 0, results_dir: str | Path | None = None, fresh: bool = False
) -> dict[str, Any]:
    """Run (or reuse) the experiment of ``chapter`` at ``profile``; returns the stored result dict.

    Raises ``ValueError`` for an unknown chapter or profile (the message lists the allowed ones).
    """
    if chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; chapters with an experiment: {sorted(CHAPTERS)}")
    out = Path(results_dir).resolve() if results_dir is not None else paths.results_dir(profile)
    module = importlib.import_module(f"qattn.book.experiments.{chapter}")
    config = module.config_for(profile, seed=seed)
    if CHAPTERS[chapter]:

        def run(c: Any) -> Any:
            return module.run(c, save_dir=out)
    else:
        run = module.run
    out.mkdir(parents=True, exist_ok=True)
    return run_cached(
        chapter,
        config.to_dict(),
        run,
        out_dir=out,
        extra_files=[paths.notebook_path(chapter)],
        fresh=fresh,
        reference_dir=paths.reference_dir(profile) if profile == "full" else None,  # as the book build does
        assets=getattr(module, "ASSETS", ()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qattn.book.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", choices=sorted(CHAPTERS), help="the chapter whose experiment to run")
    parser.add_argument(
        "--profile", choices=paths.PROFILES, default="ci", help="ci (minutes) or full (the book's reference scale); default ci"
    )
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0, as in the book)")
    parser.add_argument("--results-dir", type=Path, help="results folder (default: the book's, qattn.book.paths.results_dir(profile))")
    parser.add_argument("--fresh", action="store_true", help="run even if a result with the same configuration and code exists")
    args = parser.parse_args(argv)
    result = run_chapter(args.chapter, args.profile, args.seed, args.results_dir, args.fresh)
    for entry in result["metrics"].get("headline", []):
        print(f"  {entry['name']}: {entry['value']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
