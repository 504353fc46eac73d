"""Hand-off to sales: owner assignment, the alert email through a real SMTP server, signed
webhooks to a real local HTTP server with retries, and the settings page."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.test import override_settings
from django.urls import reverse

from kizuna.contacts.models import Company, Contact
from kizuna.handoff import delivery
from kizuna.handoff.assignment import parse_territory
from kizuna.handoff.models import Delivery, Handoff, HandoffSettings, SalesRoute, Webhook
from kizuna.scoring.models import LeadAlert, ScoringModel
from kizuna.scoring.setup import ensure_defaults
from tests.mailtest import SmtpServer
from tests.test_scoring import START, page, send

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_receivers(settings):
    """The webhook receivers here listen on 127.0.0.1, which the SSRF guard refuses by default."""
    settings.KIZUNA_WEBHOOK_ALLOW_PRIVATE = True


class Receiver:
    """A real HTTP server on a free port; answers with the queued statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "path": self.path})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/lead"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _verify(secret: str, header: str, body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def model(db):
    model = ensure_defaults()
    ScoringModel.objects.filter(pk=model.pk).update(hot_threshold=60, hot_min_grade="C")
    model.refresh_from_db()
    return model


def _make_hot(aid: str, email: str, prefecture: str = "13", when=START) -> Contact:
    """Identify, set a profile that fits, and act enough to cross 60."""
    with time_machine.travel(when, tick=False):
        send([{"type": "identify", "anonymousId": aid, "traits": {"email": email}}])
        contact = Contact.objects.get(email=email)
        Contact.objects.filter(pk=contact.pk).update(industry="manufacturing", company_size="300-999",
                                                     region="kanto", prefecture=prefecture, job_title="部長")
        send([{"type": "track", "anonymousId": aid, "event": "Form Submitted", "properties": {}},
              page(aid, "/pricing"), page(aid, "/pricing?a"), page(aid, "/pricing?b"), page(aid, "/cases/x")])
    return contact


def test_example_1_one_alert_reaches_the_owner_by_email_and_webhook(model, make_user):
    """Mr A of MISSION.md: step-by-step interest, one alert, the owner told by mail and webhook."""
    owner = make_user("sales", username="tanaka", email="tanaka@kizuna.example", first_name="太郎",
                      last_name="田中")
    route = SalesRoute.objects.create(name="関東", field="prefecture", values="13,14")
    route.members.add(owner)
    with Receiver() as receiver, SmtpServer() as smtp, override_settings(KIZUNA_EMAIL_URL=smtp.url):
        hook = Webhook.objects.create(name="Slack #sales", kind="json", url=receiver.url, secret="s3cret")
        aid = "browser-mr-a"
        with time_machine.travel(START, tick=False):
            send([page(aid, "/"), page(aid, "/products/erp"), page(aid, "/cases/maruyama-seiki")])
        with time_machine.travel(START + timedelta(minutes=10), tick=False):
            send([{"type": "identify", "anonymousId": aid, "traits": {"email": "a@b-corp.co.jp", "lastName": "青木",
                                                                       "company": "B株式会社"}},
                  {"type": "track", "anonymousId": aid, "event": "Form Submitted", "properties": {}}])
            contact = Contact.objects.get(email="a@b-corp.co.jp")
            Contact.objects.filter(pk=contact.pk).update(industry="manufacturing", company_size="300-999",
                                                         region="kanto", prefecture="13", job_title="製造部 部長")
        assert not LeadAlert.objects.exists()
        with time_machine.travel(START + timedelta(days=3), tick=False):
            send([{"type": "track", "anonymousId": aid, "event": "Email Clicked", "properties": {"machine": False}},
                  page(aid, "/cases/maruyama-seiki")])
        assert not LeadAlert.objects.exists()
        with time_machine.travel(START + timedelta(days=4), tick=False):
            send([page(aid, "/pricing"), page(aid, "/pricing?plan=enterprise")])
            send([page(aid, "/pricing"), page(aid, "/cases")])  # still hot: no second alert
            assert LeadAlert.objects.count() == 1
            handoff = Handoff.objects.get()
            assert handoff.owner == owner and handoff.how == Handoff.How.ROUTE
            contact.refresh_from_db()
            assert contact.owner == owner
            assert Delivery.objects.count() == 2  # the owner's email and the webhook
            assert delivery.deliver_due() == 2
        assert Delivery.objects.filter(status="sent").count() == 2

        assert len(smtp.handler.messages) == 1
        _from, rcpts, _raw = smtp.handler.messages[0]
        assert rcpts == ["tanaka@kizuna.example"]
        mail = smtp.handler.parsed()
        assert "青木" in str(mail["Subject"])
        text = mail.get_body(("plain",)).get_content()
        assert "Pricing page viewed" in text and "Form submitted" in text
        assert f"/contacts/{contact.pk}/" in text
        assert "/pricing" in text  # the recent activity

        assert len(receiver.requests) == 1
        request = receiver.requests[0]
        assert _verify(hook.secret, request["headers"]["Kizuna-Signature"], request["body"])
        payload = json.loads(request["body"])
        assert payload["event"] == "lead.hot" and payload["contact"]["email"] == "a@b-corp.co.jp"
        assert any("Pricing page viewed" in r for r in payload["reasons"])
        assert payload["contact"]["owner"] == "田中 太郎"


def test_webhook_is_retried_with_backoff_until_it_answers(model):
    with Receiver(statuses=[503, 500]) as receiver:
        Webhook.objects.create(name="Any", kind="slack", url=receiver.url, secret="k")
        HandoffSettings.objects.create(email_owner=False)
        _make_hot("anon-1", "b@example.co.jp")
        assert delivery.deliver_due() == 1
        row = Delivery.objects.get()
        assert row.status == "pending" and row.attempts == 1 and row.response_status == 503
        assert delivery.deliver_due() == 0  # not due yet
        with time_machine.travel(row.next_attempt_at + timedelta(seconds=1), tick=False):
            assert delivery.deliver_due() == 1
        row.refresh_from_db()
        assert row.status == "pending" and row.attempts == 2
        with time_machine.travel(row.next_attempt_at + timedelta(seconds=1), tick=False):
            assert delivery.deliver_due() == 1
        row.refresh_from_db()
        assert row.status == "sent" and row.attempts == 3
        assert len(receiver.requests) == 3
        assert "blocks" in json.loads(receiver.requests[-1]["body"])  # Slack's format


def test_a_refusing_endpoint_fails_at_once_and_can_be_retried_by_hand(model, logged_in):
    with Receiver(statuses=[404]) as receiver:
        Webhook.objects.create(name="Gone", kind="teams", url=receiver.url, secret="k")
        HandoffSettings.objects.create(email_owner=False)
        _make_hot("anon-2", "c@example.co.jp")
        delivery.deliver_due()
        row = Delivery.objects.get()
        assert row.status == "failed" and "404" in row.last_error
        logged_in.post(reverse("handoff:delivery_retry", args=[row.pk]))
        assert delivery.deliver_due() == 1
        row.refresh_from_db()
        assert row.status == "sent"
        body = json.loads(receiver.requests[-1]["body"])
        assert body["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"


def test_owner_choice_existing_then_company_then_route_in_turn(model, make_user):
    a, b, c, boss = (make_user("sales", username=n, email=f"{n}@k.example") for n in ("a", "b", "c", "boss"))
    kanto = SalesRoute.objects.create(name="関東", field="prefecture", values="13", position=0)
    kanto.members.add(a, b)
    anyone = SalesRoute.objects.create(name="全国", position=1)
    anyone.members.add(c)
    owners = []
    for i in range(3):
        owners.append(_make_hot(f"t{i}", f"t{i}@example.co.jp").pk)
    _make_hot("osaka", "osaka@example.co.jp", prefecture="27")
    company = Company.objects.create(name="丸山精機", owner=boss)
    with time_machine.travel(START, tick=False):
        send([{"type": "identify", "anonymousId": "co", "traits": {"email": "co@maruyama.co.jp"}}])
    Contact.objects.filter(email="co@maruyama.co.jp").update(company=company)
    _make_hot("co", "co@maruyama.co.jp")
    got = {h.alert.contact.email: (h.owner.username, h.how) for h in Handoff.objects.select_related("alert__contact",
                                                                                                   "owner")}
    assert [got[f"t{i}@example.co.jp"][0] for i in range(3)] == ["a", "b", "a"]
    assert got["osaka@example.co.jp"] == ("c", "route")
    assert got["co@maruyama.co.jp"] == ("boss", "company")
    # An owner already set is kept.
    contact = Contact.objects.get(email="osaka@example.co.jp")
    assert contact.owner.username == "c"


def test_no_owner_goes_to_the_fallback_address(model):
    HandoffSettings.objects.create(fallback_email="inside-sales@kizuna.example")
    _make_hot("f", "f@example.co.jp")
    assert Handoff.objects.get().how == "none"
    assert Delivery.objects.get().email == "inside-sales@kizuna.example"


def test_territory_words_are_read_as_codes_and_unknown_ones_named():
    assert parse_territory("prefecture", "東京, Kanagawa、13") == ("13,14", [])
    assert parse_territory("region", "関東, kinki") == ("kanto,kinki", [])
    assert parse_territory("prefecture", "東京, Atlantis") == ("13", ["Atlantis"])


def test_settings_page_adds_routes_and_webhooks_and_names_bad_input(logged_in, make_user):
    seller = make_user("sales", username="seller")
    url = reverse("handoff:settings")
    assert logged_in.get(url).status_code == 200
    response = logged_in.post(url, {"action": "route", "r-name": "西日本", "r-field": "prefecture",
                                    "r-values": "大阪, ムー大陸", "r-members": [seller.pk]})
    assert response.status_code == 200 and "ムー大陸" in response.content.decode()
    assert not SalesRoute.objects.exists()
    logged_in.post(url, {"action": "route", "r-name": "西日本", "r-field": "prefecture", "r-values": "大阪, 京都",
                         "r-members": [seller.pk]})
    assert SalesRoute.objects.get().values == "27,26"
    response = logged_in.post(url, {"action": "webhook", "w-name": "x", "w-kind": "json", "w-url": "ftp://x",
                                    "w-language": "ja"})
    assert response.status_code == 200 and not Webhook.objects.exists()
    with Receiver() as receiver:
        logged_in.post(url, {"action": "webhook", "w-name": "Teams", "w-kind": "teams", "w-url": receiver.url,
                             "w-language": "en"})
        hook = Webhook.objects.get()
        assert hook.secret.startswith("whsec_")
        response = logged_in.post(reverse("handoff:webhook_test", args=[hook.pk]), follow=True)
        assert "HTTP 200" in response.content.decode()
        assert _verify(hook.secret, receiver.requests[0]["headers"]["Kizuna-Signature"], receiver.requests[0]["body"])
