"""The personal-data API: a contact's full export, and erasure on request.

    GET  /contacts/{id}/export     everything about the contact (needs contacts.export)
    POST /contacts/{id}/erase      erases it (needs privacy.manage: admins' keys with the write scope)
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpResponse
from ninja import Router, Schema

from kizuna.accounts import audit
from kizuna.api import ApiError, ErrorOut, requires
from kizuna.contacts.models import Contact
from kizuna.privacy import erasure, export
from kizuna.privacy.models import PrivacySettings

router = Router(tags=["personal data"])
ERRORS = {frozenset({400, 401, 403, 404, 409, 415, 422}): ErrorOut}


class EraseIn(Schema):
    events: Literal["anonymise", "delete"] | None = None


class EraseOut(Schema):
    contact_id: int
    events: str
    email_sha256: str
    counts: dict[str, dict[str, int]]


def _contact(contact_id: int) -> Contact:
    contact = Contact.objects.filter(pk=contact_id).first()
    if contact is None:
        raise ApiError(404, "not_found", f"there is no contact with id {contact_id}")
    return contact


@router.get("/contacts/{contact_id}/export", auth=requires("contacts.export"),
            response={200: dict[str, Any], **ERRORS}, summary="Everything about a contact (JSON)")
def export_contact(request, contact_id: int):
    """Profile, consent and its ledger, events, sessions and page views, messages and their
    opens and clicks, scores and their ledger, stage changes, journey enrollments and steps,
    segment memberships, hand-off deliveries and the audit entries about the contact."""
    contact = _contact(contact_id)
    audit.record(request.auth, "export", contact, changes={"format": export.FORMAT})
    return HttpResponse(export.export_json(contact), content_type="application/json; charset=utf-8")


@router.post("/contacts/{contact_id}/erase", auth=requires("privacy.manage"), response={200: EraseOut, **ERRORS},
             summary="Erase a contact on request")
def erase_contact(request, contact_id: int, payload: EraseIn | None = None):
    """Irreversible. `events` overrides the privacy settings' policy for the contact's events."""
    contact = _contact(contact_id)
    policy = (payload.events if payload else None) or PrivacySettings.current().erase_events
    return erasure.erase_contact(contact, actor=request.auth, events=policy)
