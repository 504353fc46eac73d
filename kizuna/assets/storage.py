"""Asset files on disk, under `<KIZUNA_DATA_DIR>/assets/`.

A stored file is named by 32 random hex digits (`ab/ab12…`), never by anything the uploader
sent, so no name can reach another path. An upload is written to `incoming/` while it arrives
(counted against the size limit and hashed on the way, never held in memory) and moved into
place with one rename on the same file system; what is refused or abandoned is deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

_STORAGE_NAME = re.compile(r"[0-9a-f]{32}")
HEAD_BYTES = 8192
INCOMING_MAX_AGE = 6 * 3600  # seconds an abandoned upload may stay in incoming/


def root() -> Path:
    path = Path(settings.DATA_DIR) / "assets"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def incoming_dir() -> Path:
    path = root() / "incoming"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def max_bytes() -> int:
    return int(getattr(settings, "ASSET_MAX_BYTES", 50 * 1024 * 1024))


class TooLarge(ValueError):
    def __init__(self, limit: int, size: int):
        super().__init__(f"{size} bytes is over the limit of {limit}")
        self.limit = limit
        self.size = size


@dataclass(frozen=True)
class Incoming:
    """A complete upload waiting in incoming/: its size and SHA-256 were counted as it arrived."""

    path: Path
    size: int
    sha256: str


class Writer:
    """Receives one upload chunk by chunk; refuses the chunk that passes the limit."""

    def __init__(self, limit: int | None = None):
        self.limit = max_bytes() if limit is None else limit
        self.path = incoming_dir() / secrets.token_hex(16)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.limit:
            raise TooLarge(self.limit, self.size + len(chunk))
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(chunk)
        self._hash.update(chunk)

    def finish(self) -> Incoming:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        return Incoming(self.path, self.size, self._hash.hexdigest())

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


def receive(chunks: Iterable[bytes], limit: int | None = None) -> Incoming:
    """Writes a stream to incoming/; raises TooLarge (and keeps nothing) past the limit."""
    writer = Writer(limit)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.discard()
        raise
    return writer.finish()


def keep(incoming: Incoming) -> str:
    """Moves an accepted upload into place; returns its storage name."""
    name = secrets.token_hex(16)
    target = root() / name[:2]
    target.mkdir(mode=0o700, exist_ok=True)
    os.replace(incoming.path, target / name)
    return name


def discard(incoming: Incoming) -> None:
    incoming.path.unlink(missing_ok=True)


def path_of(storage_name: str) -> Path:
    """The file of a stored asset. Only names this module made are accepted."""
    if not _STORAGE_NAME.fullmatch(storage_name or ""):
        raise ValueError(f"not a storage name: {storage_name!r}")
    return root() / storage_name[:2] / storage_name


def remove(storage_name: str) -> None:
    path_of(storage_name).unlink(missing_ok=True)


def sweep_incoming(now: float | None = None) -> int:
    """Deletes uploads abandoned in incoming/ (a request that died between receiving and saving)."""
    now = now or time.time()
    removed = 0
    for path in incoming_dir().iterdir():
        try:
            if now - path.stat().st_mtime > INCOMING_MAX_AGE:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
