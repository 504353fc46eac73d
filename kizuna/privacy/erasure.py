"""Erasing a contact on request (GDPR art. 17, APPI 利用停止・消去) or by a retention rule.

One transaction: every personal-data provider removes or anonymises its rows, the contact row is
deleted, the address is kept only as a hash when the person asked (so imports cannot bring them
back), and the erasure itself is audited: who, when, which contact id, a hash of the address,
never the address or the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.db import transaction

from kizuna.accounts import audit
from kizuna.contacts.emails import email_hash
from kizuna.contacts.models import Contact
from kizuna.db.writelock import sqlite_writer
from kizuna.privacy.models import ErasedAddress, EventPolicy, PrivacySettings
from kizuna.privacy.registry import providers

REQUEST = "request"
RETENTION = "retention"


@dataclass
class ErasurePlan:
    """What the providers are asked to do."""

    events: str = EventPolicy.ANONYMISE
    reason: str = REQUEST
    actor: Any = None

    @property
    def anonymise(self) -> bool:
        return self.events == EventPolicy.ANONYMISE


def strip_query(url: str) -> str:
    """Query strings and fragments often carry an address or a name (?email=…): dropped."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def erase_contact(contact: Contact, *, actor=None, reason: str = REQUEST, events: str | None = None) -> dict:
    """Erases one contact; returns what was done per provider (also written to the audit log)."""
    policy = events or PrivacySettings.current().erase_events
    if policy not in EventPolicy.values:
        raise ValueError(f"unknown event policy {policy!r}")
    plan = ErasurePlan(events=policy, reason=reason, actor=actor)
    contact_id, email = contact.pk, contact.email or ""
    with sqlite_writer(), transaction.atomic():
        counts = {p.key: p.erase(contact, plan) for p in providers()}
        Contact.objects.filter(pk=contact_id).delete()
        hashed = email_hash(email) if email else ""
        if hashed and reason == REQUEST:
            ErasedAddress.objects.get_or_create(email_hash=hashed)
        audit.record(actor, "erase", object_type="contacts.contact", object_id=str(contact_id), label="", changes={
            "reason": reason, "events": policy, "email_sha256": hashed,
            "counts": {k: v for k, v in counts.items() if v},
        })
    return {"contact_id": contact_id, "events": policy, "counts": counts, "email_sha256": hashed}


def erased_at(email: str):
    """When this address was erased on request, or None."""
    if not email:
        return None
    return ErasedAddress.objects.filter(email_hash=email_hash(email)).values_list("erased_at", flat=True).first()


def forget_erasure(email: str) -> bool:
    """The person came back by their own sign-up, or an admin lifted the block."""
    return ErasedAddress.objects.filter(email_hash=email_hash(email)).delete()[0] > 0
