"""A contact's journey enrollments and the steps run for them, for export
(kizuna/privacy/registry.py); erased with the contact (steps go with their enrollment)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.journeys.models import Enrollment, StepRun
from kizuna.privacy.registry import rows

LABEL = _("Journeys")
MODELS = ["journeys.Enrollment", "journeys.StepRun"]


def export(contact) -> dict[str, Any]:
    enrollments = Enrollment.objects.filter(contact=contact)
    return {
        "enrollments": rows(enrollments.order_by("entered_at", "id"), "id", "journey__name", "version__number", "run",
                            "state", "node", "due_at", "reason", "entered_at", "ended_at", "goal_reached_at"),
        "steps": rows(StepRun.objects.filter(enrollment__in=enrollments).order_by("at", "id"), "enrollment_id",
                      "node", "outcome", "at"),
    }


def erase(contact, plan) -> dict[str, int]:
    return {}
