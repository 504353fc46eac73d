"""Stored XSS through tracked data, the most common way into a marketing tool: a visitor controls
page titles, URLs, referrers, UTM parameters, event names and properties, user ids, browser ids
and form fields, and every page that shows them is read by staff with their session.

The payloads go in through the real ingestion and processing, then every page that shows them is
parsed: no element may carry an event handler, no script may be one we did not write, no link may
use javascript:, and each payload's marker must be on the page (escaped), so a page that stopped
showing the data would fail rather than pass silently.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client

from kizuna.contacts import services
from kizuna.contacts.models import Contact
from kizuna.events import ingest, processing

pytestmark = pytest.mark.django_db

PAYLOADS = [
    "<script>alert('XSS1')</script>",
    '"><img src=x onerror=alert("XSS2")>',
    "javascript:alert('XSS3')",
    "<svg/onload=alert('XSS4')>",
    "'><iframe src=javascript:alert('XSS5')>",
    "</title><script>alert('XSS6')</script>",
    "{{7*7}}XSS7${7*7}",
    "<a href=\"javascript:alert('XSS8')\">x</a>",
]
MARKERS = [f"XSS{n}" for n in range(1, 9)]
URL_PAYLOAD = "javascript:alert('XSS9')//https://ok.example/"


class Checker(HTMLParser):
    """Collects what an injected payload would create if it were not escaped."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action", "formaction", "xlink:href", "data") and \
                    value.replace("\t", "").replace("\n", "").startswith(("javascript:", "vbscript:", "data:text")):
                self.problems.append(f"<{tag} {name}={value[:40]}>")
        if tag == "script":
            a = dict(attrs)
            if not (a.get("src") or "").startswith("/static/") and "nonce" not in a:
                self.problems.append("<script> without src or nonce")
        if tag in ("iframe", "object", "embed") and "srcdoc" not in dict(attrs):
            a = dict(attrs)
            if not (a.get("src") or "").startswith("/email/"):
                self.problems.append(f"<{tag}>")


def assert_safe(html: str, where: str, markers: list[str]) -> None:
    checker = Checker()
    checker.feed(html)
    assert checker.problems == [], f"{where}: {checker.problems}"
    missing = [m for m in markers if m not in html]
    assert not missing, f"{where} does not show {missing}: the test would prove nothing"


def sent_message(url: str, contact: Contact | None = None, subject: str = "Hello"):
    """A message sent to a contact from a version with one tracked link (for click tests)."""
    from django.utils import timezone

    from kizuna.messaging import outbox, templates_service
    from kizuna.messaging.models import EmailTemplate, Message, MessageKind, MessageStatus, Sender

    sender = Sender.objects.get_or_create(name="S", defaults={
        "from_name": "Kizuna", "from_email": "news@example.co.jp", "organisation": "Kizuna",
        "postal_address": "東京都千代田区1-1"})[0]
    template = EmailTemplate.objects.create(name=f"T{EmailTemplate.objects.count()}",
                                            kind=MessageKind.TRANSACTIONAL, sender=sender)
    version, _w = templates_service.save_version(template, subject=subject, html=f'<p><a href="{url}">x</a></p>')
    contact = contact or services.create_contact(None, {"email": f"r{Contact.objects.count()}@example.jp"})
    message, _created = outbox.enqueue(contact, version, key=f"sec-{template.pk}-{contact.pk}")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENT, sent_at=timezone.now())
    message.refresh_from_db()
    return message, version


@pytest.fixture
def hostile(db, settings):
    """Visitors, a known contact, events and mail whose every visitor-controlled string is hostile."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    messages = []
    for n, payload in enumerate(PAYLOADS):
        aid = f"aid-{n}-{payload[:12]}"
        messages.append({"type": "page", "anonymousId": aid, "context": {
            "campaign": {"source": payload, "medium": payload, "name": payload},
            "userAgent": payload},
            "properties": {"url": f"https://site.example/p?utm_source={payload}", "path": f"/p/{payload}",
                           "title": payload, "referrer": URL_PAYLOAD}})
        messages.append({"type": "track", "anonymousId": aid, "event": payload,
                         "properties": {"detail": payload, "url": URL_PAYLOAD}})
    messages.append({"type": "identify", "anonymousId": "aid-known", "traits": {
        "email": "victim@example.jp", "lastName": PAYLOADS[0], "firstName": PAYLOADS[1], "company": PAYLOADS[3],
        "title": PAYLOADS[4]}})
    messages.append({"type": "page", "anonymousId": "aid-known", "properties": {
        "url": "https://site.example/pricing", "path": "/pricing", "title": PAYLOADS[5], "referrer": URL_PAYLOAD}})
    messages.append({"type": "track", "anonymousId": "aid-known", "event": PAYLOADS[6],
                     "properties": {"x": PAYLOADS[7]}})
    messages.append({"type": "page", "anonymousId": "a/b/../c?d#e", "properties": {"url": "https://s.example/"}})
    result = ingest.ingest(messages, ingest.RequestInfo(ip="203.0.113.9", user_agent=PAYLOADS[2],
                                                        source="site"))
    assert not result.rejected, result.rejected
    processing.drain()
    contact = Contact.objects.get(email="victim@example.jp")
    services.update_contact(None, contact, {"department": PAYLOADS[2], "job_title": PAYLOADS[4],
                                            "phone": "03-0000-0000"})
    from kizuna.contacts.models import Company

    Company.objects.filter(pk=contact.company_id).update(name=PAYLOADS[3])
    message, _v = sent_message(URL_PAYLOAD.replace("javascript:alert('XSS9')//", ""), contact, subject=PAYLOADS[0])
    from kizuna.messaging.models import Activity

    Activity.objects.create(message=message, kind="click", url=URL_PAYLOAD, ip="203.0.113.9", user_agent=PAYLOADS[1])
    return contact


def _admin(make_user) -> Client:
    client = Client()
    client.force_login(make_user("admin", username="xss-admin"))
    return client


def test_tracked_strings_are_inert_on_every_page_that_shows_them(hostile, make_user):
    from kizuna.events.models import Visitor
    from kizuna.messaging.models import Message

    client = _admin(make_user)
    message = Message.objects.get(contact=hostile)
    anonymous = Visitor.objects.exclude(contact=hostile).filter(anonymous_id__startswith="aid-1").first()
    pages = {
        "/visitors/": ["XSS1", "XSS2"],
        f"/visitors/{anonymous.anonymous_id}/": ["XSS2"],
        "/events/live/": ["XSS1", "XSS4"],
        f"/contacts/{hostile.pk}/": ["XSS1", "XSS2", "XSS3", "XSS5", "XSS6"],
        "/contacts/": ["XSS1"],
        "/companies/": ["XSS4"],
        "/visitors/companies/": [],
        "/": ["XSS1"],
        f"/email/outbox/{message.pk}/": ["XSS2", "XSS9"],
        "/email/outbox/": [],
        f"/email/templates/{message.version.template_id}/report": [],
    }
    for path, markers in pages.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert_safe(response.content.decode(), path, markers)
    rows = client.get("/events/live/rows", HTTP_ACCEPT="application/json").json()["rows"]
    assert_safe(rows, "live rows (inserted with innerHTML)", ["XSS1", "XSS7"])


def test_a_browser_id_with_slashes_does_not_break_the_visitor_pages(hostile, make_user):
    """The anonymous id is the visitor's to choose: a '/' in it once made the visitor list fail."""
    client = _admin(make_user)
    assert client.get("/visitors/").status_code == 200
    assert client.get("/events/live/").status_code == 200
    detail = client.get("/visitors/a/b/../c%3Fd%23e/")
    assert detail.status_code == 200


def test_segment_members_and_hot_leads_escape_contact_strings(hostile, make_user):
    from kizuna.scoring.models import ContactScore, ScoringModel
    from kizuna.scoring.setup import ensure_defaults
    from kizuna.segments import membership
    from kizuna.segments import services as segment_services

    client = _admin(make_user)
    segment = segment_services.save(None, None, name=PAYLOADS[1], tree={
        "all": [{"field": "email", "op": "contains", "value": "victim"}]})
    membership.recompute(segment)
    ensure_defaults()
    model = ScoringModel.objects.filter(active=True).first()
    ContactScore.objects.update_or_create(model=model, contact=hostile, defaults={
        "engagement": 90, "fit": 40, "grade": "A", "hot": True, "rank_key": 1e6})
    for path, markers in [("/segments/", ["XSS2"]), (f"/segments/{segment.pk}/", ["XSS1", "XSS2"]),
                          ("/leads/hot/", ["XSS1"])]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert_safe(response.content.decode(), path, markers)


def test_landing_and_tracker_config_cannot_be_broken_out_of(hostile, make_user):
    """The tracker's settings are written into a script: '</script>' in them must stay inside."""
    from kizuna.events.http import IngestionApp
    from kizuna.events.models import WriteKey

    key = WriteKey.objects.create(name="</script><script>alert(1)</script>")
    body = b"".join(IngestionApp(None).tracker({"QUERY_STRING": f"k={key.key}"}, lambda *a: None))
    assert b"</script>" not in body.split(b";\n", 1)[0]
