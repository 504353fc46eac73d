"""The journey engine beyond the scenarios: crashes, concurrent workers, entry rules, versions,
graph validation with paths, waits and business days, splits, and each action."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, connections

from kizuna.contacts.models import ContactList, ListMembership
from kizuna.handoff.models import Delivery, Webhook
from kizuna.journeys import actions, engine, graph, timing, triggers
from kizuna.journeys.models import Enrollment, Journey, StepRun, TriggerCursor
from kizuna.messaging import outbox
from kizuna.messaging.models import EmailTemplate, Message
from kizuna.scoring.models import ContactScore
from kizuna.scoring.setup import ensure_defaults
from kizuna.segments import membership
from kizuna.segments.models import Segment, SegmentChange
from tests.journeyhelp import contact, journey, make_world, received, template, work
from tests.mailtest import SmtpServer

START = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)  # Thursday 09:00 in Tokyo


@pytest.fixture
def server(db, settings):
    with SmtpServer() as smtp:
        settings.KIZUNA_EMAIL_URL = smtp.url
        yield smtp


@pytest.fixture
def world(db):
    return make_world()


def three_mails(world, name: str = "Three mails", wait: dict | None = None) -> tuple[Journey, list[EmailTemplate]]:
    tpls = [template(world, f"{name} {i}") for i in (1, 2, 3)]
    nodes = [{"id": "m1", "type": "send_email", "template": tpls[0].pk, "next": "w" if wait else "m2"},
             {"id": "m2", "type": "send_email", "template": tpls[1].pk, "next": "m3"},
             {"id": "m3", "type": "send_email", "template": tpls[2].pk}]
    if wait:
        nodes.insert(1, {"id": "w", "type": "wait", "duration": wait, "next": "m2"})
    return journey(name, {"trigger": {"type": "manual"}, "nodes": nodes}, entry="every_time"), tpls


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the engine catches it."""


@pytest.mark.django_db
def test_a_crash_between_steps_neither_loses_nor_repeats_a_step(server, world, monkeypatch):
    j, tpls = three_mails(world)
    people = [contact(world, f"p{i}@example.co.jp") for i in range(5)]
    with time_machine.travel(START, tick=False):
        for p in people:
            engine.enroll(j, p)
        assert engine.advance(limit=2) == 6  # two enrollments done and committed
        real, calls = actions.ACTIONS["send_email"], []

        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the second mail of the next enrollment: its first step is done
                raise Crash
            return real(*args, **kwargs)

        monkeypatch.setitem(actions.ACTIONS, "send_email", dying)
        with pytest.raises(Crash):
            engine.advance(limit=2)
        monkeypatch.setitem(actions.ACTIONS, "send_email", real)
        assert StepRun.objects.count() == 6 and Message.objects.count() == 6  # the batch left no trace
        engine.tick()
        engine.tick()
        outbox.drain()
        outbox.drain()
    assert StepRun.objects.count() == 15
    assert set(Enrollment.objects.values_list("state", flat=True)) == {"done"}
    assert received(server) == Counter({(p.email, t.name): 1 for p in people for t in tpls})


@pytest.mark.django_db
def test_a_step_whose_key_is_taken_is_not_run_again(world):
    j, _tpls = three_mails(world)
    p = contact(world, "p@example.co.jp")
    with time_machine.travel(START, tick=False):
        e = engine.enroll(j, p)
        StepRun.objects.create(enrollment=e, node="m1", key=f"{e.pk}:m1:1", outcome="done before a crash")
        assert engine.advance() == 0
    e.refresh_from_db()
    assert e.state == "active" and e.node == "m1" and e.context["attempts"] == 1  # retried later, not repeated
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_workers_side_by_side_run_every_step_once(settings):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent workers are a PostgreSQL set-up (SKIP LOCKED); SQLite has one writer")
    world = make_world()
    j, tpls = three_mails(world, wait={"minutes": 1})
    people = [contact(world, f"c{i}@example.co.jp") for i in range(150)]
    engine.enroll_many(j, [p.pk for p in people])
    errors: list[BaseException] = []

    def worker(moment: datetime) -> None:
        try:
            with time_machine.travel(moment, tick=False):
                while engine.advance(limit=20):
                    pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    for moment in (datetime.now(UTC), datetime.now(UTC) + timedelta(minutes=2)):
        threads = [threading.Thread(target=worker, args=(moment,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert StepRun.objects.count() == 4 * 150
    assert Message.objects.count() == 3 * 150
    assert Counter(Message.objects.values_list("contact_id", flat=True)) == {p.pk: 3 for p in people}
    assert set(Enrollment.objects.values_list("state", flat=True)) == {"done"}


@pytest.mark.django_db
@pytest.mark.parametrize("entry, runs", [("once", 1), ("one_at_a_time", 2), ("every_time", 3)])
def test_entry_rules(world, entry, runs):
    j = journey(f"Entry {entry}", {"trigger": {"type": "manual"}, "nodes": [
        {"id": "w", "type": "wait", "duration": {"days": 1}}]}, entry=entry)
    p = contact(world, "p@example.co.jp")
    with time_machine.travel(START, tick=False):
        first = engine.enroll(j, p)
        second = engine.enroll(j, p)  # while the first waits
        engine.tick()
    with time_machine.travel(START + timedelta(days=2), tick=False):
        engine.tick()  # the first run is over
        third = engine.enroll(j, p)
    assert first is not None
    assert (second is not None) == (entry == "every_time")
    assert (third is not None) == (entry != "once")
    assert Enrollment.objects.filter(journey=j, contact=p).count() == runs


@pytest.mark.django_db(transaction=True)
def test_every_time_enrollments_at_the_same_moment_each_get_their_own_run():
    if connection.vendor != "postgresql":
        pytest.skip("two writers at once is a PostgreSQL set-up; SQLite has one writer")
    world = make_world()
    j = journey("Twice at once", {"trigger": {"type": "manual"}, "nodes": [
        {"id": "w", "type": "wait", "duration": {"days": 1}}]}, entry="every_time")
    people = [contact(world, f"t{i}@example.co.jp") for i in range(300)]
    ids = [p.pk for p in people]
    start, errors, made = threading.Barrier(2), [], []

    def enroll() -> None:
        try:
            start.wait()
            made.append(engine.enroll_many(j, ids))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=enroll) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert made == [300, 300]
    runs = Counter(Enrollment.objects.filter(journey=j).values_list("contact_id", "run"))
    assert runs == {(pk, run): 1 for pk in ids for run in (1, 2)}


@pytest.mark.django_db
def test_same_trigger_occurrence_enrolls_once(world):
    j = journey("Keyed", {"trigger": {"type": "manual"}, "nodes": [{"id": "x", "type": "exit"}]}, entry="every_time")
    p = contact(world, "p@example.co.jp")
    assert engine.enroll(j, p, key="event:42") is not None
    assert engine.enroll(j, p, key="event:42") is None
    assert engine.enroll(j, p, key="event:43") is not None


@pytest.mark.django_db
def test_a_draft_or_paused_journey_enrolls_and_runs_nothing(world):
    j = journey("Paused", {"trigger": {"type": "manual"}, "nodes": [
        {"id": "w", "type": "wait", "duration": {"hours": 1}, "next": "t"},
        {"id": "t", "type": "add_tag", "tag": "reached"}]}, live=False)
    p = contact(world, "p@example.co.jp")
    assert engine.enroll(j, p) is None
    engine.set_status(j, Journey.Status.LIVE)
    with time_machine.travel(START, tick=False):
        e = engine.enroll(j, p)
        engine.tick()
        engine.set_status(j, Journey.Status.PAUSED)
    with time_machine.travel(START + timedelta(hours=2), tick=False):
        engine.tick()
        e.refresh_from_db()
        assert e.state == "waiting" and not p.tags.exists()
        engine.set_status(j, Journey.Status.LIVE)
        engine.tick()
    e.refresh_from_db()
    assert e.state == "done" and list(p.tags.values_list("name", flat=True)) == ["reached"]


@pytest.mark.django_db
def test_editing_a_live_journey_makes_a_version_and_enrollments_keep_theirs(world):
    first, second = template(world, "Version 1 mail"), template(world, "Version 2 mail")
    j = journey("Versioned", {"trigger": {"type": "manual"}, "nodes": [
        {"id": "wait", "type": "wait", "duration": {"days": 1}, "next": "mail"},
        {"id": "mail", "type": "send_email", "template": first.pk}]}, entry="every_time")
    old, new = contact(world, "old@example.co.jp"), contact(world, "new@example.co.jp")
    with time_machine.travel(START, tick=False):
        engine.enroll(j, old)
        engine.tick()
        v2 = engine.save_journey(j, {"trigger": {"type": "manual"}, "nodes": [
            {"id": "wait", "type": "wait", "duration": {"days": 1}, "next": "mail"},
            {"id": "mail", "type": "send_email", "template": second.pk}]})
        engine.enroll(j, new)
        engine.tick()
    assert v2.number == 2 and j.versions.count() == 2
    with time_machine.travel(START + timedelta(days=1, minutes=1), tick=False):
        engine.tick()
    sent = dict(Message.objects.values_list("to_email", "version__template__name"))
    assert sent == {"old@example.co.jp": "Version 1 mail", "new@example.co.jp": "Version 2 mail"}
    assert j.versions.get(number=1).graph["nodes"][1]["template"] == first.pk  # never rewritten


# --- validation ----------------------------------------------------------------------------

def _graph(*nodes, trigger=None, start=None) -> dict:
    out = {"trigger": trigger or {"type": "manual"}, "nodes": list(nodes)}
    if start:
        out["start"] = start
    return out


@pytest.mark.django_db
@pytest.mark.parametrize("bad, path", [
    (_graph({"id": "a", "type": "wait", "duration": {"days": 1}, "next": "nowhere"}), "nodes[0].next"),
    (_graph({"id": "a", "type": "add_tag", "tag": "x"}, {"id": "c", "type": "condition",
                                                         "if": {"field": "industry", "op": "in", "value": ["it"]},
                                                         "then": "zz", "else": "a"}), "nodes[1].then"),
    (_graph({"id": "c", "type": "condition", "if": {"field": "industry", "op": "bogus", "value": ["it"]},
             "then": None}), "nodes[0].if.op"),
    (_graph({"id": "m", "type": "send_email", "template": 999}), "nodes[0].template"),
    (_graph({"id": "x", "type": "exit"}, trigger={"type": "segment", "segment": 999}), "trigger.segment"),
    (_graph({"id": "x", "type": "exit"}, trigger={"type": "event", "event": "page",
                                                  "where": [{"field": "path", "op": "like", "value": "/p"}]}),
     "trigger.where[0].op"),
    (_graph({"id": "e", "type": "enroll", "journey": 999}), "nodes[0].journey"),
    (_graph({"id": "l", "type": "add_to_list", "list": 999}), "nodes[0].list"),
    (_graph({"id": "s", "type": "split", "branches": [{"percent": 50, "next": "x"}], "holdout": 10},
            {"id": "x", "type": "exit"}), "nodes[0].branches"),
    (_graph({"id": "w", "type": "wait", "time_of_day": "25:00"}), "nodes[0].time_of_day"),
    (_graph({"id": "w", "type": "wait_event", "event": "Booked", "then": None}), "nodes[0].timeout"),
    (_graph({"id": "a", "type": "exit"}, {"id": "a", "type": "exit"}), "nodes[1].id"),
    (_graph({"id": "a", "type": "bogus"}), "nodes[0].type"),
    (_graph({"id": "a", "type": "exit", "next": "a"}), "nodes[0].next"),
    (_graph({"id": "a", "type": "exit"}, start="b"), "start"),
    (_graph({"id": "a", "type": "set_stage", "stage": "king"}), "nodes[0].stage"),
    (_graph({"id": "a", "type": "update_field", "field": "source", "value": "api"}), "nodes[0].field"),
    (_graph({"id": "a", "type": "update_field", "field": "custom.nope", "value": 1}), "nodes[0].field"),
])
def test_invalid_graphs_name_the_path_at_fault(bad, path):
    with pytest.raises(graph.GraphError) as exc:
        graph.check(bad)
    assert path in [p for p, _m in exc.value.errors], exc.value.errors


@pytest.mark.django_db
def test_a_loop_without_a_wait_is_refused_and_one_with_a_wait_is_accepted():
    loop = _graph({"id": "a", "type": "add_tag", "tag": "x", "next": "b"},
                  {"id": "b", "type": "remove_tag", "tag": "x", "next": "c"},
                  {"id": "c", "type": "condition", "if": {"field": "industry", "op": "is_set"}, "then": "a",
                   "else": None})
    with pytest.raises(graph.GraphError) as exc:
        graph.check(loop)
    assert exc.value.errors == [("nodes[2].then", "loops back to 'a' without a wait in between")]
    loop["nodes"][2]["then"] = "w"
    loop["nodes"].append({"id": "w", "type": "wait", "duration": {"days": 30}, "next": "a"})
    assert graph.check(loop)["nodes"][3]["type"] == "wait"


@pytest.mark.django_db
def test_every_fault_is_reported_and_deleted_references_are_found_later(world):
    tpl = template(world, "Doomed")
    segment = membership.save_segment(Segment.objects.create(name="Doomed segment"),
                                      {"field": "industry", "op": "is_set"})
    with pytest.raises(graph.GraphError) as exc:
        engine.save_journey(Journey(name="Bad"), _graph({"id": "m", "type": "send_email", "template": 999},
                                                        {"id": "t", "type": "add_tag"}))
    assert [p for p, _m in exc.value.errors] == ["nodes[0].template", "nodes[1].tag"]
    j = journey("Fine today", _graph({"id": "m", "type": "send_email", "template": tpl.pk},
                                     trigger={"type": "segment", "segment": segment.pk}))
    assert engine.problems(j) == []
    tpl.delete()
    segment.delete()
    assert [p for p, _m in engine.problems(j)] == ["trigger.segment", "nodes[0].template"]
    with pytest.raises(graph.GraphError) as exc:
        engine.save_journey(Journey(name="Bad exit", exit_filter={"field": "nope", "op": "is_set"}),
                            _graph({"id": "x", "type": "exit"}))
    assert exc.value.errors[0][0] == "exit_filter.field"


# --- timing --------------------------------------------------------------------------------

def test_waits_in_the_contacts_time_zone_and_japanese_business_days():
    tokyo = timing.zone("Asia/Tokyo")
    friday_evening = datetime(2026, 10, 2, 9, 0, tzinfo=UTC)  # Friday 18:00 JST
    assert timing.next_time_of_day(friday_evening, "10:00", tokyo) == datetime(2026, 10, 3, 10, 0, tzinfo=tokyo)
    early = datetime(2026, 10, 2, 0, 0, tzinfo=UTC)  # 09:00 JST: 10:00 is still ahead today
    assert timing.next_time_of_day(early, "10:00", tokyo) == datetime(2026, 10, 2, 10, 0, tzinfo=tokyo)
    assert timing.next_time_of_day(early, "10:00", tokyo, days=1) == datetime(2026, 10, 3, 10, 0, tzinfo=tokyo)
    # Friday 9 October + 1 business day: Monday 12 October is 体育の日/スポーツの日 → Tuesday.
    friday = datetime(2026, 10, 9, 1, 0, tzinfo=UTC)
    assert timing.add_business_days(friday, 1, tokyo, "09:00") == datetime(2026, 10, 13, 9, 0, tzinfo=tokyo)
    # Golden Week 2026: 29 April, 3–6 May (6 May is a substitute holiday).
    assert timing.add_business_days(datetime(2026, 4, 28, 3, 0, tzinfo=UTC), 3, tokyo).date() == dt.date(2026, 5, 7)
    assert not timing.is_business_day(dt.date(2026, 5, 6)) and timing.is_business_day(dt.date(2026, 5, 7))
    assert timing.zone("Not/AZone") == tokyo
    assert timing.wait_until({"until": "2026-12-01T10:00:00+09:00"}, early, tokyo) == datetime(
        2026, 12, 1, 1, 0, tzinfo=UTC)


# --- branches and actions ------------------------------------------------------------------

@pytest.mark.django_db
def test_random_split_is_deterministic_per_enrollment_and_keeps_a_holdout(world):
    j = journey("Split", _graph(
        {"id": "s", "type": "split", "branches": [{"percent": 45, "next": "a"}, {"percent": 45, "next": "b"}],
         "holdout": 10},
        {"id": "a", "type": "add_tag", "tag": "A"}, {"id": "b", "type": "add_tag", "tag": "B"}))
    people = [contact(world, f"s{i}@example.co.jp") for i in range(200)]
    engine.enroll_many(j, [p.pk for p in people])
    engine.tick()
    outcomes = Counter(StepRun.objects.filter(node="s").values_list("outcome", flat=True))
    assert sum(outcomes.values()) == 200 and set(outcomes) == {"branch 0", "branch 1", "holdout"}
    assert 60 <= outcomes["branch 0"] <= 120 and 60 <= outcomes["branch 1"] <= 120 and 5 <= outcomes["holdout"] <= 40
    for e in Enrollment.objects.all()[:20]:
        step = StepRun.objects.get(enrollment=e, node="s")
        bucket = engine._bucket(e, "s")
        assert step.outcome == ("branch 0" if bucket < 45 else "branch 1" if bucket < 90 else "holdout")


@pytest.mark.django_db
def test_actions_change_the_contact_and_queue_notices(world, settings):
    model = ensure_defaults()
    target = journey("Nurture B", _graph({"id": "w", "type": "wait", "duration": {"days": 1}}), entry="once")
    seminar = ContactList.objects.create(name="Seminar")
    old_list = ContactList.objects.create(name="Old")
    hook = Webhook.objects.create(name="CRM", kind="json", url="http://127.0.0.1:9/hook", secret="s")
    j = journey("Everything", _graph(
        {"id": "f", "type": "update_field", "field": "job_title", "value": "部長", "next": "t"},
        {"id": "t", "type": "add_tag", "tag": "nurtured", "next": "u"},
        {"id": "u", "type": "remove_tag", "tag": "cold", "next": "st"},
        {"id": "st", "type": "set_stage", "stage": "mql", "next": "sc"},
        {"id": "sc", "type": "score", "model": model.pk, "points": 15, "next": "l1"},
        {"id": "l1", "type": "add_to_list", "list": seminar.pk, "next": "l2"},
        {"id": "l2", "type": "remove_from_list", "list": old_list.pk, "next": "wh"},
        {"id": "wh", "type": "webhook", "webhook": hook.pk, "next": "en"},
        {"id": "en", "type": "enroll", "journey": target.pk, "next": "al"},
        {"id": "al", "type": "alert_owner", "next": "g"},
        {"id": "g", "type": "goal", "name": "touched"}))
    p = contact(world, "p@example.co.jp", lifecycle_stage="lead")
    from kizuna.contacts.services import update_contact

    update_contact(None, p, {"tags": ["cold", "vip"]})
    ListMembership.objects.create(contact_list=old_list, contact=p)
    with time_machine.travel(START, tick=False):
        e = engine.enroll(j, p)
        engine.tick()
    p.refresh_from_db()
    e.refresh_from_db()
    assert p.job_title == "部長" and p.lifecycle_stage == "mql"
    assert sorted(p.tags.values_list("name", flat=True)) == ["nurtured", "vip"]
    assert list(p.lists.values_list("name", flat=True)) == ["Seminar"]
    assert ContactScore.objects.get(model=model, contact=p).engagement == pytest.approx(15)
    delivery = Delivery.objects.get(webhook=hook)
    assert delivery.event == "journey.step" and delivery.payload["contact"]["email"] == "p@example.co.jp"
    assert delivery.key == f"journey:{e.pk}:wh:1"
    assert Enrollment.objects.get(journey=target, contact=p).state == "waiting"
    assert StepRun.objects.get(enrollment=e, node="al").outcome.startswith("skipped: the contact has no owner")
    assert e.state == "done" and e.goal_reached_at is not None


@pytest.mark.django_db
def test_segment_changes_trigger_once_and_late_commits_below_the_cursor_are_not_missed(world):
    segment = membership.save_segment(Segment.objects.create(name="IT"),
                                      {"field": "industry", "op": "in", "value": ["it"]})
    j = journey("On entry", _graph({"id": "x", "type": "add_tag", "tag": "welcome"},
                                   trigger={"type": "segment", "segment": segment.pk}), entry="every_time")
    a, b, c = (contact(world, f"{n}@example.co.jp") for n in "abc")
    first = SegmentChange.objects.create(segment=segment, contact=a, kind="entered")
    third = SegmentChange.objects.create(segment=segment, contact=c, kind="entered", id=first.pk + 2)
    triggers.poll_segment_changes()
    cursor = TriggerCursor.objects.get(name="segment_changes")
    assert cursor.position == third.pk and list(cursor.gaps) == [str(first.pk + 1)]
    # The transaction holding the id in between commits late.
    SegmentChange.objects.create(segment=segment, contact=b, kind="entered", id=first.pk + 1)
    triggers.poll_segment_changes()
    triggers.poll_segment_changes()
    assert sorted(Enrollment.objects.filter(journey=j).values_list("contact__email", flat=True)) == [
        "a@example.co.jp", "b@example.co.jp", "c@example.co.jp"]
    assert TriggerCursor.objects.get(name="segment_changes").gaps == {}
    SegmentChange.objects.create(segment=segment, contact=a, kind="exited", id=third.pk + 1)
    triggers.poll_segment_changes()
    assert Enrollment.objects.filter(journey=j).count() == 3  # exits do not start an "entered" journey


@pytest.mark.django_db
def test_segment_changes_are_not_read_while_a_full_recompute_writes(world):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite writers take turns: nothing is in flight while a reader reads")
    import psycopg

    segment = membership.save_segment(Segment.objects.create(name="IT"),
                                      {"field": "industry", "op": "in", "value": ["it"]})
    journey("On entry", _graph({"id": "x", "type": "add_tag", "tag": "welcome"},
                               trigger={"type": "segment", "segment": segment.pk}), entry="every_time")
    SegmentChange.objects.create(segment=segment, contact=contact(world, "a@example.co.jp"), kind="entered")
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "host", "port", "password")},
                         autocommit=True) as recompute:  # another process, in the middle of a recompute
        recompute.execute("SELECT pg_advisory_lock_shared(%s)", [membership.CHANGE_WRITERS_LOCK])
        assert triggers.poll_segment_changes() == 0
        assert not TriggerCursor.objects.filter(name="segment_changes").exists()
        recompute.execute("SELECT pg_advisory_unlock_shared(%s)", [membership.CHANGE_WRITERS_LOCK])
    assert triggers.poll_segment_changes() == 1


@pytest.mark.django_db
def test_date_trigger_30_days_before_renewal_once_per_date(world):
    from kizuna.contacts.models import CustomField

    CustomField.objects.create(key="renewal_date", label="契約更新日", field_type="date", target="contact")
    renewal = template(world, "更新のご案内")
    j = journey("Renewal", _graph({"id": "m", "type": "send_email", "template": renewal.pk},
                                  trigger={"type": "date", "field": "custom.renewal_date", "offset_days": -30,
                                           "at": "09:00"}), entry="every_time")
    due = contact(world, "due@example.co.jp", custom={"renewal_date": "2026-11-05"})
    contact(world, "later@example.co.jp", custom={"renewal_date": "2026-12-24"})
    with time_machine.travel(datetime(2026, 10, 5, 23, 0, tzinfo=UTC), tick=False):  # 6 Oct 08:00 JST
        work()
    assert not Enrollment.objects.exists()
    with time_machine.travel(datetime(2026, 10, 6, 0, 30, tzinfo=UTC), tick=False):  # 6 Oct 09:30 JST
        work()
        work()
    with time_machine.travel(datetime(2026, 10, 7, 0, 30, tzinfo=UTC), tick=False):
        work()
    assert list(Enrollment.objects.filter(journey=j).values_list("contact", flat=True)) == [due.pk]
    assert Message.objects.get().to_email == "due@example.co.jp"


@pytest.mark.django_db
def test_webhook_step_is_delivered_signed_through_the_hand_off_queue(world, settings):
    settings.KIZUNA_WEBHOOK_ALLOW_PRIVATE = True  # the receiver below listens on 127.0.0.1
    import http.server
    import json

    got: list[tuple[dict, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((json.loads(body), self.headers["Kizuna-Event"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        hook = Webhook.objects.create(name="Any", kind="json", url=f"http://127.0.0.1:{httpd.server_port}/",
                                      secret="s3cret")
        j = journey("Hooked", _graph({"id": "h", "type": "webhook", "webhook": hook.pk, "label": "demo booked"}))
        p = contact(world, "p@example.co.jp")
        engine.enroll(j, p)
        work()
        work()
    finally:
        httpd.shutdown()
    assert len(got) == 1
    payload, event = got[0]
    assert event == "journey.step" and payload["journey"]["name"] == "Hooked" and payload["text"] == "demo booked"
    assert Delivery.objects.get().status == "sent"


def test_schedule_occurrences_monthly_and_weekly():
    tokyo = timing.zone("Asia/Tokyo")
    now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)  # Tuesday 1 December 09:30 JST
    monthly = {"every": "month", "day": 1, "at": "10:00"}
    assert triggers.last_occurrence(monthly, now, tokyo) == datetime(2026, 11, 1, 10, 0, tzinfo=tokyo)
    assert triggers.last_occurrence(monthly, now + timedelta(hours=1), tokyo) == datetime(2026, 12, 1, 10, 0,
                                                                                           tzinfo=tokyo)
    january = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)  # 09:00 JST: December's is the last one
    assert triggers.last_occurrence(monthly, january, tokyo) == datetime(2026, 12, 1, 10, 0, tzinfo=tokyo)
    weekly = {"every": "week", "day": 0, "at": "08:00"}  # Mondays
    assert triggers.last_occurrence(weekly, now, tokyo) == datetime(2026, 11, 30, 8, 0, tzinfo=tokyo)
    monday_early = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)  # Monday 07:00 JST
    assert triggers.last_occurrence(weekly, monday_early, tokyo) == datetime(2026, 11, 23, 8, 0, tzinfo=tokyo)


@pytest.mark.django_db
def test_leaving_the_segment_exits_the_journey_and_cancels_its_wait(world):
    segment = membership.save_segment(Segment.objects.create(name="Trial users"),
                                      {"field": "industry", "op": "in", "value": ["it"]})
    membership.recompute(segment)
    j = journey("Trial nurture", _graph(
        {"id": "w", "type": "wait", "duration": {"days": 7}, "next": "t"}, {"id": "t", "type": "add_tag", "tag": "x"},
        trigger={"type": "segment", "segment": segment.pk}), exit_filter={"not": {"segment": segment.pk}})
    p = contact(world, "trial@example.co.jp")
    from kizuna.contacts.services import update_contact

    with time_machine.travel(START, tick=False):
        update_contact(None, p, {"industry": "it"})
        engine.tick()
        assert Enrollment.objects.get(journey=j).state == "waiting"
    with time_machine.travel(START + timedelta(days=2), tick=False):
        update_contact(None, p, {"industry": "manufacturing"})
        engine.tick()
    e = Enrollment.objects.get(journey=j)
    assert (e.state, e.reason, e.due_at) == ("exited", "exit condition", None)
    with time_machine.travel(START + timedelta(days=8), tick=False):
        engine.tick()
    assert not p.tags.exists()


@pytest.mark.django_db
def test_what_happened_before_the_journey_went_live_starts_nothing(world):
    from kizuna.events import ingest, processing

    j = journey("Late start", _graph({"id": "t", "type": "add_tag", "tag": "x"},
                                     trigger={"type": "event", "event": "Form Submitted"}), live=False)
    p = contact(world, "p@example.co.jp")
    def info():
        return ingest.RequestInfo(ip="126.33.10.20", user_agent="Mozilla/5.0 Chrome/131")

    submitted = {"type": "track", "anonymousId": "a1", "event": "Form Submitted",
                 "context": {"traits": {"email": p.email}}}
    with time_machine.travel(START, tick=False):
        ingest.ingest([submitted], info())  # received, not processed yet
    with time_machine.travel(START + timedelta(minutes=5), tick=False):
        engine.set_status(j, Journey.Status.LIVE)
        processing.drain()
        assert not Enrollment.objects.exists()
        ingest.ingest([submitted], info())
        processing.drain()
    assert Enrollment.objects.filter(journey=j, contact=p).count() == 1


@pytest.mark.django_db
def test_a_refused_field_value_is_logged_and_the_journey_goes_on(world):
    j = journey("Bad value", _graph({"id": "f", "type": "update_field", "field": "industry", "value": "bogus",
                                     "next": "t"}, {"id": "t", "type": "add_tag", "tag": "after"}))
    p = contact(world, "p@example.co.jp")
    engine.enroll(j, p)
    engine.tick()
    assert StepRun.objects.get(node="f").outcome.startswith("refused:")
    assert Enrollment.objects.get(journey=j).state == "done" and p.tags.filter(name="after").exists()


@pytest.mark.django_db
def test_an_edit_by_hand_meets_the_exit_condition_at_once(world):
    from kizuna.contacts.services import update_contact

    j = journey("Stop on tag", _graph({"id": "w", "type": "wait", "duration": {"days": 30}}),
                exit_filter={"field": "tag", "op": "has", "value": "stop"})
    p = contact(world, "p@example.co.jp")
    engine.enroll(j, p)
    engine.tick()
    assert Enrollment.objects.get(journey=j).state == "waiting"
    update_contact(None, p, {"tags": ["stop"]})
    e = Enrollment.objects.get(journey=j)
    assert (e.state, e.reason, e.due_at) == ("exited", "exit condition", None)


def _story(j: Journey, people) -> list:
    """Per contact, in order: each step's node and note (ids masked), the run's end, and the
    contact's tags, lists, stage and queued mail."""
    import re

    out = []
    for p in people:
        e = Enrollment.objects.get(journey=j, contact=p)
        steps = [(s.node, s.key.split(":", 1)[1], re.sub(r"\d+", "#", s.outcome)) for s in e.steps.order_by("id")]
        p.refresh_from_db()
        out.append((steps, e.state, e.reason, e.node, e.goal_reached_at is not None,
                    sorted(p.tags.values_list("name", flat=True)), sorted(p.lists.values_list("name", flat=True)),
                    p.lifecycle_stage, p.company_id is not None,
                    Message.objects.filter(contact=p, extra__journey=j.pk).count()))
    return out


@pytest.mark.django_db
def test_set_based_batches_do_per_enrollment_exactly_what_one_at_a_time_does(world, settings):
    """The same journey, the same kinds of contacts: one group run one enrollment at a time, the
    other set-based; step by step and effect by effect they must match."""
    model = ensure_defaults()
    mail = template(world, "Welcome")
    seminar = ContactList.objects.create(name="Seminar")
    old_list = ContactList.objects.create(name="Old")
    from kizuna.contacts.models import Contact
    from kizuna.contacts.services import update_contact

    def graph() -> dict:
        return _graph(
            {"id": "t", "type": "add_tag", "tag": "nurtured", "next": "c"},
            {"id": "c", "type": "condition", "if": {"field": "tag", "op": "has", "value": "vip"},
             "then": "st", "else": "u"},
            {"id": "u", "type": "remove_tag", "tag": "cold", "next": "st"},
            {"id": "st", "type": "set_stage", "stage": "mql", "next": "sc"},
            {"id": "sc", "type": "score", "model": model.pk, "points": 5, "next": "w"},
            {"id": "w", "type": "wait", "duration": {"hours": 2}, "next": "m"},
            {"id": "m", "type": "send_email", "template": mail.pk, "next": "l1"},
            {"id": "l1", "type": "add_to_list", "list": seminar.pk, "next": "l2"},
            {"id": "l2", "type": "remove_from_list", "list": old_list.pk, "next": "s"},
            {"id": "s", "type": "split", "branches": [{"percent": 50, "next": "f"}, {"percent": 50, "next": "g"}]},
            {"id": "f", "type": "update_field", "field": "job_title", "value": "部長", "next": "g"},
            {"id": "g", "type": "goal", "name": "touched"})

    def people(prefix: str) -> list:
        out = []
        for i in range(12):
            p = contact(world, f"{prefix}{i}@example.co.jp", lifecycle_stage="mql" if i % 4 == 0 else "lead")
            tags = [t for t, on in (("cold", i % 2), ("vip", i % 3 == 0), ("stop", i == 7), ("nurtured", i == 5)) if on]
            if tags:
                update_contact(None, p, {"tags": tags})
            if i % 3 == 1:
                ListMembership.objects.create(contact_list=old_list, contact=p)
            out.append(p)
        out.append(Contact.objects.create(email=None, family_name="no email"))  # the mail step skips it
        return out

    stop = {"field": "tag", "op": "has", "value": "stop"}
    runs = {}
    for set_based in (False, True):
        settings.KIZUNA_JOURNEY_SET_BASED = set_based
        j = journey(f"Same story {set_based}", graph(), exit_filter=stop)
        group = people(f"s{int(set_based)}-")
        with time_machine.travel(START, tick=False):
            assert engine.enroll_many(j, [p.pk for p in group]) == len(group)
            engine.tick()
        with time_machine.travel(START + timedelta(hours=3), tick=False):
            engine.tick()
        runs[set_based] = _story(j, group)
    # The split's bucket depends on the enrollment id: compare what each contact did apart from it.
    one_by_one, set_based = runs[False], runs[True]
    for a, b in zip(one_by_one, set_based, strict=True):
        cut = lambda story: ([s for s in story[0] if s[0] not in {"s", "f"}], *story[1:])  # noqa: E731
        assert cut(a) == cut(b)
    assert {s[1] for s in one_by_one} == {"done", "exited"}
    assert sum(s[-1] for s in set_based) == 11  # twelve contacts, one exited first, one without email
    first = set_based[1]  # cold, in the old list, not vip
    assert [s[0] for s in first[0] if s[0] not in {"s", "f"}] == ["t", "c", "u", "st", "sc", "w", "m", "l1", "l2", "g"]
    assert [s[2] for s in first[0][:3]] == ["updated tags", "condition not met", "updated tags"]
    assert first[5] == ["nurtured"] and first[6] == ["Seminar"] and first[7] == "mql"
    assert set_based[7][0] == [] and set_based[7][2] == "exit condition"
