"""Forms: the definition check, validation with good values kept, the contact and its consent
with text and version, progressive profiling, every action, double opt-in through a real SMTP
server, and the visitor's anonymous history joining the contact."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
import time_machine
from django.test import override_settings
from django.utils import timezone, translation

from kizuna.capture import definition as definitions
from kizuna.capture import processing, services
from kizuna.capture.actions import asset_support
from kizuna.capture.models import Form, FormCounter, Submission
from kizuna.contacts.models import (
    Company,
    ConsentRecord,
    ConsentStatus,
    Contact,
    ContactList,
    CustomField,
    SubscriptionTopic,
)
from kizuna.events import ingest
from kizuna.events import processing as events
from kizuna.events.models import Event, Identity, IncomingEvent, PageView
from tests.formhelp import CHROME, PAGE, definition, good, make_form, post

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _commit_in_the_request():
    """Writes in the request's own transaction: the test database is not visible to the group
    committer's thread (the grouped path is exercised by the browser test and test_group_commit)."""
    from kizuna.events.http import cache

    cache.clear()  # tracking settings another test changed (anonymised addresses) are read again
    with override_settings(KIZUNA_INGEST_GROUP_COMMIT=False):
        yield


@pytest.fixture
def topic(db):
    return SubscriptionTopic.objects.create(key="newsletter", name="メールマガジン")


@pytest.fixture
def form(topic):
    return make_form()


def ja(message: str) -> str:
    """The Japanese a visitor of a Japanese form reads (English until the catalogue has it)."""
    with translation.override("ja"):
        return translation.gettext(message)


def _inbox_events() -> list[dict]:
    import orjson

    return [orjson.loads(p) for p in IncomingEvent.objects.order_by("id").values_list("payload", flat=True)]


# --- the definition ------------------------------------------------------------------------------

def test_definition_faults_are_named_by_path(topic):
    ContactList.objects.create(name="セミナー参加者")
    bad = definition(
        fields=[
            {"name": "email", "type": "email", "label": "Email", "maps_to": "email"},  # not required
            {"name": "Bad Name", "type": "text", "label": "x"},
            {"name": "pref", "type": "text", "label": "都道府県", "maps_to": "prefecture"},
            {"name": "size", "type": "select", "label": "規模", "options": ["大きい"], "maps_to": "company_size"},
            {"name": "x", "type": "slider", "label": "?"},
            {"name": "y", "type": "text", "label": "y", "maps_to": "owner_id"},
            {"name": "agree", "type": "consent", "text": "同意", "topics": ["nope"]},
        ],
        thank_you={"redirect": "javascript:alert(1)"},
        actions=[{"type": "add_to_list", "list": 999}, {"type": "score", "model": 1, "points": 0},
                 {"type": "explode"}],
        spam={"min_seconds": 600}, allowed_origins=["https://ok.example.jp", "not a site"],
    )
    with pytest.raises(definitions.DefinitionError) as caught:
        definitions.check(bad)
    paths = {path for path, _m in caught.value.errors}
    assert {"fields[0].required", "fields[1].name", "fields[2].type", "fields[3].options", "fields[4].type",
            "fields[5].maps_to", "fields[6].version", "fields[6].topics[0]", "thank_you.redirect",
            "actions[0].list", "actions[1].model", "actions[1].points", "actions[2].type", "spam.min_seconds",
            "allowed_origins[1]"} <= paths, paths
    assert "allowed_origins[0]" not in paths


def test_changed_consent_words_need_a_new_version(form):
    data = definition()
    data["fields"][-1]["text"] = "メールマガジンとセミナー案内の配信に同意します。"
    with pytest.raises(definitions.DefinitionError) as caught:
        services.save_form(None, form, data)
    assert caught.value.errors == [("fields[10].version", "the consent text changed: give it a new version")]
    data["fields"][-1]["version"] = "2027-01"
    services.save_form(None, form, data)
    assert Form.objects.get(pk=form.pk).definition["fields"][-1]["version"] == "2027-01"


# --- the hosted page, validation ----------------------------------------------------------------

def test_hosted_page_has_the_fields_prefectures_honeypot_token_and_counts_a_view(client, form):
    response = client.get("/f/whitepaper", HTTP_COOKIE="_kz_aid=browser-1")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="kz_token"' in html and 'name="website_url"' in html and 'value="browser-1"' in html
    assert 'name="company"' in html and 'name="pref"' not in html  # an unknown visitor: no profiling
    assert ja("Required") in html and 'href="https://www.example.co.jp/privacy"' in html
    assert FormCounter.objects.get(form=form, kind="view").count == 1
    assert "form-action 'self' http://127.0.0.1:8000" in response["Content-Security-Policy"]


def test_hosted_page_can_load_the_tracker_allowed_by_the_pages_nonce(client, topic):
    from kizuna.events.models import WriteKey

    key = WriteKey.objects.create(name="Forms")
    make_form(slug="tracked", name="計測つき", track_with=key.pk)
    response = client.get("/f/tracked")
    nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
    html = response.content.decode()
    assert f'<script nonce="{nonce}">' in html and f"/kz.js?k={key.key}" in html


def test_prefecture_field_offers_the_47_prefectures_in_japanese(client, topic):
    make_form(slug="seminar", name="セミナー", fields=[
        {"name": "email", "type": "email", "label": "メール", "required": True, "maps_to": "email"},
        {"name": "pref", "type": "prefecture", "label": "都道府県", "required": True, "maps_to": "prefecture"}],
        pool=[])
    html = client.get("/f/seminar").content.decode()
    options = re.findall(r'<option value="(\d\d)"[^>]*>([^<]+)</option>', html)
    assert len(options) == 47
    assert options[0] == ("01", "北海道") and ("13", "東京都") in options and options[-1] == ("47", "沖縄県")


def test_bad_values_get_errors_by_field_and_good_values_are_kept(client, form):
    data = good(email="taro@@example", tel="電話して", employees="たくさん", interest="会計", sei="")
    response = post(client, form, data)
    html = unescape(response.content.decode())
    assert response.status_code == 400
    for name, words in {"email": "Enter a valid email address.",
                        "tel": "Enter a phone number: digits, with hyphens if you like (03-1234-5678).",
                        "employees": "Enter a number.", "interest": "Choose one of the options.",
                        "sei": "This field is required."}.items():
        error = re.search(rf'data-kz-error-for="{name}">([^<]*)<', html).group(1)
        assert error == ja(words), (name, error)
    # The good values are still in the form, ready to send again.
    assert 'value="太郎"' in html and 'value="丸山精機株式会社"' in html and "導入事例を知りたい</textarea>" in html
    assert re.search(r'name="agree" value="on" checked', html)
    assert not Submission.objects.exists()

    response = post(client, form, data, json=True)
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False and body["error"]["code"] == "invalid"
    assert set(body["errors"]) == {"email", "tel", "employees", "interest", "sei"}


def test_the_contact_services_own_rules_apply_to_form_values(client, topic):
    CustomField.objects.create(key="budget", label="予算", field_type="number")
    make_form(slug="quote", name="見積依頼", fields=[
        {"name": "email", "type": "email", "label": "メール", "required": True, "maps_to": "email"},
        {"name": "sei", "type": "text", "label": "姓", "maps_to": "family_name", "max_length": 500},
        {"name": "budget", "type": "number", "label": "予算", "maps_to": "custom.budget"}], pool=[])
    response = post(client, Form.objects.get(slug="quote"), {"email": "a@example.jp", "sei": "長" * 101,
                                                             "budget": "300"}, json=True)
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"sei"}  # the contact's family name holds 100 characters


# --- a submission becomes a contact --------------------------------------------------------------

def test_submission_is_stored_then_makes_the_contact_with_consent_text_and_version(client, form):
    response = post(client, form, good())
    assert response.status_code == 303 and response["Location"] == "/f/whitepaper/thanks"
    submission = Submission.objects.get()
    assert submission.status == Submission.Status.RECEIVED
    assert (submission.email, submission.ip, submission.user_agent, submission.page_url) == (
        "taro.yamada@maruyama-seiki.co.jp", "203.0.113.7", CHROME, PAGE)
    assert submission.utm == {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "dx2026"}
    assert submission.values["campaign"] == "dx2026" and submission.anonymous_id == "aid-1"
    assert "ありがとうございました。資料をメールでお送りします。" in client.get(response["Location"]).content.decode()

    assert processing.process_due() == 1
    submission.refresh_from_db()
    assert submission.status == Submission.Status.PROCESSED, submission.error
    contact = submission.contact
    assert (contact.family_name, contact.given_name, contact.company_name, contact.phone, contact.source) == (
        "山田", "太郎", "丸山精機株式会社", "03-1234-5678", "form")
    assert contact.company.domain == "maruyama-seiki.co.jp" and contact.company.employees == 250
    record = ConsentRecord.objects.get(contact=contact)
    assert (record.status, record.method, record.text_shown, record.text_version, record.ip) == (
        ConsentStatus.OPTED_IN, "form", "メールマガジンの配信に同意します。", "2026-12", "203.0.113.7")
    [event] = _inbox_events()
    assert (event["type"], event["name"], event["anonymousId"]) == ("track", "Form Submitted", "aid-1")
    assert event["properties"]["form_id"] == form.pk and event["properties"]["form"] == "ホワイトペーパー"
    assert event["url"] == PAGE
    assert processing.process_due() == 0  # applied once


def test_an_existing_contact_takes_new_values_but_its_company_keeps_what_it_knows(client, form):
    company = Company.objects.create(name="丸山精機", domain="maruyama-seiki.co.jp", employees=300)
    contact = Contact.objects.create(email="taro.yamada@maruyama-seiki.co.jp", family_name="山田",
                                     job_title="部長", company=company)
    post(client, form, good(mei="", agree=None, tel="090-1111-2222"))
    processing.process_due()
    contact.refresh_from_db()
    company.refresh_from_db()
    assert (contact.phone, contact.job_title, contact.given_name) == ("090-1111-2222", "部長", "")
    assert company.employees == 300  # one visitor's answer never overwrites the company
    assert not ConsentRecord.objects.filter(contact=contact).exists()  # the box was not ticked


def test_progressive_profiling_asks_the_next_unknown_field_of_a_known_visitor(client, form):
    contact = Contact.objects.create(email="hanako@example.co.jp", family_name="佐藤", company_name="佐藤商事")
    Identity.objects.create(kind="anonymous", value="known-browser", contact=contact, created_at=timezone.now())
    html = client.get("/f/whitepaper", HTTP_COOKIE="_kz_aid=known-browser").content.decode()
    assert 'name="company"' not in html and 'name="pref"' in html and 'name="dept"' not in html
    token = re.search(r'name="kz_token" value="([^"]+)"', html).group(1)
    data = good(email="hanako@example.co.jp", sei="佐藤", company=None, pref="大阪府", kz_aid="known-browser")
    response = post(client, form, data, token=token)  # the token was issued just now: too fast
    assert response.status_code == 400
    assert unescape(ja("That was quick! Please check the form and send it again.")) in unescape(
        response.content.decode())
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        assert post(client, form, data, token=token).status_code == 303
        processing.process_due()
    contact.refresh_from_db()
    assert (contact.prefecture, contact.company_name) == ("27", "佐藤商事")
    # A pool field shown is validated like any other: here it is required by nothing, but a bad value is refused.
    with time_machine.travel(timezone.now() + timedelta(seconds=5)):
        response = post(client, form, {**data, "pref": "ムー大陸"}, token=token, json=True)
    assert response.json()["errors"] == {"pref": ja("Choose a prefecture.")}


# --- actions ---------------------------------------------------------------------------------------

def test_every_action_runs_once_for_the_submission(client, topic, make_user):
    from kizuna.handoff.models import Delivery
    from kizuna.journeys.models import Enrollment
    from kizuna.scoring.models import ContactScore, ScoreEntry
    from kizuna.scoring.setup import ensure_defaults
    from tests.journeyhelp import journey

    owner = make_user("sales", username="sato", email="sato@kizuna.example")
    Company.objects.create(name="丸山精機", domain="maruyama-seiki.co.jp", owner=owner)
    seminar = ContactList.objects.create(name="DXセミナー 2026")
    model = ensure_defaults()
    welcome = journey("ようこそ", {"trigger": {"type": "manual"}, "start": "t",
                                   "nodes": [{"id": "t", "type": "add_tag", "tag": "welcomed"}]})
    form = make_form(actions=[
        {"type": "subscribe", "topics": ["newsletter"], "text": "送信によりお知らせの配信に同意します。",
         "version": "v1"},
        {"type": "add_to_list", "list": seminar.pk}, {"type": "add_tag", "tag": "資料請求"},
        {"type": "score", "model": model.pk, "points": 25}, {"type": "alert_owner", "message": "資料請求がありました"},
        {"type": "enroll", "journey": welcome.pk}])
    html = client.get("/f/whitepaper").content.decode()
    assert "送信によりお知らせの配信に同意します。" in html  # the subscribe action's words are shown
    post(client, form, good(agree=None))
    processing.process_due()
    submission = Submission.objects.get()
    assert submission.status == "processed", submission.error
    contact = submission.contact
    assert list(contact.lists.values_list("name", flat=True)) == ["DXセミナー 2026"]
    assert "資料請求" in contact.tags.values_list("name", flat=True)
    entry = ScoreEntry.objects.get(contact=contact, rule_name__endswith=": ホワイトペーパー")
    assert entry.points == 25 and ContactScore.objects.get(contact=contact, model=model).engagement >= 25
    [alert] = Delivery.objects.filter(event="form.submitted")
    assert alert.email == "sato@kizuna.example" and "資料請求がありました" in alert.payload["text"]
    assert "ご質問: 導入事例を知りたい" in alert.payload["text"]
    contact.refresh_from_db()
    assert contact.owner == owner  # the company's owner took the lead
    assert Enrollment.objects.filter(journey=welcome, contact=contact).count() == 1
    record = ConsentRecord.objects.get(contact=contact)
    assert (record.text_shown, record.text_version) == ("送信によりお知らせの配信に同意します。", "v1")
    assert len(submission.notes) >= 6
    # Processing it again (a crash after commit, a second worker) repeats nothing.
    Submission.objects.filter(pk=submission.pk).update(status="received")
    processing.process_due()
    assert Delivery.objects.filter(event="form.submitted").count() == 1
    assert Enrollment.objects.filter(journey=welcome, contact=contact).count() == 1


@pytest.mark.skipif(asset_support() is None, reason="kizuna.assets is not installed: the deliver-asset action is "
                                                    "not offered")
def test_deliver_asset_action_queues_the_delivery_once_and_waits_for_a_sender(client, topic):
    from kizuna.messaging.models import Message
    from tests import assethelp

    whitepaper = assethelp.asset(title="製造業DX ホワイトペーパー")
    assert "deliver_asset" in services.reference()["actions"]
    form = make_form(actions=[{"type": "deliver_asset", "asset": whitepaper.pk}])
    post(client, form, good())
    processing.process_due()
    submission = Submission.objects.get()
    assert submission.status == "failed" and "sender" in submission.error  # no sender yet: nothing half-done
    assert not Contact.objects.exists()
    assethelp.sender()
    processing.retry(submission)
    processing.process_due()
    submission.refresh_from_db()
    assert submission.status == "processed", submission.error
    [mail] = Message.objects.filter(contact=submission.contact)
    assert mail.kind == "transactional" and mail.extra["asset_delivery"]["asset"] == whitepaper.pk
    Submission.objects.filter(pk=submission.pk).update(status="received")  # applied again: no second mail
    processing.process_due()
    assert Message.objects.filter(contact=submission.contact).count() == 1


def test_a_refused_submission_is_kept_failed_and_can_be_retried(client, form):
    post(client, form, good())
    CustomField.objects.create(key="region_code", label="地域コード", required=True)  # added after the post
    processing.process_due()
    submission = Submission.objects.get()
    assert submission.status == "failed" and "region_code" in submission.error
    CustomField.objects.filter(key="region_code").update(required=False)
    processing.retry(submission)
    processing.process_due()
    submission.refresh_from_db()
    assert submission.status == "processed" and submission.contact is not None


def test_personal_data_export_and_erasure_reach_the_submissions(client, form):
    from kizuna.privacy.erasure import erase_contact
    from kizuna.privacy.export import export_contact

    post(client, form, good())
    processing.process_due()
    contact = Contact.objects.get()
    post(client, form, good(message="二度目"), ip="203.0.113.9")  # not applied yet: no contact on it
    exported = export_contact(contact)["capture"]["submissions"]
    assert [s["values"]["message"] for s in exported] == ["導入事例を知りたい", "二度目"]
    erase_contact(contact)
    kept = list(Submission.objects.order_by("id"))
    assert len(kept) == 2  # the form's counts keep their rows, anonymous
    for s in kept:
        assert (s.contact_id, s.email, s.values, s.mapped, s.ip, s.user_agent, s.anonymous_id) == (
            None, "", {}, {}, None, "", "")
        assert s.page_url == "https://www.example.co.jp/whitepaper" and s.consents[0]["version"] == "2026-12"
        assert "given" not in s.consents[0]
    assert kept[1].status == "failed"  # never applied: it cannot bring the person back
    assert processing.process_due() == 0 and not Contact.objects.exists()


# --- double opt-in ---------------------------------------------------------------------------------

def test_double_opt_in_mail_arrives_and_only_its_link_records_consent(client, topic):
    from kizuna.messaging import outbox, transports
    from kizuna.messaging.models import Sender
    from tests.mailtest import SmtpServer

    Sender.objects.create(name="Marketing", from_name="株式会社キズナ", from_email="news@kizuna.example",
                          organisation="株式会社キズナ", postal_address="東京都千代田区丸の内1-1-1", is_default=True)
    template = services.create_confirmation_template(None, "ja")
    form = make_form(double_opt_in={"template": template.pk})
    post(client, form, good(sei="<b>山田</b>"))
    processing.process_due()
    submission = Submission.objects.get()
    assert submission.status == "awaiting"
    contact = submission.contact
    assert not ConsentRecord.objects.filter(contact=contact).exists()
    assert not IncomingEvent.objects.exists()  # the submission's effects wait for the confirmation

    with SmtpServer() as server:
        outbox.drain(transport=transports.SmtpTransport(transports.SmtpConfig.from_url(server.url)))
    mail = server.handler.parsed()
    assert mail["To"] == "taro.yamada@maruyama-seiki.co.jp"
    assert "ご確認のお願い" in str(mail["Subject"]) and "List-Unsubscribe" not in mail  # transactional
    html = mail.get_body(("html",)).get_content()
    assert "&lt;b&gt;山田&lt;/b&gt;様" in html and "<b>山田" not in html  # what a visitor typed, escaped
    link = re.search(r'href="(http://127\.0\.0\.1:8000/f/whitepaper/confirm/[^"]+)"', html).group(1)
    assert link in mail.get_body(("plain",)).get_content()
    path = link.removeprefix("http://127.0.0.1:8000")

    page = client.get(path)  # a link scanner, or the person: only the button
    assert page.status_code == 200 and ja("Confirm") in page.content.decode()
    assert not ConsentRecord.objects.filter(contact=contact).exists()
    done = client.post(path, REMOTE_ADDR="198.51.100.9")
    assert ja("Thank you: confirmed. Your consent has been recorded.") in done.content.decode()
    record = ConsentRecord.objects.get(contact=contact)
    assert (record.text_shown, record.text_version, record.ip) == (
        "メールマガジンの配信に同意します。", "2026-12", "198.51.100.9")
    assert "confirmed by email" in record.source
    submission.refresh_from_db()
    assert submission.status == "processed" and submission.confirmed_at is not None
    assert ja("You have already confirmed. Thank you.") in client.post(path).content.decode()
    assert ConsentRecord.objects.filter(contact=contact).count() == 1

    with time_machine.travel(timezone.now() + timedelta(days=8)):
        expired = client.get(path)
    assert expired.status_code == 400
    assert ja("This confirmation link has expired. Please fill in the form again.") in expired.content.decode()
    assert client.get(path[:-3] + "xyz").status_code == 400


# --- the visitor's history --------------------------------------------------------------------------

def test_the_visitors_anonymous_page_views_join_the_contact_and_scoring_reads_the_event(client, form):
    from kizuna.scoring.models import EngagementRule, ScoreEntry, ScoringModel

    model = ScoringModel.objects.create(name="資料請求")
    EngagementRule.objects.create(model=model, name="このフォーム", event="Form Submitted", points=40,
                                  conditions=[{"field": "properties.form_id", "op": "equals",
                                               "value": str(form.pk)}])
    earlier = timezone.now() - timedelta(minutes=10)
    ingest.ingest([{"type": "page", "anonymousId": "browser-7", "timestamp": earlier.isoformat(),
                    "properties": {"url": "https://www.example.co.jp/pricing", "path": "/pricing", "title": "料金"}}],
                  ingest.RequestInfo(ip="203.0.113.7", user_agent=CHROME, source="Website"))
    events.drain()
    assert PageView.objects.get().contact_id is None
    post(client, form, good(kz_aid="browser-7"))
    processing.process_due()
    events.drain()
    contact = Contact.objects.get(email="taro.yamada@maruyama-seiki.co.jp")
    assert PageView.objects.get().contact_id == contact.pk
    assert set(Event.objects.filter(contact=contact).values_list("type", "name", "path")) == {
        ("page", "", "/pricing"), ("track", "Form Submitted", "/whitepaper")}
    assert ScoreEntry.objects.get(contact=contact, model=model).points == 40
    detail = client.get(f"/contacts/{contact.pk}/")
    assert detail.status_code == 302  # the contact page is behind the login


# --- the pages -------------------------------------------------------------------------------------

def test_list_detail_export_and_editor(client, form, make_user):
    admin = make_user("admin", username="boss")
    client.force_login(admin)
    client.get("/f/whitepaper")
    client.get("/f/whitepaper")
    post(client, form, good())
    post(client, form, good(email="jiro@example.co.jp"), ip="203.0.113.8")
    html = client.get("/forms/").content.decode()
    assert "ホワイトペーパー" in html and "100.0%" in html and "/forms/" in client.get("/").content.decode()
    detail = client.get(f"/forms/{form.pk}/").content.decode()
    assert "jiro@example.co.jp" in detail and "data-kizuna-form=&quot;whitepaper&quot;" in detail
    assert "/static/kizuna/forms-embed.js" in detail and "website_url" in detail
    export = client.get(f"/forms/{form.pk}/submissions.csv")
    text = b"".join(export.streaming_content).decode("utf-8")
    assert text.startswith("\ufeffID,") and "taro.yamada@maruyama-seiki.co.jp" in text and ",true," in text

    page = client.get("/forms/new/")
    assert page.status_code == 200 and "maps_to" in page.content.decode()
    bad = client.post("/forms/new/", {"name": "問い合わせ", "slug": "contact", "active": "on",
                                      "definition_json": '{"fields": [{"name": "email", "type": "email"}]}'})
    assert bad.status_code == 400 and 'data-path="fields[0].label"' in bad.content.decode()
    broken = client.post("/forms/new/", {"name": "問い合わせ", "slug": "contact", "definition_json": "{"})
    assert "JSON" in broken.content.decode() and broken.status_code == 400
    import json

    saved = client.post("/forms/new/", {"name": "問い合わせ", "slug": "contact", "active": "on",
                                        "definition_json": json.dumps(definitions.starter("ja"))})
    assert saved.status_code == 302 and Form.objects.filter(slug="contact").exists()
