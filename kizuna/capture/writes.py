"""Every write of the public form endpoints — a submission, its rate-limit bucket, a rejection
or a view counted — goes through one function, in groups.

Concurrent posts share one transaction through the tracking endpoints' group committer
(kizuna/events/committer.py): each request hands its write over and waits until the group is
committed, so it is still answered only once its submission is stored. On SQLite that is one
writer-lock turn and one commit for many posts instead of one each, and no pile-up of threads
waiting for the lock; on PostgreSQL one WAL flush. `KIZUNA_INGEST_GROUP_COMMIT=0` (as for the
tracking hits) writes each in its own transaction instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kizuna.capture import spam
from kizuna.capture.models import Submission
from kizuna.db.writelock import sqlite_writer
from kizuna.events.committer import GroupCommitter


@dataclass
class Write:
    form_id: int
    counts: list[str] = field(default_factory=list)  # counter kinds to add one to (a view, a rejection)
    ip: str | None = None  # set: take one from this address's rate-limit bucket first
    submission: Submission | None = None  # stored when the bucket allows it
    allowed: bool = True  # the answer: False when the rate limit refused it


def store(writes: list[Write]) -> None:
    """Applies a group of writes in one transaction (called again per write if the group fails)."""
    day = timezone.localdate()
    with sqlite_writer(), transaction.atomic():
        counts: Counter[tuple[int, str]] = Counter()
        rows: list[Submission] = []
        limited = [w for w in writes if w.ip is not None]
        for write, allowed in zip(limited, spam.allow([w.ip for w in limited]), strict=True):
            write.allowed = allowed  # the group's buckets in three statements
        for write in writes:
            counts.update((write.form_id, kind) for kind in write.counts)
            if not write.allowed:
                counts[(write.form_id, "rate_limited")] += 1
            elif write.submission is not None:
                write.submission.pk = None  # a retry of a failed group inserts afresh
                rows.append(write.submission)
        if rows:
            Submission.objects.bulk_create(rows)
        for (form_id, kind), n in counts.items():
            spam.count(form_id, kind, n, day=day)


_committer = GroupCommitter(store)


def record(write: Write) -> Write:
    """Writes and returns once committed (raises if the database refused it)."""
    if getattr(settings, "KIZUNA_INGEST_GROUP_COMMIT", True):
        _committer.write([write])
    else:
        store([write])
    return write
