"""A contact's profile, consent and lists, for export (see kizuna/privacy/registry.py). Erasure
needs nothing here: the consent ledger and list memberships go with the contact row."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Consent, ConsentRecord, Contact, ListMembership
from kizuna.privacy.registry import rows

LABEL = _("Profile, consent and lists")
MODELS = ["contacts.Contact", "contacts.Consent", "contacts.ConsentRecord", "contacts.ListMembership"]
PROFILE_FIELDS = ("id", "email", "family_name", "given_name", "family_name_kana", "given_name_kana", "phone",
                  "company_name", "job_title", "department", "prefecture", "region", "industry", "company_size",
                  "lifecycle_stage", "source", "language", "time_zone", "custom", "do_not_contact", "dnc_reason",
                  "dnc_at", "created_at", "updated_at", "last_activity_at")


def export(contact: Contact) -> dict[str, Any]:
    profile = Contact.objects.filter(pk=contact.pk).values(*PROFILE_FIELDS).first() or {}
    profile["company"] = contact.company.name if contact.company_id else ""
    profile["owner"] = contact.owner.get_username() if contact.owner_id else ""
    profile["tags"] = sorted(contact.tags.values_list("name", flat=True))
    return {
        "profile": profile,
        "consents": rows(Consent.objects.filter(contact=contact).order_by("topic__key"), "topic__key", "topic__name",
                         "status", "updated_at"),
        "consent_records": rows(ConsentRecord.objects.filter(contact=contact).order_by("at", "id"), "at",
                                "topic__key", "status", "method", "source", "text_shown", "ip", "reason",
                                "actor__username"),
        "lists": rows(ListMembership.objects.filter(contact=contact).order_by("added_at"), "contact_list__name",
                      "added_at", "source"),
    }


def erase(contact: Contact, plan) -> dict[str, int]:
    return {}
