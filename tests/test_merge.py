"""Merging contacts: the precedence of docs/decisions/0006-contact-merge.md."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from kizuna.accounts.models import AuditLog
from kizuna.contacts import merge
from kizuna.contacts.models import (
    Consent,
    ConsentRecord,
    ConsentStatus,
    Contact,
    ContactList,
    ListMembership,
    SubscriptionTopic,
    Tag,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair():
    now = timezone.now()
    keep = Contact.objects.create(email="keep@example.co.jp", family_name="山田", lifecycle_stage="lead",
                                  custom={"a": 1}, created_at=now)
    drop = Contact.objects.create(email="drop@example.co.jp", family_name="別名", given_name="太郎",
                                  job_title="部長", lifecycle_stage="mql", custom={"a": 2, "b": 3},
                                  created_at=now - timedelta(days=30), source="import")
    return keep, drop


def test_fields_tags_lists_and_stage(pair):
    keep, drop = pair
    tags = [Tag.objects.create(name=n) for n in ("seminar", "vip")]
    keep.tags.add(tags[0])
    drop.tags.add(*tags)
    lists = [ContactList.objects.create(name=n) for n in ("A", "B")]
    ListMembership.objects.create(contact_list=lists[0], contact=keep)
    ListMembership.objects.create(contact_list=lists[0], contact=drop)
    ListMembership.objects.create(contact_list=lists[1], contact=drop)
    merged = merge.merge_contacts(keep, drop, reason="test")
    assert (merged.family_name, merged.given_name, merged.job_title) == ("山田", "太郎", "部長")
    assert merged.email == "keep@example.co.jp"
    assert merged.custom == {"a": 1, "b": 3}
    assert merged.lifecycle_stage == "mql"
    assert merged.source == "import" and merged.created_at == drop.created_at
    assert set(merged.tags.values_list("name", flat=True)) == {"seminar", "vip"}
    assert set(ListMembership.objects.filter(contact=merged).values_list("contact_list__name", flat=True)) == {"A", "B"}
    assert not Contact.objects.filter(pk=drop.pk).exists()
    entry = AuditLog.objects.filter(action="merge").get()
    assert entry.changes["merged_contact"] == [drop.pk, "drop@example.co.jp"]


def test_email_moves_when_kept_contact_has_none():
    keep = Contact.objects.create(email=None, family_name="匿名")
    drop = Contact.objects.create(email="real@example.co.jp")
    assert merge.merge_contacts(keep, drop).email == "real@example.co.jp"


def test_consent_ledger_moves_and_last_decision_wins(pair):
    keep, drop = pair
    news, events = (SubscriptionTopic.objects.create(key=k, name=k) for k in ("news", "events"))
    early, late = timezone.now() - timedelta(days=2), timezone.now() - timedelta(days=1)
    Consent.objects.create(contact=keep, topic=news, status=ConsentStatus.OPTED_IN, updated_at=early)
    Consent.objects.create(contact=drop, topic=news, status=ConsentStatus.OPTED_OUT, updated_at=late)
    Consent.objects.create(contact=drop, topic=events, status=ConsentStatus.OPTED_IN, updated_at=early)
    ConsentRecord.objects.create(contact=drop, topic=news, status=ConsentStatus.OPTED_OUT, method="unsubscribe")
    merged = merge.merge_contacts(keep, drop)
    assert dict(Consent.objects.filter(contact=merged).values_list("topic__key", "status")) == {
        "news": "opted_out", "events": "opted_in"}
    assert ConsentRecord.objects.filter(contact=merged).count() == 1


def test_do_not_contact_sticks(pair):
    keep, drop = pair
    drop.do_not_contact, drop.dnc_reason, drop.dnc_at = True, "bounced", timezone.now()
    drop.save()
    merged = merge.merge_contacts(keep, drop)
    assert merged.do_not_contact and merged.dnc_reason == "bounced"


def test_hooks_run_before_the_dropped_contact_is_deleted(pair):
    keep, drop = pair
    seen = []

    def hook(k, d):
        seen.append((k.pk, d.pk, Contact.objects.filter(pk=d.pk).exists()))

    merge.register_merge_hook(hook)
    merge.register_merge_hook(hook)
    try:
        merge.merge_contacts(keep, drop)
    finally:
        merge.MERGE_HOOKS.remove(hook)
    assert seen == [(keep.pk, drop.pk, True)]


def test_merging_with_itself_is_refused(pair):
    keep, _ = pair
    with pytest.raises(ValueError, match="itself"):
        merge.merge_contacts(keep, keep)
