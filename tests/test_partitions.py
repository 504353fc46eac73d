"""The event log partitioned by month on PostgreSQL: events land in their month's partition, the
worker creates the coming months, retention drops whole months (page views deleted, the ledger
keeping its points), and a retried message is still stored once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.events import ingest, partitions, processing, retention
from kizuna.events.models import Event, PageView
from kizuna.scoring.models import ScoreEntry, ScoringModel

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("the event log is partitioned on PostgreSQL only")


def pages_at(anonymous_id: str, at: datetime, pages: int) -> None:
    """Ingests and processes `pages` page views of one browser from `at` on, a second apart."""
    messages = [{"type": "page", "anonymousId": anonymous_id, "messageId": f"{anonymous_id}-{n}",
                 "timestamp": (at + timedelta(seconds=n)).isoformat(),
                 "context": {"page": {"url": f"https://example.co.jp/p{n}", "path": f"/p{n}"}}}
                for n in range(pages)]
    result = ingest.ingest(messages, ingest.RequestInfo(ip="126.33.10.20", user_agent="Mozilla/5.0 Chrome/131"))
    assert not result.rejected, result.rejected
    processing.drain()


def _where(message_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM events_event WHERE message_id = %s", [message_id])
        return cursor.fetchone()[0]


def test_events_land_in_their_month_and_the_worker_creates_the_coming_months():
    now = timezone.now()
    assert partitions.enabled()
    this_month = partitions.partition_name(partitions.month_of(now))
    pages_at("b1", now - timedelta(minutes=5), 2)
    assert _where("b1-0") == this_month
    # Four months on, the pass creates that month and the three after it; nothing existing is touched.
    later = now + timedelta(days=125)
    created = partitions.ensure_months(later)
    first = partitions.month_of(later)
    expected = [first]
    for _ in range(3):
        expected.append(partitions.next_month(expected[-1]))
    assert created[-4:] == [partitions.partition_name(m) for m in expected]
    assert partitions.ensure_months(later) == []  # idempotent
    names = [m.name for m in partitions.months()]
    assert this_month in names and names == sorted(names)


def test_a_month_with_rows_in_the_default_partition_keeps_them_there():
    far = datetime(2035, 6, 15, tzinfo=UTC)
    Event.objects.create(message_id="future", type="track", name="X", occurred_at=far, received_at=far,
                         processed_at=far)
    assert _where("future") == partitions.DEFAULT
    assert partitions.ensure_months(far, ahead=0) == []  # would have to move the row: left alone
    assert _where("future") == partitions.DEFAULT
    assert Event.objects.filter(message_id="future").count() == 1


def test_retention_drops_whole_months_with_their_page_views_and_keeps_the_ledger(settings):
    now = timezone.now()
    old_month = partitions.month_of(now - timedelta(days=100))
    with connection.cursor() as cursor:
        assert partitions.create_month(cursor, old_month)
    old_at = datetime(old_month.year, old_month.month, 2, 9, tzinfo=UTC)
    pages_at("old", old_at, 4)
    pages_at("new", now - timedelta(minutes=1), 2)
    assert _where("old-0") == partitions.partition_name(old_month)
    old = list(Event.objects.filter(anonymous_id="old"))
    entry = ScoreEntry.objects.create(model=ScoringModel.objects.create(name="Partitions"),
                                      contact=Contact.objects.create(email="p@example.jp"),
                                      kind=ScoreEntry.Kind.ENGAGEMENT, points=7, rule_name="visit",
                                      at=old[0].occurred_at, event=old[0])
    assert PageView.objects.filter(event__in=old).count() == 4

    settings.KIZUNA_EVENT_RETENTION_DAYS = 40  # the old month ended at least 69 days ago
    counts = retention.purge()
    assert counts == {"events.PageView": 4, "events.Event": 4}
    assert partitions.partition_name(old_month) not in [m.name for m in partitions.months()]
    assert list(Event.objects.values_list("anonymous_id", flat=True).distinct()) == ["new"]
    assert PageView.objects.count() == 2
    entry.refresh_from_db()
    assert entry.event_id is None and entry.points == 7


def test_a_retried_message_is_stored_once_without_a_unique_column():
    at = timezone.now() - timedelta(minutes=3)
    pages_at("retry", at, 3)
    pages_at("retry", at, 3)  # the same message ids again, after they were processed
    assert Event.objects.filter(anonymous_id="retry").count() == 3
    assert PageView.objects.filter(anonymous_id="retry").count() == 3


def test_ids_keep_coming_from_one_sequence():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('events_event', 'id')")
        assert cursor.fetchone()[0]
    pages_at("ids", timezone.now() - timedelta(minutes=2), 3)
    ids = sorted(Event.objects.filter(anonymous_id="ids").values_list("id", flat=True))
    assert len(set(ids)) == 3 and Event.objects.get(pk=ids[0]).anonymous_id == "ids"
