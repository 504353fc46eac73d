"""A download: the file as an attachment with safe headers, a Download row, and an event.

The event (`Asset Downloaded`) goes through the one ingestion entry point, so the worker attaches
it to the contact (by email, as for email events) or the browser (public links), and scoring,
segments, journeys and the contact's timeline read it like any tracked event. Link scanners and
prefetchers are judged with the same rules as email clicks: kept, flagged `machine`, not scored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from django.db import transaction
from django.http import FileResponse, HttpResponse

from kizuna.assets import sniffing, storage
from kizuna.assets.models import Asset, Download
from kizuna.contacts.models import Contact
from kizuna.db.writelock import sqlite_writer
from kizuna.messaging import machine
from kizuna.messaging.models import Message

log = logging.getLogger(__name__)
EVENT_NAME = "Asset Downloaded"
# A download is never rendered: no script, no plugin, no frame, an opaque origin if it ever were.
DOWNLOAD_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
_ANONYMOUS_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


@dataclass(frozen=True)
class Hit:
    method: str
    ip: str
    user_agent: str
    at: datetime
    headers: dict[str, str] = field(default_factory=dict)
    anonymous_id: str = ""


def clean_anonymous_id(value: str) -> str:
    return value if _ANONYMOUS_ID.fullmatch(value or "") else ""


def _stored_ip(ip: str) -> str | None:
    if not ip:
        return None
    from kizuna.events.enrichment import anonymize_ip
    from kizuna.events.models import TrackingSettings

    if TrackingSettings.load().anonymize_ip:
        return anonymize_ip(ip) or None
    return ip


def record(asset: Asset, hit: Hit, *, contact: Contact | None = None, message_id: int | None = None) -> Download:
    """Stores the download and puts its event in the log; returns the row."""
    sent_at = None
    message = None
    if message_id:
        message = Message.objects.filter(pk=message_id).only("id", "sent_at").first()
        sent_at = message.sent_at if message else None
    verdict = machine.classify(machine.Hit(kind="click", method=hit.method, ip=hit.ip, user_agent=hit.user_agent,
                                           at=hit.at, sent_at=sent_at, headers=hit.headers))
    via = Download.Via.LINK if contact is not None else Download.Via.PUBLIC
    with sqlite_writer(), transaction.atomic():
        row = Download.objects.create(
            asset=asset, contact=contact, message=message, anonymous_id=hit.anonymous_id, via=via, at=hit.at,
            ip=_stored_ip(hit.ip), user_agent=hit.user_agent[:500], machine=verdict.machine, reason=verdict.reason)
    _emit(row, asset, contact, hit)
    return row


def _emit(row: Download, asset: Asset, contact: Contact | None, hit: Hit) -> None:
    from kizuna.events import ingest
    from kizuna.events.http import _derived_id  # the pixel's cookieless id: one browser on one day

    event: dict = {
        "type": "track", "event": EVENT_NAME, "messageId": f"asset-download-{row.pk}",
        "timestamp": row.at.isoformat(), "context": {"ip": hit.ip, "userAgent": hit.user_agent},
        # Short keys first: the timeline shows an event's first properties, and PostgreSQL's jsonb
        # orders keys by length (SQLite keeps this order).
        "properties": {"name": asset.name, "file": asset.file_name, "fileType": asset.file_type, "via": row.via,
                       "asset": asset.pk, "slug": asset.slug},
    }
    if row.message_id:
        event["properties"]["message"] = row.message_id
    if row.machine:
        event["properties"].update(machine=True, machineReason=row.reason)
    if contact is not None:
        if not contact.email:
            log.warning("download %s: contact %s has no email address, so no event names them", row.pk, contact.pk)
            return
        # Named by email, like email events: a forwarded link must not tie the forwardee's browser
        # to the contact, so the browser's anonymous id is left out.
        event["context"]["traits"] = {"email": contact.email}
    else:
        event["anonymousId"] = hit.anonymous_id or _derived_id(hit.ip, hit.user_agent, hit.at)
    result = ingest.prepare([event], ingest.RequestInfo(source="assets", internal=True, ip=hit.ip,
                                                        user_agent=hit.user_agent), path_prefix="")
    if result.rejected:  # a bug, never the visitor's doing
        log.error("download event refused by the event log: %s", result.rejected)
    ingest.store(result.rows)


def content_disposition(file_name: str) -> str:
    """`attachment` with an ASCII fallback and the UTF-8 name per RFC 5987/6266."""
    fallback = sniffing.ascii_fallback(file_name).replace("\\", "_").replace('"', "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def _secure(response: HttpResponse, asset: Asset) -> HttpResponse:
    response["Content-Type"] = sniffing.content_type(asset.file_type, asset.charset)
    response["Content-Disposition"] = content_disposition(asset.file_name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = DOWNLOAD_CSP
    response["Cache-Control"] = "no-store, private"
    response["Referrer-Policy"] = "no-referrer"
    response["Cross-Origin-Opener-Policy"] = "same-origin"
    return response


def file_response(asset: Asset, *, head: bool = False) -> HttpResponse:
    """The stored file, streamed; for HEAD the same headers and no body. Raises FileNotFoundError."""
    path = storage.path_of(asset.storage_name)
    if head:
        size = path.stat().st_size
        response = HttpResponse(b"")
        response["Content-Length"] = str(size)
        return _secure(response, asset)
    return _secure(FileResponse(path.open("rb"), content_type=sniffing.content_type(asset.file_type, asset.charset)),
                   asset)
