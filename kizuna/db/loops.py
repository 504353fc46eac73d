"""The worker's background loops share one shape: do a pass, and rest when it found nothing to do."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import close_old_connections


def repeat(stop: threading.Event, work: Callable[[], object], *, idle_seconds: float, what: str,
           steady: bool = False) -> None:
    """Runs `work` until `stop` is set. After a pass that did something (a non-zero count) the next
    starts at once, so a backlog drains; otherwise, and after a failed pass, it waits `idle_seconds`.
    `steady` waits after every pass instead: a pass every `idle_seconds`, whatever it did.
    A failure is logged (by the logger of `work`'s module) and survived: a lost database connection
    must not end the worker."""
    while not stop.is_set():
        try:
            done = work()
        except Exception:  # noqa: BLE001 - the loop must survive a lost connection
            logging.getLogger(getattr(work, "__module__", None) or __name__).exception("%s failed", what)
            done = 0
        close_old_connections()
        if steady or not done:
            stop.wait(idle_seconds)
