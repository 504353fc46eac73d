"""Retention of the event log: events older than KIZUNA_EVENT_RETENTION_DAYS are deleted, with
their page views. Sessions (one summary row per visit) stay: removing one would look for its
events through a column that has no index on purpose (every index costs each inserted event).

Deletion is batched by the `event_time` index (oldest first, a few thousand rows a transaction),
so it never holds long locks, never blocks ingestion and can stop anywhere: the next pass goes
on where this one stopped. Whatever points at an event follows its model's rule (page views go
with it; the score ledger keeps its entries, without the event). The log is not partitioned by
month; docs/decisions/0020-scale-out.md says why and what partitioning would take.

Every worker offers to run the pass; one at a time does (kizuna.db.locks).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from kizuna.db.locks import exclusive
from kizuna.db.writelock import sqlite_writer
from kizuna.events.models import Event

log = logging.getLogger(__name__)

BATCH = 5000
EVERY_SECONDS = 3600.0


def retention_days() -> int:
    """0 keeps events for ever (the default)."""
    return getattr(settings, "KIZUNA_EVENT_RETENTION_DAYS", 0)


def cutoff(now: datetime | None = None) -> datetime | None:
    days = retention_days()
    return (now or timezone.now()) - timedelta(days=days) if days > 0 else None


def purge(now: datetime | None = None, *, batch: int = BATCH, max_batches: int | None = None) -> dict[str, int]:
    """Deletes the events older than the retention period; returns the rows deleted per model
    label (events.Event, events.PageView, …)."""
    before = cutoff(now)
    counts: dict[str, int] = {}
    if before is None:
        return counts
    done_batches = 0
    while max_batches is None or done_batches < max_batches:
        ids = list(Event.objects.filter(occurred_at__lt=before).order_by("occurred_at")
                   .values_list("id", flat=True)[:batch])
        if not ids:
            break
        with sqlite_writer(), transaction.atomic():
            _total, per_model = Event.objects.filter(id__in=ids).delete()
        for label, n in per_model.items():
            counts[label] = counts.get(label, 0) + n
        done_batches += 1
    if counts:
        log.info("retention: deleted %s older than %s", counts, before.isoformat())
    return counts


def run(stop: threading.Event, every_seconds: float = EVERY_SECONDS) -> None:
    """The worker's retention loop: a pass an hour, by one worker at a time."""
    while not stop.is_set():
        try:
            with exclusive("event-retention") as mine:
                if mine:
                    purge()
        except Exception:  # noqa: BLE001 - the loop must survive a lost connection
            log.exception("event retention failed")
        close_old_connections()
        stop.wait(every_seconds)
