"""Login throttling: after N failures for a username or an IP, refuse further tries for a while.

Counts live in the cache (the file cache on one machine, Redis when configured), so every
web process sees the same counts.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache


def _key(kind: str, value: str) -> str:
    return "login-fail:" + kind + ":" + hashlib.sha256(value.lower().encode()).hexdigest()[:32]


def _keys(username: str, ip: str) -> list[str]:
    keys = [_key("ip", ip)] if ip else []
    if username:
        keys.append(_key("user", username))
    return keys


def is_locked(username: str, ip: str) -> bool:
    """Locked when the username failed N times, or the IP 4N times (offices share an IP)."""
    limit = settings.LOGIN_MAX_FAILURES
    counts = cache.get_many(_keys(username, ip))
    ip_count = counts.get(_key("ip", ip), 0) if ip else 0
    user_count = counts.get(_key("user", username), 0) if username else 0
    return user_count >= limit or ip_count >= 4 * limit


def record_failure(username: str, ip: str) -> None:
    for k in _keys(username, ip):
        cache.add(k, 0, settings.LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(k)
        except ValueError:
            cache.set(k, 1, settings.LOGIN_LOCKOUT_SECONDS)


def reset(username: str, ip: str) -> None:
    cache.delete_many(_keys(username, ip))
