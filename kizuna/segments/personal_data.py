"""A contact's segment memberships and their history, for export (kizuna/privacy/registry.py);
erased with the contact."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.privacy.registry import rows
from kizuna.segments.models import Membership, SegmentChange

LABEL = _("Segments")
MODELS = ["segments.Membership", "segments.SegmentChange"]


def export(contact) -> dict[str, Any]:
    return {
        "memberships": rows(Membership.objects.filter(contact=contact).order_by("since"), "segment__name", "since"),
        "changes": rows(SegmentChange.objects.filter(contact=contact).order_by("at", "id"), "segment__name", "kind",
                        "at"),
    }


def erase(contact, plan) -> dict[str, int]:
    return {}
