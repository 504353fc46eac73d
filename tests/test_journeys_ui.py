"""Journey pages: who may see and change what, creating and saving from the builder (a fault is
returned with the step and field it belongs to, and what was typed comes back), status changes,
the live numbers per step (exact, on a hand-built set of runs with every kind of way), the
enrollment list, the inspector of one contact's runs, the contact page's panel with enrolling by
hand, and every visitor-supplied string escaped."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import AuditLog
from kizuna.contacts.models import Contact, Tag
from kizuna.events.models import Event
from kizuna.journeys import engine, services, stats
from kizuna.journeys.models import Enrollment, Journey, StepRun
from kizuna.messaging.models import EmailTemplate
from kizuna.segments import membership
from kizuna.segments.models import Segment
from tests.journeyhelp import contact, journey, make_world, template

pytestmark = pytest.mark.django_db
XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
NOW = datetime(2026, 10, 1, 1, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db):
    world = make_world()
    world["mail"] = template(world, "導入事例")
    return world


def _graph(mail_id: int, **trigger) -> dict:
    """Manual trigger → condition (tag vip): yes → email; no → wait 1 day → exit."""
    return {
        "trigger": trigger or {"type": "manual"},
        "start": "vip",
        "nodes": [
            {"id": "vip", "type": "condition", "label": "VIP?", "if": {"field": "tag", "op": "has", "value": "vip"},
             "then": "mail", "else": "later"},
            {"id": "mail", "type": "send_email", "template": mail_id},
            {"id": "later", "type": "wait", "duration": {"days": 1}, "next": "bye"},
            {"id": "bye", "type": "exit"},
        ],
    }


def _post(client, url, graph, **fields):
    data = {"name": "Onboarding", "description": "", "entry": "once", "reentry_days": "", "graph": json.dumps(graph),
            "exit_filter": "", "goal_filter": "", "base_version": "", "open_steps": ""}
    data.update(fields)
    return client.post(url, data)


def _embedded(response, element_id: str):
    """A json_script block of the page, parsed."""
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', response.content.decode(),
                      re.S)
    assert match, element_id
    return json.loads(match.group(1))


# --- access -----------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["admin", "marketer", "sales", "viewer"])
def test_everyone_sees_journeys_only_writers_change_them(client, make_user, world, role):
    j = journey("既存のシナリオ", _graph(world["mail"].pk))
    person = contact(world, "a@example.jp")
    client.force_login(make_user(role))
    writer = role in ("admin", "marketer")
    listing = client.get(reverse("journeys:list"))
    assert listing.status_code == 200 and "既存のシナリオ" in listing.content.decode()
    assert (reverse("journeys:create") in listing.content.decode()) == writer
    page = client.get(reverse("journeys:detail", args=[j.pk]))
    assert page.status_code == 200
    assert _embedded(page, "journey-schema")["readonly"] is (not writer)
    assert ('data-save' in page.content.decode()) == writer
    assert ('data-status-action="paused"' in page.content.decode()) == writer
    for name in ("journeys:stats", "journeys:enrollments"):
        assert client.get(reverse(name, args=[j.pk])).status_code == 200
    assert client.get(reverse("journeys:inspector", args=[person.pk])).status_code == 200
    assert client.get(reverse("journeys:create")).status_code == (200 if writer else 403)
    saved = _post(client, reverse("journeys:detail", args=[j.pk]), _graph(world["mail"].pk), name="renamed")
    assert saved.status_code == (302 if writer else 403)
    assert _post(client, reverse("journeys:create"), _graph(world["mail"].pk), name=f"by {role}").status_code == (
        302 if writer else 403)
    assert client.post(reverse("journeys:enroll", args=[person.pk]), {"journey": j.pk}).status_code == (
        302 if writer else 403)
    assert client.post(reverse("journeys:status", args=[j.pk]), {"status": "paused"}).status_code == (
        302 if writer else 403)
    j.refresh_from_db()
    assert (j.name == "renamed") == writer and (j.status == "paused") == writer
    assert Enrollment.objects.filter(contact=person).exists() == writer


def test_navigation_links_the_journeys_page(logged_in):
    html = logged_in.get("/").content.decode()
    assert f'href="{reverse("journeys:list")}"' in html and "Automation" in html
    active = logged_in.get(reverse("journeys:list")).content.decode()
    assert re.search(rf'<a href="{reverse("journeys:list")}" class="active"', active)


# --- the list ---------------------------------------------------------------------------------

def test_the_list_says_trigger_and_entry_in_words_with_counts_and_conversion(logged_in, world):
    segment = membership.save_segment(Segment.objects.create(name="セミナー参加者"), {"all": []})
    j = journey("セミナーフォロー", _graph(world["mail"].pk, type="segment", segment=segment.pk, on="entered"),
                entry="one_at_a_time", reentry_days=30, goal_filter={"field": "lifecycle_stage", "op": "in",
                                                                     "value": ["sql"]})
    people = [contact(world, f"p{i}@example.jp") for i in range(5)]
    states = ["waiting", "waiting", "done", "done", "exited"]
    for person, state in zip(people, states, strict=True):
        Enrollment.objects.create(journey=j, version=j.current, contact=person, state=state, node="later",
                                  goal_reached_at=timezone.now() if person is people[2] else None)
    journey("Draft one", _graph(world["mail"].pk), live=False)
    page = logged_in.get(reverse("journeys:list")).content.decode()
    row = re.search(rf'<tr data-journey="{j.pk}">(.*?)</tr>', page, re.S).group(1)
    assert "When a contact enters the segment “セミナー参加者”" in row
    assert "One run at a time, not again within 30 days" in row
    cells = [re.sub(r"<.*?>", "", c).strip() for c in re.findall(r'<td class="num"[^>]*>(.*?)</td>', row, re.S)]
    assert cells == ["5", "0", "2", "2", "1", "0", "20.0%"]  # enrolled, running, waiting, done, exited, failed
    assert "Live" in row and "Draft" in page
    draft = re.search(r'<tr data-journey="\d+">((?:(?!</tr>).)*Draft one.*?)</tr>', page, re.S).group(1)
    assert re.search(r"data-conversion>—<", draft)  # no goal condition and no goal step: no conversion


# --- saving -----------------------------------------------------------------------------------

def test_create_then_save_changed_steps_as_a_new_version_and_settings_alone_keep_it(logged_in, world):
    graph = _graph(world["mail"].pk)
    response = _post(logged_in, reverse("journeys:create"), graph, name="オンボーディング", entry="every_time",
                     reentry_days="30", goal_filter=json.dumps({"field": "lifecycle_stage", "op": "in",
                                                                "value": ["sql"]}))
    j = Journey.objects.get(name="オンボーディング")
    assert response.status_code == 302 and response["Location"] == reverse("journeys:detail", args=[j.pk])
    assert j.current.number == 1 and j.status == "draft" and j.entry == "every_time" and j.reentry_days == 30
    assert j.goal_filter == {"field": "lifecycle_stage", "op": "in", "value": ["sql"]}
    assert AuditLog.objects.filter(action="create", object_type="journeys.journey", object_id=str(j.pk)).exists()

    page = logged_in.get(reverse("journeys:detail", args=[j.pk]))
    assert _embedded(page, "journey-graph")["nodes"][0]["label"] == "VIP?"
    assert "version 1, saved" in page.content.decode()

    graph["nodes"][2]["duration"] = {"days": 3}
    _post(logged_in, reverse("journeys:detail", args=[j.pk]), graph, name="オンボーディング", base_version="1")
    j.refresh_from_db()
    assert j.current.number == 2 and j.current.node("later")["duration"] == {"days": 3}
    assert j.goal_filter is None  # the goal was cleared in the form

    response = _post(logged_in, reverse("journeys:detail", args=[j.pk]), graph, name="新規顧客オンボーディング",
                     base_version="2")
    j.refresh_from_db()
    assert response.status_code == 302 and j.name == "新規顧客オンボーディング" and j.current.number == 2
    assert j.versions.count() == 2

    # Someone saved version 2 while this page still showed version 1: refused, nothing lost.
    graph["nodes"][2]["duration"] = {"days": 5}
    stale = _post(logged_in, reverse("journeys:detail", args=[j.pk]), graph, name="新規顧客オンボーディング",
                  base_version="1")
    assert stale.status_code == 400 and "Version 2 was saved by someone else" in stale.content.decode()
    assert _embedded(stale, "journey-graph")["nodes"][2]["duration"] == {"days": 5}
    assert j.versions.count() == 2


def test_faults_come_back_on_the_step_and_field_at_fault_with_everything_typed(logged_in, world):
    draft = EmailTemplate.objects.create(name="下書き (未保存)")  # no saved version: not allowed
    graph = _graph(world["mail"].pk)
    graph["nodes"][1]["template"] = draft.pk
    graph["nodes"].append({"id": "ab", "type": "split", "label": "A/B テスト",
                           "branches": [{"percent": 50, "next": "mail"}, {"percent": 30, "next": None}], "holdout": 10})
    graph["nodes"][2]["next"] = "ab"
    graph["nodes"][0]["if"] = {"all": [{"field": "industry", "op": "in", "value": ["steel-mills"]}]}
    response = _post(logged_in, reverse("journeys:create"), graph, name="壊れたシナリオ",
                     exit_filter=json.dumps({"field": "nope", "op": "equals", "value": 1}))
    assert response.status_code == 400 and not Journey.objects.filter(name="壊れたシナリオ").exists()
    placed = {(e["area"], e["node"], e["field"]): e["message"] for e in _embedded(response, "journey-errors")}
    assert placed[("node", "mail", "template")] == f"no email template (with a saved version) with id {draft.pk}"
    assert placed[("node", "ab", "branches")] == "percentages and holdout must add up to 100, not 90"
    assert placed[("node", "vip", "if.all[0].value")] == "not a possible value: steel-mills"
    assert ("exit_filter", None, "field") in placed
    # Everything typed comes back: the graph as posted, the name, the steps whose editors were open.
    assert _embedded(response, "journey-graph") == json.loads(json.dumps(graph))
    page = response.content.decode()
    assert 'value="壊れたシナリオ"' in page and "Not saved: 4 faults" in page

    # A loop without a wait is refused, on the link that closes it.
    loop = _graph(world["mail"].pk)
    loop["nodes"][1]["next"] = "vip"
    response = _post(logged_in, reverse("journeys:create"), loop, name="ループ")
    placed = _embedded(response, "journey-errors")
    assert [(e["node"], e["field"]) for e in placed] == [("mail", "next")]
    assert "loops back to 'vip' without a wait" in placed[0]["message"]


def test_the_status_buttons_go_live_pause_resume_and_archive(logged_in, world):
    j = journey("Status", _graph(world["mail"].pk), live=False)
    url = reverse("journeys:status", args=[j.pk])
    page = logged_in.get(reverse("journeys:detail", args=[j.pk])).content.decode()
    assert 'data-status-action="live"' in page and "Go live with version 1?" in page  # asked before it happens
    with time_machine.travel(NOW, tick=False):
        logged_in.post(url, {"status": "live"})
    j.refresh_from_db()
    assert j.status == "live" and j.trigger_state["live_since"] == NOW.isoformat()
    person = contact(world, "w@example.jp")
    engine.enroll(j, person)
    engine.tick()
    assert Enrollment.objects.get(contact=person).state == "waiting"
    logged_in.post(url, {"status": "paused"})
    j.refresh_from_db()
    assert j.status == "paused"
    response = logged_in.post(url, {"status": "draft"}, follow=True)  # not offered from paused
    assert "cannot become draft" in response.content.decode()
    logged_in.post(url, {"status": "live"})
    logged_in.post(url, {"status": "archived"})
    j.refresh_from_db()
    e = Enrollment.objects.get(contact=person)
    assert j.status == "archived" and e.state == "exited" and e.reason == "journey archived"
    assert AuditLog.objects.filter(object_type="journeys.journey", object_id=str(j.pk), action="update").count() == 4


def test_references_deleted_since_are_shown_on_their_step_and_block_going_live(logged_in, world):
    doomed = template(world, "消える案内")
    graph = _graph(world["mail"].pk)
    graph["nodes"][1]["template"] = doomed.pk
    j = journey("Problems", graph, live=False)
    doomed.current = None
    doomed.save()  # its saved version is gone: the journey's reference is now a fault
    response = logged_in.get(reverse("journeys:detail", args=[j.pk]))
    assert "data-problems" in response.content.decode()
    assert [(e["node"], e["field"]) for e in _embedded(response, "journey-errors")] == [("mail", "template")]
    response = logged_in.post(reverse("journeys:status", args=[j.pk]), {"status": "live"}, follow=True)
    assert "cannot go live while it names what no longer exists" in response.content.decode()
    j.refresh_from_db()
    assert j.status == "draft"


# --- live numbers -----------------------------------------------------------------------------

BRANCHY = {
    "trigger": {"type": "manual"},
    "start": "came",
    "nodes": [
        {"id": "came", "type": "wait_event", "event": "Demo Booked", "where": [], "timeout": {"days": 3},
         "then": "hot", "else": "ab"},
        {"id": "hot", "type": "condition", "if": {"field": "tag", "op": "has", "value": "vip"}, "then": "mail",
         "else": "goal"},
        {"id": "ab", "type": "split", "branches": [{"percent": 40, "next": "mail"}, {"percent": 40, "next": None}],
         "holdout": 20},
        {"id": "mail", "type": "send_email", "template": 0},
        {"id": "goal", "type": "goal", "name": "booked"},
    ],
}


def test_statistics_per_step_are_exact_for_the_version_and_all_versions(logged_in, world):
    graph = json.loads(json.dumps(BRANCHY))
    graph["nodes"][3]["template"] = world["mail"].pk
    j = journey("Numbers", graph)
    old = j.current
    graph["nodes"][0]["timeout"] = {"days": 5}
    new = engine.save_journey(j, graph)
    people = [Contact.objects.create(email=f"n{i}@example.jp") for i in range(12)]

    def run(person, version, state, node, steps, goal=False):
        e = Enrollment.objects.create(journey=j, version=version, contact=person, state=state, node=node,
                                      goal_reached_at=timezone.now() if goal else None)
        for i, (step, outcome) in enumerate(steps):
            StepRun.objects.create(enrollment=e, node=step, key=f"{e.pk}:{step}:{i}", outcome=outcome)

    wait = ("came", "wait for Demo Booked until 2026-10-04T10:00:00+09:00")
    # Version 2 (current): 8 runs
    run(people[0], new, "waiting", "came", [wait])
    run(people[1], new, "waiting", "came", [wait])
    run(people[2], new, "done", "", [wait, ("came", "event 17"), ("hot", "condition met"),
                                     ("mail", "queued message 5")])
    run(people[3], new, "done", "", [wait, ("came", "event 18"), ("hot", "condition not met"), ("goal", "goal booked")],
        goal=True)
    run(people[4], new, "done", "", [wait, ("came", "timeout"), ("ab", "branch 0"),
                                     ("mail", "skipped: the contact has not opted in to お知らせ")])
    run(people[5], new, "done", "", [wait, ("came", "timeout"), ("ab", "branch 1")])
    run(people[6], new, "done", "holdout", [wait, ("came", "timeout"), ("ab", "holdout")])
    run(people[7], new, "active", "mail", [wait, ("came", "event 19"), ("hot", "condition met")])
    # Version 1: 4 runs
    run(people[8], old, "waiting", "came", [wait])
    run(people[9], old, "done", "", [wait, ("came", "event 20"), ("hot", "condition not met"), ("goal", "goal booked")],
        goal=True)
    run(people[10], old, "exited", "came", [wait])
    run(people[11], old, "failed", "mail", [wait, ("came", "timeout"), ("ab", "branch 0")])

    numbers = logged_in.get(reverse("journeys:stats", args=[j.pk])).json()
    cur, every = numbers["current"], numbers["all"]
    assert cur["states"] == {"active": 1, "waiting": 2, "done": 5, "exited": 0, "failed": 0}
    assert (cur["enrolled"], cur["goals"], cur["conversion"]) == (8, 1, 12.5)
    assert cur["nodes"]["came"] == {"entered": 8, "waiting": 2, "due": 0, "skipped": 0, "ways": {"then": 3, "else": 3}}
    assert cur["nodes"]["hot"] == {"entered": 3, "waiting": 0, "due": 0, "skipped": 0, "ways": {"then": 2, "else": 1}}
    assert cur["nodes"]["ab"] == {"entered": 3, "waiting": 0, "due": 0, "skipped": 0,
                                  "ways": {"branches[0].next": 1, "branches[1].next": 1, "holdout": 1}}
    assert cur["nodes"]["mail"] == {"entered": 2, "waiting": 0, "due": 1, "skipped": 1, "ways": {}}
    assert cur["nodes"]["goal"]["entered"] == 1
    assert every["states"] == {"active": 1, "waiting": 3, "done": 6, "exited": 1, "failed": 1}
    assert (every["enrolled"], every["goals"], every["conversion"]) == (12, 2, 16.7)
    assert every["nodes"]["came"]["entered"] == 12 and every["nodes"]["came"]["waiting"] == 3
    assert every["nodes"]["came"]["ways"] == {"then": 4, "else": 4}
    assert every["nodes"]["ab"]["ways"] == {"branches[0].next": 2, "branches[1].next": 1, "holdout": 1}
    assert [(v["number"], v["runs"], v["open"], v["goals"]) for v in numbers["versions"]] == [(2, 8, 3, 1),
                                                                                                (1, 4, 1, 1)]
    assert stats.list_counts([j.pk])[j.pk]["conversion"] == 16.7
    page = logged_in.get(reverse("journeys:detail", args=[j.pk]))
    assert _embedded(page, "journey-stats")["current"]["nodes"]["came"]["entered"] == 8
    assert re.search(r'data-stat="enrolled">8<', page.content.decode())


# --- enrollments and the inspector ------------------------------------------------------------

def test_the_enrollment_list_filters_by_state_step_and_email_and_pages(logged_in, world):
    j = journey("Many", _graph(world["mail"].pk))
    for i in range(55):
        Enrollment.objects.create(journey=j, version=j.current, contact=Contact.objects.create(email=f"m{i}@ex.jp"),
                                  state="waiting" if i % 5 else "done", node="later" if i % 5 else "")
    url = reverse("journeys:enrollments", args=[j.pk])
    page = logged_in.get(url).content.decode()
    assert page.count("<tr data-enrollment=") == 50 and "data-next-page" in page and "55 runs" in page
    assert logged_in.get(url + "?page=2").content.decode().count("<tr data-enrollment=") == 5
    assert logged_in.get(url + "?state=done").content.decode().count("<tr data-enrollment=") == 11
    waiting = logged_in.get(url + "?node=later").content.decode()
    assert waiting.count("<tr data-enrollment=") == 44 and "Wait 1 day" in waiting
    one = logged_in.get(url + "?q=m17@").content.decode()
    assert one.count("<tr data-enrollment=") == 1
    assert f'{reverse("journeys:inspector", args=[Contact.objects.get(email="m17@ex.jp").pk])}?journey={j.pk}' in one


def test_the_inspector_says_where_each_run_is_and_why(logged_in, world, admin_user):
    j = journey("VIP フォロー", _graph(world["mail"].pk))
    vip, plain = contact(world, "vip@example.jp"), contact(world, "plain@example.jp")
    vip.tags.add(Tag.objects.create(name="vip"))
    with time_machine.travel(NOW, tick=False):
        for person in (vip, plain):  # by hand, from the contact page's panel
            assert logged_in.post(reverse("journeys:enroll", args=[person.pk]), {"journey": j.pk}).status_code == 302
        engine.tick()
    refused = logged_in.post(reverse("journeys:enroll", args=[vip.pk]), {"journey": j.pk}, follow=True)
    assert "does not allow this contact in now (Once ever)" in refused.content.decode()

    page = logged_in.get(reverse("journeys:inspector", args=[vip.pk])).content.decode()
    assert "VIP フォロー" in page and "Enrolled by hand by admin." in page
    assert "Condition met: took “Yes”." in page and "Email queued." in page
    assert "Reached the end of the journey." in page and 'data-run-state>Done<' in page
    message_id = int(re.search(r"queued message (\d+)", StepRun.objects.get(node="mail").outcome).group(1))
    assert reverse("messaging:message_detail", args=[message_id]) in page

    page = logged_in.get(reverse("journeys:inspector", args=[plain.pk])).content.decode()
    assert "Condition not met: took “No”." in page and 'data-run-state>Waiting<' in page
    assert re.search(r"data-run-node><strong>Wait 1 day</strong>", page)
    assert "Waiting until 2026-10-02 10:00." in page  # Asia/Tokyo, a day after the step was due

    panel = logged_in.get(reverse("contacts:detail", args=[plain.pk])).content.decode()
    assert "data-journeys-panel" in panel and "VIP フォロー" in panel and "Wait 1 day" in panel
    assert reverse("journeys:inspector", args=[plain.pk]) in panel and "data-enroll-form" in panel


def test_visitor_supplied_strings_are_escaped_everywhere(logged_in, world):
    graph = {"trigger": {"type": "manual"}, "start": "w", "nodes": [
        {"id": "w", "type": "wait_event", "label": XSS, "event": "Demo Booked", "where": [], "timeout": {"days": 1},
         "then": "tag"},
        {"id": "tag", "type": "add_tag", "tag": XSS}]}
    j = journey(f"J {XSS}", graph)
    person = Contact.objects.create(email="x@example.jp", family_name=XSS, given_name=XSS)
    event = Event.objects.create(message_id="xss-1", type="track", name=XSS, contact=person,
                                 properties={XSS: XSS}, occurred_at=NOW, received_at=NOW, processed_at=NOW)
    e = Enrollment.objects.create(journey=j, version=j.current, contact=person, state="active", node="tag",
                                  context={"via": "event", "event": event.pk})
    StepRun.objects.create(enrollment=e, node="w", key=f"{e.pk}:w:1", outcome=f"wait for {XSS} until x")
    StepRun.objects.create(enrollment=e, node="w", key=f"{e.pk}:w:1:branch", outcome=f"event {event.pk}")
    pages = [logged_in.get(reverse("journeys:inspector", args=[person.pk])),
             logged_in.get(reverse("journeys:enrollments", args=[j.pk])),
             logged_in.get(reverse("contacts:detail", args=[person.pk])),
             logged_in.get(reverse("journeys:list")),
             logged_in.get(reverse("journeys:detail", args=[j.pk]))]
    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200
        assert "<script>alert(1)" not in html and "<img src=x" not in html
    inspector = pages[0].content.decode()
    assert inspector.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5  # name, label, event name, property, value
    assert _embedded(pages[4], "journey-graph")["nodes"][0]["label"] == XSS  # as data, for textContent


def test_save_through_the_services_records_who_and_what(world, admin_user):
    settings = services.Settings(name="Svc", exit_filter={"all": []})
    j, version = services.save(admin_user, None, settings, _graph(world["mail"].pk))
    assert version.number == 1 and j.exit_filter is None  # an empty condition is no condition
    entry = AuditLog.objects.get(object_type="journeys.journey", object_id=str(j.pk))
    assert entry.actor_label == "admin" and entry.action == "create"
    placed = services.place_errors({"nodes": [{"id": "a"}]}, [("nodes[0].next", "x"), ("trigger.where[0].op", "y"),
                                                             ("start", "z"), ("nodes[5].id", "w")])
    assert [(p["area"], p["node"], p["field"]) for p in placed] == [
        ("node", "a", "next"), ("trigger", None, "where[0].op"), ("graph", None, ""), ("node", None, "id")]
    assert services.node_title({"type": "wait", "business_days": 3, "time_of_day": "10:00"},
                               services.Names()) == "Wait 3 business days · 10:00"
    assert services.trigger_text({"type": "date", "field": "created_at", "offset_days": -30, "at": "09:00"},
                                 services.Names()) == "30 days before Created, at 09:00"
    assert services.trigger_text({"type": "schedule", "every": "week", "day": 0, "at": "10:00"},
                                 services.Names()) == "Every week on Monday at 10:00"
