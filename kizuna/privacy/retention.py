"""Retention rules, applied by the worker once a day and previewed on the settings page:

- contacts with no activity for N months are erased (their events anonymised or deleted);
  "activity" is the latest of last activity, last change, creation, and a human open or click;
- events older than N months are deleted or anonymised.

Both run in batches, so a first run on a large database neither holds one long transaction nor
stops the worker's other work for long.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.loops import repeat
from kizuna.db.writelock import sqlite_writer
from kizuna.events import retention as event_retention
from kizuna.privacy import erasure
from kizuna.privacy.models import EventPolicy, PrivacySettings

log = logging.getLogger(__name__)
BATCH = 500
RUN_EVERY = timedelta(hours=24)


def _months_ago(months: int, now: datetime) -> datetime:
    return now - timedelta(days=round(months * 30.44))


def inactive_contacts(months: int, now: datetime | None = None):
    """Contacts nothing has happened to since the cut-off."""
    from kizuna.messaging.models import Message

    cutoff = _months_ago(months, now or timezone.now())
    recent_mail = Message.objects.filter(contact=OuterRef("pk")).filter(
        Q(opened_at__gte=cutoff) | Q(clicked_at__gte=cutoff))
    return (Contact.objects.filter(created_at__lt=cutoff, updated_at__lt=cutoff)
            .filter(Q(last_activity_at__isnull=True) | Q(last_activity_at__lt=cutoff))
            .exclude(Exists(recent_mail)))


def old_events(months: int, now: datetime | None = None):
    from kizuna.events.models import Event

    return Event.objects.filter(occurred_at__lt=_months_ago(months, now or timezone.now()))


def preview(config: PrivacySettings, now: datetime | None = None) -> dict[str, int | None]:
    """What the next run would touch (the settings page shows it before anything is saved)."""
    return {
        "contacts": inactive_contacts(config.inactive_months, now).count() if config.inactive_months else None,
        "events": old_events(config.event_months, now).count() if config.event_months else None,
    }


def anonymise_events(ids: list[int]) -> int:
    """Anonymises these events (and their page views) as one batch."""
    from kizuna.events import personal_data

    with sqlite_writer(), transaction.atomic():
        return personal_data.anonymise_events(ids)


def run(config: PrivacySettings | None = None, now: datetime | None = None, *, limit: int | None = None) -> dict:
    """Applies both rules now; returns the counts (kept on the settings row for the page)."""
    config = config or PrivacySettings.current()
    now = now or timezone.now()
    done = {"contacts": 0, "events": 0}
    if config.inactive_months:
        while limit is None or done["contacts"] < limit:
            batch = list(inactive_contacts(config.inactive_months, now).order_by("id")[:BATCH])
            if not batch:
                break
            for contact in batch:
                erasure.erase_contact(contact, reason=erasure.RETENTION, events=config.inactive_events)
                done["contacts"] += 1
    if config.event_months and config.old_events == EventPolicy.DELETE:
        deleted = event_retention.delete_before(_months_ago(config.event_months, now), batch=BATCH * 10)
        done["events"] += deleted.get("events.Event", 0)
    elif config.event_months:
        # Anonymised events stay old: only those still naming someone are work.
        qs = old_events(config.event_months, now).filter(
            Q(contact__isnull=False) | ~Q(anonymous_id__startswith="erased-") | Q(ip__isnull=False) | ~Q(user_id=""))
        while True:
            ids = list(qs.order_by("id").values_list("id", flat=True)[:BATCH * 10])
            if not ids:
                break
            done["events"] += anonymise_events(ids)
            if len(ids) < BATCH * 10:
                break
    PrivacySettings.objects.filter(pk=config.pk).update(last_run_at=now, last_run=done)
    if any(done.values()):
        log.info("retention: %s contacts erased, %s events %s", done["contacts"], done["events"],
                 config.old_events)
    return done


def due(config: PrivacySettings, now: datetime | None = None) -> bool:
    if not (config.inactive_months or config.event_months):
        return False
    return config.last_run_at is None or (now or timezone.now()) - config.last_run_at >= RUN_EVERY


def run_if_due(now: datetime | None = None) -> dict | None:
    """Claims the daily run (a compare-and-set on last_run_at, so of several workers one runs it)."""
    now = now or timezone.now()
    config = PrivacySettings.current()
    if not due(config, now):
        return None
    with sqlite_writer():
        claimed = PrivacySettings.objects.filter(pk=config.pk, last_run_at=config.last_run_at).update(
            last_run_at=now)
    if not claimed:
        return None
    return run(config, now)


def loop(stop, idle_seconds: float = 600.0) -> None:
    """The worker's retention loop, for all old data: every ten minutes it checks whether the
    daily run of these rules is due, and every hour it runs the event log's own pass (next
    months' partitions, the operator's age limit KIZUNA_EVENT_RETENTION_DAYS)."""
    last_hourly: float | None = None

    def work() -> None:
        nonlocal last_hourly
        if last_hourly is None or time.monotonic() - last_hourly >= event_retention.EVERY_SECONDS:
            event_retention.maintain()
            last_hourly = time.monotonic()
        run_if_due()

    repeat(stop, work, idle_seconds=idle_seconds, what="retention run", steady=True)
