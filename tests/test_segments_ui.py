"""Segment pages: who may see and change what, the builder saving a filter (and showing the path
of a fault), the live count the builder asks the API for (session and CSRF, as the browser does),
the detail page (words, members, growth chart, changes), recompute through the worker, CSV
export of the members, deletion refused while in use, and every visitor-supplied string escaped."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import AuditLog
from kizuna.contacts.models import Contact, ContactList, CustomField, ListMembership, SubscriptionTopic, Tag
from kizuna.events.models import Event
from kizuna.messaging.models import BulkSend, EmailTemplate, Sender, TemplateVersion
from kizuna.scoring.models import ScoringModel
from kizuna.segments import builder, filters, membership, services
from kizuna.segments.describe import Names, describe
from kizuna.segments.models import Membership, Segment, SegmentChange, SegmentCount

pytestmark = pytest.mark.django_db
XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
MAKERS = {"field": "industry", "op": "in", "value": ["manufacturing"]}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db):
    makers = [Contact.objects.create(email=f"m{i}@example.jp", family_name=f"製造{i}", industry="manufacturing")
              for i in range(3)]
    others = [Contact.objects.create(email=f"o{i}@example.jp", family_name=f"小売{i}", industry="retail")
              for i in range(2)]
    return {"makers": makers, "others": others}


def _segment(name: str, tree: dict, *, compute: bool = True) -> Segment:
    segment = services.save(None, None, name=name, tree=tree)
    if compute:
        membership.recompute(segment)
        segment.refresh_from_db()
    return segment


# --- access -----------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["admin", "marketer", "sales", "viewer"])
def test_everyone_sees_segments_only_writers_change_them(client, make_user, world, role):
    segment = _segment("製造業", MAKERS)
    client.force_login(make_user(role))
    writer = role in ("admin", "marketer")
    assert client.get(reverse("segments:list")).status_code == 200
    detail = client.get(reverse("segments:detail", args=[segment.pk]))
    assert detail.status_code == 200
    page = detail.content.decode()
    assert (reverse("segments:edit", args=[segment.pk]) in page) == writer
    assert (reverse("segments:export", args=[segment.pk]) in page) == writer
    assert client.get(reverse("segments:create")).status_code == (200 if writer else 403)
    assert client.get(reverse("segments:edit", args=[segment.pk])).status_code == (200 if writer else 403)
    assert client.get(reverse("segments:export", args=[segment.pk])).status_code == (200 if writer else 403)
    created = client.post(reverse("segments:create"), {"name": f"by {role}", "filter": json.dumps(MAKERS)})
    assert created.status_code == (302 if writer else 403)
    assert client.post(reverse("segments:recompute", args=[segment.pk])).status_code == (302 if writer else 403)
    assert client.post(reverse("segments:delete", args=[segment.pk])).status_code == (302 if writer else 403)
    assert Segment.objects.filter(pk=segment.pk).exists() != writer


def test_navigation_links_the_segments_page(logged_in):
    html = logged_in.get("/").content.decode()
    assert f'href="{reverse("segments:list")}"' in html
    active = logged_in.get(reverse("segments:list")).content.decode()
    assert re.search(rf'<a href="{reverse("segments:list")}" class="active"', active)


# --- the builder ------------------------------------------------------------------------------

def test_the_builder_saves_and_the_worker_computes_the_members(logged_in, world, admin_user):
    page = logged_in.get(reverse("segments:create")).content.decode()
    assert "data-segment-builder" in page and 'src="/static/kizuna/segments.js"' in page
    assert "<script>" not in page and " style=" not in page  # the CSP allows neither
    tree = {"all": [MAKERS, {"not": {"field": "email", "op": "ends_with", "value": "m0@example.jp"}}]}
    response = logged_in.post(reverse("segments:create"), {"name": "製造業 (m0 以外)", "description": "展示会向け",
                                                           "filter": json.dumps(tree)})
    segment = Segment.objects.get(name="製造業 (m0 以外)")
    assert response.status_code == 302 and response["Location"] == reverse("segments:detail", args=[segment.pk])
    assert segment.filter == filters.check(tree, filters.Context.load()) and segment.created_by == admin_user
    assert segment.needs_full
    assert AuditLog.objects.filter(action="create", object_type="segments.segment", object_id=str(segment.pk)).exists()

    detail = logged_in.get(reverse("segments:detail", args=[segment.pk])).content.decode()
    progress_url = reverse("segments:progress", args=[segment.pk])
    assert f'data-progress-url="{progress_url}"' in detail
    assert logged_in.get(progress_url).json()["done"] is False

    membership.refresh_due()  # what the worker's segment loop does
    state = logged_in.get(progress_url).json()
    assert state["done"] is True and state["members"] == 2
    detail = logged_in.get(reverse("segments:detail", args=[segment.pk])).content.decode()
    assert "data-progress-url" not in detail
    for contact in world["makers"][1:]:
        assert f'href="/contacts/{contact.pk}/"' in detail
    assert f'href="/contacts/{world["makers"][0].pk}/"' not in detail
    assert "Industry is any of Manufacturing" in detail and "None of these" not in detail
    assert "Not:" in detail and "Email ends with" in detail
    assert detail.count('class="badge ok">Entered') == 2  # the recent changes

    edit = logged_in.get(reverse("segments:edit", args=[segment.pk])).content.decode()
    assert "製造業 (m0 以外)" in edit and "ends_with" in edit  # the JSON of the stored filter
    response = logged_in.post(reverse("segments:edit", args=[segment.pk]), {
        "name": "製造業", "description": "", "filter": json.dumps(MAKERS)})
    assert response.status_code == 302
    segment.refresh_from_db()
    assert segment.name == "製造業" and segment.filter == MAKERS and segment.needs_full


@pytest.mark.parametrize("raw,path,message", [
    (json.dumps({"all": [{"field": "industry", "op": "in", "value": ["steel-mills"]}]}), "all[0].value",
     "not a possible value: steel-mills"),
    (json.dumps({"any": [{"event": "page", "where": [{"field": "cookie", "op": "equals", "value": "x"}]}]}),
     "any[0].where[0].field", "must be path, url, title, referrer or properties.&lt;name&gt;"),
    (json.dumps({"not": {"segment": 99999}}), "not.segment", "no segment with id 99999"),
    (json.dumps([]), "filter", "must be an object"),
])
def test_a_bad_filter_is_shown_with_its_path_and_nothing_is_saved(logged_in, world, raw, path, message):
    response = logged_in.post(reverse("segments:create"), {"name": "Bad", "filter": raw})
    assert response.status_code == 400
    page = response.content.decode()
    assert f'data-filter-error data-path="{path}"' in page and f'data-error-path="{path}"' in page
    assert f"The filter is not valid at {path}:" in page and message in page
    assert not Segment.objects.filter(name="Bad").exists()


def test_json_that_does_not_parse_is_reported_and_kept(logged_in, world):
    response = logged_in.post(reverse("segments:create"), {"name": "Typo", "filter": '{"all": [}'})
    page = response.content.decode()
    assert response.status_code == 400 and "The filter is not valid JSON" in page and "line 1" in page
    assert "{&quot;all&quot;: [}" in page  # kept for fixing
    assert not Segment.objects.filter(name="Typo").exists()


def test_a_name_in_use_is_refused_on_its_field(logged_in, world):
    _segment("製造業", MAKERS, compute=False)
    response = logged_in.post(reverse("segments:create"), {"name": " 製造業 ", "filter": json.dumps(MAKERS)})
    assert response.status_code == 400 and "Another segment is already called 製造業." in response.content.decode()
    assert Segment.objects.count() == 1


def test_the_schema_offers_every_field_and_operator_the_filter_language_accepts(db):
    ScoringModel.objects.create(name="Default")
    SubscriptionTopic.objects.create(key="news", name="ニュース")
    CustomField.objects.create(key="plan", label="プラン", field_type="choice", choices=["basic", "pro"])
    CustomField.objects.create(key="tools", label="ツール", field_type="multi_choice", choices=["sfa", "ma"])
    ContactList.objects.create(name="Seminar")
    Tag.objects.create(name=XSS)
    schema = builder.schema(Names.load())
    offered = {f["key"]: f for f in schema["fields"]}
    expected = (set(filters.CONTACT_FIELDS) | set(filters.COMPANY_FIELDS)
                | {"custom.plan", "custom.tools", "tag", "list", "score.engagement", "score.fit", "score.grade",
                   "consent.news"})
    assert set(offered) == expected
    ctx = filters.Context.load()
    for key, spec in offered.items():
        kind, choices = filters.field_kind(key, ctx, "")
        assert spec["kind"] == kind
        assert set(schema["ops"][kind]) == (filters.SPECIAL_OPS.get(kind) or filters.OPS[kind])
        if choices and kind != "consent":
            assert {c[0] for c in spec["choices"]} == choices, key
    assert set(schema["eventOps"]) == filters.EVENT_OPS and {k for k, _l in schema["countOps"]} == filters.COUNT_OPS
    assert {k for k, _l in schema["emailActions"]} == filters.EMAIL_ACTIONS
    assert {k for k, _l in schema["eventFields"]} == filters.EVENT_FIELDS
    assert offered["custom.tools"]["kind"] == "multi" and offered["consent.news"]["label"] == "Consent: ニュース"


# --- the live count ---------------------------------------------------------------------------

def test_the_live_count_answers_the_browser_session_with_csrf(admin_user, world):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    page = browser.get(reverse("segments:create")).content.decode()
    url = re.search(r'data-count-url="([^"]+)"', page).group(1)
    assert url == "/api/v1/segments/count"
    token = browser.cookies["csrftoken"].value

    def post(body, **headers):
        return browser.post(url, json.dumps(body), content_type="application/json", **headers)

    refused = post({"filter": MAKERS})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    answer = post({"filter": MAKERS}, HTTP_X_CSRFTOKEN=token)
    assert answer.status_code == 200 and answer.json()["count"] == 3 and answer.json()["ms"] >= 0
    everyone = post({"filter": {"all": []}}, HTTP_X_CSRFTOKEN=token).json()
    assert everyone["count"] == 5
    bad = post({"filter": {"all": [{"field": "job_title", "op": "resembles", "value": "x"}]}}, HTTP_X_CSRFTOKEN=token)
    assert bad.status_code == 422
    detail = bad.json()["error"]["details"][0]
    assert detail["path"] == "filter.all[0].op" and detail["message"].startswith("must be one of contains")
    assert not Segment.objects.exists()  # counting saves nothing


def test_the_live_count_reports_a_filter_that_would_refer_back_to_the_segment(logged_in, world):
    a = _segment("A", MAKERS, compute=False)
    b = _segment("B", {"segment": a.pk}, compute=False)
    response = logged_in.post("/api/v1/segments/count", {"filter": {"segment": b.pk}, "segment": a.pk},
                              content_type="application/json")
    assert response.status_code == 422
    assert response.json()["error"]["details"][0] == {"path": "filter.segment",
                                                      "message": f"refers to itself through #{b.pk} → #{a.pk}"}


# --- detail page: words, growth, recompute, export, delete ------------------------------------

def test_the_filter_is_described_in_words(db):
    sender = Sender.objects.create(name="M", from_name="M", from_email="m@k.example", organisation="K",
                                   postal_address="東京都")
    template = EmailTemplate.objects.create(name="月刊ニュース", sender=sender)
    seminar = ContactList.objects.create(name="セミナー")
    model = ScoringModel.objects.create(name="Default")
    other = _segment("見込み", MAKERS, compute=False)
    tree = filters.check({"all": [
        {"field": "prefecture", "op": "in", "value": ["13", "27"]},
        {"field": "company.employees", "op": "gte", "value": 300},
        {"field": "tag", "op": "has_not", "value": "競合"},
        {"field": "list", "op": "in", "value": seminar.pk},
        {"field": "score.grade", "model": model.pk, "op": "at_least", "value": "B"},
        {"field": "created_at", "op": "in_last_days", "value": 90},
        {"any": [
            {"event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}],
             "count": {"op": "gte", "value": 2}, "within_days": 30},
            {"event": "Form Submitted", "where": [{"field": "properties.form", "op": "equals", "value": "資料請求"}]},
            {"email": "clicked", "template": template.pk, "within_days": 14},
        ]},
        {"not": {"any": [{"segment": other.pk}, {"event": "Demo Booked"}]}},
        {"event": "Webinar Joined", "count": {"op": "eq", "value": 0}},
    ]}, filters.Context.load())
    words = describe(tree, Names.load())

    def flat(line, depth=0):
        yield line.text
        for child in line.children:
            yield from flat(child, depth + 1)

    text = list(flat(words))
    assert text[0] == "All of these:"
    assert "Prefecture is any of 東京都, 大阪府" in text
    assert "Company · Employees is at least 300" in text
    assert "Does not have the tag “競合”" in text and "Is in the list “セミナー”" in text
    assert "Grade (Default) is at least B" in text
    assert "Created is within the last 90 days" in text
    assert "Visited a page where page path contains “/pricing” at least 2 times in the last 30 days" in text
    assert "Submitted a form where property form is “資料請求” ever" in text
    assert "Clicked a link in “月刊ニュース” in the last 14 days" in text
    assert "None of these:" in text and "Is in the segment “見込み”" in text and "Did “Demo Booked” ever" in text
    assert "Did not do “Webinar Joined” ever" in text


def test_growth_since_last_week_and_the_chart(logged_in, world):
    segment = _segment("製造業", MAKERS)
    today = timezone.localdate()
    for days, members in ((20, 1), (9, 1), (8, 2)):
        SegmentCount.objects.create(segment=segment, day=today - dt.timedelta(days=days), members=members)
    listing = logged_in.get(reverse("segments:list")).content.decode()
    row = re.search(rf'<tr data-segment="{segment.pk}">.*?</tr>', listing, re.S).group(0)
    assert '<span class="growth up">+1</span>' in row and "ms" in row
    detail = logged_in.get(reverse("segments:detail", args=[segment.pk])).content.decode()
    chart = re.search(r'<svg class="growth-chart".*?</svg>', detail, re.S).group(0)
    assert chart.count("<circle") == 4 and "<polyline" in chart and "style" not in chart
    assert f"<title>{today:%Y-%m-%d}: 3</title>" in chart
    assert f"{today - dt.timedelta(days=20):%Y-%m-%d}" in detail  # the chart starts at the first count


def test_recompute_now_asks_the_worker_and_the_page_follows(logged_in, world):
    segment = _segment("製造業", MAKERS)
    Contact.objects.create(email="new@example.jp", industry="manufacturing")  # not announced: bulk-style insert
    response = logged_in.post(reverse("segments:recompute", args=[segment.pk]), follow=True)
    assert "Recomputing 製造業." in response.content.decode()
    segment.refresh_from_db()
    assert segment.needs_full and "data-progress-url" in response.content.decode()
    membership.refresh_due()
    segment.refresh_from_db()
    assert not segment.needs_full and segment.member_count == 4


def test_export_gives_the_members_in_the_contacts_format(client, users, world):
    evil = Contact.objects.create(email="evil@example.jp", family_name="=HYPERLINK(\"http://x\")",
                                  industry="manufacturing")
    segment = _segment("製造業", MAKERS)
    client.force_login(users["marketer"])
    response = client.get(reverse("segments:export", args=[segment.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(f'attachment; filename="segment-{segment.pk}-')
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][:3] == ["ID", "Email", "Family name"]
    emails = {r[1]: r for r in rows[1:]}
    assert set(emails) == {c.email for c in world["makers"]} | {"evil@example.jp"}
    assert emails["evil@example.jp"][2] == "'=HYPERLINK(\"http://x\")"
    entry = AuditLog.objects.get(action="export")
    assert entry.changes == {"count": 4, "segment": [segment.pk, "製造業"]} and entry.actor == users["marketer"]
    assert evil.pk


def test_a_segment_in_use_is_not_deleted(logged_in, world):
    base = _segment("製造業", MAKERS, compute=False)
    user = _segment("製造業でないと", {"not": {"segment": base.pk}}, compute=False)
    response = logged_in.post(reverse("segments:delete", args=[base.pk]), follow=True)
    page = response.content.decode()
    assert "製造業 cannot be deleted while it is used by: segment “製造業でないと”" in page
    assert Segment.objects.filter(pk=base.pk).exists()
    assert "data-used-by" in page and reverse("segments:detail", args=[user.pk]) in page
    logged_in.post(reverse("segments:delete", args=[user.pk]))
    response = logged_in.post(reverse("segments:delete", args=[base.pk]), follow=True)
    assert "Segment 製造業 deleted." in response.content.decode()
    assert not Segment.objects.exists()
    assert AuditLog.objects.filter(action="delete", object_type="segments.segment").count() == 2


def test_a_segment_a_bulk_send_uses_is_not_deleted(logged_in, world):
    segment = _segment("製造業", MAKERS, compute=False)
    sender = Sender.objects.create(name="M", from_name="M", from_email="m@k.example", organisation="K",
                                   postal_address="東京都")
    template = EmailTemplate.objects.create(name="T", sender=sender)
    version = TemplateVersion.objects.create(template=template, number=1, subject="s", html="<p>x</p>", text="x")
    BulkSend.objects.create(name="秋の案内", template=template, version=version, segment=segment)
    response = logged_in.post(reverse("segments:delete", args=[segment.pk]), follow=True)
    assert "used by: bulk send “秋の案内”" in response.content.decode()
    assert Segment.objects.filter(pk=segment.pk).exists()


# --- escaping ---------------------------------------------------------------------------------

def test_visitor_supplied_strings_are_escaped_everywhere(logged_in, world):
    contact = Contact.objects.create(email="x@example.jp", family_name=XSS, industry="manufacturing")
    Event.objects.create(message_id="e1", type="track", name=XSS, contact=contact, occurred_at=timezone.now(),
                         received_at=timezone.now(), processed_at=timezone.now(), properties={"form": XSS})
    Tag.objects.create(name=XSS)
    ContactList.objects.create(name=XSS)
    segment = _segment(XSS[:150], {"all": [MAKERS, {"any": [
        {"event": XSS[:200], "where": [{"field": "properties.form", "op": "equals", "value": XSS}]},
        {"field": "job_title", "op": "not_contains", "value": XSS}]}]})
    segment.description = XSS
    segment.save()
    pages = [reverse("segments:list"), reverse("segments:detail", args=[segment.pk]),
             reverse("segments:edit", args=[segment.pk])]
    for url in pages:
        html = logged_in.get(url).content.decode()
        assert "<script>alert(1)</script>" not in html and "<img src=x" not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
    # The builder's schema carries the event name, tag and list in an attribute, escaped.
    edit = logged_in.get(reverse("segments:edit", args=[segment.pk])).content.decode()
    schema = json.loads(_unescape(re.search(r'data-schema="([^"]*)"', edit).group(1)))
    assert XSS in schema["events"] and XSS in schema["tags"] and [XSS] == [n for _i, n in schema["lists"]]
    assert Membership.objects.filter(segment=segment, contact=contact).exists()
    assert SegmentChange.objects.filter(segment=segment, contact=contact).exists()


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_list_membership_conditions_follow_the_list(logged_in, world):
    seminar = ContactList.objects.create(name="セミナー")
    ListMembership.objects.create(contact_list=seminar, contact=world["others"][0])
    segment = _segment("セミナー参加", {"field": "list", "op": "in", "value": seminar.pk})
    assert segment.member_count == 1
    page = logged_in.get(reverse("segments:detail", args=[segment.pk])).content.decode()
    assert "Is in the list “セミナー”" in page
