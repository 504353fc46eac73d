"""What action steps do. Each runs inside the enrollment's transaction and leaves only rows
behind (an outbox message, a delivery, a field change): sending happens later, from queues that
have their own exactly-once guarantees, and consent, frequency caps and quiet hours are applied
by the outbox at send time, for journeys as for every other mail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from kizuna.contacts.models import Contact
from kizuna.db import copy

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


# --- set-based: one action for a whole group of enrollments at the same step ----------------
# Each takes [(enrollment, contact, key)] and returns the notes `run` would have given one by
# one, with the same rows written (outbox messages, tags with their audit entries, ledger rows,
# list memberships) in a few statements, and the follow-ups of a contact change (segment refresh,
# journey exit and goal checks) done once for the group.

Items = list[tuple["Enrollment", Contact, str]]


def send_email_many(node, items: Items, journey, runner) -> list[str]:
    from kizuna.messaging import outbox

    version = runner.template_version(node["template"])
    if version is None:
        return [f"skipped: email template {node['template']} no longer exists"] * len(items)
    rows = [(contact, f"journey:{key}", {"journey": journey.pk, "enrollment": e.pk, "step": node["id"]})
            for e, contact, key in items]
    notes = []
    for message, created, why in outbox.enqueue_many(rows, version):
        if message is None:
            notes.append(f"skipped: {why}")
        else:
            notes.append(f"queued message {message.pk}" if created else f"message {message.pk} was queued already")
    return notes


def _tags_many(node, items: Items, runner, add: bool) -> list[str]:
    from kizuna.accounts.models import AuditLog
    from kizuna.contacts.models import Tag
    from kizuna.journeys.engine import end_where
    from kizuna.segments.membership import refresh_contacts

    name = node["tag"]
    if not name or name != name.strip() or len(name) > 100:  # the contact service's refusal, one by one
        one = add_tag if add else remove_tag
        return [one(node, e, contact, None, runner, key) for e, contact, key in items]
    through = Contact.tags.through
    ids = [contact.pk for _e, contact, _k in items]
    current: dict[int, list[str]] = {pk: [] for pk in ids}
    for cid, tag in through.objects.filter(contact_id__in=ids).values_list("contact_id", "tag__name"):
        current[cid].append(tag)
    notes, changed, audits = [], [], []
    for _e, contact, _key in items:
        before = sorted(current[contact.pk])
        if add == (name in before):
            notes.append(f"already tagged {name}" if add else f"not tagged {name}")
            continue
        after = sorted({*before, name}) if add else [t for t in before if t != name]
        current[contact.pk] = after
        changed.append(contact)
        audits.append(AuditLog(actor=None, actor_label="system", action="update", object_type="contacts.contact",
                               object_id=str(contact.pk), object_label=str(contact)[:255],
                               changes={"tags": [before, after]}))
        notes.append("updated tags")
    if changed:
        now = timezone.now()
        pks = [c.pk for c in changed]
        if add:
            tag, _created = Tag.objects.get_or_create(name=name)
            through.objects.bulk_create([through(contact_id=pk, tag_id=tag.pk) for pk in pks], batch_size=1000)
        else:
            through.objects.filter(contact_id__in=pks, tag__name=name).delete()
        Contact.objects.filter(pk__in=pks).update(updated_at=now)
        for c in changed:
            c.updated_at = now
        _link_companies(changed)
        copy.insert(audits)
        # What contact_saved does after each edit (segments, then journey exits and goals), once.
        refresh_contacts(pks, fields={"tag"})
        end_where(pks)
    return notes


def _link_companies(contacts: list[Contact]) -> None:
    """What saving a contact derives (contacts.services._apply_derived): one without a company
    is linked to its business email domain's, one query per domain."""
    from kizuna.contacts.emails import domain_of
    from kizuna.contacts.services import company_for_domain

    by_domain: dict[str, list[Contact]] = {}
    for c in contacts:
        if c.email and c.company_id is None:
            by_domain.setdefault(domain_of(c.email), []).append(c)
    for domain, group in by_domain.items():
        company = company_for_domain(domain, group[0].company_name)
        if company is not None:
            Contact.objects.filter(pk__in=[c.pk for c in group], company__isnull=True).update(company=company)
            for c in group:
                c.company = company


def add_tag_many(node, items: Items, journey, runner) -> list[str]:
    return _tags_many(node, items, runner, add=True)


def remove_tag_many(node, items: Items, journey, runner) -> list[str]:
    return _tags_many(node, items, runner, add=False)


def set_stage_many(node, items: Items, journey, runner) -> list[str]:
    from kizuna.lifecycle.models import StageChange
    from kizuna.lifecycle.transitions import move

    contacts = {c.pk: c for _e, c, _k in items}
    for pk, current in Contact.objects.filter(pk__in=contacts).values_list("pk", "lifecycle_stage"):
        contacts[pk].lifecycle_stage = current
    stage, seen, notes = node["stage"], set(), []
    for _e, contact, _key in items:
        # A contact twice in the group moves once: the second finds it moved, as one by one.
        moving = contact.lifecycle_stage != stage and contact.pk not in seen
        seen.add(contact.pk)
        notes.append(f"stage {stage}" if moving else f"already {stage}")
    move(list(contacts.values()), stage, via=StageChange.Via.JOURNEY)
    return notes


def score_many(node, items: Items, journey, runner) -> list[str]:
    from kizuna.scoring.engine import apply_entries
    from kizuna.scoring.models import ScoreEntry, ScoringModel

    model = ScoringModel.objects.filter(pk=node["model"]).first()
    if model is None:
        return [f"skipped: scoring model {node['model']} no longer exists"] * len(items)
    rule_name = (_("Journey: %(name)s") % {"name": journey.name})[:200]
    entries = ScoreEntry.objects.bulk_create([
        ScoreEntry(model=model, contact=contact, kind=ScoreEntry.Kind.ENGAGEMENT, at=runner.now,
                   points=node["points"], rule_name=rule_name, reason=node.get("label", "")[:500])
        for _e, contact, _k in items], batch_size=1000)
    apply_entries(model, entries)
    return [f"{node['points']:+d} points in {model.name}"] * len(items)


def add_to_list_many(node, items: Items, journey, runner) -> list[str]:
    from kizuna.contacts.models import ContactList, ListMembership

    if not ContactList.objects.filter(pk=node["list"]).exists():
        return [f"skipped: list {node['list']} no longer exists"] * len(items)
    ids = {c.pk for _e, c, _k in items}
    there = set(ListMembership.objects.filter(contact_list_id=node["list"], contact_id__in=ids)
                .values_list("contact_id", flat=True))
    notes, new = [], []
    for _e, contact, _key in items:
        if contact.pk in there:
            notes.append("already in the list")
        else:
            there.add(contact.pk)
            new.append(ListMembership(contact_list_id=node["list"], contact=contact))
            notes.append("added to list")
    ListMembership.objects.bulk_create(new, batch_size=1000)
    return notes


def remove_from_list_many(node, items: Items, journey, runner) -> list[str]:
    from kizuna.contacts.models import ListMembership

    rows = ListMembership.objects.filter(contact_list_id=node["list"], contact_id__in={c.pk for _e, c, _k in items})
    there = set(rows.values_list("contact_id", flat=True))
    rows.delete()
    notes = []
    for _e, contact, _key in items:
        notes.append("removed from list" if contact.pk in there else "was not in the list")
        there.discard(contact.pk)
    return notes


# Keyed by the one-at-a-time function: an action replaced in ACTIONS (a test's fault injection,
# a customisation) has no set-based twin and runs one enrollment at a time.
SET_BASED = {
    send_email: send_email_many, add_tag: add_tag_many, remove_tag: remove_tag_many, set_stage: set_stage_many,
    score: score_many,
    add_to_list: add_to_list_many, remove_from_list: remove_from_list_many,
}
