"""Sending hot-lead notices: the owner's email and the webhooks, retried with backoff.

A delivery is leased before it is sent (its next attempt moved past the send's timeout), so two
workers never send the same one, and a worker killed mid-send retries it after the lease. A
receiver can still see a notice twice after such a crash: `Kizuna-Delivery` carries the id to
deduplicate on.

Webhook bodies are signed like Stripe's: header `Kizuna-Signature: t=<unix time>,v1=<hex>`
where v1 = HMAC-SHA256(secret, f"{t}.{body}"). Receivers should check it and refuse old `t`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from datetime import timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.html import escape
from django.utils.translation import gettext as _

from kizuna.db.locks import exclusive
from kizuna.db.loops import repeat
from kizuna.db.writelock import sqlite_writer
from kizuna.events.models import Event
from kizuna.handoff import ssrf
from kizuna.handoff.models import Delivery, Webhook
from kizuna.scoring.models import LeadAlert, ScoringModel

log = logging.getLogger(__name__)

# Seconds before attempt 2, 3, ...; after the last, the delivery is given up as failed.
BACKOFF = (30, 120, 600, 1800, 7200, 21600)
LEASE = timedelta(minutes=2)
TIMEOUT = 10
ACTIVITY_DAYS = 14


class DeliveryError(Exception):
    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False):
        super().__init__(message)
        self.status, self.permanent = status, permanent


# --- what the notice says ------------------------------------------------------------------

def digest(alert: LeadAlert) -> dict:
    """The facts every notice carries: who, how hot, why, what they did lately, and a link."""
    contact = alert.contact
    owner = contact.owner
    since = alert.created_at - timedelta(days=ACTIVITY_DAYS)
    activity = []
    for event in Event.objects.filter(contact=contact, occurred_at__gte=since, bot="").order_by("-occurred_at")[:10]:
        what = (event.title or event.path or event.url) if event.type == "page" else (event.name or event.type)
        activity.append({"at": timezone.localtime(event.occurred_at).strftime("%Y-%m-%d %H:%M"),
                         "type": event.type, "what": what[:200]})
    handoff = getattr(alert, "handoff", None)
    return {
        "alert_id": alert.pk,
        "model": alert.model.name,
        "created_at": alert.created_at.isoformat(),
        "contact": {
            "id": contact.pk, "name": str(contact), "email": contact.email,
            "company": contact.company.name if contact.company_id else contact.company_name,
            "title": contact.job_title,
            "owner": str(owner) if owner else "",
        },
        "engagement": alert.engagement,
        "grade": alert.grade,
        "reasons": list(alert.reasons),
        "activity": activity,
        "assigned_by": handoff.get_how_display() if handoff else "",
        "url": settings.BASE_URL + reverse("contacts:detail", args=[contact.pk]),
    }


def _headline(facts: dict) -> str:
    company = f" ({facts['contact']['company']})" if facts["contact"]["company"] else ""
    return _("Hot lead: %(name)s%(company)s — engagement %(score)s, grade %(grade)s") % {
        "name": facts["contact"]["name"], "company": company, "score": facts["engagement"],
        "grade": facts["grade"]}


def email_text(facts: dict) -> str:
    lines = [_headline(facts), "", facts["url"], "", _("Why:")]
    lines += [f"  • {r}" for r in facts["reasons"]] or ["  —"]
    lines += ["", _("Recent activity:")]
    lines += [f"  {a['at']}  {a['what']}" for a in facts["activity"]] or ["  —"]
    if facts["contact"]["owner"]:
        lines += ["", _("Owner: %(owner)s (%(how)s)") % {"owner": facts["contact"]["owner"],
                                                         "how": facts["assigned_by"]}]
    lines += ["", _("Scoring model: %(model)s") % {"model": facts["model"]}]
    return "\n".join(lines) + "\n"


def email_html(facts: dict) -> str:
    from django.utils.html import escape

    reasons = "".join(f"<li>{escape(r)}</li>" for r in facts["reasons"])
    activity = "".join(f"<tr><td>{escape(a['at'])}</td><td>{escape(a['what'])}</td></tr>" for a in facts["activity"])
    return (
        f"<p><strong>{escape(_headline(facts))}</strong></p>"
        f"<p><a href=\"{escape(facts['url'])}\">{escape(_('Open the contact'))}</a></p>"
        f"<p>{escape(_('Why:'))}</p><ul>{reasons}</ul>"
        f"<p>{escape(_('Recent activity:'))}</p><table>{activity}</table>"
    )


def slack_payload(facts: dict) -> dict:
    reasons = "\n".join(f"• {r}" for r in facts["reasons"]) or "—"
    activity = "\n".join(f"{a['at']}  {a['what']}" for a in facts["activity"][:5]) or "—"
    return {
        "text": _headline(facts),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*<{facts['url']}|{_headline(facts)}>*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_('Why:')}*\n{reasons}"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_('Recent activity:')}*\n{activity}"}},
        ],
    }


def teams_payload(facts: dict) -> dict:
    body = [
        {"type": "TextBlock", "weight": "Bolder", "size": "Medium", "wrap": True, "text": _headline(facts)},
        {"type": "TextBlock", "wrap": True, "text": _("Why:")},
        *({"type": "TextBlock", "wrap": True, "spacing": "None", "text": f"• {r}"} for r in facts["reasons"]),
        {"type": "TextBlock", "wrap": True, "text": _("Recent activity:")},
        *({"type": "TextBlock", "wrap": True, "spacing": "None", "text": f"{a['at']}  {a['what']}"}
          for a in facts["activity"][:5]),
    ]
    card = {"type": "AdaptiveCard", "version": "1.4", "body": body,
            "actions": [{"type": "Action.OpenUrl", "title": _("Open the contact"), "url": facts["url"]}]}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}


def json_payload(facts: dict) -> dict:
    return {"event": "lead.hot", **facts}


PAYLOADS = {Webhook.Kind.SLACK: slack_payload, Webhook.Kind.TEAMS: teams_payload, Webhook.Kind.JSON: json_payload}


# --- sending -------------------------------------------------------------------------------

def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def post_webhook(hook: Webhook, delivery_id: int, payload: dict, event: str = "lead.hot") -> int:
    """POSTs a signed body to the hook's URL, through the SSRF guard (ssrf.py): the address is
    checked after resolving, connected to as checked, and redirects are not followed."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Kizuna-Webhook/1",
        "Kizuna-Event": event,
        "Kizuna-Delivery": str(delivery_id),
        "Kizuna-Signature": sign(hook.secret, int(time.time()), body),
    }
    try:
        status, reason = ssrf.post(hook.url, body, headers, TIMEOUT)
    except ssrf.UnsafeTarget as exc:
        raise DeliveryError(f"refused: {exc}", permanent=True) from exc
    except OSError as exc:
        raise DeliveryError(str(getattr(exc, "reason", exc))[:300]) from exc
    if 300 <= status < 400:
        raise DeliveryError(f"HTTP {status} {reason}: webhooks do not follow redirects; use the final URL",
                            status=status, permanent=True)
    if status >= 400:
        # 408 and 429 and 5xx are worth retrying; other 4xx mean the URL or secret is wrong.
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise DeliveryError(f"HTTP {status} {reason}", status=status, permanent=permanent)
    return status


def send_email(delivery_id: int, to: str, subject: str, text: str, html: str) -> None:
    from kizuna.messaging import transports
    from kizuna.messaging.compose import Composed
    from kizuna.messaging.models import CapturedMail

    message = EmailMessage(policy=email_policy.SMTP)  # CRLF line ends, as SMTP wants
    message["From"] = settings.DEFAULT_FROM_EMAIL
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(domain=settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "kizuna")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, cte="quoted-printable")  # short lines whatever the text
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    data = message.as_bytes()
    transport = transports.from_settings()
    if transport.name == "capture":
        CapturedMail.objects.create(message=None, envelope_to=to, raw=data)
        return
    sender = transport.connection()
    try:
        sender.send(Composed(envelope_from=settings.DEFAULT_FROM_EMAIL, recipient=to, message_id=message["Message-ID"],
                             data=data, subject=subject, links=[]), lambda _line: None, f"alert-{delivery_id}")
    except transports.PermanentFailure as exc:
        raise DeliveryError(str(exc)[:300], permanent=True) from exc
    except Exception as exc:  # noqa: BLE001 - anything else is worth another try
        raise DeliveryError(str(exc)[:300] or type(exc).__name__) from exc
    finally:
        sender.close()


def _language_for(delivery: Delivery) -> str:
    if delivery.webhook_id:
        return delivery.webhook.language
    if delivery.alert_id is None:
        return settings.LANGUAGE_CODE
    handoff = getattr(delivery.alert, "handoff", None)
    owner = handoff.owner if handoff else None
    return getattr(owner, "language", "") or settings.LANGUAGE_CODE


def deliver(delivery: Delivery) -> None:
    """Sends one delivery (raises DeliveryError)."""
    if delivery.alert_id is None:
        return _deliver_payload(delivery)
    with translation.override(_language_for(delivery)):
        facts = digest(delivery.alert)
        if delivery.webhook_id:
            hook = delivery.webhook
            delivery.response_status = post_webhook(hook, delivery.pk, PAYLOADS[hook.kind](facts))
        else:
            send_email(delivery.pk, delivery.email, "[Kizuna] " + _headline(facts), email_text(facts),
                       email_html(facts))


def payload_text(payload: dict) -> str:
    """The plain text of a notice that carries its own payload (journey steps)."""
    lines = [payload.get("text") or payload.get("subject") or ""]
    contact = payload.get("contact") or {}
    if contact:
        lines += ["", f"{contact.get('name', '')} <{contact.get('email', '')}>".strip()]
    if payload.get("url"):
        lines += ["", payload["url"]]
    return "\n".join(lines).strip() + "\n"


def _deliver_payload(delivery: Delivery) -> None:
    payload = delivery.payload or {}
    if delivery.webhook_id:
        hook = delivery.webhook
        text = payload_text(payload)
        body = {Webhook.Kind.SLACK: {"text": text},
                Webhook.Kind.TEAMS: {"type": "message", "text": text}}.get(hook.kind, payload)
        delivery.response_status = post_webhook(hook, delivery.pk, body, event=delivery.event)
    else:
        text = payload_text(payload)
        html = "<pre>" + escape(text) + "</pre>"
        send_email(delivery.pk, delivery.email, "[Kizuna] " + (delivery.subject or delivery.event), text, html)


def _claim(limit: int) -> list[int]:
    now = timezone.now()
    with sqlite_writer(), transaction.atomic():
        due = Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now).order_by(
            "next_attempt_at", "id")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        ids = list(due.values_list("id", flat=True)[:limit])
        Delivery.objects.filter(id__in=ids).update(next_attempt_at=now + LEASE)
    return ids


def deliver_due(limit: int = 20) -> int:
    """Sends what is due; returns how many were attempted."""
    ids = _claim(limit)
    for delivery in Delivery.objects.filter(id__in=ids).select_related(
            "webhook", "alert__model", "alert__contact__owner", "alert__contact__company", "alert__handoff__owner"):
        now = timezone.now()
        delivery.attempts += 1
        try:
            deliver(delivery)
        except DeliveryError as exc:
            delivery.last_error = str(exc)[:500]
            delivery.response_status = exc.status
            if exc.permanent or delivery.attempts > len(BACKOFF):
                delivery.status = Delivery.Status.FAILED
                log.warning("hot-lead notice %s failed for good: %s", delivery.pk, exc)
            else:
                delivery.next_attempt_at = now + timedelta(seconds=BACKOFF[delivery.attempts - 1])
        else:
            delivery.status, delivery.sent_at, delivery.last_error = Delivery.Status.SENT, now, ""
        with sqlite_writer(), transaction.atomic():
            delivery.save(update_fields=["attempts", "status", "sent_at", "last_error", "response_status",
                                         "next_attempt_at"])
    return len(ids)


def retry(delivery: Delivery) -> None:
    """Sends a failed or waiting delivery again at once (the button on the deliveries page)."""
    Delivery.objects.filter(pk=delivery.pk).exclude(status=Delivery.Status.SENT).update(
        status=Delivery.Status.PENDING, next_attempt_at=timezone.now())


def run(stop: threading.Event, idle_seconds: float = 1.0) -> None:
    """The worker's hand-off loop: due notices, and hot flags of leads that cooled down."""
    from kizuna.scoring import engine

    last_cooling = 0.0

    def work() -> int:
        nonlocal last_cooling
        done = deliver_due()
        if time.monotonic() - last_cooling > 60:
            with exclusive("hot-cooling") as mine:  # one worker's pass is enough
                for model in ScoringModel.objects.filter(active=True) if mine else []:
                    with sqlite_writer(), transaction.atomic():
                        engine.cool_down(model)
            last_cooling = time.monotonic()
        return done

    repeat(stop, work, idle_seconds=idle_seconds, what="hand-off loop")


def sample_facts() -> dict:
    """A made-up notice for the webhook test button."""
    return {
        "alert_id": 0, "model": "Default", "created_at": timezone.now().isoformat(),
        "contact": {"id": 0, "name": "青木 一郎", "email": "aoki@example.co.jp", "company": "B株式会社",
                    "title": "製造部 部長", "owner": ""},
        "engagement": 64.0, "grade": "B",
        "reasons": [_("Test notice from Kizuna")],
        "activity": [{"at": timezone.localtime().strftime("%Y-%m-%d %H:%M"), "type": "page", "what": "/pricing"}],
        "assigned_by": "", "url": settings.BASE_URL + "/",
    }
