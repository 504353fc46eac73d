"""Email pages: access by role, the template editor (refusing bad templates), preview, test send,
bulk send wizard and controls, reports, and escaping of every contact-supplied string."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from kizuna.contacts.models import Contact, ContactList, ListMembership, SubscriptionTopic
from kizuna.messaging import outbox, transports
from kizuna.messaging.models import (
    Activity,
    BulkSend,
    EmailTemplate,
    Message,
    Sender,
    SendingSettings,
    Suppression,
)
from kizuna.messaging.templates_service import save_version

pytestmark = pytest.mark.django_db

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
VIEW_PAGES = ["messaging:template_list", "messaging:bulk_list", "messaging:outbox", "messaging:suppressions"]
ADMIN_PAGES = ["messaging:sender_list", "messaging:settings"]


@pytest.fixture
def world(db):
    sender = Sender.objects.create(name="Default", from_name="キズナ", from_email="news@kizuna.example",
                                   organisation="株式会社キズナ", postal_address="東京都千代田区1-1", is_default=True)
    topic = SubscriptionTopic.objects.create(key="news", name="ニュース", requires_opt_in=False)
    template = EmailTemplate.objects.create(name="Newsletter", topic=topic, sender=sender)
    version, _ = save_version(template, subject="{{ contact.family_name }}様へ", html=(
        "<p>{{ contact.family_name }}様 ({{ contact.company_name }})</p><a href='https://example.co.jp/x'>x</a>"))
    SendingSettings.objects.update_or_create(pk=1, defaults={"frequency_cap": 0})
    return {"sender": sender, "topic": topic, "template": template, "version": version}


@pytest.mark.parametrize("role", ["admin", "marketer", "sales", "viewer"])
def test_roles(client, make_user, world, role):
    client.force_login(make_user(role))
    for name in VIEW_PAGES:
        assert client.get(reverse(name)).status_code == 200, name
    for name in ADMIN_PAGES:
        assert client.get(reverse(name)).status_code == (200 if role == "admin" else 403), name
    editor = client.get(reverse("messaging:template_edit", args=[world["template"].pk])).status_code
    assert editor == (200 if role in ("admin", "marketer") else 403)


def test_navigation_links_every_email_page(logged_in, world):
    html = logged_in.get("/").content.decode()
    for name in [*VIEW_PAGES, *ADMIN_PAGES]:
        assert f'href="{reverse(name)}"' in html, name


@pytest.mark.parametrize("body,expected", [
    ("{{ ''.__class__.__mro__ }}", "not allowed"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "not allowed"),
    ("{{ cycler.__init__.__globals__ }}", "not allowed"),
    ("{{ x|attr('__class__') }}", "not allowed"),
    ("<p>{% if contact.family_name %}</p>", "syntax error"),
    ("<p>{{ contact.family_name </p>", "syntax error"),
])
def test_bad_templates_are_refused_on_save(logged_in, world, body, expected):
    before = world["template"].versions.count()
    response = logged_in.post(reverse("messaging:template_edit", args=[world["template"].pk]), {
        "name": "Newsletter", "kind": "marketing", "topic": world["topic"].pk, "sender": world["sender"].pk,
        "subject": "件名", "html": body})
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert world["template"].versions.count() == before


def test_unknown_variable_is_a_warning_and_saves(logged_in, world):
    response = logged_in.post(reverse("messaging:template_edit", args=[world["template"].pk]), {
        "name": "Newsletter", "kind": "marketing", "topic": world["topic"].pk, "sender": world["sender"].pk,
        "subject": "件名", "html": "<p>{{ contact.nickname }}様</p>"}, follow=True)
    page = response.content.decode()
    assert "contact.nickname" in page and "unknown variable" in page
    assert world["template"].versions.count() == 2


def test_marketing_template_needs_a_topic(logged_in, world):
    response = logged_in.post(reverse("messaging:template_create"), {
        "name": "No topic", "kind": "marketing", "sender": world["sender"].pk, "subject": "x", "html": "<p>x</p>"})
    assert "needs a subscription topic" in response.content.decode()
    assert not EmailTemplate.objects.filter(name="No topic").exists()


def test_preview_as_a_contact_escapes_their_values(logged_in, world):
    contact = Contact.objects.create(email="x@example.jp", family_name=XSS, company_name="山田製作所")
    url = reverse("messaging:template_preview", args=[world["template"].pk])
    html = logged_in.get(url, {"contact": contact.pk}).content.decode()
    assert "山田製作所" in html and "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    sample = logged_in.get(url).content.decode()
    assert "山田" in sample  # the sample contact
    response = logged_in.get(url)
    assert "default-src 'none'" in response["Content-Security-Policy"]
    assert "様へ" in logged_in.get(url, {"part": "text"}).content.decode()


def test_test_send_goes_to_the_outbox_and_is_captured(logged_in, world):
    logged_in.post(reverse("messaging:template_test", args=[world["template"].pk]), {"email": "me@example.jp"})
    outbox.drain(transport=transports.CaptureTransport())
    message = Message.objects.get(to_email="me@example.jp")
    assert message.status == "sent" and message.kind == "transactional"
    page = logged_in.get(reverse("messaging:message_detail", args=[message.pk])).content.decode()
    assert "様へ" in page


def test_bulk_send_wizard_progress_and_controls(logged_in, world):
    members = ContactList.objects.create(name="展示会リスト")
    for i in range(30):
        c = Contact.objects.create(email=f"p{i}@example.jp", family_name=f"参加者{i}")
        ListMembership.objects.create(contact_list=members, contact=c)
    response = logged_in.post(reverse("messaging:bulk_create"), {
        "name": "展示会お礼", "template": world["template"].pk, "contact_list": members.pk, "send_now": "on",
        "ab_sample_percent": 0, "ab_metric": "clicks", "ab_wait_minutes": 240})
    assert response.status_code == 302, response.content.decode()[:2000]
    send = BulkSend.objects.get(name="展示会お礼")
    from kizuna.messaging import bulk

    bulk.tick()
    logged_in.post(reverse("messaging:bulk_action", args=[send.pk, "pause"]))
    outbox.drain(transport=transports.CaptureTransport())
    assert Message.objects.filter(bulk=send, status="sent").count() == 0  # paused: nothing claimed
    progress = logged_in.get(reverse("messaging:bulk_progress", args=[send.pk])).json()
    assert progress["status"] == "paused" and progress["total"] == 30 and progress["done"] is False
    logged_in.post(reverse("messaging:bulk_action", args=[send.pk, "resume"]))
    outbox.drain(transport=transports.CaptureTransport())
    bulk.tick()
    progress = logged_in.get(reverse("messaging:bulk_progress", args=[send.pk])).json()
    assert progress["sent"] == 30 and progress["percent"] == 100 and progress["done"] is True
    page = logged_in.get(reverse("messaging:bulk_detail", args=[send.pk])).content.decode()
    assert "展示会お礼" in page and "30" in page


def test_ab_test_sends_sample_then_winner_by_human_clicks(world):
    members = ContactList.objects.create(name="AB")
    for i in range(100):
        ListMembership.objects.create(contact_list=members,
                                      contact=Contact.objects.create(email=f"ab{i}@example.jp"))
    version_b, _ = save_version(world["template"], subject="B: {{ contact.family_name }}", html="<p>B</p>")
    world["template"].current = world["version"]
    world["template"].save()
    from kizuna.messaging import bulk

    send = BulkSend.objects.create(name="AB", template=world["template"], version=world["version"],
                                   variant_b=version_b, contact_list=members, ab_sample_percent=20,
                                   ab_wait_minutes=60)
    bulk.start(send)
    bulk.tick()
    outbox.drain(transport=transports.CaptureTransport())
    sample = Message.objects.filter(bulk=send, status="sent")
    assert sample.count() == 20 and Message.objects.filter(bulk=send, status="held").count() == 80
    b_rows = list(sample.filter(variant="B")[:3])
    a_row = sample.filter(variant="A").first()
    now = timezone.now()
    Message.objects.filter(pk__in=[m.pk for m in b_rows]).update(clicked_at=now)
    Message.objects.filter(pk=a_row.pk).update(machine_clicked_at=now)  # machines don't vote
    for m in Message.objects.filter(bulk=send, variant="A")[:2]:
        Message.objects.filter(pk=m.pk).update(machine_clicked_at=now)
    import time_machine

    with time_machine.travel(now + timezone.timedelta(minutes=61)):
        bulk.tick()
        send.refresh_from_db()
        assert send.ab_winner == "B"
        outbox.drain(transport=transports.CaptureTransport())
    rest = Message.objects.filter(bulk=send, variant="B").count()
    assert rest == 90 and Message.objects.filter(bulk=send, status="sent").count() == 100


def test_bulk_send_to_a_segment_goes_to_its_current_members(logged_in, world):
    from kizuna.messaging import bulk
    from kizuna.segments import membership, services

    makers = [Contact.objects.create(email=f"m{i}@example.jp", industry="manufacturing") for i in range(4)]
    Contact.objects.create(email="r@example.jp", industry="retail")
    Contact.objects.create(email=None, industry="manufacturing")  # no address: nobody to send to
    segment = services.save(None, None, name="製造業", tree={"field": "industry", "op": "in",
                                                            "value": ["manufacturing"]})
    seminar = ContactList.objects.create(name="展示会リスト")
    form = logged_in.get(reverse("messaging:bulk_create"), {"segment": segment.pk}).content.decode()
    assert f'<option value="{segment.pk}" selected>製造業</option>' in form

    base = {"name": "製造業へ", "template": world["template"].pk, "send_now": "on", "ab_sample_percent": 0,
            "ab_metric": "clicks", "ab_wait_minutes": 240}
    neither = logged_in.post(reverse("messaging:bulk_create"), base)
    assert "Choose a list or a segment to send to." in neither.content.decode()
    both = logged_in.post(reverse("messaging:bulk_create"), {**base, "contact_list": seminar.pk,
                                                            "segment": segment.pk})
    assert "Choose a list or a segment, not both." in both.content.decode()
    assert not BulkSend.objects.exists()

    response = logged_in.post(reverse("messaging:bulk_create"), {**base, "segment": segment.pk})
    assert response.status_code == 302, response.content.decode()[:2000]
    send = BulkSend.objects.get(name="製造業へ")
    assert send.segment == segment and send.contact_list is None
    # The segment's members are not computed yet: the send waits for the worker instead of
    # addressing no one.
    bulk.tick()
    send.refresh_from_db()
    assert send.status == "scheduled" and not Message.objects.filter(bulk=send).exists()
    assert "data-segment-pending" in logged_in.get(reverse("messaging:bulk_detail", args=[send.pk])).content.decode()

    membership.refresh_due()
    Contact.objects.filter(pk=makers[0].pk).update(industry="retail")  # left after the last computation
    bulk.tick()
    outbox.drain(transport=transports.CaptureTransport())
    send.refresh_from_db()
    assert send.total == 4  # the membership as computed, not a fresh evaluation of the filter
    assert set(Message.objects.filter(bulk=send, status="sent").values_list("to_email", flat=True)) == {
        c.email for c in makers}
    listing = logged_in.get(reverse("messaging:bulk_list")).content.decode()
    assert f'href="{reverse("segments:detail", args=[segment.pk])}">製造業</a>' in listing
    detail = logged_in.get(reverse("segments:detail", args=[segment.pk])).content.decode()
    assert reverse("messaging:bulk_detail", args=[send.pk]) in detail  # "used by"


def test_audience_is_a_list_or_a_segment_never_both(world):
    from kizuna.messaging import bulk
    from kizuna.segments.models import Segment

    segment = Segment.objects.create(name="S", filter={"all": []}, needs_full=False)
    seminar = ContactList.objects.create(name="L")
    send = BulkSend(name="x", template=world["template"], version=world["version"])
    with pytest.raises(bulk.BulkError, match="choose a list or a segment to send to"):
        bulk.audience(send)
    send.contact_list, send.segment = seminar, segment
    with pytest.raises(bulk.BulkError, match="not both"):
        bulk.audience(send)
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        send.save()  # the database refuses it too


def test_contact_strings_are_escaped_on_every_email_page(logged_in, world):
    contact = Contact.objects.create(email="evil@example.jp", family_name=XSS)
    message, _ = outbox.enqueue(contact, world["version"], key="xss")
    outbox.drain(transport=transports.CaptureTransport())
    Activity.objects.create(message=message, kind="click", url="https://example.co.jp/x?" + XSS, user_agent=XSS,
                            machine=True, reason="scanner_agent")
    Message.objects.filter(pk=message.pk).update(error=XSS)
    Suppression.objects.create(email="evil@example.jp", reason="manual", detail=XSS)
    pages = [reverse(n) for n in VIEW_PAGES] + [
        reverse("messaging:message_detail", args=[message.pk]),
        reverse("messaging:template_report", args=[world["template"].pk])]
    for url in pages:
        html = logged_in.get(url).content.decode()
        assert "<script>alert(1)</script>" not in html, url
        assert "<img src=x onerror" not in html, url


def test_contact_page_lists_the_contacts_email(logged_in, world):
    contact = Contact.objects.create(email="panel@example.jp", family_name="田中")
    outbox.enqueue(contact, world["version"], key="panel")
    outbox.drain(transport=transports.CaptureTransport())
    Suppression.objects.create(email="panel@example.jp", reason="hard_bounce")
    page = logged_in.get(reverse("contacts:detail", args=[contact.pk])).content.decode()
    assert "data-email-panel" in page and "Newsletter" in page and "Hard bounce" in page
