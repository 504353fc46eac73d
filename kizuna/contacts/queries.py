"""Filtering, sorting and keyset pagination of contacts: one implementation for the contacts
page, the API and exports, so the three always agree on what "these contacts" means.

Keyset (cursor) pagination keeps every page as fast as the first at a million contacts;
counts are capped so a filtered page never waits on a full COUNT(*).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import BooleanField, F, Q, QuerySet
from django.db.models.expressions import RawSQL

from . import fields
from .models import Contact, CustomField, LifecycleStage
from .reference import CompanySize, Industry, Region, normalise_prefecture

# sort name -> (field, descending). Each has an index ending in id.
SORTS: dict[str, tuple[str, bool]] = {
    "newest": ("id", True),
    "oldest": ("id", False),
    "updated": ("updated_at", True),
    "activity": ("last_activity_at", True),
    "name": ("family_name_kana", False),
    "company": ("company_name", False),
}
DEFAULT_SORT = "newest"
COUNT_CAP = 10_000
FILTER_KEYS = ("q", "email", "stage", "prefecture", "region", "industry", "company_size", "owner",
               "tag", "list", "company", "source", "created_after", "created_before", "updated_since",
               "do_not_contact")


class QueryError(ValueError):
    """Invalid filter, sort or cursor; `errors` maps the parameter to a message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _date(value: str, key: str, errors: dict[str, str]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        errors[key] = f"{value!r} is not a date (YYYY-MM-DD)"
        return None


MAX_ID = 2**63 - 1


def is_id(text: str) -> bool:
    """An id the database can compare: ASCII digits within a 64-bit integer. ('9' * 30 once
    reached SQLite as an integer it cannot hold: a 500 instead of an answer.)"""
    return text.isascii() and text.isdigit() and int(text) <= MAX_ID


def filter_owner(qs: QuerySet, owner: str, errors: dict[str, str]) -> QuerySet:
    """`owner=<user id>` or `owner=none`, for contacts and companies alike."""
    if owner == "none":
        return qs.filter(owner__isnull=True)
    if is_id(owner):
        return qs.filter(owner_id=int(owner))
    errors["owner"] = "must be a user id or 'none'"
    return qs


def filter_contacts(qs: QuerySet[Contact], params: Mapping[str, Any]) -> QuerySet[Contact]:
    """Applies the filters in `params` (query-string style); unknown keys are ignored,
    custom fields filter as `custom.<key>=value`."""
    errors: dict[str, str] = {}
    get = lambda k: str(params.get(k) or "").strip()  # noqa: E731
    if q := get("q"):
        if "@" in q:
            qs = qs.filter(email__istartswith=q.lower())
        else:
            terms = q.replace("\u3000", " ").split()
            for term in terms[:5]:
                qs = qs.filter(
                    Q(family_name__icontains=term) | Q(given_name__icontains=term)
                    | Q(family_name_kana__icontains=term) | Q(given_name_kana__icontains=term)
                    | Q(company_name__icontains=term) | Q(email__icontains=term)
                )
    if email := get("email"):
        qs = qs.filter(email=email.lower())
    if stage := get("stage"):
        if stage not in LifecycleStage.values:
            errors["stage"] = f"unknown stage {stage!r}"
        qs = qs.filter(lifecycle_stage=stage)
    if pref := get("prefecture"):
        code = normalise_prefecture(pref)
        if not code:
            errors["prefecture"] = f"unknown prefecture {pref!r}"
        qs = qs.filter(prefecture=code or pref)
    if region := get("region"):
        if region not in Region.values:
            errors["region"] = f"unknown region {region!r}"
        qs = qs.filter(region=region)
    if industry := get("industry"):
        if industry not in Industry.values:
            errors["industry"] = f"unknown industry {industry!r}"
        qs = qs.filter(industry=industry)
    if size := get("company_size"):
        if size not in CompanySize.values:
            errors["company_size"] = f"unknown company size {size!r}"
        qs = qs.filter(company_size=size)
    if owner := get("owner"):
        qs = filter_owner(qs, owner, errors)
    if tag := get("tag"):
        qs = qs.filter(tags__name=tag)
    if list_id := get("list"):
        if is_id(list_id):
            qs = qs.filter(list_memberships__contact_list_id=int(list_id))
        else:
            errors["list"] = "must be a list id"
    if company := get("company"):
        if is_id(company):
            qs = qs.filter(company_id=int(company))
        else:
            errors["company"] = "must be a company id"
    if source := get("source"):
        qs = qs.filter(source=source)
    if value := get("created_after"):
        if d := _date(value, "created_after", errors):
            qs = qs.filter(created_at__date__gte=d)
    if value := get("created_before"):
        if d := _date(value, "created_before", errors):
            qs = qs.filter(created_at__date__lt=d)
    if value := get("updated_since"):
        try:
            since = dt.datetime.fromisoformat(value)
            qs = qs.filter(updated_at__gte=since)
        except ValueError:
            errors["updated_since"] = f"{value!r} is not an ISO 8601 date-time"
    if value := get("do_not_contact"):
        if value not in ("true", "false"):
            errors["do_not_contact"] = "must be true or false"
        qs = qs.filter(do_not_contact=value == "true")
    if errors:
        raise QueryError(errors)
    return filter_custom(qs, params)


def filter_custom(qs: QuerySet[Contact], params) -> QuerySet[Contact]:
    """Applies `custom.<key>=value` filters, the value read as the field's type (so `custom.budget=100`
    finds the number 100), on SQLite and PostgreSQL alike; a multi-choice field matches contacts
    having every choice given. Raises QueryError naming the parameter."""
    wanted = {p: raw for p, raw in params.items() if p.startswith("custom.") and raw.strip()}
    defs = fields.definitions(CustomField.Target.CONTACT) if wanted else {}
    errors: dict[str, str] = {}
    for param, raw in wanted.items():
        definition = defs.get(param.removeprefix("custom."))
        if definition is None:
            errors[param] = "is not a defined custom field"
            continue
        try:
            value = fields.clean_value(definition, raw)
        except fields.FieldError as exc:
            errors[param] = str(exc)
            continue
        lookup = f"custom__{definition.key}"
        if definition.field_type != CustomField.Type.MULTI_CHOICE:
            qs = qs.filter(**{lookup: value})
        elif connections[qs.db].vendor == "sqlite":  # SQLite has no JSON containment operator
            for i, choice in enumerate(value):
                # Only the table name is in the SQL text; the key path and the choice are parameters.
                member = RawSQL(  # noqa: S611
                    f"EXISTS (SELECT 1 FROM json_each({Contact._meta.db_table}.custom, %s) WHERE value = %s)",
                    (f"$.{definition.key}", choice), output_field=BooleanField(),
                )
                name = f"_custom_{definition.key}_{i}"
                qs = qs.alias(**{name: member}).filter(**{name: True})
        else:
            qs = qs.filter(**{f"{lookup}__contains": value})
    if errors:
        raise QueryError(errors)
    return qs


@dataclass
class Page:
    items: list[Contact]
    next_cursor: str | None
    prev_cursor: str | None


def _encode(values: list[Any]) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, dt.datetime) else v for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError({"cursor": "is not a cursor this server gave out"}) from exc
    if not isinstance(values, list) or len(values) != 3:
        raise QueryError({"cursor": "is not a cursor this server gave out"})
    return values


def paginate(qs: QuerySet[Contact], *, sort: str = DEFAULT_SORT, cursor: str = "", limit: int = 50) -> Page:
    """One page after (or before) `cursor`, ordered by `sort` then id."""
    if sort not in SORTS:
        raise QueryError({"sort": f"unknown sort {sort!r} (one of {', '.join(SORTS)})"})
    field, desc = SORTS[sort]
    direction, last_value, last_id = "next", None, None
    if cursor:
        direction, last_value, last_id = _decode(cursor)
        if direction not in ("next", "prev") or not isinstance(last_id, int):
            raise QueryError({"cursor": "is not a cursor this server gave out"})
        if field.endswith("_at") and last_value is not None:
            last_value = dt.datetime.fromisoformat(last_value)
    backwards = direction == "prev"
    forward_desc = desc != backwards  # walking back reverses the order
    nulls = field == "last_activity_at"

    def order() -> list[Any]:
        f = F(field)
        key = f.desc(nulls_last=True) if forward_desc else f.asc(nulls_first=True)
        if not nulls:
            key = f"-{field}" if forward_desc else field
        if field == "id":
            return [key]
        return [key, "-id" if forward_desc else "id"]

    if last_id is not None:
        if field == "id":
            qs = qs.filter(id__lt=last_id) if forward_desc else qs.filter(id__gt=last_id)
        else:
            cmp = "lt" if forward_desc else "gt"
            if last_value is None:  # only nullable fields: we are inside the NULL block
                qs = qs.filter(**{f"{field}__isnull": True, f"id__{cmp}": last_id}) if forward_desc else qs.filter(
                    Q(**{f"{field}__isnull": True, f"id__{cmp}": last_id}) | Q(**{f"{field}__isnull": False})
                )
            else:
                after = Q(**{f"{field}__{cmp}": last_value}) | Q(**{field: last_value, f"id__{cmp}": last_id})
                if nulls and forward_desc:
                    after |= Q(**{f"{field}__isnull": True})
                qs = qs.filter(after)
    rows = list(qs.order_by(*order())[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()

    def cur(kind: str, row: Contact) -> str:
        return _encode([kind, getattr(row, field) if field != "id" else row.id, row.id])

    has_next = more if not backwards else True
    has_prev = bool(cursor) and (more if backwards else True)
    return Page(
        items=rows,
        next_cursor=cur("next", rows[-1]) if rows and has_next else None,
        prev_cursor=cur("prev", rows[0]) if rows and has_prev else None,
    )


def capped_count(qs: QuerySet[Contact], cap: int = COUNT_CAP) -> tuple[int, bool]:
    """(count, capped): exact up to `cap`, so a filtered count stays fast at any size."""
    n = qs.order_by()[: cap + 1].count()
    return (min(n, cap), n > cap)
