"""The segments REST API: create, read, change and delete with the filter checked (the path of a
fault in the 422 body), names that clash (409), deletion refused while in use, the members in
cursor pages, the membership check, the live count, recompute through the worker, who may call
what, and the OpenAPI schema."""

from __future__ import annotations

import pytest

from kizuna.accounts.models import AuditLog
from kizuna.contacts.models import Contact
from kizuna.segments import membership
from kizuna.segments.models import Segment
from tests.test_api import Api, error, paths

pytestmark = pytest.mark.django_db
MAKERS = {"field": "industry", "op": "in", "value": ["manufacturing"]}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api(client, admin_user, api_token):
    return Api(client, api_token(admin_user))


@pytest.fixture
def contacts(db):
    return [Contact.objects.create(email=f"c{i}@example.jp", industry="manufacturing" if i % 2 else "retail")
            for i in range(7)]


def _computed(segment_id: int) -> None:
    membership.recompute(Segment.objects.get(pk=segment_id))


def test_create_read_update_delete(api, contacts, admin_user):
    created = api.post("/segments", {"name": "製造業", "description": "展示会", "filter": MAKERS})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "製造業" and body["filter"] == MAKERS and body["computing"] is True
    assert body["member_count"] == 0 and body["computed_at"] is None
    sid = body["id"]
    _computed(sid)
    got = api.get(f"/segments/{sid}").json()
    assert got["member_count"] == 3 and got["computing"] is False and got["compute_ms"] is not None
    assert [s["name"] for s in api.get("/segments").json()["items"]] == ["製造業"]

    renamed = api.patch(f"/segments/{sid}", {"name": "製造業の方"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "製造業の方"
    assert renamed.json()["computing"] is False  # the filter did not change
    refiltered = api.patch(f"/segments/{sid}", {"filter": {"not": MAKERS}})
    assert refiltered.json()["filter"] == {"not": MAKERS} and refiltered.json()["computing"] is True

    actions = list(AuditLog.objects.filter(object_type="segments.segment").order_by("id").values_list(
        "action", "actor_label"))
    assert actions == [("create", "admin (API key admin-key)"), ("update", "admin (API key admin-key)"),
                       ("update", "admin (API key admin-key)")]
    assert api.delete(f"/segments/{sid}").status_code == 204
    assert not Segment.objects.exists()
    error(api.get(f"/segments/{sid}"), 404, "not_found")


@pytest.mark.parametrize("tree,path,message", [
    ({"all": [{"field": "industry", "op": "in", "value": ["steel-mills"]}]}, "filter.all[0].value",
     "not a possible value: steel-mills"),
    ({"any": [{"all": [{"field": "job_title", "op": "resembles", "value": "x"}]}]}, "filter.any[0].all[0].op", None),
    ({"event": "page", "where": [{"field": "cookie", "op": "equals", "value": "x"}]}, "filter.where[0].field", None),
    ({"email": "forwarded"}, "filter.email", "must be sent, opened or clicked"),
    ([], "filter", None),
    (None, "filter", "must be an object"),
])
def test_a_bad_filter_is_a_422_naming_the_path(api, tree, path, message):
    err = error(api.post("/segments", {"name": "Bad", "filter": tree}), 422, "invalid")
    assert list(paths(err)) == [path]
    if message:
        assert paths(err)[path] == message
    assert not Segment.objects.exists()


def test_other_errors_follow_the_api_conventions(api, contacts):
    sid = api.post("/segments", {"name": "製造業", "filter": MAKERS}).json()["id"]
    assert paths(error(api.post("/segments", {"name": "製造業", "filter": MAKERS}), 409, "conflict")) == {
        "name": "another segment is already called '製造業'"}
    assert paths(error(api.post("/segments", {"name": "  ", "filter": MAKERS}), 422)) == {"name": "is required"}
    assert set(paths(error(api.post("/segments", {"name": "x"}), 422))) == {"filter"}
    assert set(paths(error(api.post("/segments", {"name": "x", "filter": MAKERS, "colour": "red"}), 422))) == {
        "colour"}
    assert paths(error(api.patch(f"/segments/{sid}", {"filter": None}), 422)) == {"filter": "must be an object"}
    malformed = api.client.post("/api/v1/segments", "{", content_type="application/json", **api.headers)
    error(malformed, 400, "malformed_json")
    error(api.get("/segments/999999/members"), 404, "not_found")
    error(api.get(f"/segments/{sid}/members", colour="red"), 400, "bad_request")
    error(api.get(f"/segments/{sid}/members", limit=0), 422, "invalid")


def test_deleting_a_segment_another_one_uses_is_a_409(api):
    base = api.post("/segments", {"name": "Base", "filter": MAKERS}).json()["id"]
    user = api.post("/segments", {"name": "User", "filter": {"not": {"segment": base}}}).json()["id"]
    err = error(api.delete(f"/segments/{base}"), 409, "conflict")
    assert paths(err) == {"id": "is used by segment 'User'"}
    cycle = error(api.patch(f"/segments/{base}", {"filter": {"segment": user}}), 422)
    assert paths(cycle) == {"filter.segment": f"refers to itself through #{user} → #{base}"}
    assert api.delete(f"/segments/{user}").status_code == 204
    assert api.delete(f"/segments/{base}").status_code == 204


def test_members_in_cursor_pages_and_the_membership_check(api, contacts):
    sid = api.post("/segments", {"name": "製造業", "filter": MAKERS}).json()["id"]
    _computed(sid)
    members = [c for c in contacts if c.industry == "manufacturing"]
    first = api.get(f"/segments/{sid}/members", limit=2, sort="oldest").json()
    assert first["count"] == 3 and [c["id"] for c in first["items"]] == [c.pk for c in members[:2]]
    assert all(c["since"] and c["industry"] == "manufacturing" for c in first["items"])
    second = api.get(f"/segments/{sid}/members", limit=2, sort="oldest", cursor=first["next_cursor"]).json()
    assert [c["id"] for c in second["items"]] == [members[2].pk] and second["next_cursor"] is None

    inside = api.get(f"/segments/{sid}/members/{members[0].pk}").json()
    assert inside["member"] is True and inside["since"] and inside["segment_id"] == sid
    outside = api.get(f"/segments/{sid}/members/{contacts[0].pk}").json()
    assert outside == {"segment_id": sid, "contact_id": contacts[0].pk, "member": False, "since": None}
    error(api.get(f"/segments/{sid}/members/999999"), 404, "not_found")


def test_count_and_recompute(api, contacts):
    answer = api.post("/segments/count", {"filter": MAKERS})
    assert answer.status_code == 200 and answer.json()["count"] == 3 and isinstance(answer.json()["ms"], int)
    assert api.post("/segments/count", {"filter": {"not": MAKERS}}).json()["count"] == 4
    err = error(api.post("/segments/count", {"filter": {"all": [{"field": "nope", "op": "in", "value": ["x"]}]}}),
                422, "invalid")
    assert paths(err) == {"filter.all[0].field": "unknown field 'nope'"}
    error(api.post("/segments/count", {"filter": MAKERS, "segment": 999999}), 404)

    sid = api.post("/segments", {"name": "製造業", "filter": MAKERS}).json()["id"]
    _computed(sid)
    Contact.objects.create(email="late@example.jp", industry="manufacturing")
    accepted = api.post(f"/segments/{sid}/recompute")
    assert accepted.status_code == 202 and accepted.json()["computing"] is True
    membership.refresh_due()
    assert api.get(f"/segments/{sid}").json()["member_count"] == 4


@pytest.mark.parametrize("role", ["admin", "marketer", "sales", "viewer"])
def test_roles_and_scopes(client, make_user, api_token, contacts, role):
    segment = Segment.objects.create(name="Existing", filter=MAKERS)
    user = make_user(role)
    writer = role in ("admin", "marketer")
    full = Api(client, api_token(user, ("read", "write")))
    assert full.get("/segments").status_code == 200
    assert full.get(f"/segments/{segment.pk}/members").status_code == 200
    assert full.post("/segments/count", {"filter": MAKERS}).status_code == 200
    assert full.post("/segments", {"name": f"by {role}", "filter": MAKERS}).status_code == (201 if writer else 403)
    assert full.post(f"/segments/{segment.pk}/recompute").status_code == (202 if writer else 403)
    forbidden = full.delete("/segments/999999")  # 403 before 404 for those who may not
    assert forbidden.status_code == (404 if writer else 403)
    if role == "admin":
        reader = Api(client, api_token(user, ("read",)))
        assert reader.post("/segments/count", {"filter": MAKERS}).status_code == 200
        err = error(reader.post("/segments", {"name": "nope", "filter": MAKERS}), 403, "forbidden")
        assert "segments.manage" in err["message"]
    client.logout()
    error(client.get("/api/v1/segments"), 401, "unauthenticated")


def test_the_openapi_schema_lists_the_segment_endpoints(api):
    schema = api.get("/openapi.json").json()
    for path in ("/api/v1/segments", "/api/v1/segments/count", "/api/v1/segments/{segment_id}",
                 "/api/v1/segments/{segment_id}/members", "/api/v1/segments/{segment_id}/members/{contact_id}",
                 "/api/v1/segments/{segment_id}/recompute"):
        assert path in schema["paths"], path
