"""Audit entries about a contact, for export and erasure (kizuna/privacy/registry.py).

The entries stay, as the record of who did what and when; what they said about the person (the
name in the label, the old and new values) is removed. The erasure's own entry comes after."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.accounts.models import AuditLog
from kizuna.privacy.registry import rows

LABEL = _("Audit log")
MODELS: list[str] = []  # reaches the contact by object type and id, not by a foreign key


def _entries(contact):
    return AuditLog.objects.filter(object_type="contacts.contact", object_id=str(contact.pk))


def export(contact) -> dict[str, Any]:
    return {"entries": rows(_entries(contact).order_by("at", "id"), "at", "actor_label", "action", "changes")}


def erase(contact, plan) -> dict[str, int]:
    scrubbed = _entries(contact).update(object_label="", changes={"erased": True})
    return {"audit_entries_scrubbed": scrubbed} if scrubbed else {}
