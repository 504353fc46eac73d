"""Merging two contacts that turned out to be one person, keeping everything.

Precedence (docs/decisions/0006-contact-merge.md): the kept contact's values win, the dropped
one fills its blanks; tags and lists are united; the consent ledger moves whole, and for each
topic the most recent decision wins (the more restrictive one on a tie); do-not-contact sticks;
the lifecycle stage is the more advanced one; the earliest appearance (created_at, source) stays.
Other apps move their own rows through `MERGE_HOOKS` before the dropped contact is deleted.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

from kizuna.accounts import audit

from .models import Consent, ConsentRecord, ConsentStatus, Contact, LifecycleStage, ListMembership

MergeHook = Callable[[Contact, Contact], None]
MERGE_HOOKS: list[MergeHook] = []

FILL_FIELDS = (
    "family_name", "given_name", "family_name_kana", "given_name_kana", "phone", "company_id", "company_name",
    "job_title", "department", "prefecture", "region", "industry", "company_size", "language", "time_zone",
    "owner_id",
)
STAGE_ORDER = [
    LifecycleStage.SUBSCRIBER, LifecycleStage.LEAD, LifecycleStage.MQL, LifecycleStage.SQL,
    LifecycleStage.OPPORTUNITY, LifecycleStage.CUSTOMER, LifecycleStage.EVANGELIST,
]
RESTRICTIVE = {ConsentStatus.OPTED_OUT}


def register_merge_hook(hook: MergeHook) -> MergeHook:
    if hook not in MERGE_HOOKS:
        MERGE_HOOKS.append(hook)
    return hook


def _stage(keep: str, drop: str) -> str:
    ranks = {s.value: i for i, s in enumerate(STAGE_ORDER)}
    if drop not in ranks:
        return keep
    if keep not in ranks:
        return drop
    return keep if ranks[keep] >= ranks[drop] else drop


def _snapshot(contact: Contact) -> dict:
    names = (*FILL_FIELDS, "email", "lifecycle_stage", "do_not_contact", "custom")
    return {name: getattr(contact, name) for name in names}


@transaction.atomic
def merge_contacts(keep: Contact, drop: Contact, *, actor=None, reason: str = "") -> Contact:
    """Folds `drop` into `keep` and deletes `drop`; returns `keep` as saved."""
    if keep.pk == drop.pk:
        raise ValueError("A contact cannot be merged with itself.")
    locked = {c.pk: c for c in Contact.objects.select_for_update().filter(pk__in=[keep.pk, drop.pk])}
    if len(locked) != 2:
        raise ValueError("Both contacts must exist to be merged.")
    keep, drop = locked[keep.pk], locked[drop.pk]
    before = _snapshot(keep)

    for name in FILL_FIELDS:
        if getattr(keep, name) in (None, "") and getattr(drop, name) not in (None, ""):
            setattr(keep, name, getattr(drop, name))
    keep.custom = {**(drop.custom or {}), **(keep.custom or {})}
    keep.lifecycle_stage = _stage(keep.lifecycle_stage, drop.lifecycle_stage)
    if drop.do_not_contact and (
        not keep.do_not_contact or (drop.dnc_at and (not keep.dnc_at or drop.dnc_at < keep.dnc_at))
    ):
        keep.do_not_contact, keep.dnc_reason, keep.dnc_at = True, drop.dnc_reason, drop.dnc_at
    if drop.last_activity_at and (not keep.last_activity_at or drop.last_activity_at > keep.last_activity_at):
        keep.last_activity_at = drop.last_activity_at
    if drop.created_at < keep.created_at:
        keep.created_at, keep.source = drop.created_at, drop.source
    dropped_email = drop.email
    if not keep.email and drop.email:
        drop.email = None
        drop.save(update_fields=["email"])
        keep.email = dropped_email

    keep.tags.add(*drop.tags.all())
    have = set(ListMembership.objects.filter(contact=keep).values_list("contact_list_id", flat=True))
    ListMembership.objects.filter(contact=drop).exclude(contact_list_id__in=have).update(contact=keep)
    _merge_consent(keep, drop)

    for hook in MERGE_HOOKS:
        hook(keep, drop)
    dropped_id = drop.pk
    drop.delete()
    keep.save()
    audit.record(actor, "merge", keep, changes={
        **audit.diff(before, _snapshot(keep)),
        "merged_contact": [dropped_id, dropped_email or ""],
        **({"reason": ["", reason]} if reason else {}),
    })
    keep.refresh_from_db()
    return keep


def _merge_consent(keep: Contact, drop: Contact) -> None:
    ConsentRecord.objects.filter(contact=drop).update(contact=keep)
    mine = {c.topic_id: c for c in Consent.objects.filter(contact=keep)}
    for theirs in Consent.objects.filter(contact=drop):
        current = mine.get(theirs.topic_id)
        if current is None:
            theirs.contact = keep
            theirs.save(update_fields=["contact"])
            continue
        newer = theirs.updated_at > current.updated_at
        tie_safer = theirs.updated_at == current.updated_at and theirs.status in RESTRICTIVE
        if newer or tie_safer:
            current.status, current.updated_at = theirs.status, theirs.updated_at
            current.save(update_fields=["status", "updated_at"])
        theirs.delete()
