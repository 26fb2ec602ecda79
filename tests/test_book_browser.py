"""Browser check of the built book: every page in headless Debian Chromium, served on loopback.

Runs in ``make test`` after ``scripts/build_book.py --profile ci`` (marker ``book``). For each
HTML page it asserts: no console errors, every image loaded (``naturalWidth > 0``), math typeset
by the local MathJax (``mjx-container`` elements on pages with math), and no request to anything
but the loopback server (``127.0.0.1``/``localhost``), inline ``data:``/``about:``/``blob:`` URLs, or
the browser's built-in ``chrome://`` resources.
The browser is Debian's ``chromium`` driven through Debian's ``chromedriver`` (selenium never
downloads a browser or a driver here).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
INLINE_SCHEMES = {"data", "about", "blob"}
BROWSER_SCHEMES = {"chrome", "chrome-untrusted", "devtools"}  # the browser's own built-in pages
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1280,1000",
]

pytestmark = [
    pytest.mark.book,
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="the book is not built (scripts/build_book.py)"),
]


def book_pages() -> list[str]:
    """Every HTML page of the built book, relative to its root (assets and sources excluded)."""
    if not HTML.exists():
        return []
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html") if not p.relative_to(HTML).parts[0].startswith("_"))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the book folder without logging every request to stderr."""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for exe in (CHROMIUM, CHROMEDRIVER):
        assert exe.exists(), f"{exe} is missing: make setup installs the Debian packages chromium and chromium-driver"
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager: never look for downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path_factory.getbasetemp() / "chromium-profile0", ignore_errors=True)


def requested_urls(performance_log: list[dict]) -> list[str]:
    """URLs of every request Chromium started, from its DevTools performance log."""
    urls = []
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def leaves_the_machine(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in INLINE_SCHEMES | BROWSER_SCHEMES:
        return False
    return not (parts.scheme in {"http", "https", "ws"} and parts.hostname in LOCAL_HOSTS)


def test_leaves_the_machine():
    assert not leaves_the_machine("http://127.0.0.1:8000/_static/mathjax/tex-chtml.js")
    assert not leaves_the_machine("data:image/png;base64,AAAA")
    assert leaves_the_machine("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js")
    assert leaves_the_machine("http://example.org/")


WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
const hasMath = document.querySelector('.math, div.math, span.math') !== null;
if (!hasMath) { done({hasMath: false, typeset: 0}); return; }
const count = () => document.querySelectorAll('mjx-container').length;
const finish = () => done({hasMath: true, typeset: count()});
const wait = (tries) => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(finish, finish);
  } else if (tries > 0) { setTimeout(() => wait(tries - 1), 100); } else { finish(); }
};
wait(200);
"""

BROKEN_IMAGES = """
return Array.from(document.images)
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => img.currentSrc || img.src);
"""


@pytest.mark.parametrize("page", book_pages())
def test_page_loads_offline_with_math_and_images(browser, server, page):
    browser.get_log("browser"), browser.get_log("performance")  # drop what earlier pages left
    browser.get(server + page)
    math = browser.execute_async_script(WAIT_FOR_MATH)
    broken = browser.execute_script(BROKEN_IMAGES)
    console = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    outside = [u for u in requested_urls(browser.get_log("performance")) if leaves_the_machine(u)]

    assert browser.title, f"{page} has no title"
    assert not console, f"console errors on {page}: {console}"
    assert not broken, f"images that did not load on {page}: {broken}"
    assert not outside, f"requests leaving the machine from {page}: {outside}"
    if math["hasMath"]:
        assert math["typeset"] > 0, f"{page} has math but MathJax typeset none of it"


def test_the_book_has_pages_with_math():
    """The math check above must actually bite: the introduction carries display math."""
    assert "intro.html" in book_pages()
    assert 'class="math' in (HTML / "intro.html").read_text()


# -- the reader's test: what a reader sees is rendered ---------------------------------------------

READER_DEFECTS = """
const skip = (node) => node.parentElement && node.parentElement.closest(
  'pre, code, script, style, textarea, mjx-container, .highlight, .cell_input, details.hide');
const rawTable = /\\|\\s*:?-{3,}:?\\s*\\||(^|\\n)\\s*\\|[^|\\n]+\\|[^|\\n]+\\|/;
const rawMath = /(^|[^\\\\$])\\$[^$\\s][^$\\n]*\\$|\\$\\$[^$]+\\$\\$/;
const found = {rawTables: [], rawMath: []};
const blocks = new Set();
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  if (skip(node)) continue;
  const block = node.parentElement.closest('p, li, td, th, div, span') || node.parentElement;
  blocks.add(block);
}
for (const block of blocks) {
  const text = Array.from(block.childNodes).filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.textContent).join('')
    || (block.children.length === 0 ? block.textContent : '');
  if (rawTable.test(text)) found.rawTables.push(text.trim().slice(0, 120));
  if (rawMath.test(text)) found.rawMath.push(text.trim().slice(0, 120));
}
found.tables = document.querySelectorAll('main table, article table, table').length;
return found;
"""

AUDIO_STATE = """
const done = arguments[arguments.length - 1];
const players = Array.from(document.querySelectorAll('audio'));
const state = (a) => ({src: (a.currentSrc || a.src || '').slice(0, 40), ready: a.readyState, duration: a.duration,
                       error: a.error ? a.error.code : null});
Promise.all(players.map(a => new Promise(resolve => {
  if (a.readyState >= 1 || a.error) { resolve(); return; }
  a.addEventListener('loadedmetadata', resolve, {once: true});
  a.addEventListener('error', resolve, {once: true});
  a.preload = 'metadata'; a.load();
  setTimeout(resolve, 10000);
}))).then(() => done(players.map(state)));
"""


def reader_defects(browser) -> dict:
    """Raw markdown tables and unrendered ``$...$`` in the visible text of the loaded page (after MathJax)."""
    browser.execute_async_script(WAIT_FOR_MATH)
    return browser.execute_script(READER_DEFECTS)


def test_the_reader_check_catches_a_raw_table_and_raw_math(browser, tmp_path):
    """Negative control: a page with a planted raw table and raw TeX fails the reader's check;
    the same content as HTML passes."""
    bad = tmp_path / "planted.html"
    bad.write_text(
        "<html><head><title>planted</title></head><body><main>"
        "<p>| model | PESQ |<br>|---|---|<br>| shared | 1.46 |</p><p>The gain is $\\Delta = 0.1$ here.</p>"
        "</main></body></html>"
    )
    browser.get(bad.as_uri())
    found = reader_defects(browser)
    assert found["rawTables"] and found["rawMath"], found
    good = tmp_path / "good.html"
    good.write_text(
        "<html><head><title>good</title></head><body><main><table><tr><th>model</th><th>PESQ</th></tr>"
        "<tr><td>shared</td><td>1.46</td></tr></table><p>The price is 5 $ or | not a table.</p></main></body></html>"
    )
    browser.get(good.as_uri())
    found = reader_defects(browser)
    assert not found["rawTables"] and not found["rawMath"] and found["tables"] == 1, found


@pytest.mark.parametrize("page", [p for p in book_pages() if p.startswith(("generated/", "intro"))])
def test_a_reader_sees_rendered_tables_math_and_audio(browser, server, page):
    """What a reader sees: no raw ``| ... |`` tables or raw ``$...$`` in the text, and every audio
    player loads a clip with a duration."""
    browser.get(server + page)
    found = reader_defects(browser)
    assert not found["rawTables"], f"raw markdown tables on {page}: {found['rawTables'][:3]}"
    assert not found["rawMath"], f"unrendered math on {page}: {found['rawMath'][:3]}"
    players = browser.execute_async_script(AUDIO_STATE)
    bad = [p for p in players if p["error"] is not None or not (p["duration"] and p["duration"] > 0)]
    assert not bad, f"audio players on {page} that do not load: {bad}"


def test_chapters_that_print_tables_show_html_tables(browser, server):
    """The tables the report and the chapters print arrive as <table> elements."""
    for page in ("generated/reproduction_report.html", "generated/speech_enhancement.html", "generated/vqa.html"):
        browser.get(server + page)
        assert browser.execute_script(READER_DEFECTS)["tables"] > 0, f"{page} shows no HTML table"
    browser.get(server + "generated/speech_enhancement.html")
    players = browser.execute_async_script(AUDIO_STATE)
    assert players, "the speech chapter shows no audio player"
