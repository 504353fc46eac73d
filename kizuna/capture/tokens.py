"""Signed tokens of the public form endpoints (Django's signing: HMAC-SHA256 with the secret key).

A form token stands in for the CSRF cookie on the public submit endpoint, which other sites post
to: it names the form, the moment it was issued (for the minimum fill time and the expiry), the
fields shown (progressive profiling) and where the form was embedded. Page tokens are issued
each time the form is rendered and expire after a day; plain-HTML tokens are issued when the code
is copied and stay valid until the form's code is replaced. A confirmation token names one
submission waiting for its double opt-in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core import signing
from django.utils import timezone

FORM_SALT = "kizuna.capture.form"
CONFIRM_SALT = "kizuna.capture.confirm"
PAGE_MAX_AGE = timedelta(hours=24)
CONFIRM_MAX_AGE = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=1)
PAGE, PLAIN_HTML = "p", "h"


class TokenError(ValueError):
    """`code` is "bad_token" (forged, altered, another form's) or "expired"."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class FormToken:
    form_id: int
    issued: datetime
    kind: str
    shown: list[str] | None = None  # field names when progressive profiling changed them
    context: dict[str, str] = field(default_factory=dict)


def clean_context(context: dict[str, Any] | None) -> dict[str, str]:
    """Where a form was embedded (a landing page and its variant): a few short strings."""
    out: dict[str, str] = {}
    for key, value in (context or {}).items():
        if isinstance(key, str) and isinstance(value, str | int) and not isinstance(value, bool) and len(out) < 10:
            out[key[:40]] = str(value)[:200]
    return out


def issue(form, *, kind: str = PAGE, shown: list[str] | None = None, context: dict | None = None,
          now: datetime | None = None) -> str:
    # Milliseconds: a code replaced and a new one issued in the same second must differ.
    payload: dict[str, Any] = {"f": form.pk, "t": int((now or timezone.now()).timestamp() * 1000), "k": kind}
    if shown is not None:
        payload["s"] = shown
    extra = clean_context(context)
    if extra:
        payload["c"] = extra
    return signing.Signer(salt=FORM_SALT).sign_object(payload, compress=True)


def read(token: str, form, *, now: datetime | None = None) -> FormToken:
    """The checked token of this form, or TokenError saying why not."""
    if not token or len(token) > 4000:
        raise TokenError("bad_token", "the form token is missing")
    try:
        payload = signing.Signer(salt=FORM_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        raise TokenError("bad_token", "the form token is not valid") from None
    if not isinstance(payload, dict) or payload.get("f") != form.pk or not isinstance(payload.get("t"), int):
        raise TokenError("bad_token", "the form token belongs to another form")
    now = now or timezone.now()
    issued = datetime.fromtimestamp(payload["t"] / 1000, tz=UTC)
    if issued > now + CLOCK_SKEW:
        raise TokenError("bad_token", "the form token was issued in the future")
    kind = payload.get("k")
    if kind == PAGE:
        if now - issued > PAGE_MAX_AGE:
            raise TokenError("expired", "the form has expired")
    elif kind == PLAIN_HTML:
        if form.plain_html_since and issued < form.plain_html_since.replace(
                microsecond=form.plain_html_since.microsecond // 1000 * 1000):
            raise TokenError("expired", "this copy of the form was replaced")
    else:
        raise TokenError("bad_token", "the form token is not valid")
    shown = payload.get("s")
    if shown is not None and not (isinstance(shown, list) and all(isinstance(s, str) for s in shown)):
        raise TokenError("bad_token", "the form token is not valid")
    return FormToken(form.pk, issued, kind, shown, clean_context(payload.get("c")))


def confirmation(submission_id: int) -> str:
    return signing.dumps({"s": submission_id}, salt=CONFIRM_SALT, compress=True)


def read_confirmation(token: str) -> int:
    """The submission id, or TokenError ("expired" after seven days, "bad_token" otherwise)."""
    try:
        payload = signing.loads(token, salt=CONFIRM_SALT, max_age=CONFIRM_MAX_AGE)
    except signing.SignatureExpired:
        raise TokenError("expired", "the confirmation link has expired") from None
    except (signing.BadSignature, ValueError):
        raise TokenError("bad_token", "the confirmation link is not valid") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("s"), int):
        raise TokenError("bad_token", "the confirmation link is not valid")
    return payload["s"]
