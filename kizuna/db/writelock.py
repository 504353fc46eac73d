"""One writer at a time on SQLite, queued fairly in the kernel.

SQLite lets one process write at a time; a second one retries after sleeps that grow to 100 ms,
which is what a tracking hit's p99 would show with two web processes and a worker. Taking an
exclusive file lock first makes writers queue in the kernel and wake the moment the lock is
free. The SQLite backend (`kizuna.db.sqlite3`) takes this lock for every write transaction and
every autocommit write, so Django's own saves queue here too instead of polling.

A file lock is not fair: a worker that releases it and asks again a microsecond later usually
wins against a web request the kernel has only just woken. So a waiter announces itself with a
shared lock on a second file, and background processes (`set_background()`, the worker), after
releasing, wait until the announced waiters got their turn. Interactive writes are never
starved by a backlog of events or mail.

The lock is re-entrant per thread: code that takes it explicitly (`with sqlite_writer():`) can
open a transaction inside, which takes it again. On PostgreSQL this does nothing: rows are
locked, not the database.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

# How long a background writer waits, at most, for announced waiters to take their turn.
YIELD_LIMIT_SECONDS = 0.25

_thread_lock = threading.RLock()  # flock is per process; threads of one process queue here
_depth = 0  # guarded by _thread_lock
_fds: tuple[int, int] | None = None
_background = False


def set_background(value: bool = True) -> None:
    """Marks this process as background work that yields to waiting writers."""
    global _background
    _background = value


def _lock_fds() -> tuple[int, int]:
    global _fds
    if _fds is None:
        directory = settings.DATA_DIR
        _fds = (
            os.open(directory / "sqlite-writer.lock", os.O_RDWR | os.O_CREAT, 0o600),
            os.open(directory / "sqlite-writer.wait", os.O_RDWR | os.O_CREAT, 0o600),
        )
    return _fds


def acquire() -> None:
    global _depth
    _thread_lock.acquire()
    if _depth == 0:
        try:
            lock_fd, wait_fd = _lock_fds()
            fcntl.flock(wait_fd, fcntl.LOCK_SH)  # "I am waiting"
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            finally:
                fcntl.flock(wait_fd, fcntl.LOCK_UN)
        except BaseException:
            _thread_lock.release()
            raise
    _depth += 1


def release() -> None:
    global _depth
    _depth -= 1
    try:
        if _depth == 0:
            lock_fd, wait_fd = _lock_fds()
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            if _background:
                _let_waiters_in(wait_fd)
    finally:
        _thread_lock.release()


def _let_waiters_in(wait_fd: int) -> None:
    """Returns once no other process announces it is waiting (or after YIELD_LIMIT_SECONDS)."""
    deadline = time.monotonic() + YIELD_LIMIT_SECONDS
    pause = 0.0005
    while True:
        try:
            fcntl.flock(wait_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
            continue
        fcntl.flock(wait_fd, fcntl.LOCK_UN)
        return


def held() -> bool:
    """True when this thread holds the writer lock (for the backend's bookkeeping)."""
    return _depth > 0 and _thread_lock._is_owned()  # type: ignore[attr-defined]


@contextmanager
def sqlite_writer() -> Iterator[None]:
    """Holds the writer lock for a block that writes (on SQLite; a no-op elsewhere)."""
    if connection.vendor != "sqlite":
        yield
        return
    acquire()
    try:
        yield
    finally:
        release()
