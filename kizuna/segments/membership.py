"""Keeping segment membership current: in full, and incrementally per contact.

- `recompute(segment)`: the whole filter in one SQL query, then only the difference is written.
- `refresh_contacts(ids, …)`: after events or edits, only those contacts, and only against the
  segments whose triggers (filters.triggers) the change can touch; segments that use a changed
  segment follow, in dependency order.
- `refresh_due()`: segments whose result moves with time (windows, relative dates, decaying
  engagement) or depends on changes that are not announced (tags, lists, consent, imports) are
  recomputed when they are due, so a contact leaves "visited in the last 30 days" on day 31.

Every entry and exit is one `SegmentChange` row, written in the transaction that changes the
membership: exactly once per change, in order, for journeys to start from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.db import close_old_connections, transaction
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.writelock import sqlite_writer
from kizuna.segments import filters
from kizuna.segments.models import Membership, Segment, SegmentChange, SegmentCount

log = logging.getLogger(__name__)

REFRESH_EVERY = timedelta(minutes=10)
# Changes no signal announces: a segment that reads these is recomputed when due.
UNANNOUNCED = {"tag", "list", "consent", "company"}
# What processing an event can change besides the event itself (scores, stage, owner, activity).
EVENT_SIDE_EFFECTS = {"score", "lifecycle_stage", "owner", "last_activity_at", "updated_at"}
EMAIL_EVENTS = {"Email Sent", "Email Opened", "Email Clicked", "Email Bounced", "Unsubscribed"}
CHUNK = 5000


def scoring_models() -> dict[int, float]:
    from kizuna.scoring.models import ScoringModel

    return dict(ScoringModel.objects.values_list("id", "half_life_days"))


def save_segment(segment: Segment, tree, *, ctx: filters.Context | None = None) -> Segment:
    """Checks and stores a filter (FilterError names the fault); the membership follows in the
    background (needs_full)."""
    ctx = ctx or filters.Context.load()
    checked = filters.check(tree, ctx, segment_id=segment.pk)
    segment.filter, segment.triggers = checked, filters.triggers(checked)
    segment.needs_full, segment.updated_at = True, timezone.now()
    segment.save()
    return segment


def _apply(segment: Segment, entered: Iterable[int], exited: Iterable[int], now: datetime) -> tuple[int, int]:
    entered, exited = sorted(set(entered)), sorted(set(exited))
    for start in range(0, len(entered), CHUNK):
        part = entered[start:start + CHUNK]
        Membership.objects.bulk_create([Membership(segment=segment, contact_id=c, since=now) for c in part],
                                       ignore_conflicts=True)
        SegmentChange.objects.bulk_create([SegmentChange(segment=segment, contact_id=c, kind="entered", at=now)
                                           for c in part])
    for start in range(0, len(exited), CHUNK):
        part = exited[start:start + CHUNK]
        Membership.objects.filter(segment=segment, contact_id__in=part).delete()
        SegmentChange.objects.bulk_create([SegmentChange(segment=segment, contact_id=c, kind="exited", at=now)
                                           for c in part])
    return len(entered), len(exited)


def recompute(segment: Segment, now: datetime | None = None) -> tuple[int, int]:
    """Full evaluation; writes only the difference. Returns (entered, exited)."""
    now = now or timezone.now()
    started = time.perf_counter()
    wanted = set(filters.compile_queryset(segment.filter, now, scoring_models()).values_list("pk", flat=True))
    with sqlite_writer(), transaction.atomic():
        current = set(Membership.objects.filter(segment=segment).values_list("contact_id", flat=True))
        result = _apply(segment, wanted - current, current - wanted, now)
        Segment.objects.filter(pk=segment.pk).update(
            member_count=len(wanted), computed_at=now, needs_full=False,
            compute_ms=int((time.perf_counter() - started) * 1000))
        SegmentCount.objects.update_or_create(segment=segment, day=timezone.localdate(now),
                                              defaults={"members": len(wanted)})
    if any(result):
        _cascade(segment, set(wanted ^ current), now)
    return result


def _dependents(segment_ids: set[int]) -> list[Segment]:
    return [s for s in Segment.objects.all() if set(s.triggers.get("segments", [])) & segment_ids]


def _cascade(segment: Segment, contact_ids: set[int], now: datetime, depth: int = 0) -> None:
    if depth > 16 or not contact_ids:
        return  # cycles are refused when saving; the depth is only a guard
    for dependent in _dependents({segment.pk}):
        changed = _refresh_one(dependent, contact_ids, now)
        if changed:
            _cascade(dependent, changed, now, depth + 1)


def _refresh_one(segment: Segment, contact_ids: set[int], now: datetime) -> set[int]:
    """Re-evaluates one segment for some contacts; returns those whose membership changed."""
    ids = sorted(contact_ids)
    base = Contact.objects.filter(pk__in=ids)
    wanted = set(filters.compile_queryset(segment.filter, now, scoring_models(), base=base).values_list(
        "pk", flat=True))
    with sqlite_writer(), transaction.atomic():
        current = set(Membership.objects.filter(segment=segment, contact_id__in=ids).values_list(
            "contact_id", flat=True))
        entered, exited = wanted - current, current - wanted
        if entered or exited:
            _apply(segment, entered, exited, now)
            Segment.objects.filter(pk=segment.pk).update(
                member_count=Membership.objects.filter(segment=segment).count())
    return entered | exited


def candidates(*, fields: set[str] = frozenset(), events: set[str] = frozenset(), email: bool = False) -> list[Segment]:
    """Segments that a change of these fields, these events or email activity can affect."""
    out = []
    for segment in Segment.objects.filter(needs_full=False):
        t = segment.triggers or {}
        if (set(t.get("fields", [])) & fields or set(t.get("events", [])) & events
                or (email and t.get("email"))):
            out.append(segment)
    return out


def refresh_contacts(contact_ids: Iterable[int], *, fields: set[str] = frozenset(), events: set[str] = frozenset(),
                     email: bool = False, now: datetime | None = None) -> int:
    """Incremental update after a change; returns how many memberships changed."""
    ids = {i for i in contact_ids if i}
    if not ids:
        return 0
    now = now or timezone.now()
    changed = 0
    for segment in candidates(fields=set(fields), events=set(events), email=email):
        moved = _refresh_one(segment, ids, now)
        changed += len(moved)
        _cascade(segment, moved, now)
    return changed


def on_events(events: Sequence, *, replay: bool = False) -> None:
    """Event-processing handler (settings.KIZUNA_EVENT_HANDLERS): runs after scoring, so scores,
    stages and owners changed by these events are seen too."""
    by_contact = {e.contact_id for e in events if e.contact_id}
    if not by_contact:
        return
    names = {"page" if e.type == "page" else e.name for e in events}
    fields = set(EVENT_SIDE_EFFECTS)
    if any(e.type == "identify" for e in events):
        fields |= set(filters.CONTACT_FIELDS) | {"custom", "company"}
    refresh_contacts(by_contact, fields=fields, events=names, email=bool(names & EMAIL_EVENTS))


def on_contact_saved(sender, actor, contact: Contact, changes: dict, created: bool, via: str, **kwargs) -> None:
    fields = {"tag" if k == "tags" else k.removesuffix("_id") for k in changes}
    if created:
        fields |= set(filters.CONTACT_FIELDS) | {"custom"}
    refresh_contacts([contact.pk], fields=fields)


def refresh_due(now: datetime | None = None) -> int:
    """Recomputes the segments that are due: new or edited ones, and those whose result moves
    with time or with changes nobody announces, every REFRESH_EVERY."""
    now = now or timezone.now()
    done = 0
    for segment in Segment.objects.order_by("computed_at"):
        t = segment.triggers or {}
        moving = t.get("windowed") or set(t.get("fields", [])) & UNANNOUNCED or t.get("segments")
        stale = segment.computed_at is None or now - segment.computed_at >= REFRESH_EVERY
        if segment.needs_full or (moving and stale):
            recompute(segment, now)
            done += 1
    return done


def run(stop: threading.Event, idle_seconds: float = 5.0) -> None:
    """The worker's segment loop."""
    while not stop.is_set():
        try:
            refresh_due()
        except Exception:  # noqa: BLE001 - the loop must survive a lost connection
            log.exception("segment refresh failed")
        close_old_connections()
        stop.wait(idle_seconds)
