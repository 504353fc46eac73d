"""From a stored submission to the contact, its consent, the actions and the event.

The submit endpoint only stores and acknowledges (submit.py), which keeps it fast; this runs in
the worker (`kizuna worker`, loop "forms") and does the rest in ONE transaction per submission:
the contact is created or updated through the contact service, its company's empty fields are
filled, the ticked consent boxes are recorded with their words and version, the actions run,
and a "Form Submitted" event goes into the event inbox (identity links the visitor's anonymous
browser to the contact when it is processed, and joins its earlier page views; scoring rules and
journey triggers read the event). The submission's status changes in the same transaction, so
each submission is applied exactly once, and a crash just leaves it to be picked up again.

Double opt-in: the first pass finds the contact (a new one is created from the values; an
existing one is left unchanged) and queues the confirmation mail with a signed link. Consent,
field updates, actions and the event wait for the confirmation (POST on the link's page).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from kizuna.capture import actions, spam, tokens
from kizuna.capture.models import Submission
from kizuna.contacts.consent import clear_do_not_contact, set_consent
from kizuna.contacts.models import (
    ConsentRecord,
    ConsentStatus,
    Contact,
    DoNotContactReason,
    Source,
    SubscriptionTopic,
)
from kizuna.contacts.services import ContactConflict, ContactError, create_contact, save_company, update_contact
from kizuna.db.loops import repeat
from kizuna.db.writelock import sqlite_writer

log = logging.getLogger(__name__)

S = Submission.Status
DUE = (S.RECEIVED, S.CONFIRMED)
BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))
MAX_ATTEMPTS = len(BACKOFF) + 1
BATCH = 50
EVENT_NAME = "Form Submitted"


class Refused(Exception):
    """A submission that cannot be applied as it is (retrying would not help): it fails at once
    and waits for a person (fix the form or the custom field, then retry)."""


def confirm_url(submission: Submission) -> str:
    return settings.BASE_URL + reverse("capture:confirm", args=[submission.form.slug,
                                                                 tokens.confirmation(submission.pk)])


# --- the steps -------------------------------------------------------------------------------

def find_or_create(submission: Submission, *, update: bool) -> tuple[Contact, str]:
    """The contact with the submitted email, created from the values when new; an existing one
    takes the non-empty values when `update`."""
    data = dict(submission.mapped.get("contact") or {})
    data["email"] = submission.email
    contact = Contact.objects.filter(email=submission.email).first()
    try:
        if contact is None:
            try:
                return create_contact(None, data, source=Source.FORM, via="form"), "created"
            except ContactConflict:  # created by someone else since we looked
                contact = Contact.objects.get(email=submission.email)
        if not update:
            return contact, "found"
        changes = {k: v for k, v in data.items() if k != "email"}
        if changes:
            update_contact(None, contact, changes, via="form")
        return contact, "updated"
    except ContactError as exc:
        raise Refused(f"the contact service refused the values: {exc}") from exc


def fill_company(contact: Contact, values: dict[str, Any]) -> str:
    """The company's empty fields take the submitted values (a company is shared by its people:
    one visitor's answer never overwrites what is known)."""
    contact.refresh_from_db(fields=["company"])
    company = contact.company
    if company is None or not values:
        return "" if not values else "company values kept on the submission (no company linked)"
    fill: dict[str, Any] = {}
    for key, value in values.items():
        if key == "custom":
            new = {k: v for k, v in value.items() if (company.custom or {}).get(k) in (None, "", [])}
            if new:
                fill["custom"] = new
        elif getattr(company, key, None) in (None, ""):
            fill[key] = value
    if not fill:
        return "company already complete"
    try:
        save_company(None, fill, company)
    except ContactError as exc:
        return f"company values refused: {exc}"
    return "company filled: " + ", ".join(sorted(fill))


def record_consents(submission: Submission, contact: Contact, *, confirmed: bool) -> list[str]:
    """Each ticked box (and the subscribe action's notice) opts in to its topics, with the words
    shown and their version; boxes without topics (an agreement) stay on the submission."""
    given = [c for c in submission.consents if c.get("given") and c.get("topics")]
    if not given:
        return []
    keys = {k for c in given for k in c["topics"]}
    topics = {t.key: t for t in SubscriptionTopic.objects.filter(key__in=keys)}
    source = f"form {submission.form.slug} #{submission.pk}" + (" (confirmed by email)" if confirmed else "")
    ip = (submission.confirmed_ip if confirmed else None) or submission.ip
    notes = []
    for consent in given:
        for key in consent["topics"]:
            topic = topics.get(key)
            if topic is None:
                notes.append(f"topic {key} no longer exists")
                continue
            changed = set_consent(contact, topic, ConsentStatus.OPTED_IN, method=ConsentRecord.Method.FORM,
                                  source=source, text_shown=consent["text"], text_version=consent["version"], ip=ip)
            notes.append(f"opted in to {key}" if changed else f"already opted in to {key}")
    # A confirmed opt-in is the person's own new word: it lifts an earlier unsubscribe from all mail.
    if confirmed and contact.do_not_contact and contact.dnc_reason == DoNotContactReason.UNSUBSCRIBED:
        clear_do_not_contact(contact, method=ConsentRecord.Method.FORM, source=source)
        notes.append("unsubscribe from all mail lifted by the confirmed opt-in")
    return notes


def event_message(submission: Submission, contact: Contact) -> dict[str, Any]:
    """The "Form Submitted" track event: scoring rules and segments match it by name and
    properties.form / form_id; its anonymousId joins the browser's history to the contact."""
    form = submission.form
    page = {"url": submission.page_url, "path": urlsplit(submission.page_url).path if submission.page_url else "",
            "referrer": submission.referrer}
    context: dict[str, Any] = {"traits": {"email": contact.email}, "page": page, "ip": submission.ip or "",
                               "userAgent": submission.user_agent, "library": {"name": "kizuna-forms", "version": "1"}}
    utm = submission.utm or {}
    campaign = {k: utm[f"utm_{s}"] for k, s in (("source", "source"), ("medium", "medium"), ("name", "campaign"),
                                                   ("term", "term"), ("content", "content")) if utm.get(f"utm_{s}")}
    if campaign:
        context["campaign"] = campaign
    message: dict[str, Any] = {
        "type": "track", "event": EVENT_NAME, "messageId": f"form-submission-{submission.pk}",
        "timestamp": submission.created_at.isoformat(), "context": context,
        "properties": {**submission.context, "form": form.name, "form_id": form.pk, "form_slug": form.slug,
                       "submission": submission.pk},
    }
    if submission.anonymous_id:
        message["anonymousId"] = submission.anonymous_id
    return message


def emit_event(submission: Submission, contact: Contact) -> None:
    from kizuna.events import ingest

    info = ingest.RequestInfo(ip=submission.ip or "", user_agent=submission.user_agent, source="form", internal=True)
    result = ingest.prepare([event_message(submission, contact)], info, path_prefix="")
    if result.rejected:
        raise Refused(f"the event log refused the submission's event: {result.rejected[0]['errors']}")
    ingest.store(result.rows)


def send_confirmation(submission: Submission, contact: Contact) -> str:
    from kizuna.messaging import outbox
    from kizuna.messaging.models import EmailTemplate, MessageKind

    template_id = submission.form.definition["double_opt_in"]["template"]
    template = EmailTemplate.objects.select_related("current", "sender").filter(pk=template_id).first()
    if template is None or template.current is None:
        raise Refused(f"the confirmation template {template_id} is missing or has no version")
    version = template.current
    version.template = template
    try:
        message, created = outbox.enqueue(
            contact, version, key=f"form-confirm:{submission.pk}", kind=MessageKind.TRANSACTIONAL,
            extra={"form": submission.form_id, "submission": submission.pk,
                   "context": {"confirm_url": confirm_url(submission), "form_name": submission.form.name}})
    except ValueError as exc:
        raise Refused(f"the confirmation mail cannot be queued: {exc}") from exc
    return f"confirmation mail {message.pk} queued" if created else f"confirmation mail {message.pk} existed"


def apply(submission: Submission) -> tuple[str, Contact, list[str]]:
    """Applies a due submission; returns (new status, contact, notes). The caller's transaction."""
    if not submission.email:
        raise Refused("the submission has no address (erased on request)")
    double = bool(submission.form.definition.get("double_opt_in"))
    if double and submission.status == S.RECEIVED:
        contact, how = find_or_create(submission, update=False)
        return S.AWAITING, contact, [f"contact {how}", send_confirmation(submission, contact)]
    confirmed = submission.status == S.CONFIRMED
    contact, how = find_or_create(submission, update=True)
    notes = [f"contact {how}"]
    note = fill_company(contact, submission.mapped.get("company") or {})
    if note:
        notes.append(note)
    notes += record_consents(submission, contact, confirmed=confirmed)
    notes += actions.run_all(submission, contact)
    emit_event(submission, contact)
    return S.PROCESSED, contact, notes


# --- running it ----------------------------------------------------------------------------

def process(submission_id: int) -> str | None:
    """Processes one due submission in its own transaction; returns its new status, or None when
    it was not due (done already, or being processed by another worker)."""
    now = timezone.now()
    with sqlite_writer(), transaction.atomic():
        rows = Submission.objects.select_related("form").filter(pk=submission_id, status__in=DUE)
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True, of=("self",))
        submission = rows.first()
        if submission is None:
            return None
        try:
            with transaction.atomic():
                status, contact, notes = apply(submission)
        except (Refused, actions.ActionRefused) as exc:
            submission.status, submission.error = S.FAILED, str(exc)[:2000]
            submission.attempts += 1
            log.warning("form submission %s refused: %s", submission.pk, exc)
        except Exception as exc:  # noqa: BLE001 - a bug or a lost connection: try again later
            log.exception("form submission %s failed", submission.pk)
            submission.attempts += 1
            submission.error = f"{type(exc).__name__}: {exc}"[:2000]
            if submission.attempts >= MAX_ATTEMPTS:
                submission.status = S.FAILED
            else:
                submission.next_attempt_at = now + BACKOFF[submission.attempts - 1]
        else:
            submission.status, submission.contact, submission.notes = status, contact, notes
            submission.error = ""
            submission.processed_at = now if status == S.PROCESSED else None
        submission.save(update_fields=["status", "contact", "notes", "error", "attempts", "next_attempt_at",
                                       "processed_at"])
        return submission.status


def process_due(limit: int = BATCH) -> int:
    """Processes the submissions that are due, oldest first; returns how many were tried."""
    ids = list(Submission.objects.filter(status__in=DUE, next_attempt_at__lte=timezone.now())
               .order_by("id").values_list("id", flat=True)[:limit])
    for submission_id in ids:
        process(submission_id)
    return len(ids)


def confirm(submission: Submission, ip: str) -> str:
    """The confirmation link's POST: "confirmed" (and applied now), "done" when it already was,
    or "pending" when its first pass has not run yet (the worker is behind)."""
    with sqlite_writer(), transaction.atomic():
        current = Submission.objects.select_for_update().get(pk=submission.pk)
        if current.status in (S.CONFIRMED, S.PROCESSED) or current.confirmed_at:
            return "done"
        if current.status != S.AWAITING:
            return "pending"
        now = timezone.now()
        Submission.objects.filter(pk=current.pk).update(status=S.CONFIRMED, confirmed_at=now, confirmed_ip=ip or None,
                                                        next_attempt_at=now)
    process(submission.pk)  # at once, so the page can say the consent is recorded; else the worker retries
    return "confirmed"


def retry(submission: Submission) -> None:
    """A failed submission is tried again (the button on the submissions page)."""
    back = S.CONFIRMED if submission.confirmed_at else S.RECEIVED
    Submission.objects.filter(pk=submission.pk, status=S.FAILED).update(
        status=back, attempts=0, error="", next_attempt_at=timezone.now())


def run(stop: threading.Event, idle_seconds: float = 0.5) -> None:
    """The worker's forms loop: due submissions, and idle rate-limit buckets once a minute."""
    last_prune = 0.0

    def work() -> int:
        nonlocal last_prune
        done = process_due()
        if time.monotonic() - last_prune > 60:
            spam.prune_buckets()
            last_prune = time.monotonic()
        return done

    repeat(stop, work, idle_seconds=idle_seconds, what="forms loop")
