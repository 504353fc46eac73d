"""The living demo in Chromium: `kizuna simulate` plays the stories of MISSION.md on the running
server's database (the worker paused meanwhile: the simulation does its passes on its own clock),
then the dashboard, hot leads, a journey, the captured mails and the playbooks show what happened."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import login

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("KIZUNA_SCREENSHOTS", "")
NURTURE = "資料請求後のナーチャリング / White paper nurturing"


def test_demo_pages_after_the_simulation(page, kizuna_server, tmp_path):
    server = kizuna_server
    alerts_before = server.query("SELECT COUNT(*) FROM scoring_leadalert")[0][0]
    server.stop_worker()
    try:
        subprocess.run([sys.executable, "-m", "kizuna.cli", "simulate", "--days", "8", "--visitors", "5",  # noqa: S603
                        "--keen", "1", "--seed", "11"], env=server.env, check=True, capture_output=True, text=True,
                       timeout=600)
    finally:
        server.start_worker("--interval", "0.2")
    shots = Path(SHOTS) if SHOTS else tmp_path

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"demo-{name}.png"), full_page=True)

    hot = server.query("SELECT c.family_name, c.given_name, c.email FROM scoring_leadalert a "
                       "JOIN contacts_contact c ON c.id = a.contact_id WHERE c.email LIKE ? ORDER BY a.id",
                       ("%.co.jp",))
    assert len(hot) >= 1 and server.query("SELECT COUNT(*) FROM scoring_leadalert")[0][0] > alerts_before
    family, given, email = hot[-1]
    login(page)

    # The worker keeps the insights rollups current every half minute; one pass now, so as not to wait.
    subprocess.run([sys.executable, "-m", "kizuna.cli", "insights", "update"],  # noqa: S603
                   env=server.env, check=True, capture_output=True, text=True, timeout=600)
    page.goto("/insights/")
    hot_panel = page.locator("[data-hot-leads]").inner_text()
    assert family in hot_panel, hot_panel  # the simulated prospect who turned hot, on the dashboard
    shot("dashboard")
    page.goto("/")
    assert page.locator("main").inner_text().strip()
    shot("home")

    page.goto("/leads/hot/")
    # The reasons, strongest first, a repeated one folded with its count: the form (+30, the
    # strongest single rule) among them.
    why = page.locator("tr", has_text=family).first.locator("td").last.inner_text()
    assert "Form submitted" in why and len(why.splitlines()) >= 3, why
    shot("hot-leads")

    journey_id = server.query("SELECT id FROM journeys_journey WHERE name = ?", (NURTURE,))[0][0]
    page.goto("/journeys/")
    row = page.locator(f"tr[data-journey='{journey_id}']")
    assert int(row.locator("td.num").first.inner_text().replace(",", "")) >= 1  # enrolled
    shot("journeys")
    page.goto(f"/journeys/{journey_id}/enrollments/")
    assert email in page.locator("main").inner_text() or family in page.locator("main").inner_text()
    shot("journey-runs")
    page.goto(f"/journeys/{journey_id}/")
    page.wait_for_load_state("networkidle")
    shot("journey")

    mails = server.query("SELECT m.id FROM messaging_message m JOIN messaging_capturedmail c ON c.message_id = m.id "
                         "WHERE m.to_email = ? ORDER BY m.id", (email,))
    assert len(mails) >= 3  # the PDF, then step mails
    page.goto("/email/outbox/")
    inbox = page.locator("main").inner_text()
    assert "Nurture 1 case study" in inbox or "導入事例" in inbox
    shot("outbox")
    page.goto(f"/email/outbox/{mails[1][0]}/")
    assert "captured" in page.locator("main").inner_text().lower() or page.locator("iframe").count()
    shot("captured-mail")

    page.goto("/playbooks/")
    assert page.locator("[data-state='installed']").count() == 7
    shot("playbooks")

    # The demo site is tracked by the real tracker in a real browser too.
    seen = server.query("SELECT COUNT(*) FROM events_event WHERE path = ?", ("/demo-site/whitepaper/",))[0][0]
    page.goto("/demo-site/whitepaper/")
    assert page.get_by_text("資料を無料でダウンロード").is_visible()
    shot("site")
    page.goto("/demo-site/pricing/")  # leaving the page sends its dwell time
    deadline = time.monotonic() + 30
    while server.query("SELECT COUNT(*) FROM events_event WHERE path = ?", ("/demo-site/whitepaper/",))[0][0] <= seen:
        assert time.monotonic() < deadline, "the tracker's page view never reached the events"
        time.sleep(0.5)
