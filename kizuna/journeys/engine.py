"""The journey engine: enrolling contacts, and advancing enrollments one step at a time.

`advance()` claims due enrollments (SKIP LOCKED on PostgreSQL, the writer lock on SQLite) and,
in one transaction, runs each one's steps until it waits or ends. Every step writes a `StepRun`
under the key `enrollment:node:visit` in that same transaction, together with its effects (an
outbox row keyed `journey:<step key>`, a delivery row, a field change) and the enrollment's new
node: a crash rolls all of it back and the step runs again as if for the first time; a commit
makes it done for good. Nothing leaves the machine inside the transaction — mail and webhooks
go out later from their own durable queues — so "runs again" never means "sent twice".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from kizuna.contacts.models import Contact
from kizuna.db import copy
from kizuna.db.loops import repeat
from kizuna.db.writelock import sqlite_writer
from kizuna.journeys import graph as graph_mod
from kizuna.journeys import timing
from kizuna.journeys.models import Enrollment, Journey, JourneyVersion, StepRun
from kizuna.segments import filters
from kizuna.segments.membership import scoring_models

log = logging.getLogger(__name__)

ACTIVE, WAITING = Enrollment.State.ACTIVE, Enrollment.State.WAITING
OPEN = (ACTIVE, WAITING)
MAX_STEPS_PER_RUN = 100  # a guard: the graph check already refuses loops without a wait
MAX_ATTEMPTS = 3
RETRY_AFTER = timedelta(minutes=5)


# --- saving journeys -------------------------------------------------------------------------

def save_journey(journey: Journey, graph, *, refs: graph_mod.Refs | None = None) -> JourneyVersion:
    """Checks the graph and the exit and goal conditions, and stores a new immutable version.
    Enrollments in flight keep the version they started on; new ones take this one."""
    refs = refs or graph_mod.Refs.load()
    errors: list[tuple[str, str]] = []
    try:
        checked = graph_mod.check(graph, refs, journey_id=journey.pk)
    except graph_mod.GraphError as exc:
        errors += exc.errors
    for name in ("exit_filter", "goal_filter"):
        tree = getattr(journey, name)
        if tree in (None, {}):
            setattr(journey, name, None)
            continue
        try:
            setattr(journey, name, filters.check(tree, refs.filter_ctx or filters.Context.load()))
        except filters.FilterError as exc:
            errors.append((f"{name}.{exc.path}" if exc.path != "filter" else name, exc.message))
    if errors:
        raise graph_mod.GraphError(errors)
    with sqlite_writer(), transaction.atomic():
        now = timezone.now()
        journey.updated_at = now
        journey.save()
        last = journey.versions.order_by("-number").values_list("number", flat=True).first() or 0
        version = JourneyVersion.objects.create(journey=journey, number=last + 1, graph=checked, created_at=now)
        journey.current = version
        journey.save(update_fields=["current"])
    return version


def set_status(journey: Journey, status: str) -> None:
    """Live starts triggers; paused holds every enrollment where it is; archived ends them."""
    if status == Journey.Status.LIVE and journey.current_id is None:
        raise ValueError(_("a journey needs a saved version before it can go live"))
    now = timezone.now()
    with sqlite_writer(), transaction.atomic():
        journey.status, journey.updated_at = status, now
        if status == Journey.Status.LIVE:
            journey.trigger_state = {**journey.trigger_state, "live_since": now.isoformat()}
        journey.save(update_fields=["status", "updated_at", "trigger_state"])
        if status == Journey.Status.ARCHIVED:
            Enrollment.objects.filter(journey=journey, state__in=OPEN).update(
                state=Enrollment.State.EXITED, reason="journey archived", due_at=None, waiting_for="",
                ended_at=now, updated_at=now)


def problems(journey: Journey) -> list[tuple[str, str]]:
    """Faults of the current version against today's data (a template or segment deleted since)."""
    if journey.current_id is None:
        return []
    try:
        graph_mod.check(journey.current.graph, journey_id=journey.pk)
    except graph_mod.GraphError as exc:
        return exc.errors
    return []


# --- enrolling -------------------------------------------------------------------------------

def enroll_many(journey: Journey, contact_ids: Iterable[int], *, key=None, now: datetime | None = None,
                context: dict | None = None) -> int:
    """Enrolls the contacts the entry rules allow; returns how many were enrolled.

    `key(contact_id)` names the trigger occurrence (an event, a segment change, a schedule
    date): the same occurrence never enrolls twice, whoever sees it again."""
    if journey.status != Journey.Status.LIVE or journey.current_id is None:
        return 0
    now = now or timezone.now()
    ids = sorted({int(c) for c in contact_ids if c})
    start = journey.current.graph["start"]
    made = 0
    for offset in range(0, len(ids), 1000):
        part = ids[offset:offset + 1000]
        with sqlite_writer(), transaction.atomic():
            _lock_entries(journey.pk, part)
            latest: dict[int, tuple[int, str, datetime]] = {}
            for cid, run, state, entered in (Enrollment.objects.filter(journey=journey, contact_id__in=part)
                                             .values_list("contact_id", "run", "state", "entered_at")):
                if cid not in latest or run > latest[cid][0]:
                    latest[cid] = (run, state, entered)
            rows = []
            for cid in part:
                prev = latest.get(cid)
                if prev is not None:
                    if journey.entry == Journey.Entry.ONCE:
                        continue
                    if journey.entry == Journey.Entry.ONE_AT_A_TIME and prev[1] in OPEN:
                        continue
                    if journey.reentry_days and prev[2] > now - timedelta(days=journey.reentry_days):
                        continue
                rows.append(Enrollment(journey=journey, version_id=journey.current_id, contact_id=cid,
                                       run=(prev[0] + 1) if prev else 1, state=ACTIVE, node=start, due_at=now,
                                       trigger_key=key(cid) if key else None, context=dict(context or {}),
                                       entered_at=now, updated_at=now))
            if not rows:
                continue
            keys = [r.trigger_key for r in rows if r.trigger_key]
            if keys:
                taken = set(Enrollment.objects.filter(journey=journey, trigger_key__in=keys)
                            .values_list("trigger_key", flat=True))
                rows = [r for r in rows if r.trigger_key not in taken]
            before = Enrollment.objects.filter(journey=journey, contact_id__in=part).count()
            # The same occurrence enrolled concurrently (trigger_key) is skipped here; runs cannot
            # collide, _lock_entries made this transaction the only one numbering them.
            Enrollment.objects.bulk_create(rows, ignore_conflicts=True)
            made += Enrollment.objects.filter(journey=journey, contact_id__in=part).count() - before
    return made


def _lock_entries(journey_id: int, contact_ids: Sequence[int]) -> None:
    """Makes this transaction the only one enrolling these contacts in this journey until it ends,
    so the run numbers read next stay the latest ('every time' twice at once gets runs n and n+1).

    PostgreSQL: transaction advisory locks, one per (journey, contact), taken in key order so two
    enrollers of overlapping contacts queue instead of deadlocking. SQLite: the writer lock the
    caller holds already does it."""
    if connection.vendor != "postgresql" or not contact_ids:
        return
    # The two-integer form (journey, contact): a key space of its own, apart from the one-bigint
    # locks of kizuna.db.locks. Ids past 2**31 share a lock with another contact: a wait, no harm.
    keys = sorted({int(c) & 0x7FFFFFFF for c in contact_ids})
    with connection.cursor() as cur:
        # Volatile functions in the select list are evaluated after the sort: locks go in order.
        cur.execute("SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k ORDER BY k",
                    [int(journey_id) & 0x7FFFFFFF, keys])


def enroll(journey: Journey, contact: Contact, *, key: str | None = None, now: datetime | None = None,
           context: dict | None = None) -> Enrollment | None:
    """Manual or API enrollment of one contact; None when the entry rules refuse it."""
    made = enroll_many(journey, [contact.pk], key=(lambda _c: key) if key else None, now=now,
                       context={"via": "manual", **(context or {})})
    if not made:
        return None
    return Enrollment.objects.filter(journey=journey, contact=contact).order_by("-run").first()


# --- advancing -------------------------------------------------------------------------------

@dataclass
class Outcome:
    note: str
    next: str | None = None
    wait_until: datetime | None = None
    wait_event: dict | None = None
    end: str | None = None  # an Enrollment.State that ends the run


class Runner:
    """Runs the steps of a batch of enrollments; holds what the batch shares (versions, contacts)."""

    def __init__(self, now: datetime, enrollments: Sequence[Enrollment]):
        from kizuna.messaging.models import SendingSettings

        self.now = now
        self.versions = JourneyVersion.objects.in_bulk({e.version_id for e in enrollments})
        self.journeys = Journey.objects.in_bulk({e.journey_id for e in enrollments})
        self.contacts = Contact.objects.select_related("owner").in_bulk({e.contact_id for e in enrollments})
        self.default_zone = SendingSettings.get().default_time_zone or timing.DEFAULT_TIME_ZONE
        self._models: dict[int, float] | None = None
        self._versions: dict[int, object] = {}
        self.steps: list[StepRun] = []  # this enrollment's, inserted together before its savepoint ends

    def template_version(self, template_id: int):
        """The current version of a template, with template, sender and topic loaded (once a batch)."""
        from kizuna.messaging.models import EmailTemplate

        if template_id not in self._versions:
            template = EmailTemplate.objects.select_related("current", "sender", "topic").filter(
                pk=template_id).first()
            version = template.current if template else None
            if version is not None:
                version.template = template
            self._versions[template_id] = version
        return self._versions[template_id]

    @property
    def models(self) -> dict[int, float]:
        if self._models is None:
            self._models = scoring_models()
        return self._models

    def matches(self, tree: dict | None, contact_id: int) -> bool:
        if not tree:
            return False
        base = Contact.objects.filter(pk=contact_id)
        return filters.compile_queryset(tree, self.now, self.models, base=base).exists()

    def ending(self, journey: Journey, e: Enrollment) -> tuple[str, str] | None:
        """(state, reason) when the journey's goal or exit condition holds for the contact."""
        if self.matches(journey.goal_filter, e.contact_id):
            return Enrollment.State.DONE, "goal"
        if self.matches(journey.exit_filter, e.contact_id):
            return Enrollment.State.EXITED, "exit condition"
        return None

    def run(self, e: Enrollment) -> int:
        """Runs one enrollment until it waits or ends; returns the steps executed."""
        version, journey = self.versions[e.version_id], self.journeys[e.journey_id]
        contact = self.contacts.get(e.contact_id)
        steps = 0
        self.steps = []
        if e.state == WAITING:
            self._wait_over(e, version)
        while e.state == ACTIVE:
            if not e.node:
                finish(e, Enrollment.State.DONE, "end of the journey", self.now)
                break
            if contact is None:
                finish(e, Enrollment.State.EXITED, "contact deleted", self.now)
                break
            ended = self.ending(journey, e)
            if ended:
                if ended[1] == "goal":
                    e.goal_reached_at = self.now
                finish(e, *ended, self.now)
                break
            node = version.node(e.node)
            if node is None:
                finish(e, Enrollment.State.FAILED, f"step {e.node!r} is missing from version {version.number}",
                       self.now)
                break
            if steps >= MAX_STEPS_PER_RUN:
                e.due_at = self.now  # yield to others; the next claim continues
                break
            visits = e.context.setdefault("visits", {})
            visits[node["id"]] = visit = visits.get(node["id"], 0) + 1
            key = f"{e.pk}:{node['id']}:{visit}"
            outcome = execute(node, e, contact, journey, self, key)
            steps += 1
            self.record(e, node, key, visit, outcome)
        # A key already taken raises here, inside the enrollment's savepoint: nothing of it stays.
        StepRun.objects.bulk_create(self.steps)
        e.updated_at = self.now
        e.save()
        return steps

    def record(self, e: Enrollment, node: dict, key: str, visit: int, outcome: Outcome) -> None:
        """Notes the step run and moves the enrollment on as the outcome says: ended, waiting or next node."""
        self.steps.append(StepRun(enrollment=e, node=node["id"], key=key, outcome=outcome.note[:300], at=self.now))
        if outcome.end:
            finish(e, outcome.end, outcome.note, self.now)
        elif outcome.wait_until is not None:
            e.state, e.due_at = WAITING, outcome.wait_until
            if outcome.wait_event:
                e.waiting_for = outcome.wait_event["event"]
                e.context["wait"] = {**outcome.wait_event, "since": self.now.isoformat(), "visit": visit}
        else:
            e.node = outcome.next or ""

    def _wait_over(self, e: Enrollment, version: JourneyVersion) -> None:
        node = version.node(e.node) or {}
        if node.get("type") == "wait_event":
            visit = e.context.get("wait", {}).get("visit", 0)
            self.steps.append(StepRun(enrollment=e, node=node["id"], key=f"{e.pk}:{node['id']}:{visit}:branch",
                                      outcome="timeout", at=self.now))
            e.node = node.get("else") or ""
        else:
            e.node = node.get("next") or ""
        e.state, e.waiting_for = ACTIVE, ""
        e.context.pop("wait", None)


def finish(e: Enrollment, state: str, reason: str, now: datetime) -> None:
    e.state, e.reason, e.ended_at, e.due_at, e.waiting_for = state, reason[:300], now, None, ""
    e.context.pop("wait", None)


class BatchRunner(Runner):
    """Runs a whole batch in rounds: each round checks goal and exit for all open enrollments at
    once, groups them by (version, step) and executes each step once for its group (actions with
    a set-based twin in `actions.SET_BASED` in a few statements; the others one by one). Step
    runs are inserted and enrollments saved together at the end, in the batch's transaction.

    Per enrollment the steps, keys, notes and end states are those of `Runner.run`; only the
    order between enrollments differs (step by step across the batch instead of one enrollment
    to the end, then the next)."""

    def endings(self, batch: Sequence[Enrollment]) -> dict[int, tuple[str, str]]:
        """Enrollment id → (state, reason), as `ending` would say for each, in a query per filter."""
        out: dict[int, tuple[str, str]] = {}
        by_journey: dict[int, list[Enrollment]] = {}
        for e in batch:
            by_journey.setdefault(e.journey_id, []).append(e)
        for jid, group in by_journey.items():
            journey = self.journeys[jid]
            for tree, state, reason in ((journey.goal_filter, Enrollment.State.DONE, "goal"),
                                        (journey.exit_filter, Enrollment.State.EXITED, "exit condition")):
                if not tree:
                    continue
                base = Contact.objects.filter(pk__in={e.contact_id for e in group})
                hit = set(filters.compile_queryset(tree, self.now, self.models, base=base).values_list("pk", flat=True))
                for e in group:
                    if e.contact_id in hit and e.pk not in out:
                        out[e.pk] = (state, reason)
        return out

    def run_all(self, batch: Sequence[Enrollment]) -> int:
        self.steps = []
        for e in batch:
            if e.state == WAITING:
                self._wait_over(e, self.versions[e.version_id])
        done: dict[int, int] = {e.pk: 0 for e in batch}
        active = [e for e in batch if e.state == ACTIVE]
        while active:
            ready: list[Enrollment] = []
            checks = [e for e in active if e.node and e.contact_id in self.contacts]
            ended = self.endings(checks) if checks else {}
            for e in active:
                version = self.versions[e.version_id]
                if not e.node:
                    finish(e, Enrollment.State.DONE, "end of the journey", self.now)
                elif e.contact_id not in self.contacts:
                    finish(e, Enrollment.State.EXITED, "contact deleted", self.now)
                elif e.pk in ended:
                    if ended[e.pk][1] == "goal":
                        e.goal_reached_at = self.now
                    finish(e, *ended[e.pk], self.now)
                elif version.node(e.node) is None:
                    finish(e, Enrollment.State.FAILED,
                           f"step {e.node!r} is missing from version {version.number}", self.now)
                elif done[e.pk] >= MAX_STEPS_PER_RUN:
                    e.due_at = self.now  # yield to others; the next claim continues
                else:
                    ready.append(e)
            groups: dict[tuple[int, str], list[Enrollment]] = {}
            for e in ready:
                groups.setdefault((e.version_id, e.node), []).append(e)
            for (vid, node_id), group in groups.items():
                self._step(self.versions[vid].node(node_id), group)
                for e in group:
                    done[e.pk] += 1
            active = [e for e in ready if e.state == ACTIVE]
        # A key already taken raises here: the savepoint goes, and the batch runs one by one.
        if connection.vendor == "postgresql":
            copy.insert_rows(StepRun, ("enrollment_id", "node", "key", "outcome", "at"),
                             ((s.enrollment_id, s.node, s.key, s.outcome, s.at) for s in self.steps))
        else:
            StepRun.objects.bulk_create(self.steps, batch_size=500)
        for e in batch:
            e.updated_at = self.now
        save_enrollments(batch)
        return sum(done.values())

    def _step(self, node: dict, group: list[Enrollment]) -> None:
        """Executes one node for every enrollment of the group and moves each on."""
        from kizuna.journeys import actions

        keys = []
        for e in group:
            visits = e.context.setdefault("visits", {})
            visits[node["id"]] = visit = visits.get(node["id"], 0) + 1
            keys.append((f"{e.pk}:{node['id']}:{visit}", visit))
        kind = node["type"]
        many = actions.SET_BASED.get(actions.ACTIONS.get(kind))
        if many is not None:
            journey = self.journeys[group[0].journey_id]
            notes = many(node, [(e, self.contacts[e.contact_id], k) for e, (k, _v) in zip(group, keys, strict=True)],
                         journey, self)
            outcomes = [Outcome(note, next=node.get("next")) for note in notes]
        elif kind == "condition":
            base = Contact.objects.filter(pk__in={e.contact_id for e in group})
            yes = set(filters.compile_queryset(node["if"], self.now, self.models, base=base)
                      .values_list("pk", flat=True))
            outcomes = [Outcome("condition met", next=node.get("then")) if e.contact_id in yes
                        else Outcome("condition not met", next=node.get("else")) for e in group]
        else:
            outcomes = [execute(node, e, self.contacts[e.contact_id], self.journeys[e.journey_id], self, key)
                        for e, (key, _v) in zip(group, keys, strict=True)]
        for e, (key, visit), outcome in zip(group, keys, outcomes, strict=True):
            self.record(e, node, key, visit, outcome)


SAVED = ("state", "node", "due_at", "waiting_for", "context", "reason", "goal_reached_at", "ended_at", "updated_at")


def save_enrollments(batch: Sequence[Enrollment]) -> None:
    """Writes the batch's enrollments back: on PostgreSQL COPY into a temporary table and one
    UPDATE … FROM it, elsewhere Django's bulk_update."""
    if connection.vendor != "postgresql":
        Enrollment.objects.bulk_update(batch, SAVED, batch_size=500)
        return
    table = Enrollment._meta.db_table
    with connection.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS journey_enrollment_save (id bigint, state varchar, "
                    "node varchar, due_at timestamptz, waiting_for varchar, context jsonb, reason varchar, "
                    "goal_reached_at timestamptz, ended_at timestamptz, updated_at timestamptz) ON COMMIT DELETE ROWS")
        cur.execute("DELETE FROM journey_enrollment_save")
        with cur.cursor.copy(f"COPY journey_enrollment_save ({', '.join(('id', *SAVED))}) FROM STDIN") as rows:
            for e in batch:
                rows.write_row((e.pk, e.state, e.node, e.due_at, e.waiting_for, json.dumps(e.context), e.reason,
                                e.goal_reached_at, e.ended_at, e.updated_at))
        cur.execute(f"UPDATE {table} AS e SET {', '.join(f'{f} = v.{f}' for f in SAVED)} "
                    "FROM journey_enrollment_save AS v WHERE e.id = v.id")


def _bucket(e: Enrollment, node_id: str) -> int:
    """0–99, fixed per enrollment and step: a retried split takes the same branch."""
    return int(hashlib.sha256(f"{e.pk}:{node_id}".encode()).hexdigest()[:8], 16) % 100


def execute(node: dict, e: Enrollment, contact: Contact, journey: Journey, runner: Runner, key: str) -> Outcome:
    from kizuna.journeys import actions

    kind, now = node["type"], runner.now
    # Waits count from when the step was due, not from when a busy or stopped worker got to it.
    base = min(e.due_at, now) if e.due_at else now
    if kind == "wait":
        until = timing.wait_until(node, base, timing.zone(contact.time_zone, runner.default_zone))
        return Outcome(f"wait until {until.isoformat()}", wait_until=max(until, now))
    if kind == "wait_event":
        until = base + timing.duration(node["timeout"])
        return Outcome(f"wait for {node['event']} until {until.isoformat()}", wait_until=until,
                       wait_event={"event": node["event"], "where": node["where"]})
    if kind == "condition":
        yes = runner.matches(node["if"], contact.pk)
        return Outcome("condition met" if yes else "condition not met", next=node.get("then" if yes else "else"))
    if kind == "split":
        bucket, upto = _bucket(e, node["id"]), 0
        for j, branch in enumerate(node["branches"]):
            upto += branch["percent"]
            if bucket < upto:
                return Outcome(f"branch {j}", next=branch.get("next"))
        e.context["holdout"] = node["id"]
        return Outcome("holdout", end=Enrollment.State.DONE)
    if kind == "exit":
        return Outcome("exit step", end=Enrollment.State.EXITED)
    if kind == "goal":
        e.goal_reached_at = now
        return Outcome(f"goal {node.get('name', '')}".strip(), next=node.get("next"))
    return actions.run(node, e, contact, journey, runner, key)


def _claim(limit: int, now: datetime) -> list[Enrollment]:
    due = (Enrollment.objects.filter(state__in=OPEN, due_at__lte=now, journey__status=Journey.Status.LIVE)
           .order_by("due_at", "id"))
    if connection.features.has_select_for_update_skip_locked:
        due = due.select_for_update(skip_locked=True, of=("self",))
    return list(due[:limit])


def batch_size() -> int:
    return getattr(settings, "KIZUNA_JOURNEY_BATCH", 200)


def set_based() -> bool:
    return getattr(settings, "KIZUNA_JOURNEY_SET_BASED", True)


def advance(limit: int | None = None, now: datetime | None = None) -> int:
    """Claims due enrollments and runs their steps; returns the steps executed.

    One transaction for the batch. The batch runs set-based (`BatchRunner`: each step once for
    all enrollments at it) in a savepoint; if anything in it raises, the savepoint is rolled back
    and the batch runs again one enrollment at a time, one savepoint each, so a step that raises
    rolls back only its own enrollment's work, which is retried, then marked failed."""
    now = now or timezone.now()
    with sqlite_writer(), transaction.atomic():
        batch = _claim(limit or batch_size(), now)
        if not batch:
            return 0
        if set_based():
            try:
                with transaction.atomic():
                    return BatchRunner(now, batch).run_all(batch)
            except Exception:  # noqa: BLE001 - the one-by-one run below isolates the cause
                log.warning("journey batch of %s fell back to one enrollment at a time", len(batch), exc_info=True)
                batch = list(Enrollment.objects.filter(pk__in=[e.pk for e in batch]).order_by("due_at", "id"))
        return _one_by_one(now, batch)


def _one_by_one(now: datetime, batch: list[Enrollment]) -> int:
    steps = 0
    runner = Runner(now, batch)
    for e in batch:
        try:
            with transaction.atomic():
                steps += runner.run(e)
        except Exception as exc:  # noqa: BLE001 - one bad enrollment must not stop the others
            log.exception("journey enrollment %s failed at %s", e.pk, e.node)
            attempts = e.context.get("attempts", 0) + 1
            if attempts >= MAX_ATTEMPTS:
                Enrollment.objects.filter(pk=e.pk).update(
                    state=Enrollment.State.FAILED, reason=f"{type(exc).__name__}: {exc}"[:300], ended_at=now,
                    due_at=None, updated_at=now)
            else:
                fresh = Enrollment.objects.get(pk=e.pk)
                fresh.context["attempts"] = attempts
                fresh.due_at, fresh.reason = now + RETRY_AFTER * attempts, f"retrying: {exc}"[:300]
                fresh.save(update_fields=["context", "due_at", "reason"])
    return steps


def end_where(contact_ids: Iterable[int], now: datetime | None = None) -> int:
    """Checks the exit and goal conditions of every open enrollment of these contacts; ends those
    that meet them (pending waits are cancelled). Returns how many ended."""
    ids = {c for c in contact_ids if c}
    if not ids:
        return 0
    now = now or timezone.now()
    journeys = {j.pk: j for j in Journey.objects.filter(status=Journey.Status.LIVE).exclude(
        exit_filter__isnull=True, goal_filter__isnull=True)}
    if not journeys:
        return 0
    ended = 0
    models = scoring_models()
    with sqlite_writer(), transaction.atomic():
        open_rows = Enrollment.objects.filter(contact_id__in=ids, state__in=OPEN, journey_id__in=journeys)
        if connection.features.has_select_for_update_skip_locked:
            # Rows a worker holds are checked by that worker before their next step.
            open_rows = open_rows.select_for_update(skip_locked=True)
        by_journey: dict[int, set[int]] = {}
        rows: dict[tuple[int, int], list[int]] = {}
        for pk, jid, cid in open_rows.values_list("pk", "journey_id", "contact_id"):
            by_journey.setdefault(jid, set()).add(cid)
            rows.setdefault((jid, cid), []).append(pk)
        for jid, cids in by_journey.items():
            journey = journeys[jid]
            for tree, state, reason in ((journey.goal_filter, Enrollment.State.DONE, "goal"),
                                        (journey.exit_filter, Enrollment.State.EXITED, "exit condition")):
                if not tree or not cids:
                    continue
                base = Contact.objects.filter(pk__in=cids)
                hit = set(filters.compile_queryset(tree, now, models, base=base).values_list("pk", flat=True))
                if hit:
                    ended += Enrollment.objects.filter(pk__in=[pk for c in hit for pk in rows[(jid, c)]]).update(
                        state=state, reason=reason, ended_at=now, due_at=None, waiting_for="", updated_at=now,
                        goal_reached_at=now if reason == "goal" else None)
                    cids -= hit
    return ended


def resume_waiting(events: Sequence, now: datetime | None = None) -> int:
    """Moves enrollments waiting for one of these events on to their "then" branch."""
    from kizuna.journeys.triggers import event_dict

    now = now or timezone.now()
    by_contact: dict[int, list] = {}
    for event in events:
        if event.contact_id and not event.bot:
            by_contact.setdefault(event.contact_id, []).append(event)
    if not by_contact:
        return 0
    names = {"page" if e.type == "page" else e.name for e in events}
    waiting = Enrollment.objects.filter(state=WAITING, waiting_for__in=names, contact_id__in=by_contact)
    if connection.features.has_select_for_update_skip_locked:
        # A row a worker holds is one whose timeout is due (only due rows are claimed): the
        # timeout wins, and event processing never waits on (or deadlocks with) a worker.
        waiting = waiting.select_for_update(skip_locked=True, of=("self",))
    resumed = 0
    with sqlite_writer(), transaction.atomic():
        for e in waiting:
            spec = e.context.get("wait") or {}
            since = datetime.fromisoformat(spec["since"]) if spec.get("since") else e.updated_at
            node = {"event": spec.get("event"), "where": spec.get("where", []), "within_days": None}
            hit = next((ev for ev in by_contact[e.contact_id] if ev.occurred_at >= since
                        and filters._event_matches(event_dict(ev), node, now)), None)
            if hit is None:
                continue
            version = JourneyVersion.objects.get(pk=e.version_id)
            step = version.node(e.node) or {}
            try:
                with transaction.atomic():
                    StepRun.objects.create(enrollment=e, node=e.node,
                                           key=f"{e.pk}:{e.node}:{spec.get('visit', 0)}:branch",
                                           outcome=f"event {hit.pk or hit.message_id}"[:300], at=now)
            except IntegrityError:
                continue  # the timeout branch was taken first
            e.context.pop("wait", None)
            e.context["resumed_by"] = hit.pk
            e.state, e.node, e.waiting_for, e.due_at, e.updated_at = ACTIVE, step.get("then") or "", "", now, now
            e.save()
            resumed += 1
    return resumed


def tick(now: datetime | None = None, *, rounds: int = 50) -> int:
    """Everything the worker loop does once, until nothing is due (tests and the demo use it)."""
    from kizuna.journeys import triggers

    done = triggers.poll_segment_changes(now=now) + triggers.run_time_triggers(now=now)
    for _round in range(rounds):
        steps = advance(now=now)
        done += steps
        if not steps:
            break
    return done


def run(stop, idle_seconds: float | None = None) -> None:
    """The worker's journeys loop: segment-change and time triggers, then due steps."""
    import time

    from kizuna.journeys import triggers

    idle = idle_seconds if idle_seconds is not None else getattr(settings, "KIZUNA_JOURNEY_IDLE", 0.5)
    last_time_triggers = 0.0

    def work() -> int:
        nonlocal last_time_triggers
        done = triggers.poll_segment_changes()
        if time.monotonic() - last_time_triggers > 30:
            done += triggers.run_time_triggers()
            last_time_triggers = time.monotonic()
        return done + advance()

    repeat(stop, work, idle_seconds=idle, what="journey loop")
