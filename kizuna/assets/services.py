"""Assets: accepting a file, creating, replacing, deleting, and the download figures.

Views and other apps call these; they take plain arguments and raise AssetRefused with a message
for the uploader (the limit and the size, or what the file was found to be).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from kizuna.accounts import audit
from kizuna.assets import sniffing, storage
from kizuna.assets.delivery import human_size
from kizuna.assets.models import Asset, Download
from kizuna.db.writelock import sqlite_writer


class AssetRefused(ValueError):
    """A file that is not kept; `message` is for the person who uploaded it."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def too_large_message(limit: int, size: int) -> str:
    return _("The file is too large: the limit is %(limit)s and this file is %(size)s.") % {
        "limit": human_size(limit), "size": human_size(size)}


@dataclass(frozen=True)
class AcceptedFile:
    """An upload that passed every check, waiting in incoming/ until it is kept or discarded."""

    incoming: storage.Incoming
    file_name: str
    kind: str
    charset: str


def accept(uploaded: Any, name: str | None = None, *, limit: int | None = None) -> AcceptedFile:
    """Checks a file (an upload, or any object with chunks()/read()) and holds it in incoming/.

    Refused: over the size limit, empty, or not of an allowed kind by its content."""
    limit = storage.max_bytes() if limit is None else limit
    raw_name = name if name is not None else getattr(uploaded, "name", "") or ""
    incoming = getattr(uploaded, "incoming", None)
    if incoming is None:
        chunks = uploaded.chunks() if hasattr(uploaded, "chunks") else iter(lambda: uploaded.read(1 << 16), b"")
        try:
            incoming = storage.receive(chunks, limit)
        except storage.TooLarge as exc:
            size = getattr(uploaded, "size", None) or exc.size
            raise AssetRefused(too_large_message(limit, size)) from exc
    elif incoming.size > limit:
        storage.discard(incoming)
        raise AssetRefused(too_large_message(limit, incoming.size))
    try:
        detected = sniffing.detect(incoming.path, sniffing.clean_file_name(raw_name))
        file_name, detected = sniffing.settle(detected, raw_name)
    except sniffing.Refused as exc:
        storage.discard(incoming)
        shown = sniffing.clean_file_name(raw_name)
        raise AssetRefused(_("“%(name)s”: %(problem)s") % {"name": shown, "problem": exc.message}) from exc
    return AcceptedFile(incoming, file_name, detected.kind.key, detected.charset)


def new_slug(name: str, file_name: str = "") -> str:
    """A merge-tag name from the title (or the file name); Japanese titles give `asset-xxxxxx`."""
    for source in (name, file_name.rpartition(".")[0]):
        base = slugify(source)[:60].strip("-")
        if base:
            break
    else:
        base = "asset"
    slug = base
    while Asset.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def create(accepted: AcceptedFile, *, name: str, user=None, **fields: Any) -> Asset:
    """Keeps the file and creates its asset (slug made from the name unless given)."""
    storage_name = storage.keep(accepted.incoming)
    try:
        now = timezone.now()
        with sqlite_writer(), transaction.atomic():
            asset = Asset.objects.create(
                name=name or accepted.file_name, slug=fields.pop("slug", "") or new_slug(name, accepted.file_name),
                file_name=accepted.file_name, file_type=accepted.kind, charset=accepted.charset,
                size=accepted.incoming.size, sha256=accepted.incoming.sha256, storage_name=storage_name,
                created_by=user if getattr(user, "pk", None) else None, created_at=now, updated_at=now,
                file_updated_at=now, **fields)
            audit.record(user, "create", asset, changes={"file": [None, accepted.file_name],
                                                         "sha256": [None, accepted.incoming.sha256]})
    except BaseException:
        storage.remove(storage_name)
        raise
    return asset


def replace_file(asset: Asset, accepted: AcceptedFile, *, user=None) -> Asset:
    """A new file for the same asset: id, merge-tag name, public key and every sent link stay."""
    storage_name = storage.keep(accepted.incoming)
    old = asset.storage_name
    before = {"file": asset.file_name, "sha256": asset.sha256}
    try:
        now = timezone.now()
        with sqlite_writer(), transaction.atomic():
            asset.file_name, asset.file_type, asset.charset = accepted.file_name, accepted.kind, accepted.charset
            asset.size, asset.sha256 = accepted.incoming.size, accepted.incoming.sha256
            asset.storage_name = storage_name
            asset.file_updated_at = asset.updated_at = now
            asset.save(update_fields=["file_name", "file_type", "charset", "size", "sha256", "storage_name",
                                      "file_updated_at", "updated_at"])
            audit.record(user, "update", asset, changes=audit.diff(before, {"file": asset.file_name,
                                                                            "sha256": asset.sha256}))
            transaction.on_commit(lambda: storage.remove(old))
    except BaseException:
        storage.remove(storage_name)
        raise
    return asset


SETTINGS = ("name", "description", "public", "link_days", "delivery_template")


def settings_of(asset: Asset) -> dict[str, Any]:
    return {name: getattr(asset, name) for name in SETTINGS}


def save_settings(asset: Asset, before: dict[str, Any], *, user=None) -> Asset:
    """Saves the settings an edit form put on `asset`; `before` (settings_of) is for the audit log."""
    asset.updated_at = timezone.now()
    with sqlite_writer(), transaction.atomic():
        asset.save(update_fields=[*SETTINGS, "updated_at"])
        audit.record(user, "update", asset, changes=audit.diff(before, settings_of(asset)))
    return asset


def delete(asset: Asset, *, user=None) -> None:
    """Deletes the asset, its file and its download rows; its links then answer 404. The
    download events stay in the event log (scores and timelines keep their history)."""
    storage_name = asset.storage_name
    with sqlite_writer(), transaction.atomic():
        audit.record(user, "delete", asset, changes={"file": [asset.file_name, None]})
        asset.delete()
        transaction.on_commit(lambda: storage.remove(storage_name))


# --- figures ----------------------------------------------------------------------------------------

def stats(asset_ids: list[int], now=None) -> dict[int, dict[str, Any]]:
    """Per asset: human downloads in total, unique contacts, the last 30 days, the last one, and
    machine fetches apart. One grouped query for the lot."""
    since = (now or timezone.now()) - timedelta(days=30)
    people = Q(machine=False)
    rows = (Download.objects.filter(asset_id__in=asset_ids).values("asset_id")
            .annotate(total=Count("id", filter=people), contacts=Count("contact", distinct=True, filter=people),
                      recent=Count("id", filter=people & Q(at__gte=since)), last=Max("at", filter=people),
                      machine=Count("id", filter=Q(machine=True))))
    empty = {"total": 0, "contacts": 0, "recent": 0, "last": None, "machine": 0}
    found = {r.pop("asset_id"): r for r in rows}
    return {pk: found.get(pk, dict(empty)) for pk in asset_ids}
