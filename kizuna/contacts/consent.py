"""Consent: may we send this kind of message to this contact now?

Everything that sends asks `may_send`, and only it. The rules:

- Do-not-contact for bounced, complained or manual reasons blocks every message. An
  unsubscribed contact still receives transactional mail (a download they asked for, a
  password reset), never marketing.
- Marketing mail needs a topic. Opted out blocks. Unknown blocks on topics that require
  opt-in (the default, as 特定電子メール法 asks), and is allowed on topics that do not.
- Frequency caps and quiet hours are checked at send time by the email engine, after this.

Every change is written to the consent ledger with how and where it happened.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from .models import (
    Consent,
    ConsentRecord,
    ConsentStatus,
    Contact,
    DoNotContactReason,
    SubscriptionTopic,
)

MARKETING = "marketing"
TRANSACTIONAL = "transactional"


@dataclass(frozen=True)
class SendDecision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def consent_status(contact: Contact, topic: SubscriptionTopic) -> str:
    row = Consent.objects.filter(contact=contact, topic=topic).only("status").first()
    return row.status if row else ConsentStatus.UNKNOWN


def may_send(contact: Contact, kind: str = MARKETING, topic: SubscriptionTopic | None = None) -> SendDecision:
    if kind not in (MARKETING, TRANSACTIONAL):
        raise ValueError(f"unknown message kind {kind!r}")
    if not contact.email:
        return SendDecision(False, "no email address")
    if contact.do_not_contact:
        if kind == TRANSACTIONAL and contact.dnc_reason == DoNotContactReason.UNSUBSCRIBED:
            return SendDecision(True, "transactional mail to an unsubscribed contact")
        return SendDecision(False, f"do not contact ({contact.dnc_reason or 'manual'})")
    if kind == TRANSACTIONAL:
        return SendDecision(True, "transactional")
    if topic is None:
        return SendDecision(False, "marketing mail needs a subscription topic")
    status = consent_status(contact, topic)
    if status == ConsentStatus.OPTED_OUT:
        return SendDecision(False, f"opted out of {topic.key}")
    if status == ConsentStatus.OPTED_IN:
        return SendDecision(True, f"opted in to {topic.key}")
    if topic.requires_opt_in:
        return SendDecision(False, f"no opt-in for {topic.key}")
    return SendDecision(True, f"{topic.key} does not require opt-in")


@transaction.atomic
def set_consent(
    contact: Contact, topic: SubscriptionTopic, status: str, *, method: str, source: str = "",
    text_shown: str = "", text_version: str = "", ip: str | None = None, actor=None,
) -> bool:
    """Sets one topic's consent and writes the ledger; returns False when nothing changed.
    `text_shown` and `text_version` are the words the person agreed to and their version."""
    if status not in ConsentStatus.values:
        raise ValueError(f"unknown consent status {status!r}")
    current = consent_status(contact, topic)
    if current == status:
        return False
    if status == ConsentStatus.UNKNOWN:
        Consent.objects.filter(contact=contact, topic=topic).delete()
    else:
        Consent.objects.update_or_create(
            contact=contact, topic=topic, defaults={"status": status, "updated_at": timezone.now()}
        )
    ConsentRecord.objects.create(
        contact=contact, topic=topic, status=status, method=method, source=source[:255],
        text_shown=text_shown, text_version=text_version[:50], ip=ip or None,
        actor=actor if getattr(actor, "pk", None) else None,
    )
    return True


@transaction.atomic
def set_do_not_contact(
    contact: Contact, reason: str, *, method: str, source: str = "", ip: str | None = None, actor=None,
) -> bool:
    if reason not in DoNotContactReason.values:
        raise ValueError(f"unknown do-not-contact reason {reason!r}")
    if contact.do_not_contact and contact.dnc_reason == reason:
        return False
    now = timezone.now()
    Contact.objects.filter(pk=contact.pk).update(do_not_contact=True, dnc_reason=reason, dnc_at=now, updated_at=now)
    contact.do_not_contact, contact.dnc_reason, contact.dnc_at = True, reason, now
    ConsentRecord.objects.create(
        contact=contact, topic=None, status="dnc", reason=reason, method=method, source=source[:255],
        ip=ip or None, actor=actor if getattr(actor, "pk", None) else None,
    )
    return True


@transaction.atomic
def clear_do_not_contact(contact: Contact, *, method: str, source: str = "", actor=None) -> bool:
    if not contact.do_not_contact:
        return False
    now = timezone.now()
    Contact.objects.filter(pk=contact.pk).update(do_not_contact=False, dnc_reason="", dnc_at=None, updated_at=now)
    contact.do_not_contact, contact.dnc_reason, contact.dnc_at = False, "", None
    ConsentRecord.objects.create(
        contact=contact, topic=None, status="contactable", method=method, source=source[:255],
        actor=actor if getattr(actor, "pk", None) else None,
    )
    return True
