"""What starts journeys, and what ends or resumes them from outside.

- Events: `on_events` is an event-processing handler (settings.KIZUNA_EVENT_HANDLERS); it runs
  inside the processing transaction, after scoring and segments, so an enrollment, a resumed
  wait or an exit commits exactly once with the events that caused it.
- Segment entries and exits: `poll_segment_changes` reads `SegmentChange` rows after a stored
  cursor. On PostgreSQL ids can commit out of order, so ids missing below the cursor are kept
  as gaps and looked at again for a few minutes; each change enrolls under the key
  `segment:<change id>`, so a change seen twice enrolls once.
- Date fields and schedules: `run_time_triggers`, from the worker loop, with one key per
  contact and date so a missed or repeated pass neither skips nor doubles anyone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.locks import exclusive
from kizuna.db.writelock import sqlite_writer
from kizuna.journeys import engine, timing
from kizuna.journeys.models import Journey, TriggerCursor
from kizuna.segments import filters
from kizuna.segments.membership import changes_settled, scoring_models
from kizuna.segments.models import SegmentChange

GAP_TTL = timedelta(minutes=5)
MAX_GAPS = 10000
CHANGE_BATCH = 5000
DATE_CATCH_UP_DAYS = 3  # a worker down for a weekend still sends the renewal mail
SCHEDULE_CATCH_UP = timedelta(days=1)  # a monthly mail is not sent weeks late


def live(kind: str) -> list[Journey]:
    return [j for j in Journey.objects.filter(status=Journey.Status.LIVE, current__isnull=False)
            .select_related("current") if j.current.graph["trigger"]["type"] == kind]


def live_since(journey: Journey) -> datetime | None:
    """When the journey last went live: what happened before that starts nothing."""
    value = (journey.trigger_state or {}).get("live_since")
    return datetime.fromisoformat(value) if value else None


def event_dict(event) -> dict:
    return {"type": event.type, "name": event.name, "path": event.path, "url": event.url, "title": event.title,
            "referrer": event.referrer, "properties": event.properties or {}, "occurred_at": event.occurred_at,
            "bot": bool(event.bot)}


def on_events(events: Sequence, *, replay: bool = False) -> None:
    """Event-processing handler: event triggers, waits for events, exit and goal checks."""
    known = [e for e in events if e.contact_id]
    if not known:
        return
    now = timezone.now()
    if replay:
        # Anonymous history just linked to a contact: only what happened lately starts anything.
        known = [e for e in known if e.occurred_at >= now - timedelta(days=1)]
    journeys = live("event")
    for journey in journeys:
        trigger = journey.current.graph["trigger"]
        node = {"event": trigger["event"], "where": trigger.get("where", []), "within_days": None}
        since = live_since(journey)
        for event in known:
            if since and event.received_at < since:  # received: the server's clock, not the browser's
                continue
            if event.bot or not filters._event_matches(event_dict(event), node, now):
                continue
            engine.enroll_many(journey, [event.contact_id], key=lambda _c, ev=event: f"event:{ev.pk or ev.message_id}",
                               now=now, context={"via": "event", "event": event.pk})
    engine.resume_waiting(known, now)
    engine.end_where({e.contact_id for e in known}, now)


def on_contact_saved(sender, actor, contact: Contact, changes: dict, created: bool, via: str, **kwargs) -> None:
    """An edit by hand, by API or by import can meet a journey's exit or goal at once."""
    if not created:
        engine.end_where([contact.pk])


# --- segment changes -------------------------------------------------------------------------

def poll_segment_changes(now: datetime | None = None, limit: int = CHANGE_BATCH) -> int:
    """Enrolls for the segment entries and exits since the last poll; returns changes read."""
    now = now or timezone.now()
    with sqlite_writer(), transaction.atomic():
        if not changes_settled():  # a full recompute is writing: read after it commits
            return 0
        cursor, _created = TriggerCursor.objects.get_or_create(name="segment_changes")
        # One reader at a time; another worker reading now makes this one skip, not wait.
        cursor = TriggerCursor.objects.select_for_update(
            skip_locked=connection.features.has_select_for_update_skip_locked).filter(pk=cursor.pk).first()
        if cursor is None:
            return 0
        gaps: dict[str, str] = dict(cursor.gaps or {})
        wanted = Q(id__gt=cursor.position)
        if gaps:
            wanted |= Q(id__in=[int(g) for g in gaps])
        rows = list(SegmentChange.objects.filter(wanted).order_by("id")
                    .values_list("id", "segment_id", "contact_id", "kind", "at")[:limit])
        seen = {r[0] for r in rows}
        for gap in [g for g in gaps if int(g) in seen]:
            del gaps[gap]
        top = max([cursor.position, *seen])
        # A first read starts at the oldest row it finds, not at id 1 (sequences need not start
        # there); only a row below that one still uncommitted at that very first read is missed.
        lower = cursor.position or (min(seen) if seen else 0)
        for missing in range(lower + 1, top):
            if missing not in seen and len(gaps) < MAX_GAPS:
                gaps[str(missing)] = now.isoformat()
        gaps = {g: at for g, at in gaps.items() if datetime.fromisoformat(at) > now - GAP_TTL}
        by_trigger: dict[tuple[int, str], list[tuple[int, int, datetime]]] = {}
        for change_id, segment_id, contact_id, kind, at in rows:
            by_trigger.setdefault((segment_id, kind), []).append((change_id, contact_id, at))
        for journey in live("segment"):
            trigger, since = journey.current.graph["trigger"], live_since(journey)
            for change_id, contact_id, at in by_trigger.get((trigger["segment"], trigger["on"]), []):
                if since and at < since:
                    continue
                engine.enroll_many(journey, [contact_id], key=lambda _c, c=change_id: f"segment:{c}", now=now,
                                   context={"via": "segment", "change": change_id})
        if rows:
            engine.end_where({r[2] for r in rows}, now)  # "left the segment" exits
        cursor.position, cursor.gaps, cursor.updated_at = top, gaps, now
        cursor.save()
    return len(rows)


# --- dates and schedules ---------------------------------------------------------------------

def _project_zone():
    from kizuna.messaging.models import SendingSettings

    return timing.zone(SendingSettings.get().default_time_zone)


def _contacts_with_date(field: str, day: dt.date, tz) -> list[int]:
    if field.startswith("custom."):
        return list(Contact.objects.filter(**{f"custom__{field[7:]}": day.isoformat()}).values_list("pk", flat=True))
    start = datetime.combine(day, dt.time(), tzinfo=tz)
    return list(Contact.objects.filter(**{f"{field}__gte": start, f"{field}__lt": start + timedelta(days=1)})
                .values_list("pk", flat=True))


def _date_trigger(journey: Journey, now: datetime, tz) -> int:
    trigger = journey.current.graph["trigger"]
    made = 0
    today = now.astimezone(tz).date()
    for back in range(DATE_CATCH_UP_DAYS, -1, -1):
        day = today - timedelta(days=back)
        hour, minute = (int(p) for p in trigger["at"].split(":"))
        if datetime.combine(day, dt.time(hour, minute), tzinfo=tz) > now:
            continue
        field_day = day - timedelta(days=trigger["offset_days"])
        ids = _contacts_with_date(trigger["field"], field_day, tz)
        made += engine.enroll_many(journey, ids, key=lambda c, d=field_day: f"date:{d.isoformat()}:{c}", now=now,
                                   context={"via": "date", "date": field_day.isoformat()})
    return made


def last_occurrence(trigger: dict, now: datetime, tz) -> datetime:
    """The latest scheduled moment at or before now (monthly on a day, weekly on a weekday)."""
    hour, minute = (int(p) for p in trigger["at"].split(":"))
    local = now.astimezone(tz)
    if trigger["every"] == "month":
        candidate = datetime(local.year, local.month, trigger["day"], hour, minute, tzinfo=tz)
        if candidate > now:
            year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
            candidate = datetime(year, month, trigger["day"], hour, minute, tzinfo=tz)
        return candidate
    day = local.date() - timedelta(days=(local.weekday() - trigger["day"]) % 7)
    candidate = datetime.combine(day, dt.time(hour, minute), tzinfo=tz)
    return candidate if candidate <= now else candidate - timedelta(days=7)


def _schedule_trigger(journey: Journey, now: datetime, tz) -> int:
    trigger = journey.current.graph["trigger"]
    occurrence = last_occurrence(trigger, now, tz)
    since = live_since(journey)
    done = journey.trigger_state.get("schedule_last")
    if (done and datetime.fromisoformat(done) >= occurrence) or (since and since > occurrence):
        return 0
    if now - occurrence > SCHEDULE_CATCH_UP:
        ids: list[int] = []  # missed by more than a day (the worker was down): too late to send
    else:
        audience = Contact.objects.all()
        if trigger.get("audience"):
            audience = filters.compile_queryset(trigger["audience"], now, scoring_models(), base=audience)
        ids = list(audience.values_list("pk", flat=True))
    made = engine.enroll_many(journey, ids, key=lambda c: f"schedule:{occurrence.date().isoformat()}:{c}", now=now,
                              context={"via": "schedule", "occurrence": occurrence.isoformat()})
    with sqlite_writer(), transaction.atomic():
        fresh = Journey.objects.select_for_update().get(pk=journey.pk)
        fresh.trigger_state = {**fresh.trigger_state, "schedule_last": occurrence.isoformat()}
        fresh.save(update_fields=["trigger_state"])
    return made


def run_time_triggers(now: datetime | None = None) -> int:
    """Date-field and schedule triggers; returns how many contacts were enrolled. Every worker
    offers to run them; one at a time does (the keys would make a second pass enroll nobody,
    after reading every candidate again)."""
    with exclusive("journey-time-triggers") as mine:
        return _run_time_triggers(now) if mine else 0


def _run_time_triggers(now: datetime | None) -> int:
    now = now or timezone.now()
    tz = _project_zone()
    made = 0
    for journey in live("date"):
        made += _date_trigger(journey, now, tz)
    for journey in live("schedule"):
        made += _schedule_trigger(journey, now, tz)
    return made
