"""Scoring, hand-off and lifecycle in the running product: a visitor's events go through the
HTTP API and the worker, the lead turns hot, the worker notifies its owner (captured mail and a
signed webhook to a local server), and the pages show it — each one looked at in Chromium."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request

import pytest

from tests.test_handoff import Receiver

from .conftest import kizuna_shell as _shell
from .conftest import login
from .conftest import shot as _shot

pytestmark = pytest.mark.browser






def _wait(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def test_a_visitor_turns_hot_is_handed_to_sales_and_the_pages_show_why(page, kizuna_server):
    run = os.urandom(3).hex()
    with Receiver() as receiver:
        setup = f"""
from kizuna.accounts.models import User
from kizuna.events.models import WriteKey
from kizuna.handoff.models import SalesRoute, Webhook
from kizuna.scoring.models import ScoringModel
seller = User.objects.create(username='sato-{run}', role='sales', email='sato-{run}@kizuna.example',
                             last_name='佐藤', first_name='花子')
route = SalesRoute.objects.create(name='全国 {run}')
route.members.add(seller)
Webhook.objects.create(name='Hook {run}', kind='json', url={receiver.url!r}, secret='sec-{run}')
ScoringModel.objects.update(hot_threshold=40, hot_min_grade='D')
WriteKey.objects.create(name='Site {run}', key='wk_{run}')
"""
        _shell(kizuna_server, setup)
        time.sleep(1.1)  # write keys are re-read at most once a second
        aid = f"anon-{run}"
        email = f"aoki-{run}@b-corp.co.jp"
        batch = {"batch": [
            {"type": "page", "anonymousId": aid, "properties": {"url": "https://www.example.co.jp/cases/a",
                                                                  "path": "/cases/a", "title": "導入事例"}},
            {"type": "identify", "anonymousId": aid, "traits": {"email": email, "lastName": "青木",
                                                                  "company": "<b>B株式会社</b>"}},
            {"type": "track", "anonymousId": aid, "event": "Form Submitted", "properties": {"form": "資料請求"}},
            {"type": "page", "anonymousId": aid, "properties": {"url": "https://www.example.co.jp/pricing",
                                                                  "path": "/pricing", "title": "料金"}},
        ]}
        request = urllib.request.Request(kizuna_server + "/v1/batch", data=json.dumps(batch).encode(), headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"wk_{run}:".encode()).decode()})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 200
        _wait(lambda: receiver.requests, timeout=180)
        payload = json.loads(receiver.requests[0]["body"])
        assert payload["contact"]["email"] == email
        assert any("Form submitted" in r for r in payload["reasons"])
        assert payload["contact"]["owner"] == "佐藤 花子"
        captured = _wait(lambda: kizuna_server.query(
            "SELECT COUNT(*) FROM messaging_capturedmail WHERE envelope_to = ?", (f"sato-{run}@kizuna.example",)
        )[0][0])
        assert captured == 1
        contact_id = payload["contact"]["id"]

    login(page)
    page.goto("/leads/hot/")
    row = page.locator(f"tr:has(a[href='/contacts/{contact_id}/'])")
    assert row.count() == 1
    assert "Form submitted" in row.inner_text() and "<b>B株式会社</b>" in row.inner_text()
    _shot(page, "hot-leads")

    page.goto(f"/contacts/{contact_id}/")
    assert page.locator("[data-stage-panel]").is_visible()
    assert "<b>B株式会社</b>" in page.locator("main").inner_text()  # shown as text, never as markup
    assert page.locator("svg").count() >= 1  # the score history chart
    _shot(page, "contact-score-and-stage")
    page.select_option("[data-stage-panel] select[name=stage]", "sql")
    page.click("[data-stage-panel] button[type=submit]")
    page.wait_for_url(f"**/contacts/{contact_id}/")
    assert "By hand" in page.locator("[data-stage-panel]").inner_text()

    page.goto("/settings/handoff/")
    deliveries = page.locator("[data-deliveries]").inner_text()
    assert f"Hook {run}" in deliveries and f"sato-{run}@kizuna.example" in deliveries and "Sent" in deliveries
    _shot(page, "handoff-settings")

    page.goto("/reports/funnel/")
    assert page.locator("[data-funnel]").is_visible()
    _shot(page, "funnel")
    page.goto("/settings/stages/")
    _shot(page, "stage-settings")

    page.goto("/settings/scoring/")
    page.click("table a")
    page.fill("[data-try] input[name=try]", str(contact_id))
    page.click("[data-try] button[type=submit]")
    page.wait_for_load_state()
    assert "Form submitted" in page.content()
    _shot(page, "scoring-model")

    # A rule edit re-scores every contact in the background: the page follows the worker's progress.
    page.fill("[data-fit-form] input[name=field]", "department")
    page.select_option("[data-fit-form] select[name=operator]", "not_empty")
    page.fill("[data-fit-form] input[name=points]", "3")
    with page.expect_navigation():
        page.click("[data-fit-form] button[type=submit]")
    if page.locator("[data-rescore] progress").count():  # the worker may already be done
        _shot(page, "scoring-rescore-running")
    page.wait_for_selector("[data-rescore-result]", timeout=120_000)  # app.js reloads when the run is over
    assert "changed" in page.locator("[data-rescore-result]").inner_text()
    _shot(page, "scoring-rescore-done")
