"""Journeys as people see and change them in the pages: saving from the builder (with every
fault placed on the step or field it belongs to), status changes, journeys and steps in words,
the enrollment list, the per-contact inspector and enrolling by hand.

The engine (engine.py, graph.py) does the work; this module only turns it into what a page
shows, and records who changed what in the audit log.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from kizuna.accounts import audit
from kizuna.contacts.models import Contact, CustomField, LifecycleStage
from kizuna.journeys import engine
from kizuna.journeys import graph as graph_mod
from kizuna.journeys.models import Enrollment, Journey, JourneyVersion, StepRun
from kizuna.segments import filters
from kizuna.segments.describe import Names, _quoted, _where_text, describe

NAME_MAX, DESCRIPTION_MAX = 150, 500
AUDITED = ["name", "description", "entry", "reentry_days", "exit_filter", "goal_filter"]
OPEN_STATES = {Enrollment.State.ACTIVE, Enrollment.State.WAITING}
INSPECTED_RUNS = 50  # the newest runs of a contact the inspector shows
STEPS_PER_RUN = 300

TYPE_LABELS = {
    "wait": gettext_lazy("Wait"),
    "wait_event": gettext_lazy("Wait for an event"),
    "condition": gettext_lazy("Condition"),
    "split": gettext_lazy("Random split"),
    "send_email": gettext_lazy("Send an email"),
    "update_field": gettext_lazy("Update a field"),
    "add_tag": gettext_lazy("Add a tag"),
    "remove_tag": gettext_lazy("Remove a tag"),
    "set_stage": gettext_lazy("Set the lifecycle stage"),
    "score": gettext_lazy("Add or subtract score"),
    "add_to_list": gettext_lazy("Add to a list"),
    "remove_from_list": gettext_lazy("Remove from a list"),
    "alert_owner": gettext_lazy("Alert the owner"),
    "webhook": gettext_lazy("Call a webhook"),
    "enroll": gettext_lazy("Enroll in another journey"),
    "exit": gettext_lazy("Exit the journey"),
    "goal": gettext_lazy("Goal reached"),
}
STATE_LABELS = {
    "active": gettext_lazy("Running"),
    "waiting": gettext_lazy("Waiting"),
    "done": gettext_lazy("Done"),
    "exited": gettext_lazy("Exited"),
    "failed": gettext_lazy("Failed"),
}


class JourneyError(ValueError):
    """Settings other than the graph are wrong; `errors` maps the field to a message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


# --- saving ------------------------------------------------------------------------------------

@dataclass
class Settings:
    name: str
    description: str = ""
    entry: str = Journey.Entry.ONCE
    reentry_days: int | None = None
    exit_filter: Any = None
    goal_filter: Any = None


def _snapshot(journey: Journey) -> dict[str, Any]:
    return {name: getattr(journey, name) for name in AUDITED}


def _empty(tree: Any) -> bool:
    return tree in (None, {}, {"all": []})


def save(actor, journey: Journey | None, settings: Settings, graph: Any, *, base_version: int | None = None
         ) -> tuple[Journey, JourneyVersion | None]:
    """Creates (journey None) or changes a journey from the builder.

    A changed graph becomes a new version (engine.save_journey); settings alone (a new name, a
    goal) change the journey and keep the version, so runs are not split for nothing. Raises
    JourneyError for the settings and GraphError for the graph and the exit and goal conditions
    (every fault, each with its path), before anything is written. `base_version` is the version
    the builder started from: if someone saved another one since, the save is refused rather
    than silently overwriting theirs."""
    creating = journey is None
    journey = journey or Journey()
    before = {} if creating else _snapshot(journey)
    errors: dict[str, str] = {}
    name = (settings.name or "").strip()
    if not name:
        errors["name"] = _("Name the journey.")
    elif len(name) > NAME_MAX:
        errors["name"] = _("At most %(n)s characters.") % {"n": NAME_MAX}
    elif Journey.objects.filter(name=name).exclude(pk=journey.pk).exists():
        errors["name"] = _("Another journey is already called %(name)s.") % {"name": name}
    description = (settings.description or "").strip()
    if len(description) > DESCRIPTION_MAX:
        errors["description"] = _("At most %(n)s characters.") % {"n": DESCRIPTION_MAX}
    if settings.entry not in Journey.Entry.values:
        errors["entry"] = _("Choose how often a contact may enter.")
    if settings.reentry_days is not None and not 1 <= settings.reentry_days <= 3650:
        errors["reentry_days"] = _("A whole number of days from 1 to 3650, or empty.")
    current = journey.current if journey.current_id else None
    if not creating and base_version is not None and current is not None and current.number != base_version:
        errors["version"] = _("Version %(n)s was saved by someone else while you were editing. Reload the "
                              "page to see it; what you changed here is still in the builder.") % {"n": current.number}
    refs = graph_mod.Refs.load()
    graph_errors: list[tuple[str, str]] = []
    try:
        checked = graph_mod.check(graph, refs, journey_id=journey.pk)
    except graph_mod.GraphError as exc:
        graph_errors += exc.errors
        checked = None
    trees = {}
    for key in ("exit_filter", "goal_filter"):
        tree = getattr(settings, key)
        try:
            trees[key] = None if _empty(tree) else filters.check(tree, refs.filter_ctx)
        except filters.FilterError as exc:
            graph_errors.append((key if exc.path == "filter" else f"{key}.{exc.path}", exc.message))
    if errors:
        raise JourneyError(errors)
    if graph_errors:
        raise graph_mod.GraphError(graph_errors)
    journey.name, journey.description, journey.entry = name, description, settings.entry
    journey.reentry_days = settings.reentry_days
    journey.exit_filter, journey.goal_filter = trees["exit_filter"], trees["goal_filter"]
    version = None
    with transaction.atomic():
        if current is not None and checked == current.graph:
            journey.updated_at = timezone.now()
            journey.save()
        else:
            version = engine.save_journey(journey, checked, refs=refs)
        changes = audit.diff(before, _snapshot(journey))
        if version is not None:
            changes["version"] = [current.number if current else None, version.number]
        audit.record(actor, "create" if creating else "update", journey, changes=changes)
    return journey, version


STATUS_CHANGES = {
    # from → the statuses the page offers
    Journey.Status.DRAFT: [Journey.Status.LIVE, Journey.Status.ARCHIVED],
    Journey.Status.LIVE: [Journey.Status.PAUSED, Journey.Status.ARCHIVED],
    Journey.Status.PAUSED: [Journey.Status.LIVE, Journey.Status.ARCHIVED],
    Journey.Status.ARCHIVED: [Journey.Status.DRAFT],
}


def change_status(actor, journey: Journey, status: str) -> None:
    """Go live, pause, archive or back to draft; refused (JourneyError) when the move is not one
    the page offers, or when going live with references deleted since the last save."""
    if status not in STATUS_CHANGES.get(journey.status, []):
        raise JourneyError({"status": _("A journey that is %(now)s cannot become %(then)s.") % {
            "now": Journey.Status(journey.status).label, "then": status}})
    if status == Journey.Status.LIVE:
        if journey.current_id is None:
            raise JourneyError({"status": _("Save the journey before it can go live.")})
        faults = engine.problems(journey)
        if faults:
            raise JourneyError({"status": _("It cannot go live while it names what no longer exists: %(faults)s.")
                                % {"faults": "; ".join(f"{p}: {m}" for p, m in faults)}})
    before = journey.status
    engine.set_status(journey, status)
    audit.record(actor, "update", journey, changes={"status": [before, status]})


# --- faults on the diagram -----------------------------------------------------------------------

PATH_RE = re.compile(r"nodes\[(\d+)\](?:\.(.+))?$")


def place_errors(graph: Any, errors: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Each fault with where the builder shows it: on a step (its id and the field within it),
    on the trigger, on the exit or goal condition, or on the graph as a whole."""
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    placed = []
    for path, message in errors:
        item = {"path": path, "message": message, "area": "graph", "node": None, "field": ""}
        match = PATH_RE.match(path)
        if match and isinstance(nodes, list):
            index = int(match.group(1))
            node = nodes[index] if index < len(nodes) else None
            item.update(area="node", field=match.group(2) or "",
                        node=node.get("id") if isinstance(node, dict) and isinstance(node.get("id"), str) else None,
                        index=index)
        else:
            head, _dot, rest = path.partition(".")
            if head in ("trigger", "exit_filter", "goal_filter"):
                item.update(area=head, field=rest)
        placed.append(item)
    return placed


# --- in words ------------------------------------------------------------------------------------

def _days(n: int) -> str:
    return ngettext("%(n)s day", "%(n)s days", n)


def _hours(n: int) -> str:
    return ngettext("%(n)s hour", "%(n)s hours", n)


def _minutes(n: int) -> str:
    return ngettext("%(n)s minute", "%(n)s minutes", n)


def _duration_text(spec: dict | None) -> str:
    spec = spec or {}
    parts = [words(spec[unit]) % {"n": spec[unit]}
             for unit, words in (("days", _days), ("hours", _hours), ("minutes", _minutes)) if spec.get(unit)]
    return " ".join(parts) or "—"


def _stage_label(value: str) -> str:
    return str(LifecycleStage(value).label) if value in LifecycleStage.values else value


def trigger_text(trigger: dict | None, names: Names) -> str:
    """What starts the journey, in one sentence."""
    trigger = trigger or {}
    kind = trigger.get("type")
    if kind == "segment":
        segment = _quoted(names.segments.get(trigger.get("segment"), f"#{trigger.get('segment')}"))
        if trigger.get("on") == "exited":
            return _("When a contact leaves the segment %(segment)s") % {"segment": segment}
        return _("When a contact enters the segment %(segment)s") % {"segment": segment}
    if kind == "event":
        event = trigger.get("event")
        what = _("When a contact visits a page") if event == "page" else (
            _("When a contact does %(event)s") % {"event": _quoted(event)})
        if trigger.get("where"):
            what += " " + _("where %(conditions)s") % {"conditions": _where_text(trigger["where"])}
        return what
    if kind == "date":
        name = trigger.get("field") or ""
        label = (names.custom[name[7:]].label if name.startswith("custom.") and name[7:] in names.custom
                 else str(DATE_FIELDS.get(name, name)))
        days = trigger.get("offset_days") or 0
        if days < 0:
            when = ngettext("%(n)s day before %(field)s", "%(n)s days before %(field)s", -days) % {
                "n": -days, "field": label}
        elif days > 0:
            when = ngettext("%(n)s day after %(field)s", "%(n)s days after %(field)s", days) % {
                "n": days, "field": label}
        else:
            when = _("On the day of %(field)s") % {"field": label}
        return _("%(when)s, at %(at)s") % {"when": when, "at": trigger.get("at", "09:00")}
    if kind == "schedule":
        if trigger.get("every") == "week":
            day = str(WEEKDAYS[trigger.get("day", 0) % 7])
            when = _("Every week on %(day)s at %(at)s") % {"day": day, "at": trigger.get("at")}
        else:
            when = _("Every month on day %(day)s at %(at)s") % {"day": trigger.get("day"), "at": trigger.get("at")}
        audience = trigger.get("audience")
        if audience and not _empty(audience):
            line = describe(audience, names)
            when += _(", for: %(who)s") % {"who": line.text if not line.children else
                                          "; ".join(c.text for c in line.children)}
        return when
    return _("By hand or through the API")


def entry_text(journey: Journey) -> str:
    text = str(Journey.Entry(journey.entry).label) if journey.entry in Journey.Entry.values else journey.entry
    if journey.reentry_days:
        text += _(", not again within %(n)s days") % {"n": journey.reentry_days}
    return text


DATE_FIELDS = {"created_at": gettext_lazy("Created"), "last_activity_at": gettext_lazy("Last activity")}
WEEKDAYS = [gettext_lazy("Monday"), gettext_lazy("Tuesday"), gettext_lazy("Wednesday"), gettext_lazy("Thursday"),
            gettext_lazy("Friday"), gettext_lazy("Saturday"), gettext_lazy("Sunday")]


def condition_words(tree: Any, names: Names) -> str:
    """A condition in a few words: its first conditions, joined."""
    try:
        line = describe(tree, names)
    except (KeyError, TypeError, AttributeError):
        return "?"
    if not line.children:
        return line.text
    words = "; ".join(c.text for c in line.children[:3])
    return words + ("; …" if len(line.children) > 3 else "")


def node_title(node: dict | None, names: Names, journeys: dict[int, str] | None = None) -> str:
    """A step as the diagram names it: its label, or what it does in a few words."""
    if not node:
        return _("(a step no longer in this version)")
    if node.get("label"):
        return node["label"]
    kind = node.get("type")
    if kind == "wait":
        if node.get("duration"):
            return _("Wait %(time)s") % {"time": _duration_text(node["duration"])}
        if node.get("until"):
            return _("Wait until %(when)s") % {"when": node["until"][:16].replace("T", " ")}
        if node.get("business_days"):
            text = ngettext("Wait %(n)s business day", "Wait %(n)s business days", node["business_days"]) % {
                "n": node["business_days"]}
            return text + (f" · {node['time_of_day']}" if node.get("time_of_day") else "")
        days = node.get("days") or 0
        return (ngettext("Wait until %(at)s, %(n)s day later", "Wait until %(at)s, %(n)s days later", days)
                if days else _("Wait until %(at)s")) % {"at": node.get("time_of_day"), "n": days}
    if kind == "condition":
        return _("If: %(words)s") % {"words": condition_words(node.get("if"), names)}
    if kind == "wait_event":
        event = _("a page visit") if node.get("event") == "page" else _quoted(node.get("event"))
        return _("Wait up to %(time)s for %(event)s") % {"time": _duration_text(node.get("timeout")), "event": event}
    if kind == "send_email":
        return _("Send %(email)s") % {"email": _quoted(names.templates.get(node.get("template"),
                                                                            f"#{node.get('template')}"))}
    if kind in ("add_tag", "remove_tag"):
        return (_("Add the tag %(tag)s") if kind == "add_tag" else _("Remove the tag %(tag)s")) % {
            "tag": _quoted(node.get("tag"))}
    if kind == "set_stage":
        return _("Set the stage to %(stage)s") % {"stage": _stage_label(node.get("stage", ""))}
    if kind == "score":
        return _("%(points)+d points in %(model)s") % {
            "points": node.get("points") or 0, "model": names.models.get(node.get("model"), f"#{node.get('model')}")}
    if kind in ("add_to_list", "remove_from_list"):
        which = _quoted(names.lists.get(node.get("list"), f"#{node.get('list')}"))
        return (_("Add to the list %(list)s") if kind == "add_to_list" else _("Remove from the list %(list)s")) % {
            "list": which}
    if kind == "enroll" and journeys is not None:
        return _("Enroll in %(journey)s") % {"journey": _quoted(journeys.get(node.get("journey"),
                                                                            f"#{node.get('journey')}"))}
    if kind == "goal" and node.get("name"):
        return _("Goal: %(name)s") % {"name": node["name"]}
    return str(TYPE_LABELS.get(kind, kind))


# --- the journey list ------------------------------------------------------------------------------

def has_goal(journey: Journey) -> bool:
    """A goal condition or a goal step: without either, goal conversion means nothing."""
    nodes = journey.current.graph.get("nodes", []) if journey.current_id else []
    return bool(journey.goal_filter) or any(n.get("type") == "goal" for n in nodes)


def journey_rows(journeys: QuerySet[Journey]) -> list[dict[str, Any]]:
    from kizuna.journeys.stats import STATES, list_counts

    journeys = list(journeys.select_related("current"))
    counts = list_counts([j.pk for j in journeys])
    names = Names.load()
    empty = {**dict.fromkeys(STATES, 0), "enrolled": 0, "goals": 0, "conversion": None}
    return [{"journey": j, "trigger": trigger_text(j.current.graph.get("trigger") if j.current else None, names),
             "entry": entry_text(j), "counts": counts.get(j.pk, empty), "has_goal": has_goal(j)} for j in journeys]


# --- enrollments and the inspector -----------------------------------------------------------------

def enrollments(journey: Journey, *, state: str = "", node: str = "", q: str = "") -> QuerySet[Enrollment]:
    rows = Enrollment.objects.filter(journey=journey).select_related("contact", "version")
    if state in Enrollment.State.values:
        rows = rows.filter(state=state)
    if node:
        rows = rows.filter(node=node)
    if q.strip():
        rows = rows.filter(contact__email__icontains=q.strip())
    return rows.order_by("-entered_at", "-id")


def _when(value: str | dt.datetime | None) -> str:
    if not value:
        return ""
    try:
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    except ValueError:
        return str(value)
    return date_format(timezone.localtime(moment), "Y-m-d H:i")


@dataclass
class Step:
    at: dt.datetime
    node: str
    title: str
    text: str
    message_id: int | None = None
    event: Any = None


@dataclass
class Run:
    enrollment: Enrollment
    open: bool  # still running or waiting: `title` is where it is now, else where it ended
    title: str  # of the step it is at
    state_label: str
    entered_by: str
    entered_event: Any
    waiting: str
    reason: str
    steps: list[Step] = field(default_factory=list)


REASONS = {
    "goal": gettext_lazy("Reached the goal."),
    "exit condition": gettext_lazy("Met the journey's exit condition."),
    "end of the journey": gettext_lazy("Reached the end of the journey."),
    "exit step": gettext_lazy("Left at an exit step."),
    "holdout": gettext_lazy("Held out by a random split (control group)."),
    "journey archived": gettext_lazy("The journey was archived."),
    "contact deleted": gettext_lazy("The contact was deleted."),
}


def _branch_name(node: dict | None, index: int) -> str:
    branches = (node or {}).get("branches") or []
    label = branches[index].get("label") if index < len(branches) else ""
    letter = chr(ord("A") + index) if index < 26 else str(index + 1)
    return f"{letter} ({label})" if label else letter


def outcome_text(node: dict | None, outcome: str) -> tuple[str, int | None, int | None]:
    """A step run's outcome in words, with the message or event it names (ids)."""
    if outcome == "condition met":
        return _("Condition met: took “Yes”."), None, None
    if outcome == "condition not met":
        return _("Condition not met: took “No”."), None, None
    if outcome == "holdout":
        return _("Held out (control group): the run ended here."), None, None
    if outcome == "timeout":
        return _("The event did not come before the time limit: took “Timed out”."), None, None
    if outcome == "exit step":
        return _("Left the journey at this step."), None, None
    if match := re.fullmatch(r"branch (\d+)", outcome):
        return _("Took branch %(name)s.") % {"name": _branch_name(node, int(match.group(1)))}, None, None
    if match := re.fullmatch(r"event (\d+)", outcome):
        return _("The event came: took “Came”."), None, int(match.group(1))
    if match := re.fullmatch(r"wait for (.+) until (\S+)", outcome):
        return _("Waits for %(event)s until %(when)s.") % {"event": _quoted(match.group(1)),
                                                           "when": _when(match.group(2))}, None, None
    if match := re.fullmatch(r"wait until (\S+)", outcome):
        return _("Waits until %(when)s.") % {"when": _when(match.group(1))}, None, None
    if match := re.fullmatch(r"queued message (\d+)", outcome):
        return _("Email queued."), int(match.group(1)), None
    if match := re.fullmatch(r"message (\d+) was queued already", outcome):
        return _("Email was queued already."), int(match.group(1)), None
    if outcome.startswith("skipped: "):
        return _("Skipped: %(why)s") % {"why": outcome[9:]}, None, None
    return outcome, None, None


def _entered_by(e: Enrollment, names: Names, journeys: dict[int, str], changes: dict[int, Any]) -> str:
    ctx = e.context or {}
    via = ctx.get("via")
    if via == "manual":
        who = ctx.get("by")
        return _("Enrolled by hand by %(user)s.") % {"user": who} if who else _("Enrolled by hand or through the API.")
    if via == "event":
        return _("Entered on an event:")
    if via == "segment":
        change = changes.get(ctx.get("change"))
        if change is None:
            return _("Entered on a segment change.")
        segment = _quoted(names.segments.get(change.segment_id, f"#{change.segment_id}"))
        return (_("Entered the segment %(segment)s.") if change.kind == "entered"
                else _("Left the segment %(segment)s.")) % {"segment": segment}
    if via == "date":
        return _("Entered on the date %(date)s.") % {"date": ctx.get("date", "")}
    if via == "schedule":
        return _("Entered on the schedule of %(when)s.") % {"when": _when(ctx.get("occurrence"))}
    if via == "journey":
        return _("Enrolled by the journey %(journey)s.") % {
            "journey": _quoted(journeys.get(ctx.get("from"), f"#{ctx.get('from')}"))}
    return ""


def _waiting_text(e: Enrollment, node: dict | None) -> str:
    if e.due_at is None:
        return ""
    if e.state == Enrollment.State.WAITING and e.waiting_for:
        event = _("a page visit") if e.waiting_for == "page" else _quoted(e.waiting_for)
        return _("Waiting for %(event)s until %(when)s; then “Timed out”.") % {"event": event, "when": _when(e.due_at)}
    if e.state == Enrollment.State.WAITING:
        return _("Waiting until %(when)s.") % {"when": _when(e.due_at)}
    if e.state == Enrollment.State.ACTIVE:
        return _("Due to run this step at %(when)s.") % {"when": _when(e.due_at)}
    return ""


def contact_runs(contact: Contact, *, journey: Journey | None = None) -> list[Run]:
    """Every run of a contact (newest first), with where it is, why, and its step log."""
    from kizuna.events.models import Event
    from kizuna.segments.models import SegmentChange

    rows = Enrollment.objects.filter(contact=contact).select_related("journey", "version")
    if journey is not None:
        rows = rows.filter(journey=journey)
    runs = list(rows.order_by("-entered_at", "-id")[:INSPECTED_RUNS])
    if not runs:
        return []
    names = Names.load()
    journeys = dict(Journey.objects.values_list("id", "name"))
    steps: dict[int, list[StepRun]] = {}
    for step in StepRun.objects.filter(enrollment__in=runs).order_by("enrollment_id", "at", "id"):
        steps.setdefault(step.enrollment_id, []).append(step)
    change_ids = [e.context.get("change") for e in runs if (e.context or {}).get("via") == "segment"]
    changes = SegmentChange.objects.in_bulk([c for c in change_ids if isinstance(c, int)])
    event_ids = {e.context.get("event") for e in runs if isinstance((e.context or {}).get("event"), int)}
    out = []
    for e in runs:
        version = e.version
        log = []
        for step in steps.get(e.pk, [])[-STEPS_PER_RUN:]:
            node = version.node(step.node)
            text, message_id, event_id = outcome_text(node, step.outcome)
            if event_id:
                event_ids.add(event_id)
            log.append(Step(at=step.at, node=step.node, title=node_title(node, names, journeys), text=text,
                            message_id=message_id, event=event_id))
        node = version.node(e.node) if e.node else None
        reason = str(REASONS.get(e.reason, e.reason)) if e.reason else ""
        out.append(Run(enrollment=e, open=e.state in OPEN_STATES,
                       title=node_title(node, names, journeys) if e.node else "",
                       state_label=str(STATE_LABELS.get(e.state, e.state)),
                       entered_by=_entered_by(e, names, journeys, changes),
                       entered_event=(e.context or {}).get("event"), waiting=_waiting_text(e, node),
                       reason=reason, steps=log))
    events = Event.objects.in_bulk([i for i in event_ids if i])
    for run in out:
        run.entered_event = events.get(run.entered_event) if run.entered_event else None
        for step in run.steps:
            step.event = events.get(step.event) if step.event else None
    return out


def live_journeys() -> QuerySet[Journey]:
    return Journey.objects.filter(status=Journey.Status.LIVE, current__isnull=False).order_by("name")


def enroll_by_hand(actor, journey: Journey, contact: Contact) -> Enrollment:
    """engine.enroll for one contact, recorded with who did it; JourneyError when the journey is
    not live or its entry rules refuse the contact (saying which rule)."""
    if journey.status != Journey.Status.LIVE:
        raise JourneyError({"journey": _("%(name)s is not live.") % {"name": journey.name}})
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else ""
    enrollment = engine.enroll(journey, contact, context={"by": who})
    if enrollment is None:
        raise JourneyError({"journey": _("The entry rule of %(name)s does not allow this contact in now (%(rule)s).")
                            % {"name": journey.name, "rule": entry_text(journey)}})
    audit.record(actor, "enroll", contact, changes={"journey": [None, journey.name]})
    return enrollment


# --- what the builder offers ------------------------------------------------------------------------

def updatable_fields(names: Names) -> list[dict[str, Any]]:
    """The fields an update_field step may set, with the kind of value each takes."""
    from kizuna.accounts.models import User
    from kizuna.segments.describe import choice_labels

    out = []
    for name in sorted(graph_mod.UPDATABLE):
        model_field = Contact._meta.get_field("owner" if name == "owner_id" else name)
        label = str(model_field.verbose_name).capitalize()
        if name == "owner_id":
            users = [[u.pk, u.display_name] for u in User.objects.filter(is_active=True).order_by("username")]
            out.append({"key": name, "label": label, "kind": "owner", "choices": users})
            continue
        labels = choice_labels(name, names)
        out.append({"key": name, "label": label, "kind": "choice" if labels else "text",
                    "choices": [[v, lab] for v, lab in labels.items()] if labels else None})
    kinds = {CustomField.Type.TEXT: "text", CustomField.Type.NUMBER: "number", CustomField.Type.DATE: "date",
             CustomField.Type.CHOICE: "choice", CustomField.Type.MULTI_CHOICE: "multi",
             CustomField.Type.BOOLEAN: "bool"}
    for key, definition in names.custom.items():
        out.append({"key": f"custom.{key}", "label": definition.label, "kind": kinds.get(definition.field_type, "text"),
                    "choices": [[c, c] for c in definition.choices or []] or None})
    return out


def _pair(words) -> list[str]:
    """[one, other] of words with a number, for the builder (it picks by the number)."""
    return [words(1), words(2)]


def builder_schema(journey: Journey | None, *, readonly: bool) -> dict[str, Any]:
    """Everything the diagram builder (static/kizuna/journeys.js) offers and says: the segment
    filter builder's schema for conditions, what each step may name (templates with a saved
    version, lists, models, webhooks, other journeys), and every word, translated here."""
    from kizuna.handoff.models import Webhook
    from kizuna.messaging.models import EmailTemplate
    from kizuna.segments import builder as filter_builder

    names = Names.load()
    filter_schema = filter_builder.schema(names)
    journeys = list(Journey.objects.order_by("name").values_list("id", "name"))
    templates = list(EmailTemplate.objects.filter(current__isnull=False).order_by("name").values_list("id", "name"))
    segment_pairs = [[k, v] for k, v in names.segments.items()]
    date_fields = [[key, str(label)] for key, label in DATE_FIELDS.items()]
    date_fields += [[f"custom.{k}", d.label] for k, d in names.custom.items() if d.field_type == CustomField.Type.DATE]
    events = ["page", *filter_schema["events"]]
    return {
        "readonly": readonly,
        "hasGoal": has_goal(journey) if journey else False,
        "filter": filter_schema,
        "templates": [list(t) for t in templates],
        "templateNames": [[k, v] for k, v in names.templates.items()],
        "lists": [[k, v] for k, v in names.lists.items()],
        "listNames": [[k, v] for k, v in names.lists.items()],
        "models": [[k, v] for k, v in names.models.items()],
        "webhooks": [list(w) for w in Webhook.objects.order_by("name").values_list("id", "name")],
        "journeys": [[k, v] for k, v in journeys if journey is None or k != journey.pk],
        "journeyNames": [[k, v] for k, v in journeys],
        "segments": segment_pairs,
        "stages": [[v, str(label)] for v, label in LifecycleStage.choices],
        "updatable": updatable_fields(names),
        "dateFields": date_fields,
        "weekdays": [[i, str(day)] for i, day in enumerate(WEEKDAYS)],
        "events": events,
        "defaultEvent": filter_schema["formEvent"],
        "triggerTypes": [["segment", _("A contact enters or leaves a segment")], ["event", _("An event happens")],
                         ["date", _("A date field comes round")], ["schedule", _("A schedule (monthly or weekly)")],
                         ["manual", _("By hand or through the API")]],
        "triggerDefaults": {
            "segment": {"segment": segment_pairs[0][0] if segment_pairs else None, "on": "entered"},
            "event": {"event": "page", "where": [{"field": "path", "op": "contains", "value": ""}]},
            "date": {"field": "created_at", "offset_days": 0, "at": "09:00"},
            "schedule": {"every": "month", "day": 1, "at": "10:00", "audience": {"all": []}},
            "manual": {},
        },
        "waitModes": [["duration", _("For a time")], ["until", _("Until a date and time")],
                      ["time_of_day", _("Until a time of day (the contact's time zone)")],
                      ["business_days", _("For business days (Japanese holidays skipped)")]],
        "text": {
            "types": {k: str(v) for k, v in TYPE_LABELS.items()},
            "trigger": _("Trigger"), "trType": _("Starts when"), "segment": _("Segment"), "when": _("When"),
            "entered": _("enters it"), "exited": _("leaves it"), "noSegments": _("No segment yet: make one first."),
            "eventName": _("Event"), "eventHint": _("“page” is a page view; or the name of a tracked event."),
            "dateField": _("Date field"), "days": _("Days"), "hours": _("Hours"), "minutes": _("Minutes"),
            "before": _("before"), "onDay": _("on the day"), "after": _("after"), "atTime": _("At"),
            "atTimeOptional": _("At (optional)"), "every": _("Every"), "month": _("month"), "week": _("week"),
            "weekday": _("Weekday"), "dayOfMonth": _("Day of the month"), "dayOfMonthHint": _("1 to 28"),
            "audience": _("Who: everyone matching this (no condition: every contact)"),
            "manualHint": _("Contacts are enrolled by hand, from their page, or through the API."),
            "trEnters": _("When a contact enters the segment %(segment)s"),
            "trLeaves": _("When a contact leaves the segment %(segment)s"),
            "trPage": _("When a contact visits a page"), "trEvent": _("When a contact does %(event)s"),
            "trWhere": _("where %(conditions)s"), "and": _(" and "), "property": _("property %(name)s"),
            "trDate": _("%(when)s, at %(at)s"),
            "daysBefore": _pair(lambda n: ngettext("%(n)s day before %(field)s", "%(n)s days before %(field)s", n)),
            "daysAfter": _pair(lambda n: ngettext("%(n)s day after %(field)s", "%(n)s days after %(field)s", n)),
            "onTheDay": _("On the day of %(field)s"),
            "trMonthly": _("Every month on day %(day)s at %(at)s"), "trWeekly": _("Every week on %(day)s at %(at)s"),
            "trManual": _("By hand or through the API"),
            "yes": _("Yes"), "no": _("No"), "came": _("Came"), "timedOut": _("Timed out"), "then": _("Then"),
            "holdoutPct": _("Holdout · %(n)s%%"), "holdoutEnd": _("Held out: the run ends"),
            "leaves": _("Leaves the journey"), "end": _("End"),
            "nDays": _pair(_days), "nHours": _pair(_hours),
            "nMinutes": _pair(_minutes),
            "waitFor": _("Wait %(time)s"), "waitUntil": _("Wait until %(when)s"),
            "waitBusiness": _pair(lambda n: ngettext("Wait %(n)s business day", "Wait %(n)s business days", n)),
            "waitTime": _("Wait until %(at)s"),
            "waitTimeDays": _pair(lambda n: ngettext("Wait until %(at)s, %(n)s day later",
                                                     "Wait until %(at)s, %(n)s days later", n)),
            "waitEvent": _("Wait up to %(time)s for %(event)s"), "pageVisit": _("a page visit"),
            "sendEmail": _("Send %(email)s"), "updateField": _("Set %(field)s"), "addTag": _("Add the tag %(tag)s"),
            "removeTag": _("Remove the tag %(tag)s"), "setStage": _("Set the stage to %(stage)s"),
            "scorePoints": _("%(points)s points in %(model)s"), "addToList": _("Add to the list %(list)s"),
            "removeFromList": _("Remove from the list %(list)s"), "callWebhook": _("Call the webhook %(webhook)s"),
            "enrollIn": _("Enroll in %(journey)s"), "goalNamed": _("Goal: %(name)s"),
            "quoted": _("“%(text)s”"), "missing": _("#%(id)s (no longer exists)"), "choose": _("— choose —"),
            "label": _("Label"), "labelHint": _("Optional: what the diagram and the contact's log call this step."),
            "waitMode": _("Wait"), "until": _("Until"), "untilHint": _("In this browser's time zone."),
            "daysLater": _("Days later"),
            "timeOfDayHint": _("0 days later: the next such time; 1: that time tomorrow, and so on."),
            "businessDays": _("Business days"),
            "businessHint": _("Saturdays, Sundays and Japanese public holidays (substitute holidays too) are skipped."),
            "timeout": _("If it has not come within"),
            "percent": _("Percent"), "branchLabel": _("Name (optional)"), "addBranch": _("+ Branch"),
            "removeBranch": _("Remove this branch"), "holdout": _("Holdout %"),
            "holdoutHint": _("A control group that gets nothing: their run ends at the split."),
            "splitTotal": _("Branches and holdout: %(n)s%% (must be 100%%)"),
            "template": _("Email template"),
            "templateHint": _("Only templates with a saved version are offered."),
            "noTemplates": _("No template has a saved version yet: save one under Email templates first."),
            "field": _("Field"), "value": _("Value"), "empty": _("(empty)"), "yesValue": _("Yes"), "noValue": _("No"),
            "tag": _("Tag"), "stage": _("Stage"), "model": _("Scoring model"), "points": _("Points"),
            "pointsHint": _("Negative to subtract."), "list": _("List"), "message": _("Message"),
            "alertDefault": _("(the default: the contact reached this step of the journey)"),
            "alertHint": _("Sent to the contact's owner by email, like a hot-lead notice."),
            "webhook": _("Webhook"), "noWebhooks": _("No webhook yet: add one under Hand-off to sales."),
            "journey": _("Journey"), "enrollHint": _("Only enrolls while that journey is live, by its entry rule."),
            "exitHint": _("The contact leaves the journey here."), "goalName": _("Goal name"),
            "goalHint": _("Counts as a goal conversion; the run goes on to the next step."),
            "continueWith": _("Then go to"), "wayGoesTo": _("“%(way)s” goes to"),
            "endHere": _("(the end of the journey)"), "unknownType": _("This step can only be edited as YAML or JSON."),
            "edit": _("Edit"), "details": _("Details"), "done": _("Done"), "close": _("Close"), "ok": _("OK"),
            "cancel": _("Cancel"), "remove": _("Remove"), "deleteStep": _("Delete this step"),
            "moveUp": _("Move up"), "moveDown": _("Move down"), "addStep": _("Add a step here"),
            "goToStep": _("Go to a step…"), "goesTo": _("↪ Go to: %(step)s"),
            "goesToMissing": _("↪ Go to a missing step: %(step)s"), "unlink": _("End here instead"),
            "groupWait": _("Wait"), "groupBranch": _("Branch"), "groupAction": _("Act"),
            "confirmDropBranches": _("Deleting this step also deletes the %(n)s steps only reachable through its "
                                     "other ways. Delete them?"),
            "unconnected": _("Not connected"),
            "unconnectedHelp": _("No way from the trigger leads to these steps, so no contact reaches them. "
                                 "Choose one of them in “Then go to” of a step, or delete them."),
            "statEntered": _("entered"), "statEnteredHint": _("Times this step ran"),
            "statWaiting": _("waiting"), "statWaitingHint": _("Contacts waiting in this step now"),
            "statDue": _("due"), "statDueHint": _("Contacts due to run this step now"),
            "statSkipped": _("skipped"),
            "statSkippedHint": _("Runs where the step could not act (no consent, a deleted template, a refused value)"),
            "statsAt": _("Updated %(time)s"),
            "ifWords": _("If: %(words)s"), "everyone": _("every contact"), "noOne": _("no contact"),
            "or": _(" or "), "notWords": _("not (%(words)s)"), "inSegment": _("in the segment %(segment)s"),
            "neverWords": _("never: %(what)s"),
            "zoomIn": _("Zoom in"), "zoomOut": _("Zoom out"), "zoomFit": _("Fit"),
        },
    }
