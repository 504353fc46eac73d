"""The journey graph: a JSON document, checked before it is saved, with the path of every fault.

    {"trigger": {"type": "event", "event": "page", "where": [{"field": "path", "op": "contains",
                                                               "value": "/pricing"}]},
     "start": "wait1",
     "nodes": [{"id": "wait1", "type": "wait", "time_of_day": "10:00", "days": 1, "next": "mail"},
               {"id": "mail", "type": "send_email", "template": 4}]}

A node without "next" ends the journey. Branching nodes name two ways: "then"/"else" (condition,
and wait_event: the event came / the timeout passed) or "branches" (split). `check()` returns
the normalised graph or raises GraphError with every fault found, each with its path such as
`nodes[3].then` — the same style as segment filters (`all[1].where[0].op`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from kizuna.contacts.models import LifecycleStage
from kizuna.contacts.services import CONTACT_TEXT_FIELDS
from kizuna.segments import filters

MAX_NODES = 200
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
DURATION_UNITS = {"days": 3650, "hours": 24 * 3650, "minutes": 60 * 24 * 3650}
WAITS = {"wait", "wait_event"}
ACTIONS = {"send_email", "update_field", "add_tag", "remove_tag", "set_stage", "score", "add_to_list",
           "remove_from_list", "alert_owner", "webhook", "enroll", "exit", "goal"}
NODE_TYPES = WAITS | ACTIONS | {"condition", "split"}
TRIGGERS = {"segment", "event", "date", "manual", "schedule"}
# Plain contact fields an update_field step may set (custom.<key> too); the contact service
# validates the value when the step runs, exactly as for a form.
# (lifecycle_stage has its own step, which records the transition as the journey's).
UPDATABLE = set(CONTACT_TEXT_FIELDS) | {"prefecture", "industry", "company_size", "language", "owner_id"}


class GraphError(ValueError):
    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))

    @property
    def path(self) -> str:
        return self.errors[0][0]


@dataclass
class Refs:
    """What the graph may name, loaded once per check."""

    templates: set[int] = field(default_factory=set)  # with a current version and a sender
    segments: set[int] = field(default_factory=set)
    journeys: set[int] = field(default_factory=set)
    lists: set[int] = field(default_factory=set)
    models: set[int] = field(default_factory=set)
    webhooks: set[int] = field(default_factory=set)
    filter_ctx: filters.Context | None = None

    @classmethod
    def load(cls) -> Refs:
        from kizuna.contacts.models import ContactList
        from kizuna.handoff.models import Webhook
        from kizuna.journeys.models import Journey
        from kizuna.messaging.models import EmailTemplate

        ctx = filters.Context.load()
        return cls(
            templates=set(EmailTemplate.objects.filter(current__isnull=False).values_list("id", flat=True)),
            segments=set(ctx.segments), journeys=set(Journey.objects.values_list("id", flat=True)),
            lists=set(ContactList.objects.values_list("id", flat=True)), models=set(ctx.models),
            webhooks=set(Webhook.objects.values_list("id", flat=True)), filter_ctx=ctx,
        )


class _Checker:
    def __init__(self, refs: Refs, journey_id: int | None):
        self.refs, self.journey_id = refs, journey_id
        self.errors: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def ref(self, value: Any, known: set[int], path: str, what: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value not in known:
            self.fail(path, f"no {what} with id {value!r}")
            return None
        return value

    def tree(self, value: Any, path: str) -> dict | None:
        try:
            return filters.check(value, self.refs.filter_ctx or filters.Context.load())
        except filters.FilterError as exc:
            inner = "" if exc.path == "filter" else exc.path
            self.fail(f"{path}.{inner}" if inner else path, exc.message)
            return None

    def duration(self, value: Any, path: str) -> dict | None:
        if not isinstance(value, dict) or not value or set(value) - set(DURATION_UNITS):
            self.fail(path, "must be an object such as {\"days\": 3} with days, hours or minutes")
            return None
        out = {}
        for unit, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= DURATION_UNITS[unit]:
                self.fail(f"{path}.{unit}", f"must be a whole number from 0 to {DURATION_UNITS[unit]}")
                return None
            out[unit] = number
        if not any(out.values()):
            self.fail(path, "must be longer than zero")
            return None
        return out

    def time_of_day(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not TIME_RE.fullmatch(value):
            self.fail(path, "must be a time HH:MM")
            return None
        return value

    def whole(self, value: Any, path: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(path, f"must be a whole number from {low} to {high}")
            return None
        return value

    def text(self, value: Any, path: str, limit: int = 200, required: bool = True) -> str:
        if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
            self.fail(path, f"must be a text of at most {limit} characters" + (", not empty" if required else ""))
            return ""
        return value.strip()

    def event_spec(self, node: dict, path: str) -> dict | None:
        """An event name with property conditions, checked by the segment language's rules."""
        spec = {"event": node.get("event"), "where": node.get("where", [])}
        try:
            checked = filters._check_event(spec, "", "")
        except filters.FilterError as exc:
            self.fail(f"{path}.{exc.path}" if path else exc.path, exc.message)
            return None
        return {"event": checked["event"], "where": checked["where"]}

    # --- trigger ----------------------------------------------------------------------------

    def trigger(self, value: Any) -> dict:
        path = "trigger"
        if not isinstance(value, dict) or value.get("type") not in TRIGGERS:
            self.fail(f"{path}.type", f"must be one of {', '.join(sorted(TRIGGERS))}")
            return {"type": "manual"}
        kind = value["type"]
        self.only(value, {"type", "segment", "on", "event", "where", "field", "offset_days", "every", "day",
                          "at", "audience"}, path)
        if kind == "segment":
            sid = self.ref(value.get("segment"), self.refs.segments, f"{path}.segment", "segment")
            on = value.get("on", "entered")
            if on not in {"entered", "exited"}:
                self.fail(f"{path}.on", "must be entered or exited")
            return {"type": kind, "segment": sid, "on": on}
        if kind == "event":
            spec = self.event_spec(value, path) or {}
            return {"type": kind, **spec}
        if kind == "date":
            name = value.get("field")
            ctx = self.refs.filter_ctx
            ok = name in {"created_at", "last_activity_at"} or (
                isinstance(name, str) and name.startswith("custom.") and ctx is not None
                and ctx.custom.get(name[7:]) == "date")
            if not ok:
                self.fail(f"{path}.field", "must be created_at, last_activity_at or custom.<a date field>")
            offset = self.whole(value.get("offset_days", 0), f"{path}.offset_days", -3650, 3650)
            at = self.time_of_day(value.get("at", "09:00"), f"{path}.at")
            return {"type": kind, "field": name, "offset_days": offset, "at": at}
        if kind == "schedule":
            every = value.get("every")
            if every not in {"month", "week"}:
                self.fail(f"{path}.every", "must be month or week")
            day = self.whole(value.get("day", 1), f"{path}.day", *((1, 28) if every == "month" else (0, 6)))
            at = self.time_of_day(value.get("at", "10:00"), f"{path}.at")
            audience = self.tree(value.get("audience"), f"{path}.audience")
            return {"type": kind, "every": every, "day": day, "at": at, "audience": audience}
        return {"type": "manual"}

    def only(self, node: dict, allowed: set[str], path: str) -> None:
        for extra in sorted(set(node) - allowed):
            self.fail(f"{path}.{extra}", "is not allowed here")

    # --- nodes ------------------------------------------------------------------------------

    def node(self, node: Any, i: int) -> dict | None:
        path = f"nodes[{i}]"
        if not isinstance(node, dict):
            self.fail(path, "must be an object with id and type")
            return None
        nid = node.get("id")
        if not isinstance(nid, str) or not ID_RE.fullmatch(nid):
            self.fail(f"{path}.id", "must be 1 to 64 letters, digits, - or _")
        kind = node.get("type")
        if kind not in NODE_TYPES:
            self.fail(f"{path}.type", f"must be one of {', '.join(sorted(NODE_TYPES))}")
            return None
        out: dict[str, Any] = {"id": nid, "type": kind}
        if "label" in node:
            out["label"] = self.text(node["label"], f"{path}.label", required=False)
        links = {"condition": ("then", "else"), "wait_event": ("then", "else"), "split": (), "exit": ()}
        link_keys = links.get(kind, ("next",))
        for key in link_keys:
            if node.get(key) is not None:
                out[key] = node[key]
        getattr(self, f"node_{kind}")(node, out, path)
        self.only(node, set(out) | {"label"} | {k for k in link_keys if node.get(k) is None}, path)
        return out

    def node_wait(self, node: dict, out: dict, path: str) -> None:
        forms = [k for k in ("duration", "until", "time_of_day", "business_days") if k in node]
        if not forms or ("duration" in forms and len(forms) > 1) or ("until" in forms and len(forms) > 1):
            self.fail(path, "needs one of duration, until, time_of_day or business_days"
                            " (business_days may have a time_of_day)")
            return
        if "duration" in node:
            out["duration"] = self.duration(node["duration"], f"{path}.duration")
        if "until" in node:
            try:
                moment = dt.datetime.fromisoformat(node["until"])
                if moment.tzinfo is None:
                    raise ValueError
                out["until"] = moment.isoformat()
            except (TypeError, ValueError):
                self.fail(f"{path}.until", "must be a date and time with its offset, e.g. 2026-12-01T10:00:00+09:00")
        if "business_days" in node:
            out["business_days"] = self.whole(node["business_days"], f"{path}.business_days", 1, 365)
        if "time_of_day" in node:
            out["time_of_day"] = self.time_of_day(node["time_of_day"], f"{path}.time_of_day")
            if "business_days" not in node:
                out["days"] = self.whole(node.get("days", 0), f"{path}.days", 0, 365)

    def node_wait_event(self, node: dict, out: dict, path: str) -> None:
        out.update(self.event_spec(node, path) or {})
        out["timeout"] = self.duration(node.get("timeout"), f"{path}.timeout")

    def node_condition(self, node: dict, out: dict, path: str) -> None:
        out["if"] = self.tree(node.get("if"), f"{path}.if")

    def node_split(self, node: dict, out: dict, path: str) -> None:
        branches = node.get("branches")
        if not isinstance(branches, list) or not branches:
            self.fail(f"{path}.branches", "must be a list of {\"percent\": N, \"next\": id}")
            return
        out["branches"] = []
        for j, branch in enumerate(branches):
            here = f"{path}.branches[{j}]"
            if not isinstance(branch, dict):
                self.fail(here, "must be an object")
                continue
            self.only(branch, {"percent", "next", "label"}, here)
            percent = self.whole(branch.get("percent"), f"{here}.percent", 1, 100)
            out["branches"].append({"percent": percent, "next": branch.get("next"),
                                    "label": str(branch.get("label", ""))[:100]})
        out["holdout"] = self.whole(node.get("holdout", 0), f"{path}.holdout", 0, 99)
        total = sum(b["percent"] or 0 for b in out["branches"]) + (out["holdout"] or 0)
        if total != 100:
            self.fail(f"{path}.branches", f"percentages and holdout must add up to 100, not {total}")

    def node_send_email(self, node: dict, out: dict, path: str) -> None:
        out["template"] = self.ref(node.get("template"), self.refs.templates, f"{path}.template",
                                   "email template (with a saved version)")

    def node_update_field(self, node: dict, out: dict, path: str) -> None:
        name = node.get("field")
        ctx = self.refs.filter_ctx
        if not (name in UPDATABLE or (isinstance(name, str) and name.startswith("custom.") and ctx is not None
                                      and name[7:] in ctx.custom)):
            self.fail(f"{path}.field", f"must be one of {', '.join(sorted(UPDATABLE))} or custom.<field>")
        if "value" not in node or not isinstance(node["value"], (str, int, float, bool, list, type(None))):
            self.fail(f"{path}.value", "is required (text, number, yes/no, list or null)")
        out["field"], out["value"] = name, node.get("value")

    def node_add_tag(self, node: dict, out: dict, path: str) -> None:
        out["tag"] = self.text(node.get("tag"), f"{path}.tag", 100)

    node_remove_tag = node_add_tag

    def node_set_stage(self, node: dict, out: dict, path: str) -> None:
        if node.get("stage") not in LifecycleStage.values:
            self.fail(f"{path}.stage", f"must be one of {', '.join(LifecycleStage.values)}")
        out["stage"] = node.get("stage")

    def node_score(self, node: dict, out: dict, path: str) -> None:
        out["model"] = self.ref(node.get("model"), self.refs.models, f"{path}.model", "scoring model")
        points = self.whole(node.get("points"), f"{path}.points", -1000, 1000)
        if points == 0:
            self.fail(f"{path}.points", "must not be 0")
        out["points"] = points

    def node_add_to_list(self, node: dict, out: dict, path: str) -> None:
        out["list"] = self.ref(node.get("list"), self.refs.lists, f"{path}.list", "list")

    node_remove_from_list = node_add_to_list

    def node_alert_owner(self, node: dict, out: dict, path: str) -> None:
        out["message"] = self.text(node.get("message", ""), f"{path}.message", 1000, required=False)

    def node_webhook(self, node: dict, out: dict, path: str) -> None:
        out["webhook"] = self.ref(node.get("webhook"), self.refs.webhooks, f"{path}.webhook", "webhook")

    def node_enroll(self, node: dict, out: dict, path: str) -> None:
        target = self.ref(node.get("journey"), self.refs.journeys, f"{path}.journey", "journey")
        if target is not None and target == self.journey_id:
            self.fail(f"{path}.journey", "a journey cannot enroll into itself")
        out["journey"] = target

    def node_exit(self, node: dict, out: dict, path: str) -> None:
        return None

    def node_goal(self, node: dict, out: dict, path: str) -> None:
        out["name"] = self.text(node.get("name", ""), f"{path}.name", 100, required=False)


def successors(node: dict) -> list[tuple[str, str]]:
    """(key, target id) of every way out of a node."""
    out = [(k, node[k]) for k in ("next", "then", "else") if node.get(k) is not None]
    out += [(f"branches[{j}].next", b["next"]) for j, b in enumerate(node.get("branches", []))
            if b.get("next") is not None]
    return out


def check(graph: Any, refs: Refs | None = None, *, journey_id: int | None = None) -> dict:
    """The normalised graph, or GraphError with every fault and its path."""
    checker = _Checker(refs or Refs.load(), journey_id)
    if not isinstance(graph, dict):
        raise GraphError([("graph", "must be an object with trigger, start and nodes")])
    checker.only(graph, {"trigger", "start", "nodes"}, "graph")
    trigger = checker.trigger(graph.get("trigger"))
    nodes_in = graph.get("nodes")
    if not isinstance(nodes_in, list) or not nodes_in:
        checker.fail("nodes", "must be a non-empty list of steps")
        raise GraphError(checker.errors)
    if len(nodes_in) > MAX_NODES:
        checker.fail("nodes", f"a journey may have at most {MAX_NODES} steps")
    nodes = [checker.node(n, i) for i, n in enumerate(nodes_in)]
    index: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node and isinstance(node["id"], str):
            if node["id"] in index:
                checker.fail(f"nodes[{i}].id", f"{node['id']!r} is used by nodes[{index[node['id']]}] already")
            else:
                index[node["id"]] = i
    start = graph.get("start", nodes[0]["id"] if nodes[0] else None)
    if start not in index:
        checker.fail("start", f"no step with id {start!r}")
    for i, node in enumerate(nodes):
        if node is None:
            continue
        for key, target in successors(node):
            if target not in index:
                checker.fail(f"nodes[{i}].{key}", f"no step with id {target!r}")
            elif target == node["id"] and node["type"] not in WAITS:
                checker.fail(f"nodes[{i}].{key}", "a step cannot lead to itself without a wait")
    if not checker.errors:
        _refuse_loops_without_wait(nodes, index, checker)
    if checker.errors:
        raise GraphError(checker.errors)
    return {"trigger": trigger, "start": start, "nodes": nodes}


def _refuse_loops_without_wait(nodes: list[dict], index: dict[str, int], checker: _Checker) -> None:
    """A cycle must pass through a wait: otherwise one enrollment would run steps forever."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(index, white)

    def visit(nid: str) -> None:
        color[nid] = grey
        node = nodes[index[nid]]
        if node["type"] not in WAITS:
            for key, target in successors(node):
                if color[target] == grey:
                    checker.fail(f"nodes[{index[nid]}].{key}",
                                 f"loops back to {target!r} without a wait in between")
                elif color[target] == white:
                    visit(target)
        color[nid] = black

    for nid in index:
        if color[nid] == white:
            visit(nid)
