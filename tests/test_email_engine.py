"""The outbox's edges: crash recovery from the journal, throttling, ESPs through anymail and their
webhooks, bad input when queueing, and the DNS check page against a real (local) DNS server."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from django.core import mail
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from kizuna.contacts.models import Contact, SubscriptionTopic
from kizuna.messaging import outbox, tokens, transports
from kizuna.messaging.dkim import generate_key
from kizuna.messaging.models import EmailTemplate, Message, Sender, SendingSettings, Suppression
from kizuna.messaging.templates_service import save_version
from tests.test_dnscheck import FakeDNS

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(db):
    sender = Sender.objects.create(name="S", from_name="キズナ", from_email="news@kizuna.example",
                                   organisation="株式会社キズナ", postal_address="東京都千代田区1-1")
    topic = SubscriptionTopic.objects.create(key="news", name="ニュース", requires_opt_in=False)
    template = EmailTemplate.objects.create(name="T", topic=topic, sender=sender)
    SendingSettings.objects.update_or_create(pk=1, defaults={"frequency_cap": 0})
    return save_version(template, subject="{{ contact.family_name }}様", html="<p><a href='https://x.example/'>x</a></p>")[0]


def _contacts(n: int) -> list[Contact]:
    return [Contact.objects.create(email=f"c{i}@example.jp", family_name=f"C{i}") for i in range(n)]


def test_recovery_reads_a_dead_workers_journal(version):
    rows = [outbox.enqueue(c, version, key=f"r{c.pk}")[0] for c in _contacts(5)]
    worker = "host-1-dead"
    Message.objects.filter(pk__in=[r.pk for r in rows]).update(status="sending", claimed_by=worker,
                                                              claimed_until=timezone.now() + timedelta(minutes=5))
    a, b, c, d, e = rows
    (outbox.journal_dir() / f"{worker}.journal").write_text(
        f"F {a.pk}\nS {a.pk}\nF {b.pk}\nF {c.pk}\nR {c.pk}\n")  # d and e: never finished
    counts = outbox.recover()
    status = dict(Message.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", "status"))
    assert status == {a.pk: "sent", b.pk: "sent", c.pk: "queued", d.pk: "queued", e.pk: "queued"}
    assert counts == {"sent": 2, "requeued": 3, "unknown": 0}
    assert not (outbox.journal_dir() / f"{worker}.journal").exists()


def test_a_live_workers_rows_are_left_alone_and_foreign_ones_become_unknown(version):
    live = outbox.Journal("host-2-alive")
    try:
        mine, foreign = [outbox.enqueue(c, version, key=f"l{c.pk}")[0] for c in _contacts(2)]
        Message.objects.filter(pk=mine.pk).update(status="sending", claimed_by="host-2-alive",
                                                  claimed_until=timezone.now() - timedelta(minutes=1))
        Message.objects.filter(pk=foreign.pk).update(status="sending", claimed_by="other-host-9",
                                                     claimed_until=timezone.now() - timedelta(minutes=1))
        with override_settings(KIZUNA_EMAIL_URL="smtp://127.0.0.1:1"):
            outbox.recover()
        mine.refresh_from_db()
        foreign.refresh_from_db()
        assert mine.status == "sending"
        assert foreign.status == "unknown" and "delivery unknown" in foreign.error
    finally:
        live.close()


def test_transport_token_bucket_limits_the_rate(version):
    SendingSettings.objects.filter(pk=1).update(rate_per_second=5)
    for c in _contacts(12):
        outbox.enqueue(c, version, key=f"t{c.pk}")
    outbox.drain(transport=transports.CaptureTransport())
    sent = Message.objects.filter(status="sent").count()
    assert sent == 5  # the burst; the rest waits for tokens
    assert Message.objects.filter(status="queued").count() == 7
    assert outbox.take_tokens("transport:capture", 5, 10) == 0


def test_queueing_refuses_a_missing_sender_or_address(version):
    version.template.sender = None
    version.template.save()
    contact = Contact.objects.create(email="a@example.jp")
    with pytest.raises(ValueError, match="no sender"):
        outbox.enqueue(contact, version, key="x")
    version.template.sender = Sender.objects.first()
    nobody = Contact.objects.create(email=None, family_name="名無し")
    with pytest.raises(ValueError, match="no email address"):
        outbox.enqueue(nobody, version, key="y")


def test_esp_transport_through_anymail_sends_parts_headers_and_metadata(version):
    contact = Contact.objects.create(email="esp@example.jp", family_name="伊藤")
    message, _ = outbox.enqueue(contact, version, key="esp")
    outbox.drain(transport=transports.DjangoTransport("anymail.backends.test.EmailBackend", {}))
    message.refresh_from_db()
    assert message.status == "sent"
    sent = mail.outbox[-1]
    assert sent.subject == "伊藤様" and sent.to == ["esp@example.jp"]
    assert sent.metadata == {"kizuna_message": str(message.pk)}
    assert sent.track_clicks is False and sent.track_opens is False
    assert sent.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = sent.alternatives[0][0]
    assert f"/e/c/{tokens.make(message.pk)}/0" in html


@override_settings(ANYMAIL={"WEBHOOK_SECRET": "hook:s3cret"})
def test_esp_bounce_webhook_suppresses_and_delivery_settles_unknown(client, version):
    contact, other = _contacts(2)
    bounced, _ = outbox.enqueue(contact, version, key="w1")
    unknown, _ = outbox.enqueue(other, version, key="w2")
    Message.objects.filter(pk=bounced.pk).update(status="sent", sent_at=timezone.now())
    Message.objects.filter(pk=unknown.pk).update(status="unknown")
    auth = "Basic " + base64.b64encode(b"hook:s3cret").decode()
    events = [
        {"email": contact.email, "event": "bounce", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 unknown user", "timestamp": 1763800000, "sg_message_id": "abc.1",
         "kizuna_message": str(bounced.pk)},
        {"email": other.email, "event": "delivered", "timestamp": 1763800000, "sg_message_id": "abc.2",
         "kizuna_message": str(unknown.pk)},
    ]
    response = client.post("/webhooks/anymail/sendgrid/tracking/", json.dumps(events),
                           content_type="application/json", HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200
    assert Suppression.objects.get(email=contact.email).reason == "hard_bounce"
    bounced.refresh_from_db()
    unknown.refresh_from_db()
    assert bounced.bounce == "hard" and unknown.status == "sent"
    denied = client.post("/webhooks/anymail/sendgrid/tracking/", json.dumps(events), content_type="application/json")
    assert denied.status_code in (400, 401, 403)


def test_dns_check_page_against_a_local_dns_server(logged_in, version):
    private, public = generate_key()
    sender = Sender.objects.create(name="DKIM", from_name="K", from_email="news@example.com", organisation="K",
                                   postal_address="東京", dkim_selector="kz1", dkim_private_key=private)
    fake = FakeDNS()
    try:
        fake.records = {"example.com": ["v=spf1 include:_spf.google.com ~all"],
                        "kz1._domainkey.example.com": [public]}
        with override_settings(KIZUNA_DNS_NAMESERVER=f"127.0.0.1:{fake.port}"):
            page = logged_in.get(reverse("messaging:sender_dns", args=[sender.pk])).content.decode()
    finally:
        fake.close()
    assert "_dmarc.example.com" in fake.queries
    assert "v=DMARC1; p=none" in page  # what to publish for the missing DMARC record
    assert "v=spf1 include:_spf.google.com ~all" in page
    assert public[:40] in page


def _self_signed(tmp_path):
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                                         serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def test_starttls_with_login_to_a_server_that_requires_it(version, tmp_path):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.mailtest import Inbox, free_port

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"kizuna" and auth_data.password == b"pw"
        return AuthResult(success=ok)

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=_self_signed(tmp_path),
                            require_starttls=True, auth_required=True, authenticator=authenticator)
    controller.start()
    try:
        contact = Contact.objects.create(email="tls@example.jp", family_name="木村")
        outbox.enqueue(contact, version, key="tls")
        config = transports.SmtpConfig.from_url(f"smtp://kizuna:pw@127.0.0.1:{port}?starttls=1&verify=0")
        outbox.drain(transport=transports.SmtpTransport(config))
        assert inbox.per_recipient() == {"tls@example.jp": 1}
        # A refused login (this server then stalls instead of answering 535) is a temporary failure:
        # the message waits for a retry, it is not lost.
        wrong = transports.SmtpConfig.from_url(f"smtp://kizuna:bad@127.0.0.1:{port}?starttls=1&verify=0&timeout=2")
        outbox.enqueue(Contact.objects.create(email="tls2@example.jp"), version, key="tls2")
        outbox.drain(transport=transports.SmtpTransport(wrong))
        refused = Message.objects.get(idempotency_key="tls2")
        assert refused.status == "queued" and refused.attempts == 1 and refused.error
        assert inbox.per_recipient() == {"tls@example.jp": 1}
    finally:
        controller.stop()
