"""Logging: the request id and user on every line, secrets taken out, JSON on request.

`RedactSecrets` runs on the console handler (settings.LOGGING), so whatever a library or a
traceback says passes through it: API keys, webhook signing secrets, passwords in URLs and
`password=` pairs, Authorization headers, session and CSRF cookies, the one-time tokens of the
links in sent mail, PEM private keys (DKIM), and the configured secret key and SMTP password.
`KIZUNA_LOG_FORMAT=json` writes one JSON object a line for log collectors.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from functools import lru_cache

# Set by kizuna.web.observability.RequestMiddleware for the request being handled.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("kizuna_request_id", default="-")
request_user: contextvars.ContextVar[str] = contextvars.ContextVar("kizuna_request_user", default="")

MASK = "[redacted]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # API keys (kz_<prefix>_<secret>): the prefix names the key, the secret is never written.
    (re.compile(r"\b(kz_[0-9a-f]{8})_[A-Za-z0-9_-]{10,}"), r"\1_" + MASK),
    (re.compile(r"\bwhsec_[A-Za-z0-9_-]{8,}"), "whsec_" + MASK),
    # user:password@ in any URL (SMTP, IMAP, databases, ESPs).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]+@"), r"\1:" + MASK + "@"),
    (re.compile(r"(?i)\b(authorization|proxy-authorization)(['\"]?\s*[:=]\s*['\"]?)(bearer|basic|token)?\s*"
                r"[^\s'\",;]+"), r"\1\2\3 " + MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    (re.compile(r"(?i)\b(sessionid|csrftoken|csrfmiddlewaretoken|password|passwd|pwd|secret|secret_key|api_key|"
                r"apikey|token|access_token|refresh_token)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&]+"),
     r"\1\2" + MASK),
    # Open pixel, click and unsubscribe links: the token alone changes a person's subscriptions.
    (re.compile(r"(/e/[ocu]/)[0-9a-z]+-[A-Za-z0-9_-]+"), r"\1" + MASK),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
     "[redacted private key]"),
]


@lru_cache(maxsize=4)
def _configured_secrets(secret_key: str, email_url: str, extra: tuple[str, ...]) -> tuple[str, ...]:
    from urllib.parse import unquote, urlsplit

    values = {secret_key, *extra}
    try:
        password = urlsplit(email_url).password
    except ValueError:
        password = None
    if password:
        values |= {password, unquote(password)}
    return tuple(sorted((v for v in values if v and len(v) >= 6), key=len, reverse=True))


def _literal_secrets() -> tuple[str, ...]:
    try:
        from django.conf import settings

        extra = (getattr(settings, "KIZUNA_METRICS_TOKEN", ""), getattr(settings, "KIZUNA_WEBHOOK_SECRET", ""))
        return _configured_secrets(settings.SECRET_KEY, getattr(settings, "KIZUNA_EMAIL_URL", ""), extra)
    except Exception:  # noqa: BLE001 - logging before settings are ready must still work
        return ()


def redact(text: str) -> str:
    if not text:
        return text
    for secret in _literal_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Renders the message (and traceback) now, redacted, so no formatter sees the raw values."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the caller's bug, not ours
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RequestContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.user = getattr(record, "user", None) or request_user.get()
        return True


class CountErrors(logging.Filter):
    """Errors and criticals counted for /metrics (kizuna_errors_total), by component."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            from kizuna.web import metrics

            metrics.ERRORS.labels(component=".".join(record.name.split(".")[:2])).inc()
        return True


# Attributes every LogRecord has; anything else was passed in `extra` and goes into the JSON.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id", "user"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if getattr(record, "user", ""):
            out["user"] = record.user
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)
