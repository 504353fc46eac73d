"""Login throttling: after N failures for a username or 4N for an IP, refuse further tries for a while.

Counts live in the cache (the file cache on one machine, Redis when configured), so every
web process sees the same counts. A password and a two-factor code are counted alike, so the
second factor cannot be guessed faster than the first.

Only the username's count is cleared by a successful sign-in: clearing the IP's too would let
an attacker with one account of their own reset their address between guesses at others.
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


def ip_limit() -> int:
    """Offices share one address, so it may fail more often than one username."""
    return 4 * settings.LOGIN_MAX_FAILURES


def counts(username: str, ip: str) -> tuple[int, int]:
    """(failures of this username, failures from this IP) within the lockout window."""
    found = cache.get_many(_keys(username, ip))
    return (found.get(_key("user", username), 0) if username else 0,
            found.get(_key("ip", ip), 0) if ip else 0)


def is_locked(username: str, ip: str) -> bool:
    user_count, ip_count = counts(username, ip)
    return user_count >= settings.LOGIN_MAX_FAILURES or ip_count >= ip_limit()


def record_failure(username: str, ip: str) -> bool:
    """Counts one failure; True when it is the one that locks the username or the IP."""
    for k in _keys(username, ip):
        cache.add(k, 0, settings.LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(k)
        except ValueError:
            cache.set(k, 1, settings.LOGIN_LOCKOUT_SECONDS)
    user_count, ip_count = counts(username, ip)
    return user_count == settings.LOGIN_MAX_FAILURES or ip_count == ip_limit()


def reset(username: str) -> None:
    """A successful sign-in clears the username's failures (not the IP's, see above)."""
    if username:
        cache.delete(_key("user", username))
