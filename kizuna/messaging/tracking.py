"""Opens, clicks and unsubscribes coming back from sent mail.

Each open and click is kept (`Activity`) with the machine verdict, summed on the message (first
human open/click, counters) and sent on as an event for the contact, flagged `machine` when a
proxy or scanner made it, so scores and reports can count people only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from kizuna.contacts import consent
from kizuna.contacts.models import ConsentStatus, DoNotContactReason, SubscriptionTopic
from kizuna.db.writelock import sqlite_writer
from kizuna.events.enrichment import anonymize_ip
from kizuna.events.models import TrackingSettings
from kizuna.messaging import machine, tokens
from kizuna.messaging.models import Activity, Message, MessageStatus, TemplateLink
from kizuna.messaging.outbox import _emit, _event


@dataclass(frozen=True)
class Request:
    method: str
    ip: str
    user_agent: str
    headers: dict[str, str]
    at: datetime


def find(token: str) -> Message | None:
    message_id = tokens.read(token)
    if message_id is None:
        return None
    return Message.objects.select_related("version", "contact").filter(pk=message_id).first()


def _record(message: Message, kind: str, req: Request, verdict: machine.Verdict, position: int | None,
            url: str = "") -> None:
    human = not verdict.machine
    ip = req.ip
    if ip and TrackingSettings.load().anonymize_ip:  # classified above with the full address, kept without it
        ip = anonymize_ip(ip)
    first_field = {("open", True): "opened_at", ("open", False): "machine_opened_at",
                   ("click", True): "clicked_at", ("click", False): "machine_clicked_at"}[(kind, human)]
    with sqlite_writer(), transaction.atomic():
        Activity.objects.create(message=message, kind=kind, position=position, url=url, at=req.at, ip=ip or None,
                                user_agent=req.user_agent[:500], machine=verdict.machine, reason=verdict.reason)
        updates: dict = {"opens" if kind == "open" else "clicks": F("opens" if kind == "open" else "clicks") + 1}
        Message.objects.filter(pk=message.pk).update(**updates)
        Message.objects.filter(pk=message.pk, **{f"{first_field}__isnull": True}).update(**{first_field: req.at})
        if kind == "click" and human:  # a human click implies the mail was opened (images may be off)
            Message.objects.filter(pk=message.pk, opened_at__isnull=True).update(opened_at=req.at)
    if message.contact_id:
        name = "Email Opened" if kind == "open" else "Email Clicked"
        event = _event(message, name, req.at, {"machine": verdict.machine, "machineReason": verdict.reason,
                                               "url": url, "link": position})
        event["messageId"] = f"email-{kind}-{message.pk}-{req.at.timestamp():.6f}"
        event["context"].update({"ip": ip, "userAgent": req.user_agent})
        _emit([event])


def record_open(token: str, req: Request) -> bool:
    message = find(token)
    if message is None:
        return False
    hit = machine.Hit(kind="open", method=req.method, ip=req.ip, user_agent=req.user_agent, at=req.at,
                      sent_at=message.sent_at, url="", headers=req.headers)
    _record(message, "open", req, machine.classify(hit), None)
    return True


def record_click(token: str, position: int | None, req: Request, *, signed_url: str = "",
                 mac: str = "") -> str | None:
    """The destination for a valid (message, link) pair or a signed URL, None otherwise: only
    URLs that were in the sent message are ever redirected to."""
    message = find(token)
    if message is None:
        return None
    if position is None:
        if not signed_url or not tokens.check_url(token, signed_url, mac):
            return None
        if not signed_url.lower().startswith(("http://", "https://")):
            return None
        url = signed_url
    else:
        url = TemplateLink.objects.filter(version_id=message.version_id, position=position).values_list(
            "url", flat=True).first()
        if url is None:
            return None
    earlier = list(Activity.objects.filter(message=message, kind="click").values_list("at", "url"))
    links = max(TemplateLink.objects.filter(version_id=message.version_id).count(),
                len({u for _, u in earlier} | {url}))
    hit = machine.Hit(kind="click", method=req.method, ip=req.ip, user_agent=req.user_agent, at=req.at,
                      sent_at=message.sent_at, url=url, headers=req.headers)
    _record(message, "click", req, machine.classify(hit, earlier_clicks=earlier, link_count=links), position, url)
    return url


def unsubscribe(message: Message, *, topics: list[SubscriptionTopic] | None = None, everything: bool = False,
                method: str, ip: str | None = None) -> None:
    """Honoured at once: opted out of the message's topic (or the chosen ones), or of all mail."""
    contact = message.contact
    now = timezone.now()
    if contact is not None:
        if everything:
            consent.set_do_not_contact(contact, DoNotContactReason.UNSUBSCRIBED, method=method,
                                       source=f"email {message.pk}", ip=ip)
        for topic in topics if topics is not None else ([message.topic] if message.topic else []):
            consent.set_consent(contact, topic, ConsentStatus.OPTED_OUT, method=method,
                                source=f"email {message.pk}", ip=ip)
    with sqlite_writer(), transaction.atomic():
        Message.objects.filter(pk=message.pk, unsubscribed_at__isnull=True).update(unsubscribed_at=now)
        # Anything of the same topic still waiting for this address is not sent.
        if message.topic_id and contact is not None:
            waiting = Message.objects.filter(contact=contact, topic_id=message.topic_id,
                                             status__in=[MessageStatus.QUEUED, MessageStatus.HELD])
            waiting.update(status=MessageStatus.SKIPPED, error="unsubscribed")
    if message.contact_id:
        _emit([_event(message, "Unsubscribed", now, {"method": method, "everything": everything})])
