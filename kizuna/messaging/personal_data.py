"""A contact's email: messages, opens and clicks, bounces, suppression, for export and erasure
(see kizuna/privacy/registry.py). Erased messages stay as anonymous rows, so send reports keep
their counts; the address, the opening and clicking machines' IPs and user agents, the copies
of sent mail and the bounce reports go."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from kizuna.messaging.models import Activity, BounceRecord, CapturedMail, Message, Suppression
from kizuna.privacy.registry import rows

LABEL = _("Email messages")
MODELS = ["messaging.Message", "messaging.Activity", "messaging.BounceRecord", "messaging.Suppression",
          "messaging.CapturedMail"]


def _messages(contact):
    email = (contact.email or "").lower()
    return Message.objects.filter(Q(contact=contact) | Q(to_email=email)) if email else \
        Message.objects.filter(contact=contact)


def export(contact) -> dict[str, Any]:
    messages = _messages(contact)
    email = (contact.email or "").lower()
    return {
        "messages": rows(messages.order_by("created_at", "id"), "id", "to_email", "kind", "topic__key",
                         "version__template__name", "version__subject", "bulk__name", "status", "created_at",
                         "sent_at", "opened_at", "clicked_at", "bounce", "bounced_at", "complained_at",
                         "unsubscribed_at", "opens", "clicks", "error"),
        "activity": rows(Activity.objects.filter(message__in=messages).order_by("at", "id"), "message_id", "kind",
                         "url", "at", "ip", "user_agent", "machine", "reason"),
        "bounces": rows(BounceRecord.objects.filter(email=email).order_by("received_at"), "kind", "status",
                        "diagnostic", "source", "received_at") if email else [],
        "suppression": rows(Suppression.objects.filter(email=email), "reason", "detail", "created_at")
        if email else [],
    }


def erase(contact, plan) -> dict[str, int]:
    email = (contact.email or "").lower()
    messages = _messages(contact)
    ids = list(messages.values_list("id", flat=True))
    captured = CapturedMail.objects.filter(Q(message_id__in=ids) | Q(envelope_to=email) if email else
                                           Q(message_id__in=ids)).delete()[0]
    activity = Activity.objects.filter(message_id__in=ids).update(ip=None, user_agent="")
    anonymised = Message.objects.filter(id__in=ids).update(contact=None, to_email="", extra={}, error="")
    bounces = BounceRecord.objects.filter(email=email).delete()[0] if email else 0
    # A bounce or complaint suppression is replaced by the erasure's hashed entry (kizuna.privacy).
    suppressions = Suppression.objects.filter(email=email).delete()[0] if email else 0
    counts = {"messages_anonymised": anonymised, "activity_anonymised": activity, "captured_deleted": captured,
              "bounces_deleted": bounces, "suppressions_deleted": suppressions}
    return {k: v for k, v in counts.items() if v}
