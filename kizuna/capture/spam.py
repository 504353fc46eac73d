"""Spam defence of the public forms: disposable domains, the rate limit per IP, rejection counts.

The honeypot and the minimum fill time are checked in submit.py from the posted fields and the
form token. The rate limit is the outbox's token bucket (`outbox.take_tokens`), one bucket per
IP address (per /64 for IPv6, which one household or office holds), so it holds across web
processes and restarts; idle buckets are pruned by the worker.
"""

from __future__ import annotations

import ipaddress
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.utils import timezone

DISPOSABLE_FILE = Path(__file__).parent / "data" / "disposable_domains.txt"
BUCKET_PREFIX = "form-ip:"


@lru_cache(maxsize=1)
def disposable_domains() -> frozenset[str]:
    lines = DISPOSABLE_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def is_disposable(email: str) -> bool:
    """True when the address's domain, or a domain above it, is a known throw-away mail service."""
    labels = email.rpartition("@")[2].lower().split(".")
    domains = disposable_domains()
    return any(".".join(labels[i:]) in domains for i in range(len(labels) - 1))


def rate_per_minute() -> int:
    return getattr(settings, "KIZUNA_FORM_RATE_PER_MINUTE", 10)


def bucket_name(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return BUCKET_PREFIX + "unknown"
    if address.version == 6:
        if address.ipv4_mapped:
            return BUCKET_PREFIX + str(address.ipv4_mapped)
        return BUCKET_PREFIX + str(ipaddress.ip_network(f"{address}/64", strict=False).network_address) + "/64"
    return BUCKET_PREFIX + str(address)


def allow(ips: list[str]) -> list[bool]:
    """Takes one submission from each IP's bucket, in order; False where it is empty (429)."""
    from kizuna.messaging.outbox import take_tokens_many

    per_minute = rate_per_minute()
    if per_minute <= 0:
        return [True] * len(ips)
    takes = [(bucket_name(ip), per_minute / 60, 1, float(per_minute)) for ip in ips]
    return [granted == 1 for granted in take_tokens_many(takes)]


def retry_after() -> int:
    """Seconds until the next submission is allowed from an IP whose bucket is empty."""
    return max(1, round(60 / max(rate_per_minute(), 1)))


def prune_buckets() -> int:
    """Deletes the buckets that have been full again for a while (the same as having none)."""
    from kizuna.messaging.models import TokenBucket

    idle = timezone.now() - timedelta(minutes=5)
    deleted, _ = TokenBucket.objects.filter(name__startswith=BUCKET_PREFIX, updated_at__lt=idle).delete()
    return deleted


_UPSERT = ("INSERT INTO capture_formcounter (form_id, day, kind, count) VALUES (%s, %s, %s, %s) "
           "ON CONFLICT (form_id, day, kind) DO UPDATE SET count = capture_formcounter.count + excluded.count")


def count(form_id: int, kind: str, n: int = 1, day: date | None = None) -> None:
    """Adds to a per-day counter (a view, or a rejection by reason); the caller's transaction."""
    day = day or timezone.localdate()
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [form_id, day, kind, n])
