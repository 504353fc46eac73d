"""One process at a time for the periodic work that every worker's loop offers to do.

Claimed work (event lanes, outbox rows, due journey steps, deliveries, tasks) is shared out row
by row with `SELECT … FOR UPDATE SKIP LOCKED`. Periodic passes over the whole database — bulk
scheduling, time triggers, segment refreshes, cooling hot leads, retention — have no row to
claim: run by N workers at once, they would be done N times. `exclusive(name)` lets exactly one
process do such a pass while the others skip it:

- PostgreSQL: a session advisory lock (`pg_try_advisory_lock`). A process that dies, or loses
  its connection, loses the lock with it, so a killed worker never leaves it held.
- SQLite: an exclusive `flock` on a file in the data directory (SQLite is one host anyway),
  released by the kernel when the process dies.

The lock only saves work. What the passes write is keyed or conditional already, so two passes
that do overlap (a connection lost mid-pass frees the lock early) still change nothing twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (advisory locks are numbered)."""
    return int.from_bytes(hashlib.blake2b(f"kizuna:{name}".encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def exclusive(name: str) -> Iterator[bool]:
    """Yields True when this process now holds the lock `name` (until the block ends), False
    when another process holds it. Never waits."""
    if connection.vendor == "postgresql":
        yield from _postgres(name)
    else:
        yield from _file(name)


def _postgres(name: str) -> Iterator[bool]:
    key = lock_key(name)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
        held = bool(cur.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:  # the connection is gone, and the lock went with it
                log.debug("advisory lock %s released with its lost connection", name)


def _file(name: str) -> Iterator[bool]:
    directory = settings.DATA_DIR / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"{name.replace(':', '-').replace('/', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
