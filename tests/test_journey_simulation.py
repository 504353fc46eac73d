"""Simulation: a journey run against the last days of real events without sending or writing
anything — who would have entered, which path each took, which mails would have gone (or been
stopped by the send rules), and what is still pending now."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from kizuna.contacts.consent import set_consent
from kizuna.contacts.models import ConsentStatus, Contact
from kizuna.journeys import simulation
from kizuna.journeys.models import Journey
from kizuna.messaging.models import SendingSettings
from kizuna.segments import membership
from kizuna.segments.models import Segment, SegmentChange
from tests.journeyhelp import contact, journey, make_world, send_events, template

pytestmark = pytest.mark.django_db
START = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)  # Thursday 09:00 in Tokyo
NOW = START + timedelta(days=10)


@pytest.fixture
def world(db):
    return make_world()


def identify(aid: str, email: str) -> dict:
    return {"type": "identify", "anonymousId": aid, "traits": {"email": email}}


def page(aid: str, path: str) -> dict:
    return {"type": "page", "anonymousId": aid,
            "properties": {"url": f"https://www.example.co.jp{path}", "path": path, "title": path}}


def track(aid: str, event: str, **properties) -> dict:
    return {"type": "track", "anonymousId": aid, "event": event, "properties": properties}


def at(moment: datetime, messages: list[dict]) -> None:
    with time_machine.travel(moment, tick=False):
        send_events(messages)


def rows() -> dict[str, int]:
    return {m._meta.label: m.objects.count() for m in apps.get_models()}


def pricing_journey(world) -> Journey:
    mail = template(world, "料金とお見積りのご案内")
    return journey("Pricing follow-up", {
        "trigger": {"type": "event", "event": "page", "where": [{"field": "path", "op": "starts_with",
                                                                 "value": "/pricing"}]},
        "nodes": [
            {"id": "morning", "type": "wait", "time_of_day": "10:00", "days": 1, "next": "mail"},
            {"id": "mail", "type": "send_email", "template": mail.pk},
        ]}, live=False, entry="every_time", reentry_days=30)


def pricing_visits(world) -> dict[str, Contact]:
    """Three visitors of /pricing in ten days (one twice), one who looked elsewhere, one too early."""
    people = {n: contact(world, f"{n}@example.co.jp", time_zone=tz) for n, tz in (
        ("twice", "Asia/Tokyo"), ("ny", "America/New_York"), ("late", "Asia/Tokyo"), ("other", ""),
        ("early", "Asia/Tokyo"))}
    set_consent(people["ny"], world["topic"], ConsentStatus.OPTED_OUT, method="unsubscribe link")
    at(START - timedelta(days=3), [identify(n, c.email) for n, c in people.items()] + [page("early", "/pricing")])
    at(START + timedelta(days=1, hours=6), [page("twice", "/pricing")])  # Fri 15:00 JST
    at(START + timedelta(days=3), [page("ny", "/pricing?plan=pro"), page("other", "/products")])
    at(START + timedelta(days=5), [page("twice", "/pricing/enterprise"), page("anonymous", "/pricing")])
    at(START + timedelta(days=9, hours=20), [page("late", "/pricing")])  # Sun 05:00 JST: Monday 10:00 is after now
    return people


def test_the_pricing_journey_over_ten_days_three_entrants_one_mail_one_blocked_one_pending(world):
    j = pricing_journey(world)
    people = pricing_visits(world)
    before = rows()
    result = simulation.simulate(j, days=10, now=NOW)
    assert rows() == before  # nothing written
    assert (result.occurrences, result.entrants, result.runs) == (4, 3, 3)
    assert result.refused == {"reentry_days": 1}  # the second visit of "twice" was within 30 days
    assert result.ended == {"done": 2, "pending": 1}
    paths = {p.contact_id: p for p in result.paths}
    twice, ny, late = (paths[people[n].pk] for n in ("twice", "ny", "late"))
    assert [(s.node, s.outcome) for s in twice.steps] == [("morning", "waited"), ("mail", "would send")]
    assert twice.steps[1].at == datetime(2026, 10, 3, 1, 0, tzinfo=UTC)  # Saturday 10:00 JST, the next morning
    assert [(s.node, s.outcome) for s in ny.steps] == [("morning", "waited"), ("mail", "blocked")]
    assert ny.steps[1].at == datetime(2026, 10, 4, 14, 0, tzinfo=UTC)  # 10:00 the next morning in New York
    assert "opted out of news" in ny.steps[1].note
    assert [(s.node, s.outcome) for s in late.steps] == [("morning", "pending")]
    assert late.state == "pending" and late.pending_until == datetime(2026, 10, 12, 1, 0, tzinfo=UTC)
    (mail,) = result.messages
    assert (mail.name, mail.would_send, dict(mail.blocked)) == ("料金とお見積りのご案内", 1,
                                                                {"opted out of news": 1})
    nodes = {n.id: n for n in result.nodes}
    assert (nodes["morning"].reached, nodes["morning"].pending, dict(nodes["morning"].outcomes)) == (3, 1,
                                                                                                     {"waited": 2})
    assert dict(nodes["mail"].outcomes) == {"would send": 1, "blocked": 1}
    # Every time, without "not again within 30 days": the second visit is a second run and a second mail.
    j.reentry_days = None
    again = simulation.simulate(j, days=10, now=NOW)
    assert (again.runs, again.entrants, again.messages[0].would_send) == (4, 3, 2)


def test_entry_rules_once_and_one_at_a_time_in_simulated_time(world):
    j = pricing_journey(world)
    people = pricing_visits(world)
    j.entry, j.reentry_days = "once", None
    once = simulation.simulate(j, days=10, now=NOW)
    assert (once.runs, dict(once.refused)) == (3, {"once": 1})
    # One at a time: the first run ended on 3 October, so the visit of 6 October starts a second.
    j.entry = "one_at_a_time"
    one = simulation.simulate(j, days=10, now=NOW)
    assert one.runs == 4 and not one.refused
    runs = sorted((p.run, p.entered_at) for p in one.paths if p.contact_id == people["twice"].pk)
    assert [r for r, _at in runs] == [1, 2]
    # With a longer wait the first run is still open at the second visit: refused.
    j.current.graph["nodes"][0] = {"id": "morning", "type": "wait", "duration": {"days": 7}, "next": "mail"}
    busy = simulation.simulate(j, days=10, now=NOW)
    assert dict(busy.refused) == {"one_at_a_time": 1}


def test_wait_for_event_condition_split_goal_and_the_frequency_cap(world):
    help_mail, tips = template(world, "機能Dの使い方"), template(world, "活用のヒント")
    SendingSettings.objects.filter(pk=1).update(frequency_cap=1, frequency_days=7)
    customers = membership.save_segment(Segment.objects.create(name="Customers"),
                                        {"field": "lifecycle_stage", "op": "in", "value": ["customer"]})
    j = journey("Feature D onboarding", {
        "trigger": {"type": "segment", "segment": customers.pk},
        "nodes": [
            {"id": "d14", "type": "wait_event", "event": "Feature Used",
             "where": [{"field": "properties.feature", "op": "equals", "value": "D"}],
             "timeout": {"days": 4}, "then": "adopted", "else": "manufacturer"},
            {"id": "adopted", "type": "goal", "name": "used feature D"},
            {"id": "manufacturer", "type": "condition", "if": {"any": [
                {"field": "industry", "op": "in", "value": ["manufacturing"]},
                {"event": "Feature Used", "within_days": 30}]}, "then": "ab", "else": "tag"},
            {"id": "ab", "type": "split", "branches": [{"percent": 50, "next": "help"},
                                                       {"percent": 50, "next": "help"}]},
            {"id": "help", "type": "send_email", "template": help_mail.pk, "next": "tips"},
            {"id": "tips", "type": "send_email", "template": tips.pk},
            {"id": "tag", "type": "add_tag", "tag": "untouched"},
        ]}, live=False, exit_filter={"event": "Churned"})
    people = {n: contact(world, f"{n}@example.co.jp", industry=ind) for n, ind in (
        ("uses", "it"), ("maker", "manufacturing"), ("tried", "it"), ("idle", "it"), ("gone", "manufacturing"))}
    at(START - timedelta(days=1), [identify(n, c.email) for n, c in people.items()])
    for n, c in people.items():
        SegmentChange.objects.create(segment=customers, contact=c, kind="entered", at=START + timedelta(hours=1))
    at(START + timedelta(days=2), [track("uses", "Feature Used", feature="D"), track("tried", "Feature Used",
                                                                                     feature="C")])
    at(START + timedelta(days=3), [track("gone", "Churned")])
    before = rows()
    result = simulation.simulate(j, days=10, now=NOW)
    assert rows() == before
    paths = {p.contact_id: p for p in result.paths}
    trail = {n: [(s.node, s.outcome) for s in paths[c.pk].steps] for n, c in people.items()}
    assert trail["uses"] == [("d14", "event"), ("adopted", "goal")]
    assert paths[people["uses"].pk].steps[1].at == START + timedelta(days=2)  # the goal, when the event came
    assert trail["idle"] == [("d14", "timeout"), ("manufacturer", "else"), ("tag", "next")]
    bucket = simulation.engine._bucket(simulation.SimpleNamespace(pk=f"simulated-{people['maker'].pk}-1"), "ab")
    assert trail["maker"] == [("d14", "timeout"), ("manufacturer", "then"), ("ab", f"branch {int(bucket >= 50)}"),
                              ("help", "would send"), ("tips", "blocked")]  # the cap: one mail in 7 days
    assert trail["tried"][1] == ("manufacturer", "then")  # used feature C on day 2: behaviour at that moment
    gone = paths[people["gone"].pk]  # churned on day 3: out before the step after the wait
    assert (gone.state, gone.reason, trail["gone"]) == ("exited", "exit condition", [("d14", "timeout")])
    assert dict(result.ended) == {"done": 4, "exited": 1, "goal": 1}
    counts = {m.name: (m.would_send, sum(m.blocked.values())) for m in result.messages}
    assert counts == {"機能Dの使い方": (2, 0), "活用のヒント": (0, 2)}


def test_date_and_schedule_triggers_and_a_manual_one(world):
    from kizuna.contacts.models import CustomField

    CustomField.objects.create(key="renewal_date", label="契約更新日", field_type="date", target="contact")
    renewal = journey("Renewal", {"trigger": {"type": "date", "field": "custom.renewal_date", "offset_days": -30,
                                              "at": "09:00"},
                                  "nodes": [{"id": "t", "type": "add_tag", "tag": "renewal"}]}, live=False)
    for n, day in (("in", "2026-11-05"), ("before", "2026-10-30"), ("after", "2026-11-12"), ("junk", "soon")):
        contact(world, f"{n}@example.co.jp", custom={"renewal_date": day})
    result = simulation.simulate(renewal, days=10, now=NOW)  # 1–11 October: renewals 31 Oct – 10 Nov
    assert [(p.contact, p.entered_at) for p in result.paths] == [
        ("in", datetime(2026, 10, 6, 0, 0, tzinfo=UTC)), ]
    weekly = journey("Weekly", {"trigger": {"type": "schedule", "every": "week", "day": 0, "at": "08:00",
                                            "audience": {"field": "custom.renewal_date", "op": "is_set"}},
                                "nodes": [{"id": "t", "type": "add_tag", "tag": "weekly"}]}, live=False,
                     entry="every_time")
    mondays = simulation.simulate(weekly, days=10, now=NOW)  # Mondays 5 October (08:00 JST)
    assert mondays.runs == 4 and {p.entered_at for p in mondays.paths} == {datetime(2026, 10, 4, 23, 0, tzinfo=UTC)}
    manual = journey("By hand", {"trigger": {"type": "manual"}, "nodes": [{"id": "x", "type": "exit"}]}, live=False)
    nobody = simulation.simulate(manual, days=30, now=NOW)
    assert nobody.runs == 0 and "manual" in nobody.notes
    with pytest.raises(ValueError, match="days"):
        simulation.simulate(manual, days=0)


def test_queries_do_not_grow_with_the_number_of_entrants(world):
    j = pricing_journey(world)

    def visitors(n: int, offset: int) -> None:
        people = [contact(world, f"v{offset + i}@example.co.jp") for i in range(n)]
        at(START + timedelta(days=2), [identify(f"v{offset + i}", p.email) for i, p in enumerate(people)]
           + [page(f"v{offset + i}", "/pricing") for i in range(n)])

    visitors(3, 0)
    with CaptureQueriesContext(connection) as few:
        assert simulation.simulate(j, days=10, now=NOW).runs == 3
    visitors(40, 100)
    with CaptureQueriesContext(connection) as many:
        assert simulation.simulate(j, days=10, now=NOW).runs == 43
    assert len(many) == len(few), [q["sql"][:80] for q in many]


def test_the_command_prints_a_summary(world):
    j = pricing_journey(world)
    pricing_visits(world)
    out = io.StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("journeys", "simulate", j.name, "--days", "10", stdout=out)
    text = out.getvalue()
    assert "entrants 3" in text and "料金とお見積りのご案内: would send 1, blocked 1 (opted out of news 1)" in text
    assert "twice #1" in text and "pending until 2026-10-12 01:00" in text


def test_the_simulation_page(client, make_user, world):
    j = pricing_journey(world)
    pricing_visits(world)
    Journey.objects.filter(pk=j.pk).update(name="<script>alert(1)</script>")
    client.force_login(make_user("viewer", username="vw"))
    form = client.get(f"/journeys/{j.pk}/simulate/")
    assert form.status_code == 200 and b"data-simulate-form" in form.content and b"data-summary" not in form.content
    with time_machine.travel(NOW, tick=False):
        page = client.get(f"/journeys/{j.pk}/simulate/", {"days": 10})
    html = page.content.decode()
    assert page.status_code == 200 and "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'data-entrants>3<' in html and 'data-would-send>1<' in html and "opted out of news (1)" in html
    assert html.count('class="sim-path"') == 3 and 'data-node="morning"' in html
    assert client.get(f"/journeys/{j.pk}/simulate/", {"days": 0}).status_code == 400
    assert client.get("/journeys/99999/simulate/").status_code == 404


def test_a_graph_not_saved_yet_can_be_simulated_and_a_bad_one_is_refused_with_its_path(world):
    from kizuna.journeys.graph import GraphError

    pricing_journey(world)
    pricing_visits(world)
    graph = {"trigger": {"type": "event", "event": "page", "where": [{"field": "path", "op": "starts_with",
                                                                      "value": "/pricing"}]},
             "nodes": [{"id": "t", "type": "add_tag", "tag": "pricing"}]}
    before = rows()
    result = simulation.simulate(graph, days=10, now=NOW, entry="once", exit_filter={"field": "industry",
                                                                                      "op": "is_not_set"})
    assert rows() == before and result.runs == 3 and dict(result.ended) == {"exited": 3}  # no industry: all out
    with pytest.raises(GraphError) as exc:
        simulation.simulate({"trigger": {"type": "manual"}, "nodes": [{"id": "x", "type": "bogus"}]}, days=3)
    assert exc.value.path == "nodes[0].type"
    with pytest.raises(GraphError) as exc:
        simulation.simulate(graph, days=3, goal_filter={"field": "nope", "op": "is_set"})
    assert exc.value.path == "goal_filter.field"
