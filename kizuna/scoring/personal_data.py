"""A contact's scores, score ledger and hot-lead alerts, for export (kizuna/privacy/registry.py).
Erasure needs nothing here: all of it goes with the contact row."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.privacy.registry import rows
from kizuna.scoring.models import ContactScore, LeadAlert, ScoreEntry

LABEL = _("Scores")
MODELS = ["scoring.ContactScore", "scoring.ScoreEntry", "scoring.LeadAlert"]


def export(contact) -> dict[str, Any]:
    return {
        "scores": rows(ContactScore.objects.filter(contact=contact).order_by("model__name"), "model__name", "fit",
                       "grade", "engagement", "engagement_at", "hot", "hot_at", "updated_at"),
        "ledger": rows(ScoreEntry.objects.filter(contact=contact).order_by("at", "id"), "model__name", "kind", "at",
                       "points", "rule_name", "reason", "event__message_id"),
        "hot_lead_alerts": rows(LeadAlert.objects.filter(contact=contact).order_by("created_at"), "model__name",
                                "created_at", "engagement", "grade", "reasons"),
    }


def erase(contact, plan) -> dict[str, int]:
    return {}
