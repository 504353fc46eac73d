"""The public form endpoints under attack: bots, floods, throw-away addresses, forged and expired
tokens, other sites, script in every field, CSRF on the form pages, open redirects."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client, override_settings
from django.utils import timezone, translation

from kizuna.capture import definition as definitions
from kizuna.capture import processing, public_views, tokens
from kizuna.capture.models import Form, FormCounter, Submission
from kizuna.contacts.models import SubscriptionTopic
from kizuna.events.models import WriteKey
from kizuna.handoff import delivery
from kizuna.handoff.models import Delivery
from kizuna.messaging.models import CapturedMail
from tests.formhelp import definition, good, make_form, post

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _commit_in_the_request():
    """Writes in the request's own transaction: the test database is not visible to the group
    committer's thread (the grouped path is exercised by the browser test and test_group_commit)."""
    from kizuna.events.http import cache

    cache.clear()  # tracking settings another test changed (anonymised addresses) are read again
    with override_settings(KIZUNA_INGEST_GROUP_COMMIT=False):
        yield

XSS = '<script>alert("kz")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def form(db):
    SubscriptionTopic.objects.create(key="newsletter", name="メールマガジン")
    return make_form()


def rejected(form: Form, reason: str) -> int:
    return sum(FormCounter.objects.filter(form=form, kind=reason).values_list("count", flat=True))


def test_honeypot_looks_like_success_to_the_bot_and_keeps_nothing(client, form):
    response = post(client, form, good(website_url="http://spam.example/"), json=True)
    assert response.status_code == 200 and response.json()["ok"] is True
    html = post(client, form, good(website_url="buy now"))
    assert html.status_code == 303
    assert not Submission.objects.exists() and rejected(form, "honeypot") == 2


def test_too_fast_is_refused_with_the_values_kept(client, form):
    response = post(client, form, good(), seconds=1)
    assert response.status_code == 400 and 'value="丸山精機株式会社"' in response.content.decode()
    assert post(client, form, good(), seconds=1, json=True).json()["error"]["code"] == "too_fast"
    assert not Submission.objects.exists() and rejected(form, "too_fast") == 2


@override_settings(KIZUNA_FORM_RATE_PER_MINUTE=2)
def test_rate_limit_per_ip_answers_429(client, form):
    assert post(client, form, good(email="a@example.jp"), json=True).status_code == 200
    assert post(client, form, good(email="b@example.jp"), json=True).status_code == 200
    third = post(client, form, good(email="c@example.jp"), json=True)
    assert third.status_code == 429 and third["Retry-After"] == "30"
    assert third.json()["error"]["code"] == "rate_limited"
    assert post(client, form, good(email="c@example.jp"), ip="203.0.113.99", json=True).status_code == 200
    # IPv6: one /64 is one household or office.
    assert post(client, form, good(email="d@example.jp"), ip="2001:db8:1:2::10", json=True).status_code == 200
    assert post(client, form, good(email="e@example.jp"), ip="2001:db8:1:2::11", json=True).status_code == 200
    assert post(client, form, good(email="f@example.jp"), ip="2001:db8:1:2:ffff::1", json=True).status_code == 429
    assert Submission.objects.count() == 5 and rejected(form, "rate_limited") == 2
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        assert post(client, form, good(email="g@example.jp"), json=True).status_code == 200


@override_settings(KIZUNA_FORM_RATE_PER_MINUTE=2)
def test_group_commit_stores_a_group_in_one_transaction_and_refuses_past_the_limit(form):
    from kizuna.capture import writes

    group = [writes.Write(form.pk, ip="203.0.113.50", submission=Submission(form=form, email=f"g{i}@example.jp"))
             for i in range(3)] + [writes.Write(form.pk, counts=["view"]), writes.Write(form.pk, counts=["honeypot"])]
    writes.store(group)
    assert [w.allowed for w in group] == [True, True, False, True, True]
    assert sorted(Submission.objects.values_list("email", flat=True)) == ["g0@example.jp", "g1@example.jp"]
    assert group[0].submission.pk is not None
    assert (rejected(form, "rate_limited"), rejected(form, "view"), rejected(form, "honeypot")) == (1, 1, 1)


def test_addresses_are_shortened_before_anything_is_stored_when_tracking_says_so(client, form):
    from kizuna.events.http import cache
    from kizuna.events.models import TrackingSettings
    from kizuna.messaging.models import TokenBucket

    TrackingSettings.objects.update_or_create(pk=1, defaults={"anonymize_ip": True})
    cache.clear()
    try:
        post(client, form, good(), ip="203.0.113.77")
    finally:
        cache.clear()
    assert Submission.objects.get().ip == "203.0.113.0"
    assert list(TokenBucket.objects.values_list("name", flat=True)) == ["form-ip:203.0.113.0"]


def test_disposable_addresses_are_refused_when_the_form_says_so(client, form):
    response = post(client, form, good(email="someone@mailinator.com"), json=True)
    assert response.status_code == 400 and set(response.json()["errors"]) == {"email"}
    assert post(client, form, good(email="x@sub.guerrillamail.com"), json=True).status_code == 400
    assert rejected(form, "disposable") == 2 and not Submission.objects.exists()
    form.definition["spam"]["block_disposable"] = False
    form.save()
    assert post(client, form, good(email="someone@mailinator.com"), json=True).status_code == 200


def test_forged_altered_foreign_and_expired_tokens_get_a_clear_400(client, form):
    other = make_form(slug="other", name="別のフォーム")
    real = tokens.issue(form, now=timezone.now() - timedelta(seconds=10))
    for token in ("", "nonsense", real[:-2] + ("AA" if not real.endswith("AA") else "BB"),
                  tokens.issue(other, now=timezone.now() - timedelta(seconds=10))):
        response = post(client, form, good(), token=token, json=True)
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_token", token
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        expired = post(client, form, good(), token=real, json=True)
        page = post(client, form, good(), token=real)
    assert expired.status_code == 400 and expired.json()["error"]["code"] == "expired"
    assert expired.json()["token"]  # a fresh token: the visitor sends again without reloading
    assert page.status_code == 400 and 'value="丸山精機株式会社"' in page.content.decode()
    assert not Submission.objects.exists() and rejected(form, "bad_token") == 6


def test_plain_html_code_works_until_it_is_replaced(client, form, make_user):
    client.force_login(make_user("admin", username="boss"))
    page = client.get(f"/forms/{form.pk}/").content.decode()
    plain = re.search(r'id="code-html">(.*?)</pre>', page, re.S).group(1)
    token = re.search(r'name=&quot;kz_token&quot; value=&quot;([^&]+)&quot;', plain).group(1)
    # A static page: no fill time to measure, so a post at once is fine.
    assert post(client, form, good(email="a@example.jp"), token=token, json=True).status_code == 200
    client.post(f"/forms/{form.pk}/plain-html/replace")
    response = post(client, form, good(email="b@example.jp"), token=token, json=True)
    assert response.status_code == 400 and response.json()["error"]["code"] == "expired"


def test_cors_headers_for_allowed_and_refused_sites(client, form):
    # No allowed sites anywhere: any site may embed the form.
    ok = post(client, form, good(), json=True, HTTP_ORIGIN="https://anywhere.example")
    assert ok["Access-Control-Allow-Origin"] == "https://anywhere.example" and "Origin" in ok["Vary"]
    # The tracking settings' domains are the default list.
    WriteKey.objects.create(name="Site", allowed_domains="www.example.co.jp\n*.example.jp")
    allowed = post(client, form, good(email="b@example.jp"), json=True, HTTP_ORIGIN="https://www.example.co.jp")
    assert allowed.status_code == 200 and allowed["Access-Control-Allow-Origin"] == "https://www.example.co.jp"
    assert post(client, form, good(email="c@example.jp"), json=True,
                HTTP_ORIGIN="https://shop.example.jp").status_code == 200
    refused = post(client, form, good(email="d@example.jp"), json=True, HTTP_ORIGIN="https://evil.example")
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused
    assert refused.json()["error"]["code"] == "origin"
    assert post(client, form, good(email="d@example.jp"), HTTP_ORIGIN="null").status_code == 403
    # Kizuna's own pages always may; the form's own list replaces the default.
    assert post(client, form, good(email="e@example.jp"), HTTP_ORIGIN="http://127.0.0.1:8000").status_code == 303
    form.definition["allowed_origins"] = ["lp.example.net"]
    form.save()
    assert post(client, form, good(email="f@example.jp"), json=True,
                HTTP_ORIGIN="https://www.example.co.jp").status_code == 403
    preflight = client.options(f"/f/{form.slug}/submit", HTTP_ORIGIN="https://lp.example.net")
    assert preflight.status_code == 204 and "POST" in preflight["Access-Control-Allow-Methods"]
    assert preflight["Access-Control-Allow-Origin"] == "https://lp.example.net"
    embed_ok = client.get(f"/f/{form.slug}/embed?page=https://lp.example.net/a&aid=x1",
                          HTTP_ORIGIN="https://lp.example.net")
    assert embed_ok.status_code == 200 and 'value="x1"' in embed_ok.json()["html"]
    assert client.get(f"/f/{form.slug}/embed", HTTP_ORIGIN="https://evil.example").status_code == 403
    assert Submission.objects.count() == 4 and rejected(form, "origin") == 3


def test_script_in_every_field_is_escaped_in_pages_exports_and_mails(client, form, make_user):
    owner = make_user("sales", username="sato", email="sato@kizuna.example")
    form.definition["actions"] = [{"type": "alert_owner"}]
    form.save()
    from kizuna.contacts.models import Company

    Company.objects.create(name="例", domain="example.co.jp", owner=owner)
    evil = good(email="xss@example.co.jp", sei=XSS[:90], mei=XSS[:90], company=XSS, tel="03-1234-5678",
                interest="生産管理", message=f"=HYPERLINK(\"http://evil\")\n{XSS}",
                kz_page="https://www.example.co.jp/?q=<script>alert(2)</script>&ref=dx%0D%0ABcc:%20x",
                kz_ref=f"https://r.example/{XSS}",
                kz_aid="aid-xss")
    assert post(client, form, evil).status_code == 303
    # Shown again after an error, what was typed is escaped too.
    again = post(client, form, {**evil, "email": "bad"}).content.decode()
    assert XSS not in again and "&lt;script&gt;alert(&quot;kz&quot;)" in again
    processing.process_due()
    submission = Submission.objects.get()
    assert submission.status == "processed", submission.error
    assert submission.values["ref_code"] == "dx  Bcc: x"  # a hidden value from the page address: one line
    client.force_login(make_user("admin", username="boss"))
    for url in ("/forms/", f"/forms/{form.pk}/", f"/contacts/{submission.contact_id}/"):
        html = client.get(url).content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, url
    detail = client.get(f"/forms/{form.pk}/").content.decode()
    assert "&lt;script&gt;alert(&quot;kz&quot;)&lt;/script&gt;" in detail
    export = b"".join(client.get(f"/forms/{form.pk}/submissions.csv").streaming_content).decode()
    assert "'=HYPERLINK" in export  # a spreadsheet shows it as text, never runs it
    delivery.deliver_due()
    [alert] = Delivery.objects.filter(event="form.submitted")
    assert alert.status == "sent", alert.last_error
    raw = CapturedMail.objects.get(envelope_to="sato@kizuna.example").raw.decode("utf-8", "replace")
    import email as email_lib
    from email import policy

    mail = email_lib.message_from_string(raw, policy=policy.default)
    html = mail.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_admin_form_pages_need_csrf_but_the_public_endpoint_uses_its_token(form, make_user):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(make_user("admin", username="boss"))
    assert strict.post("/forms/new/", {"name": "x", "slug": "x", "definition_json": "{}"}).status_code == 403
    assert strict.post(f"/forms/{form.pk}/plain-html/replace").status_code == 403
    assert strict.post("/forms/confirmation-template", {"language": "ja"}).status_code == 403
    token = tokens.issue(form, now=timezone.now() - timedelta(seconds=10))
    response = strict.post(f"/f/{form.slug}/submit", {**good(), "kz_token": token}, REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 303 and Submission.objects.count() == 1


def test_roles_viewers_see_forms_but_cannot_change_them(client, form, make_user):
    client.force_login(make_user("viewer", username="v"))
    assert client.get("/forms/").status_code == 200 and client.get(f"/forms/{form.pk}/").status_code == 200
    assert client.get(f"/forms/{form.pk}/edit/").status_code == 403
    assert client.get(f"/forms/{form.pk}/submissions.csv").status_code == 403
    assert client.post(f"/forms/{form.pk}/plain-html/replace").status_code == 403


@pytest.mark.parametrize("target", ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,x", "//evil.example/",
                                    "/relative", "https://user:pw@evil.example/", " https://ok.example/",
                                    "https://ok.example/\nLocation: x", "ftp://files.example/"])
def test_unsafe_thank_you_addresses_are_refused(form, target):
    with pytest.raises(definitions.DefinitionError) as caught:
        definitions.check(definition(thank_you={"redirect": target}))
    assert caught.value.errors[0][0] == "thank_you.redirect"


def test_redirect_goes_only_to_the_forms_own_address(client, form):
    form.definition["thank_you"] = {"redirect": "https://www.example.co.jp/thanks"}
    form.save()
    response = post(client, form, good(next="https://evil.example/", redirect="https://evil.example/",
                                       kz_redirect="javascript:alert(1)"))
    assert response.status_code == 303 and response["Location"] == "https://www.example.co.jp/thanks"
    assert post(client, form, good(email="j@example.jp"), json=True).json()["redirect"] == \
        "https://www.example.co.jp/thanks"
    page = client.get(f"/f/{form.slug}")
    assert "form-action 'self' http://127.0.0.1:8000 https://www.example.co.jp" in page["Content-Security-Policy"]
    # A definition changed behind the editor's back is still never followed.
    Form.objects.filter(pk=form.pk).update(definition={**form.definition, "thank_you": {"redirect": "javascript:x"}})
    public_views.recent.clear()  # an update() behind the models' back: forget the form at once
    response = post(client, Form.objects.get(pk=form.pk), good(email="k@example.jp"))
    assert response["Location"] == f"/f/{form.slug}/thanks"


def test_a_closed_form_says_so_and_refuses_posts(client, form):
    form.active = False
    form.save()
    page = client.get(f"/f/{form.slug}")
    with translation.override("ja"):
        closed = translation.gettext("This form is closed and no longer accepts submissions.")
    assert page.status_code == 410 and closed in page.content.decode()
    assert post(client, form, good(), json=True).status_code == 410
    assert not Submission.objects.exists()
