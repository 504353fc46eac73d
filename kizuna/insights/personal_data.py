"""The insights rollups keep one per-contact table, `ContactPage` (which paths a contact has viewed,
for the path-to-conversion base rate). It is derived from page views, which the events provider
exports, so it has nothing of its own to export; it is erased with the contact (cascade), and the
path counts built from it are recounted by the next rollup pass."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.insights.models import ContactPage
from kizuna.privacy.registry import rows

LABEL = _("Insights")
MODELS = ["insights.ContactPage"]


def export(contact) -> dict[str, Any]:
    return {"pages_viewed": rows(ContactPage.objects.filter(contact=contact).order_by("first_at", "id"),
                                 "path", "first_at", "views")}


def erase(contact, plan) -> dict[str, int]:
    return {}
