"""Keeping segment membership current: in full, and incrementally per contact.

- `recompute(segment)`: the whole filter in one SQL query, then only the difference is written,
  with set-based SQL (INSERT … SELECT, DELETE) rather than a Python object per row.
- `refresh_contacts(ids, …)`: after events or edits, only those contacts, and only against the
  segments whose triggers (filters.triggers) the change can touch, all of them in one query
  (filters.match_segments); segments that use a changed segment follow, in dependency order.
- `refresh_due()`: segments whose result moves with time (windows, relative dates, decaying
  engagement) or depends on changes that are not announced (tags, lists, consent, imports) are
  recomputed when they are due, so a contact leaves "visited in the last 30 days" on day 31.

Every entry and exit is one `SegmentChange` row, written in the transaction that changes the
membership: exactly once per change, in order, for journeys to start from.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.locks import exclusive
from kizuna.db.loops import repeat
from kizuna.db.writelock import sqlite_writer
from kizuna.segments import filters
from kizuna.segments.models import Membership, Segment, SegmentChange, SegmentCount

REFRESH_EVERY = timedelta(minutes=10)
# Changes no signal announces: a segment that reads these is recomputed when due.
UNANNOUNCED = {"tag", "list", "consent", "company"}
# What processing an event can change besides the event itself (scores, stage, owner, activity).
EVENT_SIDE_EFFECTS = {"score", "lifecycle_stage", "owner", "last_activity_at", "updated_at"}
EMAIL_EVENTS = {"Email Sent", "Email Opened", "Email Clicked", "Email Bounced", "Unsubscribed"}
CHUNK = 5000
MAX_WAVES = 64


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


def _tables() -> tuple[str, str, str]:
    return Membership._meta.db_table, SegmentChange._meta.db_table, Segment._meta.db_table


def _write_full(segment: Segment, qs, now: datetime) -> tuple[int, int, int, list[int]]:
    """Writes a full result with set-based SQL: the filter's query runs once, into a temporary
    table, and the entries, exits and their SegmentChange rows are INSERT … SELECT and DELETE
    statements, not one Python object per row. Returns (entered, exited, members, changed ids);
    the changed ids are read only when another segment depends on this one.

    On PostgreSQL the change rows are made from what the INSERT and DELETE actually did
    (RETURNING), so an event refreshing the same contact meanwhile is not recorded twice; on
    SQLite writers take turns anyway."""
    sql, params = qs.order_by().values("pk").query.sql_with_params()
    members, changes, _segments = _tables()
    wanted, pk, at = "kizuna_segment_wanted", segment.pk, connection.ops.adapt_datetimefield_value(now)
    new = (f"FROM {wanted} w WHERE NOT EXISTS (SELECT 1 FROM {members} m "
           f"WHERE m.segment_id = %s AND m.contact_id = w.contact_id)")
    gone = (f"FROM {members} m WHERE m.segment_id = %s AND NOT EXISTS "
            f"(SELECT 1 FROM {wanted} w WHERE w.contact_id = m.contact_id)")
    insert_members = (f"INSERT INTO {members} (segment_id, contact_id, since) "
                      f"SELECT %s, w.contact_id, %s {new} ORDER BY w.contact_id ON CONFLICT DO NOTHING")
    delete_members = (f"DELETE FROM {members} WHERE segment_id = %s AND NOT EXISTS "
                      f"(SELECT 1 FROM {wanted} w WHERE w.contact_id = {members}.contact_id)")
    record = f"INSERT INTO {changes} (segment_id, contact_id, kind, at) "
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {wanted}")
        cur.execute(f"CREATE TEMPORARY TABLE {wanted} (contact_id bigint PRIMARY KEY)")
        try:
            cur.execute(f"INSERT INTO {wanted} (contact_id) {sql}", params)  # noqa: S608 - compiled by Django
            changed: list[int] = []
            if _dependents({pk}):
                cur.execute(f"SELECT w.contact_id {new} UNION ALL SELECT m.contact_id {gone}", [pk, pk])  # noqa: S608
                changed = [row[0] for row in cur.fetchall()]
            if connection.vendor == "postgresql":
                cur.execute(f"ANALYZE {wanted}")
                cur.execute(f"WITH done AS ({insert_members} RETURNING contact_id) "  # noqa: S608
                            f"{record} SELECT %s, contact_id, %s, %s FROM done ORDER BY contact_id",
                            [pk, at, pk, pk, SegmentChange.Kind.ENTERED, at])
                entered = cur.rowcount
                cur.execute(f"WITH done AS ({delete_members} RETURNING contact_id) "  # noqa: S608
                            f"{record} SELECT %s, contact_id, %s, %s FROM done ORDER BY contact_id",
                            [pk, pk, SegmentChange.Kind.EXITED, at])
                exited = cur.rowcount
            else:
                cur.execute(f"{record} SELECT %s, w.contact_id, %s, %s {new} ORDER BY w.contact_id",  # noqa: S608
                            [pk, SegmentChange.Kind.ENTERED, at, pk])
                entered = cur.rowcount
                cur.execute(f"{record} SELECT %s, m.contact_id, %s, %s {gone} ORDER BY m.contact_id",  # noqa: S608
                            [pk, SegmentChange.Kind.EXITED, at, pk])
                exited = cur.rowcount
                cur.execute(insert_members, [pk, at, pk])
                cur.execute(delete_members, [pk])
            cur.execute(f"SELECT count(*) FROM {wanted}")  # noqa: S608
            total = cur.fetchone()[0]
        finally:
            cur.execute(f"DROP TABLE IF EXISTS {wanted}")
    return entered, exited, total, changed


def recompute(segment: Segment, now: datetime | None = None) -> tuple[int, int]:
    """Full evaluation; writes only the difference. Returns (entered, exited)."""
    now = now or timezone.now()
    started = time.perf_counter()
    qs = filters.compile_queryset(segment.filter, now, scoring_models())
    with sqlite_writer(), transaction.atomic():
        _announce_change_writer()
        entered, exited, total, changed = _write_full(segment, qs, now)
        Segment.objects.filter(pk=segment.pk).update(
            member_count=total, computed_at=now, compute_ms=int((time.perf_counter() - started) * 1000))
        # A filter saved while this ran (updated_at moved) still needs its own full recompute.
        Segment.objects.filter(pk=segment.pk, updated_at=segment.updated_at).update(needs_full=False)
        SegmentCount.objects.update_or_create(segment=segment, day=timezone.localdate(now),
                                              defaults={"members": total})
    if changed:
        _cascade({segment.pk: set(changed)}, now)
    return entered, exited


# On PostgreSQL a full recompute can hold tens of thousands of uncommitted SegmentChange ids
# while shorter transactions commit higher ones. Readers that follow changes by id (journeys)
# wait until no recompute is in flight, so they never step past its ids: recomputes hold this
# advisory lock shared, a reader tries it exclusively.
CHANGE_WRITERS_LOCK = 0x6B7A_5345  # "kzSE"


def _announce_change_writer() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", [CHANGE_WRITERS_LOCK])


def changes_settled() -> bool:
    """In a transaction: True when no full recompute is writing changes (and none can start
    until this transaction ends). Always True on SQLite, where writers take turns."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [CHANGE_WRITERS_LOCK])
        return bool(cur.fetchone()[0])


def _definitions() -> list[Segment]:
    """Every segment's id, filter, triggers and state: what a refresh needs, read with one plain
    query (this runs for every processed event)."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT id, filter, triggers, needs_full FROM {_tables()[2]}")  # noqa: S608
        rows = cur.fetchall()

    def load(value):
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    return [Segment(id=pk, filter=load(tree), triggers=load(triggers) or {}, needs_full=bool(needs_full))
            for pk, tree, triggers, needs_full in rows]


def _dependents(segment_ids: set[int], segments: Iterable[Segment] | None = None) -> list[Segment]:
    segments = _definitions() if segments is None else segments
    return [s for s in segments if set((s.triggers or {}).get("segments", [])) & segment_ids]


def _cascade(changed: dict[int, set[int]], now: datetime) -> int:
    """Segments that use a changed segment follow, for the contacts that moved."""
    segments = _definitions()
    pending: dict[int, set[int]] = {}
    for segment_id, contact_ids in changed.items():
        for dependent in _dependents({segment_id}, segments):
            pending.setdefault(dependent.pk, set()).update(contact_ids)
    return _refresh(segments, pending, now)


def _refresh(segments: list[Segment], pending: dict[int, set[int]], now: datetime) -> int:
    """Re-evaluates segments for some contacts in waves: a segment waits while one it reads is
    still to be refreshed, and the dependents of a segment that changed join the next wave.
    Returns how many memberships changed."""
    by_id = {s.pk: s for s in segments}
    changed = 0
    for _wave in range(MAX_WAVES):  # cycles are refused when saving; the limit is only a guard
        pending = {pk: ids for pk, ids in pending.items() if pk in by_id and ids}
        if not pending:
            break
        ready = {pk: ids for pk, ids in pending.items()
                 if not set((by_id[pk].triggers or {}).get("segments", [])) & (pending.keys() - {pk})} or pending
        pending = {pk: ids for pk, ids in pending.items() if pk not in ready}
        moved = _refresh_many([by_id[pk] for pk in ready], set().union(*ready.values()), now)
        for segment_id, contact_ids in moved.items():
            changed += len(contact_ids)
            for dependent in _dependents({segment_id}, segments):
                pending.setdefault(dependent.pk, set()).update(contact_ids)
    return changed


def _refresh_many(segments: list[Segment], contact_ids: set[int], now: datetime) -> dict[int, set[int]]:
    """Re-evaluates several segments for some contacts: one query evaluates them all and reads
    their memberships, and only when something moved are the changes written. Returns, per
    segment, the contacts whose membership changed."""
    moved: dict[int, set[int]] = {}
    ids = sorted(contact_ids)
    for start in range(0, len(ids), CHUNK):
        part = ids[start:start + CHUNK]
        wanted, current = filters.match_segments({s.pk: s.filter for s in segments}, part, now)
        if wanted == current:
            continue
        # No savepoint of its own: inside the event batch's transaction a failure fails the batch.
        with sqlite_writer(), transaction.atomic(savepoint=False):
            done = _write_changes({pk: wanted[pk] - current[pk] for pk in wanted},
                                  {pk: current[pk] - wanted[pk] for pk in wanted}, now)
        for pk, contacts in done.items():
            moved.setdefault(pk, set()).update(contacts)
    return moved


def _write_changes(entered: dict[int, set[int]], exited: dict[int, set[int]], now: datetime) -> dict[int, set[int]]:
    """Writes entries and exits, a statement each, and records only what the INSERT and DELETE
    actually did (RETURNING): when another writer made the same change first, the unique
    membership decides and the change is recorded once. Returns the contacts that moved."""
    members, changes, segments = _tables()
    at = connection.ops.adapt_datetimefield_value(now)
    came = [(pk, c) for pk in sorted(entered) for c in sorted(entered[pk])]
    left = [(pk, sorted(cs)) for pk, cs in sorted(exited.items()) if cs]
    if connection.vendor == "postgresql":
        return _write_changes_together(came, [(pk, c) for pk, cs in left for c in cs], at)
    done_in: list[tuple[int, int]] = []
    done_out: list[tuple[int, int]] = []
    with connection.cursor() as cur:
        for batch in _batches(came):
            cur.execute(f"INSERT INTO {members} (segment_id, contact_id, since) VALUES "  # noqa: S608
                        f"{', '.join(['(%s, %s, %s)'] * len(batch))} ON CONFLICT DO NOTHING "
                        "RETURNING segment_id, contact_id", [v for pk, c in batch for v in (pk, c, at)])
            done_in += cur.fetchall()
        for pk, contacts in left:
            for batch in _batches(contacts):
                cur.execute(f"DELETE FROM {members} WHERE segment_id = %s AND contact_id IN "  # noqa: S608
                            f"({', '.join(['%s'] * len(batch))}) RETURNING segment_id, contact_id", [pk, *batch])
                done_out += cur.fetchall()
        done_in.sort()
        done_out.sort()
        rows = [(pk, c, SegmentChange.Kind.ENTERED) for pk, c in done_in] + [
            (pk, c, SegmentChange.Kind.EXITED) for pk, c in done_out]
        if not rows:
            return {}
        for batch in _batches(rows):
            cur.execute(f"INSERT INTO {changes} (segment_id, contact_id, kind, at) VALUES "  # noqa: S608
                        f"{', '.join(['(%s, %s, %s, %s)'] * len(batch))}", [v for row in batch for v in (*row, at)])
        delta: dict[int, int] = {}
        for pk, _c in done_in:
            delta[pk] = delta.get(pk, 0) + 1
        for pk, _c in done_out:
            delta[pk] = delta.get(pk, 0) - 1
        if any(delta.values()):
            cases = " ".join("WHEN %s THEN %s" for _ in delta)
            cur.execute(f"UPDATE {segments} SET member_count = member_count + CASE id {cases} ELSE 0 END "  # noqa: S608
                        f"WHERE id IN ({', '.join(['%s'] * len(delta))})",
                        [v for item in delta.items() for v in item] + list(delta))
    moved: dict[int, set[int]] = {}
    for pk, c in done_in + done_out:
        moved.setdefault(pk, set()).add(c)
    return moved


def _write_changes_together(came: list[tuple[int, int]], left: list[tuple[int, int]], at) -> dict[int, set[int]]:
    """_write_changes in one PostgreSQL statement (data-modifying WITH): the insert, the delete,
    their change rows and the member counts cost one round trip, not four."""
    members, changes, segments = _tables()
    moved: dict[int, set[int]] = {}
    none = "SELECT NULL::bigint, NULL::bigint WHERE false"
    with connection.cursor() as cur:
        for start in range(0, max(len(came), len(left)), 1000):
            part_in, part_out = came[start:start + 1000], left[start:start + 1000]
            rows_in = "VALUES " + ", ".join(["(%s::bigint, %s::bigint)"] * len(part_in)) if part_in else none
            rows_out = "VALUES " + ", ".join(["(%s::bigint, %s::bigint)"] * len(part_out)) if part_out else none
            cur.execute(f"""
                WITH came AS (INSERT INTO {members} (segment_id, contact_id, since)
                              SELECT v.s, v.c, %s FROM ({rows_in}) v(s, c) ORDER BY v.s, v.c
                              ON CONFLICT DO NOTHING RETURNING segment_id, contact_id),
                     gone AS (DELETE FROM {members} m USING ({rows_out}) v(s, c)
                              WHERE m.segment_id = v.s AND m.contact_id = v.c RETURNING m.segment_id, m.contact_id),
                     moved AS (SELECT segment_id, contact_id, %s AS kind FROM came
                               UNION ALL SELECT segment_id, contact_id, %s FROM gone),
                     logged AS (INSERT INTO {changes} (segment_id, contact_id, kind, at)
                                SELECT segment_id, contact_id, kind, %s FROM moved
                                ORDER BY kind <> %s, segment_id, contact_id),
                     counted AS (UPDATE {segments} s SET member_count = s.member_count + d.delta
                                 FROM (SELECT segment_id, sum(CASE WHEN kind = %s THEN 1 ELSE -1 END) AS delta
                                       FROM moved GROUP BY segment_id) d
                                 WHERE s.id = d.segment_id)
                SELECT segment_id, contact_id FROM moved""",  # noqa: S608 - table names only
                        [at, *(v for pair in part_in for v in pair), *(v for pair in part_out for v in pair),
                         SegmentChange.Kind.ENTERED, SegmentChange.Kind.EXITED, at, SegmentChange.Kind.ENTERED,
                         SegmentChange.Kind.ENTERED])
            for pk, contact_id in cur.fetchall():
                moved.setdefault(pk, set()).add(contact_id)
    return moved


def _batches(items: list, size: int = 1000) -> Iterator[list]:
    """Rows per statement, well under SQLite's limit of bound parameters."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def affected(segment: Segment, fields: set[str], events: set[str], email: bool) -> bool:
    """Whether a change of these fields, these events or email activity can move this segment."""
    t = segment.triggers or {}
    return bool(set(t.get("fields", [])) & fields or set(t.get("events", [])) & events
                or (email and t.get("email")))


def candidates(*, fields: set[str] = frozenset(), events: set[str] = frozenset(), email: bool = False) -> list[Segment]:
    """Segments that a change of these fields, these events or email activity can affect."""
    return [s for s in Segment.objects.filter(needs_full=False) if affected(s, set(fields), set(events), email)]


def refresh_contacts(contact_ids: Iterable[int], *, fields: set[str] = frozenset(), events: set[str] = frozenset(),
                     email: bool = False, now: datetime | None = None) -> int:
    """Incremental update after a change; returns how many memberships changed."""
    ids = {i for i in contact_ids if i}
    if not ids:
        return 0
    now = now or timezone.now()
    segments = _definitions()
    pending = {s.pk: set(ids) for s in segments
            if not s.needs_full and affected(s, set(fields), set(events), email)}
    return _refresh(segments, pending, now) if pending else 0


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
    for pk in [s.pk for s in Segment.objects.order_by("computed_at") if _due(s, now)]:
        # Several workers share the due segments: each is recomputed by the one that locks it,
        # after reading it again (the previous holder may have just recomputed it).
        with exclusive(f"segment-recompute:{pk}") as mine:
            segment = Segment.objects.filter(pk=pk).first() if mine else None
            if segment is not None and _due(segment, now):
                recompute(segment, now)
                done += 1
    return done


def _due(segment: Segment, now: datetime) -> bool:
    t = segment.triggers or {}
    moving = t.get("windowed") or set(t.get("fields", [])) & UNANNOUNCED or t.get("segments")
    stale = segment.computed_at is None or now - segment.computed_at >= REFRESH_EVERY
    return bool(segment.needs_full or (moving and stale))


def run(stop: threading.Event, idle_seconds: float = 5.0) -> None:
    """The worker's segment loop."""
    repeat(stop, refresh_due, idle_seconds=idle_seconds, what="segment refresh", steady=True)
