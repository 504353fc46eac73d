"""The contacts, companies and lists pages: listing, filtering and keyset paging, the detail page,
create/edit/delete through the services, custom fields as form fields, consent and do-not-contact
changes, static lists, roles and escaping."""

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import AuditLog
from kizuna.contacts import consent, queries
from kizuna.contacts.models import (
    Company,
    Consent,
    ConsentRecord,
    Contact,
    ContactList,
    CustomField,
    ListMembership,
    SubscriptionTopic,
    Tag,
)

XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


def _html(response) -> str:
    return response.content.decode()


def _link(content: str, rel: str) -> str | None:
    match = re.search(rf'<a href="([^"]*)" rel="{rel}"', content)
    return html.unescape(match.group(1)) if match else None


def _detail_ids(content: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<a href="/contacts/(\d+)/">', content)]


def _field_errors(response, name: str) -> list[str]:
    return list(response.context["form"].errors.get(name, []))


@pytest.fixture
def topic(db):
    return SubscriptionTopic.objects.create(key="newsletter", name="Newsletter", requires_opt_in=True)


@pytest.fixture
def yamada(users, topic):
    company = Company.objects.create(name="山田製作所", domain="yamada-ss.co.jp")
    contact = Contact.objects.create(
        email="taro@yamada-ss.co.jp", family_name="山田", given_name="太郎", family_name_kana="ヤマダ",
        given_name_kana="タロウ", company=company, company_name="山田製作所", job_title="部長",
        department="営業部", prefecture="13", region="kanto", lifecycle_stage="mql", owner=users["sales"],
        phone="03-1234-5678",
    )
    contact.tags.add(Tag.objects.create(name="展示会2026"))
    return contact


def _post_contact(client, url, **values):
    data = {"lifecycle_stage": "lead", "email": "", "family_name": "", "given_name": ""}
    data.update(values)
    return client.post(url, data)


# --- List, search, filters, sorting, paging ------------------------------------------------------

@pytest.mark.django_db
def test_list_shows_the_columns_and_the_count(client, users, yamada):
    client.force_login(users["viewer"])
    response = client.get(reverse("contacts:list"))
    assert response.status_code == 200
    content = _html(response)
    for text in ("山田 太郎", "ヤマダ タロウ", "taro@yamada-ss.co.jp", "山田製作所", "部長", "東京都",
                 str(users["sales"]), "Marketing qualified lead"):
        assert text in content, text
    assert reverse("contacts:company_detail", args=[yamada.company_id]) in content
    assert "1 contact" in content


@pytest.mark.django_db
def test_search_and_every_filter(client, users):
    client.force_login(users["admin"])
    seminar = ContactList.objects.create(name="Seminar")
    vip = Tag.objects.create(name="vip")
    match = Contact.objects.create(
        email="hit@acme.co.jp", family_name="佐藤", family_name_kana="サトウ", lifecycle_stage="sql",
        prefecture="27", region="kinki", industry="it", company_size="100-299", owner=users["sales"],
    )
    match.tags.add(vip)
    ListMembership.objects.create(contact_list=seminar, contact=match)
    Contact.objects.create(email="miss@other.co.jp", family_name="鈴木", lifecycle_stage="lead", prefecture="13",
                           region="kanto", industry="finance", company_size="1-9")
    cases = {
        "q": "サトウ", "stage": "sql", "prefecture": "27", "region": "kinki", "industry": "it",
        "company_size": "100-299", "owner": str(users["sales"].pk), "tag": "vip", "list": str(seminar.pk),
    }
    for key, value in cases.items():
        response = client.get(reverse("contacts:list"), {key: value})
        assert response.status_code == 200, key
        assert _detail_ids(_html(response)) == [match.pk], key
    assert _detail_ids(_html(client.get(reverse("contacts:list"), {"q": "hit@"}))) == [match.pk]
    unowned = _detail_ids(_html(client.get(reverse("contacts:list"), {"owner": "none"})))
    assert match.pk not in unowned and len(unowned) == 1
    # The chosen filters are selected again in the form.
    content = _html(client.get(reverse("contacts:list"), {"stage": "sql", "q": "サトウ"}))
    assert '<option value="sql" selected>' in content and 'value="サトウ"' in content


@pytest.mark.django_db
def test_filters_from_links_are_shown_kept_and_removable(client, users):
    acme = Company.objects.create(name="Acme <b>KK</b>", domain="acme.co.jp")
    inside = Contact.objects.create(email="in@acme.co.jp", company=acme, lifecycle_stage="lead")
    Contact.objects.create(email="out@x.co.jp", lifecycle_stage="lead")
    client.force_login(users["viewer"])
    content = _html(client.get(reverse("contacts:list"), {"company": acme.pk, "stage": "lead"}))
    assert _detail_ids(content) == [inside.pk]
    assert "Company: Acme &lt;b&gt;KK&lt;/b&gt;" in content
    assert f'<input type="hidden" name="company" value="{acme.pk}">' in content
    assert f'href="{reverse("contacts:list")}?stage=lead"' in content  # drops only the company filter


@pytest.mark.django_db
def test_sorts(client, users):
    client.force_login(users["admin"])
    now = timezone.now()
    a = Contact.objects.create(email="a@x.co.jp", family_name_kana="アオキ", company_name="Zeta",
                               updated_at=now - timedelta(days=3), last_activity_at=now)
    b = Contact.objects.create(email="b@x.co.jp", family_name_kana="ワタナベ", company_name="Alpha",
                               updated_at=now, last_activity_at=now - timedelta(days=2))
    c = Contact.objects.create(email="c@x.co.jp", family_name_kana="カトウ", company_name="Mid",
                               updated_at=now - timedelta(days=1))
    expected = {
        "newest": [c, b, a], "oldest": [a, b, c], "updated": [b, c, a], "activity": [a, b, c],
        "name": [a, c, b], "company": [b, c, a],
    }
    assert set(expected) == set(queries.SORTS)
    for sort, order in expected.items():
        content = _html(client.get(reverse("contacts:list"), {"sort": sort}))
        assert _detail_ids(content) == [x.pk for x in order], sort
        assert f'<option value="{sort}" selected>' in content


@pytest.mark.django_db
def test_keyset_paging_walks_every_contact_once_and_keeps_the_filters(client, users):
    client.force_login(users["admin"])
    Contact.objects.bulk_create(
        [Contact(email=f"p{i}@paging.co.jp", family_name_kana=f"カ{i % 7}", lifecycle_stage="lead") for i in range(123)]
        + [Contact(email=f"other{i}@x.co.jp", lifecycle_stage="customer") for i in range(5)]
    )
    leads = set(Contact.objects.filter(lifecycle_stage="lead").values_list("id", flat=True))
    for sort in ("newest", "name"):
        url = reverse("contacts:list") + f"?stage=lead&sort={sort}"
        seen, pages = [], []
        while url:
            content = _html(client.get(url))
            ids = _detail_ids(content)
            pages.append(ids)
            seen += ids
            url = _link(content, "next")
            if url:
                assert "stage=lead" in url and f"sort={sort}" in url and "cursor=" in url
                url = reverse("contacts:list") + url
        assert [len(p) for p in pages] == [50, 50, 23]
        assert len(seen) == len(set(seen)) == 123 and set(seen) == leads
    # "Previous" from the second page leads back to the first.
    first = _html(client.get(reverse("contacts:list"), {"stage": "lead"}))
    second = _html(client.get(reverse("contacts:list") + _link(first, "next")))
    assert _link(first, "prev") is None
    back = _html(client.get(reverse("contacts:list") + _link(second, "prev")))
    assert _detail_ids(back) == _detail_ids(first)


@pytest.mark.django_db
def test_count_is_capped(client, users, monkeypatch):
    client.force_login(users["admin"])
    Contact.objects.bulk_create([Contact(email=f"c{i}@x.co.jp") for i in range(7)])
    real = queries.capped_count
    monkeypatch.setattr(queries, "capped_count", lambda qs: real(qs, cap=5))
    assert "5+ contacts" in _html(client.get(reverse("contacts:list")))
    monkeypatch.setattr(queries, "capped_count", lambda qs: real(qs, cap=10_000))
    Contact.objects.bulk_create([Contact(email=f"d{i}@x.co.jp") for i in range(10_001)])
    assert "10,000+ contacts" in _html(client.get(reverse("contacts:list")))


@pytest.mark.django_db
def test_list_reports_bad_filters(client, users):
    client.force_login(users["admin"])
    response = client.get(reverse("contacts:list"), {"stage": "nope", "cursor": "garbage!", "q": "keep me"})
    assert response.status_code == 400
    content = _html(response)
    assert "unknown stage" in content and 'value="keep me"' in content


@pytest.mark.django_db
@pytest.mark.parametrize("role,export,create", [
    ("admin", True, True), ("marketer", True, True), ("sales", False, False), ("viewer", False, False),
])
def test_list_buttons_follow_the_role(client, users, role, export, create):
    client.force_login(users[role])
    content = _html(client.get(reverse("contacts:list"), {"stage": "lead", "q": "x y"}))
    export_url = html.escape(reverse("contacts:export") + "?q=x+y&stage=lead")
    assert (export_url in content) is export
    assert (reverse("contacts:create") in content) is create


# --- Detail -------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_detail_shows_everything(client, users, yamada, topic):
    CustomField.objects.create(key="budget", label="Annual budget", field_type="number")
    CustomField.objects.create(key="newsletter_ok", label="Wants newsletter", field_type="boolean")
    yamada.custom = {"budget": 1200000, "newsletter_ok": True, "legacy": "old value"}
    yamada.save()
    seminar = ContactList.objects.create(name="2026 DX seminar")
    ListMembership.objects.create(contact_list=seminar, contact=yamada)
    consent.set_consent(yamada, topic, "opted_in", method="form", source="Download form",
                        text_shown="I agree to receive the newsletter.", ip="203.0.113.7")
    consent.set_do_not_contact(yamada, "bounced", method="bounce", source="smtp 550")
    client.force_login(users["admin"])
    client.post(reverse("contacts:edit", args=[yamada.pk]), {
        **_form_values(yamada), "job_title": "本部長", "custom_budget": "1200000", "custom_newsletter_ok": "yes",
    })
    content = _html(client.get(reverse("contacts:detail", args=[yamada.pk])))
    for text in ("山田 太郎", "ヤマダ タロウ", "taro@yamada-ss.co.jp", "03-1234-5678", "営業部", "本部長", "東京都",
                 "Annual budget", "1200000", "Wants newsletter", "Yes", "legacy", "old value",
                 "Newsletter", "Opted in", "Download form", "I agree to receive the newsletter.", "203.0.113.7",
                 "Bounced", "smtp 550", "展示会2026", "2026 DX seminar", str(users["sales"])):
        assert text in content, text
    assert content.index("山田 太郎") < content.index("ヤマダ タロウ")
    assert f'href="{reverse("contacts:company_detail", args=[yamada.company_id])}">山田製作所</a>' in content
    # The audit trail, through the shared audit table.
    assert "job_title: 部長 → 本部長" in content
    assert reverse("contacts:list_detail", args=[seminar.pk]) in content


def _form_values(contact):
    return {
        "email": contact.email, "family_name": contact.family_name, "given_name": contact.given_name,
        "family_name_kana": contact.family_name_kana, "given_name_kana": contact.given_name_kana,
        "phone": contact.phone, "company_name": contact.company_name, "department": contact.department,
        "job_title": contact.job_title, "prefecture": contact.prefecture, "industry": contact.industry,
        "company_size": contact.company_size, "lifecycle_stage": contact.lifecycle_stage,
        "owner": contact.owner_id or "", "language": contact.language, "time_zone": contact.time_zone,
        "tags": ", ".join(t.name for t in contact.tags.all()),
    }


# --- Create, edit, delete -----------------------------------------------------------------------

@pytest.mark.django_db
def test_create_edit_delete_round_trip_with_audit(client, users):
    client.force_login(users["marketer"])
    assert client.get(reverse("contacts:create")).status_code == 200
    response = _post_contact(
        client, reverse("contacts:create"), email=" Hanako@Suzuki-Denki.co.jp ", family_name="鈴木",
        given_name="花子", family_name_kana="スズキ", given_name_kana="ハナコ", company_name="鈴木電機",
        prefecture="13", lifecycle_stage="lead", tags="展示会, DX、VIP", owner=users["sales"].pk,
    )
    contact = Contact.objects.get(email="hanako@suzuki-denki.co.jp")
    assert response.status_code == 302 and response["Location"] == reverse("contacts:detail", args=[contact.pk])
    assert contact.company.domain == "suzuki-denki.co.jp"  # linked by the email domain
    assert contact.prefecture == "13" and contact.region == "kanto" and contact.owner == users["sales"]
    assert sorted(contact.tags.values_list("name", flat=True)) == ["DX", "VIP", "展示会"]
    assert AuditLog.objects.filter(action="create", object_type="contacts.contact", object_id=str(contact.pk),
                                   actor=users["marketer"]).exists()

    edit_page = _html(client.get(reverse("contacts:edit", args=[contact.pk])))
    assert 'value="鈴木"' in edit_page and "展示会, DX, VIP" in edit_page or "DX, VIP, 展示会" in edit_page
    values = _form_values(contact)
    values.update(lifecycle_stage="sql", tags="VIP", job_title="課長")
    response = client.post(reverse("contacts:edit", args=[contact.pk]), values)
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "sql" and contact.job_title == "課長"
    assert list(contact.tags.values_list("name", flat=True)) == ["VIP"]
    update = AuditLog.objects.get(action="update", object_id=str(contact.pk))
    assert update.changes["lifecycle_stage"] == ["lead", "sql"] and update.actor == users["marketer"]
    assert "tags" in update.changes

    assert client.get(reverse("contacts:delete", args=[contact.pk])).status_code == 200
    response = client.post(reverse("contacts:delete", args=[contact.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("contacts:list")
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert AuditLog.objects.filter(action="delete", object_id=str(contact.pk), actor=users["marketer"]).exists()


@pytest.mark.django_db
def test_service_errors_land_on_their_fields_and_keep_good_input(client, users):
    Contact.objects.create(email="taken@x.co.jp")
    client.force_login(users["admin"])
    response = _post_contact(client, reverse("contacts:create"), email="taken@x.co.jp", family_name="残す")
    assert response.status_code == 400
    assert _field_errors(response, "email") == ["A contact with taken@x.co.jp already exists"]
    assert 'value="残す"' in _html(response)
    response = _post_contact(client, reverse("contacts:create"), email="not an email", family_name="x" * 101)
    assert response.status_code == 400
    assert "invalid email address" in _field_errors(response, "email")[0].lower()
    assert _field_errors(response, "family_name")
    assert Contact.objects.count() == 1


@pytest.mark.django_db
def test_custom_fields_of_every_type_are_form_fields(client, users):
    for key, kind, choices in [
        ("note", "text", []), ("budget", "number", []), ("met_on", "date", []),
        ("plan", "choice", ["Basic", "Pro"]), ("interests", "multi_choice", ["MA", "CRM", "SFA"]),
        ("decision_maker", "boolean", []),
    ]:
        CustomField.objects.create(key=key, label=f"Label {key}", field_type=kind, choices=choices, required=True)
    client.force_login(users["admin"])
    page = _html(client.get(reverse("contacts:create")))
    assert re.search(r'<input type="text" name="custom_note"[^>]*maxlength="2000"', page)
    assert re.search(r'<input type="number" name="custom_budget" step="any"', page)
    assert re.search(r'<input type="date" name="custom_met_on"', page)
    plan = r'<select name="custom_plan"[^>]*>\s*<option value=""[^>]*>—</option>\s*<option value="Basic">'
    assert re.search(plan, page)
    assert page.count('type="checkbox" name="custom_interests"') == 3
    assert re.search(r'<select name="custom_decision_maker"', page) and '<option value="yes">Yes</option>' in page
    for key in ("note", "budget", "met_on", "plan", "interests", "decision_maker"):
        assert f"Label {key}" in page

    # Missing and wrong values: an error on each field.
    bad = _post_contact(client, reverse("contacts:create"), email="cf@x.co.jp", custom_budget="many",
                        custom_met_on="2026-13-45", custom_plan="Gold", custom_interests=["ERP"],
                        custom_decision_maker="maybe")
    assert bad.status_code == 400
    for name in ("custom_note", "custom_budget", "custom_met_on", "custom_plan", "custom_interests",
                 "custom_decision_maker"):
        assert _field_errors(bad, name), name
    assert not Contact.objects.exists()

    good = _post_contact(client, reverse("contacts:create"), email="cf@x.co.jp", custom_note="Met at booth",
                         custom_budget="1500000", custom_met_on="2026-11-03", custom_plan="Pro",
                         custom_interests=["MA", "SFA"], custom_decision_maker="yes")
    assert good.status_code == 302, good.context["form"].errors
    contact = Contact.objects.get(email="cf@x.co.jp")
    assert contact.custom == {"note": "Met at booth", "budget": 1500000, "met_on": "2026-11-03", "plan": "Pro",
                              "interests": ["MA", "SFA"], "decision_maker": True}
    edit = _html(client.get(reverse("contacts:edit", args=[contact.pk])))
    assert 'value="1500000"' in edit and 'value="2026-11-03"' in edit and 'value="Met at booth"' in edit
    assert '<option value="Pro" selected>' in edit and '<option value="yes" selected>' in edit
    assert re.search(r'value="SFA"[^>]*checked', edit) and not re.search(r'value="CRM"[^>]*checked', edit)

    values = {**_form_values(contact), "custom_note": "Met at booth", "custom_budget": "2.5",
              "custom_met_on": "2026-11-04", "custom_plan": "Basic", "custom_interests": ["CRM"],
              "custom_decision_maker": "no"}
    assert client.post(reverse("contacts:edit", args=[contact.pk]), values).status_code == 302
    contact.refresh_from_db()
    assert contact.custom["budget"] == 2.5 and contact.custom["decision_maker"] is False
    assert contact.custom["interests"] == ["CRM"] and contact.custom["met_on"] == "2026-11-04"
    assert "custom" in AuditLog.objects.get(action="update", object_id=str(contact.pk)).changes


# --- Roles --------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_viewer_changes_nothing(client, users, yamada, topic):
    ContactList.objects.create(name="L")
    company = yamada.company
    client.force_login(users["viewer"])
    detail = _html(client.get(reverse("contacts:detail", args=[yamada.pk])))
    for hidden in (reverse("contacts:edit", args=[yamada.pk]), reverse("contacts:delete", args=[yamada.pk]),
                   reverse("contacts:consent", args=[yamada.pk]), 'value="add_to_list"', 'value="remove_from_list"'):
        assert hidden not in detail, hidden
    company_page = _html(client.get(reverse("contacts:company_detail", args=[company.pk])))
    assert reverse("contacts:company_edit", args=[company.pk]) not in company_page
    assert reverse("contacts:company_create") not in _html(client.get(reverse("contacts:company_list")))
    assert "New list" not in _html(client.get(reverse("contacts:list_index")))
    lst = ContactList.objects.get()
    assert 'value="remove"' not in _html(client.get(reverse("contacts:list_detail", args=[lst.pk])))
    forbidden = [
        ("get", reverse("contacts:create"), {}), ("post", reverse("contacts:create"), {"email": "v@x.co.jp"}),
        ("get", reverse("contacts:edit", args=[yamada.pk]), {}),
        ("post", reverse("contacts:edit", args=[yamada.pk]), {"lifecycle_stage": "customer"}),
        ("get", reverse("contacts:delete", args=[yamada.pk]), {}),
        ("post", reverse("contacts:delete", args=[yamada.pk]), {}),
        ("post", reverse("contacts:consent", args=[yamada.pk]),
         {"action": "topic", "topic": topic.pk, "status": "opted_out"}),
        ("post", reverse("contacts:consent", args=[yamada.pk]), {"action": "set_dnc", "reason": "manual"}),
        ("post", reverse("contacts:detail", args=[yamada.pk]), {"action": "add_to_list", "list": lst.pk}),
        ("get", reverse("contacts:company_create"), {}),
        ("post", reverse("contacts:company_edit", args=[company.pk]), {"name": "x"}),
        ("post", reverse("contacts:list_index"), {"name": "New"}),
        ("post", reverse("contacts:list_detail", args=[lst.pk]), {"action": "delete"}),
    ]
    for method, url, data in forbidden:
        assert getattr(client, method)(url, data).status_code == 403, (method, url)
    yamada.refresh_from_db()
    assert yamada.lifecycle_stage == "mql" and not yamada.do_not_contact
    assert ContactList.objects.count() == 1 and not ConsentRecord.objects.exists()


@pytest.mark.django_db
def test_sales_edits_only_their_own_contacts(client, users, yamada):
    other = Contact.objects.create(email="other@x.co.jp", owner=users["marketer"])
    client.force_login(users["sales"])
    own = _html(client.get(reverse("contacts:detail", args=[yamada.pk])))
    assert reverse("contacts:edit", args=[yamada.pk]) in own
    assert reverse("contacts:delete", args=[yamada.pk]) not in own
    assert reverse("contacts:consent", args=[yamada.pk]) in own
    theirs = _html(client.get(reverse("contacts:detail", args=[other.pk])))
    assert reverse("contacts:edit", args=[other.pk]) not in theirs
    assert reverse("contacts:consent", args=[other.pk]) not in theirs
    assert client.get(reverse("contacts:edit", args=[other.pk])).status_code == 403
    assert client.post(reverse("contacts:consent", args=[other.pk]),
                       {"action": "set_dnc", "reason": "manual"}).status_code == 403
    assert client.post(reverse("contacts:delete", args=[yamada.pk])).status_code == 403
    assert client.get(reverse("contacts:company_list")).status_code == 200
    assert client.get(reverse("contacts:company_detail", args=[yamada.company_id])).status_code == 200

    # The owner field is shown but cannot be changed by sales.
    form = client.get(reverse("contacts:edit", args=[yamada.pk]))
    assert form.context["form"].fields["owner"].disabled
    values = {**_form_values(yamada), "lifecycle_stage": "opportunity", "owner": users["marketer"].pk}
    assert client.post(reverse("contacts:edit", args=[yamada.pk]), values).status_code == 302
    yamada.refresh_from_db()
    assert yamada.lifecycle_stage == "opportunity" and yamada.owner == users["sales"]


# --- Consent and do-not-contact -----------------------------------------------------------------

@pytest.mark.django_db
def test_consent_changes_write_the_ledger(client, users, yamada, topic):
    client.force_login(users["sales"])  # the owner may change consent
    url = reverse("contacts:consent", args=[yamada.pk])
    client.post(url, {"action": "topic", "topic": topic.pk, "status": "opted_in", "source": "Phone call 11/3"})
    assert Consent.objects.get(contact=yamada, topic=topic).status == "opted_in"
    record = ConsentRecord.objects.get(contact=yamada, topic=topic)
    assert (record.status, record.method, record.actor, record.source) == (
        "opted_in", "manual", users["sales"], "Phone call 11/3")
    client.post(url, {"action": "topic", "topic": topic.pk, "status": "opted_out"})
    client.post(url, {"action": "topic", "topic": topic.pk, "status": "opted_out"})  # no change, no row
    assert ConsentRecord.objects.filter(contact=yamada, topic=topic).count() == 2
    assert ConsentRecord.objects.filter(contact=yamada, status="opted_out", method="manual").exists()

    client.post(url, {"action": "set_dnc", "reason": "complained", "source": "called to complain"})
    yamada.refresh_from_db()
    assert yamada.do_not_contact and yamada.dnc_reason == "complained"
    dnc = ConsentRecord.objects.get(contact=yamada, status="dnc")
    assert (dnc.topic, dnc.reason, dnc.method, dnc.actor) == (None, "complained", "manual", users["sales"])
    page = _html(client.get(reverse("contacts:detail", args=[yamada.pk])))
    assert "Complained (spam report)" in page and "called to complain" in page and "Clear do-not-contact" in page

    client.post(url, {"action": "clear_dnc"})
    yamada.refresh_from_db()
    assert not yamada.do_not_contact
    cleared = ConsentRecord.objects.get(contact=yamada, status="contactable")
    assert cleared.method == "manual" and cleared.actor == users["sales"]
    assert AuditLog.objects.filter(action="consent", object_id=str(yamada.pk)).count() == 4

    bad = client.post(url, {"action": "topic", "topic": topic.pk, "status": "maybe"}, follow=True)
    assert "not valid" in _html(bad) and ConsentRecord.objects.filter(contact=yamada).count() == 4


# --- Lists --------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_static_lists_create_add_remove(client, users, yamada):
    client.force_login(users["marketer"])
    response = client.post(reverse("contacts:list_index"), {"name": "Seminar 11月", "description": "Tokyo"})
    seminar = ContactList.objects.get(name="Seminar 11月")
    assert response["Location"] == reverse("contacts:list_detail", args=[seminar.pk])
    assert AuditLog.objects.filter(action="create", object_type="contacts.contactlist").exists()
    duplicate = client.post(reverse("contacts:list_index"), {"name": "Seminar 11月"})
    assert duplicate.status_code == 400 and ContactList.objects.count() == 1

    detail = reverse("contacts:detail", args=[yamada.pk])
    assert "Seminar 11月" in _html(client.get(detail))  # offered in "add to list"
    client.post(detail, {"action": "add_to_list", "list": seminar.pk})
    client.post(detail, {"action": "add_to_list", "list": seminar.pk})  # twice: still one membership
    assert ListMembership.objects.filter(contact_list=seminar, contact=yamada).count() == 1
    others = Contact.objects.bulk_create([Contact(email=f"m{i}@x.co.jp") for i in range(3)])
    ListMembership.objects.bulk_create([ListMembership(contact_list=seminar, contact=c) for c in others])
    assert re.search(r'data-member-count>4<', _html(client.get(reverse("contacts:list_index"))))
    members = _html(client.get(reverse("contacts:list_detail", args=[seminar.pk])))
    assert set(_detail_ids(members)) == {yamada.pk, *(c.pk for c in others)} and "4 members" in members

    client.post(reverse("contacts:list_detail", args=[seminar.pk]), {"action": "remove", "contact": others[0].pk})
    client.post(detail, {"action": "remove_from_list", "list": seminar.pk})
    assert set(seminar.memberships.values_list("contact_id", flat=True)) == {others[1].pk, others[2].pk}
    assert AuditLog.objects.filter(action="add_to_list", object_id=str(yamada.pk)).count() == 1
    assert AuditLog.objects.filter(action="remove_from_list").count() == 2

    client.post(reverse("contacts:list_detail", args=[seminar.pk]), {"action": "delete"})
    assert not ContactList.objects.exists() and Contact.objects.count() == 4


# --- Companies ----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_companies_list_detail_create_edit(client, users):
    acme = Company.objects.create(name="株式会社アクメ", domain="acme.co.jp")
    Company.objects.create(name="Other KK", domain="other.co.jp")
    Contact.objects.bulk_create([Contact(email=f"a{i}@acme.co.jp", company=acme, family_name=f"社員{i}")
                                 for i in range(3)])
    client.force_login(users["marketer"])
    listing = _html(client.get(reverse("contacts:company_list"), {"q": "アクメ"}))
    assert "株式会社アクメ" in listing and "Other KK" not in listing
    assert re.search(r'data-contact-count><a href="[^"]+">3</a>', listing)
    assert "株式会社アクメ" in _html(client.get(reverse("contacts:company_list"), {"q": "acme"}))
    detail = _html(client.get(reverse("contacts:company_detail", args=[acme.pk])))
    assert all(f"社員{i}" in detail for i in range(3))

    CustomField.objects.create(target="company", key="listed", label="Listed on TSE", field_type="boolean")
    response = client.post(reverse("contacts:company_create"), {
        "name": "新規株式会社", "domain": "@Shinki.co.jp", "employees": "250", "prefecture": "27",
        "custom_listed": "yes",
    })
    company = Company.objects.get(name="新規株式会社")
    assert response["Location"] == reverse("contacts:company_detail", args=[company.pk])
    assert (company.domain, company.company_size, company.custom) == ("shinki.co.jp", "100-299", {"listed": True})
    assert AuditLog.objects.filter(action="create", object_type="contacts.company", object_id=str(company.pk)).exists()
    clash = client.post(reverse("contacts:company_edit", args=[company.pk]), {"name": "新規", "domain": "acme.co.jp"})
    assert clash.status_code == 400 and "another company already has the domain" in clash.context["form"].errors[
        "domain"][0].lower()
    ok = client.post(reverse("contacts:company_edit", args=[company.pk]),
                     {"name": "新規株式会社 東京支社", "domain": "shinki.co.jp", "custom_listed": "no"})
    assert ok.status_code == 302
    company.refresh_from_db()
    assert company.name == "新規株式会社 東京支社" and company.custom == {"listed": False}
    assert AuditLog.objects.filter(action="update", object_type="contacts.company").exists()
    assert "Listed on TSE" in _html(client.get(reverse("contacts:company_detail", args=[company.pk])))


# --- Escaping and navigation --------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("payload", XSS)
def test_visitor_strings_are_escaped_everywhere(client, users, topic, payload):
    CustomField.objects.create(key="note", label=f"Note {payload}", field_type="text")
    CustomField.objects.create(key="pick", label="Pick", field_type="choice", choices=[payload, "b"])
    company = Company.objects.create(name=f"Co {payload}", domain="evil.co.jp")
    contact = Contact.objects.create(
        email="evil@evil.co.jp", family_name=payload, given_name=payload, family_name_kana=payload,
        company=company, company_name=payload, job_title=payload, department=payload,
        custom={"note": payload, "pick": payload, payload: payload}, owner=users["sales"],
    )
    contact.tags.add(Tag.objects.create(name=payload))
    lst = ContactList.objects.create(name=f"List {payload}", description=payload)
    ListMembership.objects.create(contact_list=lst, contact=contact)
    consent.set_consent(contact, topic, "opted_in", method="form", source=payload, text_shown=payload)
    client.force_login(users["admin"])
    client.post(reverse("contacts:edit", args=[contact.pk]), {**_form_values(contact), "phone": "1"})
    pages = [
        reverse("contacts:list"), reverse("contacts:list") + "?q=" + payload,
        reverse("contacts:detail", args=[contact.pk]),
        reverse("contacts:edit", args=[contact.pk]), reverse("contacts:delete", args=[contact.pk]),
        reverse("contacts:company_list"), reverse("contacts:company_detail", args=[company.pk]),
        reverse("contacts:company_edit", args=[company.pk]), reverse("contacts:list_index"),
        reverse("contacts:list_detail", args=[lst.pk]), reverse("contacts:field_list"), "/",
    ]
    for url in pages:
        content = _html(client.get(url))
        assert payload not in content, url
        assert html.escape(payload) in content or html.escape(payload, quote=False) in content, url


@pytest.mark.django_db
def test_navigation_links_to_every_page(client, users):
    client.force_login(users["admin"])
    nav = _html(client.get(reverse("contacts:list"))).split('<nav class="sidebar"', 1)[1].split("</nav>", 1)[0]
    for name in ("contacts:list", "contacts:company_list", "contacts:list_index", "contacts:field_list",
                 "contacts:topic_list", "contacts:import_list"):
        assert f'href="{reverse(name)}"' in nav, name
    assert 'class="active"' in nav.split(reverse("contacts:list") + '"', 1)[1][:40]
    client.force_login(users["viewer"])
    nav = _html(client.get(reverse("contacts:list")))
    assert reverse("contacts:field_list") not in nav and reverse("contacts:company_list") in nav


@pytest.mark.django_db
def test_list_pages_stay_within_a_fixed_number_of_queries(client, users, django_assert_max_num_queries):
    owners = [users["sales"], users["marketer"]]
    company = Company.objects.create(name="C", domain="c.co.jp")
    Contact.objects.bulk_create([Contact(email=f"q{i}@c.co.jp", owner=owners[i % 2], company=company)
                                 for i in range(60)])
    client.force_login(users["admin"])
    with django_assert_max_num_queries(12):
        assert client.get(reverse("contacts:list")).status_code == 200
    with django_assert_max_num_queries(12):
        assert client.get(reverse("contacts:company_detail", args=[company.pk])).status_code == 200
