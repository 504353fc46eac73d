"""The journeys REST API: create, read, change and change the status of journeys (faults named by
their path), YAML export and import (faults with their line), runs listed and enrolled by hand
(a retried request enrolls once), the simulation, who may call what, and the OpenAPI schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from kizuna.contacts.models import Contact
from kizuna.journeys import as_code
from kizuna.journeys.models import Enrollment, Journey, JourneyVersion
from tests.journeyhelp import contact, make_world, send_events, template
from tests.test_api import Api, error, paths

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api(client, admin_user, api_token):
    return Api(client, api_token(admin_user))


@pytest.fixture
def world(db):
    return make_world()


def graph(mail_id: int) -> dict:
    return {"trigger": {"type": "manual"}, "nodes": [
        {"id": "wait", "type": "wait", "duration": {"days": 1}, "next": "mail"},
        {"id": "mail", "type": "send_email", "template": mail_id}]}


def test_create_read_change_and_go_live(api, world):
    mail = template(world, "ご案内")
    created = api.post("/journeys", {"name": " ウェルカム ", "description": "新規リード向け", "entry": "once",
                                     "graph": graph(mail.pk)})
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["name"], body["status"], body["version"], body["trigger"]) == ("ウェルカム", "draft", 1, "manual")
    assert body["graph"]["nodes"][1]["template"] == mail.pk and body["problems"] == []
    assert body["counts"] == {"active": 0, "waiting": 0, "done": 0, "exited": 0, "failed": 0}
    jid = body["id"]
    renamed = api.patch(f"/journeys/{jid}", {"name": "ようこそ"})
    assert renamed.status_code == 200 and renamed.json()["version"] == 1  # a name alone makes no version
    regraphed = api.patch(f"/journeys/{jid}", {"entry": "every_time", "reentry_days": 30})
    assert regraphed.json()["version"] == 2 and regraphed.json()["reentry_days"] == 30
    live = api.post(f"/journeys/{jid}/status", {"status": "live"})
    assert live.status_code == 200 and live.json()["status"] == "live"
    person = contact(world, "a@example.co.jp")
    assert api.post(f"/journeys/{jid}/enrollments", {"contact_id": person.pk}).status_code == 201
    listed = api.get("/journeys").json()["items"]
    assert [(j["name"], j["counts"]["active"]) for j in listed] == [("ようこそ", 1)]
    assert api.get(f"/journeys/{jid}").json()["counts"]["active"] == 1


def test_faults_are_named_by_their_path(api, world):
    mail = template(world, "ご案内")
    bad = graph(999)
    bad["nodes"][0]["next"] = "nowhere"
    err = error(api.post("/journeys", {"name": "Bad", "graph": bad, "exit_filter": {"field": "nope", "op": "x"}}),
                422, "invalid")
    assert paths(err) == {"graph.nodes[0].next": "no step with id 'nowhere'",
                          "graph.nodes[1].template": "no email template (with a saved version) with id 999",
                          "exit_filter.field": "unknown field 'nope'"}
    assert paths(error(api.post("/journeys", {"name": "Bad", "graph": "nodes"}), 422, "invalid")) == {
        "graph": "must be an object with trigger, start and nodes"}
    assert "entry" in paths(error(api.post("/journeys", {"name": "X", "entry": "sometimes", "graph": {}}), 422))
    assert paths(error(api.post("/journeys", {"name": "X\x00", "graph": graph(mail.pk)}), 422)) == {
        "name": "contains a NUL character (\\u0000), which cannot be stored"}
    api.post("/journeys", {"name": "Taken", "graph": graph(mail.pk)})
    assert "name" in paths(error(api.post("/journeys", {"name": "Taken", "graph": graph(mail.pk)}), 409, "conflict"))
    jid = api.post("/journeys", {"name": "Other", "graph": graph(mail.pk)}).json()["id"]
    error(api.patch(f"/journeys/{jid}", {"name": "Taken"}), 409, "conflict")
    assert "graph.nodes[0].duration" in paths(error(api.patch(f"/journeys/{jid}", {"graph": {
        "trigger": {"type": "manual"}, "nodes": [{"id": "w", "type": "wait", "duration": {"weeks": 1}}]}}), 422))
    assert JourneyVersion.objects.filter(journey_id=jid).count() == 1
    error(api.get("/journeys/99999"), 404, "not_found")
    error(api.post(f"/journeys/{jid}/status", {"status": "running"}), 422)


def test_a_viewer_reads_but_cannot_change_and_a_read_key_cannot_either(client, make_user, api_token, world):
    mail = template(world, "ご案内")
    j = Journey.objects.create(name="Seen")
    from kizuna.journeys import engine

    engine.save_journey(j, graph(mail.pk))
    viewer = Api(client, api_token(make_user("viewer")))
    assert viewer.get("/journeys").status_code == 200
    assert viewer.get(f"/journeys/{j.pk}/export").status_code == 200
    assert viewer.post(f"/journeys/{j.pk}/simulate", {"days": 7}).status_code == 200
    for response in (viewer.post("/journeys", {"name": "V", "graph": graph(mail.pk)}),
                     viewer.patch(f"/journeys/{j.pk}", {"name": "V"}),
                     viewer.post(f"/journeys/{j.pk}/status", {"status": "live"}),
                     viewer.post(f"/journeys/{j.pk}/enrollments", {"contact_id": 1}),
                     viewer.client.post("/api/v1/journeys/import", "name: V", content_type="text/yaml",
                                        **viewer.headers)):
        error(response, 403, "forbidden")
    read_key = Api(client, api_token(make_user("admin", username="boss"), scopes=("read",)))
    error(read_key.post(f"/journeys/{j.pk}/status", {"status": "live"}), 403, "forbidden")
    error(Api(client, "kz_nope").get("/journeys"), 401, "unauthenticated")
    assert Journey.objects.get(pk=j.pk).status == "draft"


def test_export_and_import_yaml_with_lines_in_the_faults(api, world):
    template(world, "ご案内")
    jid = api.post("/journeys", {"name": "ウェルカム", "graph": graph(template(world, "導入事例").pk)}).json()["id"]
    exported = api.get(f"/journeys/{jid}/export")
    assert exported.status_code == 200 and exported["Content-Type"] == "text/yaml; charset=utf-8"
    text = exported.content.decode()
    assert "template: 導入事例" in text and "filename*=UTF-8''" in exported["Content-Disposition"]

    def post(body: str, **query):
        suffix = "?dry_run=true" if query.get("dry_run") else ""
        return api.client.post(f"/api/v1/journeys/import{suffix}", body.encode(), content_type="text/yaml",
                               **api.headers)

    same = post(text)
    assert same.status_code == 200 and same.json()["action"] == "unchanged" and same.json()["version"] == 1
    renamed = text.replace("name: ウェルカム", "name: 新しいシナリオ")
    checked = post(renamed, dry_run=True)
    assert checked.status_code == 200 and checked.json() == {"action": "checked", "name": "新しいシナリオ",
                                                              "journey": None, "version": None}
    created = post(renamed)
    assert created.status_code == 201 and created.json()["journey"]["status"] == "draft"
    wrong = renamed.replace("template: 導入事例", "template: Case study")
    line = next(i for i, t in enumerate(wrong.splitlines(), 1) if "Case study" in t)
    err = error(post(wrong), 400, "invalid_yaml")
    assert paths(err) == {"nodes[1].template": f"line {line}, column 5: no email template named 'Case study'"}
    syntax = error(post("name: [unclosed\n"), 400, "invalid_yaml")
    assert list(paths(syntax)) == ["body"] and paths(syntax)["body"].startswith("line 2, column 1: ")
    assert Journey.objects.count() == 2


def test_enroll_by_hand_is_idempotent_with_a_key_and_runs_are_listed(api, world):
    mail = template(world, "ご案内")
    jid = api.post("/journeys", {"name": "Manual", "entry": "every_time", "graph": graph(mail.pk)}).json()["id"]
    person = contact(world, "a@example.co.jp")
    error(api.post(f"/journeys/{jid}/enrollments", {"contact_id": person.pk}), 409, "conflict")  # a draft
    api.post(f"/journeys/{jid}/status", {"status": "live"})
    first = api.post(f"/journeys/{jid}/enrollments", {"contact_id": person.pk, "key": "crm-42"})
    again = api.post(f"/journeys/{jid}/enrollments", {"contact_id": person.pk, "key": "crm-42"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["state"] == "active"
    other = api.post(f"/journeys/{jid}/enrollments", {"contact_id": person.pk, "key": "crm-43"})
    assert other.status_code == 201 and other.json()["run"] == 2
    assert Enrollment.objects.filter(journey_id=jid).count() == 2
    error(api.post(f"/journeys/{jid}/enrollments", {"contact_id": 999999}), 404, "not_found")
    once = api.post("/journeys", {"name": "Once", "graph": graph(mail.pk)}).json()["id"]
    api.post(f"/journeys/{once}/status", {"status": "live"})
    assert api.post(f"/journeys/{once}/enrollments", {"contact_id": person.pk}).status_code == 201
    error(api.post(f"/journeys/{once}/enrollments", {"contact_id": person.pk}), 409, "conflict")

    page = api.get(f"/journeys/{jid}/enrollments", limit=1)
    assert page.status_code == 200 and [e["run"] for e in page.json()["items"]] == [2]
    rest = api.get(f"/journeys/{jid}/enrollments", limit=1, cursor=page.json()["next_cursor"]).json()
    assert [e["run"] for e in rest["items"]] == [1]
    assert api.get(f"/journeys/{jid}/enrollments", state="done").json()["items"] == []
    assert "state" in paths(error(api.get(f"/journeys/{jid}/enrollments", state="asleep"), 422))
    error(api.get(f"/journeys/{jid}/enrollments", sort="x"), 400, "bad_request")
    error(api.get(f"/journeys/{jid}/enrollments", cursor="garbage"), 400, "bad_request")
    mine = api.get(f"/contacts/{person.pk}/enrollments").json()["items"]
    assert sorted((e["journey"], e["run"]) for e in mine) == [("Manual", 1), ("Manual", 2), ("Once", 1)]
    error(api.get("/contacts/999999/enrollments"), 404)


def test_simulate_a_journey_on_the_last_days(api, world):
    mail = template(world, "料金のご案内")
    jid = api.post("/journeys", {"name": "Pricing", "graph": {
        "trigger": {"type": "event", "event": "page", "where": [{"field": "path", "op": "starts_with",
                                                                 "value": "/pricing"}]},
        "nodes": [{"id": "mail", "type": "send_email", "template": mail.pk}]}}).json()["id"]
    person = contact(world, "a@example.co.jp")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        send_events([{"type": "identify", "anonymousId": "a", "traits": {"email": person.email}},
                     {"type": "page", "anonymousId": "a", "properties": {"path": "/pricing",
                                                                         "url": "https://x.jp/pricing"}}])
    before = (Enrollment.objects.count(), Contact.objects.count())
    with time_machine.travel(start + timedelta(days=2), tick=False):
        got = api.post(f"/journeys/{jid}/simulate", {"days": 7})
    assert got.status_code == 200, got.content
    body = got.json()
    assert (body["entrants"], body["runs"], body["manual"]) == (1, 1, False)
    assert body["messages"] == [{"template_id": mail.pk, "name": "料金のご案内", "would_send": 1, "deferred": 0,
                                 "blocked": {}}]
    assert [s["outcome"] for s in body["paths"][0]["steps"]] == ["would send"]
    assert (Enrollment.objects.count(), Contact.objects.count()) == before
    assert "days" in paths(error(api.post(f"/journeys/{jid}/simulate", {"days": 0}), 422))
    assert "days" in paths(error(api.post(f"/journeys/{jid}/simulate", {}), 422))
    empty = Journey.objects.create(name="Empty")
    error(api.post(f"/journeys/{empty.pk}/simulate", {"days": 3}), 409, "conflict")


def test_garbage_is_answered_in_the_error_shape_never_a_500(api, world):
    template(world, "ご案内")
    for body in ({"name": "G", "graph": {"trigger": [], "nodes": "x"}},
                 {"name": "G", "graph": {"trigger": {"type": "event", "event": {"x": 1}}, "nodes": [None, 3]}},
                 {"name": "G", "graph": {"nodes": [{"id": "a", "type": "condition", "if": {"all": "x"}}]}},
                 {"name": "G", "graph": {"nodes": [{"id": "a", "type": "split", "branches": [{"percent": "x"}]}]}},
                 {"name": "G", "graph": {"nodes": [{"id": "a", "type": "wait", "until": 5}]}},
                 {"name": "G", "goal_filter": [], "graph": {"nodes": [{"id": "a", "type": "exit"}]}},
                 {"name": "G", "graph": {"nodes": [{"id": "a", "type": "add_tag", "tag": "a\x00b"}]}}):
        response = api.post("/journeys", body)
        assert response.status_code == 422, (body, response.content)
    for text in ("{", "[1, 2]", "name: x\nnodes: 5", "name: x\ntrigger: {type: event, event: 5}\nnodes: []",
                 "\x00", "name: !!python/object:os.system x"):
        response = api.client.post("/api/v1/journeys/import", text.encode(), content_type="text/yaml",
                                   **api.headers)
        assert response.status_code == 400, (text, response.content)
    schema = api.client.get("/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/journeys", "/api/v1/journeys/import", "/api/v1/journeys/{journey_id}/simulate",
            "/api/v1/journeys/{journey_id}/enrollments", "/api/v1/contacts/{contact_id}/enrollments"} <= set(schema)
    assert "text/yaml" in schema["/api/v1/journeys/import"]["post"]["requestBody"]["content"]
    assert as_code.load("name: x\nnodes: 5").errors
