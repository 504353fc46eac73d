"""Personal data: export of everything about a contact, erasure on request (events anonymised or
deleted), the erasure's audit entry and hashed address, retention rules, IP anonymisation
before storage, the registry's coverage of every model, and the public tracker page."""

from __future__ import annotations

import json

import pytest
import time_machine
from django.apps import apps
from django.test import Client
from django.utils import timezone

from kizuna.accounts.models import AuditLog
from kizuna.contacts import consent, services
from kizuna.contacts.emails import email_hash
from kizuna.contacts.models import Contact, SubscriptionTopic
from kizuna.events import ingest, processing
from kizuna.events.models import Event, IncomingEvent, PageView, Session, TrackingSettings, Visitor
from kizuna.privacy import erasure, retention
from kizuna.privacy.models import ErasedAddress, PrivacySettings
from kizuna.privacy.registry import providers

pytestmark = pytest.mark.django_db

EMAIL = "yamada.taro@example.co.jp"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _track(messages, ip="203.0.113.77", ua="Mozilla/5.0 (Macintosh) Safari/605.1"):
    result = ingest.ingest(messages, ingest.RequestInfo(ip=ip, user_agent=ua, source="site"))
    assert not result.rejected, result.rejected
    processing.drain()


@pytest.fixture
def person(db):
    """A known contact with browsing, a form identify, consent, a message with a click, a score,
    a stage change, a segment membership, a journey enrollment and a hand-off delivery."""
    from kizuna.segments import membership
    from kizuna.segments import services as segments
    from tests.test_security_xss import sent_message

    _track([
        {"type": "page", "anonymousId": "browser-1", "properties": {
            "url": f"https://www.example.co.jp/pricing?email={EMAIL}&utm_source=mail", "path": "/pricing",
            "title": "料金", "referrer": "https://www.google.com/search?q=kizuna"}},
        {"type": "identify", "anonymousId": "browser-1", "traits": {"email": EMAIL, "lastName": "山田",
                                                                    "firstName": "太郎", "phone": "03-1234-5678"}},
        {"type": "track", "anonymousId": "browser-1", "event": "Demo Requested",
         "properties": {"plan": "pro", "note": f"call {EMAIL}", "value": 3}},
    ])
    contact = Contact.objects.get(email=EMAIL)
    topic = SubscriptionTopic.objects.create(key="news", name="ニュース")
    consent.set_consent(contact, topic, "opted_in", method="form", source="/contact", text_shown="配信に同意します",
                        ip="203.0.113.77")
    message, _v = sent_message("https://www.example.co.jp/case", contact)
    from kizuna.messaging.models import Activity

    Activity.objects.create(message=message, kind="click", url="https://www.example.co.jp/case", ip="203.0.113.77",
                            user_agent="Mozilla/5.0")
    segment = segments.save(None, None, name="Pricing visitors", tree={
        "all": [{"field": "email", "op": "contains", "value": "yamada"}]})
    membership.recompute(segment)
    from kizuna.handoff.models import Delivery

    Delivery.objects.create(contact=contact, event="journey.step", payload={"contact": {"email": EMAIL}},
                            email="sales@example.co.jp")
    services.update_contact(None, contact, {"lifecycle_stage": "mql", "job_title": "部長"})
    return contact


def test_export_holds_everything_about_the_contact(person, logged_in):
    response = logged_in.get(f"/contacts/{person.pk}/export.json")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="kizuna-contact-')
    data = json.loads(response.content)
    assert data["format"] == "kizuna.contact-export/1" and data["contact_id"] == person.pk
    assert set(data) >= {p.key for p in providers()}
    assert data["contacts"]["profile"]["email"] == EMAIL and data["contacts"]["profile"]["job_title"] == "部長"
    assert data["contacts"]["consent_records"][0]["text_shown"] == "配信に同意します"
    names = [e["name"] for e in data["events"]["events"]]
    assert "Demo Requested" in names and data["events"]["events"][0]["ip"] == "203.0.113.77"
    assert data["events"]["page_views"][0]["path"] == "/pricing" and data["events"]["sessions"]
    assert data["messaging"]["messages"][0]["to_email"] == EMAIL and data["messaging"]["activity"]
    assert data["segments"]["memberships"][0]["segment__name"] == "Pricing visitors"
    assert data["lifecycle"]["stage_changes"][-1]["to_stage"] == "mql"
    assert data["handoff"]["deliveries"][0]["email"] == "sales@example.co.jp"
    assert any(e["action"] == "update" for e in data["accounts"]["entries"])
    assert AuditLog.objects.filter(action="export", object_id=str(person.pk)).exists()


def test_api_export_needs_the_export_capability(person, make_user, api_token):
    client = Client()
    ok = client.get(f"/api/v1/contacts/{person.pk}/export",
                    HTTP_AUTHORIZATION=f"Bearer {api_token(make_user('marketer'), ['read', 'write'])}")
    assert ok.status_code == 200 and ok.json()["contacts"]["profile"]["email"] == EMAIL
    read_only = client.get(f"/api/v1/contacts/{person.pk}/export",
                           HTTP_AUTHORIZATION=f"Bearer {api_token(make_user('admin', username='a2'), ['read'])}")
    assert read_only.status_code == 403
    viewer = client.get(f"/api/v1/contacts/{person.pk}/export",
                        HTTP_AUTHORIZATION=f"Bearer {api_token(make_user('viewer'), ['read', 'write'])}")
    assert viewer.status_code == 403
    assert client.get("/api/v1/contacts/999999/export",
                      HTTP_AUTHORIZATION=f"Bearer {api_token(make_user('admin', username='a3'), ['write'])}"
                      ).status_code == 404


def test_erasure_anonymises_events_and_keeps_counts(person, make_user):
    admin = make_user("admin", username="dpo")
    pages_before = PageView.objects.filter(path="/pricing").count()
    events_before = Event.objects.count()
    result = erasure.erase_contact(person, actor=admin, events="anonymise")
    assert not Contact.objects.filter(pk=person.pk).exists()
    assert Event.objects.count() == events_before and PageView.objects.filter(path="/pricing").count() == pages_before
    for event in Event.objects.all():
        assert event.contact_id is None and event.ip is None and event.user_agent == "" and event.traits == {}
        assert event.anonymous_id.startswith("erased-") and event.user_id == ""
        blob = json.dumps([event.properties, event.context, event.url, event.referrer], ensure_ascii=False)
        assert EMAIL not in blob and "203.0.113.77" not in blob and "q=kizuna" not in blob, blob
    demo = Event.objects.get(name="Demo Requested")
    assert demo.properties == {"value": 3}
    assert Session.objects.filter(ip__isnull=False).count() == 0 and Visitor.objects.filter(
        anonymous_id="browser-1").count() == 0
    from kizuna.messaging.models import Activity, Message

    message = Message.objects.get()
    assert message.to_email == "" and message.contact_id is None and message.status == "sent"
    assert Activity.objects.get().ip is None
    entry = AuditLog.objects.get(action="erase")
    assert entry.actor == admin and entry.object_id == str(result["contact_id"]) and entry.object_label == ""
    assert entry.changes["email_sha256"] == email_hash(EMAIL) and entry.changes["reason"] == "request"
    everything = json.dumps(list(AuditLog.objects.values("object_label", "changes")), ensure_ascii=False)
    assert EMAIL not in everything and "山田" not in everything
    assert ErasedAddress.objects.filter(email_hash=email_hash(EMAIL)).exists()
    assert not ErasedAddress.objects.filter(email_hash__contains="yamada").exists()


def test_erasure_can_delete_the_events(person, logged_in):
    page = logged_in.get(f"/contacts/{person.pk}/erase/")
    assert page.status_code == 200
    wrong = logged_in.post(f"/contacts/{person.pk}/erase/", {"events": "delete", "confirm": "someone@else.jp"})
    assert wrong.status_code == 400 and Contact.objects.filter(pk=person.pk).exists()
    done = logged_in.post(f"/contacts/{person.pk}/erase/", {"events": "delete", "confirm": EMAIL.upper()})
    assert done.status_code == 302
    assert Event.objects.filter(anonymous_id="browser-1").count() == 0
    assert PageView.objects.count() == 0 and Session.objects.count() == 0
    assert AuditLog.objects.get(action="erase").changes["events"] == "delete"


def test_erased_people_do_not_come_back_through_imports_api_or_colleagues(person, logged_in, make_user, api_token):
    erasure.erase_contact(person, reason=erasure.REQUEST)
    from kizuna.contacts import imports
    from kizuna.contacts.services import ContactConflict

    with pytest.raises(ContactConflict) as refused:
        services.create_contact(None, {"email": EMAIL.upper()}, source="manual")
    assert "erased on request" in str(refused.value)
    api = Client().post("/api/v1/contacts", {"email": EMAIL}, content_type="application/json",
                        HTTP_AUTHORIZATION=f"Bearer {api_token(make_user('marketer'), ['write'])}")
    assert api.status_code == 409 and api.json()["error"]["details"][0]["path"] == "email"
    from django.core.files.uploadedfile import SimpleUploadedFile

    job = imports.create_job(None, SimpleUploadedFile("list.csv", f"email,name\n{EMAIL},山田\nnew@example.jp,佐藤\n"
                                                      .encode()))
    imports.configure_job(None, job, mapping={"email": "email", "name": "full_name"})
    job = imports.run_now(job)
    assert job.created_count == 1 and job.error_count == 1
    rows, _total = imports.error_rows(job)
    assert "erased on request" in rows[0]["message"]
    assert not Contact.objects.filter(email=EMAIL).exists()
    # The person's own sign-up through a form brings them back, and lifts the block.
    services.create_contact(None, {"email": EMAIL}, source="form")
    assert not ErasedAddress.objects.exists()


def test_admin_can_lift_an_erasure_block(person, logged_in):
    erasure.erase_contact(person)
    page = logged_in.post("/settings/privacy/", {"action": "erased", "e-email": EMAIL})
    assert "Erased on request on" in page.content.decode()
    logged_in.post("/settings/privacy/", {"action": "erased", "e-email": EMAIL, "unblock": "1"})
    assert not ErasedAddress.objects.exists()
    assert AuditLog.objects.filter(action="unblock_erased").exists()


def test_retention_erases_inactive_contacts_and_ages_out_events(person):
    keep = services.create_contact(None, {"email": "active@example.jp"})
    config = PrivacySettings.current()
    config.inactive_months, config.inactive_events = 24, "anonymise"
    config.event_months, config.old_events = 12, "delete"
    config.save()
    later = timezone.now() + timezone.timedelta(days=800)
    with time_machine.travel(later - timezone.timedelta(days=30)):
        services.update_contact(None, keep, {"job_title": "課長"})  # activity within the window
    with time_machine.travel(later):
        events = Event.objects.count()
        assert events > 0 and retention.preview(config) == {"contacts": 1, "events": events}
        assert retention.run_if_due() == {"contacts": 1, "events": events}
        assert not Contact.objects.filter(pk=person.pk).exists() and Contact.objects.filter(pk=keep.pk).exists()
        assert not Event.objects.filter(occurred_at__lt=later - timezone.timedelta(days=365)).exists()
        assert retention.run_if_due() is None  # once a day, whichever worker claims it
        assert AuditLog.objects.get(action="erase").changes["reason"] == "retention"
    assert not ErasedAddress.objects.exists()  # nobody asked: a retention erasure blocks nothing


def test_settings_page_previews_the_next_run(person, logged_in, make_user):
    response = logged_in.post("/settings/privacy/", {
        "action": "settings", "s-erase_events": "delete", "s-inactive_months": "0", "s-inactive_events": "anonymise",
        "s-event_months": "", "s-old_events": "delete", "s-operator_name": "", "s-contact_info": ""})
    assert response.status_code == 400 and "at least 1 month" in response.content.decode()
    logged_in.post("/settings/privacy/", {
        "action": "settings", "s-erase_events": "delete", "s-inactive_months": "1", "s-inactive_events": "anonymise",
        "s-event_months": "", "s-old_events": "delete", "s-operator_name": "B株式会社",
        "s-contact_info": "privacy@b.jp"})
    assert PrivacySettings.current().erase_events == "delete"
    months_ago = timezone.now() - timezone.timedelta(days=60)
    Contact.objects.filter(pk=person.pk).update(created_at=months_ago, updated_at=months_ago,
                                                last_activity_at=months_ago)
    page = logged_in.get("/settings/privacy/")
    assert page.status_code == 200 and page.context["preview"]["contacts"] == 1
    client = Client()
    client.force_login(make_user("marketer"))
    assert client.get("/settings/privacy/").status_code == 403
    assert client.get(f"/contacts/{person.pk}/erase/").status_code == 403
    assert client.get(f"/contacts/{person.pk}/export.json").status_code == 200
    detail = client.get(f"/contacts/{person.pk}/").content.decode()
    assert "data-export" in detail and "data-erase" not in detail


def test_ip_addresses_are_anonymised_before_anything_is_stored(db, settings):
    """With the setting on, the full address is not in the inbox, the event, its context, the
    session, or an email click."""
    TrackingSettings.objects.update_or_create(pk=1, defaults={"anonymize_ip": True})
    result = ingest.ingest([{"type": "page", "anonymousId": "b-ip", "context": {"ip": "198.51.100.123"},
                             "properties": {"url": "https://s.example/", "path": "/"}}],
                           ingest.RequestInfo(ip="203.0.113.200", source="site"))
    assert not result.rejected
    assert "198.51.100.123" not in IncomingEvent.objects.get().payload
    processing.drain()
    event = Event.objects.get()
    assert event.ip == "198.51.100.0" and event.context["ip"] == "198.51.100.0"
    assert Session.objects.get().ip == "198.51.100.0"
    from kizuna.events.http import IngestionApp, cache

    settings.KIZUNA_INGEST_GROUP_COMMIT = False  # stored in this thread, inside the test's transaction
    cache.clear()
    info = {}
    from kizuna.events.models import WriteKey

    key = WriteKey.objects.create(name="web")
    body = json.dumps({"type": "page", "anonymousId": "b2", "writeKey": key.key}).encode()
    import io

    environ = {"PATH_INFO": "/v1/page", "REQUEST_METHOD": "POST", "REMOTE_ADDR": "2001:db8:1234:5678::9",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    IngestionApp(None)(environ, lambda status, headers: info.update(status=status))
    assert info["status"].startswith("200")
    assert "2001:db8:1234:5678::9" not in IncomingEvent.objects.get().payload


def test_every_model_with_personal_data_belongs_to_a_provider():
    """A new app's model pointing at contacts fails here until its provider is in
    settings.KIZUNA_PERSONAL_DATA (see docs/decisions/0019-personal-data-and-security.md)."""
    covered = {m for p in providers() for m in p.models}
    contact = apps.get_model("contacts", "Contact")
    missing = []
    for model in apps.get_models():
        label = model._meta.label
        if any(f.concrete and getattr(f, "related_model", None) is contact for f in model._meta.get_fields()) \
                and label not in covered:
            missing.append(label)
    assert missing == []
    for provider in providers():
        for label in provider.models:
            apps.get_model(label)  # a typo would hide a model


def test_public_tracker_page_in_both_languages(db, settings):
    TrackingSettings.objects.update_or_create(pk=1, defaults={"consent_required": True, "anonymize_ip": True})
    PrivacySettings.objects.update_or_create(pk=1, defaults={"operator_name": "B株式会社", "event_months": 13})
    client = Client()
    ja = client.get("/privacy/tracking?lang=ja")
    en = client.get("/privacy/tracking?lang=en").content.decode()
    assert ja.status_code == 200
    for text in ("_kz_aid", "_kz_uid", "_kz_consent", "B株式会社", f"{settings.BASE_URL}/v1/batch", "13"):
        assert text in en, text
    assert "Information sent by this website" in en and "shortened" in en
    assert 'lang="ja"' in ja.content.decode()
    assert client.get("/privacy/tracking", HTTP_ACCEPT_LANGUAGE="ja").context["lang"] == "ja"


def test_api_erasure_needs_an_admins_write_key(person, make_user, api_token):
    client = Client()
    url = f"/api/v1/contacts/{person.pk}/erase"
    for role, scopes in [("marketer", ["read", "write"]), ("admin", ["read"])]:
        key = api_token(make_user(role, username=f"k-{role}"), scopes)
        assert client.post(url, {}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 403
    assert Contact.objects.filter(pk=person.pk).exists()
    key = api_token(make_user("admin", username="k-admin-w"), ["write"])
    bad = client.post(url, {"events": "shred"}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["path"] == "events"
    done = client.post(url, {"events": "delete"}, content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {key}")
    assert done.status_code == 200 and done.json()["email_sha256"] == email_hash(EMAIL)
    assert done.json()["counts"]["events"]["events_deleted"] >= 3
    assert not Contact.objects.filter(pk=person.pk).exists()
    assert AuditLog.objects.get(action="erase").actor_label.endswith("(API key k-admin-w-key)")


def test_erasure_reaches_downloads_and_landing_visits(person):
    """Apps added after the privacy registry plug in their own providers; their rows follow the plan."""
    from kizuna.assets.models import Asset, Download
    from kizuna.landing.models import LandingPage, LandingVisit

    asset = Asset.objects.create(name="MA入門ガイド", file_name="guide.pdf", storage_name="0" * 32, size=10,
                                 file_type="pdf", sha256="0" * 64)
    Download.objects.create(asset=asset, contact=person, anonymous_id="browser-1", via="link",
                            ip="203.0.113.77", user_agent="Mozilla/5.0")
    page = LandingPage.objects.create(name="lp", slug="lp", title="LP")
    LandingVisit.objects.create(page=page, variant="A", anonymous_id="browser-1", contact=person, views=2,
                                first_viewed_at=timezone.now(), last_viewed_at=timezone.now())
    from kizuna.privacy.export import export_contact

    exported = json.dumps(export_contact(person), ensure_ascii=False, default=str)
    assert "MA入門ガイド" in exported and '"views": 2' in exported
    erasure.erase_contact(person, events="anonymise")
    download, visit = Download.objects.get(), LandingVisit.objects.get()
    assert (download.contact_id, download.anonymous_id, download.ip, download.user_agent) == (None, "", None, "")
    assert visit.contact_id is None and visit.anonymous_id.startswith("erased-") and visit.views == 2
