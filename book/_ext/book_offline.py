"""Sphinx extension of this book: keep the pages free of assets for services that are off.

Jupyter Book 1 always loads sphinx-thebe, which adds to every page a script naming thebe's CDN URL
(twice, in this version: a duplicate ``const`` declaration is a console error) and a launcher
script. Thebe (live code on a remote kernel) is off for this offline book, so both are dropped.
"""

from __future__ import annotations

from typing import Any


def _is_thebe(script: Any) -> bool:
    filename = str(getattr(script, "filename", script) or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return filename.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in body


def drop_thebe(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """``html-page-context`` handler: remove thebe's scripts from the page's script list."""
    scripts = context.get("script_files")
    if scripts is not None:
        context["script_files"] = [s for s in scripts if not _is_thebe(s)]


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", drop_thebe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
