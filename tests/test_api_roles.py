"""Who may call what: every role and every key scope against every kind of endpoint, the
401s for missing, bad and revoked credentials, and the order of checks (403 before 404/422)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from kizuna.accounts.models import ApiKey, AuditLog
from kizuna.contacts import services
from kizuna.contacts.models import Company, ConsentRecord, Contact, CustomField, SubscriptionTopic

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """These tests log in with keys and force_login, never a password: skip Argon2's deliberate cost."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

ROLES = ["admin", "marketer", "sales", "viewer"]


@pytest.fixture
def world(users):
    """A contact owned by the sales user, one owned by the marketer, a company, a field, a topic."""
    return {
        "own": services.create_contact(None, {"email": "own@example.jp", "owner_id": users["sales"].pk}),
        "other": services.create_contact(None, {"email": "other@example.jp", "owner_id": users["marketer"].pk}),
        "company": Company.objects.create(name="Matrix Co", domain="matrix.example.jp"),
        "field": CustomField.objects.create(key="budget", label="Budget", field_type="number"),
        "topic": SubscriptionTopic.objects.create(key="newsletter", name="Newsletter"),
    }


def _json(client, method: str, path: str, body: dict, headers: dict):
    return getattr(client, method)(f"/api/v1{path}", body, content_type="application/json", **headers)


# name: (call(client, world, headers) -> response, status on success)
ENDPOINTS = {
    "contacts.list": (lambda c, w, h: c.get("/api/v1/contacts", **h), 200),
    "contacts.get": (lambda c, w, h: c.get(f"/api/v1/contacts/{w['other'].pk}", **h), 200),
    "contacts.lookup": (lambda c, w, h: c.get("/api/v1/contacts/lookup", {"email": "other@example.jp"}, **h), 200),
    "contacts.consents": (lambda c, w, h: c.get(f"/api/v1/contacts/{w['other'].pk}/consents", **h), 200),
    "contacts.create": (lambda c, w, h: _json(c, "post", "/contacts", {"email": "new@example.jp"}, h), 201),
    "contacts.update_own": (lambda c, w, h: _json(c, "patch", f"/contacts/{w['own'].pk}", {"phone": "1"}, h), 200),
    "contacts.update_other": (lambda c, w, h: _json(c, "patch", f"/contacts/{w['other'].pk}", {"phone": "1"}, h),
                              200),
    "contacts.consent_own": (lambda c, w, h: _json(c, "put", f"/contacts/{w['own'].pk}/consents/newsletter",
                                                   {"status": "opted_in"}, h), 200),
    "contacts.consent_other": (lambda c, w, h: _json(c, "put", f"/contacts/{w['other'].pk}/consents/newsletter",
                                                     {"status": "opted_in"}, h), 200),
    "contacts.delete": (lambda c, w, h: c.delete(f"/api/v1/contacts/{w['other'].pk}", **h), 204),
    "companies.list": (lambda c, w, h: c.get("/api/v1/companies", **h), 200),
    "companies.get": (lambda c, w, h: c.get(f"/api/v1/companies/{w['company'].pk}", **h), 200),
    "companies.create": (lambda c, w, h: _json(c, "post", "/companies", {"name": "New Co"}, h), 201),
    "companies.update": (lambda c, w, h: _json(c, "patch", f"/companies/{w['company'].pk}", {"phone": "1"}, h), 200),
    "companies.delete": (lambda c, w, h: c.delete(f"/api/v1/companies/{w['company'].pk}", **h), 204),
    "fields.list": (lambda c, w, h: c.get("/api/v1/custom-fields", **h), 200),
    "fields.get": (lambda c, w, h: c.get(f"/api/v1/custom-fields/{w['field'].pk}", **h), 200),
    "fields.create": (lambda c, w, h: _json(c, "post", "/custom-fields", {"key": "tier", "label": "Tier"}, h), 201),
    "fields.update": (lambda c, w, h: _json(c, "patch", f"/custom-fields/{w['field'].pk}", {"label": "B"}, h), 200),
    "fields.delete": (lambda c, w, h: c.delete(f"/api/v1/custom-fields/{w['field'].pk}", **h), 204),
}
READS = {"contacts.list", "contacts.get", "contacts.lookup", "contacts.consents", "companies.list",
         "companies.get", "fields.list", "fields.get"}
WRITES = set(ENDPOINTS) - READS
FIELD_WRITES = {"fields.create", "fields.update", "fields.delete"}
ALLOWED = {
    "admin": set(ENDPOINTS),
    "marketer": set(ENDPOINTS) - FIELD_WRITES,
    "sales": READS | {"contacts.update_own", "contacts.consent_own"},
    "viewer": READS,
}


def _state() -> tuple:
    """Everything a denied call must leave as it was."""
    return (
        AuditLog.objects.count(), ConsentRecord.objects.count(),
        sorted(Contact.objects.values_list("id", "phone")), sorted(Company.objects.values_list("id", "phone")),
        sorted(CustomField.objects.values_list("id", "label")),
    )


def _check(response, endpoint: str, allowed: bool) -> None:
    _call, ok = ENDPOINTS[endpoint]
    if allowed:
        assert response.status_code == ok, (endpoint, response.content)
        return
    assert response.status_code == 403, (endpoint, response.content)
    error = response.json()["error"]
    assert error["code"] == "forbidden" and "may" in error["message"]


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix_with_api_keys(client, users, world, api_token, role, endpoint):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users[role], ('read', 'write'))}"}
    allowed = endpoint in ALLOWED[role]
    before = _state()
    _check(ENDPOINTS[endpoint][0](client, world, headers), endpoint, allowed)
    if not allowed:
        assert _state() == before


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix_with_sessions(client, users, world, role, endpoint):
    client.force_login(users[role])
    allowed = endpoint in ALLOWED[role]
    before = _state()
    response = ENDPOINTS[endpoint][0](client, world, {})
    _check(response, endpoint, allowed)
    if not allowed:
        assert _state() == before
        message = response.json()["error"]["message"]
        assert f"your role ({role})" in message or "only the contacts you own" in message


SCOPE_ALLOWED = {
    ("read",): READS,
    ("write",): WRITES,
    ("ingest",): set(),
    ("read", "write"): set(ENDPOINTS),
    ("ingest", "read"): READS,
}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("scopes", list(SCOPE_ALLOWED), ids="+".join)
def test_scope_matrix_for_an_admin_key(client, users, world, api_token, scopes, endpoint):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users['admin'], scopes)}"}
    allowed = endpoint in SCOPE_ALLOWED[scopes]
    before = _state()
    response = ENDPOINTS[endpoint][0](client, world, headers)
    _check(response, endpoint, allowed)
    if not allowed:
        assert _state() == before
        message = response.json()["error"]["message"]
        assert "API key" in message and f"scopes ({', '.join(scopes)})" in message


def test_a_key_never_exceeds_its_users_role(client, users, world, api_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users['viewer'], ('read', 'write'))}"}
    response = _json(client, "post", "/contacts", {"email": "x@example.jp"}, headers)
    assert response.status_code == 403
    message = response.json()["error"]["message"]
    assert "contacts.change" in message and "role (viewer)" in message
    assert not Contact.objects.filter(email="x@example.jp").exists()


def test_an_ingest_key_cannot_read_contacts(client, users, world, api_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users['admin'], ('ingest',))}"}
    response = client.get("/api/v1/contacts", {"limit": 0, "nonsense": 1}, **headers)
    assert response.status_code == 403  # refused before its bad parameters are even looked at
    assert "contacts.view" in response.json()["error"]["message"]


def test_capability_is_checked_before_lookup_and_validation(client, users, world, api_token):
    viewer = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users['viewer'])}"}
    assert _json(client, "post", "/contacts", {"email": 5, "nope": True}, viewer).status_code == 403
    assert client.post("/api/v1/contacts", "{broken", content_type="application/json", **viewer).status_code == 403
    assert _json(client, "patch", "/contacts/999999", {"phone": "1"}, viewer).status_code == 403
    assert client.delete("/api/v1/contacts/999999", **viewer).status_code == 403
    assert _json(client, "post", "/custom-fields", {"key": "BAD KEY"}, viewer).status_code == 403
    sales = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users['sales'])}"}
    assert _json(client, "post", "/custom-fields", {}, sales).status_code == 403
    # Ownership can only be judged once the contact is found: then 404 for a missing one.
    assert _json(client, "patch", "/contacts/999999", {"phone": "1"}, sales).status_code == 404


def test_sales_change_their_own_contacts_but_not_their_owner(client, users, world, api_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users['sales'])}"}
    own = world["own"]
    response = _json(client, "patch", f"/contacts/{own.pk}", {"lifecycle_stage": "sql", "phone": "090"}, headers)
    assert response.status_code == 200 and response.json()["lifecycle_stage"] == "sql"
    same_owner = _json(client, "patch", f"/contacts/{own.pk}", {"owner_id": users["sales"].pk}, headers)
    assert same_owner.status_code == 200
    response = _json(client, "patch", f"/contacts/{own.pk}", {"owner_id": users["marketer"].pk}, headers)
    assert response.status_code == 403
    assert response.json()["error"]["details"] == [{"path": "owner_id", "message": "may not change"}]
    response = _json(client, "patch", f"/contacts/{world['other'].pk}", {"phone": "1"}, headers)
    assert response.status_code == 403 and "own" in response.json()["error"]["message"]
    own.refresh_from_db()
    assert (own.owner_id, own.lifecycle_stage) == (users["sales"].pk, "sql")
    entry = AuditLog.objects.filter(object_id=str(own.pk), action="update").first()
    assert entry.actor_label == "sales-user (API key sales-user-key)"
    # A write-only key acting for sales keeps the same limits.
    write_only = {"HTTP_AUTHORIZATION": f"Bearer {api_token(users['sales'], ('write',))}"}
    assert _json(client, "patch", f"/contacts/{own.pk}", {"phone": "080"}, write_only).status_code == 200
    assert _json(client, "patch", f"/contacts/{world['other'].pk}", {"phone": "2"}, write_only).status_code == 403
    assert client.delete(f"/api/v1/contacts/{own.pk}", **headers).status_code == 403


@pytest.mark.parametrize("method", ["get", "post"])
def test_bad_credentials_are_401(client, users, world, api_token, method):
    token = api_token(users["admin"])
    revoked = api_token(users["admin"])
    ApiKey.objects.filter(prefix=revoked.split("_")[1]).update(revoked_at=timezone.now())
    users["viewer"].is_active = False
    users["viewer"].save()
    inactive = api_token(users["viewer"])
    prefix = token.split("_")[1]
    for authorization in (None, "", "Bearer", "Bearer ", "Bearer nonsense", f"Bearer kz_{prefix}_wrong-secret",
                          f"Bearer {revoked}", f"Bearer {inactive}", f"Basic {token}", token):
        headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
        if method == "get":
            response = client.get("/api/v1/contacts", **headers)
        else:
            response = _json(client, "post", "/contacts", {"email": "x@example.jp"}, headers)
        assert response.status_code == 401, (authorization, response.content)
        assert response.json()["error"]["code"] == "unauthenticated"
        assert "Bearer" in response.json()["error"]["message"]
    assert not Contact.objects.filter(email="x@example.jp").exists()
    assert client.get("/api/v1/contacts", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_using_a_key_records_when(client, users, api_token):
    token = api_token(users["viewer"])
    key = ApiKey.objects.get(prefix=token.split("_")[1])
    assert key.last_used_at is None
    client.get("/api/v1/companies", HTTP_AUTHORIZATION=f"Bearer {token}")
    key.refresh_from_db()
    assert key.last_used_at is not None
