"""Tracking pages: access by role, settings changes, IP-range import, and escaping of every
string a visitor can send."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import AuditLog
from kizuna.contacts.models import Contact
from kizuna.events import ingest, processing
from kizuna.events.models import IncomingEvent, IpRange, PageView, Session, TrackingSettings, Visitor, WriteKey

from .conftest import PASSWORD  # noqa: F401 - documents where the users come from

pytestmark = pytest.mark.django_db

PAGES = ["events:visitor_list", "events:companies", "events:live"]
XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>']


def _visit(aid: str, *, title: str = "Pricing", referrer: str = "", email: str = "", ip: str = "203.0.113.5",
           ua: str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36", event: str = ""):
    messages = [{"type": "page", "anonymousId": aid,
                 "properties": {"url": f"https://www.example.co.jp/p?q={title}", "path": f"/p/{title}",
                                "title": title, "referrer": referrer}}]
    if event:
        messages.append({"type": "track", "anonymousId": aid, "event": event, "properties": {"detail": event}})
    if email:
        messages.append({"type": "identify", "anonymousId": aid, "traits": {"email": email, "name": title}})
    result = ingest.ingest(messages, ingest.RequestInfo(ip=ip, user_agent=ua, source=title[:60]))
    assert not result.rejected, result.rejected
    processing.drain()


@pytest.mark.parametrize("role", ["admin", "marketer", "sales", "viewer"])
def test_every_role_sees_the_tracking_pages(client, make_user, role):
    client.force_login(make_user(role))
    for name in PAGES:
        assert client.get(reverse(name)).status_code == 200, name
    expected = 200 if role in ("admin", "marketer") else 403
    assert client.get(reverse("events:settings")).status_code == expected


def test_navigation_links_every_tracking_page(logged_in):
    html = logged_in.get("/").content.decode()
    for name in [*PAGES, "events:settings"]:
        assert f'href="{reverse(name)}"' in html


def test_write_keys_settings_and_snippet(logged_in):
    response = logged_in.post(reverse("events:key_create"), {"k-name": "Corporate site",
                                                             "k-allowed_domains": "example.co.jp\n*.example.jp",
                                                             "k-enabled": "on"})
    assert response.status_code == 302
    key = WriteKey.objects.get(name="Corporate site")
    page = logged_in.get(reverse("events:settings")).content.decode()
    assert f"/kz.js?k={key.key}" in page and "data-copy" in page
    bad = logged_in.post(reverse("events:key_create"), {"k-name": "x", "k-allowed_domains": "https://bad.jp/"},
                         follow=True)
    assert "Not a domain: https://bad.jp/" in bad.content.decode()
    logged_in.post(reverse("events:key_update", args=[key.pk]), {"k-name": "Corporate site", "k-allowed_domains": ""})
    key.refresh_from_db()
    assert not key.enabled
    logged_in.post(reverse("events:key_delete", args=[key.pk]))
    assert not WriteKey.objects.filter(pk=key.pk).exists()
    assert AuditLog.objects.filter(object_type="events.writekey").count() == 3


def test_tracking_options_report_bad_rule_lines(logged_in):
    data = {"action": "settings", "s-session_timeout_minutes": "45", "s-identify_forms": "on",
            "s-bot_user_agents": "HeadlessChrome\n([broken", "s-bot_networks": "203.0.113.0/24\nnot-an-ip"}
    page = logged_in.post(reverse("events:settings"), data).content.decode()
    assert "line 2: invalid regular expression" in page
    assert "line 2: not-an-ip is not an IP address or CIDR network" in page
    data.update({"s-bot_user_agents": "HeadlessChrome", "s-bot_networks": "203.0.113.0/24", "s-anonymize_ip": "on"})
    assert logged_in.post(reverse("events:settings"), data).status_code == 302
    saved = TrackingSettings.load()
    assert (saved.session_timeout_minutes, saved.anonymize_ip, saved.bot_networks) == (45, True, "203.0.113.0/24")


def test_ip_range_import_keeps_good_rows_and_shows_errors(logged_in):
    csv_bytes = "IPアドレス,会社名\n203.0.113.0/24,丸商事株式会社\n999.0.0.1,壊れた\n198.51.100.0/24,青葉工業\n"
    upload = SimpleUploadedFile("ranges.csv", csv_bytes.encode("cp932"), content_type="text/csv")
    page = logged_in.post(reverse("events:range_import"), {"file": upload}, follow=True).content.decode()
    assert set(IpRange.objects.values_list("network", flat=True)) == {"203.0.113.0/24", "198.51.100.0/24"}
    assert "Line 3:" in page and "2 IP ranges added" in page
    logged_in.post(reverse("events:range_create"), {"r-network": "10.0.0.0/33", "r-company_name": "x"})
    assert IpRange.objects.count() == 2
    item = IpRange.objects.get(network="198.51.100.0/24")
    logged_in.post(reverse("events:range_delete", args=[item.pk]))
    assert IpRange.objects.count() == 1


def test_visitors_companies_and_timeline(logged_in):
    IpRange.objects.create(network="203.0.113.0/24", company_name="丸商事株式会社")
    _visit("known-1", title="Pricing", referrer="https://search.yahoo.co.jp/search?p=MA", email="a@example.co.jp")
    _visit("anon-1", title="Home", ip="198.51.100.9")
    visitors = logged_in.get(reverse("events:visitor_list")).content.decode()
    assert "丸商事株式会社" in visitors and "anonymous" in visitors
    only_known = logged_in.get(reverse("events:visitor_list") + "?known=known").content.decode()
    assert "anon-1" not in only_known and "known-1" in only_known
    companies = logged_in.get(reverse("events:companies")).content.decode()
    assert "丸商事株式会社" in companies and "/p/Pricing" in companies
    contact = Contact.objects.get(email="a@example.co.jp")
    detail = logged_in.get(reverse("contacts:detail", args=[contact.pk])).content.decode()
    assert "Web activity" in detail and "/p/Pricing" in detail and "Yahoo! JAPAN" in detail
    visitor = logged_in.get(reverse("events:visitor_detail", args=["anon-1"])).content.decode()
    assert "/p/Home" in visitor


def test_live_rows_and_retry(logged_in):
    _visit("live-1", title="Live")
    IncomingEvent.objects.create(message_id="bad", lane=0, received_at=timezone.now(), payload="{}", error="KeyError")
    data = logged_in.get(reverse("events:live_rows")).json()
    assert "/p/Live" in data["rows"] and data["status"]["failed"] == 1
    logged_in.post(reverse("events:retry_failed"))
    assert IncomingEvent.objects.get().error == ""


@pytest.mark.parametrize("payload", XSS)
def test_visitor_strings_are_escaped_everywhere(logged_in, payload):
    IpRange.objects.create(network="203.0.113.0/24", company_name=payload)
    _visit("xss-" + str(len(payload)), title=payload, referrer=f"https://evil.example/?{payload}",
           email="xss@example.co.jp", event=payload, ua=payload)
    session = Session.objects.get()
    session.keyword = session.utm_campaign = payload
    session.save()
    assert PageView.objects.get().title == payload and Visitor.objects.get().company_name == payload
    contact = Contact.objects.get(email="xss@example.co.jp")
    urls = [reverse(n) for n in PAGES] + [
        reverse("events:visitor_detail", args=[Visitor.objects.get().anonymous_id]),
        reverse("contacts:detail", args=[contact.pk]),
        reverse("events:settings"),
    ]
    for url in urls:
        html = logged_in.get(url).content.decode()
        assert payload not in html, url
    rows = logged_in.get(reverse("events:live_rows")).json()["rows"]
    assert payload not in rows and "&lt;" in rows
