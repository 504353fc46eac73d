"""Rules: what they may say (validated, with errors naming the part at fault) and whether a
contact or an event matches them. Plain functions over plain values, so the same code checks a
rule in the editor, scores an event in the worker and explains a score on the contact page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

FIT_FIELDS = {
    "industry": "Industry", "company_size": "Company size", "prefecture": "Prefecture", "region": "Region",
    "job_title": "Job title", "department": "Department", "source": "Source", "lifecycle_stage": "Lifecycle stage",
    "email_domain": "Email domain", "company.employees": "Company employees", "company.industry": "Company industry",
}
FIT_OPERATORS = {"equals", "not_equals", "in", "not_in", "contains", "not_contains", "gte", "lte", "empty",
                 "not_empty"}
EVENT_FIELDS = {"url", "path", "title", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_term",
                "utm_content", "name"}
EVENT_OPERATORS = {"equals", "not_equals", "contains", "not_contains", "starts_with", "matches", "gte", "lte",
                   "is_true", "is_false"}
NUMERIC = {"gte", "lte"}
NO_VALUE = {"empty", "not_empty", "is_true", "is_false"}


class RuleError(ValueError):
    """`path` names the part at fault, e.g. conditions[1].value."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _values(value: str) -> list[str]:
    return [v.strip() for v in re.split(r"[,\n、]", value) if v.strip()]


def _number(value: Any, path: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RuleError(path, f"“{value}” is not a number") from None


def check_fit_rule(field: str, operator: str, value: str, points: Any) -> None:
    if field not in FIT_FIELDS and not re.fullmatch(r"custom\.[a-z0-9_]{1,64}", field or ""):
        raise RuleError("field", f"unknown field “{field}”: use one of {', '.join(FIT_FIELDS)} or custom.<key>")
    if operator not in FIT_OPERATORS:
        raise RuleError("operator", f"unknown condition “{operator}”")
    if operator not in NO_VALUE and not str(value).strip():
        raise RuleError("value", "a value is needed for this condition")
    if operator in NUMERIC:
        _number(value, "value")
    _points(points)


def _points(points: Any) -> int:
    if isinstance(points, bool) or not isinstance(points, int | str):
        raise RuleError("points", "points must be a whole number")
    try:
        number = int(points)
    except ValueError:
        raise RuleError("points", f"“{points}” is not a whole number") from None
    if not -1000 <= number <= 1000:
        raise RuleError("points", "points must be between -1000 and 1000")
    return number


def check_engagement_rule(event: str, conditions: Any, points: Any, max_times: Any = None,
                          per_days: Any = None) -> None:
    if not isinstance(event, str) or not event.strip() or len(event) > 200:
        raise RuleError("event", "name the event: page, identify, or a tracked event such as Email Clicked")
    _points(points)
    if not isinstance(conditions, list):
        raise RuleError("conditions", "conditions must be a list")
    for index, cond in enumerate(conditions):
        path = f"conditions[{index}]"
        if not isinstance(cond, dict):
            raise RuleError(path, "each condition needs field, op and value")
        field, op, value = cond.get("field"), cond.get("op"), cond.get("value", "")
        if not isinstance(field, str) or not (field in EVENT_FIELDS or re.fullmatch(r"properties\.[\w.-]{1,100}",
                                                                                    field)):
            raise RuleError(f"{path}.field", f"unknown field “{field}”: use {', '.join(sorted(EVENT_FIELDS))} or "
                                             "properties.<name>")
        if op not in EVENT_OPERATORS:
            raise RuleError(f"{path}.op", f"unknown operator “{op}”")
        if op not in NO_VALUE and (value is None or str(value) == ""):
            raise RuleError(f"{path}.value", "a value is needed for this operator")
        if op in NUMERIC:
            _number(value, f"{path}.value")
        if op == "matches":
            try:
                _regex(str(value))
            except re.error as exc:
                raise RuleError(f"{path}.value", f"not a valid pattern: {exc}") from None
    if max_times not in (None, ""):
        if _number(max_times, "max_times") < 1:
            raise RuleError("max_times", "at least 1, or empty for no limit")
    if per_days not in (None, "") and max_times in (None, ""):
        raise RuleError("per_days", "a period needs a limit (at most N times per period)")


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    if len(pattern) > 300:
        raise re.error("longer than 300 characters")
    return re.compile(pattern, re.I)


# --- matching -------------------------------------------------------------------------------------

def contact_value(contact, field: str) -> Any:
    if field == "email_domain":
        return (contact.email or "").rpartition("@")[2].lower()
    if field.startswith("custom."):
        return (contact.custom or {}).get(field[7:])
    if field.startswith("company."):
        company = contact.company if contact.company_id else None
        return getattr(company, field[8:], None) if company is not None else None
    return getattr(contact, field, None)


def compare(actual: Any, op: str, expected: Any) -> bool:
    text = "" if actual is None else str(actual)
    if op == "empty":
        return text.strip() == ""
    if op == "not_empty":
        return text.strip() != ""
    if op == "is_true":
        return actual is True or text.lower() in ("true", "1", "yes")
    if op == "is_false":
        return not (actual is True or text.lower() in ("true", "1", "yes"))
    if op in NUMERIC:
        try:
            number = float(actual)
        except (TypeError, ValueError):
            return False
        return number >= float(expected) if op == "gte" else number <= float(expected)
    folded, wanted = text.casefold(), str(expected).casefold()
    if op == "equals":
        return folded == wanted
    if op == "not_equals":
        return folded != wanted
    if op in ("in", "not_in"):
        found = folded in {v.casefold() for v in _values(str(expected))}
        return found if op == "in" else not found
    if op in ("contains", "not_contains"):
        found = any(v.casefold() in folded for v in _values(str(expected))) if "," in str(expected) or "\n" in \
            str(expected) else wanted in folded
        return found if op == "contains" else not found
    if op == "starts_with":
        return folded.startswith(wanted)
    if op == "matches":
        return bool(_regex(str(expected)).search(text))
    return False


def fit_matches(rule, contact) -> bool:
    return compare(contact_value(contact, rule.field), rule.operator, rule.value)


@dataclass(frozen=True)
class EventView:
    """What a rule can see of an event."""

    type: str
    name: str
    properties: dict
    fields: dict
    machine: bool

    @classmethod
    def of(cls, event) -> EventView:
        props = event.properties if isinstance(event.properties, dict) else {}
        machine = bool(event.bot) or props.get("machine") is True
        fields = {f: getattr(event, f, "") for f in EVENT_FIELDS}
        return cls(event.type, event.name, props, fields, machine)

    def value(self, field: str) -> Any:
        if field.startswith("properties."):
            current: Any = self.properties
            for part in field[11:].split("."):
                if not isinstance(current, dict):
                    return None
                current = current.get(part)
            return current
        return self.fields.get(field)


def event_matches(rule, view: EventView) -> bool:
    wanted = rule.event.strip()
    if wanted in ("page", "identify", "screen", "group"):
        if view.type != wanted:
            return False
    elif view.type != "track" or view.name != wanted:
        return False
    if view.machine and not rule.include_machine:
        return False
    return all(compare(view.value(c["field"]), c["op"], c.get("value", "")) for c in rule.conditions or [])


def describe_condition(cond: dict) -> str:
    if cond.get("op") in NO_VALUE:
        return f"{cond.get('field')} {cond.get('op')}"
    return f"{cond.get('field')} {cond.get('op')} {cond.get('value')}"
