"""The segment filter language: a JSON tree, checked, compiled to SQL, and evaluated in Python.

A node is one of

    {"all": [node, ...]}   {"any": [node, ...]}   {"not": node}
    {"field": "industry", "op": "in", "value": ["manufacturing"]}        profile, company, custom,
                                                                          tag, list, score, consent
    {"event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}],
     "count": {"op": "gte", "value": 2}, "within_days": 30}                behaviour
    {"email": "clicked", "template": 12, "within_days": 30}               email activity (human)
    {"segment": 7}                                                         membership of another

`check()` returns the normalised tree or raises FilterError naming the path of the fault
(e.g. `all[1].where[0].op`). `compile_queryset()` compiles to a Django Q over Contact — EXISTS
subqueries that run on SQLite and PostgreSQL alike ("at least N" stops at the N-th match). For
the incremental path, `match_segments()` evaluates several filters for a few contacts in one
query whose SQL is compiled once and reused (prepared on PostgreSQL). `evaluate()` is the plain
Python reference the SQL is tested against. Text comparisons `contains`/`starts_with`/`ends_with`
ignore the case of ASCII letters (what LIKE does on both databases); `equals` is exact.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import weakref
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.db import connection
from django.db.models import (
    BigIntegerField,
    BooleanField,
    DateTimeField,
    Exists,
    Expression,
    ExpressionWrapper,
    FloatField,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.utils import timezone

from kizuna.contacts.models import CompanySize, Contact, CustomField, LifecycleStage, Source
from kizuna.contacts.reference import PREFECTURE_CHOICES, Industry, Region

MAX_DEPTH = 8
MAX_NODES = 100


class FilterError(ValueError):
    def __init__(self, path: str, message: str):
        super().__init__(f"{path or 'filter'}: {message}")
        self.path, self.message = path or "filter", message


# --- what can be filtered on ----------------------------------------------------------------

TEXT, CHOICE, DATE, NUMBER, BOOL, OWNER = "text", "choice", "date", "number", "bool", "owner"
OPS = {
    TEXT: {"equals", "not_equals", "contains", "not_contains", "starts_with", "ends_with", "is_set", "is_not_set"},
    CHOICE: {"in", "not_in", "is_set", "is_not_set"},
    DATE: {"before", "after", "in_last_days", "not_in_last_days", "is_set", "is_not_set"},
    NUMBER: {"eq", "gte", "lte", "is_set", "is_not_set"},
    BOOL: {"is_true", "is_false"},
    OWNER: {"in", "not_in", "is_set", "is_not_set"},
}
VALUELESS = {"is_set", "is_not_set", "is_true", "is_false"}


def _values(choices) -> set[str]:
    return {str(v) for v, _label in choices}


CONTACT_FIELDS: dict[str, tuple[str, set[str] | None]] = {
    "email": (TEXT, None), "family_name": (TEXT, None), "given_name": (TEXT, None),
    "company_name": (TEXT, None), "job_title": (TEXT, None), "department": (TEXT, None), "phone": (TEXT, None),
    "prefecture": (CHOICE, _values(PREFECTURE_CHOICES)), "region": (CHOICE, _values(Region.choices)),
    "industry": (CHOICE, _values(Industry.choices)), "company_size": (CHOICE, _values(CompanySize.choices)),
    "lifecycle_stage": (CHOICE, _values(LifecycleStage.choices)), "source": (CHOICE, _values(Source.choices)),
    "language": (CHOICE, {"ja", "en"}),
    "created_at": (DATE, None), "updated_at": (DATE, None), "last_activity_at": (DATE, None),
    "do_not_contact": (BOOL, None), "owner": (OWNER, None),
}
COMPANY_FIELDS: dict[str, tuple[str, set[str] | None]] = {
    "company.name": (TEXT, None), "company.domain": (TEXT, None),
    "company.industry": (CHOICE, _values(Industry.choices)),
    "company.company_size": (CHOICE, _values(CompanySize.choices)),
    "company.prefecture": (CHOICE, _values(PREFECTURE_CHOICES)), "company.employees": (NUMBER, None),
}
CUSTOM_KINDS = {
    CustomField.Type.TEXT: TEXT, CustomField.Type.NUMBER: NUMBER, CustomField.Type.DATE: DATE,
    CustomField.Type.CHOICE: CHOICE, CustomField.Type.BOOLEAN: BOOL,
}
EVENT_FIELDS = {"path", "url", "title", "referrer"}
EVENT_OPS = {"equals", "contains", "starts_with", "ends_with"}
COUNT_OPS = {"gte", "lte", "eq"}
EMAIL_ACTIONS = {"sent", "opened", "clicked"}
GRADES = "ABCD"
CONSENT_STATES = {"opted_in", "opted_out", "unknown"}


@dataclass
class Context:
    """What checking needs to know beyond the tree: custom fields, scoring models, topics,
    segments (with their filters, for cycles). Loaded once per check."""

    custom: dict[str, str] = field(default_factory=dict)  # key → field type
    custom_choices: dict[str, set[str]] = field(default_factory=dict)
    models: dict[int, float] = field(default_factory=dict)  # scoring model id → half-life days
    topics: set[str] = field(default_factory=set)
    segments: dict[int, Any] = field(default_factory=dict)  # id → its (checked) filter

    @classmethod
    def load(cls, exclude_segment: int | None = None) -> Context:
        from kizuna.contacts.models import SubscriptionTopic
        from kizuna.scoring.models import ScoringModel
        from kizuna.segments.models import Segment

        ctx = cls()
        for f in CustomField.objects.filter(target=CustomField.Target.CONTACT):
            ctx.custom[f.key] = f.field_type
            ctx.custom_choices[f.key] = {str(c) for c in f.choices or []}
        ctx.models = dict(ScoringModel.objects.values_list("id", "half_life_days"))
        ctx.topics = set(SubscriptionTopic.objects.values_list("key", flat=True))
        ctx.segments = {pk: f for pk, f in Segment.objects.exclude(pk=exclude_segment).values_list("id", "filter")}
        return ctx


# --- checking -------------------------------------------------------------------------------

def check(tree: Any, ctx: Context, *, segment_id: int | None = None) -> dict:
    """The normalised tree, or FilterError at the first fault found (with its path)."""
    counter = [0]
    node = _check(tree, ctx, "", 0, counter)
    refs = references(node)
    if segment_id is not None:
        _refuse_cycles(segment_id, refs, ctx)
    return node


def _check(node: Any, ctx: Context, path: str, depth: int, counter: list[int]) -> dict:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise FilterError(path, f"a filter may have at most {MAX_NODES} conditions")
    if depth > MAX_DEPTH:
        raise FilterError(path, f"groups may nest at most {MAX_DEPTH} deep")
    if not isinstance(node, dict) or not node:
        raise FilterError(path, "must be an object such as {\"all\": [...]} or {\"field\": ...}")
    at = (path + ".") if path else ""
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        children = node[key]
        if not isinstance(children, list):
            raise FilterError(at + key, "must be a list of conditions")
        _only(node, {key}, path)
        return {key: [_check(c, ctx, f"{at}{key}[{i}]", depth + 1, counter) for i, c in enumerate(children)]}
    if "not" in node:
        _only(node, {"not"}, path)
        return {"not": _check(node["not"], ctx, at + "not", depth + 1, counter)}
    if "field" in node:
        return _check_field(node, ctx, path, at)
    if "event" in node:
        return _check_event(node, path, at)
    if "email" in node:
        return _check_email(node, path, at)
    if "segment" in node:
        _only(node, {"segment"}, path)
        sid = node["segment"]
        if not isinstance(sid, int) or isinstance(sid, bool) or sid not in ctx.segments:
            raise FilterError(at + "segment", f"no segment with id {sid!r}")
        return {"segment": sid}
    raise FilterError(path, "needs one of all, any, not, field, event, email, segment")


def _only(node: dict, allowed: set[str], path: str) -> None:
    extra = sorted(set(node) - allowed)
    if extra:
        raise FilterError((path + "." if path else "") + extra[0], "is not allowed here")


def field_kind(name: Any, ctx: Context, at: str) -> tuple[str, set[str] | None]:
    if not isinstance(name, str):
        raise FilterError(at + "field", "must be a field name")
    if name in CONTACT_FIELDS:
        return CONTACT_FIELDS[name]
    if name in COMPANY_FIELDS:
        return COMPANY_FIELDS[name]
    if name.startswith("custom."):
        key = name[7:]
        if key not in ctx.custom:
            raise FilterError(at + "field", f"no custom field {key!r}")
        if ctx.custom[key] == CustomField.Type.MULTI_CHOICE:
            return "multi", ctx.custom_choices[key]
        return CUSTOM_KINDS[ctx.custom[key]], ctx.custom_choices.get(key) or None
    if name in {"tag", "list"}:
        return name, None
    if name in {"score.engagement", "score.fit", "score.grade"}:
        return name, None
    if name.startswith("consent."):
        if name[8:] not in ctx.topics:
            raise FilterError(at + "field", f"no subscription topic {name[8:]!r}")
        return "consent", CONSENT_STATES
    raise FilterError(at + "field", f"unknown field {name!r}")


SPECIAL_OPS = {
    "multi": {"has_any", "has_all", "is_set", "is_not_set"},
    "tag": {"has", "has_not"}, "list": {"in", "not_in"},
    "score.engagement": {"gte", "lte"}, "score.fit": {"gte", "lte"}, "score.grade": {"at_least", "in"},
    "consent": {"in", "not_in"},
}


def _check_field(node: dict, ctx: Context, path: str, at: str) -> dict:
    _only(node, {"field", "op", "value", "model"}, path)
    name = node["field"]
    kind, choices = field_kind(name, ctx, at)
    ops = SPECIAL_OPS.get(kind) or OPS[kind]
    op = node.get("op")
    if op not in ops:
        raise FilterError(at + "op", f"must be one of {', '.join(sorted(ops))} for {name}")
    out: dict[str, Any] = {"field": name, "op": op}
    if name.startswith("score."):
        model = node.get("model")
        if model not in ctx.models:
            raise FilterError(at + "model", f"no scoring model with id {model!r}")
        out["model"] = model
    elif "model" in node:
        raise FilterError(at + "model", "is only for score fields")
    if op in VALUELESS:
        if node.get("value") not in (None, "", []):
            raise FilterError(at + "value", f"{op} takes no value")
        return out
    if "value" not in node:
        raise FilterError(at + "value", "is required")
    out["value"] = _check_value(kind, op, node["value"], choices, at + "value")
    return out


def _check_value(kind: str, op: str, value: Any, choices: set[str] | None, at: str) -> Any:
    if kind in {CHOICE, "multi", "consent"} or (kind == "score.grade" and op == "in"):
        allowed = set(GRADES) if kind == "score.grade" else choices
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise FilterError(at, "must be a non-empty list of values")
        bad = [v for v in value if allowed is not None and v not in allowed]
        if bad:
            raise FilterError(at, f"not a possible value: {', '.join(bad)}")
        return sorted(set(value))
    if kind == "score.grade":
        if value not in GRADES or not isinstance(value, str) or len(value) != 1:
            raise FilterError(at, "must be one of A, B, C, D")
        return value
    if kind in {TEXT, "tag"}:
        if not isinstance(value, str) or not value or len(value) > 500:
            raise FilterError(at, "must be a non-empty text of at most 500 characters")
        if "\x00" in value:  # PostgreSQL cannot compare it: a 500 rather than an answer
            raise FilterError(at, "must not contain a NUL character (\\u0000)")
        return value
    if kind in {OWNER, "list"}:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise FilterError(at, "must be an id or a list of ids")
        return sorted(set(items)) if kind == OWNER else items[0]
    if kind == DATE:
        if op in {"in_last_days", "not_in_last_days"}:
            return _positive_int(value, at, 36500)
        try:
            return dt.date.fromisoformat(value).isoformat()
        except (TypeError, ValueError):
            raise FilterError(at, "must be a date YYYY-MM-DD") from None
    if kind in {NUMBER, "score.fit", "score.engagement"}:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise FilterError(at, "must be a number")
        if kind == "score.engagement" and value <= 0:
            raise FilterError(at, "must be above 0 (every contact has at least 0)")
        return value
    raise FilterError(at, "takes no value")  # pragma: no cover - every kind is handled above


def _positive_int(value: Any, at: str, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise FilterError(at, f"must be a whole number from 1 to {limit}")
    return value


def _check_count(node: dict, at: str) -> dict:
    count = node.get("count", {"op": "gte", "value": 1})
    if not isinstance(count, dict) or count.get("op") not in COUNT_OPS:
        raise FilterError(at + "count", "must be {\"op\": gte|lte|eq, \"value\": N}")
    value = count.get("value")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100000:
        raise FilterError(at + "count.value", "must be a whole number from 0 to 100000")
    return {"op": count["op"], "value": value}


def _check_window(node: dict, at: str) -> int | None:
    days = node.get("within_days")
    return None if days is None else _positive_int(days, at + "within_days", 3650)


def _check_event(node: dict, path: str, at: str) -> dict:
    _only(node, {"event", "where", "count", "within_days"}, path)
    name = node["event"]
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or "\x00" in name:
        raise FilterError(at + "event", "must be page or a tracked event's name")
    where = node.get("where", [])
    if not isinstance(where, list):
        raise FilterError(at + "where", "must be a list of conditions")
    checked = []
    for i, cond in enumerate(where):
        here = f"{at}where[{i}]."
        if not isinstance(cond, dict):
            raise FilterError(f"{at}where[{i}]", "must be an object")
        _only(cond, {"field", "op", "value"}, f"{at}where[{i}]")
        fname = cond.get("field")
        if not isinstance(fname, str) or not (fname in EVENT_FIELDS or re.fullmatch(r"properties\.[\w-]{1,64}", fname)):
            raise FilterError(here + "field", "must be path, url, title, referrer or properties.<name>")
        if cond.get("op") not in EVENT_OPS:
            raise FilterError(here + "op", f"must be one of {', '.join(sorted(EVENT_OPS))}")
        value = cond.get("value")
        if not isinstance(value, str) or not value or len(value) > 500:
            raise FilterError(here + "value", "must be a non-empty text of at most 500 characters")
        if "\x00" in value:
            raise FilterError(here + "value", "must not contain a NUL character (\\u0000)")
        checked.append({"field": fname, "op": cond["op"], "value": value})
    return {"event": name.strip(), "where": checked, "count": _check_count(node, at),
            "within_days": _check_window(node, at)}


def _check_email(node: dict, path: str, at: str) -> dict:
    _only(node, {"email", "template", "count", "within_days"}, path)
    if node["email"] not in EMAIL_ACTIONS:
        raise FilterError(at + "email", "must be sent, opened or clicked")
    template = node.get("template")
    if template is not None and (isinstance(template, bool) or not isinstance(template, int)):
        raise FilterError(at + "template", "must be a template id or null for any")
    return {"email": node["email"], "template": template, "count": _check_count(node, at),
            "within_days": _check_window(node, at)}


def references(node: dict) -> set[int]:
    """Segments this filter names, directly."""
    if "all" in node or "any" in node:
        return set().union(*(references(c) for c in node.get("all", node.get("any", [])))) if (
            node.get("all") or node.get("any")) else set()
    if "not" in node:
        return references(node["not"])
    return {node["segment"]} if "segment" in node else set()


def _refuse_cycles(segment_id: int, refs: set[int], ctx: Context) -> None:
    seen: set[int] = set()
    stack = [(r, [r]) for r in refs]
    while stack:
        current, trail = stack.pop()
        if current == segment_id:
            raise FilterError("segment", "refers to itself through " + " → ".join(f"#{t}" for t in trail))
        if current in seen:
            continue
        seen.add(current)
        other = ctx.segments.get(current)
        if isinstance(other, dict):
            try:
                stack.extend((r, [*trail, r]) for r in references(other))
            except (KeyError, TypeError, AttributeError):
                continue


def triggers(node: dict) -> dict:
    """What can change this filter's result: {"fields": set, "events": set, "email": bool,
    "segments": set, "windowed": bool} — so an event or an edit re-evaluates only the segments
    it can affect, and windows and relative dates are re-checked as time passes."""
    out = {"fields": set(), "events": set(), "email": False, "segments": set(), "windowed": False}

    def walk(n: dict) -> None:
        if "all" in n or "any" in n:
            for c in n.get("all", n.get("any", [])):
                walk(c)
        elif "not" in n:
            walk(n["not"])
        elif "field" in n:
            out["fields"].add(n["field"].split(".")[0] if n["field"].startswith(("company.", "custom.", "score.",
                                                                                  "consent.")) else n["field"])
            if n["op"] in {"in_last_days", "not_in_last_days"} or n["field"] == "score.engagement":
                out["windowed"] = True  # relative dates move; engagement decays
        elif "event" in n:
            out["events"].add(n["event"])
            out["windowed"] |= n["within_days"] is not None
        elif "email" in n:
            out["email"] = True
            out["windowed"] |= n["within_days"] is not None
        elif "segment" in n:
            out["segments"].add(n["segment"])

    walk(node)
    return {**out, "fields": sorted(out["fields"]), "events": sorted(out["events"]),
            "segments": sorted(out["segments"])}


# --- compiling to SQL -----------------------------------------------------------------------

def _since(now: dt.datetime, days: int) -> dt.datetime:
    return now - dt.timedelta(days=days)


def _day_start(value: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(value), dt.time.min, tzinfo=dt.UTC)


def _text_q(lookup: str, op: str, value: str) -> Q:
    if op == "equals":
        return Q(**{lookup: value})
    if op == "not_equals":
        return ~Q(**{lookup: value}) | Q(**{f"{lookup}__isnull": True})
    if op == "contains":
        return Q(**{f"{lookup}__icontains": value})
    if op == "not_contains":
        return ~Q(**{f"{lookup}__icontains": value}) | Q(**{f"{lookup}__isnull": True})
    if op == "starts_with":
        return Q(**{f"{lookup}__istartswith": value})
    return Q(**{f"{lookup}__iendswith": value})


def _set_q(lookup: str, empty_text: bool) -> Q:
    q = Q(**{f"{lookup}__isnull": False})
    return q & ~Q(**{lookup: ""}) if empty_text else q


class Slot(Expression):
    """A parameter filled in when the SQL runs: a contact id, or a moment derived from now. With
    them a set of filters is compiled once and its SQL reused for every event (see match_segments):
    building and compiling the ORM query costs far more than running it for one contact."""

    def __init__(self, kind: str, arg: Any, output_field=None):
        super().__init__(output_field=output_field or FloatField())
        self.kind, self.arg = kind, arg

    def as_sql(self, compiler, connection):
        return "%s", [self]

    @property
    def pg_type(self) -> str:
        return {"id": "bigint", "since": "timestamptz"}.get(self.kind, "float8")

    def value(self, now: dt.datetime, ids: Sequence[int], connection) -> Any:
        if self.kind == "id":
            return ids[self.arg]
        if self.kind == "since":
            return connection.ops.adapt_datetimefield_value(_since(now, self.arg))
        return now.timestamp()  # "epoch", for the engagement key (Compiler.score_q)


class Compiler:
    """Turns a checked tree into a Q over Contact.

    `symbolic`: moments derived from now become Slots, so the SQL does not depend on now;
    `reusable` turns False when a condition cannot be expressed that way (custom dates)."""

    def __init__(self, now: dt.datetime, models: dict[int, float] | None = None, *, symbolic: bool = False):
        self.now = now
        self.models = models or {}
        self.symbolic = symbolic
        self.reusable = True

    def since(self, days: int) -> Any:
        return Slot("since", days, DateTimeField()) if self.symbolic else _since(self.now, days)

    def queryset(self, tree: dict, base=None):
        q = self.q(tree)
        qs = base if base is not None else Contact.objects.all()
        return qs.filter(q)

    def q(self, node: dict) -> Q:
        if "all" in node:
            q = Q(pk__isnull=False)  # an empty "all" matches everyone, and its "not" no one
            for child in node["all"]:
                q &= self.q(child)
            return q
        if "any" in node:
            if not node["any"]:
                return Q(pk__isnull=True)  # an empty "any" matches no one
            q = self.q(node["any"][0])
            for child in node["any"][1:]:
                q |= self.q(child)
            return q
        if "not" in node:
            return ~self.q(node["not"])
        if "field" in node:
            return self.field_q(node)
        if "event" in node:
            return self.counted(self.event_rows(node), node["count"])
        if "email" in node:
            return self.counted(self.email_rows(node), node["count"])
        from kizuna.segments.models import Membership

        return Q(Exists(Membership.objects.filter(segment_id=node["segment"], contact_id=OuterRef("pk"))))

    def counted(self, rows, count: dict) -> Q:
        """count(rows) compared with N without counting every row: "at least N" is EXISTS with
        OFFSET N-1, so a contact's scan stops at its N-th match, plus a plain EXISTS that
        PostgreSQL turns into a semi-join, so a filter on behaviour alone reads the window once
        and probes only the contacts with a match instead of every contact."""
        op, n = count["op"], count["value"]

        def at_least(k: int) -> Q:
            if k <= 0:
                return Q(pk__isnull=False)
            q = Q(Exists(rows))
            return q if k == 1 else q & Q(Exists(rows[k - 1:k]))

        if op == "gte":
            return at_least(n)
        fewer_than_next = ~Q(Exists(rows[n:n + 1]))
        return fewer_than_next if op == "lte" else at_least(n) & fewer_than_next

    def event_rows(self, node: dict):
        from kizuna.events.models import Event

        rows = Event.objects.filter(contact_id=OuterRef("pk"), bot="")
        rows = rows.filter(type="page") if node["event"] == "page" else rows.filter(type__in=["track", "screen"],
                                                                                      name=node["event"])
        if node["within_days"]:
            rows = rows.filter(occurred_at__gte=self.since(node["within_days"]))
        for cond in node["where"]:
            lookup = cond["field"].replace(".", "__")
            rows = rows.filter(_text_q(lookup, cond["op"], cond["value"]))
        return rows.order_by().values("pk")

    def email_rows(self, node: dict):
        from kizuna.messaging.models import Message

        column = {"sent": "sent_at", "opened": "opened_at", "clicked": "clicked_at"}[node["email"]]
        rows = Message.objects.filter(contact_id=OuterRef("pk"), **{f"{column}__isnull": False})
        if node["template"] is not None:
            rows = rows.filter(version__template_id=node["template"])
        if node["within_days"]:
            rows = rows.filter(**{f"{column}__gte": self.since(node["within_days"])})
        return rows.order_by().values("pk")

    def field_q(self, node: dict) -> Q:
        name, op, value = node["field"], node["op"], node.get("value")
        if name == "tag":
            has = Q(Exists(Contact.tags.through.objects.filter(contact_id=OuterRef("pk"), tag__name=value)))
            return has if op == "has" else ~has
        if name == "list":
            from kizuna.contacts.models import ListMembership

            member = Q(Exists(ListMembership.objects.filter(contact_id=OuterRef("pk"), contact_list_id=value)))
            return member if op == "in" else ~member
        if name.startswith("score."):
            return self.score_q(node)
        if name.startswith("consent."):
            from kizuna.contacts.models import Consent

            wanted = set(value)
            rows = Consent.objects.filter(contact_id=OuterRef("pk"), topic__key=name[8:])
            q = Q(Exists(rows.filter(status__in=sorted(wanted - {"unknown"}))))
            if "unknown" in wanted:  # no row at all counts as unknown
                q |= ~Q(Exists(rows.exclude(status="unknown")))
            return q if op == "in" else ~q
        if name.startswith("custom."):
            return self.custom_q(name[7:], op, value)
        lookup = "company__" + name[8:] if name.startswith("company.") else name
        kind = (CONTACT_FIELDS.get(name) or COMPANY_FIELDS[name])[0]
        return self.typed_q(lookup, kind, op, value)

    def typed_q(self, lookup: str, kind: str, op: str, value: Any) -> Q:
        if op == "is_set":
            return _set_q(lookup, kind in {TEXT, CHOICE})
        if op == "is_not_set":
            return ~_set_q(lookup, kind in {TEXT, CHOICE})
        if kind == TEXT:
            return _text_q(lookup, op, value)
        if kind in {CHOICE, OWNER}:
            q = Q(**{f"{lookup}__in": value})
            return q if op == "in" else (~q | Q(**{f"{lookup}__isnull": True}))
        if kind == BOOL:
            return Q(**{lookup: op == "is_true"})
        if kind == NUMBER:
            return Q(**{f"{lookup}__{ {'eq': 'exact', 'gte': 'gte', 'lte': 'lte'}[op] }": value})
        # DATE
        if op == "before":
            return Q(**{f"{lookup}__lt": _day_start(value)})
        if op == "after":
            return Q(**{f"{lookup}__gte": _day_start(value) + dt.timedelta(days=1)})
        since = self.since(value)
        return Q(**{f"{lookup}__gte": since}) if op == "in_last_days" else (
            Q(**{f"{lookup}__lt": since}) | Q(**{f"{lookup}__isnull": True}))

    def custom_q(self, key: str, op: str, value: Any) -> Q:
        """Custom fields live in JSON: every test is guarded by has_key, so it is never NULL and
        its "not" is the plain opposite, as in the reference."""
        lookup = f"custom__{key}"
        has = Q(custom__has_key=key)
        if op in {"is_set", "is_not_set"}:
            return has if op == "is_set" else ~has
        if op in {"has_any", "has_all"}:
            parts = [self._json_member(key, choice) for choice in value]
            q = parts[0]
            for part in parts[1:]:
                q = (q | part) if op == "has_any" else (q & part)
            return has & q
        if op in {"is_true", "is_false"}:
            return has & Q(**{lookup: op == "is_true"})
        if op in {"in", "not_in"}:
            q = has & Q(**{f"{lookup}__in": value})
            return q if op == "in" else ~q
        if op in {"eq", "gte", "lte"}:
            return has & Q(**{f"{lookup}__{ {'eq': 'exact', 'gte': 'gte', 'lte': 'lte'}[op] }": value})
        if op in {"before", "after"}:  # dates are stored as YYYY-MM-DD text: they sort as text
            return has & Q(**{f"{lookup}__lt" if op == "before" else f"{lookup}__gt": value})
        if op in {"in_last_days", "not_in_last_days"}:
            self.reusable = False  # compared as text inside JSON: not a Slot
            q = has & Q(**{f"{lookup}__gte": _since(self.now, value).date().isoformat()})
            return q if op == "in_last_days" else ~q
        if op in {"not_equals", "not_contains"}:
            return ~(has & _text_q(lookup, op[4:], value))
        return has & _text_q(lookup, op, value)

    @staticmethod
    def _json_member(key: str, choice: str) -> Q:
        from django.db import connection
        from django.db.models import BooleanField
        from django.db.models.expressions import RawSQL

        if connection.vendor == "sqlite":
            # Only the table name is SQL text; the key path and the choice are parameters.
            return Q(RawSQL(  # noqa: S611
                f"EXISTS (SELECT 1 FROM json_each({Contact._meta.db_table}.custom, %s) WHERE value = %s)",
                (f"$.{key}", choice), output_field=BooleanField()))
        return Q(**{f"custom__{key}__contains": [choice]})

    def score_q(self, node: dict) -> Q:
        from kizuna.scoring.models import ContactScore

        rows = ContactScore.objects.filter(contact_id=OuterRef("pk"), model_id=node["model"])
        field, op, value = node["field"], node["op"], node["value"]
        if field == "score.engagement":
            # current engagement ≥ v  ⟺  rank_key ≥ log2(v) + now / half-life (see scoring.engine)
            if self.symbolic:  # the same arithmetic in SQL, the half-life read where it is kept
                from kizuna.scoring.models import ScoringModel

                half_life = Subquery(ScoringModel.objects.filter(pk=node["model"]).values("half_life_days")[:1])
                key = ExpressionWrapper(Value(math.log2(value)) + Slot("epoch", None) / (half_life * Value(86400.0)),
                                        output_field=FloatField())
            else:
                key = math.log2(value) + self.now.timestamp() / (self.models[node["model"]] * 86400)
            if op == "gte":
                return Q(Exists(rows.filter(rank_key__gte=key)))
            return ~Q(Exists(rows.filter(rank_key__gt=key)))
        if field == "score.fit":
            if op == "gte":
                return Q(Exists(rows.filter(fit__gte=value))) if value > 0 else ~Q(Exists(rows.filter(fit__lt=value)))
            return ~Q(Exists(rows.filter(fit__gt=value))) if value >= 0 else Q(Exists(rows.filter(fit__lte=value)))
        grades = GRADES[: GRADES.index(value) + 1] if op == "at_least" else "".join(value)
        q = Q(Exists(rows.filter(grade__in=list(grades))))
        return q | ~Q(Exists(rows)) if "D" in grades else q  # no score row yet: grade D


def compile_queryset(tree: dict, now: dt.datetime, models: dict[int, float], base=None):
    return Compiler(now, models).queryset(tree, base)


def evaluate_many(trees: Mapping[Hashable, dict], now: dt.datetime, models: dict[int, float],
                  base) -> dict[Hashable, set[int]]:
    """Which contacts of `base` match each tree, in one query (one boolean column per tree): an
    event re-evaluates every segment it can touch with one round trip instead of one per segment.
    A NULL column counts as no match, as a NULL condition does in WHERE."""
    compiler = Compiler(now, models)
    columns = {f"_match_{n}": ExpressionWrapper(compiler.q(tree), output_field=BooleanField())
               for n, tree in enumerate(trees.values())}
    return _collect(trees, base.annotate(**columns).order_by().values_list("pk", *columns))


def _collect(trees: Mapping[Hashable, dict], rows) -> dict[Hashable, set[int]]:
    out: dict[Hashable, set[int]] = {key: set() for key in trees}
    for pk, *flags in rows:
        for key, flag in zip(trees, flags, strict=True):
            if flag:
                out[key].add(pk)
    return out


@lru_cache(maxsize=64)
def _plan(spec: str, size: int, vendor: str) -> tuple[str, tuple] | None:
    """The SQL of match_segments for these filters and this many contacts, with Slots for the
    ids and for now; None when a filter cannot be compiled that way. `spec` is the JSON of
    [[segment id, filter], …]; `vendor` keeps SQLite and PostgreSQL plans apart."""
    from kizuna.segments.models import Membership

    compiler = Compiler(timezone.now(), symbolic=True)
    segments = json.loads(spec)
    columns: dict[str, Any] = {f"_match_{n}": ExpressionWrapper(compiler.q(tree), output_field=BooleanField())
                               for n, (_pk, tree) in enumerate(segments)}
    if not compiler.reusable:
        return None
    columns |= {f"_member_{n}": Exists(Membership.objects.filter(segment_id=pk, contact_id=OuterRef("pk")))
                for n, (pk, _tree) in enumerate(segments)}
    qs = Contact.objects.filter(pk__in=[Slot("id", n, BigIntegerField()) for n in range(size)])
    sql, params = qs.annotate(**columns).order_by().values_list("pk", *columns).query.sql_with_params()
    return _for_prepare(sql, params) if vendor == "postgresql" else (sql, params)


def _for_prepare(sql: str, params: tuple) -> tuple[str, tuple]:
    """The statement for PREPARE: the Slots become $1, $2, …, every other value a literal, as
    Django's client-side binding would send it, so the plan still sees the constants (a
    partial index on type = 'page' is only used when the plan sees 'page')."""
    from psycopg import sql as pg

    connection.ensure_connection()
    out, slots, values = [], [], iter(params)
    for part in re.split(r"(%%|%s)", sql):
        if part == "%%":
            out.append("%")
        elif part != "%s":
            out.append(part)
        elif isinstance(value := next(values), Slot):
            slots.append(value)
            out.append(f"${len(slots)}")
        else:
            out.append(pg.Literal(value).as_string(connection.connection))
    return "".join(out), tuple(slots)


# Statements prepared on each PostgreSQL connection (Django's own binding never prepares).
_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _run(sql: str, slots: tuple, values: list) -> list[tuple]:
    """On PostgreSQL a statement prepared once per connection: planning this query (a subplan
    per condition) takes longer than running it for one contact, and PostgreSQL keeps a
    prepared statement's plan once it has seen that it does not depend on the values."""
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute(sql, values)
            return cursor.fetchall()
        name = "kizuna_segments_" + hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:24]
        names = _prepared.setdefault(connection.connection, set())
        if name not in names:
            cursor.execute(f"PREPARE {name} ({', '.join(s.pg_type for s in slots)}) AS {sql}")
            names.add(name)
        cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(values))})", values)
        return cursor.fetchall()


def match_segments(trees: Mapping[int, dict], contact_ids: Sequence[int], now: dt.datetime,
                   models: dict[int, float] | None = None) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """For segments (id → filter) and some contacts: who matches each filter now, and who is a
    member of each now, in one query whose SQL is compiled once per set of filters (and number
    of contacts) and then reused, so what an event costs is mostly that query."""
    ids = list(dict.fromkeys(contact_ids))
    if not ids or not trees:
        return {key: set() for key in trees}, {key: set() for key in trees}
    # Padded to a power of two (the last id repeated): a handful of statements serve any batch.
    size = 1 << (len(ids) - 1).bit_length()
    plan = _plan(json.dumps(list(trees.items()), sort_keys=True, ensure_ascii=False), size, connection.vendor)
    if plan is None:
        from kizuna.scoring.models import ScoringModel
        from kizuna.segments.models import Membership

        if models is None:
            models = dict(ScoringModel.objects.values_list("id", "half_life_days"))

        wanted = evaluate_many(trees, now, models, Contact.objects.filter(pk__in=ids))
        current: dict[int, set[int]] = {key: set() for key in trees}
        for segment_id, contact_id in Membership.objects.filter(segment_id__in=list(trees), contact_id__in=ids
                                                                ).values_list("segment_id", "contact_id"):
            current[segment_id].add(contact_id)
        return wanted, current
    sql, params = plan
    padded = ids + ids[-1:] * (size - len(ids))
    values = [p.value(now, padded, connection) if isinstance(p, Slot) else p for p in params]
    rows = _run(sql, tuple(p for p in params if isinstance(p, Slot)), values)
    n = len(trees)
    return (_collect(trees, [row[:n + 1] for row in rows]),
            _collect(trees, [(row[0], *row[n + 1:]) for row in rows]))


# --- the reference evaluator ----------------------------------------------------------------

@dataclass
class Facts:
    """Everything about one contact that a filter can ask, as plain Python values."""

    contact: dict[str, Any]
    company: dict[str, Any] | None = None
    tags: set[str] = field(default_factory=set)
    lists: set[int] = field(default_factory=set)
    custom: dict[str, Any] = field(default_factory=dict)
    scores: dict[int, dict[str, Any]] = field(default_factory=dict)  # model → fit, grade, rank_key
    consents: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # type, name, path, …, properties, occurred_at, bot
    messages: list[dict[str, Any]] = field(default_factory=list)  # template, sent_at, opened_at, clicked_at
    segments: set[int] = field(default_factory=set)


def _fold(text: str) -> str:
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in text)


def _text(value: Any, op: str, wanted: str) -> bool:
    if op in {"not_equals", "not_contains"}:
        return value is None or not _text(value, op[4:], wanted)
    if value is None:
        return False
    if not isinstance(value, str):
        return False
    if op == "equals":
        return value == wanted
    v, w = _fold(value), _fold(wanted)
    return {"contains": w in v, "starts_with": v.startswith(w), "ends_with": v.endswith(w)}[op]


def _count_ok(n: int, count: dict) -> bool:
    return {"gte": n >= count["value"], "lte": n <= count["value"], "eq": n == count["value"]}[count["op"]]


def evaluate(node: dict, facts: Facts, now: dt.datetime, models: dict[int, float]) -> bool:
    if "all" in node:
        return all(evaluate(c, facts, now, models) for c in node["all"])
    if "any" in node:
        return any(evaluate(c, facts, now, models) for c in node["any"])
    if "not" in node:
        return not evaluate(node["not"], facts, now, models)
    if "segment" in node:
        return node["segment"] in facts.segments
    if "event" in node:
        n = sum(1 for e in facts.events if _event_matches(e, node, now))
        return _count_ok(n, node["count"])
    if "email" in node:
        column = {"sent": "sent_at", "opened": "opened_at", "clicked": "clicked_at"}[node["email"]]
        since = _since(now, node["within_days"]) if node["within_days"] else None
        n = sum(1 for m in facts.messages if m.get(column) is not None
                and (node["template"] is None or m.get("template") == node["template"])
                and (since is None or m[column] >= since))
        return _count_ok(n, node["count"])
    return _field(node, facts, now, models)


def _event_matches(event: dict, node: dict, now: dt.datetime) -> bool:
    if event.get("bot"):
        return False
    if node["event"] == "page":
        if event["type"] != "page":
            return False
    elif event["type"] not in {"track", "screen"} or event.get("name") != node["event"]:
        return False
    if node["within_days"] and event["occurred_at"] < _since(now, node["within_days"]):
        return False
    for cond in node["where"]:
        if cond["field"].startswith("properties."):
            value = (event.get("properties") or {}).get(cond["field"][11:])
        else:
            value = event.get(cond["field"])
        if not _text(value, cond["op"], cond["value"]):
            return False
    return True


def _plain_value(facts: Facts, name: str) -> Any:
    if name.startswith("company."):
        return None if facts.company is None else facts.company.get(name[8:])
    return facts.contact.get(name)


def _field(node: dict, facts: Facts, now: dt.datetime, models: dict[int, float]) -> bool:
    name, op, value = node["field"], node["op"], node.get("value")
    if name == "tag":
        return (value in facts.tags) == (op == "has")
    if name == "list":
        return (value in facts.lists) == (op == "in")
    if name.startswith("consent."):
        state = facts.consents.get(name[8:], "unknown")
        return (state in value) == (op == "in")
    if name.startswith("score."):
        score = facts.scores.get(node["model"])
        if name == "score.engagement":
            key = math.log2(value) + now.timestamp() / (models[node["model"]] * 86400)
            rank = score["rank_key"] if score else None
            return (rank is not None and rank >= key) if op == "gte" else not (rank is not None and rank > key)
        if name == "score.fit":
            fit = score["fit"] if score else None
            if op == "gte":
                return (fit is not None and fit >= value) if value > 0 else not (fit is not None and fit < value)
            return not (fit is not None and fit > value) if value >= 0 else (fit is not None and fit <= value)
        grade = score["grade"] if score else "D"
        grades = GRADES[: GRADES.index(value) + 1] if op == "at_least" else "".join(value)
        return grade in grades
    if name.startswith("custom."):
        return _custom(facts.custom, name[7:], op, value, now)
    kind = (CONTACT_FIELDS.get(name) or COMPANY_FIELDS[name])[0]
    return _typed(_plain_value(facts, name), kind, op, value, now)


def _typed(v: Any, kind: str, op: str, value: Any, now: dt.datetime) -> bool:
    if op in {"is_set", "is_not_set"}:
        present = v is not None and not (kind in {TEXT, CHOICE} and v == "")
        return present == (op == "is_set")
    if kind == TEXT:
        return _text(v, op, value)
    if kind in {CHOICE, OWNER}:
        return (v in value) if op == "in" else (v is None or v not in value)
    if kind == BOOL:
        return bool(v) == (op == "is_true")
    if kind == NUMBER:
        return v is not None and {"eq": v == value, "gte": v >= value, "lte": v <= value}[op]
    if op == "before":
        return v is not None and v < _day_start(value)
    if op == "after":
        return v is not None and v >= _day_start(value) + dt.timedelta(days=1)
    since = _since(now, value)
    return (v is not None and v >= since) if op == "in_last_days" else (v is None or v < since)


def _custom(custom: dict, key: str, op: str, value: Any, now: dt.datetime) -> bool:
    present = key in custom
    v = custom.get(key)
    if op in {"is_set", "is_not_set"}:
        return present == (op == "is_set")
    if op in {"has_any", "has_all"}:
        items = set(v) if isinstance(v, list) else set()
        return bool(items & set(value)) if op == "has_any" else set(value) <= items
    if op in {"is_true", "is_false"}:
        return present and v is (op == "is_true")
    if op in {"in", "not_in"}:
        return (present and v in value) if op == "in" else (not present or v not in value)
    if op in {"eq", "gte", "lte"}:
        if not present or isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return {"eq": v == value, "gte": v >= value, "lte": v <= value}[op]
    if op in {"before", "after"}:
        return present and isinstance(v, str) and (v < value if op == "before" else v > value)
    if op in {"in_last_days", "not_in_last_days"}:
        since = _since(now, value).date().isoformat()
        ok = present and isinstance(v, str) and v >= since
        return ok if op == "in_last_days" else (not present or (isinstance(v, str) and v < since))
    return present and _text(v, op, value) if op not in {"not_equals", "not_contains"} else (
        not present or _text(v, op, value))

