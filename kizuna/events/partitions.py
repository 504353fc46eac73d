"""The event log partitioned by month on PostgreSQL.

`events_event` is a table partitioned by range of `occurred_at`: one partition per calendar
month (UTC) named `events_event_pYYYY_MM`, plus a default partition that takes whatever falls
outside them (history imported from long ago, clocks far in the future). Why:

- retention drops a whole month at once (`DROP TABLE` of the partition) instead of deleting
  millions of rows one by one, leaving no dead rows for VACUUM;
- queries limited by time read only the months they need (partition pruning), and each
  month's indexes stay small enough to be cached.

The worker creates the coming months ahead of time (`ensure_months`), so new events land in
their month and not in the default partition. A month whose rows already sit in the default
partition is left there (creating the partition would have to move them under a lock); such
rows are deleted in batches by retention like on SQLite.

The consequences for the schema (docs/decisions/0022-event-partitions.md): the primary key is
(id, occurred_at) in the database, `message_id` is no longer unique in the database, and the
page views' and score ledger's references to events carry no database constraint.

SQLite keeps one plain table; every function here does nothing there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db import connection, transaction
from django.utils import timezone

log = logging.getLogger(__name__)

TABLE = "events_event"
DEFAULT = "events_event_default"
MONTHS_AHEAD = 3
_NAME = re.compile(r"^events_event_p(\d{4})_(\d{2})$")


@dataclass(frozen=True)
class Month:
    """One monthly partition: rows with start <= occurred_at < end."""

    name: str
    start: datetime
    end: datetime


def enabled() -> bool:
    """Whether the event log is partitioned (PostgreSQL, after the migration)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
                       "WHERE c.relname = %s AND c.relnamespace = to_regnamespace(current_schema())", [TABLE])
        return cursor.fetchone() is not None


def month_of(at: datetime | date) -> date:
    if isinstance(at, datetime):
        at = at.astimezone(UTC)
    return date(at.year, at.month, 1)


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def _bounds(first: date) -> tuple[datetime, datetime]:
    end = next_month(first)
    return (datetime(first.year, first.month, 1, tzinfo=UTC), datetime(end.year, end.month, 1, tzinfo=UTC))


def partition_name(first: date) -> str:
    return f"{TABLE}_p{first.year:04d}_{first.month:02d}"


def months() -> list[Month]:
    """The monthly partitions that exist, oldest first."""
    if not enabled():
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                       "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", [TABLE])
        names = [row[0] for row in cursor.fetchall()]
    found = []
    for name in names:
        match = _NAME.match(name)
        if match:
            start, end = _bounds(date(int(match[1]), int(match[2]), 1))
            found.append(Month(name, start, end))
    return sorted(found, key=lambda m: m.start)


def create_month(cursor, first: date) -> bool:
    """Creates the partition of one month unless it exists or the default partition already
    holds rows of that month; returns whether it was created."""
    name = partition_name(first)
    start, end = _bounds(first)
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    if cursor.fetchone()[0]:
        return False
    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE occurred_at >= %s AND occurred_at < %s)",
                   [start, end])
    if cursor.fetchone()[0]:
        log.info("events of %s are in the default partition; no partition of their own", first.isoformat())
        return False
    cursor.execute(f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)", [start, end])
    return True


def ensure_months(now: datetime | None = None, ahead: int = MONTHS_AHEAD) -> list[str]:
    """Creates the partitions of this month and the next `ahead` ones; returns the new names.

    Run by the worker (one at a time, under the retention lock); cheap when they exist.
    """
    if not enabled():
        return []
    first = month_of(now or timezone.now())
    created = []
    for _ in range(ahead + 1):
        with transaction.atomic(), connection.cursor() as cursor:
            # Creating a partition locks the parent briefly; never wait long behind a report.
            cursor.execute("SET LOCAL lock_timeout = '5s'")
            if create_month(cursor, first):
                created.append(partition_name(first))
        first = next_month(first)
    if created:
        log.info("event partitions created: %s", ", ".join(created))
    return created


def drop_months_before(cutoff: datetime, batch: int = 5000) -> dict[str, int]:
    """Drops every monthly partition whose whole month is older than `cutoff`, after deleting
    the page views of its events and clearing the ledger's references to them (what the ORM's
    on_delete rules would do one row at a time). Returns rows removed per model label."""
    counts: dict[str, int] = {}
    for month in months():
        if month.end > cutoff:
            break
        with connection.cursor() as cursor:
            while True:  # page views go in batches: a month can hold millions
                with transaction.atomic():
                    cursor.execute(
                        "DELETE FROM events_pageview WHERE id IN (SELECT v.id FROM events_pageview v "
                        f"JOIN {month.name} e ON e.id = v.event_id LIMIT %s)", [batch])
                    deleted = cursor.rowcount
                counts["events.PageView"] = counts.get("events.PageView", 0) + deleted
                if deleted < batch:
                    break
            with transaction.atomic():
                cursor.execute("SET LOCAL lock_timeout = '30s'")
                # Deferred foreign-key checks still queued for the partition's rows in this
                # transaction would forbid dropping it: run them now.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute(f"UPDATE scoring_scoreentry SET event_id = NULL WHERE event_id IN "
                               f"(SELECT id FROM {month.name})")
                cursor.execute(f"SELECT COUNT(*) FROM {month.name}")
                rows = cursor.fetchone()[0]
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {month.name}")
                cursor.execute(f"DROP TABLE {month.name}")
        counts["events.Event"] = counts.get("events.Event", 0) + rows
        log.info("event partition %s dropped (%s events)", month.name, rows)
    return counts


# --- the conversion, run once by the migration --------------------------------------------------

def convert(cursor, now: datetime | None = None) -> None:
    """Turns the plain `events_event` into the partitioned table, rows, indexes, constraints and
    id sequence included. One transaction (the migration's); a large log is copied once."""
    old = f"{TABLE}_unpartitioned"
    cursor.execute("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), indisprimary, indisunique "
                   "FROM pg_index WHERE indrelid = %s::regclass", [TABLE])
    indexes = cursor.fetchall()
    cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                   "WHERE conrelid = %s::regclass AND contype = 'f'", [TABLE])
    foreign_keys = cursor.fetchall()
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {old}")
    for name, _definition, _primary, _unique in indexes:
        cursor.execute(f'ALTER INDEX "{name}" RENAME TO "{name[:50]}_unpart"')
    for name, _definition in foreign_keys:
        cursor.execute(f'ALTER TABLE {old} RENAME CONSTRAINT "{name}" TO "{name[:50]}_unpart"')
    cursor.execute(f"CREATE TABLE {TABLE} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
                   "PARTITION BY RANGE (occurred_at)")
    # Identity columns cannot be partitioned on this PostgreSQL: a sequence owned by the column.
    cursor.execute(f"CREATE SEQUENCE {TABLE}_id_partitioned_seq OWNED BY {TABLE}.id")
    cursor.execute(f"SELECT setval('{TABLE}_id_partitioned_seq', COALESCE((SELECT MAX(id) FROM {old}), 0) + 1, false)")
    cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{TABLE}_id_partitioned_seq')")
    cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, occurred_at)")
    for name, definition in foreign_keys:
        cursor.execute(f'ALTER TABLE {TABLE} ADD CONSTRAINT "{name}" {definition}')
    for _name, definition, primary, unique in indexes:
        if primary or unique:
            continue  # the key is (id, occurred_at) now; nothing else is unique
        # Read before the renames: the definition names the index and `events_event`, which is
        # now the partitioned table; an index on it is created on every partition.
        cursor.execute(definition)
    cursor.execute(f"CREATE TABLE {DEFAULT} PARTITION OF {TABLE} DEFAULT")
    cursor.execute(f"SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date FROM {old}")
    wanted = {row[0] for row in cursor.fetchall()}
    first = month_of(now or timezone.now())
    for _ in range(MONTHS_AHEAD + 1):
        wanted.add(first)
        first = next_month(first)
    for first in sorted(wanted):
        create_month(cursor, first)
    cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {old}")
    cursor.execute(f"DROP TABLE {old}")
