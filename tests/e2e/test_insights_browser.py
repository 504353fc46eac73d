"""Insights in the running product on demo history: the dashboard and each report in Chromium,
the navigation to them, a chart's CSV and image downloads, a date-range error, and the old
funnel address. Screenshots with KIZUNA_SCREENSHOTS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import kizuna_shell as _shell
from .conftest import login
from .conftest import shot as _shot

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("KIZUNA_SCREENSHOTS", "")
REPORTS = [("funnel", "Funnel"), ("web", "Web analytics"), ("email", "Email and journeys"),
           ("conversion", "Path to conversion"), ("attribution", "Attribution"), ("retention", "Retention")]


# A newsletter to the demo contacts two days ago: people's and machines' opens and clicks, bounces.
EMAIL = """
from datetime import timedelta
from django.utils import timezone
from kizuna.contacts.models import Contact
from kizuna.messaging.models import BulkSend, EmailTemplate, Message, Sender, TemplateVersion
sender = Sender.objects.create(name="インサイト", from_name="株式会社キズナ", from_email="news@insights.example",
                               organisation="株式会社キズナ", postal_address="東京都千代田区丸の内1-1-1")
template = EmailTemplate.objects.create(name="メールマガジン 12月号", sender=sender)
version = TemplateVersion.objects.create(template=template, number=1, subject="s", html="<p>x</p>", text="x")
at = timezone.now() - timedelta(days=2)
send = BulkSend.objects.create(name="12月号 配信", template=template, version=version, status="done", created_at=at)
for i, c in enumerate(Contact.objects.filter(email__startswith="insights-demo-")[:120]):
    Message.objects.create(idempotency_key=f"insights-e2e-{c.pk}", contact=c, to_email=c.email, version=version,
                           sender=sender, bulk=send, status="sent", sent_at=at,
                           extra={"journey": 1, "step": "welcome"} if i % 4 == 0 else {},
                           opened_at=at if i % 3 == 0 else None, clicked_at=at if i % 9 == 0 else None,
                           machine_opened_at=at if i % 5 == 0 else None, bounce="hard" if i % 17 == 0 else "")
"""






def test_dashboard_and_reports_on_demo_history(page, kizuna_server):
    out = _shell(kizuna_server, "from kizuna.insights.demo import generate_demo_insights; "
                                "print(generate_demo_insights(seed=9, new_contacts=160))")
    assert "rollups built" in out
    _shell(kizuna_server, EMAIL)
    login(page)
    page.click("nav >> text=Insights")
    page.wait_for_url("**/insights/")
    assert page.locator("[data-kpis]").is_visible()
    assert page.locator("[data-funnel-table] tr[data-stage=lead]").is_visible()
    assert page.locator("[data-chart=funnel] svg").is_visible()
    assert page.locator("[data-chart=new-by-source] svg").is_visible()
    _shot(page, "insights-dashboard")
    with page.expect_download() as download:
        page.locator("[data-chart=funnel] >> text=Download CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    assert text.startswith("Stage,Entered")
    with page.expect_download() as download:
        page.locator("[data-chart=funnel] >> text=Download image (SVG)").click()
    assert Path(download.value.path()).read_text().lstrip().startswith("<?xml")
    # The PNG is drawn by the browser from that SVG at twice its size.
    svg_width = int(page.locator("[data-chart=funnel] svg").first.get_attribute("width"))
    with page.expect_download() as download:
        page.locator("[data-chart=funnel] >> text=Download image (PNG)").click()
    png = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename == "funnel.png" and png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20], "big") == 2 * svg_width  # the IHDR width
    if SHOTS:
        (Path(SHOTS) / "insights-funnel-download.png").write_bytes(png)
    period = "start=2025-12-01&end=2026-12-31"
    for key, heading in REPORTS:
        page.click(f".insights-tabs >> text={heading.split(' analytics')[0] if key == 'web' else heading}")
        page.wait_for_url(f"**/insights/{key}/**")
        page.goto(f"/insights/{key}/?{period}&min=1")
        assert page.locator("h1").inner_text() == heading
        assert page.locator("[data-chart] svg").first.is_visible(), key
        if key == "email":
            assert page.locator("[data-chart=bulk-sends] svg").is_visible()
        _shot(page, f"insights-{key}")
    page.goto("/insights/web/?start=soon")
    assert "Start must be a date written as YYYY-MM-DD" in page.locator("[data-insights-error]").inner_text()
    page.goto("/reports/funnel/?days=90")
    assert page.url.split("?")[0].endswith("/insights/funnel/") and page.locator("[data-funnel]").is_visible()
