"""Roles and what each may do.

One table, read by the UI (views, navigation) and the API alike, so the two can never
disagree. A capability is a plain string; `can(user, capability)` is the only check.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    ADMIN = "admin", _("Admin")
    MARKETER = "marketer", _("Marketer")
    SALES = "sales", _("Sales")
    VIEWER = "viewer", _("Viewer")


ALL = frozenset(Role)
WRITERS = frozenset({Role.ADMIN, Role.MARKETER})

CAPABILITIES: dict[str, frozenset[str]] = {
    "contacts.view": ALL,
    "contacts.change": WRITERS,
    # Sales may edit the contacts they own (stage, notes, phone) but not others'.
    "contacts.change_own": frozenset({Role.SALES}),
    "contacts.delete": WRITERS,
    "contacts.export": WRITERS,
    "contacts.import": WRITERS,
    "companies.view": ALL,
    "companies.change": WRITERS,
    "lists.change": WRITERS,
    "fields.view": ALL,
    "fields.manage": frozenset({Role.ADMIN}),
    "topics.manage": frozenset({Role.ADMIN}),
    "users.manage": frozenset({Role.ADMIN}),
    "apikeys.manage": frozenset({Role.ADMIN}),
    "audit.view": frozenset({Role.ADMIN}),
    "tracking.view": ALL,
    "tracking.manage": WRITERS,
    "email.view": ALL,
    "email.change": WRITERS,
    "email.send": WRITERS,
    "email.manage": frozenset({Role.ADMIN}),
    "scoring.manage": WRITERS,
    "segments.view": ALL,
    "segments.manage": WRITERS,
    "journeys.view": ALL,
    "journeys.manage": WRITERS,
    # Forms, landing pages and downloadable assets (the capture side).
    "capture.view": ALL,
    "capture.manage": WRITERS,
    # One's own sign-in: two-factor authentication, recovery codes.
    "account.manage": ALL,
    # Personal data: privacy settings, retention rules, erasing a contact on request.
    "privacy.manage": frozenset({Role.ADMIN}),
}

# API key scopes, each a set of capabilities; a key can never exceed its owner's role.
SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset(c for c in CAPABILITIES if c.endswith(".view")),
    "write": frozenset(
        c for c in CAPABILITIES
        if not c.endswith(".view") and c.split(".")[0] not in {"users", "apikeys", "audit", "account"}
    ),
    "ingest": frozenset({"events.ingest"}),
}
SCOPE_LABELS = {
    "read": _("Read: contacts, companies, fields, imports"),
    "write": _("Write: create, change and delete; run imports"),
    "ingest": _("Ingest: send tracking events"),
}


def role_can(role: str, capability: str) -> bool:
    return role in CAPABILITIES.get(capability, frozenset())


def can(user, capability: str) -> bool:
    """True when this user (or API key acting for it) has the capability."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    key_scopes = getattr(user, "api_key_scopes", None)
    if key_scopes is not None:
        allowed = frozenset().union(*(SCOPES.get(s, frozenset()) for s in key_scopes))
        if capability not in allowed:
            return False
        if capability == "events.ingest":
            return True
    return role_can(user.role, capability)


def can_change_contact(user, contact) -> bool:
    """Writers change any contact; sales only those they own."""
    if can(user, "contacts.change"):
        return True
    return can(user, "contacts.change_own") and contact.owner_id == user.pk
