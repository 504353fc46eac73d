"""Issue #8's whole story in Chromium, through a landing page: an anonymous visitor opens a
published page at /p/<slug> offering a gated whitepaper, fills the form on it and sees the
confirmation; the worker sends the delivery mail, whose link downloads the PDF; the contact's
timeline shows the landing page view from before the form, the submission, the mail and the
download; and the landing page counts the visit as a conversion of the variant shown."""

from __future__ import annotations

import json
import os
import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from .conftest import ADMIN_PASSWORD, login
from .test_forms_browser import DESKTOP_CHROME, SETUP, _definition, _shot
from .test_ingestion import _wait
from .test_segments_browser import _shell

pytestmark = pytest.mark.browser

PAGE = """
from kizuna.landing import services
from kizuna.landing.models import LandingPage

page = LandingPage(name="DX whitepaper {run}", slug="dx-{run}", title="製造業DX ホワイトペーパー", language="ja")
services.save(page, [{{"key": "A", "weight": 100, "blocks": [
    {{"type": "heading", "text": "製造業DXの進め方", "level": 1}},
    {{"type": "greeting", "known": "{{name}}様、いつもありがとうございます。",
      "anonymous": "無料でダウンロードできます。"}},
    {{"type": "text", "text": "受注生産の現場で成果を上げた10社の事例をまとめました。"}},
    {{"type": "form", "form": {form}}}]}}])
services.set_published(page, True)
print(page.pk)
"""


def test_landing_page_with_a_gated_whitepaper_end_to_end(kizuna_server, browser):
    run = os.urandom(3).hex()
    definition = json.dumps(_definition(run), ensure_ascii=False).replace("\\", "\\\\")
    form_id = int(_shell(kizuna_server, SETUP.format(run=run, definition=definition)).splitlines()[-1])
    page_id = int(_shell(kizuna_server, PAGE.format(run=run, form=form_id)).splitlines()[-1])

    context = browser.new_context(locale="ja-JP", user_agent=DESKTOP_CHROME, viewport={"width": 390, "height": 844})
    visitor = context.new_page()
    visitor.set_default_timeout(20_000)
    visitor.goto(f"{kizuna_server}/p/dx-{run}")
    visitor.wait_for_function("window.kizuna && !Array.isArray(window.kizuna.q)")  # the tracker is running
    assert "無料でダウンロードできます。" in visitor.inner_text("[data-greeting]")
    _shot(visitor, "landing-gated-ja")
    visitor.fill("input[name=email]", f"hanako.sato-{run}@maruyama-seiki.co.jp")
    visitor.fill("input[name=sei]", "佐藤")
    visitor.fill("input[name=mei]", "花子")
    visitor.check("input[name=agree]")
    visitor.wait_for_timeout(1100)  # the form's minimum fill time
    visitor.click("button[type=submit]")
    visitor.wait_for_url(f"**/f/wp-{run}/thanks")
    assert "お申し込みありがとうございました" in visitor.inner_text("[data-kz-thanks]")
    context.close()

    seen: dict = {}

    def settled():
        rows = kizuna_server.query("SELECT status, contact_id, id FROM capture_submission WHERE form_id = ?",
                                   (form_id,))
        if not rows or rows[0][0] != "processed":
            return None
        contact_id = rows[0][1]
        seen["mail"] = kizuna_server.query(
            "SELECT c.raw FROM messaging_capturedmail c JOIN messaging_message m ON m.id = c.message_id "
            "WHERE m.idempotency_key = ?", (f"asset:form:{rows[0][2]}:0",))
        seen["events"] = {r[0] for r in kizuna_server.query(
            "SELECT CASE WHEN type = 'page' THEN path ELSE name END FROM events_event WHERE contact_id = ?",
            (contact_id,))}
        return contact_id if seen["mail"] and {"Form Submitted", f"/p/dx-{run}"} <= seen["events"] else None

    try:
        contact_id = _wait(settled, timeout=90)
    except AssertionError:
        raise AssertionError(f"not settled: {seen}") from None
    converted = _wait(lambda: kizuna_server.query(
        "SELECT variant FROM landing_landingvisit WHERE page_id = ? AND converted_at IS NOT NULL", (page_id,)),
        timeout=30)
    assert converted == [("A",)]

    mail = message_from_bytes(bytes(seen["mail"][0][0]), policy=policy.default)
    link = next(u.replace("&amp;", "&") for u in re.findall(r'href="([^"]+)"', mail.get_body(("html",)).get_content())
                if "/e/c/" in u)
    _shell(kizuna_server, "from datetime import timedelta\nfrom django.db.models import F\n"
                          "from kizuna.messaging.models import Message\n"
                          "Message.objects.filter(idempotency_key__startswith='asset:form:').update("
                          "sent_at=F('sent_at') - timedelta(minutes=1))")
    reader = browser.new_context(locale="ja-JP", user_agent=DESKTOP_CHROME)
    inbox = reader.new_page()
    with inbox.expect_download() as info:
        inbox.evaluate("url => { window.location.href = url; }", link)
    assert Path(info.value.path()).read_bytes().startswith(b"%PDF-1.7")
    reader.close()
    _wait(lambda: kizuna_server.query("SELECT count(*) FROM events_event WHERE name = 'Asset Downloaded' "
                                      "AND contact_id = ?", (contact_id,))[0][0], timeout=60)

    admin = browser.new_context(base_url=kizuna_server, locale="en-US", viewport={"width": 1360, "height": 900})
    page = admin.new_page()
    page.set_default_timeout(20_000)
    login(page, "admin", ADMIN_PASSWORD)
    page.goto(f"/contacts/{contact_id}/")
    activity = page.locator("[data-activity]").inner_text()
    assert f"/p/dx-{run}" in activity and "Form Submitted" in activity and "Asset Downloaded" in activity
    assert page.locator("[data-email-panel] tbody a").count() == 1  # the whitepaper's mail
    page.goto(f"/landing-pages/{page_id}/")
    row = page.locator("[data-variant-stats] tr[data-variant=A]").inner_text()
    assert re.search(r"\b1\b", row) and "100.0%" in row
    _shot(page, "landing-results-en")
    admin.close()
