"""What the filter builder (static/kizuna/segments.js) needs to offer every condition
filters.check accepts: the fields with their kinds, operators and values, the lists, users,
templates, segments, scoring models and topics to choose from, and every word it shows,
translated here so the script carries no text of its own.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _

from kizuna.contacts.models import CustomField, Tag
from kizuna.segments import filters
from kizuna.segments.describe import (
    COUNT_LABELS,
    EMAIL_LABELS,
    EVENT_FIELD_LABELS,
    FORM_EVENT,
    KIND_OP_LABELS,
    OP_LABELS,
    Names,
    choice_labels,
    field_label,
)

TAG_SUGGESTIONS = 500
KNOWN_EVENTS = ["Form Submitted", "File Downloaded", "Asset Downloaded", "Outbound Link Clicked", "Email Opened",
                "Email Clicked", "Email Bounced", "Unsubscribed"]
RECENT_EVENTS = 20_000


def _field(name: str, group: str, kind: str, names: Names) -> dict[str, Any]:
    labels = choice_labels(name, names)
    return {"key": name, "label": field_label(name, names), "group": group, "kind": kind,
            "choices": [[v, label] for v, label in labels.items()] if labels else None}


def fields(names: Names) -> list[dict[str, Any]]:
    contact, company, custom = _("Contact"), _("Company"), _("Custom fields")
    out = [_field(k, contact, kind, names) for k, (kind, _c) in filters.CONTACT_FIELDS.items()]
    out += [_field(k, company, kind, names) for k, (kind, _c) in filters.COMPANY_FIELDS.items()]
    for key, definition in names.custom.items():
        kind = ("multi" if definition.field_type == CustomField.Type.MULTI_CHOICE
                else filters.CUSTOM_KINDS[definition.field_type])
        out.append(_field(f"custom.{key}", custom, kind, names))
    tags_lists = _("Tags and lists")
    out += [_field("tag", tags_lists, "tag", names), _field("list", tags_lists, "list", names)]
    if names.models:
        scores = _("Scores")
        out += [_field(k, scores, k, names) for k in ("score.engagement", "score.fit", "score.grade")]
    consent = _("Consent")
    out += [_field(f"consent.{key}", consent, "consent", names) for key in names.topics]
    return out


def _event_names() -> list[str]:
    """Known event names, then the ones tracked among the newest events: a range of ids, so the
    look stays one index range however many page views there are between two tracked events."""
    from django.db.models import Max

    from kizuna.events.models import Event
    from kizuna.scoring.models import EngagementRule

    seen = dict.fromkeys(KNOWN_EVENTS)
    seen.update(dict.fromkeys(EngagementRule.objects.exclude(event="page").values_list("event", flat=True)))
    newest = Event.objects.aggregate(newest=Max("id"))["newest"] or 0
    recent = (Event.objects.filter(id__gt=newest - RECENT_EVENTS, type__in=["track", "screen"])
              .order_by().values_list("name", flat=True).distinct())
    seen.update(dict.fromkeys(n for n in recent if n))
    return sorted(seen)


def schema(names: Names, *, exclude_segment: int | None = None) -> dict[str, Any]:
    ops = {kind: sorted(values) for kind, values in {**filters.OPS, **filters.SPECIAL_OPS}.items()}
    op_labels = {op: str(label) for op, label in OP_LABELS.items()}
    return {
        "fields": fields(names),
        "ops": ops,
        "opLabels": op_labels,
        "kindOpLabels": {kind: {op: str(label) for op, label in labels.items()}
                         for kind, labels in KIND_OP_LABELS.items()},
        "valueless": sorted(filters.VALUELESS),
        "eventOps": sorted(filters.EVENT_OPS),
        "eventFields": [[k, str(v)] for k, v in EVENT_FIELD_LABELS.items()],
        "countOps": [[k, str(v)] for k, v in COUNT_LABELS.items()],
        "emailActions": [[k, str(v)] for k, v in EMAIL_LABELS.items()],
        "formEvent": FORM_EVENT,
        "events": _event_names(),
        "lists": [[k, v] for k, v in names.lists.items()],
        "users": [[k, v] for k, v in names.users.items()],
        "templates": [[k, v] for k, v in names.templates.items()],
        "segments": [[k, v] for k, v in names.segments.items() if k != exclude_segment],
        "models": [[k, v] for k, v in names.models.items()],
        "tags": list(Tag.objects.order_by("name").values_list("name", flat=True)[:TAG_SUGGESTIONS]),
        "maxDays": 3650,
        "text": {
            "all": _("All of these are true"), "any": _("Any of these is true"),
            "not": _("NOT"), "negate": _("Not"), "unnegate": _("Remove NOT"), "remove": _("Remove"),
            "addCondition": _("+ Condition"), "addGroup": _("+ Group"),
            "behaviour": _("Behaviour"),
            "page": _("Visited a page"), "form": _("Submitted a form"), "event": _("Did an event"),
            "email": _("Email activity"), "segment": _("Is in the segment"),
            "eventName": _("event name"), "did": _("did"), "didNot": _("did not"), "times": _("times"),
            "ever": _("ever"), "withinLast": _("within the last"), "days": _("days"),
            "where": _("where"), "addWhere": _("+ Condition on the event"), "property": _("property…"),
            "propertyName": _("property name"), "anyTemplate": _("any email"), "model": _("scoring model"),
            "empty": _("No conditions: every contact matches. Add a condition."),
            "emptyAny": _("No conditions: no contact matches. Add a condition."),
            "counting": _("Counting…"), "contacts": _("contacts match"), "ms": _("ms"),
            "badJson": _("The JSON is not valid:"), "errorAt": _("Not valid at %(path)s:"),
            "unknown": _("This condition can only be edited as JSON."), "noSegments": _("no other segment"),
            "countFailed": _("The count could not be fetched."),
            "manyHint": _("Ctrl or ⌘ + click to choose several"),
        },
    }
