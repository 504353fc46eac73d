"""Opens, clicks, unsubscribes, bounces and complaints coming back from sent mail."""

from __future__ import annotations

import smtplib
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.utils import timezone

from kizuna.contacts.consent import consent_status, set_consent
from kizuna.contacts.models import ConsentStatus, Contact, SubscriptionTopic
from kizuna.messaging import feedback, inbound, tokens
from kizuna.messaging.models import (
    Activity,
    BounceRecord,
    EmailTemplate,
    Message,
    Sender,
    SendingSettings,
    Suppression,
)
from kizuna.messaging.templates_service import save_version
from tests.mailtest import free_port

DATA = Path(__file__).parent / "data" / "bounces"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Mobile/15E148 Safari/604.1")


@pytest.fixture
def sent(db):
    sender = Sender.objects.create(name="M", from_name="キズナ", from_email="news@kizuna.example",
                                   organisation="株式会社キズナ", postal_address="東京都千代田区1-1")
    topic = SubscriptionTopic.objects.create(key="news", name="ニュース", requires_opt_in=False)
    other = SubscriptionTopic.objects.create(key="events", name="イベント", requires_opt_in=False)
    template = EmailTemplate.objects.create(name="News", topic=topic, sender=sender)
    version, _ = save_version(template, subject="ニュース", html=(
        '<p><a href="https://example.co.jp/a">A</a> <a href="https://example.co.jp/b">B</a> '
        '<a href="{{ contact.custom.link | default(\'https://example.co.jp/c\') }}">C</a></p>'))
    SendingSettings.objects.update_or_create(pk=1, defaults={"frequency_cap": 0})

    def make(email: str = "kato@example.jp", minutes_ago: int = 30) -> Message:
        contact = Contact.objects.filter(email=email).first() or Contact.objects.create(email=email, family_name="加藤")
        return Message.objects.create(
            idempotency_key=f"m{Message.objects.count()}", contact=contact, to_email=email, version=version,
            sender=sender, topic=topic, status="sent", sent_at=timezone.now() - timedelta(minutes=minutes_ago))

    return {"make": make, "topic": topic, "other": other, "version": version}


def test_open_pixel_counts_people_and_flags_apple_privacy_protection(client, sent):
    message = sent["make"]()
    token = tokens.make(message.pk)
    response = client.get(f"/e/o/{token}.gif", HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="17.58.1.20")
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    message.refresh_from_db()
    assert message.opened_at is None and message.machine_opened_at is not None
    client.get(f"/e/o/{token}.gif", HTTP_USER_AGENT=IPHONE, REMOTE_ADDR="126.0.0.5")
    message.refresh_from_db()
    assert message.opened_at is not None and message.opens == 2
    assert list(Activity.objects.filter(message=message).values_list("machine", "reason")) == [
        (True, "apple_mpp"), (False, "")]


def test_forged_or_unknown_tokens_get_nothing(client, sent):
    message = sent["make"]()
    token = tokens.make(message.pk)
    forged = tokens.make(message.pk)[:-2] + "xx"
    assert client.get(f"/e/o/{forged}.gif").status_code == 200  # a pixel always answers…
    assert Activity.objects.count() == 0  # …but records nothing
    assert client.get(f"/e/c/{forged}/0").status_code == 404
    assert client.get(f"/e/c/{token}/99").status_code == 404
    assert client.get(f"/e/u/{forged}").status_code == 404
    other = tokens.make(message.pk + 1)
    assert client.get(f"/e/c/{other}/0").status_code == 404


def test_click_redirects_only_to_links_of_the_message(client, sent):
    message = sent["make"](minutes_ago=5)
    token = tokens.make(message.pk)
    response = client.get(f"/e/c/{token}/1", HTTP_USER_AGENT=IPHONE, REMOTE_ADDR="126.0.0.5")
    assert response.status_code == 302 and response["Location"] == "https://example.co.jp/b"
    message.refresh_from_db()
    assert message.clicked_at is not None and message.opened_at is not None  # a click implies an open
    # A link built from a variable is carried signed: tampering with it is refused.
    good = f"/e/c/{token}/x?u=https%3A%2F%2Fexample.co.jp%2Fc&h={tokens.sign_url(token, 'https://example.co.jp/c')}"
    assert client.get(good)["Location"] == "https://example.co.jp/c"
    evil = good.replace("example.co.jp", "evil.example")
    assert client.get(evil).status_code == 404
    js = f"/e/c/{token}/x?u=javascript%3Aalert(1)&h={tokens.sign_url(token, 'javascript:alert(1)')}"
    assert client.get(js).status_code == 404


def test_scanner_clicks_are_machine(client, sent):
    message = sent["make"](minutes_ago=0)
    token = tokens.make(message.pk)
    client.head(f"/e/c/{token}/0", REMOTE_ADDR="52.100.1.1")
    client.get(f"/e/c/{token}/0", HTTP_USER_AGENT=IPHONE, REMOTE_ADDR="126.0.0.5")  # seconds after delivery
    message.refresh_from_db()
    assert message.clicked_at is None and message.machine_clicked_at is not None
    reasons = list(Activity.objects.filter(message=message).values_list("reason", flat=True))
    assert reasons == ["head_request", "too_fast"]


def test_one_click_unsubscribe_post_is_honoured_at_once(client, sent):
    message = sent["make"]()
    token = tokens.make(message.pk)
    waiting = Message.objects.create(idempotency_key="next", contact=message.contact, to_email=message.to_email,
                                     version=sent["version"], sender=message.sender, topic=sent["topic"])
    response = client.post(f"/e/u/{token}", {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert consent_status(message.contact, sent["topic"]) == ConsentStatus.OPTED_OUT
    assert consent_status(message.contact, sent["other"]) == ConsentStatus.UNKNOWN
    waiting.refresh_from_db()
    assert waiting.status == "skipped"
    message.refresh_from_db()
    assert message.unsubscribed_at is not None


def test_get_shows_preferences_and_changes_nothing(client, sent):
    message = sent["make"]()
    token = tokens.make(message.pk)
    for _ in range(3):  # a link scanner following the link
        response = client.get(f"/e/u/{token}", HTTP_USER_AGENT="Mimecast")
        assert response.status_code == 200
    assert consent_status(message.contact, sent["topic"]) == ConsentStatus.UNKNOWN
    assert "ニュース" in response.content.decode() and "イベント" in response.content.decode()
    client.post(f"/e/u/{token}", {"action": "save", "topic": ["events"]})
    assert consent_status(message.contact, sent["topic"]) == ConsentStatus.OPTED_OUT
    assert consent_status(message.contact, sent["other"]) == ConsentStatus.OPTED_IN
    client.post(f"/e/u/{token}", {"action": "all"})
    message.contact.refresh_from_db()
    assert message.contact.do_not_contact and message.contact.dnc_reason == "unsubscribed"


def _dsn(token: str, recipient: str, status: str, diagnostic: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.jp\r\nTo: bounce+{t}@kizuna.example\r\nSubject: Undelivered Mail\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.jp\r\n\r\n"
        "Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: {s}\r\nDiagnostic-Code: smtp; {d}\r\n\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{t}@kizuna.example>\r\nTo: {r}\r\n\r\n--b--\r\n"
    ).format(t=token, r=recipient, s=status, d=diagnostic).encode()


def test_hard_bounce_suppresses_at_once(sent):
    message = sent["make"]("gone@example.jp")
    token = tokens.make(message.pk)
    done = feedback.handle_raw(_dsn(token, "gone@example.jp", "5.1.1", "550 5.1.1 User unknown"),
                               envelope_to=f"bounce+{token}@kizuna.example")
    assert done == ["gone@example.jp: hard → unreachable"]
    assert Suppression.objects.get(email="gone@example.jp").reason == "hard_bounce"
    message.refresh_from_db()
    message.contact.refresh_from_db()
    assert message.bounce == "hard" and message.contact.dnc_reason == "bounced"


def test_soft_bounces_suppress_after_three_of_five(sent):
    email = "full@example.jp"
    results = []
    for n in range(3):
        message = sent["make"](email, minutes_ago=100 - n)
        token = tokens.make(message.pk)
        results += feedback.handle_raw(_dsn(token, email, "4.2.2", "452 4.2.2 Mailbox full"))
        if n < 2:
            assert not Suppression.objects.filter(email=email).exists()
    assert results[-1] == f"{email}: soft → unreachable"
    assert Suppression.objects.get(email=email).reason == "soft_bounce"


def test_two_soft_bounces_among_deliveries_do_not_suppress(sent):
    email = "busy@example.jp"
    for n in range(5):
        message = sent["make"](email, minutes_ago=100 - n)
        if n in (1, 3):
            feedback.handle_raw(_dsn(tokens.make(message.pk), email, "4.2.2", "452 4.2.2 Mailbox full"))
    assert not Suppression.objects.filter(email=email).exists()
    assert BounceRecord.objects.filter(email=email, kind="soft").count() == 2


def test_complaint_unsubscribes_from_everything(sent):
    message = sent["make"]("angry@example.jp")
    token = tokens.make(message.pk)
    arf = (
        "From: feedback@fbl.example\r\nTo: bounce+{t}@kizuna.example\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\r\n\r\n--b\r\n"
        "Content-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: angry@example.jp\r\n\r\n"
        "--b\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <{t}@kizuna.example>\r\nTo: angry@example.jp\r\n"
        "Subject: News\r\n\r\nbody\r\n--b--\r\n"
    ).format(t=token).encode()
    assert feedback.handle_raw(arf) == ["angry@example.jp: complaint → unsubscribe"]
    message.refresh_from_db()
    message.contact.refresh_from_db()
    assert message.complained_at is not None and message.contact.dnc_reason == "complained"
    assert Suppression.objects.get(email="angry@example.jp").reason == "complaint"


@pytest.mark.parametrize("sample,kind", [("postfix_01.txt", "hard"), ("simple_01.txt", "soft"),
                                         ("dsn_01.txt", "hard")])
def test_flufl_samples_through_the_policy(sent, sample, kind):
    from kizuna.messaging import bounces

    report = bounces.parse((DATA / sample).read_bytes())
    assert report.kind == kind and report.recipients
    email = report.recipients[0]
    message = sent["make"](email)
    feedback.handle(report, envelope_to=f"bounce+{tokens.make(message.pk)}@kizuna.example")
    assert Suppression.objects.filter(email=email).exists() == (kind == "hard")
    message.refresh_from_db()
    assert message.bounce == kind


@pytest.mark.django_db(transaction=True)
def test_inbound_smtp_listener_takes_bounces_and_mailto_unsubscribes(sent):
    message = sent["make"]("listener@example.jp")
    token = tokens.make(message.pk)
    port = free_port()
    controller = inbound.serve("127.0.0.1", port)
    try:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            with pytest.raises(smtplib.SMTPRecipientsRefused):  # no open relay
                smtp.sendmail("a@b.example", ["someone@else.example"], b"Subject: x\r\n\r\nx")
            unsubscribe = EmailMessage()
            unsubscribe["Subject"] = "unsubscribe"
            unsubscribe.set_content("unsubscribe")
            smtp.sendmail("listener@example.jp", [f"unsubscribe+{token}@kizuna.example"], unsubscribe.as_bytes())
            smtp.sendmail("", [f"bounce+{token}@kizuna.example"],
                          _dsn(token, "listener@example.jp", "5.1.1", "550 5.1.1 User unknown"))
    finally:
        controller.stop()
    assert consent_status(message.contact, sent["topic"]) == ConsentStatus.OPTED_OUT
    assert Suppression.objects.filter(email="listener@example.jp", reason="hard_bounce").exists()


def test_consent_set_elsewhere_is_untouched_by_auto_replies(sent):
    message = sent["make"]("away@example.jp")
    set_consent(message.contact, sent["topic"], ConsentStatus.OPTED_IN, method="test")
    reply = ("From: away@example.jp\r\nTo: bounce+{t}@kizuna.example\r\nSubject: 自動応答: 不在のお知らせ\r\n"
             "Auto-Submitted: auto-replied\r\nIn-Reply-To: <{t}@kizuna.example>\r\n\r\n不在です。\r\n").format(
        t=tokens.make(message.pk)).encode("utf-8")
    feedback.handle_raw(reply)
    assert not Suppression.objects.filter(email="away@example.jp").exists()
    assert consent_status(message.contact, sent["topic"]) == ConsentStatus.OPTED_IN
