"""Reads for the tracking pages, kept out of the views so reports can reuse them."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.db.models import Count, Max, Q, Sum
from django.utils.translation import pgettext_lazy

from kizuna.contacts.models import Company
from kizuna.events.models import Event, PageView, Session, Visitor

SOURCE_CHOICES = [
    ("search", pgettext_lazy("traffic source", "Search")), ("paid", pgettext_lazy("traffic source", "Paid ad")),
    ("social", pgettext_lazy("traffic source", "Social")), ("email", pgettext_lazy("traffic source", "Email")),
    ("referral", pgettext_lazy("traffic source", "Referral")),
    ("internal", pgettext_lazy("traffic source", "Internal")), ("direct", pgettext_lazy("traffic source", "Direct")),
]
HIDDEN_FROM_TIMELINE = ("Page Engaged",)


@dataclass
class Page:
    items: list
    next_cursor: str = ""
    prev_cursor: str = ""


def _cursor(at: datetime, pk: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([at.isoformat(), pk])).decode()


def _decode_cursor(text: str) -> tuple[datetime, int] | None:
    try:
        at, pk = orjson.loads(base64.urlsafe_b64decode(text.encode()))
        return datetime.fromisoformat(at), int(pk)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        return None


def visitors(params: dict[str, str], limit: int = 50) -> Page:
    """Newest first, keyset-paginated on (last_seen, id)."""
    qs = Visitor.objects.select_related("contact")
    if params.get("known") == "known":
        qs = qs.exclude(contact=None)
    elif params.get("known") == "anonymous":
        qs = qs.filter(contact=None)
    if params.get("company"):
        qs = qs.filter(company_name__icontains=params["company"])
    if params.get("bots") != "1":
        qs = qs.filter(bot="")
    if params.get("source") in dict(SOURCE_CHOICES):
        recent = Session.objects.filter(source_kind=params["source"]).values("anonymous_id")
        qs = qs.filter(anonymous_id__in=recent)
    after = _decode_cursor(params.get("cursor", "")) if params.get("cursor") else None
    if after:
        qs = qs.filter(Q(last_seen__lt=after[0]) | Q(last_seen=after[0], id__lt=after[1]))
    items = list(qs.order_by("-last_seen", "-id")[: limit + 1])
    more = len(items) > limit
    items = items[:limit]
    return Page(items, _cursor(items[-1].last_seen, items[-1].id) if more and items else "")


def attach_pages(sessions: list[Session]) -> None:
    """Gives each session its ordered `path` of page views, in two queries for the lot."""
    by_id = {s.id: s for s in sessions}
    for s in sessions:
        s.path = []
    for pv in PageView.objects.filter(session_id__in=list(by_id)).order_by("session_id", "seq"):
        by_id[pv.session_id].path.append(pv)


def contact_sessions(contact, *, before: str = "", limit: int = 20) -> tuple[list[Session], str]:
    qs = Session.objects.filter(contact=contact)
    after = _decode_cursor(before) if before else None
    if after:
        qs = qs.filter(Q(started_at__lt=after[0]) | Q(started_at=after[0], id__lt=after[1]))
    sessions = list(qs.order_by("-started_at", "-id")[: limit + 1])
    older = _cursor(sessions[limit - 1].started_at, sessions[limit - 1].id) if len(sessions) > limit else ""
    sessions = sessions[:limit]
    attach_pages(sessions)
    return sessions, older


def contact_other_events(contact, sessions: list[Session], limit: int = 100) -> list[Event]:
    """Identifies, forms and custom events of the contact in the period the sessions cover."""
    qs = Event.objects.filter(contact=contact).exclude(type__in=("page", "screen")).exclude(
        name__in=HIDDEN_FROM_TIMELINE)
    if sessions:
        qs = qs.filter(occurred_at__gte=sessions[-1].started_at)
    return list(qs.order_by("-occurred_at")[:limit])


def recent_events(limit: int = 50) -> list[Event]:
    return list(Event.objects.select_related("contact").order_by("-id")[:limit])


def visiting_companies(since: datetime, limit: int = 200) -> list[dict[str, Any]]:
    """Companies behind human sessions since `since`, busiest first."""
    rows = list(
        Session.objects.filter(started_at__gte=since, bot="").exclude(company_name="")
        .values("company_name")
        .annotate(sessions=Count("id"), visitors=Count("anonymous_id", distinct=True),
                  page_views=Sum("page_views"), engaged_ms=Sum("engaged_ms"), last_visit=Max("last_activity_at"),
                  contacts=Count("contact", distinct=True), company_id=Max("company_id"))
        .order_by("-sessions", "company_name")[:limit]
    )
    names = [r["company_name"] for r in rows]
    top: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
    if names:
        counted = (PageView.objects.filter(session__started_at__gte=since, session__bot="",
                                           session__company_name__in=names)
                   .values("session__company_name", "path").annotate(n=Count("id")).order_by("-n"))
        for row in counted[:5000]:
            pages = top[row["session__company_name"]]
            if len(pages) < 3:
                pages.append((row["path"], row["n"]))
    for row in rows:
        row["top_pages"] = top[row["company_name"]]
    return rows


def company_named(name: str) -> Company | None:
    """The company record an IP-range row names, when there is exactly one by that name."""
    found = list(Company.objects.filter(name=name)[:2])
    return found[0] if len(found) == 1 else None
