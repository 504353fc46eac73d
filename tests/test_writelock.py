"""The SQLite writer lock: re-entrant, and a background process with a backlog lets a waiting
writer in at its next release instead of taking the lock straight back."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
from django.conf import settings

from kizuna.db import writelock


def _background_loop(data_dir: str, counter, stop) -> None:
    # A worker with a backlog: takes the lock again the moment it lets it go.
    settings.DATA_DIR  # noqa: B018 - settings are configured in the forked child already
    writelock._fds = None
    writelock.set_background()
    while not stop.is_set():
        writelock.acquire()
        deadline = time.perf_counter() + 0.001  # a batch's work, holding the lock
        while time.perf_counter() < deadline:
            pass
        counter.value += 1
        writelock.release()


def test_lock_is_reentrant_within_a_thread():
    writelock.acquire()
    writelock.acquire()
    writelock.release()
    assert writelock.held()
    writelock.release()
    assert not writelock.held()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_background_loop_yields_to_a_waiting_writer():
    ctx = multiprocessing.get_context("fork")
    counter, stop = ctx.Value("q", 0), ctx.Event()
    child = ctx.Process(target=_background_loop, args=(str(settings.DATA_DIR), counter, stop))
    child.start()
    try:
        while counter.value < 20:  # the loop is spinning
            pass
        writelock._lock_fds()  # opened before we count
        waits = []
        for _ in range(30):
            before = counter.value
            writelock.acquire()
            waits.append(counter.value - before)
            writelock.release()
        # Each time, the background loop finished the batch it was in, and then let us in.
        assert max(waits) <= 2, waits
    finally:
        stop.set()
        child.join(10)
