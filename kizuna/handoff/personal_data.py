"""Hot-lead notices and webhook deliveries about a contact, for export and erasure
(kizuna/privacy/registry.py). Deliveries carry a copy of the contact in their payload; those of a
journey step name the contact directly, those of an alert go with the alert."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from kizuna.handoff.models import Delivery, Handoff
from kizuna.privacy.registry import rows

LABEL = _("Hand-off to sales")
MODELS = ["handoff.Delivery", "handoff.Handoff"]


def _deliveries(contact):
    return Delivery.objects.filter(Q(contact=contact) | Q(alert__contact=contact))


def export(contact) -> dict[str, Any]:
    return {
        "handoffs": rows(Handoff.objects.filter(alert__contact=contact), "alert__created_at", "owner__username",
                         "how", "route__name"),
        "deliveries": rows(_deliveries(contact).order_by("created_at", "id"), "event", "subject", "payload",
                           "webhook__name", "email", "status", "attempts", "created_at", "sent_at", "last_error"),
    }


def erase(contact, plan) -> dict[str, int]:
    deleted = _deliveries(contact).delete()[1].get("handoff.Delivery", 0)
    return {"deliveries_deleted": deleted} if deleted else {}
