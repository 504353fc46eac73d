"""Live numbers of journeys, from aggregate queries only: the list's counts per journey, and the
builder's numbers per step (entered, waiting now, taken each way, skipped) and goal conversion.

One GROUP BY per table and journey, whatever the number of enrollments: `Enrollment` grouped by
(version, state, node) and `StepRun` grouped by (version, node, way). A step's outcome is free
text ("queued message 4711"), so the way is computed in SQL (CASE) from the few outcomes that
name a way — grouping by the raw text would make one group per message.

What the engine writes (engine.execute, engine.resume_waiting):
- condition: "condition met" / "condition not met" → the ways `then` / `else`;
- split: "branch <j>" / "holdout" → `branches[j]` / `holdout`;
- wait_event: its step run when it starts waiting, then a second one keyed `…:branch` with
  "event <id>" or "timeout" → `then` / `else`; only the first counts as an entry;
- actions: "skipped: …" or "refused: …" when the step could not act (no consent, template
  deleted, invalid value) → `skipped`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db.models import Case, CharField, Count, F, Q, Value, When

from kizuna.journeys.models import Enrollment, Journey, JourneyVersion, StepRun

STATES = [s.value for s in Enrollment.State]
OPEN = {Enrollment.State.ACTIVE, Enrollment.State.WAITING}
SHARED_FOR = 4  # seconds: every open builder polls; they share one computation this long
ENTRY, SKIPPED = "", "skipped"
# Outcomes that are an entry into the step and the way it took at once (condition, split) …
ENTRY_WAYS = {"condition met": "then", "condition not met": "else", "holdout": "holdout"}
# … and those of a wait_event's second run, which only says the way.
LATER_WAYS = {"timeout": "else"}


def conversion(goals: int, enrolled: int) -> float | None:
    return round(100 * goals / enrolled, 1) if enrolled else None


@dataclass
class NodeStats:
    entered: int = 0
    waiting: int = 0  # in the step's wait now
    due: int = 0  # active at the step: due to run it
    skipped: int = 0
    ways: dict[str, int] = field(default_factory=dict)  # link key → runs that took it

    def as_dict(self) -> dict[str, Any]:
        return {"entered": self.entered, "waiting": self.waiting, "due": self.due, "skipped": self.skipped,
                "ways": self.ways}


@dataclass
class Scope:
    """The numbers of one version, or of all versions together."""

    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    goals: int = 0
    nodes: dict[str, NodeStats] = field(default_factory=dict)

    @property
    def enrolled(self) -> int:
        return sum(self.states.values())

    def node(self, node_id: str) -> NodeStats:
        return self.nodes.setdefault(node_id, NodeStats())

    def as_dict(self) -> dict[str, Any]:
        return {"states": self.states, "enrolled": self.enrolled, "goals": self.goals,
                "conversion": conversion(self.goals, self.enrolled),
                "nodes": {nid: n.as_dict() for nid, n in self.nodes.items()}}


def _way() -> Case:
    """SQL for what a step run says: an outcome naming a way (branches kept as "branch <j>",
    events as "event"), "skipped", or "" for an ordinary entry."""
    return Case(
        *[When(outcome=outcome, then=Value(outcome)) for outcome in [*ENTRY_WAYS, *LATER_WAYS]],
        When(outcome__startswith="branch ", then=F("outcome")),
        When(outcome__startswith="event ", then=Value("event")),
        When(Q(outcome__startswith="skipped") | Q(outcome__startswith="refused"), then=Value(SKIPPED)),
        default=Value(ENTRY), output_field=CharField(),
    )


def _count_run(node: NodeStats, way: str, n: int) -> None:
    """Adds n step runs that said `way` to a step's numbers (ways as graph.successors() keys)."""
    if way == "event" or way in LATER_WAYS:
        key = "then" if way == "event" else LATER_WAYS[way]
        node.ways[key] = node.ways.get(key, 0) + n
        return
    node.entered += n
    if way == SKIPPED:
        node.skipped += n
    elif way.startswith("branch "):
        key = f"branches[{way[7:]}].next"
        node.ways[key] = node.ways.get(key, 0) + n
    elif way in ENTRY_WAYS:
        node.ways[ENTRY_WAYS[way]] = node.ways.get(ENTRY_WAYS[way], 0) + n


def journey_stats(journey: Journey) -> dict[str, Any]:
    """Everything the builder shows live: per-state counts, goal conversion and per-step numbers,
    for the current version and for all versions, and the versions with their runs."""
    started = time.perf_counter()
    current, total = Scope(), Scope()
    by_version: dict[int, dict[str, int]] = {}
    rows = (Enrollment.objects.filter(journey=journey).order_by().values("version_id", "state", "node")
            .annotate(n=Count("id"), goals=Count("id", filter=Q(goal_reached_at__isnull=False))))
    for row in rows:
        scopes = [total, current] if row["version_id"] == journey.current_id else [total]
        runs = by_version.setdefault(row["version_id"], {"runs": 0, "open": 0, "goals": 0})
        runs["runs"] += row["n"]
        runs["goals"] += row["goals"]
        if row["state"] in OPEN:
            runs["open"] += row["n"]
        for scope in scopes:
            scope.states[row["state"]] = scope.states.get(row["state"], 0) + row["n"]
            scope.goals += row["goals"]
            if row["state"] == Enrollment.State.WAITING and row["node"]:
                scope.node(row["node"]).waiting += row["n"]
            elif row["state"] == Enrollment.State.ACTIVE and row["node"]:
                scope.node(row["node"]).due += row["n"]
    steps = (StepRun.objects.filter(enrollment__journey=journey).order_by()
             .values(version=F("enrollment__version_id"), step=F("node"), way=_way()).annotate(n=Count("id")))
    for row in steps:
        scopes = [total, current] if row["version"] == journey.current_id else [total]
        for scope in scopes:
            _count_run(scope.node(row["step"]), row["way"], row["n"])
    versions = [{"id": v.pk, "number": v.number, "created_at": v.created_at.isoformat(),
                 "current": v.pk == journey.current_id, **by_version.get(v.pk, {"runs": 0, "open": 0, "goals": 0})}
                for v in JourneyVersion.objects.filter(journey=journey).order_by("-number").only(
                    "id", "number", "created_at", "journey_id")]
    return {"current": current.as_dict(), "all": total.as_dict(), "versions": versions,
            "ms": round((time.perf_counter() - started) * 1000, 1)}


def shared_journey_stats(journey: Journey) -> dict[str, Any]:
    """journey_stats, computed at most once every few seconds however many pages poll it (at
    100,000 runs it reads 300,000 step runs); a new version has a key of its own."""
    key = f"journeys:stats:{journey.pk}:{journey.current_id}"
    found = cache.get(key)
    if found is None:
        found = journey_stats(journey)
        cache.set(key, found, SHARED_FOR)
    return found


def list_counts(journey_ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """journey id → enrollments per state, enrolled, goals and goal conversion: one GROUP BY."""
    rows = Enrollment.objects.order_by()
    if journey_ids is not None:
        rows = rows.filter(journey_id__in=journey_ids)
    out: dict[int, dict[str, Any]] = {}
    for row in (rows.values("journey_id", "state")
                .annotate(n=Count("id"), goals=Count("id", filter=Q(goal_reached_at__isnull=False)))):
        counts = out.setdefault(row["journey_id"], {**dict.fromkeys(STATES, 0), "enrolled": 0, "goals": 0})
        counts[row["state"]] = row["n"]
        counts["enrolled"] += row["n"]
        counts["goals"] += row["goals"]
    for counts in out.values():
        counts["conversion"] = conversion(counts["goals"], counts["enrolled"])
    return out
