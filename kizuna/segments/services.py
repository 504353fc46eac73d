"""Segments as people change them, from the pages and the API alike.

- `save`: checks the name and the filter (FilterError names the path at fault), stores both and
  audits the change; the membership follows in the worker (membership.save_segment).
- `count`: how many contacts a filter matches now, and how long that took — the builder's live
  count, computed by the same SQL as the membership.
- `delete`: refused while another segment's filter or a bulk send uses the segment, naming them.
- `request_recompute`: asks the worker for a full recompute instead of running it in the
  request, so a page never races the worker writing the same membership.
- `growth` and `chart`: the daily counts (SegmentCount) for the list and the detail page.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from kizuna.accounts import audit
from kizuna.contacts import exports
from kizuna.contacts.models import Contact
from kizuna.segments import filters, membership
from kizuna.segments.models import Segment, SegmentCount

NAME_MAX, DESCRIPTION_MAX = 150, 500
CHART_W, CHART_H, CHART_DAYS = 600, 200, 90
AUDITED = ["name", "description", "filter"]


class SegmentError(ValueError):
    """Input other than the filter is wrong; `errors` maps the field to a message."""

    def __init__(self, errors: dict[str, str], *, conflict: bool = False):
        self.errors, self.conflict = errors, conflict
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class SegmentInUse(SegmentError):
    """The segment cannot be deleted: `users` names what still uses it."""

    def __init__(self, segments: list[Segment], bulk_sends: list):
        self.segments, self.bulk_sends = segments, bulk_sends
        names = [f"segment {s.name!r}" for s in segments] + [f"bulk send {b.name!r}" for b in bulk_sends]
        super().__init__({"segment": "is used by " + ", ".join(names)}, conflict=True)


def _snapshot(segment: Segment) -> dict[str, Any]:
    return {name: getattr(segment, name) for name in AUDITED}


def save(actor, segment: Segment | None, *, name: str | None = None, description: str | None = None,
         tree: Any = None, ctx: filters.Context | None = None) -> Segment:
    """Creates (segment None) or changes a segment; a None argument keeps what is stored.

    Raises SegmentError for the name or description and FilterError for the filter, before
    anything is written."""
    creating = segment is None
    segment = segment or Segment(created_by=actor if getattr(actor, "is_authenticated", False) else None)
    before = {} if creating else _snapshot(segment)
    errors: dict[str, str] = {}
    if name is not None or creating:
        name = (name or "").strip()
        if not name:
            errors["name"] = "is required"
        elif len(name) > NAME_MAX:
            errors["name"] = f"is longer than {NAME_MAX} characters"
        elif Segment.objects.filter(name=name).exclude(pk=segment.pk).exists():
            raise SegmentError({"name": f"another segment is already called {name!r}"}, conflict=True)
        segment.name = name
    if description is not None:
        description = description.strip()
        if len(description) > DESCRIPTION_MAX:
            errors["description"] = f"is longer than {DESCRIPTION_MAX} characters"
        segment.description = description
    if errors:
        raise SegmentError(errors)
    if tree is None and creating:
        tree = {"all": []}
    try:
        with transaction.atomic():
            if tree is None:
                segment.updated_at = timezone.now()
                segment.save()
            else:
                ctx = ctx or filters.Context.load(exclude_segment=segment.pk)
                membership.save_segment(segment, tree, ctx=ctx)
            changes = audit.diff(before, _snapshot(segment))
            audit.record(actor, "create" if creating else "update", segment, changes=changes)
    except IntegrityError:  # another request took the name between the check and the save
        if creating:
            segment.pk = None
        raise SegmentError({"name": f"another segment is already called {segment.name!r}"}, conflict=True) from None
    return segment


def count(tree: Any, *, segment_id: int | None = None) -> dict[str, Any]:
    """{"count", "ms", "filter"} for a filter as it stands (FilterError when it is not valid)."""
    ctx = filters.Context.load(exclude_segment=segment_id)
    checked = filters.check(tree, ctx, segment_id=segment_id)
    started = time.perf_counter()
    n = filters.compile_queryset(checked, timezone.now(), ctx.models).order_by().count()
    return {"count": n, "ms": round((time.perf_counter() - started) * 1000), "filter": checked}


def users_of(segment: Segment) -> tuple[list[Segment], list]:
    """The segments whose filter names this one, and the bulk sends addressed to it."""
    from kizuna.messaging.models import BulkSend

    referring = []
    for other in Segment.objects.exclude(pk=segment.pk).order_by("name"):
        try:
            refs = filters.references(other.filter or {})
        except (KeyError, TypeError, AttributeError):  # a filter stored by hand, never checked
            refs = set(other.triggers.get("segments", []) if isinstance(other.triggers, dict) else [])
        if segment.pk in refs:
            referring.append(other)
    return referring, list(BulkSend.objects.filter(segment=segment).order_by("-created_at"))


def delete(actor, segment: Segment) -> None:
    """Deletes a segment nobody uses; SegmentInUse names the users otherwise."""
    segments, sends = users_of(segment)
    if segments or sends:
        raise SegmentInUse(segments, sends)
    with transaction.atomic():
        audit.record(actor, "delete", segment, changes={"name": [segment.name, None]})
        segment.delete()


def request_recompute(actor, segment: Segment) -> None:
    """Marks the segment for a full recompute, which the worker's segment loop does next."""
    Segment.objects.filter(pk=segment.pk).update(needs_full=True)
    segment.needs_full = True
    audit.record(actor, "recompute", segment)


def members(segment: Segment) -> QuerySet[Contact]:
    return Contact.objects.filter(segment_memberships__segment=segment)


def export_members(actor, segment: Segment) -> tuple[str, Iterator[bytes], int]:
    """(file name, CSV byte stream, count): the members in the contacts export format, audited."""
    qs = members(segment)
    n = qs.count()
    audit.record(actor, "export", object_type="contacts.contact", label=f"{n} contacts",
                 changes={"count": n, "segment": [segment.pk, segment.name]})
    name = f"segment-{segment.pk}-{timezone.localtime():%Y%m%d-%H%M}.csv"
    return name, exports.stream_csv(qs), n


def with_week_ago(qs: QuerySet[Segment], today: dt.date | None = None) -> QuerySet[Segment]:
    """Annotates `week_ago`: the latest daily count at least seven days old (None if none)."""
    cutoff = (today or timezone.localdate()) - dt.timedelta(days=7)
    latest = SegmentCount.objects.filter(segment=OuterRef("pk"), day__lte=cutoff).order_by("-day")
    return qs.annotate(week_ago=Subquery(latest.values("members")[:1]))


def growth(segment: Segment) -> int | None:
    """Members now minus a week ago; None while there is no count that old."""
    week_ago = getattr(segment, "week_ago", None)
    return None if week_ago is None else segment.member_count - week_ago


def chart(segment: Segment, today: dt.date | None = None, days: int = CHART_DAYS) -> dict[str, Any] | None:
    """The growth chart as SVG coordinates (attributes only, the CSP allows no inline style):
    one point per day with a count, today's point from the current member count."""
    today = today or timezone.localdate()
    start = today - dt.timedelta(days=days - 1)
    points = dict(SegmentCount.objects.filter(segment=segment, day__gte=start, day__lte=today)
                  .values_list("day", "members"))
    if segment.computed_at is not None:
        points[today] = segment.member_count
    if not points:
        return None
    top = max(max(points.values()), 1)
    first = min(points)
    span = max((today - first).days, 1)

    def x(day: dt.date) -> float:  # a single day sits at the right edge: it is today
        return round((day - first).days / span * CHART_W, 1) if len(points) > 1 else float(CHART_W)

    def y(value: int) -> float:
        return round(CHART_H - value / top * (CHART_H - 10), 1)

    ordered = sorted(points.items())
    coords = [(x(d), y(v), d, v) for d, v in ordered]
    line = " ".join(f"{cx},{cy}" for cx, cy, _d, _v in coords)
    area = f"0,{CHART_H} {line} {coords[-1][0]},{CHART_H}" if len(coords) > 1 else ""
    return {"w": CHART_W, "h": CHART_H, "line": line, "area": area, "top": top, "first": first, "last": today,
            "dots": [{"x": cx, "y": cy, "day": d, "members": v} for cx, cy, d, v in coords]}
