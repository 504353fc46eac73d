"""What action steps do. Each runs inside the enrollment's transaction and leaves only rows
behind (an outbox message, a delivery, a field change): sending happens later, from queues that
have their own exactly-once guarantees, and consent, frequency caps and quiet hours are applied
by the outbox at send time, for journeys as for every other mail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext as _

from kizuna.contacts.models import Contact

if TYPE_CHECKING:
    from kizuna.journeys.engine import Outcome, Runner
    from kizuna.journeys.models import Enrollment, Journey


def run(node: dict, e: Enrollment, contact: Contact, journey: Journey, runner: Runner, key: str) -> Outcome:
    from kizuna.journeys.engine import Outcome

    note = ACTIONS[node["type"]](node, e, contact, journey, runner, key)
    return Outcome(note, next=node.get("next"))


def send_email(node, e, contact, journey, runner, key) -> str:
    from kizuna.messaging import outbox

    version = runner.template_version(node["template"])
    if version is None:
        return f"skipped: email template {node['template']} no longer exists"
    try:
        message, created = outbox.enqueue(contact, version, key=f"journey:{key}",
                                          extra={"journey": journey.pk, "enrollment": e.pk, "step": node["id"]})
    except ValueError as exc:
        return f"skipped: {exc}"
    return f"queued message {message.pk}" if created else f"message {message.pk} was queued already"


def _update(contact: Contact, data: dict) -> str:
    from kizuna.contacts.services import ContactError, update_contact

    try:
        update_contact(None, contact, data, via="journey")
    except ContactError as exc:
        return f"refused: {exc}"
    return "updated " + ", ".join(sorted(data))


def update_field(node, e, contact, journey, runner, key) -> str:
    name, value = node["field"], node["value"]
    if name.startswith("custom."):
        return _update(contact, {"custom": {name[7:]: value}})
    return _update(contact, {name: value})


def add_tag(node, e, contact, journey, runner, key) -> str:
    tags = sorted(contact.tags.values_list("name", flat=True))
    if node["tag"] in tags:
        return f"already tagged {node['tag']}"
    return _update(contact, {"tags": [*tags, node["tag"]]})


def remove_tag(node, e, contact, journey, runner, key) -> str:
    tags = sorted(contact.tags.values_list("name", flat=True))
    if node["tag"] not in tags:
        return f"not tagged {node['tag']}"
    return _update(contact, {"tags": [t for t in tags if t != node["tag"]]})


def set_stage(node, e, contact, journey, runner, key) -> str:
    from kizuna.lifecycle.models import StageChange
    from kizuna.lifecycle.transitions import move

    contact.refresh_from_db(fields=["lifecycle_stage"])
    moved = move([contact], node["stage"], via=StageChange.Via.JOURNEY)
    return f"stage {node['stage']}" if moved else f"already {node['stage']}"


def score(node, e, contact, journey, runner, key) -> str:
    from kizuna.scoring.engine import apply_entries
    from kizuna.scoring.models import ScoreEntry, ScoringModel

    model = ScoringModel.objects.filter(pk=node["model"]).first()
    if model is None:
        return f"skipped: scoring model {node['model']} no longer exists"
    entry = ScoreEntry.objects.create(
        model=model, contact=contact, kind=ScoreEntry.Kind.ENGAGEMENT, at=runner.now, points=node["points"],
        rule_name=(_("Journey: %(name)s") % {"name": journey.name})[:200], reason=node.get("label", "")[:500])
    apply_entries(model, [entry])
    return f"{node['points']:+d} points in {model.name}"


def add_to_list(node, e, contact, journey, runner, key) -> str:
    from kizuna.contacts.models import ContactList, ListMembership

    if not ContactList.objects.filter(pk=node["list"]).exists():
        return f"skipped: list {node['list']} no longer exists"
    _row, created = ListMembership.objects.get_or_create(contact_list_id=node["list"], contact=contact)
    return "added to list" if created else "already in the list"


def remove_from_list(node, e, contact, journey, runner, key) -> str:
    from kizuna.contacts.models import ListMembership

    removed, _details = ListMembership.objects.filter(contact_list_id=node["list"], contact=contact).delete()
    return "removed from list" if removed else "was not in the list"


def _payload(node, e, contact, journey, text: str) -> dict:
    return {
        "journey": {"id": journey.pk, "name": journey.name, "step": node["id"], "enrollment": e.pk},
        "contact": {"id": contact.pk, "name": contact.full_name, "email": contact.email,
                    "company": contact.company_name, "owner": str(contact.owner) if contact.owner_id else ""},
        "text": text,
        "url": settings.BASE_URL + reverse("contacts:detail", args=[contact.pk]),
    }


def alert_owner(node, e, contact, journey, runner, key) -> str:
    from kizuna.handoff.models import Delivery

    owner = contact.owner
    if owner is None or not owner.email:
        return "skipped: the contact has no owner with an email address"
    text = node.get("message") or _("%(contact)s reached a step of the journey %(journey)s.") % {
        "contact": contact.full_name or contact.email, "journey": journey.name}
    subject = (_("Journey %(journey)s: %(contact)s") % {"journey": journey.name,
                                                       "contact": contact.full_name or contact.email})[:300]
    row, created = Delivery.objects.get_or_create(key=f"journey:{key}", defaults={
        "contact": contact, "email": owner.email, "event": "journey.alert", "subject": subject,
        "payload": _payload(node, e, contact, journey, text), "created_at": runner.now,
        "next_attempt_at": runner.now})
    return f"alert {row.pk} to {owner.email}" if created else f"alert {row.pk} existed"


def webhook(node, e, contact, journey, runner, key) -> str:
    from kizuna.handoff.models import Delivery, Webhook

    hook = Webhook.objects.filter(pk=node["webhook"], active=True).first()
    if hook is None:
        return f"skipped: webhook {node['webhook']} is missing or inactive"
    row, created = Delivery.objects.get_or_create(key=f"journey:{key}", defaults={
        "contact": contact, "webhook": hook, "event": "journey.step", "subject": journey.name[:300],
        "payload": _payload(node, e, contact, journey, node.get("label") or journey.name),
        "created_at": runner.now, "next_attempt_at": runner.now})
    return f"webhook delivery {row.pk}" if created else f"webhook delivery {row.pk} existed"


def enroll(node, e, contact, journey, runner, key) -> str:
    from kizuna.journeys.engine import enroll_many
    from kizuna.journeys.models import Journey

    target = Journey.objects.filter(pk=node["journey"]).select_related("current").first()
    if target is None:
        return f"skipped: journey {node['journey']} no longer exists"
    made = enroll_many(target, [contact.pk], key=lambda _c: f"journey:{key}", now=runner.now,
                       context={"via": "journey", "from": journey.pk})
    return f"enrolled in {target.name}" if made else f"not enrolled in {target.name} (entry rules or not live)"


ACTIONS = {
    "send_email": send_email, "update_field": update_field, "add_tag": add_tag, "remove_tag": remove_tag,
    "set_stage": set_stage, "score": score, "add_to_list": add_to_list, "remove_from_list": remove_from_list,
    "alert_owner": alert_owner, "webhook": webhook, "enroll": enroll,
}
