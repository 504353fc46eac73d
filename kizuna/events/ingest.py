"""The one entry point for events: validate, normalise and durably store.

Every input (HTTP ingestion, the tracker, the pixel, forms, email tracking) calls
`normalize()` then `store()`. A message is acknowledged only once `store()` has committed it
to the inbox (`IncomingEvent`); `messageId` is the idempotency key. Validation is strict and
reports every problem with a path, so a caller can fix exactly what is wrong.
"""

from __future__ import annotations

import gzip
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from kizuna.db.writelock import sqlite_writer

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
MAX_ID_LENGTH = 200
MAX_MESSAGE_ID_LENGTH = 100
FUTURE_TOLERANCE = timedelta(hours=1)

Row = tuple[str, int, datetime, str]  # message id, lane, received at, payload JSON

TYPES = ("identify", "track", "page", "screen", "group", "alias")


class IngestError(Exception):
    """A whole request is refused (bad body, unknown key, too large)."""

    def __init__(self, status: int, code: str, message: str, details: list[dict] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    def as_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class EventInvalid(ValueError):
    """One message is refused; `errors` are (path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))
        self.errors = errors


@dataclass(slots=True)
class RequestInfo:
    """What the HTTP layer knows about the sender, used when the message does not say."""

    ip: str = ""
    user_agent: str = ""
    source: str = ""  # write key name
    # Kizuna's own emitters (email, lifecycle) name the person by context.traits.email alone;
    # the HTTP API keeps Segment's rule that a message carries userId or anonymousId.
    internal: bool = False
    # Settings → Tracking → anonymise IP addresses: the full address is never stored, not even
    # in the inbox or in the event's context (see docs/decisions/0019-personal-data-and-security.md).
    anonymize_ip: bool = False
    received_at: datetime = field(default_factory=timezone.now)


def max_event_age() -> timedelta:
    return timedelta(days=getattr(settings, "KIZUNA_EVENT_MAX_AGE_DAYS", 730))


def read_body(raw: bytes, content_encoding: str = "") -> bytes:
    """Undo gzip/deflate with a hard cap, so a small bomb cannot exhaust memory."""
    encoding = content_encoding.strip().lower()
    if not encoding or encoding == "identity":
        body = raw
    elif encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        try:
            decomp = zlib.decompressobj(wbits)
            body = decomp.decompress(raw, MAX_BATCH_BYTES + 1)
            if decomp.unconsumed_tail:
                body += b"x"  # more than the cap is left: refuse below
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise IngestError(400, "invalid_encoding", f"The body is not valid {encoding}: {exc}.") from exc
    else:
        raise IngestError(415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip.")
    if len(body) > MAX_BATCH_BYTES:
        raise IngestError(
            413, "payload_too_large", f"The body is larger than {MAX_BATCH_BYTES // 1024} KB; send smaller batches."
        )
    return body


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise IngestError(400, "invalid_json", "The body is empty; send a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "utf-8" in reason.lower() or "surrogate" in reason.lower():
            raise IngestError(400, "invalid_utf8", f"The body is not valid UTF-8: {reason}.") from exc
        raise IngestError(400, "invalid_json", f"The body is not valid JSON: {reason}.") from exc
    if not isinstance(data, dict):
        raise IngestError(400, "invalid_json", "The body must be a JSON object.")
    return data


def parse_time(value: Any, path: str, errors: list[tuple[str, str]]) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 40:
        errors.append((path, "must be an ISO 8601 date-time string"))
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors.append((path, f"{value[:40]!r} is not an ISO 8601 date-time"))
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+09:00 is in year 0 in UTC
        errors.append((path, f"{value!r} is outside the years 1 to 9999 in UTC"))
        return None


def _id(msg: dict, key: str, errors: list[tuple[str, str]], path: str, limit: int = MAX_ID_LENGTH) -> str:
    value = msg.get(key)
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors.append((f"{path}{key}", "must be a string"))
        return ""
    text = str(value).strip()
    if len(text) > limit:
        errors.append((f"{path}{key}", f"is {len(text)} characters; the limit is {limit}"))
        return ""
    return text


def _obj(msg: dict, key: str, errors: list[tuple[str, str]], path: str) -> dict:
    value = msg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append((f"{path}{key}", "must be a JSON object"))
        return {}
    return value


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def normalize(
    msg: Any, info: RequestInfo, *, type_: str | None = None, path: str = "", sent_at: datetime | None = None
) -> dict[str, Any]:
    """Checks one Segment-spec message and returns the normalised dict the processor reads.

    Raises EventInvalid listing every problem found (not just the first).
    """
    if not isinstance(msg, dict):
        raise EventInvalid([(path.rstrip(".") or "body", "must be a JSON object")])
    errors: list[tuple[str, str]] = []
    kind = msg.get("type", type_)
    if type_ and kind != type_:
        errors.append((f"{path}type", f"is {kind!r} but this endpoint takes {type_!r} messages"))
    elif kind not in TYPES:
        errors.append((f"{path}type", f"must be one of {', '.join(TYPES)}"))

    message_id = _id(msg, "messageId", errors, path, MAX_MESSAGE_ID_LENGTH)
    anonymous_id = _id(msg, "anonymousId", errors, path)
    user_id = _id(msg, "userId", errors, path)
    properties = _obj(msg, "properties", errors, path)
    traits = _obj(msg, "traits", errors, path)
    context = _obj(msg, "context", errors, path)
    if kind == "alias":
        previous_id = _id(msg, "previousId", errors, path)
        if not previous_id:
            errors.append((f"{path}previousId", "is required for alias"))
        if not user_id:
            errors.append((f"{path}userId", "is required for alias"))
    elif not anonymous_id and not user_id and not (info.internal and _traits_email(context)):
        errors.append((f"{path}anonymousId", "either userId or anonymousId is required"))
    name = ""
    if kind == "track":
        name = msg.get("event")
        if not isinstance(name, str) or not name.strip():
            errors.append((f"{path}event", "is required for track and must be a non-empty string"))
            name = ""
        elif len(name) > 200:
            errors.append((f"{path}event", "is longer than 200 characters"))
        name = name.strip()
    elif kind in ("page", "screen"):
        raw_name = msg.get("name")
        if raw_name is not None and not isinstance(raw_name, str):
            errors.append((f"{path}name", "must be a string"))
        name = _text(raw_name, 200)
    group_id = ""
    if kind == "group":
        group_id = _id(msg, "groupId", errors, path)
        if not group_id:
            errors.append((f"{path}groupId", "is required for group"))

    timestamp = parse_time(msg.get("timestamp") or msg.get("originalTimestamp"), f"{path}timestamp", errors)
    message_sent = parse_time(msg.get("sentAt"), f"{path}sentAt", errors) or sent_at
    received = info.received_at
    occurred = received
    if timestamp is not None:
        occurred = timestamp
        if message_sent is not None:
            # The client's clock may be wrong; its offset is sentAt - received.
            try:
                occurred = timestamp + (received - message_sent)
            except OverflowError:
                errors.append((f"{path}sentAt", "is so far from now that the corrected timestamp is not a date"))
                raise EventInvalid(errors) from None
        if occurred > received + FUTURE_TOLERANCE:
            errors.append((f"{path}timestamp", f"{timestamp.isoformat()} is in the future"))
        elif occurred < received - max_event_age():
            errors.append((
                f"{path}timestamp",
                f"{timestamp.isoformat()} is older than {max_event_age().days} days; such events are not accepted",
            ))
    if errors:
        raise EventInvalid(errors)

    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    if kind == "page":
        page = {**page, **{k: v for k, v in properties.items() if k in ("url", "path", "title", "referrer", "search")}}
    ip = context.get("ip") if isinstance(context.get("ip"), str) and context.get("ip") else info.ip
    if info.anonymize_ip and ip:
        from kizuna.events.enrichment import anonymize_ip

        ip = anonymize_ip(ip)
        if "ip" in context:
            context = {**context, "ip": ip}
    user_agent = context.get("userAgent") if isinstance(context.get("userAgent"), str) else info.user_agent
    out: dict[str, Any] = {
        "type": kind,
        "messageId": message_id or f"kz-{uuid.uuid4()}",
        "anonymousId": anonymous_id,
        "userId": user_id,
        "name": name,
        "properties": properties,
        "traits": traits or (context.get("traits") if isinstance(context.get("traits"), dict) else {}),
        "context": context,
        "occurredAt": occurred.isoformat(),
        "receivedAt": received.isoformat(),
        "ip": _text(ip, 45),
        "userAgent": _text(user_agent, 500),
        "url": _text(page.get("url"), 2000),
        "path": _text(page.get("path"), 1000),
        "title": _text(page.get("title"), 500),
        "referrer": _text(page.get("referrer"), 2000),
        "source": info.source,
    }
    if kind == "alias":
        out["previousId"] = _id(msg, "previousId", [], path)
    if group_id:
        out["groupId"] = group_id
    return out


def encode(normalized: dict[str, Any], path: str = "") -> bytes:
    """Serialises a normalised message, enforcing the per-event size limit and text rules."""
    data = orjson.dumps(normalized)
    if len(data) > MAX_EVENT_BYTES:
        raise EventInvalid([(path.rstrip(".") or "body", f"the event is {len(data):,} bytes; the limit is 32 KB")])
    if b"\\u0000" in data:
        raise EventInvalid([(path.rstrip(".") or "body", "contains a NUL character (\\u0000), which cannot be stored")])
    return data


def _traits_email(context: Any) -> str:
    traits = context.get("traits") if isinstance(context, dict) else None
    email = traits.get("email") if isinstance(traits, dict) else None
    return email.strip().lower() if isinstance(email, str) else ""


def lane_for(normalized: dict[str, Any]) -> int:
    """Lanes split processing by browser (or user), so one visitor's events stay in order."""
    key = (normalized["anonymousId"] or normalized["userId"] or normalized.get("previousId", "")
           or _traits_email(normalized.get("context")))
    return zlib.crc32(key.encode()) % getattr(settings, "KIZUNA_EVENT_LANES", 4)


@dataclass(slots=True)
class BatchResult:
    rows: list[Row]
    rejected: list[dict[str, Any]]


def prepare(messages: list[Any], info: RequestInfo, *, type_: str | None = None,
            sent_at: datetime | None = None, path_prefix: str = "batch") -> BatchResult:
    """Validates messages; good ones become inbox rows, bad ones are reported by index."""
    rows: list[Row] = []
    rejected: list[dict[str, Any]] = []
    for index, msg in enumerate(messages):
        path = f"{path_prefix}[{index}]." if path_prefix else ""
        try:
            normalized = normalize(msg, info, type_=type_, path=path, sent_at=sent_at)
            data = encode(normalized, path)
        except EventInvalid as exc:
            rejected.append({
                "index": index,
                "messageId": msg.get("messageId") if isinstance(msg, dict) and isinstance(
                    msg.get("messageId"), str) else None,
                "errors": [{"path": p, "message": m} for p, m in exc.errors],
            })
            continue
        rows.append((normalized["messageId"], lane_for(normalized), info.received_at, data.decode()))
    return BatchResult(rows, rejected)


_INSERT = (
    "INSERT INTO events_incomingevent (message_id, lane, received_at, payload, error) VALUES (%s, %s, %s, %s, '') "
    "ON CONFLICT (message_id) DO NOTHING"
)


_INSERT_PG = (
    "INSERT INTO events_incomingevent (message_id, lane, received_at, payload, error) "
    "SELECT m, l, r, p, '' FROM unnest(%b::varchar[], %b::smallint[], %b::timestamptz[], %b::text[]) "
    "AS t(m, l, r, p) ON CONFLICT (message_id) DO NOTHING"
)


def store(rows: list[Row]) -> None:
    """Commits inbox rows in one transaction; duplicates of a waiting message are ignored
    here, duplicates of an already processed one when it is processed."""
    if not rows:
        return
    with sqlite_writer(), transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement for the whole group, parameters in binary (see bulk.execute_arrays).
            from kizuna.events.bulk import execute_arrays

            execute_arrays(_INSERT_PG, [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                        [r[3] for r in rows]])
        else:
            adapt = connection.ops.adapt_datetimefield_value
            cursor.executemany(_INSERT, [(mid, lane, adapt(at), payload) for mid, lane, at, payload in rows])


def ingest(messages: list[Any], info: RequestInfo, *, type_: str | None = None) -> BatchResult:
    """Validate and store in the caller's thread: for forms, imports and other internal inputs."""
    if not info.anonymize_ip:
        from kizuna.events.models import TrackingSettings

        info.anonymize_ip = TrackingSettings.load().anonymize_ip
    result = prepare(messages, info, type_=type_, path_prefix="")
    store(result.rows)
    from kizuna.web.metrics import count_received

    count_received(info.source or "internal", len(result.rows))
    return result
