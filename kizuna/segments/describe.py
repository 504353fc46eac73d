"""A segment's filter in words, and the vocabulary the builder shows.

What each field, operator and value is called lives here once: the builder's schema
(builder.py) and the description on the detail page both read it, so the page says in words
exactly what the builder shows. Names of lists, users, templates, segments, scoring models and
topics are looked up in a few queries (`Names.load`); an id that no longer exists is shown as
"#id", never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.contacts.models import Company, ConsentStatus, Contact, CustomField
from kizuna.segments import filters

OP_LABELS = {
    "equals": gettext_lazy("is"),
    "not_equals": gettext_lazy("is not"),
    "contains": gettext_lazy("contains"),
    "not_contains": gettext_lazy("does not contain"),
    "starts_with": gettext_lazy("starts with"),
    "ends_with": gettext_lazy("ends with"),
    "is_set": gettext_lazy("is set"),
    "is_not_set": gettext_lazy("is not set"),
    "in": gettext_lazy("is any of"),
    "not_in": gettext_lazy("is none of"),
    "before": gettext_lazy("is before"),
    "after": gettext_lazy("is after"),
    "in_last_days": gettext_lazy("is within the last … days"),
    "not_in_last_days": gettext_lazy("is not within the last … days"),
    "eq": gettext_lazy("equals"),
    "gte": gettext_lazy("is at least"),
    "lte": gettext_lazy("is at most"),
    "is_true": gettext_lazy("is yes"),
    "is_false": gettext_lazy("is no"),
    "has_any": gettext_lazy("has any of"),
    "has_all": gettext_lazy("has all of"),
}
# Operators whose words depend on what they apply to.
KIND_OP_LABELS = {
    "tag": {"has": gettext_lazy("has the tag"), "has_not": gettext_lazy("does not have the tag")},
    "list": {"in": gettext_lazy("is in the list"), "not_in": gettext_lazy("is not in the list")},
    "score.grade": {"at_least": gettext_lazy("is at least"), "in": gettext_lazy("is any of")},
}
EVENT_FIELD_LABELS = {
    "path": gettext_lazy("page path"),
    "url": gettext_lazy("URL"),
    "title": gettext_lazy("page title"),
    "referrer": gettext_lazy("referrer"),
}
COUNT_LABELS = {"gte": gettext_lazy("at least"), "lte": gettext_lazy("at most"), "eq": gettext_lazy("exactly")}
EMAIL_LABELS = {
    "sent": gettext_lazy("Was sent"),
    "opened": gettext_lazy("Opened"),
    "clicked": gettext_lazy("Clicked a link in"),
}
SCORE_LABELS = {
    "score.engagement": gettext_lazy("Engagement score"),
    "score.fit": gettext_lazy("Fit score"),
    "score.grade": gettext_lazy("Grade"),
}
FORM_EVENT = "Form Submitted"


@dataclass
class Names:
    """Display names for the ids and keys a filter can mention."""

    lists: dict[int, str] = field(default_factory=dict)
    users: dict[int, str] = field(default_factory=dict)
    templates: dict[int, str] = field(default_factory=dict)
    segments: dict[int, str] = field(default_factory=dict)
    models: dict[int, str] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    custom: dict[str, CustomField] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Names:
        from kizuna.accounts.models import User
        from kizuna.contacts.models import ContactList, SubscriptionTopic
        from kizuna.messaging.models import EmailTemplate
        from kizuna.scoring.models import ScoringModel
        from kizuna.segments.models import Segment

        return cls(
            lists=dict(ContactList.objects.order_by("name").values_list("id", "name")),
            users={u.pk: u.display_name for u in User.objects.filter(is_active=True).order_by("username")},
            templates=dict(EmailTemplate.objects.order_by("name").values_list("id", "name")),
            segments=dict(Segment.objects.order_by("name").values_list("id", "name")),
            models=dict(ScoringModel.objects.order_by("name").values_list("id", "name")),
            topics=dict(SubscriptionTopic.objects.order_by("name").values_list("key", "name")),
            custom={f.key: f for f in CustomField.objects.filter(target=CustomField.Target.CONTACT)},
        )


def _model_field(model, name: str):
    return model._meta.get_field(name)


def field_label(name: str, names: Names) -> str:
    """What people call a filter field: "Industry", "Company · Employees", "Budget", "Grade (Default)"."""
    if name in filters.CONTACT_FIELDS:
        return str(capfirst(_model_field(Contact, name).verbose_name))
    if name in filters.COMPANY_FIELDS:
        return f"{_('Company')} · {capfirst(_model_field(Company, name[8:]).verbose_name)}"
    if name.startswith("custom."):
        definition = names.custom.get(name[7:])
        return definition.label if definition else name[7:]
    if name in SCORE_LABELS:
        return str(SCORE_LABELS[name])
    if name.startswith("consent."):
        return _("Consent: %(topic)s") % {"topic": names.topics.get(name[8:], name[8:])}
    if name == "tag":
        return _("Tag")
    if name == "list":
        return _("List")
    return name


def choice_labels(name: str, names: Names) -> dict[str, str] | None:
    """value → label for fields with a fixed set of values; None for free values."""
    if name == "language":
        return {code: str(label) for code, label in settings.LANGUAGES}
    if name in filters.CONTACT_FIELDS or name in filters.COMPANY_FIELDS:
        model, key = (Company, name[8:]) if name.startswith("company.") else (Contact, name)
        choices = _model_field(model, key).choices
        return {str(v): str(label) for v, label in choices} if choices else None
    if name.startswith("consent."):
        return {str(v): str(label) for v, label in ConsentStatus.choices}
    if name.startswith("custom."):
        definition = names.custom.get(name[7:])
        if definition and definition.field_type in (CustomField.Type.CHOICE, CustomField.Type.MULTI_CHOICE):
            return {str(c): str(c) for c in definition.choices or []}
    if name == "score.grade":
        return {g: g for g in filters.GRADES}
    return None


def op_label(name: str, op: str) -> str:
    for kind, labels in KIND_OP_LABELS.items():
        if (name == kind or name.startswith(kind + ".")) and op in labels:
            return str(labels[op])
    return str(OP_LABELS.get(op, op))


def _quoted(text: Any) -> str:
    return _("“%(text)s”") % {"text": text}


def value_text(node: dict, names: Names) -> str:
    """The value of a field condition in words ("" for operators that take none)."""
    name, op, value = node["field"], node["op"], node.get("value")
    if op in filters.VALUELESS or value is None:
        return ""
    if name == "list":
        return _quoted(names.lists.get(value, f"#{value}"))
    if name == "owner":
        return ", ".join(names.users.get(v, f"#{v}") for v in value)
    if op in {"before", "after"}:
        return str(value)
    labels = choice_labels(name, names)
    if isinstance(value, list):
        return ", ".join((labels or {}).get(str(v), str(v)) for v in value)
    if labels:
        return labels.get(str(value), str(value))
    return _quoted(value) if isinstance(value, str) else str(value)


@dataclass
class Line:
    """One line of the description; groups carry their children."""

    text: str
    children: list[Line] = field(default_factory=list)
    negated: bool = False


def _condition(field_text: str, op: str, value: str = "") -> str:
    if not value:
        return _("%(field)s %(op)s") % {"field": field_text, "op": op}
    return _("%(field)s %(op)s %(value)s") % {"field": field_text, "op": op, "value": value}


def _count_text(count: dict) -> str:
    op, n = count["op"], count["value"]
    if op == "gte" and n == 1:
        return ""
    return {"gte": _("at least %(n)s times"), "lte": _("at most %(n)s times"),
            "eq": _("exactly %(n)s times")}[op] % {"n": n}


def _window_text(days: int | None) -> str:
    return _("in the last %(n)s days") % {"n": days} if days else _("ever")


def _where_text(where: list[dict]) -> str:
    parts = []
    for cond in where:
        fname = cond["field"]
        label = (_("property %(name)s") % {"name": fname[11:]} if fname.startswith("properties.")
                 else str(EVENT_FIELD_LABELS.get(fname, fname)))
        parts.append(_condition(label, op_label("", cond["op"]), _quoted(cond["value"])))
    return _(" and ").join(parts)


def _event_text(node: dict) -> str:
    never = node["count"] == {"op": "eq", "value": 0}
    name = node["event"]
    if name == "page":
        what = _("Did not visit a page") if never else _("Visited a page")
    elif name == FORM_EVENT:
        what = _("Did not submit a form") if never else _("Submitted a form")
    else:
        what = (_("Did not do %(event)s") if never else _("Did %(event)s")) % {"event": _quoted(name)}
    parts = [what]
    if node["where"]:
        parts.append(_("where %(conditions)s") % {"conditions": _where_text(node["where"])})
    if not never:
        parts.append(_count_text(node["count"]))
    parts.append(_window_text(node["within_days"]))
    return " ".join(p for p in parts if p)


def _email_text(node: dict, names: Names) -> str:
    never = node["count"] == {"op": "eq", "value": 0}
    template = node["template"]
    which = _("any email") if template is None else _quoted(names.templates.get(template, f"#{template}"))
    what = {"sent": _("Was sent %(email)s"), "opened": _("Opened %(email)s"),
            "clicked": _("Clicked a link in %(email)s")}[node["email"]] % {"email": which}
    if never:
        what = _("Never: %(what)s") % {"what": what}
    parts = [what, "" if never else _count_text(node["count"]), _window_text(node["within_days"])]
    return " ".join(p for p in parts if p)


def _field_text(node: dict, names: Names) -> str:
    name, op = node["field"], node["op"]
    label = field_label(name, names)
    if name.startswith("score."):
        label = f"{label} ({names.models.get(node.get('model'), '#' + str(node.get('model')))})"
    if name == "tag":
        text = _("Has the tag %(tag)s") if op == "has" else _("Does not have the tag %(tag)s")
        return text % {"tag": _quoted(node["value"])}
    if name == "list":
        text = _("Is in the list %(list)s") if op == "in" else _("Is not in the list %(list)s")
        return text % {"list": value_text(node, names)}
    if op == "in_last_days":
        return _("%(field)s is within the last %(n)s days") % {"field": label, "n": node["value"]}
    if op == "not_in_last_days":
        return _("%(field)s is not within the last %(n)s days") % {"field": label, "n": node["value"]}
    return _condition(label, op_label(name, op), value_text(node, names))


def describe(node: dict, names: Names) -> Line:
    """The (checked) filter as a tree of lines."""
    if "all" in node:
        if not node["all"]:
            return Line(_("Every contact"))
        return Line(_("All of these:"), [describe(c, names) for c in node["all"]])
    if "any" in node:
        if not node["any"]:
            return Line(_("No contact"))
        return Line(_("Any of these:"), [describe(c, names) for c in node["any"]])
    if "not" in node:
        inner = node["not"]
        if "any" in inner and inner["any"]:
            return Line(_("None of these:"), [describe(c, names) for c in inner["any"]], negated=True)
        if "all" in inner and inner["all"]:
            return Line(_("Not all of these:"), [describe(c, names) for c in inner["all"]], negated=True)
        return Line(_("Not:"), [describe(inner, names)], negated=True)
    if "segment" in node:
        return Line(_("Is in the segment %(name)s") % {
            "name": _quoted(names.segments.get(node["segment"], f"#{node['segment']}"))})
    if "event" in node:
        return Line(_event_text(node))
    if "email" in node:
        return Line(_email_text(node, names))
    return Line(_field_text(node, names))
