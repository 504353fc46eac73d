"""Journeys as code in Chromium against the running product: a YAML with a fault is checked and
its line highlighted, the fixed file is imported, and the new journey is simulated on the page
views the server holds — looked at in English and in Japanese."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ADMIN_PASSWORD, login, switch_language
from .conftest import shot as _shot

pytestmark = pytest.mark.browser

SETUP = """
from datetime import timedelta
from django.utils import timezone
from kizuna.contacts.models import Contact
from kizuna.events.models import Event

run = "{run}"
now = timezone.now()
for i in range(5):
    contact = Contact.objects.create(email=f"jc{{i}}-{{run}}@example.jp", family_name=f"<i>見込{{i}}</i>")
    for n in range(i % 3):
        Event.objects.create(message_id=f"jc-{{run}}-{{i}}-{{n}}", type="page", contact=contact,
                             path=f"/pricing-{{run}}", url="https://www.example.co.jp/pricing", title="料金",
                             occurred_at=now - timedelta(days=n + 1), received_at=now, processed_at=now)
"""

YAML = """name: 料金ページ {run}
entry: every_time
trigger:
  type: event
  event: page
  where:
    - field: path
      op: equals
      value: /pricing-{run}
nodes:
  - id: tag
    type: add_tag
    tag: 料金ページ閲覧
    next: {next}
  - id: wait
    type: wait
    duration:
      days: 7
"""




def test_check_import_and_simulate_a_journey_file(page, browser, kizuna_server):
    run = os.urandom(3).hex()
    result = subprocess.run([sys.executable, "-m", "kizuna.cli", "shell", "-c", SETUP.format(run=run)],  # noqa: S603
                            env=kizuna_server.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    login(page)
    page.goto("/journeys/import/")
    page.fill("textarea[name=text]", YAML.format(run=run, next="nowhere"))
    page.click("[data-dry-run]")
    page.wait_for_selector("[data-errors]")
    assert page.locator(".yaml-line.has-error").count() == 1
    assert page.locator(".yaml-line.has-error .yaml-no").inner_text() == "14"
    assert "no step with id 'nowhere'" in page.locator("[data-errors] .errorlist").inner_text()
    _shot(page, "journey-import-error")
    page.fill("textarea[name=text]", YAML.format(run=run, next="wait"))
    page.click("[data-import]")
    page.wait_for_selector("[data-imported]")
    page.click("[data-imported] [data-simulate-link]")
    page.fill("input[name=days]", "7")
    page.click("[data-simulate-form] button[type=submit]")
    page.wait_for_selector("[data-summary]")
    assert page.locator("[data-entrants]").inner_text() == "3"  # three of the five viewed the page
    assert page.locator("[data-paths] .sim-path").count() == 4  # one of them twice
    assert page.locator("[data-paths] i").count() == 0  # names are shown as text, not markup
    _shot(page, "journey-simulation")
    context = browser.new_context(base_url=kizuna_server, locale="ja-JP", viewport={"width": 1360, "height": 900})
    try:
        ja = context.new_page()
        login(ja, "admin", ADMIN_PASSWORD)
        ja.goto(page.url)
        ja.wait_for_selector("[data-summary]")
        # An earlier test may have saved English as the admin's choice, which wins over the browser's.
        switch_language(ja, "ja")
        ja.wait_for_selector("[data-summary]")
        assert ja.locator("html").get_attribute("lang") == "ja"
        _shot(ja, "journey-simulation-ja")
        switch_language(ja, "en")
    finally:
        context.close()
