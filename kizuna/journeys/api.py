"""REST API for journeys.

    GET    /journeys                              every journey, with its runs counted per state
    POST   /journeys                              → 201: name, settings and graph; a name in use is 409
    GET    /journeys/{id}    PATCH                PATCH with a graph or entry/exit/goal rules makes a version
    POST   /journeys/{id}/status                  live, paused or archived
    GET    /journeys/{id}/export                  the journey as YAML (text/yaml), references by name
    POST   /journeys/import?dry_run=true          a YAML body: creates or updates the journey of that name
    GET    /journeys/{id}/enrollments?state=      cursor pages of its runs
    POST   /journeys/{id}/enrollments             enroll a contact by hand; `key` makes retries safe
    GET    /contacts/{id}/enrollments             the runs of one contact, in every journey
    POST   /journeys/{id}/simulate                the last N days of real data through the journey; writes nothing

A graph that is not valid is a 422 whose details name each fault by its path, prefixed with
`graph` (`graph.nodes[2].template`); the exit and goal conditions by `exit_filter…`/`goal_filter…`.
A YAML body with faults is a 400 whose details give the path and, in the message, the line and
column (`line 14, column 5: no email template named 'Case study'`). Same auth and error shape as
the rest of the API (capabilities journeys.view and journeys.manage).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db import IntegrityError
from django.db.models import Count
from django.http import HttpResponse
from django.utils import timezone
from ninja import Query, Router, Schema, Status
from pydantic import Field

from kizuna.api import ApiError, ErrorOut, requires
from kizuna.contacts import queries
from kizuna.contacts.models import Contact
from kizuna.contacts.schemas import StrictIn

from . import as_code, engine, simulation
from . import graph as graph_mod
from .models import Enrollment, Journey

router = Router(tags=["journeys"])

READ_ERRORS = {frozenset({401, 403, 404}): ErrorOut}
WRITE_ERRORS = {frozenset({400, 401, 403, 404, 409, 415, 422}): ErrorOut}
STATES = [s.value for s in Enrollment.State]
GRAPH_HELP = ('the journey graph: {"trigger": {...}, "start": id, "nodes": [{"id", "type", ...}]} '
              "(see docs/decisions/0011-journeys.md, or export a journey)")
FILTER_HELP = "a segment-language filter tree, or null"
YAML_BODY = {"required": True, "description": "a journey as YAML, as GET /journeys/{id}/export writes it",
             "content": {"text/yaml": {"schema": {"type": "string"}}}}


class Counts(Schema):
    active: int = 0
    waiting: int = 0
    done: int = 0
    exited: int = 0
    failed: int = 0


class Fault(Schema):
    path: str
    message: str


class JourneyOut(Schema):
    id: int
    name: str
    description: str
    status: str = Field(description="draft, live, paused or archived")
    entry: str = Field(description="once, one_at_a_time or every_time")
    reentry_days: int | None = Field(description="not again within this many days")
    exit_filter: dict[str, Any] | None
    goal_filter: dict[str, Any] | None
    version: int | None = Field(description="number of the current version; null before the first save")
    trigger: str | None = Field(description="the current version's trigger type")
    counts: Counts = Field(description="runs (enrollments) per state")
    created_at: datetime
    updated_at: datetime


class JourneyDetail(JourneyOut):
    graph: dict[str, Any] | None = Field(description="the current version's graph")
    problems: list[Fault] = Field(description="faults of the current version against today's data (a template "
                                              "or segment deleted since it was saved)")


class JourneyList(Schema):
    items: list[JourneyOut]


class JourneyIn(StrictIn):
    name: str = Field(min_length=1, max_length=150, description="unique")
    description: str = Field("", max_length=500)
    entry: Literal["once", "one_at_a_time", "every_time"] = "once"
    reentry_days: int | None = Field(None, ge=1, le=3650)
    exit_filter: Any = Field(None, description=FILTER_HELP)
    goal_filter: Any = Field(None, description=FILTER_HELP)
    graph: Any = Field(description=GRAPH_HELP)


class JourneyPatch(StrictIn):
    """Only the fields sent change. A graph, entry rule or exit/goal condition makes a new
    version (runs in flight keep theirs); a name or description alone does not."""

    name: str | None = Field(None, min_length=1, max_length=150)
    description: str | None = Field(None, max_length=500)
    entry: Literal["once", "one_at_a_time", "every_time"] | None = None
    reentry_days: int | None = Field(None, ge=1, le=3650)
    exit_filter: Any = Field(None, description=FILTER_HELP)
    goal_filter: Any = Field(None, description=FILTER_HELP)
    graph: Any = Field(None, description=GRAPH_HELP)


class StatusIn(StrictIn):
    status: Literal["live", "paused", "archived"]


class ImportOut(Schema):
    action: str = Field(description="checked (dry run), created, updated or unchanged")
    name: str
    journey: JourneyOut | None = Field(description="null on a dry run of a journey that does not exist yet")
    version: int | None


class EnrollmentOut(Schema):
    id: int
    journey_id: int
    journey: str
    version: int
    contact_id: int
    run: int
    state: str = Field(description=", ".join(STATES))
    node: str = Field(description="the step it is at")
    due_at: datetime | None
    waiting_for: str
    reason: str
    entered_at: datetime
    ended_at: datetime | None
    goal_reached_at: datetime | None


class EnrollmentPage(Schema):
    items: list[EnrollmentOut]
    next_cursor: str | None
    prev_cursor: str | None


class EnrollmentList(Schema):
    items: list[EnrollmentOut]


class EnrollIn(StrictIn):
    contact_id: int = Field(ge=1)
    key: str | None = Field(None, min_length=1, max_length=150,
                            description="your id for this request: the same key again returns the same enrollment")


class EnrollmentParams(Schema):
    state: Literal["active", "waiting", "done", "exited", "failed"] | None = None
    cursor: str = ""
    limit: int = Field(50, ge=1, le=200)


class SimulateIn(StrictIn):
    days: int = Field(ge=1, le=simulation.MAX_DAYS, description="how many days back from now")
    paths: int = Field(50, ge=0, le=1000, description="how many runs to return with their steps")


class StepOut(Schema):
    node: str
    type: str
    at: datetime = Field(description="when the step ran")
    outcome: str
    note: str
    until: datetime | None = Field(description="a wait's end, the moment the awaited event came, or the timeout")


class PathOut(Schema):
    contact_id: int
    contact: str
    run: int
    entered_at: datetime
    via: str = Field(description="the trigger occurrence: an event, a segment change, a date, a schedule")
    state: str = Field(description="done, exited, pending (would still be waiting now) or stopped")
    reason: str
    ended_at: datetime | None
    pending_until: datetime | None
    goal: bool
    steps: list[StepOut]


class NodeOut(Schema):
    id: str
    type: str
    label: str
    reached: int
    pending: int
    outcomes: dict[str, int]


class TemplateOut(Schema):
    template_id: int
    name: str
    would_send: int
    deferred: int = Field(description="would wait for the end of quiet hours")
    blocked: dict[str, int] = Field(description="reason → mails the send rules would stop")


class SimulationOut(Schema):
    days: int
    since: datetime
    now: datetime
    trigger: str
    manual: bool = Field(description="a manual trigger enrolls no one by itself")
    occurrences: int
    refused: dict[str, int] = Field(description="entry rule → trigger occurrences it refused")
    entrants: int
    runs: int
    ended: dict[str, int]
    capped: bool
    elapsed_ms: int
    nodes: list[NodeOut]
    messages: list[TemplateOut]
    paths: list[PathOut]


# --- helpers -------------------------------------------------------------------------------

def _no_nul(value: Any, path: str) -> None:
    """A NUL character cannot be stored (PostgreSQL refuses it in text and JSON)."""
    if isinstance(value, str) and "\x00" in value:
        raise ApiError(422, "invalid", "the request is not valid", {path: "contains a NUL character"})
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k, path)
            _no_nul(v, f"{path}.{k}" if path != "body" else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_nul(v, f"{path}[{i}]")


def _counts(ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {pk: {} for pk in ids}
    for jid, state, n in (Enrollment.objects.filter(journey_id__in=ids).values("journey_id", "state")
                          .annotate(n=Count("id")).values_list("journey_id", "state", "n")):
        out[jid][state] = n
    return out


def _out(journey: Journey, counts: dict[str, int]) -> dict[str, Any]:
    version = journey.current
    return {**{f: getattr(journey, f) for f in ("id", "name", "description", "status", "entry", "reentry_days",
                                                "exit_filter", "goal_filter", "created_at", "updated_at")},
            "version": version.number if version else None,
            "trigger": version.graph["trigger"]["type"] if version else None, "counts": counts}


def _detail(journey: Journey) -> dict[str, Any]:
    journey = Journey.objects.select_related("current").get(pk=journey.pk)
    return {**_out(journey, _counts([journey.pk])[journey.pk]),
            "graph": journey.current.graph if journey.current else None,
            "problems": [{"path": p, "message": m} for p, m in engine.problems(journey)]}


def _get(journey_id: int) -> Journey:
    journey = Journey.objects.select_related("current").filter(pk=journey_id).first()
    if journey is None:
        raise ApiError(404, "not_found", f"there is no journey with id {journey_id}")
    return journey


def _invalid(exc: graph_mod.GraphError) -> ApiError:
    details = {(p if p.startswith(("exit_filter", "goal_filter")) else f"graph.{p}" if p != "graph" else "graph"): m
               for p, m in exc.errors}
    return ApiError(422, "invalid", "the journey is not valid", details)


def _save(journey: Journey, graph: Any) -> Journey:
    if Journey.objects.filter(name=journey.name).exclude(pk=journey.pk).exists():
        raise ApiError(409, "conflict", "the journey clashes with an existing one",
                       {"name": f"another journey is already named {journey.name!r}"})
    try:
        engine.save_journey(journey, graph)
    except graph_mod.GraphError as exc:
        raise _invalid(exc) from exc
    except IntegrityError as exc:  # the name was taken between the check and the save
        raise ApiError(409, "conflict", "the journey clashes with an existing one",
                       {"name": f"another journey is already named {journey.name!r}"}) from exc
    return journey


def _enrollment_out(e: Enrollment) -> dict[str, Any]:
    return {**{f: getattr(e, f) for f in ("id", "journey_id", "contact_id", "run", "state", "node", "due_at",
                                          "waiting_for", "reason", "entered_at", "ended_at", "goal_reached_at")},
            "journey": e.journey.name, "version": e.version.number}


# --- journeys ------------------------------------------------------------------------------

@router.get("/journeys", auth=requires("journeys.view"), response={200: JourneyList, **READ_ERRORS},
            summary="List journeys")
def list_journeys(request):
    journeys = list(Journey.objects.select_related("current").order_by("name"))
    counts = _counts([j.pk for j in journeys])
    return {"items": [_out(j, counts[j.pk]) for j in journeys]}


@router.post("/journeys", auth=requires("journeys.manage"), response={201: JourneyDetail, **WRITE_ERRORS},
             summary="Create a journey")
def create_journey(request, payload: JourneyIn):
    """A draft with its first version; make it live with POST /journeys/{id}/status."""
    data = payload.model_dump()
    _no_nul(data, "body")
    graph = data.pop("graph")
    journey = Journey(**{k: (v.strip() if isinstance(v, str) else v) for k, v in data.items()})
    return Status(201, _detail(_save(journey, graph)))


@router.post("/journeys/import", auth=requires("journeys.manage"), response={200: ImportOut, 201: ImportOut,
                                                                             **WRITE_ERRORS},
             summary="Import a journey from YAML", openapi_extra={"requestBody": YAML_BODY})
def import_journey(request, dry_run: bool = False):
    """Creates the journey named in the file (as a draft) or gives the one of that name a new
    version — none when nothing changed. With `dry_run` only checks. Faults: 400, each with its
    path and, in its message, its line and column."""
    result = as_code.load(request.body, apply=not dry_run)
    if not result.ok:
        details = {}
        for e in result.errors:
            place = f"line {e.line}, column {e.column}: " if e.line else ""
            details.setdefault(e.path or "body", f"{place}{e.message}")
        raise ApiError(400, "invalid_yaml", f"the journey file has {len(result.errors)} fault(s)", details)
    journey = result.journey
    body = {"action": result.action, "name": result.name, "version": result.version.number if result.version else None,
            "journey": _out(Journey.objects.select_related("current").get(pk=journey.pk),
                            _counts([journey.pk])[journey.pk]) if journey else None}
    return Status(201 if result.action == "created" else 200, body)


@router.get("/journeys/{journey_id}", auth=requires("journeys.view"), response={200: JourneyDetail, **READ_ERRORS},
            summary="A journey, with its current graph")
def get_journey(request, journey_id: int):
    return _detail(_get(journey_id))


@router.patch("/journeys/{journey_id}", auth=requires("journeys.manage"),
              response={200: JourneyDetail, **WRITE_ERRORS}, summary="Change a journey")
def update_journey(request, journey_id: int, payload: JourneyPatch):
    journey = _get(journey_id)
    data = payload.model_dump(exclude_unset=True)
    _no_nul(data, "body")
    for key in ("name", "entry"):
        if key in data and data[key] is None:
            raise ApiError(422, "invalid", "the request is not valid", {key: "may not be null"})
    if "graph" in data and data["graph"] is None:
        raise ApiError(422, "invalid", "the request is not valid", {"graph": "may not be null"})
    for key, value in data.items():
        if key != "graph":
            setattr(journey, key, value.strip() if isinstance(value, str) else value)
    if data.keys() - {"name", "description"}:
        graph = data.get("graph", journey.current.graph if journey.current else None)
        if graph is None:
            raise ApiError(422, "invalid", "the request is not valid", {"graph": "is required: the journey has none"})
        _save(journey, graph)
    elif data:
        if Journey.objects.filter(name=journey.name).exclude(pk=journey.pk).exists():
            raise ApiError(409, "conflict", "the journey clashes with an existing one",
                           {"name": f"another journey is already named {journey.name!r}"})
        journey.updated_at = timezone.now()
        journey.save(update_fields=[*data, "updated_at"])
    return _detail(journey)


@router.post("/journeys/{journey_id}/status", auth=requires("journeys.manage"),
             response={200: JourneyDetail, **WRITE_ERRORS}, summary="Make a journey live, pause or archive it")
def set_status(request, journey_id: int, payload: StatusIn):
    """Live starts its triggers; paused holds every run where it is; archived ends open runs."""
    journey = _get(journey_id)
    try:
        engine.set_status(journey, payload.status)
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc), {"status": str(exc)}) from exc
    return _detail(journey)


@router.get("/journeys/{journey_id}/export", auth=requires("journeys.view"), response={200: None, **READ_ERRORS},
            summary="The journey as YAML",
            openapi_extra={"responses": {200: {"description": "the journey as YAML",
                                                 "content": {"text/yaml": {"schema": {"type": "string"}}}}}})
def export_journey(request, journey_id: int):
    journey = _get(journey_id)
    if journey.current is None:
        raise ApiError(404, "not_found", f"the journey {journey.name!r} has no saved version to export")
    response = HttpResponse(as_code.dump(journey), content_type="text/yaml; charset=utf-8")
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{_quote(as_code.filename(journey))}"
    return response


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name)


# --- enrollments ---------------------------------------------------------------------------

@router.get("/journeys/{journey_id}/enrollments", auth=requires("journeys.view"),
            response={200: EnrollmentPage, **READ_ERRORS, 400: ErrorOut, 422: ErrorOut},
            summary="The runs of a journey")
def list_enrollments(request, journey_id: int, params: Query[EnrollmentParams]):
    unknown = {key: "is not a known parameter" for key in request.GET if key not in EnrollmentParams.model_fields}
    if unknown:
        raise ApiError(400, "bad_request", "the query has unknown parameters", unknown)
    journey = _get(journey_id)
    qs = Enrollment.objects.filter(journey=journey).select_related("journey", "version")
    if params.state:
        qs = qs.filter(state=params.state)
    try:
        page = queries.paginate(qs, sort="newest", cursor=params.cursor, limit=params.limit)
    except queries.QueryError as exc:
        raise ApiError(400, "bad_request", "the query is not valid", exc.errors) from exc
    return {"items": [_enrollment_out(e) for e in page.items], "next_cursor": page.next_cursor,
            "prev_cursor": page.prev_cursor}


@router.post("/journeys/{journey_id}/enrollments", auth=requires("journeys.manage"),
             response={200: EnrollmentOut, 201: EnrollmentOut, **WRITE_ERRORS}, summary="Enroll a contact by hand")
def enroll_contact(request, journey_id: int, payload: EnrollIn):
    """201 with the new run; 200 with the earlier one when `key` was used before (a retry);
    409 when the journey is not live or its entry rules refuse the contact now."""
    _no_nul(payload.model_dump(), "body")
    journey = _get(journey_id)
    contact = Contact.objects.filter(pk=payload.contact_id).first()
    if contact is None:
        raise ApiError(404, "not_found", f"there is no contact with id {payload.contact_id}")
    key = f"api:{payload.key}" if payload.key else None
    rows = Enrollment.objects.select_related("journey", "version")

    def earlier():
        return rows.filter(journey=journey, trigger_key=key).first() if key else None

    if (found := earlier()) is not None:
        return Status(200, _enrollment_out(found))
    if journey.status != Journey.Status.LIVE:
        raise ApiError(409, "conflict", f"the journey is {journey.status}: only a live journey enrolls",
                       {"journey": f"is {journey.status}"})
    made = engine.enroll(journey, contact, key=key, context={"via": "api"})
    if made is None:
        if (found := earlier()) is not None:  # a concurrent retry with the same key won
            return Status(200, _enrollment_out(found))
        raise ApiError(409, "conflict", "the journey's entry rules do not let this contact in now",
                       {"contact_id": f"entry rule {journey.entry}"
                                      + (f", not again within {journey.reentry_days} days" if journey.reentry_days
                                         else "")})
    return Status(201, _enrollment_out(rows.get(pk=made.pk)))


@router.get("/contacts/{contact_id}/enrollments", auth=requires("journeys.view"),
            response={200: EnrollmentList, **READ_ERRORS}, summary="The journey runs of a contact")
def contact_enrollments(request, contact_id: int):
    if not Contact.objects.filter(pk=contact_id).exists():
        raise ApiError(404, "not_found", f"there is no contact with id {contact_id}")
    rows = Enrollment.objects.filter(contact_id=contact_id).select_related("journey", "version").order_by("-id")
    return {"items": [_enrollment_out(e) for e in rows[:500]]}


# --- simulation ----------------------------------------------------------------------------

@router.post("/journeys/{journey_id}/simulate", auth=requires("journeys.view"),
             response={200: SimulationOut, **WRITE_ERRORS}, summary="Simulate a journey on the last N days")
def simulate_journey(request, journey_id: int, payload: SimulateIn):
    """Who would have entered, each run's path and the mails that would have gone, computed from
    real events; nothing is sent or written. Conditions on the profile read today's values."""
    journey = _get(journey_id)
    try:
        result = simulation.simulate(journey, days=payload.days, limit=payload.paths)
    except ValueError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    return simulation_out(result)


def simulation_out(result: simulation.Simulation) -> dict[str, Any]:
    return {
        **{f: getattr(result, f) for f in ("days", "since", "now", "trigger", "occurrences", "entrants", "runs",
                                           "capped", "elapsed_ms")},
        "manual": "manual" in result.notes, "refused": dict(result.refused), "ended": dict(result.ended),
        "nodes": [{"id": n.id, "type": n.type, "label": n.label, "reached": n.reached, "pending": n.pending,
                   "outcomes": {k: v for k, v in n.outcomes.items() if v}} for n in result.nodes],
        "messages": [{"template_id": m.template_id, "name": m.name, "would_send": m.would_send,
                      "deferred": m.deferred, "blocked": dict(m.blocked)} for m in result.messages],
        "paths": [{**{f: getattr(p, f) for f in ("contact_id", "contact", "run", "entered_at", "via", "state",
                                                  "reason", "ended_at", "pending_until", "goal")},
                   "steps": [{"node": s.node, "type": s.type, "at": s.at, "outcome": s.outcome, "note": s.note,
                              "until": s.until} for s in p.steps]} for p in result.paths],
    }
