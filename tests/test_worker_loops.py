"""The worker's loops (kizuna.db.loops.repeat): a busy loop drains its backlog without resting, an
idle one rests, a steady one rests after every pass, and a failing pass is logged and survived."""

from __future__ import annotations

import logging
import threading

import pytest

from kizuna.db.loops import repeat

pytestmark = pytest.mark.django_db  # each pass ends by closing stale connections


class CountingStop(threading.Event):
    """A stop event that records each rest instead of sleeping, and stops after `passes` rests."""

    def __init__(self, rests: int):
        super().__init__()
        self.rests_left = rests
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.rests_left -= 1
        if self.rests_left <= 0:
            self.set()
        return self.is_set()


def counts(*values):
    it = iter(values)
    calls: list[int] = []

    def work():
        value = next(it)
        calls.append(value)
        if isinstance(value, Exception):
            raise value
        return value
    return work, calls


def test_a_busy_loop_drains_without_resting_and_rests_when_idle():
    stop = CountingStop(rests=2)
    work, calls = counts(3, 2, 0, 5, 0)
    repeat(stop, work, idle_seconds=0.5, what="test loop")
    assert calls == [3, 2, 0, 5, 0]  # rested twice: after each 0
    assert stop.waits == [0.5, 0.5]


def test_a_steady_loop_rests_after_every_pass():
    stop = CountingStop(rests=3)
    work, calls = counts(3, 2, 1)
    repeat(stop, work, idle_seconds=30, what="test loop", steady=True)
    assert calls == [3, 2, 1] and stop.waits == [30, 30, 30]


def test_a_failing_pass_is_logged_by_its_module_and_the_loop_goes_on(caplog):
    stop = CountingStop(rests=2)
    work, calls = counts(ConnectionError("database went away"), 4, 0)
    with caplog.at_level(logging.ERROR):
        repeat(stop, work, idle_seconds=1, what="test loop")
    assert calls[1:] == [4, 0] and stop.waits == [1, 1]  # rested after the failure, then drained
    failure = [r for r in caplog.records if r.getMessage() == "test loop failed"]
    assert len(failure) == 1 and failure[0].name == __name__ and failure[0].exc_info[0] is ConnectionError


def test_the_worker_loops_run_through_it():
    """Each background loop of the worker stops when told, through the shared loop."""
    from kizuna.capture import processing
    from kizuna.handoff import delivery
    from kizuna.insights import rollups
    from kizuna.journeys import engine
    from kizuna.privacy import retention
    from kizuna.scoring import predictive_service
    from kizuna.segments import membership

    for run in (processing.run, delivery.run, rollups.run, membership.run, predictive_service.run, retention.loop,
                engine.run):
        stop = CountingStop(rests=1)
        run(stop, 0.01)
        assert stop.is_set() and stop.waits == [0.01], run
