"""Group commit: many concurrent requests share one transaction, each still answered only
after its rows are committed. This is what lets single page-view hits reach thousands per
second on one disk: the cost of a commit is paid once per group, not once per hit."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import close_old_connections

from kizuna.events.ingest import Row


class _Pending:
    __slots__ = ("rows", "done", "error")

    def __init__(self, rows: list[Row]):
        self.rows = rows
        self.done = threading.Event()
        self.error: BaseException | None = None


class GroupCommitter:
    """One writer thread per process; `write()` blocks until the rows are durable."""

    def __init__(self, store: Callable[[list[Row]], None], max_rows: int = 5000):
        self._store = store
        self._max_rows = max_rows
        self._cv = threading.Condition()
        self._pending: list[_Pending] = []
        self._thread: threading.Thread | None = None

    def write(self, rows: list[Row], timeout: float = 30.0) -> None:
        item = _Pending(rows)
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="kizuna-ingest-writer", daemon=True)
                self._thread.start()
            self._pending.append(item)
            self._cv.notify()
        if not item.done.wait(timeout):
            raise TimeoutError("the event store did not commit in time")
        if item.error is not None:
            raise item.error

    def _take(self) -> list[_Pending]:
        with self._cv:
            while not self._pending:
                self._cv.wait()
            group, count = [], 0
            while self._pending and (not group or count + len(self._pending[0].rows) <= self._max_rows):
                item = self._pending.pop(0)
                group.append(item)
                count += len(item.rows)
            return group

    def _run(self) -> None:
        while True:
            group = self._take()
            try:
                self._store([row for item in group for row in item.rows])
            except Exception:  # noqa: BLE001 - isolate the failing request, keep the others
                close_old_connections()
                for item in group:
                    try:
                        self._store(item.rows)
                    except Exception as exc:  # noqa: BLE001
                        item.error = exc
                        close_old_connections()
            for item in group:
                item.done.set()
