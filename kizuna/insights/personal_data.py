"""The insights rollups keep per-contact tables: `ContactPage` (which paths a contact has viewed,
for the path-to-conversion base rate) and `CustomerFact`/`CustomerEvent` (when a customer became
one, left, and first did each tracked event since, for retention). They are derived from page
views, stage changes and events, which other providers export too; they are exported here as what
the reports hold, erased with the contact (cascade), and the path counts built from them are
recounted by the next rollup pass."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.insights.models import ContactPage, CustomerEvent, CustomerFact
from kizuna.privacy.registry import rows

LABEL = _("Insights")
MODELS = ["insights.ContactPage", "insights.CustomerFact", "insights.CustomerEvent"]


def export(contact) -> dict[str, Any]:
    return {"pages_viewed": rows(ContactPage.objects.filter(contact=contact).order_by("first_at", "id"),
                                 "path", "first_at", "views"),
            "customer_since": rows(CustomerFact.objects.filter(contact=contact), "became_at", "left_at"),
            "customer_events": rows(CustomerEvent.objects.filter(fact__contact=contact).order_by("first_at"),
                                    "name", "first_at")}


def erase(contact, plan) -> dict[str, int]:
    return {}
