"""The contacts REST API: CRUD, lookup, consent, companies, custom fields, filters and cursor
pages, the error format for every kind of bad request, audit entries and the OpenAPI schema."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from kizuna.accounts.models import AuditLog
from kizuna.contacts import queries, services
from kizuna.contacts.models import (
    Company,
    Consent,
    ConsentRecord,
    Contact,
    ContactList,
    CustomField,
    ListMembership,
    SubscriptionTopic,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """These tests log in with keys and force_login, never a password: skip Argon2's deliberate cost."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

XSS = "<script>alert('x')</script><img src=x onerror=alert(1)>"


class Api:
    """A tiny client: JSON in, JSON out, with the bearer token of one key."""

    def __init__(self, client: Client, token: str):
        self.client, self.headers = client, {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path: str, **params):
        return self.client.get(f"/api/v1{path}", params, **self.headers)

    def post(self, path: str, body=None):
        return self.client.post(f"/api/v1{path}", body, content_type="application/json", **self.headers)

    def patch(self, path: str, body=None):
        return self.client.patch(f"/api/v1{path}", body, content_type="application/json", **self.headers)

    def put(self, path: str, body=None):
        return self.client.put(f"/api/v1{path}", body, content_type="application/json", **self.headers)

    def delete(self, path: str):
        return self.client.delete(f"/api/v1{path}", **self.headers)


@pytest.fixture
def api(client, admin_user, api_token):
    return Api(client, api_token(admin_user))


def error(response, status: int, code: str | None = None) -> dict:
    """The error body, after checking the status and the shape every error has."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    assert all(set(d) == {"path", "message"} and d["message"] for d in body["error"]["details"])
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def paths(err: dict) -> dict[str, str]:
    return {d["path"]: d["message"] for d in err["details"]}


@pytest.fixture
def budget():
    return CustomField.objects.create(key="budget", label="Budget", field_type="number")


@pytest.fixture
def interest():
    return CustomField.objects.create(key="interest", label="Interest", field_type="multi_choice",
                                      choices=["MA", "CRM", "SFA"])


# --- Contacts: CRUD -----------------------------------------------------------------------------

def test_contact_round_trip(api, budget, interest, make_user):
    owner = make_user("sales", username="owner")
    created = api.post("/contacts", {
        "email": " ＴＡＲＯ.Yamada@Example.CO.JP ", "family_name": "山田", "given_name": "太郎",
        "family_name_kana": "ヤマダ", "prefecture": "東京都", "industry": "manufacturing",
        "lifecycle_stage": "mql", "owner_id": owner.pk, "tags": ["展示会", "DX", "展示会"],
        "custom": {"budget": "1,200", "interest": ["MA", "CRM"]},
    })
    assert created.status_code == 201, created.content
    contact = created.json()
    assert contact["email"] == "taro.yamada@example.co.jp"
    assert contact["full_name"] == "山田 太郎"
    assert (contact["prefecture"], contact["region"]) == ("13", "kanto")
    assert contact["tags"] == ["DX", "展示会"]
    assert contact["custom"] == {"budget": 1200, "interest": ["MA", "CRM"]}
    assert contact["owner_id"] == owner.pk and contact["source"] == "api"
    assert contact["company"]["domain"] == "example.co.jp"
    assert contact["lists"] == [] and contact["consents"] == {}
    assert contact["created_at"] and contact["updated_at"]

    fetched = api.get(f"/contacts/{contact['id']}")
    assert fetched.status_code == 200 and fetched.json() == contact

    patched = api.patch(f"/contacts/{contact['id']}", {"phone": "03-1234-5678", "custom": {"interest": None}})
    assert patched.status_code == 200, patched.content
    after = patched.json()
    assert after["phone"] == "03-1234-5678"
    assert after["custom"] == {"budget": 1200}  # merged: null removed one value, the other kept
    assert after["family_name"] == "山田" and after["tags"] == ["DX", "展示会"]  # fields not sent are kept
    assert after["updated_at"] > contact["updated_at"]

    deleted = api.delete(f"/contacts/{contact['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert not Contact.objects.filter(pk=contact["id"]).exists()
    error(api.get(f"/contacts/{contact['id']}"), 404, "not_found")


def test_contact_output_shows_lists_and_consents(api):
    contact = services.create_contact(None, {"email": "member@example.jp"})
    seminar = ContactList.objects.create(name="Seminar 2026")
    ListMembership.objects.create(contact_list=seminar, contact=contact)
    topic = SubscriptionTopic.objects.create(key="newsletter", name="Newsletter")
    Consent.objects.create(contact=contact, topic=topic, status="opted_in")
    out = api.get(f"/contacts/{contact.pk}").json()
    assert out["lists"] == [{"id": seminar.pk, "name": "Seminar 2026"}]
    assert out["consents"] == {"newsletter": "opted_in"}


def test_unknown_ids_are_404_in_shape(api):
    for response in (api.get("/contacts/999999"), api.patch("/contacts/999999", {"phone": "1"}),
                     api.delete("/contacts/999999"), api.get("/contacts/999999/consents"),
                     api.put("/contacts/999999/consents/newsletter", {"status": "opted_in"}),
                     api.get("/companies/999999"), api.patch("/companies/999999", {"name": "x"}),
                     api.delete("/companies/999999"), api.get("/custom-fields/999999"),
                     api.patch("/custom-fields/999999", {"label": "x"}), api.delete("/custom-fields/999999")):
        err = error(response, 404, "not_found")
        assert "999999" in err["message"]


def test_lookup_by_email_normalises_the_address(api):
    contact = services.create_contact(None, {"email": "hanako@example.jp"})
    found = api.get("/contacts/lookup", email="  ＨＡＮＡＫＯ@Example.JP ")
    assert found.status_code == 200 and found.json()["id"] == contact.pk
    assert "nobody@example.jp" in error(api.get("/contacts/lookup", email="nobody@example.jp"), 404)["message"]
    assert "email" in paths(error(api.get("/contacts/lookup", email="not an address"), 422, "invalid"))
    assert paths(error(api.get("/contacts/lookup"), 422)) == {"email": "is required"}


def test_existing_email_is_a_conflict(api):
    services.create_contact(None, {"email": "taken@example.jp"})
    other = services.create_contact(None, {"email": "other@example.jp"})
    err = error(api.post("/contacts", {"email": "TAKEN@example.jp"}), 409, "conflict")
    assert "taken@example.jp" in paths(err)["email"]
    err = error(api.patch(f"/contacts/{other.pk}", {"email": "taken@example.jp"}), 409, "conflict")
    assert set(paths(err)) == {"email"}
    assert Contact.objects.get(pk=other.pk).email == "other@example.jp"


def test_invalid_values_are_422_with_paths(api, budget):
    CustomField.objects.create(key="region_code", label="Region code", field_type="text", required=True)
    before = Contact.objects.count()
    err = error(api.post("/contacts", {
        "email": "taro@@example.jp", "prefecture": "Atlantis", "lifecycle_stage": "hot",
        "custom": {"budget": "lots", "nope": 1},
    }), 422, "invalid")
    assert set(paths(err)) == {"email", "prefecture", "lifecycle_stage", "custom.budget", "custom.nope",
                               "custom.region_code"}
    assert "not a number" in paths(err)["custom.budget"]
    assert paths(err)["custom.nope"] == "is not a defined custom field"
    assert paths(err)["custom.region_code"] == "is required"
    assert Contact.objects.count() == before


def test_wrong_types_and_unknown_fields_are_422_with_paths(api, make_user):
    err = error(api.post("/contacts", {"family_name": 3, "tags": "a,b", "owner_id": "me", "nickname": "x",
                                       "custom": ["budget"]}), 422, "invalid")
    assert set(paths(err)) == {"family_name", "tags", "owner_id", "nickname", "custom"}
    assert paths(err)["nickname"] == "is not a known field"
    assert paths(error(api.post("/contacts", {"tags": ["ok", 7]}), 422))["tags.1"]
    assert "no user" in paths(error(api.post("/contacts", {"owner_id": 987654}), 422))["owner_id"]
    assert paths(error(api.post("/contacts", {"language": "fr"}), 422))["language"]
    assert Contact.objects.count() == 0


def test_malformed_and_non_json_bodies(api, client, admin_user, api_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(admin_user)}"}
    err = error(client.post("/api/v1/contacts", '{"email": "a@example.jp",', content_type="application/json",
                            **headers), 400, "malformed_json")
    assert set(paths(err)) == {"body"}
    err = error(client.post("/api/v1/contacts", b"\xff\xfe{", content_type="application/json", **headers), 400)
    assert set(paths(err)) == {"body"}
    err = error(client.post("/api/v1/contacts", {"email": "a@example.jp"}, **headers), 415, "unsupported_media_type")
    assert "application/json" in err["message"]
    err = error(client.post("/api/v1/contacts", "email=a@example.jp",
                            content_type="application/x-www-form-urlencoded", **headers), 415)
    assert set(paths(error(api.post("/contacts", [1, 2]), 422))) == {"body"}
    assert paths(error(client.post("/api/v1/contacts", "", content_type="application/json", **headers), 422)) == {
        "body": "is required"}
    err = error(client.patch("/api/v1/companies/1", "{nope", content_type="application/json", **headers), 400)
    assert Contact.objects.count() == 0


def test_wrong_method_and_unknown_path_are_in_shape(api):
    err = error(api.put("/contacts", {}), 405, "method_not_allowed")
    assert "PUT" in err["message"]
    response = api.post("/contacts/lookup", {})
    error(response, 405)
    assert response["Allow"] == "GET"
    assert "openapi.json" in error(api.get("/no-such-thing"), 404, "not_found")["message"]
    error(api.get("/"), 404, "not_found")
    assert "contact_id" in paths(error(api.get("/contacts/abc"), 422))


def test_server_errors_are_in_shape(api, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "delete_contact", broken)
    contact = services.create_contact(None, {"email": "fire@example.jp"})
    api.client.raise_request_exception = False
    err = error(api.delete(f"/contacts/{contact.pk}"), 500, "server_error")
    assert "fire" not in err["message"]  # the internals stay in the log


def test_strings_come_back_verbatim_as_json_data(api):
    CustomField.objects.create(key="note", label="Note", field_type="text")
    response = api.post("/contacts", {"family_name": XSS, "job_title": '"quoted" & <b>', "tags": [XSS],
                                      "custom": {"note": XSS}})
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    data = json.loads(response.content)
    assert data["family_name"] == XSS and data["tags"] == [XSS] and data["custom"]["note"] == XSS
    assert data["job_title"] == '"quoted" & <b>'
    listed = api.get("/contacts", q="<script>").json()["items"]
    assert listed[0]["family_name"] == XSS
    assert "&lt;" not in response.content.decode()  # data, not HTML: not entity-escaped


# --- Contacts: filters and pages ----------------------------------------------------------------

@pytest.fixture
def crowd(make_user, budget, interest):
    """23 contacts with names sharing furigana (ties broken by id), stages, tags and custom values."""
    owner = make_user("sales", username="crowd-owner")
    contacts = []
    for i in range(23):
        contacts.append(services.create_contact(None, {
            "email": f"person{i:02d}@example{i % 3}.co.jp", "family_name": f"名前{i}",
            "family_name_kana": ["アオキ", "イトウ", "ウエダ"][i % 3],
            "lifecycle_stage": "mql" if i % 2 else "lead", "prefecture": "大阪府" if i % 4 == 0 else "東京都",
            "tags": ["vip"] if i % 5 == 0 else [], "owner_id": owner.pk if i < 4 else None,
            "custom": {"budget": i * 100, "interest": ["MA"] if i % 2 else ["CRM", "SFA"]},
        }))
    return contacts


def walk(api, direction: str = "next", **params) -> list[list[int]]:
    """Every page from the first (or, backwards, from the last) following the cursors."""
    pages, cursor = [], ""
    while True:
        response = api.get("/contacts", **params, cursor=cursor) if cursor else api.get("/contacts", **params)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([c["id"] for c in body["items"]])
        cursor = body["next_cursor"] if direction == "next" else body["prev_cursor"]
        if direction == "prev" and not pages[-1]:
            break
        if not cursor:
            return pages
        assert len(pages) < 50
    return pages


@pytest.mark.parametrize("sort", ["newest", "oldest", "name", "updated", "company", "activity"])
def test_cursor_pages_cover_everything_once_both_ways(api, crowd, sort):
    forward = walk(api, sort=sort, limit=5)
    ids = [i for page in forward for i in page]
    assert len(ids) == len(set(ids)) == 23  # no duplicates, no gaps
    assert [len(p) for p in forward] == [5, 5, 5, 5, 3]
    if sort == "newest":
        assert ids == sorted(ids, reverse=True)
    if sort == "name":
        kana = {c.pk: c.family_name_kana for c in crowd}
        assert [kana[i] for i in ids] == sorted(kana[i] for i in ids)

    # From the last page back to the first with prev_cursor: the same pages, in reverse.
    last = api.get("/contacts", sort=sort, limit=5)
    while last.json()["next_cursor"]:
        last = api.get("/contacts", sort=sort, limit=5, cursor=last.json()["next_cursor"])
    backward, body = [], last.json()
    backward.append([c["id"] for c in body["items"]])
    while body["prev_cursor"]:
        body = api.get("/contacts", sort=sort, limit=5, cursor=body["prev_cursor"]).json()
        backward.append([c["id"] for c in body["items"]])
    assert backward[::-1] == forward
    assert body["prev_cursor"] is None  # the first page has none


def test_list_counts_and_envelope(api, crowd, monkeypatch):
    body = api.get("/contacts", limit=200).json()
    assert set(body) == {"items", "next_cursor", "prev_cursor", "count", "count_capped"}
    assert (body["count"], body["count_capped"], body["next_cursor"], body["prev_cursor"]) == (23, False, None, None)
    assert len(body["items"]) == 23
    monkeypatch.setattr(queries, "COUNT_CAP", 10)
    monkeypatch.setattr(queries.capped_count, "__defaults__", (10,))
    capped = api.get("/contacts", limit=1).json()
    assert (capped["count"], capped["count_capped"]) == (10, True)


def test_filters(api, crowd):
    def ids(**params) -> set[int]:
        response = api.get("/contacts", limit=200, **params)
        assert response.status_code == 200, response.content
        assert response.json()["count"] == len(response.json()["items"])
        return {c["id"] for c in response.json()["items"]}

    by_pk = {c.pk: c for c in crowd}
    assert ids(stage="mql") == {pk for pk, c in by_pk.items() if c.lifecycle_stage == "mql"}
    assert ids(prefecture="大阪府") == ids(prefecture="27") == {pk for pk, c in by_pk.items() if c.prefecture == "27"}
    assert ids(tag="vip") == {crowd[i].pk for i in (0, 5, 10, 15, 20)}
    assert ids(owner=str(crowd[0].owner_id)) == {c.pk for c in crowd[:4]}
    assert len(ids(owner="none")) == 19
    assert ids(email="person07@example1.co.jp") == {crowd[7].pk}
    assert ids(q="person07@") == {crowd[7].pk}
    assert ids(company=str(crowd[1].company_id)) == {c.pk for c in crowd if c.company_id == crowd[1].company_id}
    assert ids(**{"custom.interest": "CRM"}) == {c.pk for i, c in enumerate(crowd) if i % 2 == 0}
    assert ids(**{"custom.interest": "CRM,SFA"}) == ids(**{"custom.interest": "SFA"})
    assert ids(**{"custom.interest": "MA,CRM"}) == set()
    assert ids(**{"custom.budget": "300"}) == ids(**{"custom.budget": "３００"}) == {crowd[3].pk}  # read as a number
    assert ids(stage="mql", **{"custom.interest": "MA"}) == ids(stage="mql")
    assert ids(stage="lead", prefecture="27", tag="vip") == {crowd[0].pk, crowd[20].pk}
    assert ids(do_not_contact="true") == set()
    assert ids(created_after="2000-01-01") == set(by_pk)


def test_bad_filters_are_400_naming_the_parameter(api, crowd):
    assert "stage" in paths(error(api.get("/contacts", stage="hot"), 400, "bad_request"))
    assert "cursor" in paths(error(api.get("/contacts", cursor="not-a-cursor"), 400))
    assert "sort" in paths(error(api.get("/contacts", sort="random"), 400))
    assert "created_after" in paths(error(api.get("/contacts", created_after="yesterday"), 400))
    assert paths(error(api.get("/contacts", stag="mql"), 400)) == {"stag": "is not a known parameter"}
    assert "custom.nope" in paths(error(api.get("/contacts", **{"custom.nope": "1"}), 400))
    assert "not a number" in paths(error(api.get("/contacts", **{"custom.budget": "lots"}), 400))["custom.budget"]
    assert "custom.interest" in paths(error(api.get("/contacts", **{"custom.interest": "ERP"}), 400))
    assert "limit" in paths(error(api.get("/contacts", limit=201), 422, "invalid"))
    assert "limit" in paths(error(api.get("/contacts", limit="many"), 422))


# --- Consent ------------------------------------------------------------------------------------

def test_consent_status_ledger_and_audit(api):
    contact = services.create_contact(None, {"email": "consent@example.jp"})
    newsletter = SubscriptionTopic.objects.create(key="newsletter", name="Newsletter")
    SubscriptionTopic.objects.create(key="events", name="Events", requires_opt_in=False)
    before = api.get(f"/contacts/{contact.pk}/consents").json()
    assert {t["topic"]: t["status"] for t in before["topics"]} == {"newsletter": "unknown", "events": "unknown"}
    assert before["ledger"] == [] and before["do_not_contact"] is False

    body = {"status": "opted_in", "source": "https://example.jp/form", "text_shown": f"Send me news {XSS}",
            "ip": "203.0.113.9"}
    response = api.put(f"/contacts/{contact.pk}/consents/newsletter", body)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "opted_in" and response.json()["changed"] is True
    again = api.put(f"/contacts/{contact.pk}/consents/newsletter", body)
    assert again.json()["changed"] is False
    assert Consent.objects.get(contact=contact, topic=newsletter).status == "opted_in"

    after = api.get(f"/contacts/{contact.pk}/consents").json()
    assert len(after["ledger"]) == after["ledger_count"] == 1
    row = after["ledger"][0]
    assert (row["topic"], row["status"], row["method"], row["source"], row["ip"], row["actor"]) == (
        "newsletter", "opted_in", "api", "https://example.jp/form", "203.0.113.9", "admin")
    assert row["text_shown"] == body["text_shown"]
    assert api.get(f"/contacts/{contact.pk}").json()["consents"] == {"newsletter": "opted_in"}
    entry = AuditLog.objects.get(action="consent", object_id=str(contact.pk))
    assert entry.changes == {"consent.newsletter": ["unknown", "opted_in"]}
    assert entry.actor_label == "admin (API key admin-key)"

    out = api.put(f"/contacts/{contact.pk}/consents/newsletter", {"status": "opted_out"}).json()
    assert out["status"] == "opted_out"
    assert ConsentRecord.objects.filter(contact=contact).first().source == "API key admin-key"
    assert api.put(f"/contacts/{contact.pk}/consents/newsletter", {"status": "unknown"}).json()["status"] == "unknown"


def test_consent_errors(api):
    contact = services.create_contact(None, {"email": "consent@example.jp"})
    SubscriptionTopic.objects.create(key="newsletter", name="Newsletter")
    assert "nope" in error(api.put(f"/contacts/{contact.pk}/consents/nope", {"status": "opted_in"}), 404)["message"]
    assert "status" in paths(error(api.put(f"/contacts/{contact.pk}/consents/newsletter", {"status": "yes"}), 422))
    assert "ip" in paths(error(api.put(f"/contacts/{contact.pk}/consents/newsletter",
                                       {"status": "opted_in", "ip": "999.1.1.1"}), 422))
    assert "limit" in paths(error(api.get(f"/contacts/{contact.pk}/consents", limit=0), 422))
    assert not ConsentRecord.objects.exists()


# --- Companies ----------------------------------------------------------------------------------

def test_company_round_trip(api, make_user):
    CustomField.objects.create(target="company", key="rank", label="Rank", field_type="choice", choices=["A", "B"])
    owner = make_user("marketer", username="acct")
    created = api.post("/companies", {"name": "株式会社サンプル", "domain": "@Sample.CO.JP", "employees": 250,
                                      "prefecture": "Osaka", "owner_id": owner.pk, "custom": {"rank": "A"}})
    assert created.status_code == 201, created.content
    company = created.json()
    assert (company["domain"], company["company_size"], company["prefecture"]) == ("sample.co.jp", "100-299", "27")
    assert company["custom"] == {"rank": "A"} and company["owner_id"] == owner.pk
    assert api.get(f"/companies/{company['id']}").json() == company

    patched = api.patch(f"/companies/{company['id']}", {"phone": "06-1111-2222"})
    assert patched.status_code == 200 and patched.json()["phone"] == "06-1111-2222"
    assert patched.json()["name"] == "株式会社サンプル"

    contact = api.post("/contacts", {"email": "someone@sample.co.jp"}).json()
    assert contact["company"] == {"id": company["id"], "name": "株式会社サンプル", "domain": "sample.co.jp"}
    assert api.delete(f"/companies/{company['id']}").status_code == 204
    assert api.get(f"/contacts/{contact['id']}").json()["company"] is None  # the contact stays, unlinked
    error(api.get(f"/companies/{company['id']}"), 404)


def test_company_errors(api):
    Company.objects.create(name="Taken", domain="taken.jp")
    err = error(api.post("/companies", {"name": "Other", "domain": "TAKEN.jp"}), 409, "conflict")
    assert set(paths(err)) == {"domain"}
    assert paths(error(api.post("/companies", {"domain": "x.jp"}), 422)) == {"name": "is required"}
    err = error(api.post("/companies", {"name": " ", "prefecture": "Narnia", "employees": -1}), 422)
    assert "employees" in paths(err)  # a type/range error is reported before the meaning of the values
    err = error(api.post("/companies", {"name": " ", "prefecture": "Narnia", "custom": {"x": 1}}), 422)
    assert set(paths(err)) == {"name", "prefecture", "custom.x"}
    other = Company.objects.create(name="Second", domain="second.jp")
    assert set(paths(error(api.patch(f"/companies/{other.pk}", {"domain": "taken.jp"}), 409))) == {"domain"}
    assert Company.objects.get(pk=other.pk).domain == "second.jp"


def test_company_pages_and_filters(api):
    made = [Company.objects.create(name=f"Company {i}", domain=f"c{i}.example.jp",
                                   industry="it" if i % 2 else "retail", prefecture="13") for i in range(12)]
    pages, cursor = [], None
    while True:
        body = api.get("/companies", limit=5, **({"cursor": cursor} if cursor else {})).json()
        pages.append([c["id"] for c in body["items"]])
        cursor = body["next_cursor"]
        if not cursor:
            break
    ids = [i for page in pages for i in page]
    assert ids == sorted((c.pk for c in made), reverse=True) and body["count"] == 12
    back = api.get("/companies", limit=5, cursor=body["prev_cursor"]).json()
    assert [c["id"] for c in back["items"]] == pages[-2]
    oldest = api.get("/companies", sort="oldest", limit=3).json()["items"]
    assert [c["id"] for c in oldest] == [c.pk for c in made[:3]]
    assert api.get("/companies", industry="it").json()["count"] == 6
    assert api.get("/companies", q="c1").json()["count"] == 3  # c1, c10, c11
    assert api.get("/companies", domain="C3.example.jp").json()["items"][0]["id"] == made[3].pk
    assert "industry" in paths(error(api.get("/companies", industry="wizardry"), 400))
    assert "sort" in paths(error(api.get("/companies", sort="name"), 400))
    assert "colour" in paths(error(api.get("/companies", colour="red"), 400))


# --- Custom fields ------------------------------------------------------------------------------

def test_custom_field_round_trip_and_audit(api):
    created = api.post("/custom-fields", {"key": "plan", "label": "Plan", "field_type": "choice",
                                          "choices": [" Free", "Pro "], "required": False})
    assert created.status_code == 201, created.content
    field = created.json()
    assert (field["target"], field["key"], field["choices"]) == ("contact", "plan", ["Free", "Pro"])
    assert api.get(f"/custom-fields/{field['id']}").json() == field
    company_field = api.post("/custom-fields", {"key": "plan", "label": "Plan", "target": "company"})
    assert company_field.status_code == 201  # unique per target only
    listed = api.get("/custom-fields", target="contact").json()["items"]
    assert [f["id"] for f in listed] == [field["id"]]
    assert len(api.get("/custom-fields").json()["items"]) == 2

    patched = api.patch(f"/custom-fields/{field['id']}", {"label": "Plan name", "choices": ["Free", "Pro", "Team"]})
    assert patched.status_code == 200 and patched.json()["choices"] == ["Free", "Pro", "Team"]
    assert api.post("/contacts", {"custom": {"plan": "Team"}}).status_code == 201

    assert api.delete(f"/custom-fields/{field['id']}").status_code == 204
    assert not CustomField.objects.filter(pk=field["id"]).exists()
    entries = AuditLog.objects.filter(object_type="contacts.customfield", object_id=str(field["id"])).order_by("id")
    assert [e.action for e in entries] == ["create", "update", "delete"]
    assert all(e.actor_label == "admin (API key admin-key)" for e in entries)
    assert entries[1].changes == {"label": ["Plan", "Plan name"], "choices": [["Free", "Pro"], ["Free", "Pro", "Team"]]}


def test_custom_field_errors(api, budget):
    err = error(api.post("/custom-fields", {"key": "Budget 2026", "label": "B"}), 422)
    assert set(paths(err)) == {"key"}
    assert set(paths(error(api.post("/custom-fields", {"key": "2026budget", "label": "B"}), 422))) == {"key"}
    err = error(api.post("/custom-fields", {"key": "budget", "label": "Again"}), 409, "conflict")
    assert "budget" in paths(err)["key"]
    err = error(api.post("/custom-fields", {"key": "tier", "label": "Tier", "field_type": "choice"}), 422)
    assert "at least one choice" in paths(err)["choices"]
    err = error(api.post("/custom-fields", {"key": "tier", "label": "Tier", "field_type": "choice",
                                            "choices": ["A", " "]}), 422)
    assert "choices.1" in paths(err)
    err = error(api.post("/custom-fields", {"key": "tier", "label": "Tier", "field_type": "colour"}), 422)
    assert "field_type" in paths(err)
    assert {"label"} == set(paths(error(api.post("/custom-fields", {"key": "tier"}), 422)))
    err = error(api.patch(f"/custom-fields/{budget.pk}", {"key": "money", "target": "company"}), 422)
    assert set(paths(err)) == {"key", "target"}
    assert "choices" in paths(error(api.patch(f"/custom-fields/{budget.pk}", {"choices": ["a"]}), 422))
    assert "label" in paths(error(api.patch(f"/custom-fields/{budget.pk}", {"label": None}), 422))
    budget.refresh_from_db()
    assert (budget.key, budget.label, budget.choices) == ("budget", "Budget", [])
    assert not AuditLog.objects.filter(object_type="contacts.customfield").exists()


# --- Audit --------------------------------------------------------------------------------------

def test_contact_and_company_changes_are_audited_with_the_key_name(client, make_user, api_token):
    marketer = make_user("marketer", username="mika")
    api = Api(client, api_token(marketer))
    contact = api.post("/contacts", {"email": "audit@example.jp", "family_name": "監査"}).json()
    api.patch(f"/contacts/{contact['id']}", {"family_name": "変更", "tags": ["new"]})
    api.delete(f"/contacts/{contact['id']}")
    company = api.post("/companies", {"name": "Audit Co"}).json()
    api.patch(f"/companies/{company['id']}", {"name": "Audit Co 2"})
    entries = list(AuditLog.objects.order_by("id"))
    assert [(e.object_type, e.action) for e in entries] == [
        ("contacts.contact", "create"), ("contacts.contact", "update"), ("contacts.contact", "delete"),
        ("contacts.company", "create"), ("contacts.company", "update"),
    ]
    assert {e.actor_label for e in entries} == {"mika (API key mika-key)"}
    assert all(e.actor_id == marketer.pk for e in entries)
    assert entries[1].changes == {"family_name": ["監査", "変更"], "tags": [[], ["new"]]}
    assert entries[4].changes == {"name": ["Audit Co", "Audit Co 2"]}


# --- Session auth and the schema ----------------------------------------------------------------

def test_session_users_use_the_api_with_csrf(admin_user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    assert browser.get("/api/v1/contacts").status_code == 200
    err = error(browser.post("/api/v1/contacts", {"email": "s@example.jp"}, content_type="application/json"), 403)
    assert err["code"] == "csrf_failed"
    browser.get("/contacts/")  # any page sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    created = browser.post("/api/v1/contacts", {"email": "s@example.jp"}, content_type="application/json",
                           HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201, created.content
    entry = AuditLog.objects.get(action="create", object_type="contacts.contact")
    assert entry.actor_label == "admin"
    bad_key = browser.get("/api/v1/contacts", HTTP_AUTHORIZATION="Bearer kz_nope_nope")
    error(bad_key, 401, "unauthenticated")  # a bad key is refused even with a session


def test_openapi_schema_lists_the_endpoints(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path, methods in {
        "/api/v1/contacts": {"get", "post"}, "/api/v1/contacts/lookup": {"get"},
        "/api/v1/contacts/{contact_id}": {"get", "patch", "delete"},
        "/api/v1/contacts/{contact_id}/consents": {"get"},
        "/api/v1/contacts/{contact_id}/consents/{topic_key}": {"put"},
        "/api/v1/companies": {"get", "post"}, "/api/v1/companies/{company_id}": {"get", "patch", "delete"},
        "/api/v1/custom-fields": {"get", "post"}, "/api/v1/custom-fields/{field_id}": {"get", "patch", "delete"},
    }.items():
        assert methods <= set(schema["paths"][path]), path
    listing = schema["paths"]["/api/v1/contacts"]["get"]
    params = {p["name"] for p in listing["parameters"]}
    assert set(queries.FILTER_KEYS) | {"sort", "cursor", "limit"} <= params
    assert "403" in listing["responses"] and "ErrorOut" in json.dumps(listing["responses"]["403"])
    assert {"KeyAuth", "SessionAuth"} <= set(schema["components"]["securitySchemes"])


def test_custom_filters_by_type(api):
    CustomField.objects.create(key="since", label="Customer since", field_type="date")
    CustomField.objects.create(key="active", label="Active", field_type="boolean")
    CustomField.objects.create(key="plan", label="Plan", field_type="choice", choices=["Free", "Pro"])
    first = services.create_contact(None, {"custom": {"since": "2024-04-01", "active": True, "plan": "Pro"}})
    second = services.create_contact(None, {"custom": {"since": "2025-01-10", "active": False, "plan": "Free"}})

    def ids(**params) -> list[int]:
        return [c["id"] for c in api.get("/contacts", **params).json()["items"]]

    assert ids(**{"custom.since": "2024/4/1"}) == [first.pk]
    assert ids(**{"custom.active": "はい"}) == [first.pk]
    assert ids(**{"custom.active": "false"}) == [second.pk]
    assert ids(**{"custom.plan": "Free"}) == [second.pk]
    assert ids(**{"custom.plan": ""}) == [second.pk, first.pk]  # an empty filter is no filter


def test_a_page_takes_a_fixed_number_of_queries(api, crowd, django_assert_max_num_queries):
    topic = SubscriptionTopic.objects.create(key="newsletter", name="Newsletter")
    seminar = ContactList.objects.create(name="Seminar")
    for contact in crowd:
        Consent.objects.create(contact=contact, topic=topic, status="opted_in")
        ListMembership.objects.create(contact_list=seminar, contact=contact)
    # key, key last used, field definitions, page, tags, lists, consents, count: the same for 5 or 23 rows
    with django_assert_max_num_queries(8):
        small = api.get("/contacts", limit=5, **{"custom.budget": "300"})
    with django_assert_max_num_queries(7):
        full = api.get("/contacts", limit=200)
    assert small.status_code == full.status_code == 200
    assert all(c["consents"] == {"newsletter": "opted_in"} and c["lists"][0]["name"] == "Seminar"
               for c in full.json()["items"])


def test_a_clash_found_only_by_the_database_is_still_a_409(api, monkeypatch):
    """Two requests may pass the existence check together; the unique constraint decides."""
    services.create_contact(None, {"email": "race@example.jp"})
    with pytest.raises(services.ContactConflict) as raised:
        services._save_unique_email(Contact(email="race@example.jp"))
    assert set(raised.value.errors) == {"email"}
    assert Contact.objects.filter(email="race@example.jp").count() == 1  # and the connection still works

    Company.objects.create(name="First", domain="race.example.jp")
    monkeypatch.setattr(services, "clean_company_input", lambda data, existing=None: dict(data))
    err = error(api.post("/companies", {"name": "Second", "domain": "race.example.jp"}), 409, "conflict")
    assert set(paths(err)) == {"domain"}
    assert Company.objects.filter(domain="race.example.jp").count() == 1
