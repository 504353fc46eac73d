"""A contact's lifecycle stage changes, for export (kizuna/privacy/registry.py); erased with the contact."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.lifecycle.models import StageChange
from kizuna.privacy.registry import rows

LABEL = _("Lifecycle stages")
MODELS = ["lifecycle.StageChange"]


def export(contact) -> dict[str, Any]:
    return {"stage_changes": rows(StageChange.objects.filter(contact=contact).order_by("at", "id"), "from_stage",
                                  "to_stage", "at", "via", "rule__name", "actor__username")}


def erase(contact, plan) -> dict[str, int]:
    return {}
