"""A contact's form submissions, for export and erasure (kizuna/privacy/registry.py).

A submission is found by its contact, by the address it was sent with (one not applied yet has
no contact) and by the contact's browsers. Erasure deletes them, or, with the anonymise policy,
keeps each row for the form's counts with everything about the person gone: the values, the
address, IP, user agent, browser id, query strings, and the consent words' tick marks stay only
as what was shown. A submission not applied yet is closed, so it never makes the person again.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from kizuna.capture.models import Submission
from kizuna.privacy.erasure import strip_query
from kizuna.privacy.registry import rows

LABEL = _("Form submissions")
MODELS = ["capture.Submission"]
ERASED = "erased on request"


def _submissions(contact):
    from kizuna.events.personal_data import browser_ids

    match = Q(contact=contact)
    if contact.email:
        match |= Q(email=contact.email)
    anon = browser_ids(contact)
    if anon:
        match |= Q(anonymous_id__in=anon)
    return Submission.objects.filter(match)


def export(contact) -> dict[str, Any]:
    return {"submissions": rows(_submissions(contact).order_by("created_at", "id"), "form__name", "created_at",
                                "status", "email", "values", "consents", "context", "ip", "user_agent", "page_url",
                                "referrer", "utm", "anonymous_id", "confirmed_at", "confirmed_ip")}


def erase(contact, plan) -> dict[str, int]:
    found = _submissions(contact)
    if not plan.anonymise:
        deleted = found.delete()[0]
        return {"submissions_deleted": deleted} if deleted else {}
    submissions = list(found)
    for s in submissions:
        if s.status not in (Submission.Status.PROCESSED, Submission.Status.FAILED):
            s.status, s.error = Submission.Status.FAILED, ERASED
        s.contact_id, s.email, s.values, s.mapped, s.notes = None, "", {}, {}, []
        s.consents = [{k: c.get(k) for k in ("field", "action", "text", "version", "topics") if k in c}
                      for c in s.consents]
        s.ip = s.confirmed_ip = None
        s.user_agent, s.anonymous_id = "", ""
        s.page_url, s.referrer = strip_query(s.page_url), strip_query(s.referrer)
    Submission.objects.bulk_update(submissions, ["status", "error", "contact", "email", "values", "mapped",
                                                 "notes", "consents", "ip", "confirmed_ip", "user_agent",
                                                 "anonymous_id", "page_url", "referrer"], batch_size=500)
    return {"submissions_anonymised": len(submissions)} if submissions else {}
