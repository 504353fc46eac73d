"""Moving contacts between lifecycle stages: by rule, by hand, by API — always recorded.

Rules only ever move a contact *forward* (to a later stage than the one it is in), and a stage
change is itself an event that scoring rules may react to. So a chain stage → score → stage can
happen, but it is bounded: a contact can be moved by rules at most once per stage, whatever the
rules say, and there is no endless loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.utils import timezone

from kizuna.accounts import audit
from kizuna.contacts.models import Contact, LifecycleStage
from kizuna.lifecycle.models import DEFAULT_AIDMA, StageChange, StageRule, StageSetting

log = logging.getLogger(__name__)

ORDER = [LifecycleStage.SUBSCRIBER, LifecycleStage.LEAD, LifecycleStage.MQL, LifecycleStage.SQL,
         LifecycleStage.OPPORTUNITY, LifecycleStage.CUSTOMER, LifecycleStage.EVANGELIST]
RANK = {stage.value: i for i, stage in enumerate(ORDER)}  # "other" ranks nowhere: rules leave it alone
GRADES = "ABCD"
EVENT_NAME = "Lifecycle Stage Changed"


def ensure_defaults(model=None) -> None:
    """Stage settings with the default AIDMA mapping; with a new scoring model, its MQL rule
    (engagement at the hot threshold and fit grade B or better, as MISSION.md's example)."""
    existing = set(StageSetting.objects.values_list("key", flat=True))
    StageSetting.objects.bulk_create([StageSetting(key=stage.value, aidma=DEFAULT_AIDMA.get(stage, ""),
                                                   in_funnel=stage != LifecycleStage.OTHER)
                                      for stage in LifecycleStage if stage.value not in existing])
    if model is not None and not model.stage_rules.exists():
        StageRule.objects.create(name="MQL", scoring_model=model, min_engagement=model.hot_threshold,
                                 min_grade="B", to_stage=LifecycleStage.MQL)


def record(changes: Sequence[tuple[Contact, str, str]], *, via: str, rule: StageRule | None = None,
           actor=None, at: datetime | None = None) -> list[StageChange]:
    """Stores transitions (contact, from, to) that already happened on the contacts, and puts one
    event per transition in the event log."""
    at = at or timezone.now()
    rows = StageChange.objects.bulk_create([
        StageChange(contact=contact, from_stage=before or "", to_stage=after, at=at, via=via, rule=rule,
                    actor=actor if getattr(actor, "is_authenticated", False) and hasattr(actor, "role") else None)
        for contact, before, after in changes if before != after])
    _emit(rows, [c for c, before, after in changes if before != after])
    return rows


def _emit(rows: Sequence[StageChange], contacts: Sequence[Contact]) -> None:
    messages = [{
        "type": "track", "event": EVENT_NAME, "messageId": f"stage-change-{row.pk}", "timestamp": row.at.isoformat(),
        "context": {"traits": {"email": contact.email}},
        "properties": {"from": row.from_stage, "to": row.to_stage, "via": row.via},
    } for row, contact in zip(rows, contacts, strict=True) if contact.email and row.pk and row.from_stage]
    # A new contact's first stage is recorded for the funnel but is not something it did.
    if not messages:
        return
    from kizuna.events import ingest

    result = ingest.prepare(messages, ingest.RequestInfo(source="lifecycle", internal=True), path_prefix="")
    if result.rejected:
        log.error("stage events refused by the event log: %s", result.rejected)
    ingest.store(result.rows)


def move(contacts: Iterable[Contact], to_stage: str, *, via: str, rule: StageRule | None = None,
         actor=None) -> list[StageChange]:
    """Sets the stage on the contacts (one UPDATE) and records the transitions."""
    changes = [(c, c.lifecycle_stage, to_stage) for c in contacts if c.lifecycle_stage != to_stage]
    if not changes:
        return []
    now = timezone.now()
    Contact.objects.filter(pk__in=[c.pk for c, _b, _a in changes]).update(lifecycle_stage=to_stage, updated_at=now)
    for contact, before, _after in changes:
        contact.lifecycle_stage = to_stage
        # The contact's history shows it, and the predictive score learns when stages were reached.
        audit.record(actor, "update", contact, changes={"lifecycle_stage": [before, to_stage]})
    return record(changes, via=via, rule=rule, actor=actor, at=now)


def on_contact_saved(sender, actor, contact: Contact, changes: dict, created: bool, via: str, **kwargs) -> None:
    """A stage set on a form, through the API or at creation is a transition too."""
    if "lifecycle_stage" not in changes:
        return
    before, after = changes["lifecycle_stage"]
    kind = via if via in StageChange.Via.values else StageChange.Via.MANUAL
    if via in {"manual", "api"} or created:
        record([(contact, "" if created else before, after)], via=kind, actor=actor)


def on_scores_changed(sender, model, scores: Sequence, **kwargs) -> None:
    """Runs the stage rules of this scoring model on the contacts whose scores just changed."""
    rules = sorted(StageRule.objects.filter(scoring_model=model, active=True), key=lambda r: -RANK.get(r.to_stage, -1))
    if not rules or not scores:
        return
    from kizuna.scoring.engine import current_of

    now = timezone.now()
    contacts = Contact.objects.only("id", "email", "lifecycle_stage").in_bulk([s.contact_id for s in scores])
    moves: dict[int, list[Contact]] = {}
    for score in scores:
        contact = contacts.get(score.contact_id)
        if contact is None or contact.lifecycle_stage not in RANK:
            continue
        value = current_of(model, score, now)
        for rule in rules:  # the furthest stage whose bar is met wins
            if RANK[rule.to_stage] <= RANK[contact.lifecycle_stage]:
                continue  # forward only: never back, never the same stage again
            if value >= rule.min_engagement and GRADES.index(score.grade) <= GRADES.index(rule.min_grade):
                moves.setdefault(rule.pk, []).append(contact)
                break
    by_pk = {r.pk: r for r in rules}
    for rule_pk, movers in moves.items():
        rule = by_pk[rule_pk]
        move(movers, rule.to_stage, via=StageChange.Via.RULE, rule=rule)
        log.info("stage rule %s moved %d contacts to %s", rule.name, len(movers), rule.to_stage)
