"""The tracker on a real site in Chromium: a visit from a search engine, three pages with set
waits, then a form that identifies the visitor, whose earlier pages join their timeline."""

from __future__ import annotations

import http.server
import threading
import time
from urllib.parse import quote

import pytest

from kizuna.events.snippet import tracker_snippet

from .conftest import login
from .test_ingestion import _pending, _wait, _write_key

pytestmark = pytest.mark.browser

WAITS = {"/index.html": 3.0, "/features.html": 2.0, "/pricing.html": 4.0}
KEYWORD = "マーケティング 自動化"
DESKTOP_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36")


def _site_pages(snippet: str) -> dict[str, bytes]:
    def page(title: str, body: str) -> bytes:
        return (f"<!doctype html><html lang='ja'><head><meta charset='utf-8'><title>{title}</title>{snippet}"
                f"</head><body><h1>{title}</h1>{body}</body></html>").encode()

    return {
        "/index.html": page("Home", "<a id='next' href='/features.html'>Features</a>"),
        "/features.html": page("Features", "<a id='next' href='/pricing.html'>Pricing</a>"),
        "/pricing.html": page("Pricing", """
            <form id='contact' method='post' action='/submit'>
              <input name='last_name' value=''><input name='first_name' value=''>
              <input type='email' name='email'><input type='password' name='password'>
              <button type='submit'>Send</button>
            </form>"""),
    }


class _Site(http.server.ThreadingHTTPServer):
    pages: dict[str, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = self.server.pages.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(body or b"not found")

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)  # the form is handled in place, the visitor stays on the page
        self.end_headers()

    def log_message(self, *args):
        pass


def test_search_visit_three_pages_then_form_identifies(kizuna_server, browser):
    key = _write_key(kizuna_server, "Corporate site")
    site = _Site(("127.0.0.1", 0), _Handler)
    site.pages = _site_pages(tracker_snippet(kizuna_server, key))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{site.server_address[1]}"
    referrer = "https://search.yahoo.co.jp/search?p=" + quote(KEYWORD.replace(" ", "+"), safe="+")

    # Headless Chromium calls itself HeadlessChrome, which is rightly flagged as automation;
    # this visit plays a person on desktop Chrome.
    context = browser.new_context(locale="ja-JP", user_agent=DESKTOP_CHROME)
    page = context.new_page()
    # Time on each page as the browser spent it: the set wait plus what the script did there
    # (clicking, filling the form), which a visitor's dwell time rightly includes.
    on_page: dict[str, float] = {}
    page.goto(base + "/index.html", referer=referrer)
    page.wait_for_function("window.kizuna && !Array.isArray(window.kizuna.q)")
    arrived = time.monotonic()
    page.wait_for_timeout(WAITS["/index.html"] * 1000)
    page.click("#next")
    page.wait_for_url("**/features.html")
    on_page["/index.html"], arrived = time.monotonic() - arrived, time.monotonic()
    page.wait_for_timeout(WAITS["/features.html"] * 1000)
    page.click("#next")
    page.wait_for_url("**/pricing.html")
    on_page["/features.html"], arrived = time.monotonic() - arrived, time.monotonic()
    page.wait_for_timeout(WAITS["/pricing.html"] * 1000)
    anonymous_id = page.evaluate("document.cookie.match(/_kz_aid=([^;]+)/)[1]")
    page.fill("input[name=last_name]", "鈴木")
    page.fill("input[name=first_name]", "一郎")
    page.fill("input[name=email]", "ichiro.suzuki@example.co.jp")
    page.fill("input[name=password]", "never-sent")
    page.click("button[type=submit]")
    page.wait_for_timeout(300)
    on_page["/pricing.html"] = time.monotonic() - arrived
    page.close(run_before_unload=True)  # pagehide: the last page's visible time is sent
    context.close()

    def settled():
        rows = kizuna_server.query(
            "SELECT path, dwell_ms, measured, seq, is_exit FROM events_pageview WHERE anonymous_id = ? ORDER BY seq",
            (anonymous_id,))
        return rows if len(rows) == 3 and all(r[2] for r in rows) and _pending(kizuna_server) == 0 else None

    pages = _wait(settled, timeout=60)
    assert [p[0] for p in pages] == list(WAITS)
    for path, dwell_ms, _measured, _seq, _exit in pages:
        assert on_page[path] >= WAITS[path]
        assert abs(dwell_ms / 1000 - on_page[path]) <= 0.2 * on_page[path], (path, dwell_ms, on_page[path])
    assert [p[4] for p in pages] == [False, False, True]

    [(entry, exit_, kind, engine, keyword, views, contact_id, bot, browser_name, device)] = kizuna_server.query(
        "SELECT entry_path, exit_path, source_kind, source_engine, keyword, page_views, contact_id, bot, browser, "
        "device FROM events_session WHERE anonymous_id = ?", (anonymous_id,))
    assert (entry, exit_, kind, engine, keyword, views) == (
        "/index.html", "/pricing.html", "search", "Yahoo! JAPAN", KEYWORD, 3)
    assert (bot, browser_name, device) == ("", "Chrome", "desktop")

    [(contact, family, given)] = kizuna_server.query(
        "SELECT id, family_name, given_name FROM contacts_contact WHERE email = ?", ("ichiro.suzuki@example.co.jp",))
    assert (family, given) == ("鈴木", "一郎")
    assert contact_id == contact
    leaked = kizuna_server.query(
        "SELECT COUNT(*) FROM events_event WHERE CAST(properties AS TEXT) LIKE ? OR CAST(traits AS TEXT) LIKE ?",
        ("%never-sent%", "%never-sent%"))[0][0]
    assert leaked == 0


    ui = browser.new_context(base_url=kizuna_server, locale="en-US")
    staff = ui.new_page()
    login(staff)
    staff.goto(f"/contacts/{contact}/")
    activity = staff.locator("[data-activity]")
    for path in WAITS:
        assert activity.get_by_text(path).first.is_visible()
    assert activity.locator("[data-keyword]").first.inner_text() == KEYWORD
    ui.close()
