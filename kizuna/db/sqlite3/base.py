"""Django's SQLite backend, with every write queued on Kizuna's writer lock.

Each write transaction (`BEGIN IMMEDIATE`, which is how Kizuna opens every atomic block on
SQLite) and each write statement run in autocommit takes `kizuna.db.writelock` first, and lets
it go at commit, rollback or close. Writers from the web server, the worker and management
commands then queue fairly in the kernel instead of polling in SQLite's busy handler, where a
worker with a backlog could keep a page's save waiting past its timeout.
"""

from __future__ import annotations

from django.db.backends.sqlite3 import base

from kizuna.db import writelock

_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


class CursorWrapper(base.SQLiteCursorWrapper):
    def execute(self, query, params=None):
        if self.connection.in_transaction or not _is_write(query):
            return super().execute(query, params)
        writelock.acquire()
        try:
            return super().execute(query, params)
        finally:
            writelock.release()

    def executemany(self, query, param_list):
        if self.connection.in_transaction or not _is_write(query):
            return super().executemany(query, param_list)
        writelock.acquire()
        try:
            return super().executemany(query, param_list)
        finally:
            writelock.release()


def _is_write(query: str) -> bool:
    return query.lstrip()[:7].upper().startswith(_WRITE_VERBS)


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_writer = False

    def create_cursor(self, name=None):
        return self.connection.cursor(factory=CursorWrapper)

    def _start_transaction_under_autocommit(self):
        if not self._holds_writer:
            writelock.acquire()
            self._holds_writer = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

    def _release_writer(self) -> None:
        if self._holds_writer:
            self._holds_writer = False
            writelock.release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_writer()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_writer()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_writer()
