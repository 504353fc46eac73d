"""Sending through a real SMTP server: headers, DKIM, MIME parts, personalization, tracking."""

from __future__ import annotations

import re
from datetime import timedelta

import dkim
import pytest
from django.utils import timezone

from kizuna.contacts.consent import set_consent
from kizuna.contacts.models import ConsentStatus, Contact, SubscriptionTopic
from kizuna.messaging import outbox, tokens, transports
from kizuna.messaging.dkim import generate_key
from kizuna.messaging.models import EmailTemplate, Message, MessageStatus, Sender, SendingSettings, Suppression
from kizuna.messaging.templates_service import save_version
from tests.mailtest import SmtpServer

HTML = """<html><head><style>p { color: #333; } .cta { color: #fff; background: #06c; }</style></head><body>
<p>{{ contact.company_name }}<br>{{ contact.family_name | default("ご担当者") }} 様</p>
<p>{{ contact.custom.seminar | default("セミナー") }}のご案内です。</p>
<p><a class="cta" href="https://www.example.co.jp/seminar?id=1&amp;src=mail">申し込む</a>
<a href="https://www.example.co.jp/cases">導入事例</a> <a href="mailto:sales@example.co.jp">メール</a></p>
</body></html>"""


@pytest.fixture
def keypair():
    return generate_key()


@pytest.fixture
def setup(db, keypair):
    private, public = keypair
    sender = Sender.objects.create(
        name="Marketing", from_name="株式会社キズナ マーケティング部", from_email="news@kizuna.example",
        reply_to="sales@kizuna.example", organisation="株式会社キズナ", postal_address="東京都千代田区丸の内1-1-1",
        dkim_selector="kz1", dkim_private_key=private, is_default=True)
    topic = SubscriptionTopic.objects.create(key="seminars", name="セミナー案内", requires_opt_in=True)
    template = EmailTemplate.objects.create(name="Seminar", kind="marketing", topic=topic, sender=sender)
    version, warnings = save_version(template, subject="{{ contact.family_name }}様へ: 秋のセミナー", html=HTML)
    SendingSettings.objects.update_or_create(pk=1, defaults={"frequency_cap": 0})
    contact = Contact.objects.create(email="yamada@example.jp", family_name="山田", given_name="太郎",
                                     company_name="山田製作所", custom={"seminar": "DX推進セミナー"})
    set_consent(contact, topic, ConsentStatus.OPTED_IN, method="test")
    return {"sender": sender, "topic": topic, "template": template, "version": version, "contact": contact,
            "public": public}


def _resolver(public: str):
    def dnsfunc(name, timeout=5):
        assert name == b"kz1._domainkey.kizuna.example."
        return public.encode()
    return dnsfunc


def test_message_through_smtp_has_headers_dkim_parts_and_tracking(setup):
    with SmtpServer() as server:
        message, created = outbox.enqueue(setup["contact"], setup["version"], key="test:1")
        assert created
        sent = outbox.drain(transport=transports.SmtpTransport(transports.SmtpConfig.from_url(server.url)))
        assert sent == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT and message.sent_at is not None
    assert len(server.handler.messages) == 1
    mail_from, rcpts, raw = server.handler.messages[0]
    token = tokens.make(message.pk)
    assert rcpts == ["yamada@example.jp"]
    assert mail_from == f"bounce+{token}@kizuna.example"  # VERP: a bounce names the message
    assert dkim.verify(raw, dnsfunc=_resolver(setup["public"]))
    mail = server.handler.parsed()
    assert str(mail["Subject"]) == "山田様へ: 秋のセミナー"
    assert mail["List-Unsubscribe"] == (f"<http://127.0.0.1:8000/e/u/{token}>, "
                                        f"<mailto:unsubscribe+{token}@kizuna.example>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "list-unsubscribe-post" in raw.split(b"\r\n\r\n")[0].decode().lower().split("h=")[1].split(";")[0]
    assert mail["Message-ID"] == f"<{token}@kizuna.example>"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "山田製作所" in html and "DX推進セミナー" in html
    assert "山田製作所" in text and "DX推進セミナー" in text
    # 特定電子メール法: sender's name and postal address in every marketing mail.
    for part in (text, html):
        assert "株式会社キズナ" in part and "東京都千代田区丸の内1-1-1" in part
    # CSS inlined at save time, tracked links replace the originals, mailto untouched.
    assert 'style="color: #fff; background: #06c;"' in html or "background: #06c" in html.split('class="cta"')[0] \
        + html.split('class="cta"')[1][:200]
    links = re.findall(r'href="([^"]+)"', html)
    assert f"http://127.0.0.1:8000/e/c/{token}/0" in links
    assert f"http://127.0.0.1:8000/e/c/{token}/1" in links
    assert "mailto:sales@example.co.jp" in links
    assert not any("www.example.co.jp" in link for link in links)
    assert f"http://127.0.0.1:8000/e/c/{token}/0" in text
    assert f"/e/o/{token}.gif" in html


def test_same_key_is_queued_once_and_sent_once(setup):
    first, created = outbox.enqueue(setup["contact"], setup["version"], key="journey:7:step:2")
    again, created_again = outbox.enqueue(setup["contact"], setup["version"], key="journey:7:step:2")
    assert created and not created_again and first.pk == again.pk
    with SmtpServer() as server:
        outbox.drain(transport=transports.SmtpTransport(transports.SmtpConfig.from_url(server.url)))
        outbox.drain(transport=transports.SmtpTransport(transports.SmtpConfig.from_url(server.url)))
    assert server.handler.per_recipient() == {"yamada@example.jp": 1}


def test_rules_skip_suppressed_unconsented_and_capped(setup):
    topic, version = setup["topic"], setup["version"]
    no_consent = Contact.objects.create(email="nobody@example.jp")
    suppressed = Contact.objects.create(email="gone@example.jp")
    set_consent(suppressed, topic, ConsentStatus.OPTED_IN, method="test")
    Suppression.objects.create(email="gone@example.jp", reason="hard_bounce")
    SendingSettings.objects.filter(pk=1).update(frequency_cap=1, frequency_days=7)
    Message.objects.create(idempotency_key="old", contact=setup["contact"], to_email="yamada@example.jp",
                           version=version, sender=setup["sender"], topic=topic, status="sent",
                           sent_at=timezone.now() - timedelta(days=1))
    rows = [outbox.enqueue(c, version, key=f"k{c.pk}")[0] for c in (no_consent, suppressed, setup["contact"])]
    with SmtpServer() as server:
        outbox.drain(transport=transports.SmtpTransport(transports.SmtpConfig.from_url(server.url)))
    assert server.handler.messages == []
    reasons = {m.to_email: (m.status, m.error) for m in Message.objects.filter(pk__in=[r.pk for r in rows])}
    assert reasons["nobody@example.jp"] == ("skipped", "no opt-in for seminars")
    assert reasons["gone@example.jp"] == ("skipped", "suppressed (hard_bounce)")
    assert reasons["yamada@example.jp"][0] == "skipped" and "frequency cap" in reasons["yamada@example.jp"][1]


def test_transactional_mail_ignores_cap_and_has_no_list_unsubscribe(setup):
    SendingSettings.objects.filter(pk=1).update(frequency_cap=1)
    contact = Contact.objects.create(email="buyer@example.jp", family_name="佐藤")
    with SmtpServer() as server:
        outbox.enqueue(contact, setup["version"], key="download:1", kind="transactional")
        outbox.drain(transport=transports.SmtpTransport(transports.SmtpConfig.from_url(server.url)))
    mail = server.handler.parsed()
    assert mail["List-Unsubscribe"] is None
    assert "東京都千代田区" not in mail.get_body(("plain",)).get_content()


def test_quiet_hours_defer_to_the_contacts_morning(setup):
    SendingSettings.objects.filter(pk=1).update(quiet_start="21:00", quiet_end="08:00")
    night = timezone.datetime(2026, 11, 20, 13, 0, tzinfo=timezone.UTC)  # 22:00 in Tokyo
    import time_machine

    with time_machine.travel(night, tick=False):
        message, _ = outbox.enqueue(setup["contact"], setup["version"], key="quiet")
        outbox.drain(transport=transports.CaptureTransport())
    message.refresh_from_db()
    assert message.status == "queued"
    assert message.due_at == timezone.datetime(2026, 11, 20, 23, 0, tzinfo=timezone.UTC)  # 08:00 JST


def test_temporary_failure_retries_with_backoff_and_permanent_is_recorded(setup):
    from tests.mailtest import Inbox

    other = Contact.objects.create(email="full@example.jp")
    set_consent(other, setup["topic"], ConsentStatus.OPTED_IN, method="test")
    bad = Contact.objects.create(email="unknown@example.jp")
    set_consent(bad, setup["topic"], ConsentStatus.OPTED_IN, method="test")
    handler = Inbox(refuse={"full@example.jp": "452 4.2.2 Mailbox full",
                            "unknown@example.jp": "550 5.1.1 No such user"})
    with SmtpServer(handler) as server:
        temp, _ = outbox.enqueue(other, setup["version"], key="t")
        perm, _ = outbox.enqueue(bad, setup["version"], key="p")
        outbox.drain(transport=transports.SmtpTransport(transports.SmtpConfig.from_url(server.url)))
    temp.refresh_from_db()
    perm.refresh_from_db()
    assert temp.status == "queued" and temp.attempts == 1 and "452" in temp.error
    assert temp.due_at > timezone.now() + timedelta(seconds=50)
    assert perm.status == "failed" and "550 5.1.1" in perm.error


def test_capture_transport_keeps_the_mail_for_the_demo(setup):
    message, _ = outbox.enqueue(setup["contact"], setup["version"], key="cap")
    outbox.drain(transport=transports.CaptureTransport())
    message.refresh_from_db()
    assert message.status == "sent"
    assert b"List-Unsubscribe-Post" in bytes(message.captured.raw)


def test_sent_and_opened_mail_land_in_the_event_log_with_the_contact(setup):
    """Email events name the person by address only; the event log must take them."""
    from kizuna.events import processing
    from kizuna.events.models import Event
    from kizuna.messaging import tracking

    message, _created = outbox.enqueue(setup["contact"], setup["version"], key="test:events")
    assert outbox.drain(transport=transports.CaptureTransport()) == 1
    message.refresh_from_db()
    tracking.record_open(tokens.make(message.pk), tracking.Request(
        method="GET", ip="126.1.2.3", user_agent="Mozilla/5.0 (Windows NT 10.0) Chrome/131", headers={},
        at=timezone.now() + timedelta(minutes=5)))
    processing.drain()
    names = dict(Event.objects.filter(contact=setup["contact"]).values_list("name", "source"))
    assert names.get("Email Sent") == "email"
    assert "Email Opened" in names
