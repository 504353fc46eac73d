"""Simulation: run a journey, without sending anything, against the last N days of real data, and
show who would have entered, which path each took and which messages would have gone out.

Nothing is written: the result is plain dataclasses. The journey is taken as if it had gone live
N days ago with no one in it (the enrollments it really has are not counted against the entry
rules), and each run is walked on a simulated clock that starts at its trigger:

- **Entrants** come from the trigger over the window: stored events matching an event trigger
  (human events of known contacts, matched as the engine's trigger matches them), `SegmentChange`
  rows for segment entered/exited, the contacts' date fields for a date trigger (today's values),
  each schedule occurrence in the window with today's audience, and no one for a manual trigger.
  The entry rules (once, one at a time, every time, not again within N days) decide as
  `engine.enroll_many` does, in time order.
- **Waits** end as the engine computes them (`timing`: the contact's time zone, business days);
  a step whose moment is after now is shown as pending ("would be waiting until …").
- **Wait for an event** looks for the contact's real events after that moment, within the timeout.
- **Conditions, goal and exit** use the segment language: conditions on behaviour (events) are
  read as they stood at the step's moment; everything else — profile, tags, lists, scores,
  consent, email activity, segment membership — is read as it is **today** (history of those is
  not kept). Goal and exit are checked before every step, as the engine does, and for runs still
  pending at the end, as of now.
- **Splits** use the engine's bucket rule (`engine._bucket`), keyed by contact and run instead of
  the enrollment id a real run would have, so a contact's branch is stable between simulations
  but not necessarily the one a real enrollment will take.
- **Actions** are recorded, not executed (so a tag added on the way is not seen by a later
  condition). A mail records its template and whether the send rules would stop it — suppression,
  do-not-contact and consent as they are today, the frequency cap counting real mails sent then
  and the simulation's own, quiet hours at that moment — with the outbox's own rule function.

Work is batched per step and per 2,000 contacts, never per contact: see `bench/journey_simulation.py`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace

from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.journeys import engine, timing, triggers
from kizuna.journeys import graph as graph_mod
from kizuna.journeys.models import Journey
from kizuna.segments import filters
from kizuna.segments.membership import scoring_models

MAX_DAYS = 365
MAX_RUNS = 50_000
MAX_STEPS = 200  # per run: a loop through a wait ends here
CHUNK = 2000
SQL_LEAVES = ("field", "email", "segment")


@dataclass
class Step:
    node: str
    type: str
    at: datetime
    # next, waited, pending, event, timeout, then, else, branch N, holdout, goal, exit, would send, blocked
    outcome: str
    note: str = ""
    until: datetime | None = None  # a wait's end, the event that came, or the timeout


@dataclass
class Path:
    """One simulated run of one contact."""

    contact_id: int
    contact: str
    run: int
    entered_at: datetime
    via: str
    steps: list[Step] = field(default_factory=list)
    state: str = "active"  # then: done, exited, pending, stopped
    reason: str = ""
    ended_at: datetime | None = None
    pending_until: datetime | None = None
    goal: bool = False  # passed a goal step (the run goes on after it)
    # walking state
    node: str = ""
    clock: datetime | None = None
    visits: Counter = field(default_factory=Counter)


@dataclass
class NodeStats:
    id: str
    type: str
    label: str
    reached: int = 0
    outcomes: Counter = field(default_factory=Counter)
    pending: int = 0


@dataclass
class TemplateStats:
    template_id: int
    name: str
    would_send: int = 0
    deferred: int = 0  # quiet hours: sent when they end
    blocked: Counter = field(default_factory=Counter)


@dataclass
class Simulation:
    journey: str
    days: int
    since: datetime
    now: datetime
    trigger: str
    occurrences: int = 0
    refused: Counter = field(default_factory=Counter)  # entry rule → occurrences it refused
    entrants: int = 0
    runs: int = 0
    ended: Counter = field(default_factory=Counter)  # runs done / exited / pending / stopped; and goal reached
    nodes: list[NodeStats] = field(default_factory=list)
    messages: list[TemplateStats] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    capped: bool = False
    notes: list[str] = field(default_factory=list)
    elapsed_ms: int = 0

    @property
    def paths_total(self) -> int:
        return self.runs


def _chunks(ids: Iterable[int]) -> Iterable[list[int]]:
    ids = sorted(set(ids))
    for i in range(0, len(ids), CHUNK):
        yield ids[i:i + CHUNK]


# --- events ----------------------------------------------------------------------------------

class Events:
    """The contacts' human events of each event spec (name + where), as sorted moments per contact,
    read once per spec and batch of contacts, from the earliest moment any use of the spec needs."""

    def __init__(self, now: datetime):
        self.now = now
        self.since: dict[str, datetime | None] = {}
        self.times: dict[str, dict[int, list[datetime]]] = defaultdict(dict)
        self.loaded: dict[str, set[int]] = defaultdict(set)
        self._keys: dict[int, tuple[dict, str]] = {}

    def key(self, spec: dict) -> str:
        """The spec's identity (a trigger, a wait and a condition may share one); memoised per spec
        object, since conditions ask for it per contact and step."""
        memo = self._keys.get(id(spec))
        if memo is None or memo[0] is not spec:
            memo = self._keys[id(spec)] = (spec, json.dumps([spec["event"], spec.get("where", [])], sort_keys=True,
                                                            ensure_ascii=False))
        return memo[1]

    def need(self, spec: dict, since: datetime | None) -> None:
        """Registers a use of the spec from `since` on (None: the whole history)."""
        key = self.key(spec)
        if key in self.since and (self.since[key] is None or since is None):
            self.since[key] = None
        else:
            self.since[key] = min(since, self.since.get(key) or since) if since else None

    def rows(self, spec: dict, since: datetime | None, contact_ids: list[int] | None = None):
        """(id, contact id, occurred_at) of matching human events of known contacts, in time order."""
        from kizuna.events.models import Event

        qs = Event.objects.filter(bot="", contact__isnull=False, occurred_at__lte=self.now)
        qs = qs.filter(type="page") if spec["event"] == "page" else qs.filter(type__in=["track", "screen"],
                                                                                 name=spec["event"])
        if since is not None:
            qs = qs.filter(occurred_at__gte=since)
        if contact_ids is not None:
            qs = qs.filter(contact_id__in=contact_ids)
        where = spec.get("where", [])
        for cond in where:  # narrowed in SQL as segment conditions are, confirmed below as triggers match
            qs = qs.filter(filters._text_q(cond["field"].replace(".", "__"), cond["op"], cond["value"]))
        columns = sorted({c["field"] if not c["field"].startswith("properties.") else "properties" for c in where})
        node = {"event": spec["event"], "where": where, "within_days": None}
        kind = "page" if spec["event"] == "page" else "track"
        out = []
        for pk, cid, at, *values in qs.order_by("occurred_at", "id").values_list("id", "contact_id", "occurred_at",
                                                                                  *columns):
            if where and not filters._event_matches({"type": kind, "name": spec["event"], "occurred_at": at,
                                                     **dict(zip(columns, values, strict=True))}, node, self.now):
                continue
            out.append((pk, cid, at))
        return out

    def ensure(self, spec: dict, contact_ids: Iterable[int]) -> None:
        key = self.key(spec)
        missing = set(contact_ids) - self.loaded[key]
        if not missing:
            return
        since = self.since.get(key)
        for chunk in _chunks(missing):
            times = self.times[key]
            for cid in chunk:
                times.setdefault(cid, [])
            for _pk, cid, at in self.rows(spec, since, chunk):
                times[cid].append(at)
        self.loaded[key] |= missing

    def moments(self, spec: dict, contact_id: int) -> list[datetime]:
        return self.times[self.key(spec)].get(contact_id, [])


# --- segment-language trees at simulated moments ----------------------------------------------

class Trees:
    """Evaluates checked trees for many contacts: the conditions that SQL answers (profile, tags,
    lists, scores, consent, email, segments) once per contact as of today, in one query per batch
    of contacts; event conditions in Python at each step's moment from `Events`."""

    def __init__(self, now: datetime, models: dict[int, float], events: Events):
        self.now, self.models, self.events = now, models, events
        self.sql: dict[str, dict[str, set[int]]] = {}
        self.done: dict[str, set[int]] = defaultdict(set)
        self.trees: dict[str, dict] = {}
        self.timeless: dict[str, dict[int, bool] | None] = {}  # trees without event conditions: per contact

    @staticmethod
    def leaves(tree: dict, path: str = "") -> Iterable[tuple[str, dict]]:
        if "all" in tree or "any" in tree:
            for i, child in enumerate(tree.get("all", tree.get("any", []))):
                yield from Trees.leaves(child, f"{path}/{i}")
        elif "not" in tree:
            yield from Trees.leaves(tree["not"], f"{path}/not")
        else:
            yield path, tree

    def add(self, name: str, tree: dict, window_start: datetime) -> None:
        """Registers a tree under a name, and the events its behaviour conditions need."""
        self.trees[name] = tree
        self.timeless[name] = None if any("event" in leaf for _p, leaf in self.leaves(tree)) else {}
        for _path, leaf in self.leaves(tree):
            if "event" in leaf:
                days = leaf.get("within_days")
                self.events.need(leaf, window_start - timedelta(days=days) if days else None)

    def prepare(self, name: str, contact_ids: Iterable[int]) -> None:
        tree = self.trees[name]
        missing = set(contact_ids) - self.done[name]
        if not missing:
            return
        sql = {p: leaf for p, leaf in self.leaves(tree) if any(k in leaf for k in SQL_LEAVES)}
        results = self.sql.setdefault(name, {p: set() for p in sql})
        if sql:
            for chunk in _chunks(missing):
                got = filters.evaluate_many(sql, self.now, self.models, Contact.objects.filter(pk__in=chunk))
                for p, ids in got.items():
                    results[p] |= ids
        for _p, leaf in self.leaves(tree):
            if "event" in leaf:
                self.events.ensure(leaf, missing)
        self.done[name] |= missing

    def holds(self, name: str, contact_id: int, moment: datetime) -> bool:
        memo = self.timeless[name]
        if memo is None:
            return self._eval(self.trees[name], "", name, contact_id, moment)
        if contact_id not in memo:
            memo[contact_id] = self._eval(self.trees[name], "", name, contact_id, moment)
        return memo[contact_id]

    def _eval(self, node: dict, path: str, name: str, cid: int, moment: datetime) -> bool:
        if "all" in node:
            return all(self._eval(c, f"{path}/{i}", name, cid, moment) for i, c in enumerate(node["all"]))
        if "any" in node:
            return any(self._eval(c, f"{path}/{i}", name, cid, moment) for i, c in enumerate(node["any"]))
        if "not" in node:
            return not self._eval(node["not"], f"{path}/not", name, cid, moment)
        if "event" in node:
            times = self.events.moments(node, cid)
            upto = bisect.bisect_right(times, moment)
            since = bisect.bisect_left(times, moment - timedelta(days=node["within_days"])) if node.get(
                "within_days") else 0
            return filters._count_ok(upto - since, node["count"])
        return cid in self.sql[name][path]


# --- the simulation --------------------------------------------------------------------------

@dataclass
class _Occurrence:
    at: datetime
    contact_id: int
    via: str


class _Simulator:
    def __init__(self, journey: Journey | None, graph: dict, settings: dict, days: int, now: datetime,
                 limit: int):
        from kizuna.messaging.models import SendingSettings

        self.journey, self.graph, self.settings = journey, graph, settings
        self.now, self.days, self.limit = now, days, limit
        self.since = now - timedelta(days=days)
        self.rules = SendingSettings.objects.filter(pk=1).first() or SendingSettings()  # read, never created
        self.default_zone = self.rules.default_time_zone or timing.DEFAULT_TIME_ZONE
        self.project_zone = timing.zone(self.default_zone)
        self.zones: dict[str, object] = {}
        self.nodes = {n["id"]: n for n in graph["nodes"]}
        self.events = Events(now)
        self.trees = Trees(now, scoring_models(), self.events)
        self.contacts: dict[int, SimpleNamespace] = {}
        self.result = Simulation(journey=journey.name if journey else "", days=days, since=self.since, now=now,
                                 trigger=graph["trigger"]["type"])
        self.stats = {n["id"]: NodeStats(n["id"], n["type"], n.get("label", "")) for n in graph["nodes"]}
        self.mails: list[tuple[Path, Step, int]] = []

    # -- entrants ---------------------------------------------------------------------------

    def occurrences(self) -> list[_Occurrence]:
        trigger = self.graph["trigger"]
        kind = trigger["type"]
        if kind == "event":
            return [_Occurrence(at, cid, f"event #{pk}")
                    for pk, cid, at in self.events.rows(trigger, self.since)]
        if kind == "segment":
            from kizuna.segments.models import SegmentChange

            rows = SegmentChange.objects.filter(segment_id=trigger["segment"], kind=trigger["on"],
                                                at__gte=self.since, at__lte=self.now)
            return [_Occurrence(at, cid, f"segment {trigger['on']} #{pk}")
                    for pk, cid, at in rows.order_by("at", "id").values_list("id", "contact_id", "at")]
        if kind == "date":
            return self.date_occurrences(trigger)
        if kind == "schedule":
            return self.schedule_occurrences(trigger)
        self.result.notes.append("manual")
        return []

    def date_occurrences(self, trigger: dict) -> list[_Occurrence]:
        tz, offset = self.project_zone, timedelta(days=trigger["offset_days"])
        hour, minute = (int(p) for p in trigger["at"].split(":"))
        first = self.since.astimezone(tz).date() - offset
        last = self.now.astimezone(tz).date() - offset
        name = trigger["field"]
        if name.startswith("custom."):
            key = name[7:]
            rows = Contact.objects.filter(**{f"custom__{key}__gte": first.isoformat(),
                                             f"custom__{key}__lte": last.isoformat()}).values_list("pk",
                                                                                                   f"custom__{key}")
            dated = []
            for pk, value in rows:
                try:
                    dated.append((pk, dt.date.fromisoformat(value)))
                except (TypeError, ValueError):
                    continue
        else:
            start = datetime.combine(first, dt.time(), tzinfo=tz)
            rows = Contact.objects.filter(**{f"{name}__gte": start, f"{name}__lt": start + timedelta(
                days=(last - first).days + 1)}).values_list("pk", name)
            dated = [(pk, value.astimezone(tz).date()) for pk, value in rows]
        out = []
        for pk, day in dated:
            moment = datetime.combine(day + offset, dt.time(hour, minute), tzinfo=tz)
            if self.since <= moment <= self.now:
                out.append(_Occurrence(moment, pk, f"date {day.isoformat()}"))
        return sorted(out, key=lambda o: (o.at, o.contact_id))

    def schedule_occurrences(self, trigger: dict) -> list[_Occurrence]:
        moments = []
        probe = self.now
        while True:
            moment = triggers.last_occurrence(trigger, probe, self.project_zone)
            if moment < self.since:
                break
            moments.append(moment)
            probe = moment - timedelta(seconds=1)
        if not moments:
            return []
        audience = Contact.objects.all()
        if trigger.get("audience"):
            audience = filters.compile_queryset(trigger["audience"], self.now, self.trees.models, base=audience)
        ids = sorted(audience.values_list("pk", flat=True))
        self.result.notes.append("audience today")
        return [_Occurrence(m, cid, f"schedule {m.date().isoformat()}") for m in sorted(moments) for cid in ids]

    def admit(self, occurrences: list[_Occurrence]) -> list[list[Path]]:
        """Runs per round: the entry rules that need the end of a previous run (one at a time)
        leave the rest to later rounds; the others are decided now, in time order."""
        entry, reentry = self.settings["entry"], self.settings["reentry_days"]
        self.by_contact: dict[int, list[_Occurrence]] = defaultdict(list)
        for o in sorted(occurrences, key=lambda o: (o.contact_id, o.at)):
            self.by_contact[o.contact_id].append(o)
        self.result.occurrences = len(occurrences)
        runs: list[Path] = []
        self.waiting: dict[int, list[_Occurrence]] = {}
        for cid, items in self.by_contact.items():
            last: Path | None = None
            for i, o in enumerate(items):
                if last is not None:
                    if entry == Journey.Entry.ONCE:
                        self.result.refused["once"] += len(items) - i
                        break
                    if entry == Journey.Entry.ONE_AT_A_TIME:
                        self.waiting[cid] = items[i:]  # decided when the previous run is walked
                        break
                    if reentry and last.entered_at > o.at - timedelta(days=reentry):
                        self.result.refused["reentry_days"] += 1
                        continue
                last = Path(cid, "", (last.run + 1) if last else 1, o.at, o.via, node=self.graph["start"], clock=o.at)
                runs.append(last)
        return [runs]

    def next_round(self, previous: list[Path]) -> list[Path]:
        """One-at-a-time: the next occurrence after each contact's previous run has ended."""
        reentry = self.settings["reentry_days"]
        runs = []
        for p in previous:
            items = self.waiting.pop(p.contact_id, None)
            if not items:
                continue
            for i, o in enumerate(items):
                open_then = p.ended_at is None or p.ended_at > o.at
                if open_then:
                    self.result.refused["one_at_a_time"] += 1
                    continue
                if reentry and p.entered_at > o.at - timedelta(days=reentry):
                    self.result.refused["reentry_days"] += 1
                    continue
                runs.append(Path(p.contact_id, "", p.run + 1, o.at, o.via, node=self.graph["start"], clock=o.at))
                if items[i + 1:]:
                    self.waiting[p.contact_id] = items[i + 1:]
                break
        return runs

    # -- walking ----------------------------------------------------------------------------

    def load_contacts(self, ids: Iterable[int]) -> None:
        """What the walk and the send rules read of each contact, as plain records (model
        instances cost more than the rest of a 10,000-contact simulation)."""
        missing = set(ids) - set(self.contacts)
        for chunk in _chunks(missing):
            for pk, email, family, given, zone, dnc, reason in Contact.objects.filter(pk__in=chunk).values_list(
                    "id", "email", "family_name", "given_name", "time_zone", "do_not_contact", "dnc_reason"):
                self.contacts[pk] = SimpleNamespace(pk=pk, email=email, full_name=f"{family} {given}".strip(),
                                                    time_zone=zone, do_not_contact=dnc, dnc_reason=reason)

    def zone(self, contact_id: int):
        name = self.contacts[contact_id].time_zone
        if name not in self.zones:
            self.zones[name] = timing.zone(name, self.default_zone)
        return self.zones[name]

    def step(self, p: Path, node: dict, outcome: str, note: str = "", until: datetime | None = None) -> Step:
        s = Step(node["id"], node["type"], p.clock, outcome, note, until)
        p.steps.append(s)
        stats = self.stats[node["id"]]
        stats.reached += 1
        if outcome == "pending":
            stats.pending += 1
        else:
            stats.outcomes[outcome] += 1
        return s

    def end(self, p: Path, state: str, reason: str, at: datetime | None = None) -> None:
        p.state, p.reason, p.ended_at = state, reason, at or p.clock

    def move(self, p: Path, target: str | None) -> None:
        if target is None:
            self.end(p, "done", "end of the journey")
        else:
            p.node = target

    def endings(self, active: list[Path], moment=None) -> None:
        """Goal, then exit, checked before a step (or, with `moment`, at that moment)."""
        for key, state, reason in (("goal", "done", "goal"), ("exit", "exited", "exit condition")):
            if key not in self.trees.trees:
                continue
            self.trees.prepare(key, {p.contact_id for p in active})
            for p in active:
                if p.state in ("active", "pending") and self.trees.holds(key, p.contact_id, moment or p.clock):
                    self.end(p, state, reason, moment or p.clock)

    def walk(self, runs: list[Path]) -> None:
        active = [p for p in runs if p.contact_id in self.contacts]
        for p in runs:
            if p.contact_id not in self.contacts:
                self.end(p, "exited", "contact deleted")
        while active:
            self.endings(active)
            active = [p for p in active if p.state == "active"]
            groups: dict[str, list[Path]] = defaultdict(list)
            for p in active:
                if sum(p.visits.values()) >= MAX_STEPS:
                    self.end(p, "stopped", f"stopped after {MAX_STEPS} steps")
                    continue
                p.visits[p.node] += 1
                groups[p.node].append(p)
            for node_id, group in groups.items():
                node = self.nodes[node_id]
                getattr(self, f"node_{node['type']}", self.node_action)(node, group)
            active = [p for p in active if p.state == "active"]
        pending = [p for p in runs if p.state == "pending"]
        if pending:
            self.endings(pending, self.now)

    def node_wait(self, node: dict, group: list[Path]) -> None:
        for p in group:
            until = max(timing.wait_until(node, p.clock, self.zone(p.contact_id)), p.clock).astimezone(dt.UTC)
            if until > self.now:
                self.step(p, node, "pending", until=until)
                p.state, p.pending_until = "pending", until
                continue
            self.step(p, node, "waited", until=until)
            p.clock = until
            self.move(p, node.get("next"))

    def node_wait_event(self, node: dict, group: list[Path]) -> None:
        self.events.ensure(node, [p.contact_id for p in group])
        for p in group:
            deadline = p.clock + timing.duration(node["timeout"])
            times = self.events.moments(node, p.contact_id)
            i = bisect.bisect_left(times, p.clock)
            if i < len(times) and times[i] <= min(deadline, self.now):
                self.step(p, node, "event", node["event"], until=times[i])
                p.clock = times[i]
                self.move(p, node.get("then"))
            elif deadline <= self.now:
                self.step(p, node, "timeout", node["event"], until=deadline)
                p.clock = deadline
                self.move(p, node.get("else"))
            else:
                self.step(p, node, "pending", node["event"], until=deadline)
                p.state, p.pending_until = "pending", deadline

    def node_condition(self, node: dict, group: list[Path]) -> None:
        name = f"node:{node['id']}"
        self.trees.prepare(name, [p.contact_id for p in group])
        for p in group:
            yes = self.trees.holds(name, p.contact_id, p.clock)
            self.step(p, node, "then" if yes else "else")
            self.move(p, node.get("then" if yes else "else"))

    def node_split(self, node: dict, group: list[Path]) -> None:
        for p in group:
            # The engine's rule on the enrollment id; a simulated run has none, so contact and run.
            bucket, upto = engine._bucket(SimpleNamespace(pk=f"simulated-{p.contact_id}-{p.run}"), node["id"]), 0
            for j, branch in enumerate(node["branches"]):
                upto += branch["percent"]
                if bucket < upto:
                    self.step(p, node, f"branch {j}", branch.get("label", ""))
                    self.move(p, branch.get("next"))
                    break
            else:
                self.step(p, node, "holdout")
                self.end(p, "done", "holdout")

    def node_exit(self, node: dict, group: list[Path]) -> None:
        for p in group:
            self.step(p, node, "exit")
            self.end(p, "exited", "exit step")

    def node_goal(self, node: dict, group: list[Path]) -> None:
        for p in group:
            self.step(p, node, "goal", node.get("name", ""))
            p.goal = True
            self.move(p, node.get("next"))

    def node_send_email(self, node: dict, group: list[Path]) -> None:
        for p in group:
            self.mails.append((p, self.step(p, node, "would send"), node["template"]))
            self.move(p, node.get("next"))

    def node_action(self, node: dict, group: list[Path]) -> None:
        for p in group:
            self.step(p, node, "next", _describe(node))
            self.move(p, node.get("next"))

    # -- mail -------------------------------------------------------------------------------

    def judge_mail(self) -> None:
        """The send rules each mail would meet, in time order per contact (the frequency cap
        counts the mails before it: real ones sent then, and this simulation's own)."""
        from kizuna.messaging import outbox
        from kizuna.messaging.models import EmailTemplate, Message, MessageKind, MessageStatus

        if not self.mails:
            return
        templates = EmailTemplate.objects.select_related("topic", "sender").in_bulk(
            {t for _p, _s, t in self.mails})
        stats = {t: TemplateStats(t, templates[t].name if t in templates else f"#{t}") for _p, _s, t in self.mails}
        self.mails.sort(key=lambda m: (m[0].contact_id, m[1].at))
        messages = []
        for p, _s, t in self.mails:
            template, contact = templates.get(t), self.contacts[p.contact_id]
            topic = template.topic if template else None
            # What the outbox's rule functions read of a message, without a model instance.
            messages.append(SimpleNamespace(pk=len(messages) + 1, contact=contact, contact_id=contact.pk,
                                            to_email=contact.email or "", topic=topic,
                                            topic_id=topic.pk if topic else None,
                                            kind=template.kind if template else MessageKind.MARKETING))
        suppressed: dict[str, str] = {}
        consent: dict[tuple[int, int], str] = {}
        for i in range(0, len(messages), CHUNK):
            got = outbox.rule_facts(messages[i:i + CHUNK])
            suppressed.update(got[0])
            consent.update(got[1])
        cap_days = timedelta(days=self.rules.frequency_days)
        sent: dict[int, list[datetime]] = defaultdict(list)
        if self.rules.frequency_cap:
            for chunk in _chunks(p.contact_id for p, _s, _t in self.mails):
                real = Message.objects.filter(contact_id__in=chunk, kind=MessageKind.MARKETING,
                                              status=MessageStatus.SENT, sent_at__gte=self.since - cap_days,
                                              sent_at__lte=self.now)
                if self.journey is not None:
                    real = real.exclude(extra__journey=self.journey.pk)
                for cid, at in real.values_list("contact_id", "sent_at"):
                    sent[cid].append(at)
            for times in sent.values():
                times.sort()
        for (p, s, t), m in zip(self.mails, messages, strict=True):
            template, stat = templates.get(t), stats[t]
            if template is None:
                reason = "the email template no longer exists"
            elif template.sender_id is None:
                reason = "the template has no sender"
            elif not m.to_email:
                reason = "the contact has no email address"
            else:
                at = s.at
                quiet = outbox.quiet_until(at, m.contact.time_zone, self.rules) if m.kind == MessageKind.MARKETING \
                    else None
                at = quiet or at
                times = sent[p.contact_id]
                recent = bisect.bisect_right(times, at) - bisect.bisect_left(times, at - cap_days)
                reason = outbox.skip_reason(m, suppressed, consent, self.rules, recent)
                if not reason:
                    if m.kind == MessageKind.MARKETING:
                        bisect.insort(times, at)
                    stat.would_send += 1
                    s.note = template.name
                    if quiet:
                        stat.deferred += 1
                        s.until = quiet  # held until the quiet hours end
                    continue
            stat.blocked[reason] += 1
            s.outcome, s.note = "blocked", f"{stat.name}: {reason}"
            node_stats = self.stats[s.node]
            node_stats.outcomes["would send"] -= 1
            node_stats.outcomes["blocked"] += 1
        self.result.messages = sorted(stats.values(), key=lambda x: (-x.would_send, x.name))

    # -- all together -----------------------------------------------------------------------

    def run(self) -> Simulation:
        started = time.monotonic()
        for name in ("goal", "exit"):
            tree = self.settings.get(f"{name}_filter")
            if tree:
                self.trees.add(name, tree, self.since)
        for node in self.graph["nodes"]:
            if node["type"] == "condition":
                self.trees.add(f"node:{node['id']}", node["if"], self.since)
            elif node["type"] == "wait_event":
                self.events.need(node, self.since)
        rounds = self.admit(self.occurrences())
        everyone: list[Path] = []
        runs = rounds[0]
        while runs:
            if len(everyone) + len(runs) > MAX_RUNS:
                runs.sort(key=lambda p: (p.entered_at, p.contact_id))
                runs = runs[:MAX_RUNS - len(everyone)]
                self.result.capped = True
            self.load_contacts(p.contact_id for p in runs)
            self.walk(runs)
            everyone += runs
            runs = self.next_round(runs) if self.waiting and not self.result.capped else []
        self.judge_mail()
        everyone.sort(key=lambda p: (p.entered_at, p.contact_id, p.run))
        for p in everyone:
            c = self.contacts.get(p.contact_id)
            p.contact = (c.full_name or c.email or f"#{c.pk}") if c else f"#{p.contact_id}"
            self.result.ended[p.state] += 1
            if p.goal or p.reason == "goal":
                self.result.ended["goal"] += 1
        self.result.runs = len(everyone)
        self.result.entrants = len({p.contact_id for p in everyone})
        self.result.paths = everyone[:self.limit]
        self.result.nodes = [self.stats[n["id"]] for n in self.graph["nodes"]]
        self.result.elapsed_ms = int((time.monotonic() - started) * 1000)
        return self.result


def _describe(node: dict) -> str:
    """What an action step would have done, in a few words (ids as they are in the graph)."""
    kind = node["type"]
    detail = {"update_field": lambda: f"{node['field']} = {node['value']!r}", "add_tag": lambda: node["tag"],
              "remove_tag": lambda: node["tag"], "set_stage": lambda: node["stage"],
              "score": lambda: f"{node['points']:+d} (model #{node['model']})",
              "add_to_list": lambda: f"list #{node['list']}", "remove_from_list": lambda: f"list #{node['list']}",
              "alert_owner": lambda: node.get("message", ""), "webhook": lambda: f"webhook #{node['webhook']}",
              "enroll": lambda: f"journey #{node['journey']}"}.get(kind)
    return detail() if detail else ""


def simulate(journey_or_graph: Journey | dict, *, days: int, now: datetime | None = None, limit: int = 200,
             entry: str = Journey.Entry.ONCE, reentry_days: int | None = None, exit_filter: dict | None = None,
             goal_filter: dict | None = None) -> Simulation:
    """Runs the journey's current version (or a graph, with the entry rules and filters given)
    over the last `days` days without writing anything. Raises ValueError for a journey without
    a saved version or days out of range, GraphError for a graph that does not pass the check."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}")
    now = now or timezone.now()
    if isinstance(journey_or_graph, Journey):
        journey = journey_or_graph
        if journey.current_id is None:
            raise ValueError(f"the journey {journey.name!r} has no saved version to simulate")
        graph = journey.current.graph
        settings = {"entry": journey.entry, "reentry_days": journey.reentry_days,
                    "exit_filter": journey.exit_filter, "goal_filter": journey.goal_filter}
    else:
        journey = None
        refs = graph_mod.Refs.load()
        graph = graph_mod.check(journey_or_graph, refs)
        settings = {"entry": entry, "reentry_days": reentry_days, "exit_filter": None, "goal_filter": None}
        for key, tree in (("exit_filter", exit_filter), ("goal_filter", goal_filter)):
            if tree:
                try:
                    settings[key] = filters.check(tree, refs.filter_ctx)
                except filters.FilterError as exc:
                    path = key if exc.path == "filter" else f"{key}.{exc.path}"
                    raise graph_mod.GraphError([(path, exc.message)]) from exc
    return _Simulator(journey, graph, settings, days, now, max(0, limit)).run()


def summary(result: Simulation, *, paths: int = 10) -> str:
    """The simulation as text, for the command line."""
    lines = [f"Simulation of {result.journey or 'a journey'} over {result.days} days "
             f"({result.since:%Y-%m-%d %H:%M} – {result.now:%Y-%m-%d %H:%M} UTC), {result.elapsed_ms} ms",
             f"trigger: {result.trigger}; occurrences {result.occurrences}; entrants {result.entrants}; "
             f"runs {result.runs}" + (" (capped)" if result.capped else "")]
    if "manual" in result.notes:
        lines.append("A manual trigger enrolls no one by itself: only the API or a person does.")
    if result.refused:
        lines.append("refused by the entry rules: " + ", ".join(f"{k} {v}" for k, v in sorted(result.refused.items())))
    if result.ended:
        lines.append("runs: " + ", ".join(f"{k} {v}" for k, v in sorted(result.ended.items())))
    lines += ["", f"{'step':<20} {'type':<14} {'reached':>8} {'pending':>8}  outcomes"]
    for n in result.nodes:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(n.outcomes.items()) if v)
        lines.append(f"{n.id:<20} {n.type:<14} {n.reached:>8} {n.pending:>8}  {outcomes}")
    if result.messages:
        lines += ["", "messages:"]
        for m in result.messages:
            blocked = "; ".join(f"{r} {n}" for r, n in m.blocked.most_common())
            lines.append(f"  {m.name}: would send {m.would_send}" + (f", blocked {sum(m.blocked.values())} "
                                                                     f"({blocked})" if m.blocked else ""))
    if paths and result.paths:
        lines += ["", f"paths (first {min(paths, len(result.paths))} of {result.runs}):"]
        for p in result.paths[:paths]:
            trail = " → ".join(f"{s.node}[{s.outcome}]" for s in p.steps)
            end = f"pending until {p.pending_until:%Y-%m-%d %H:%M}" if p.state == "pending" else (
                f"{p.state} ({p.reason})")
            lines.append(f"  {p.contact} #{p.run} {p.entered_at:%Y-%m-%d %H:%M}: {trail} → {end}")
    return "\n".join(lines) + "\n"
