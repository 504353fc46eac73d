"""One writer at a time on SQLite, without SQLite's sleeping busy handler.

SQLite lets one process write at a time; a second one retries after sleeps that grow to 100 ms,
which is what a tracking hit's p99 would show with two web processes and a worker. Taking an
exclusive file lock first makes writers queue in the kernel and wake the moment the lock is
free. On PostgreSQL this does nothing: rows are locked, not the database.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

_thread_lock = threading.Lock()
_fd: int | None = None


def _lock_fd() -> int:
    global _fd
    if _fd is None:
        _fd = os.open(settings.DATA_DIR / "sqlite-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    return _fd


@contextmanager
def sqlite_writer() -> Iterator[None]:
    if connection.vendor != "sqlite":
        yield
        return
    with _thread_lock:  # flock is per process; threads of one process queue here
        fd = _lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
