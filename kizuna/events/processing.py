"""Processing: inbox → event log, per visitor in order, exactly once.

One batch is one transaction: it reads the oldest inbox rows of a lane, resolves identities,
enriches, builds sessions and page views, inserts the events, runs the registered handlers and
deletes the inbox rows. A crash anywhere rolls all of it back, and the rows are processed again
from the start; a message id already in the log is skipped, so nothing happens twice.

Lanes split the inbox by browser (or user id); a worker holds a lane's row lock while it works
on it, so several workers never process one visitor's events at the same time.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Min
from django.utils import timezone

from kizuna.db.writelock import sqlite_writer
from kizuna.events import enrichment, identity, referrers, registry, sessions
from kizuna.events.bulk import insert_rows
from kizuna.events.models import Event, IncomingEvent, ProcessingLane

log = logging.getLogger(__name__)
# Bigger batches amortise per-batch queries; on SQLite a batch also holds the write lock that
# ingestion waits for, so 1,000 (~0.3 s of work) keeps hits fast while the worker is busy.
BATCH_SIZE = getattr(settings, "KIZUNA_EVENT_BATCH", 1000)


def lane_count() -> int:
    return getattr(settings, "KIZUNA_EVENT_LANES", 4)


def _ip(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def build_event(data: dict[str, Any], now: datetime) -> Event:
    """The log row for one normalised message (see ingest.normalize)."""
    context = data.get("context") or {}
    properties = dict(data.get("properties") or {})
    if data["type"] == "alias":
        properties["previousId"] = data.get("previousId", "")
    if data.get("groupId"):
        properties["groupId"] = data["groupId"]
    url = data.get("url") or ""
    campaign = context.get("campaign") if isinstance(context.get("campaign"), dict) else {}
    utm = referrers.utm_from_url(url) if url else {}

    def utm_value(key: str, segment_key: str) -> str:
        value = campaign.get(segment_key)
        return (value if isinstance(value, str) and value else utm.get(key, ""))[:200]

    return Event(
        message_id=data["messageId"], type=data["type"], name=(data.get("name") or "")[:200],
        properties=properties, traits=data.get("traits") or {}, context=context,
        anonymous_id=data.get("anonymousId", ""), user_id=data.get("userId", ""),
        occurred_at=datetime.fromisoformat(data["occurredAt"]), received_at=datetime.fromisoformat(data["receivedAt"]),
        processed_at=now, source=(data.get("source") or "")[:64], ip=_ip(data.get("ip")),
        user_agent=(data.get("userAgent") or "")[:500], url=url[:2000],
        path=(data.get("path") or (urlsplit(url).path if url.startswith(("http://", "https://")) else ""))[:1000],
        title=(data.get("title") or "")[:500], referrer=(data.get("referrer") or "")[:2000],
        utm_source=utm_value("utm_source", "source"), utm_medium=utm_value("utm_medium", "medium"),
        utm_campaign=utm_value("utm_campaign", "name"), utm_term=utm_value("utm_term", "term"),
        utm_content=utm_value("utm_content", "content"),
    )


def process_payloads(payloads: list[str]) -> list[Event]:
    """Turns inbox payloads into stored events and runs every stage; the caller holds the transaction."""
    now = timezone.now()
    datas = [orjson.loads(p) for p in payloads]
    ids = [d["messageId"] for d in datas]
    done = set(Event.objects.filter(message_id__in=ids).values_list("message_id", flat=True))
    events: list[Event] = []
    for data in datas:
        if data["messageId"] in done:
            continue  # a retry of a message already processed
        done.add(data["messageId"])
        events.append(build_event(data, now))
    if not events:
        return []
    replay_ids = identity.Resolver(events).resolve_all()
    builder = sessions.SessionBuilder(events, sessions.load_config())
    builder.apply_all()
    builder.save_sessions()
    insert_rows(Event, events)
    builder.save_pages()
    registry.dispatch(events, replay=False)
    if replay_ids:
        replayed = list(Event.objects.filter(id__in=replay_ids).order_by("occurred_at", "id"))
        registry.dispatch(replayed, replay=True)
    return events


def _claim(number: int) -> bool:
    """Locks the lane for this transaction; another worker holding it makes us skip it."""
    query = ProcessingLane.objects.filter(number=number)
    if connection.features.has_select_for_update_skip_locked:
        return query.select_for_update(skip_locked=True).exists()
    return query.exists()  # SQLite: the IMMEDIATE transaction already serialises writers


def ensure_lanes() -> None:
    existing = set(ProcessingLane.objects.values_list("number", flat=True))
    ProcessingLane.objects.bulk_create(
        [ProcessingLane(number=n) for n in range(lane_count()) if n not in existing], ignore_conflicts=True
    )


def process_lane(number: int, limit: int = BATCH_SIZE) -> int:
    """Processes one batch of one lane; returns how many inbox rows it consumed."""
    try:
        with sqlite_writer(), transaction.atomic():
            if not _claim(number):
                return 0
            rows = list(
                IncomingEvent.objects.filter(lane=number, error="").order_by("id").values_list("id", "payload")[:limit]
            )
            if not rows:
                return 0
            process_payloads([p for _, p in rows])
            IncomingEvent.objects.filter(id__in=[i for i, _ in rows]).delete()
            ProcessingLane.objects.filter(number=number).update(
                processed=F("processed") + len(rows), last_processed_at=timezone.now()
            )
            return len(rows)
    except Exception:
        log.exception("event batch failed in lane %s; retrying its events one by one", number)
        return _process_one_by_one(number, limit)


def _process_one_by_one(number: int, limit: int) -> int:
    """Isolates a message that cannot be processed: it stays in the inbox with its error
    (shown in the UI, retryable), and the lane moves on."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()  # the failure was the connection itself; reconnect
    ids = list(IncomingEvent.objects.filter(lane=number, error="").order_by("id").values_list("id", flat=True)[:limit])
    for inbox_id in ids:
        try:
            with sqlite_writer(), transaction.atomic():
                row = IncomingEvent.objects.filter(id=inbox_id).values_list("payload", flat=True).first()
                if row is None:
                    continue
                process_payloads([row])
                IncomingEvent.objects.filter(id=inbox_id).delete()
                ProcessingLane.objects.filter(number=number).update(
                    processed=F("processed") + 1, last_processed_at=timezone.now()
                )
        except Exception as exc:  # noqa: BLE001 - recorded on the row, never dropped
            log.exception("event %s could not be processed", inbox_id)
            IncomingEvent.objects.filter(id=inbox_id).update(error=f"{type(exc).__name__}: {exc}"[:2000])
    return len(ids)


def process_available(limit: int = BATCH_SIZE) -> int:
    """One pass over every lane."""
    return sum(process_lane(n, limit) for n in range(lane_count()))


def drain(limit: int = BATCH_SIZE) -> int:
    """Processes until the inbox is empty (tests, `kizuna process_events --drain`)."""
    ensure_lanes()
    total = 0
    while True:
        done = process_available(limit)
        if not done:
            return total
        total += done


def warm_up() -> None:
    """Loads the user-agent rules, crawler list and IP data now, not in the first batch."""
    sample = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"
    enrichment.parse_user_agent(sample)
    enrichment.is_bot(sample, "192.0.2.1", enrichment.BotRules())
    enrichment.lookup_ip("8.8.8.8")


def run(stop: threading.Event, idle_seconds: float = 0.2) -> None:
    """The worker loop: keeps processing until `stop` is set."""
    ready = False
    while not stop.is_set():
        try:
            if not ready:  # a database not reachable yet must not end the loop either
                ensure_lanes()
                warm_up()
                ready = True
            done = process_available()
        except Exception:  # noqa: BLE001 - a lost database connection must not end the worker
            log.exception("event processing pass failed")
            close_old_connections()
            done = 0
        if not done:
            close_old_connections()
            stop.wait(idle_seconds)


def retry_failed() -> int:
    """Puts messages that failed processing back in line (after a fix)."""
    return IncomingEvent.objects.exclude(error="").update(error="")


def lag() -> dict[str, Any]:
    """What the health endpoint and the UI show: how far processing is behind ingestion."""
    pending = IncomingEvent.objects.filter(error="")
    oldest = pending.aggregate(at=Min("received_at"))["at"]
    count = pending.count()
    failed = IncomingEvent.objects.exclude(error="").count()
    seconds = max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else 0.0
    return {"pending": count, "failed": failed, "lag_seconds": round(seconds, 1), "oldest_received_at": oldest}
