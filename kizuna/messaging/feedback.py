"""What comes back after sending: bounces, complaints and mailto unsubscribes, from Kizuna's
own SMTP listener, a polled mailbox (IMAP/POP3) or an ESP's webhooks (through anymail).

Policy (docs/decisions/0007-email-outbox.md): a hard bounce makes the address unreachable; a
soft bounce does when 3 of the address's last 5 sends bounced soft; a complaint unsubscribes the
contact from everything. Unreachable and complained addresses go on the suppression list, which
every send checks.
"""

from __future__ import annotations

import logging
import re

from django.db import transaction
from django.utils import timezone

from kizuna.contacts import consent
from kizuna.contacts.models import Contact, DoNotContactReason
from kizuna.db.writelock import sqlite_writer
from kizuna.messaging import bounces, tokens
from kizuna.messaging.models import BounceRecord, Message, MessageStatus, Suppression, SuppressionReason
from kizuna.messaging.outbox import _emit, _event

log = logging.getLogger(__name__)
_TOKEN_IN_ID = re.compile(r"<?([0-9a-z]+-[A-Za-z0-9_-]+)@")
_LOCAL_TOKEN = re.compile(r"^(bounce|unsubscribe)\+([0-9a-z]+-[A-Za-z0-9_-]+)@", re.I)


def message_for(*, message_id: str = "", envelope_to: str = "") -> Message | None:
    """The sent message a bounce is about: from our VERP return path, the X-Kizuna-Message
    header or the Message-ID the report quotes."""
    candidates: list[str] = []
    match = _LOCAL_TOKEN.match(envelope_to or "")
    if match:
        candidates.append(match.group(2))
    if message_id:
        found = _TOKEN_IN_ID.search(message_id)
        candidates.append(found.group(1) if found else message_id.strip("<> "))
    for token in candidates:
        pk = tokens.read(token)
        if pk is not None:
            message = Message.objects.select_related("contact", "version").filter(pk=pk).first()
            if message is not None:
                return message
    return None


def _suppress(email: str, reason: str, detail: str) -> None:
    Suppression.objects.get_or_create(email=email.lower(), defaults={"reason": reason, "detail": detail[:300]})


def _contact(email: str, message: Message | None) -> Contact | None:
    if message is not None and message.contact_id:
        return message.contact
    return Contact.objects.filter(email=email.lower()).first()


def recent_outcomes(email: str, exclude: int | None = None, limit: int = 5) -> list[str]:
    """The address's last sends, oldest first: 'hard', 'soft' or 'delivered'."""
    rows = (Message.objects.filter(to_email__iexact=email, status=MessageStatus.SENT).exclude(pk=exclude)
            .order_by("-sent_at").values_list("bounce", flat=True)[:limit])
    return [b or "delivered" for b in reversed(list(rows))]


def handle(report: bounces.BounceReport, *, envelope_to: str = "", source: str = "dsn") -> list[str]:
    """Applies one parsed report; returns what was done, one line per recipient."""
    now = timezone.now()
    done: list[str] = []
    message = message_for(message_id=report.message_id, envelope_to=envelope_to)
    recipients = report.recipients or ([message.to_email] if message else [])
    for email in recipients:
        target = message if message is not None and message.to_email.lower() == email.lower() else None
        if target is None and message is None:
            target = Message.objects.filter(to_email__iexact=email, status=MessageStatus.SENT).order_by(
                "-sent_at").first()
        with sqlite_writer(), transaction.atomic():
            BounceRecord.objects.create(message=target, email=email.lower(), kind=report.kind, status=report.status,
                                        diagnostic=report.diagnostic[:2000], source=source)
            if report.kind in (bounces.HARD, bounces.SOFT) and target is not None:
                Message.objects.filter(pk=target.pk).update(bounce=report.kind, bounced_at=now)
            if report.kind == bounces.COMPLAINT and target is not None:
                Message.objects.filter(pk=target.pk, complained_at__isnull=True).update(complained_at=now)
        if report.kind in (bounces.HARD, bounces.SOFT):
            history = recent_outcomes(email, exclude=target.pk if target else None)
            verdict = bounces.decide(history, report.kind)
        elif report.kind == bounces.COMPLAINT:
            verdict = "unsubscribe"
        else:
            verdict = "none"
        contact = _contact(email, target)
        if verdict == "unreachable":
            reason = SuppressionReason.HARD_BOUNCE if report.kind == bounces.HARD else SuppressionReason.SOFT_BOUNCE
            _suppress(email, reason, f"{report.status} {report.diagnostic}".strip())
            if contact is not None:
                consent.set_do_not_contact(contact, DoNotContactReason.BOUNCED, method=source,
                                           source=f"{report.kind} bounce {report.status}".strip())
        elif verdict == "unsubscribe":
            _suppress(email, SuppressionReason.COMPLAINT, report.diagnostic or "spam complaint")
            if contact is not None:
                consent.set_do_not_contact(contact, DoNotContactReason.COMPLAINED, method=source,
                                           source="spam complaint")
        if target is not None and target.contact_id and report.kind != bounces.AUTO_REPLY:
            name = "Email Complained" if report.kind == bounces.COMPLAINT else "Email Bounced"
            event = _event(target, name, now, {"bounceType": report.kind, "status": report.status,
                                               "result": verdict})
            _emit([event])
        done.append(f"{email}: {report.kind} → {verdict}")
    return done


def handle_raw(raw: bytes, *, envelope_to: str = "", source: str = "dsn") -> list[str]:
    """One message that arrived at a bounce or unsubscribe address."""
    match = _LOCAL_TOKEN.match(envelope_to or "")
    if match and match.group(1).lower() == "unsubscribe":
        from kizuna.messaging import tracking

        message = message_for(envelope_to=envelope_to)
        if message is None:
            return [f"{envelope_to}: unknown message"]
        tracking.unsubscribe(message, method="mailto")
        return [f"{message.to_email}: unsubscribed by mail"]
    report = bounces.parse(raw)
    if report.kind == bounces.UNKNOWN and not report.recipients:
        log.info("inbound mail to %s is neither a bounce nor a complaint", envelope_to)
        return [f"{envelope_to}: not a bounce"]
    return handle(report, envelope_to=envelope_to, source=source)


# --- ESP webhooks ------------------------------------------------------------------------------

def on_anymail_tracking(sender, event, esp_name, **kwargs) -> None:
    """anymail's normalised tracking events: bounces, complaints, unsubscribes, deliveries.
    Opens and clicks are not taken from ESPs: Kizuna tracks them itself (and ESP tracking is off)."""
    token = (event.metadata or {}).get("kizuna_message", "") if hasattr(event, "metadata") else ""
    message = Message.objects.filter(pk=int(token)).first() if str(token).isdigit() else None
    if message is None and event.message_id:
        message = Message.objects.filter(provider_id=event.message_id).first()
    email = (event.recipient or (message.to_email if message else "")).lower()
    if not email:
        return
    kind = {"bounced": bounces.HARD, "deferred": bounces.SOFT, "complained": bounces.COMPLAINT,
            "rejected": bounces.HARD}.get(event.event_type)
    if event.event_type in ("delivered", "queued", "sent") and message is not None:
        # Delivery evidence settles a row whose hand-over the worker could not record.
        Message.objects.filter(pk=message.pk, status=MessageStatus.UNKNOWN).update(
            status=MessageStatus.SENT, sent_at=event.timestamp or timezone.now(), error="delivery reported by ESP")
        return
    if event.event_type == "unsubscribed" and message is not None:
        from kizuna.messaging import tracking

        tracking.unsubscribe(message, method=f"webhook:{esp_name}")
        return
    if kind is None:
        return
    if event.event_type == "bounced" and (event.reject_reason or "") in ("timed_out", "other") :
        kind = bounces.SOFT
    report = bounces.BounceReport(kind=kind, recipients=[email], status="", diagnostic=event.description or "",
                                  message_id=f"<{tokens.make(message.pk)}@x>" if message else "",
                                  reason=event.reject_reason or "")
    handle(report, source=f"webhook:{esp_name.lower()}")
