"""A contact's landing page visits, for export and erasure (kizuna/privacy/registry.py). The
visit rows are what the pages' conversion counts read, so erasure keeps them, anonymous."""

from __future__ import annotations

import secrets
from typing import Any

from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from kizuna.landing.models import LandingVisit
from kizuna.privacy.registry import rows

LABEL = _("Landing pages")
MODELS = ["landing.LandingVisit"]


def _visits(contact):
    from kizuna.events.personal_data import browser_ids

    anon = browser_ids(contact)
    return LandingVisit.objects.filter(Q(contact=contact) | Q(anonymous_id__in=anon))


def export(contact) -> dict[str, Any]:
    return {"visits": rows(_visits(contact).order_by("first_viewed_at"), "page__title", "variant", "anonymous_id",
                           "views", "first_viewed_at", "last_viewed_at", "converted_at")}


def erase(contact, plan) -> dict[str, int]:
    if not plan.anonymise:
        deleted = _visits(contact).delete()[0]
        return {"visits_deleted": deleted} if deleted else {}
    visits = list(_visits(contact))
    for visit in visits:
        visit.contact_id, visit.anonymous_id = None, "erased-" + secrets.token_hex(8)
    LandingVisit.objects.bulk_update(visits, ["contact", "anonymous_id"])
    return {"visits_anonymised": len(visits)} if visits else {}
