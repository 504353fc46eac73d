"""What a form does on submit, for the contact the submission made or found.

Each action runs inside the submission's processing transaction and leaves rows behind (a list
membership, a ledger entry, a hand-off delivery, an enrollment, an outbox message); anything
that leaves the machine goes later from those rows' own queues, so a crash that rolls the
transaction back loses nothing and the retry repeats nothing. Keys name the submission and the
action's position: `form:<submission>:<index>`.

Subscriptions are not here: the consent boxes and the subscribe action's words are stored with
the submission and recorded by processing.py, with their text and version.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from django.apps import apps
from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext as _

from kizuna.contacts.models import Contact

if TYPE_CHECKING:
    from kizuna.capture.models import Submission

log = logging.getLogger(__name__)


class ActionRefused(Exception):
    """An action that cannot be done as things are (no sender for the asset mail…): the whole
    submission waits, failed with the reason, for a person to fix it and retry; nothing of it is
    kept meanwhile, so the retry does everything once."""


def asset_support():
    """(Asset model, deliver function) when the assets app is installed, else None.

    `kizuna.assets.delivery.deliver(asset, contact, *, key)` queues the delivery mail with a signed
    download link through the outbox, once per key."""
    if not apps.is_installed("kizuna.assets"):
        return None
    try:
        delivery = importlib.import_module("kizuna.assets.delivery")
        model = apps.get_model("assets", "Asset")
    except (ImportError, LookupError):
        return None
    deliver = getattr(delivery, "deliver", None)
    return (model, deliver) if callable(deliver) else None


def _values_text(submission: Submission) -> str:
    """The answers as "label: value" lines, for the people who follow the lead up."""
    definition = submission.form.definition
    labels = {f["name"]: f.get("label") or f.get("text", "")[:40] or f["name"]
              for f in definition.get("fields", []) + definition.get("pool", [])}
    lines = []
    for name, value in submission.values.items():
        if isinstance(value, bool):
            shown = "✔" if value else "—"
        else:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        if shown:
            lines.append(f"{labels.get(name, name)}: {shown[:300]}")
    return "\n".join(lines)


def add_to_list(action: dict, submission: Submission, contact: Contact, key: str) -> str:
    from kizuna.contacts.models import ContactList, ListMembership, Source

    if not ContactList.objects.filter(pk=action["list"]).exists():
        return f"skipped: list {action['list']} no longer exists"
    _row, created = ListMembership.objects.get_or_create(contact_list_id=action["list"], contact=contact,
                                                         defaults={"source": Source.FORM})
    return "added to the list" if created else "already in the list"


def add_tag(action: dict, submission: Submission, contact: Contact, key: str) -> str:
    from kizuna.contacts.services import ContactError, update_contact

    tags = sorted(contact.tags.values_list("name", flat=True))
    if action["tag"] in tags:
        return f"already tagged {action['tag']}"
    try:
        update_contact(None, contact, {"tags": [*tags, action["tag"]]}, via="form")
    except ContactError as exc:
        return f"refused: {exc}"
    return f"tagged {action['tag']}"


def score(action: dict, submission: Submission, contact: Contact, key: str) -> str:
    """Points on the engagement axis, through the ledger (the reason names the form)."""
    from django.utils import timezone

    from kizuna.scoring.engine import apply_entries
    from kizuna.scoring.models import ScoreEntry, ScoringModel

    model = ScoringModel.objects.filter(pk=action["model"]).first()
    if model is None:
        return f"skipped: scoring model {action['model']} no longer exists"
    entry = ScoreEntry.objects.create(
        model=model, contact=contact, kind=ScoreEntry.Kind.ENGAGEMENT, at=timezone.now(), points=action["points"],
        rule_name=(_("Form: %(name)s") % {"name": submission.form.name})[:200],
        reason=(_("Submission %(id)s") % {"id": submission.pk})[:500])
    apply_entries(model, [entry])
    return f"{action['points']:+d} points in {model.name}"


def alert_owner(action: dict, submission: Submission, contact: Contact, key: str) -> str:
    """The contact's owner hears of the submission (chosen as for a hot lead when there is none:
    the company's owner, then the sales routes), by email and, if asked, every active webhook."""
    from kizuna.handoff.assignment import choose_owner
    from kizuna.handoff.models import Delivery, HandoffSettings, Webhook

    config = HandoffSettings.current()
    owner, _how, _route = choose_owner(contact, config)
    if owner is not None and contact.owner_id != owner.pk:
        Contact.objects.filter(pk=contact.pk).update(owner=owner)
        contact.owner = owner
    who = contact.full_name or contact.email or f"#{contact.pk}"
    text = action.get("message") or _("%(contact)s submitted the form %(form)s.") % {
        "contact": who, "form": submission.form.name}
    payload = {
        "form": {"id": submission.form_id, "name": submission.form.name, "submission": submission.pk},
        "contact": {"id": contact.pk, "name": contact.full_name, "email": contact.email,
                    "company": contact.company_name, "owner": str(owner) if owner else ""},
        "text": f"{text}\n\n{_values_text(submission)}",
        "url": settings.BASE_URL + reverse("contacts:detail", args=[contact.pk]),
    }
    subject = " ".join((_("Form %(form)s: %(contact)s") % {"form": submission.form.name, "contact": who}).split())
    made = []
    address = owner.email if owner is not None and owner.email else config.fallback_email
    if address:
        row, created = Delivery.objects.get_or_create(key=f"{key}:email", defaults={
            "contact": contact, "email": address, "event": "form.submitted", "subject": subject[:300],
            "payload": payload})
        made.append(f"email {row.pk} to {address}" + ("" if created else " (existed)"))
    if action.get("webhooks"):
        for hook in Webhook.objects.filter(active=True):
            row, _created = Delivery.objects.get_or_create(key=f"{key}:hook:{hook.pk}", defaults={
                "contact": contact, "webhook": hook, "event": "form.submitted", "subject": subject[:300],
                "payload": payload})
            made.append(f"webhook delivery {row.pk}")
    return ", ".join(made) or "skipped: no owner and no fallback address for alerts"


def enroll(action: dict, submission: Submission, contact: Contact, key: str) -> str:
    from kizuna.journeys.engine import enroll as enroll_one
    from kizuna.journeys.models import Journey

    journey = Journey.objects.filter(pk=action["journey"]).select_related("current").first()
    if journey is None:
        return f"skipped: journey {action['journey']} no longer exists"
    made = enroll_one(journey, contact, key=key, context={"via": "form", "form": submission.form_id,
                                                          "submission": submission.pk})
    return f"enrolled in {journey.name}" if made else f"not enrolled in {journey.name} (entry rules or not live)"


def deliver_asset(action: dict, submission: Submission, contact: Contact, key: str) -> str:
    support = asset_support()
    if support is None:
        return "skipped: assets are not available in this installation"
    model, deliver = support
    asset = model.objects.filter(pk=action["asset"]).first()
    if asset is None:
        return f"skipped: asset {action['asset']} no longer exists"
    try:
        message = deliver(asset, contact, key=key)
    except Exception as exc:
        if type(exc).__name__ == "DeliveryError":  # the assets app's refusal, said for people
            raise ActionRefused(f"the asset {asset.pk} cannot be sent: {exc}") from exc
        raise
    return f"asset {asset.pk} queued for delivery (message {message.pk})"


ACTIONS = {"add_to_list": add_to_list, "add_tag": add_tag, "score": score, "alert_owner": alert_owner,
           "enroll": enroll, "deliver_asset": deliver_asset}


def run_all(submission: Submission, contact: Contact) -> list[str]:
    """Runs the form's actions in order; returns one note per action."""
    notes = []
    for index, action in enumerate(submission.form.definition.get("actions", [])):
        run = ACTIONS.get(action["type"])
        if run is None:
            continue  # subscribe: recorded with the consents
        notes.append(f"{action['type']}: {run(action, submission, contact, f'form:{submission.pk}:{index}')}")
    return notes
