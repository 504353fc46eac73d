"""Retention of the event log: the age limit (KIZUNA_EVENT_RETENTION_DAYS) and the deleter
every rule that removes old events uses.

On PostgreSQL the log is partitioned by month (kizuna.events.partitions): months wholly older
than the cut-off are dropped at once. What is left (SQLite, the month the cut-off falls in, the
default partition) is deleted in batches by the `event_time` index, oldest first, a few thousand
rows a transaction, so it never holds long locks, never blocks ingestion and can stop anywhere:
the next pass goes on where this one stopped. Page views go with their events; the score ledger
keeps its entries, without the event. Sessions (one summary row per visit) stay: removing one
would look for its events through a column that has no index on purpose.

The hourly pass (`maintain`) also creates the coming months' partitions. Every worker offers to
run it; one at a time does (kizuna.db.locks). The privacy page's rules (kizuna.privacy.retention)
run in the same worker loop and delete through `delete_before` too.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kizuna.db.locks import exclusive
from kizuna.db.writelock import sqlite_writer
from kizuna.events import partitions
from kizuna.events.models import Event
from kizuna.events.personal_data import delete_events

log = logging.getLogger(__name__)

BATCH = 5000
EVERY_SECONDS = 3600.0


def retention_days() -> int:
    """0 keeps events for ever (the default)."""
    return getattr(settings, "KIZUNA_EVENT_RETENTION_DAYS", 0)


def cutoff(now: datetime | None = None) -> datetime | None:
    days = retention_days()
    return (now or timezone.now()) - timedelta(days=days) if days > 0 else None


def delete_before(before: datetime, *, batch: int = BATCH, max_batches: int | None = None) -> dict[str, int]:
    """Deletes the events that occurred before `before`; returns the rows deleted per model label
    (events.Event, events.PageView). `max_batches` bounds a pass (whole months are then kept for
    the next one)."""
    counts = partitions.drop_months_before(before) if max_batches is None else {}
    done_batches = 0
    while max_batches is None or done_batches < max_batches:
        ids = list(Event.objects.filter(occurred_at__lt=before).order_by("occurred_at")
                   .values_list("id", flat=True)[:batch])
        if not ids:
            break
        with sqlite_writer(), transaction.atomic():
            delete_events(ids, counts)
        done_batches += 1
    counts = {label: n for label, n in counts.items() if n}
    if counts:
        log.info("retention: deleted %s older than %s", counts, before.isoformat())
    return counts


def purge(now: datetime | None = None, *, batch: int = BATCH, max_batches: int | None = None) -> dict[str, int]:
    """Applies the age limit: deletes the events older than KIZUNA_EVENT_RETENTION_DAYS."""
    before = cutoff(now)
    return delete_before(before, batch=batch, max_batches=max_batches) if before else {}


def maintain(now: datetime | None = None) -> bool:
    """The hourly pass: the coming months' partitions, then the age limit. Returns False when
    another process is running it."""
    with exclusive("event-retention") as mine:
        if mine:
            partitions.ensure_months(now)
            purge(now)
        return mine
