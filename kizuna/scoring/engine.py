"""Scoring events as they are processed, and reading scores back (now, or at any past moment).

`on_events` is an event handler (settings.KIZUNA_EVENT_HANDLERS): it runs inside the processing
transaction, so a score changes exactly once per event, together with the event itself. Each
matching rule adds a ledger entry; the contact's engagement is brought forward to the newest
event with the decay applied. Replayed anonymous history (replay=True) is scored at the time it
happened, so a visitor who identifies later gets the (decayed) credit for earlier visits.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.events.bulk import insert_rows, update_rows
from kizuna.scoring.models import ContactScore, EngagementRule, FitRule, LeadAlert, ScoreEntry, ScoringModel
from kizuna.scoring.rules import EventView, describe_condition, event_matches, fit_matches
from kizuna.scoring.signals import lead_turned_hot, scores_changed

COOL_BELOW = 0.8  # a hot lead turns "not hot" again below 80 % of the threshold: one alert per turn
GRADES = "ABCD"


def decay(value: float, since: datetime, until: datetime, half_life_days: float) -> float:
    if value == 0 or until <= since or half_life_days <= 0:
        return value
    return value * 0.5 ** ((until - since).total_seconds() / (half_life_days * 86400))


def rank_key(value: float, at: datetime, half_life_days: float) -> float:
    """Orders contacts by current engagement whatever moment each value was stored at."""
    if value <= 0:
        return -1e9
    return math.log2(value) + at.timestamp() / (max(half_life_days, 1e-6) * 86400)


def fit_of(model: ScoringModel, contact: Contact, rules: Sequence[FitRule] | None = None) -> tuple[int, list[str]]:
    rules = list(model.fit_rules.all()) if rules is None else rules
    points, reasons = 0, []
    for rule in rules:
        if fit_matches(rule, contact):
            points += rule.points
            reasons.append(f"{rule.field} {rule.operator} {rule.value}".strip() + f" ({rule.points:+d})")
    return points, reasons


def is_hot(model: ScoringModel, engagement_now: float, grade: str) -> bool:
    return engagement_now >= model.hot_threshold and GRADES.index(grade) <= GRADES.index(model.hot_min_grade)


def _reason(rule: EngagementRule, view: EventView) -> str:
    detail = view.fields.get("path") or view.fields.get("url") or view.name or view.type
    conditions = ", ".join(describe_condition(c) for c in rule.conditions or [])
    return f"{rule.name}: {detail}" + (f" ({conditions})" if conditions else "")


def on_events(events: Sequence, *, replay: bool = False) -> None:
    known = [e for e in events if e.contact_id]
    if not known:
        return
    for model in ScoringModel.objects.filter(active=True).prefetch_related("engagement_rules", "fit_rules"):
        score_events(model, known)


def _cap_counts(rules: list[EngagementRule], contact_ids: set[int], since: datetime) -> dict:
    rows = ScoreEntry.objects.filter(engagement_rule__in=[r for r in rules if r.max_times],
                                     contact_id__in=contact_ids, at__gte=since).values_list(
        "engagement_rule_id", "contact_id", "at")
    seen: dict[tuple[int, int], list[datetime]] = defaultdict(list)
    for rule_id, contact_id, at in rows:
        seen[(rule_id, contact_id)].append(at)
    return seen


def score_events(model: ScoringModel, events: Sequence, *, rescore: bool = False) -> list[ScoreEntry]:
    """Ledger entries for the events each rule matches (within its caps), then the scores.

    rescore=True is the re-scoring after a rule change (rescoring.py): the period's entries were
    just deleted, so they are inserted without conflict checks, the fit pass owns fit and grade,
    and a lead that turns hot is flagged but not alerted — a rule edit must not page every owner
    about last month's activity."""
    rules = list(model.engagement_rules.all())
    if not rules:
        return []
    events = sorted(events, key=lambda e: (e.occurred_at, e.pk or 0))
    contact_ids = {e.contact_id for e in events}
    oldest = events[0].occurred_at
    longest = max((r.per_days or 36500) for r in rules if r.max_times) if any(r.max_times for r in rules) else 0
    seen = _cap_counts(rules, contact_ids, oldest - timedelta(days=longest)) if longest else {}
    entries: list[ScoreEntry] = []
    for event in events:
        view = EventView.of(event)
        for rule in rules:
            if not event_matches(rule, view):
                continue
            if rule.max_times:
                times = seen[(rule.pk, event.contact_id)]
                window_start = event.occurred_at - timedelta(days=rule.per_days) if rule.per_days else None
                recent = [t for t in times if window_start is None or t > window_start]
                if len(recent) >= rule.max_times:
                    continue
                times.append(event.occurred_at)
            entries.append(ScoreEntry(model_id=model.pk, contact_id=event.contact_id,
                                      kind=ScoreEntry.Kind.ENGAGEMENT, at=event.occurred_at, points=rule.points,
                                      engagement_rule_id=rule.pk, rule_name=rule.name, event_id=event.pk,
                                      reason=_reason(rule, view)[:500]))
    if not entries:
        return []
    if rescore:
        insert_rows(ScoreEntry, entries)
    else:
        ScoreEntry.objects.bulk_create(entries, ignore_conflicts=True)  # a replayed event scores once
    apply_entries(model, entries, announce=not rescore, refresh_fit=not rescore)
    return entries


def apply_entries(model: ScoringModel, entries: Sequence[ScoreEntry], *, announce: bool = True,
                  refresh_fit: bool = True) -> list[ContactScore]:
    """Adds ledger entries to the contacts' stored engagement and updates fit, grade and hot
    (announce=False: a lead turning hot is flagged, not alerted; refresh_fit=False: stored fit
    and grade are kept)."""
    by_contact: dict[int, list[ScoreEntry]] = defaultdict(list)
    for entry in entries:
        by_contact[entry.contact_id].append(entry)
    now = timezone.now()
    scores = {s.contact_id: s for s in ContactScore.objects.select_for_update().filter(
        model=model, contact_id__in=by_contact)}
    contacts = Contact.objects.select_related("company").in_bulk(list(by_contact)) if refresh_fit else {}
    fit_rules = list(model.fit_rules.all()) if refresh_fit else []
    changed: list[ContactScore] = []
    became_hot: list[ContactScore] = []
    for contact_id, items in by_contact.items():
        score = scores.get(contact_id) or ContactScore(model=model, contact_id=contact_id, engagement=0,
                                                      engagement_at=items[0].at)
        first = min(e.at for e in items)
        if score.hot and decay(score.engagement, score.engagement_at, max(first, score.engagement_at),
                               model.half_life_days) < model.hot_threshold * COOL_BELOW:
            score.hot = False  # it cooled down before this activity: turning hot again is a new turn
        until = max([score.engagement_at, *(e.at for e in items)])
        value = decay(score.engagement, score.engagement_at, until, model.half_life_days)
        value += sum(decay(e.points, e.at, until, model.half_life_days) for e in items)
        score.engagement, score.engagement_at = max(value, 0.0), until
        if contact_id in contacts:
            score.fit, _reasons = fit_of(model, contacts[contact_id], fit_rules)
            score.grade = model.grade(score.fit)
        score.rank_key = rank_key(score.engagement, until, model.half_life_days)
        current = decay(score.engagement, until, max(now, until), model.half_life_days)
        if not score.hot and is_hot(model, current, score.grade):
            score.hot, score.hot_at = True, now
            became_hot.append(score)
        elif score.hot and current < model.hot_threshold * COOL_BELOW:
            score.hot = False
        score.updated_at = now
        changed.append(score)
    stored = [s for s in changed if s.pk is not None]
    update_rows(ContactScore, stored, ["fit", "grade", "engagement", "engagement_at", "rank_key", "hot", "hot_at",
                                       "updated_at"])
    ContactScore.objects.bulk_create([s for s in changed if s.pk is None])
    if became_hot and announce:
        alerts = LeadAlert.objects.bulk_create([
            LeadAlert(model=model, contact_id=s.contact_id, engagement=round(current_of(model, s, now), 1),
                      grade=s.grade, reasons=[reason_line(r) for r in reasons_for(model, s.contact_id, now=now,
                                                                                   limit=5, grouped=True)])
            for s in became_hot])
        lead_turned_hot.send(sender=ScoringModel, alerts=alerts)
    scores_changed.send(sender=ScoringModel, model=model, scores=changed)
    return changed


def cool_down(model: ScoringModel, now: datetime | None = None) -> int:
    """Clears the hot flag of leads whose engagement decayed below 80 % of the threshold with no
    new activity: one UPDATE, since rank_key orders by current engagement."""
    now = now or timezone.now()
    limit = math.log2(model.hot_threshold * COOL_BELOW) + now.timestamp() / (model.half_life_days * 86400)
    return ContactScore.objects.filter(model=model, hot=True, rank_key__lt=limit).update(hot=False)


def refresh_fit(model: ScoringModel, contact: Contact) -> ContactScore:
    """After a profile change: fit and grade again (engagement unchanged)."""
    fit, _ = fit_of(model, contact)
    score, _created = ContactScore.objects.get_or_create(model=model, contact=contact)
    score.fit, score.grade, score.updated_at = fit, model.grade(fit), timezone.now()
    score.save(update_fields=["fit", "grade", "updated_at"])
    return score


def current_of(model: ScoringModel, score: ContactScore | None, now: datetime | None = None) -> float:
    if score is None:
        return 0.0
    now = now or timezone.now()
    return decay(score.engagement, score.engagement_at, max(now, score.engagement_at), model.half_life_days)


def engagement_at(model: ScoringModel, contact: Contact, moment: datetime) -> float:
    """The engagement a contact had at `moment`, rebuilt from the ledger."""
    total = 0.0
    for at, points in ScoreEntry.objects.filter(model=model, contact=contact, kind=ScoreEntry.Kind.ENGAGEMENT,
                                                at__lte=moment).values_list("at", "points"):
        total += decay(points, at, moment, model.half_life_days)
    return max(total, 0.0)


def history(model: ScoringModel, contact: Contact, *, days: int = 90, points: int = 46,
            now: datetime | None = None) -> list[tuple[datetime, float]]:
    """Engagement at evenly spaced moments over the last `days`, for the chart (one query)."""
    now = now or timezone.now()
    start = now - timedelta(days=days)
    entries = list(ScoreEntry.objects.filter(model=model, contact=contact, kind=ScoreEntry.Kind.ENGAGEMENT,
                                             at__lte=now).values_list("at", "points"))
    step = (now - start) / (points - 1)
    out = []
    for n in range(points):
        moment = start + step * n
        value = sum(decay(p, at, moment, model.half_life_days) for at, p in entries if at <= moment)
        out.append((moment, max(value, 0.0)))
    return out


def reasons_for(model: ScoringModel, contact_id: int, *, limit: int = 10, now: datetime | None = None,
                grouped: bool = False) -> list[dict]:
    """What the engagement is made of now: the entries still weighing most after decay. `grouped`
    folds the same rule and reason into one line with its count ("times") and summed points, so a
    summary for sales says "Form submitted ×3" once instead of filling its few lines with repeats."""
    now = now or timezone.now()
    rows = ScoreEntry.objects.filter(model=model, contact_id=contact_id, kind=ScoreEntry.Kind.ENGAGEMENT).order_by(
        "-at")[:500]
    weighted = [{"at": e.at, "points": e.points, "rule": e.rule_name, "reason": e.reason, "times": 1,
                 "now": decay(e.points, e.at, max(now, e.at), model.half_life_days)} for e in rows]
    if grouped:
        folded: dict[tuple[str, str], dict] = {}
        for r in weighted:  # newest first: the first of a group keeps its time
            same = folded.get((r["rule"], r["reason"]))
            if same is None:
                folded[(r["rule"], r["reason"])] = dict(r)
            else:
                same["times"] += 1
                same["points"] += r["points"]
                same["now"] += r["now"]
        weighted = list(folded.values())
    weighted.sort(key=lambda r: -abs(r["now"]))
    return weighted[:limit]


def reason_line(r: dict) -> str:
    """One grouped reason as text, for alerts: the reason, and how many times when more than once."""
    return f"{r['reason']} ×{r['times']}" if r["times"] > 1 else r["reason"]
