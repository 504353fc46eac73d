"""The tracking endpoints, served in front of Django as plain WSGI.

`/v1/*` (Segment-compatible ingestion), `/kz.js` (the tracker with its settings) and `/t.gif`
(the no-JS pixel) are the hottest paths in the product: every page view of every tracked site
hits them. They skip Django's middleware and URL resolver and answer in well under a
millisecond of Python, then wait for a group commit (see committer.py). Everything else goes
to Django unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from kizuna.events import ingest, openapi
from kizuna.events.committer import GroupCommitter
from kizuna.web.metrics import count_received

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
TRACKER_FILE = Path(__file__).parent / "static" / "kizuna" / "tracker.js"
SINGLE_TYPES = {"identify", "track", "page", "screen", "group", "alias"}
log = logging.getLogger(__name__)
CORS_HEADERS = [
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type, Authorization, Content-Encoding"),
    ("Access-Control-Max-Age", "86400"),
]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    name: str
    enabled: bool
    domains: tuple[str, ...]

    def allows_origin(self, origin: str) -> bool:
        if not self.domains or not origin:
            return True
        host = (urlsplit(origin).hostname or "").lower()
        for domain in self.domains:
            if host == domain or (domain.startswith("*.") and (host.endswith(domain[1:]) or host == domain[2:])):
                return True
        return False


class _Cache:
    """Write keys and tracking settings, re-read every few seconds rather than per hit."""

    ttl = 5.0
    miss_interval = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, KeyInfo] = {}
        self._config: dict[str, Any] = {}
        self._anonymize_ip = False
        self._loaded = 0.0

    def _load(self) -> None:
        from kizuna.events.models import TrackingSettings, WriteKey

        keys = {
            k.key: KeyInfo(k.id, k.name, k.enabled, tuple(k.domain_list()))
            for k in WriteKey.objects.only("id", "key", "name", "enabled", "allowed_domains")
        }
        ts = TrackingSettings.load()
        self._anonymize_ip = ts.anonymize_ip
        config = {
            "consent": "required" if ts.consent_required else "none",
            "respectDnt": ts.respect_dnt,
            "identifyForms": ts.identify_forms,
        }
        with self._lock:
            self._keys, self._config, self._loaded = keys, config, time.monotonic()

    def _reload(self) -> None:
        """Reads the keys again. These paths bypass Django's request cycle, which would close a
        connection the database dropped (a restart): this does, so the next read reconnects.
        Meanwhile the keys read last stay in use, so a database blip refuses no valid key."""
        try:
            self._load()
        except DatabaseError:
            close_old_connections()
            if not self._keys:
                raise
            log.warning("write keys could not be read again; using the ones read before", exc_info=True)
            with self._lock:
                self._loaded = time.monotonic()

    def key(self, key: str) -> KeyInfo | None:
        now = time.monotonic()
        if now - self._loaded > self.ttl:
            self._reload()
        found = self._keys.get(key)
        if found is None and now - self._loaded > self.miss_interval:
            self._reload()
            found = self._keys.get(key)
        return found

    def config(self) -> dict[str, Any]:
        if time.monotonic() - self._loaded > self.ttl:
            self._reload()
        return self._config

    def anonymize_ip(self) -> bool:
        """Settings → Tracking → anonymise IP addresses: applied before an event is stored."""
        if time.monotonic() - self._loaded > self.ttl:
            self._load()
        return self._anonymize_ip

    def clear(self) -> None:
        self._loaded = 0.0


cache = _Cache()
_committer = GroupCommitter(ingest.store)


def write_rows(rows: list[ingest.Row]) -> None:
    if getattr(settings, "KIZUNA_INGEST_GROUP_COMMIT", True):
        _committer.write(rows)
    else:
        ingest.store(rows)


def client_ip(environ: dict) -> str:
    """REMOTE_ADDR, or the address the trusted proxies saw (KIZUNA_PROXY_COUNT of them)."""
    hops = getattr(settings, "KIZUNA_PROXY_COUNT", 0)
    if hops:
        forwarded = [p.strip() for p in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return environ.get("REMOTE_ADDR", "")


def _read(environ: dict) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = ingest.MAX_BATCH_BYTES + 1
    stream = environ["wsgi.input"]
    if length:
        if length > limit * 4:  # compressed bodies may legitimately be larger than JSON's ratio suggests
            raise ingest.IngestError(413, "payload_too_large", "The body is larger than 500 KB; send smaller batches.")
        return stream.read(length)
    return stream.read(limit * 4)


def _basic_user(environ: dict) -> str:
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ingest.IngestError(
            401, "invalid_authorization", "The Authorization header is not valid Basic auth.") from None
    return decoded.partition(":")[0]


class IngestionApp:
    """WSGI app: handles the tracking paths, hands every other request to Django."""

    _openapi: bytes | None = None

    def __init__(self, django_app) -> None:
        self.django_app = django_app

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/v1/"):
            return self.v1(environ, start_response, path[4:].rstrip("/"))
        if path == "/kz.js":
            return self.tracker(environ, start_response)
        if path == "/t.gif":
            return self.pixel(environ, start_response)
        return self.django_app(environ, start_response)

    # --- responses ------------------------------------------------------------------------
    @staticmethod
    def respond(start_response, status: int, body: bytes = b"", content_type: str = "application/json",
                headers: list[tuple[str, str]] | None = None):
        out = [("Content-Type", content_type), ("Content-Length", str(len(body))),
               ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]
        start_response(f"{status} {HTTPStatus(status).phrase}", out + (headers or []))
        return [body]

    def error(self, start_response, exc: ingest.IngestError, cors: list[tuple[str, str]], accepted: int = 0):
        body = exc.as_dict()
        body["accepted"] = accepted
        return self.respond(start_response, exc.status, orjson.dumps(body), headers=cors)

    # --- /v1/* ----------------------------------------------------------------------------
    def v1(self, environ: dict, start_response, endpoint: str):
        origin = environ.get("HTTP_ORIGIN", "")
        cors = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")] if origin else []
        method = environ.get("REQUEST_METHOD", "GET")
        if endpoint == "_noop":  # the benchmarks' baseline: the same server doing nothing
            return self.respond(start_response, 204)
        if endpoint == "openapi.json" and method == "GET":
            if IngestionApp._openapi is None:
                IngestionApp._openapi = orjson.dumps(openapi.schema())
            return self.respond(start_response, 200, IngestionApp._openapi,
                                headers=[("Access-Control-Allow-Origin", "*")])
        if method == "OPTIONS":
            return self.respond(start_response, 204, headers=cors + CORS_HEADERS)
        kind = endpoint if endpoint in SINGLE_TYPES else None
        if kind is None and endpoint not in ("batch", "import"):
            return self.error(start_response, ingest.IngestError(
                404, "not_found", f"Unknown endpoint /v1/{endpoint[:50]}; use identify, track, page, screen, "
                "group, alias or batch."), cors)
        if method != "POST":
            return self.error(start_response, ingest.IngestError(
                405, "method_not_allowed", "Send events with POST."), cors)
        try:
            # A browser's own user agent describes the visitor; a server library's does not.
            agent = environ.get("HTTP_USER_AGENT", "")[:500] if origin else ""
            info = ingest.RequestInfo(ip=client_ip(environ), user_agent=agent)
            body = ingest.read_body(_read(environ), environ.get("HTTP_CONTENT_ENCODING", ""))
            data = ingest.parse_json(body)
            key = _basic_user(environ) or data.get("writeKey") or ""
            if not isinstance(key, str) or not key:
                raise ingest.IngestError(
                    401, "missing_write_key",
                    "No write key: send it as the HTTP Basic username or as writeKey in the body.")
            found = cache.key(key)
            if found is None or not found.enabled:
                raise ingest.IngestError(401, "invalid_write_key", "The write key is unknown or disabled.")
            if not found.allows_origin(origin):
                raise ingest.IngestError(403, "origin_not_allowed",
                                         "This site is not in the write key's allowed domains.")
            info.source = found.name
            info.anonymize_ip = cache.anonymize_ip()
            result = self._prepare(data, kind, info)
            write_rows(result.rows)
            count_received(found.name, len(result.rows))
        except ingest.IngestError as exc:
            return self.error(start_response, exc, cors)
        except (DatabaseError, TimeoutError):
            # Nothing was acknowledged: the sender keeps the events and retries (the SDKs do on 5xx).
            log.exception("ingestion could not store a request")
            close_old_connections()
            return self.error(start_response, ingest.IngestError(
                503, "unavailable", "The event store is unavailable for a moment; send the events again."),
                cors + [("Retry-After", "1")])
        if result.rejected:
            total = len(result.rows) + len(result.rejected)
            exc = ingest.IngestError(
                400, "invalid_events",
                f"{len(result.rejected)} of {total} events were rejected; the other {len(result.rows)} were stored.",
                details=result.rejected,
            )
            return self.error(start_response, exc, cors, accepted=len(result.rows))
        return self.respond(start_response, 200, b'{"success":true}', headers=cors)

    @staticmethod
    def _prepare(data: dict[str, Any], kind: str | None, info: ingest.RequestInfo) -> ingest.BatchResult:
        errors: list[tuple[str, str]] = []
        sent_at = ingest.parse_time(data.get("sentAt"), "sentAt", errors)
        if errors:
            raise ingest.IngestError(400, "invalid_event", "sentAt is not a valid date-time.",
                                     [{"path": p, "message": m} for p, m in errors])
        if kind is not None:
            result = ingest.prepare([data], info, type_=kind, sent_at=sent_at, path_prefix="")
            if result.rejected:
                raise ingest.IngestError(400, "invalid_event", "The event was rejected.",
                                         result.rejected[0]["errors"])
            return result
        batch = data.get("batch")
        if not isinstance(batch, list):
            raise ingest.IngestError(400, "invalid_batch", "batch must be a JSON array of messages.",
                                     [{"path": "batch", "message": "must be an array"}])
        if not batch:
            raise ingest.IngestError(400, "invalid_batch", "batch is empty.")
        if len(batch) > ingest.MAX_BATCH_EVENTS:
            raise ingest.IngestError(
                413, "batch_too_large",
                f"The batch has {len(batch):,} events; the limit is {ingest.MAX_BATCH_EVENTS:,}.")
        shared = data.get("context")
        if isinstance(shared, dict) and shared:
            batch = [
                {**m, "context": {**shared, **m.get("context", {})}}
                if isinstance(m, dict) and isinstance(m.get("context", {}), dict) else m
                for m in batch
            ]
        return ingest.prepare(batch, info, sent_at=sent_at)

    # --- /kz.js -----------------------------------------------------------------------------
    _tracker_source: bytes | None = None

    def tracker(self, environ: dict, start_response):
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        found = cache.key(query.get("k", ""))
        if found is None or not found.enabled:
            return self.respond(start_response, 404, b"/* Kizuna: unknown or disabled write key */",
                                "text/javascript; charset=utf-8")
        if IngestionApp._tracker_source is None or settings.DEBUG:
            IngestionApp._tracker_source = TRACKER_FILE.read_bytes()
        config = {"writeKey": query["k"], "host": settings.BASE_URL, "cookieDomain": "", "autoPage": True,
                  **cache.config()}
        body = b"window.kizuna_config=" + orjson.dumps(config).replace(b"</", b"<\\/") + b";\n"
        body += IngestionApp._tracker_source
        start_response("200 OK", [
            ("Content-Type", "text/javascript; charset=utf-8"), ("Content-Length", str(len(body))),
            ("Cache-Control", "public, max-age=300"), ("Access-Control-Allow-Origin", "*"),
            ("X-Content-Type-Options", "nosniff"),
        ])
        return [body]

    # --- /t.gif -----------------------------------------------------------------------------
    def pixel(self, environ: dict, start_response):
        """The no-JS tracker: a page view (or `e=` track event) per image load."""
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), max_num_fields=50))
        info = ingest.RequestInfo(ip=client_ip(environ), user_agent=environ.get("HTTP_USER_AGENT", "")[:500])
        found = cache.key(query.get("k", ""))
        if found is None or not found.enabled:
            return self.respond(start_response, 401, orjson.dumps(ingest.IngestError(
                401, "invalid_write_key", "The write key is unknown or disabled.").as_dict()))
        info.source = found.name
        info.anonymize_ip = cache.anonymize_ip()
        url = query.get("url") or environ.get("HTTP_REFERER", "")
        anonymous_id = query.get("aid") or _derived_id(info.ip, info.user_agent, info.received_at)
        event = query.get("e", "")
        msg: dict[str, Any] = {
            "type": "track" if event else "page",
            "anonymousId": anonymous_id,
            "context": {"page": {"url": url, "path": urlsplit(url).path if url else "", "title": query.get("title", ""),
                                 "referrer": query.get("ref", "")},
                        "library": {"name": "kizuna-pixel", "version": "1"}},
            "properties": {k[2:]: v for k, v in query.items() if k.startswith("p.")},
        }
        if event:
            msg["event"] = event
        if query.get("uid"):
            msg["userId"] = query["uid"]
        if query.get("mid"):
            msg["messageId"] = query["mid"]
        result = ingest.prepare([msg], info, path_prefix="")
        if result.rejected:
            return self.respond(start_response, 400, orjson.dumps(ingest.IngestError(
                400, "invalid_event", "The pixel hit was rejected.", result.rejected[0]["errors"]).as_dict()))
        try:
            write_rows(result.rows)
        except Exception:  # noqa: BLE001 - an image must not show a server error page
            return self.respond(start_response, 503, b'{"error":{"code":"unavailable"}}')
        count_received(found.name, len(result.rows))
        return self.respond(start_response, 200, PIXEL, "image/gif")


def _derived_id(ip: str, user_agent: str, at: datetime) -> str:
    """Without a cookie, one browser on one day: a salted hash, never the raw address."""
    day = timezone.localtime(at).date().isoformat()
    digest = hashlib.sha256(f"{settings.SECRET_KEY}|{ip}|{user_agent}|{day}".encode()).hexdigest()
    return f"px-{digest[:24]}"
