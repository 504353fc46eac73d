"""Signed tokens for the links inside a message: open pixel, click redirects, unsubscribe.

A token is the message id and an HMAC of it, so links cannot be enumerated or forged and need no
stored secret per message; a click names a link by its position in the sent version, so only
URLs that were in the message can ever be redirected to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from django.conf import settings

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _key() -> bytes:
    return hashlib.sha256(b"kizuna.messaging.tokens:" + settings.SECRET_KEY.encode()).digest()


_KEY_CACHE: dict[str, bytes] = {}


def _mac(data: bytes) -> str:
    key = _KEY_CACHE.get(settings.SECRET_KEY)
    if key is None:
        key = _KEY_CACHE[settings.SECRET_KEY] = _key()
    return base64.urlsafe_b64encode(hmac.new(key, data, hashlib.sha256).digest()[:12]).decode().rstrip("=")


def _b36(number: int) -> str:
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = _ALPHABET[rest] + out
        if not number:
            return out


def make(message_id: int) -> str:
    ident = _b36(message_id)
    return f"{ident}-{_mac(ident.encode())}"


def read(token: str) -> int | None:
    """The message id of a valid token, None for anything else."""
    ident, sep, mac = token.partition("-")
    if not sep or not ident or len(ident) > 13 or not ident.isalnum():
        return None
    if not hmac.compare_digest(mac, _mac(ident.encode())):
        return None
    try:
        return int(ident, 36)
    except ValueError:
        return None


def sign_url(token: str, url: str) -> str:
    return _mac(f"{token}\n{url}".encode())


def check_url(token: str, url: str, mac: str) -> bool:
    return hmac.compare_digest(mac, sign_url(token, url))
