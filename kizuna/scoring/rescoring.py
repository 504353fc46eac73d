"""Re-scoring every contact of a scoring model after its rules change, in the background.

A `RescoreRun` row is the job: `request()` queues one (coalescing with a run still waiting, so
five rule edits in a row cost one pass), the worker's task queue runs it, and progress is written
on the row after every chunk for the page to show.

Fit is a pure function of the profile, so the fit pass reads only the columns the rules use (one
query per 20,000 contacts, with the stored fit beside them), evaluates each rule once per
distinct value (most contacts share an industry, a size, a prefecture), and writes back only the
scores that changed, in one statement per chunk.

Engagement is rebuilt from the event log: for each contact, the ledger entries of the last
`HORIZON_HALF_LIVES` half-lives are deleted and the events of that period are scored again with
the current rules (older entries weigh less than 0.1 % and stay as they were). A lead that turns
hot this way is flagged but not alerted (see engine.apply_entries).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Hashable
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import FilteredRelation, Q
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.writelock import sqlite_writer
from kizuna.events.bulk import execute_arrays, update_rows
from kizuna.events.models import Event
from kizuna.scoring import engine
from kizuna.scoring.models import ContactScore, FitRule, RescoreRun, ScoreEntry, ScoringModel
from kizuna.scoring.rules import EVENT_FIELDS, compare

log = logging.getLogger(__name__)

FIT_CHUNK = 20_000
ENGAGEMENT_CHUNK = 1_000
HORIZON_HALF_LIVES = 10  # 2^-10: what is older weighs less than 0.1 % of its points
MEMO_LIMIT = 5_000  # distinct values remembered per rule
STALLED_AFTER = timedelta(minutes=10)  # a running job without progress for this long was interrupted

Progress = Callable[[int, int], None]


# --- jobs ---------------------------------------------------------------------------------------

def request(model: ScoringModel, what: str, user=None) -> RescoreRun:
    """Queues a re-score of `model` (RescoreRun.What), or widens the one already waiting."""
    from kizuna.scoring.tasks import rescore as rescore_task

    with sqlite_writer(), transaction.atomic():
        waiting = RescoreRun.objects.select_for_update().filter(model=model, status=RescoreRun.Status.QUEUED).first()
        if waiting is not None:
            if waiting.what != what:
                waiting.what = RescoreRun.What.ALL
                waiting.save(update_fields=["what"])
            return waiting
        run = RescoreRun.objects.create(model=model, what=what, requested_by=user)
        transaction.on_commit(lambda: rescore_task.enqueue(run.pk))
    return run


def run(run_id: int) -> RescoreRun | None:
    """Runs a queued job (the task's body). Returns None when someone else took it."""
    now = timezone.now()
    with sqlite_writer():
        taken = RescoreRun.objects.filter(pk=run_id, status=RescoreRun.Status.QUEUED).update(
            status=RescoreRun.Status.RUNNING, started_at=now, heartbeat_at=now)
    if not taken:
        return None
    job = RescoreRun.objects.select_related("model").get(pk=run_id)
    model = job.model
    phases = [RescoreRun.What.FIT, RescoreRun.What.ENGAGEMENT] if job.what == RescoreRun.What.ALL else [job.what]
    sizes = {RescoreRun.What.FIT: Contact.objects.count(),
             RescoreRun.What.ENGAGEMENT: len(engagement_contacts(model, now)) if RescoreRun.What.ENGAGEMENT in
             phases else 0}
    job.total = sum(sizes[p] for p in phases)
    offset = 0

    def report(done: int, _total: int) -> None:
        job.done = offset + done
        job.heartbeat_at = timezone.now()
        with sqlite_writer():
            RescoreRun.objects.filter(pk=job.pk).update(done=job.done, total=job.total,
                                                        heartbeat_at=job.heartbeat_at)

    try:
        changed = 0
        for phase in phases:
            if phase == RescoreRun.What.FIT:
                changed += rescore_fit(model, progress=report)
            else:
                changed += rescore_engagement(model, progress=report, now=now)
            offset += sizes[phase]
        job.status, job.changed, job.done = RescoreRun.Status.DONE, changed, job.total
    except Exception as exc:  # noqa: BLE001 - the job records why it stopped; the worker goes on
        log.exception("re-scoring %s failed", model)
        job.status, job.error = RescoreRun.Status.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
    job.finished_at = timezone.now()
    with sqlite_writer():
        job.save(update_fields=["status", "changed", "done", "total", "error", "finished_at"])
    return job


def stalled(job: RescoreRun, now: datetime | None = None) -> bool:
    now = now or timezone.now()
    if job.status != RescoreRun.Status.RUNNING:
        return False
    return (job.heartbeat_at or job.started_at or job.created_at) < now - STALLED_AFTER


def progress(job: RescoreRun) -> dict[str, Any]:
    """{done, percent, text} for the progress bar (app.js polls it)."""
    from django.utils.translation import gettext as _
    from django.utils.translation import ngettext

    percent = round(100 * job.done / job.total) if job.total else 0
    if job.status == RescoreRun.Status.QUEUED:
        text = _("Waiting for the worker to start re-scoring.")
    elif stalled(job):
        text = _("No progress for %(minutes)s minutes: is the worker running?") % {
            "minutes": int(STALLED_AFTER.total_seconds() // 60)}
    elif job.status == RescoreRun.Status.RUNNING:
        text = _("Re-scoring: %(done)s of %(total)s contacts (%(what)s).") % {
            "done": f"{job.done:,}", "total": f"{job.total:,}", "what": job.get_what_display()}
    elif job.status == RescoreRun.Status.FAILED:
        text = _("Re-scoring failed: %(error)s") % {"error": job.error}
    else:
        text = ngettext("Re-scored %(total)s contact: %(changed)s changed.",
                        "Re-scored %(total)s contacts: %(changed)s changed.", job.total) % {
            "total": f"{job.total:,}", "changed": f"{job.changed:,}"}
    finished = job.status in (RescoreRun.Status.DONE, RescoreRun.Status.FAILED)
    return {"done": finished, "percent": 100 if finished else percent, "text": text, "status": job.status}


# --- fit ----------------------------------------------------------------------------------------

class _FitRules:
    """The model's fit rules as getters on a row of values, each with a memo per distinct value."""

    def __init__(self, rules: list[FitRule]) -> None:
        self.rules = rules
        self.columns: list[str] = ["id"]
        self.getters: list[Callable[[tuple], Any]] = []
        for rule in rules:
            self.getters.append(self._getter(rule.field))
        self.memo: list[dict[Hashable, bool] | None] = [{} for _ in rules]

    def _column(self, name: str) -> int:
        if name not in self.columns:
            self.columns.append(name)
        return self.columns.index(name)

    def _getter(self, field: str) -> Callable[[tuple], Any]:
        if field == "email_domain":
            i = self._column("email")
            return lambda row: (row[i] or "").rpartition("@")[2].lower()
        if field.startswith("custom."):
            i, key = self._column("custom"), field[7:]
            return lambda row: (row[i] or {}).get(key) if isinstance(row[i], dict) else None
        if field.startswith("company."):
            i = self._column("company__" + field[8:])
            return lambda row: row[i]
        i = self._column(field)
        return lambda row: row[i]

    def fit(self, row: tuple) -> int:
        points = 0
        for i, (rule, get) in enumerate(zip(self.rules, self.getters, strict=True)):
            value = get(row)
            memo = self.memo[i]
            if memo is None:
                hit = compare(value, rule.operator, rule.value)
            else:
                try:
                    hit = memo.get(value)
                    if hit is None:
                        hit = memo[value] = compare(value, rule.operator, rule.value)
                        if len(memo) > MEMO_LIMIT:  # an address or a name: values rarely repeat
                            self.memo[i] = None
                except TypeError:  # an unhashable custom value (a list): no memo
                    hit = compare(value, rule.operator, rule.value)
            if hit:
                points += rule.points
        return points


def rescore_fit(model: ScoringModel, *, progress: Progress | None = None) -> int:
    """Fit and grade again for every contact; returns how many changed (or were new)."""
    rules = _FitRules(list(model.fit_rules.all()))
    total = Contact.objects.count()
    base = Contact.objects.annotate(
        stored=FilteredRelation("scores", condition=Q(scores__model_id=model.pk))).order_by("id")
    columns = [*rules.columns, "stored__id", "stored__fit", "stored__grade"]
    done = changed = last_id = 0
    now = timezone.now()
    while True:
        rows = list(base.filter(id__gt=last_id).values_list(*columns)[:FIT_CHUNK])
        if not rows:
            break
        last_id = rows[-1][0]
        new: tuple[list, list, list] = ([], [], [])  # contact ids, fits, grades
        moved: tuple[list, list, list] = ([], [], [])  # score row ids, fits, grades
        for row in rows:
            fit = rules.fit(row)
            grade = model.grade(fit)
            if row[-3] is None:
                target = new
            elif row[-2] != fit or row[-1] != grade:
                target = moved
            else:
                continue
            target[0].append(row[0] if target is new else row[-3])
            target[1].append(fit)
            target[2].append(grade)
        if new[0] or moved[0]:
            _write_fit(model.pk, new, moved, now)
        changed += len(new[0]) + len(moved[0])
        done += len(rows)
        if progress:
            progress(done, total)
    _rehot(model, now)
    return changed


def _rehot(model: ScoringModel, now: datetime) -> None:
    """Grades moved, so the hot flags follow: off below the model's minimum grade, on (silently,
    like the rest of a re-score) where engagement already qualifies. rank_key orders by current
    engagement, so both are one indexed UPDATE."""
    bar = math.log2(model.hot_threshold) + now.timestamp() / (model.half_life_days * 86400)
    allowed = engine.GRADES[:engine.GRADES.index(model.hot_min_grade) + 1]
    scores = ContactScore.objects.filter(model=model)
    with sqlite_writer(), transaction.atomic():
        scores.filter(hot=True).exclude(grade__in=allowed).update(hot=False)
        scores.filter(hot=False, grade__in=allowed, rank_key__gte=bar).update(hot=True, hot_at=now)


_INSERT = """
INSERT INTO scoring_contactscore (model_id, contact_id, fit, grade, engagement, engagement_at, rank_key, hot,
                                  updated_at)
VALUES (%s, %s, %s, %s, 0, %s, -1e9, {false}, %s)
ON CONFLICT (model_id, contact_id) DO UPDATE SET fit = excluded.fit, grade = excluded.grade,
                                                updated_at = excluded.updated_at
"""
_INSERT_PG = """
INSERT INTO scoring_contactscore (model_id, contact_id, fit, grade, engagement, engagement_at, rank_key, hot,
                                  updated_at)
SELECT %b, c, f, g, 0, %b, -1e9, false, %b FROM unnest(%b::bigint[], %b::integer[], %b::varchar[]) AS t(c, f, g)
ON CONFLICT (model_id, contact_id) DO UPDATE SET fit = EXCLUDED.fit, grade = EXCLUDED.grade,
                                                updated_at = EXCLUDED.updated_at
"""
# Rows that exist are updated by primary key: cheaper than an upsert's speculative insertion.
_UPDATE_PG = """
UPDATE scoring_contactscore AS s SET fit = v.f, grade = v.g, updated_at = %b
FROM unnest(%b::bigint[], %b::integer[], %b::varchar[]) AS v(i, f, g) WHERE s.id = v.i
"""
_UPDATE = "UPDATE scoring_contactscore SET fit = %s, grade = %s, updated_at = %s WHERE id = %s"


def _write_fit(model_id: int, new: tuple[list, list, list], moved: tuple[list, list, list], now: datetime) -> None:
    with sqlite_writer(), transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # A re-score can always be run again: no need to wait for the disk at each commit.
                cursor.execute("SET LOCAL synchronous_commit = off")
            if new[0]:
                execute_arrays(_INSERT_PG, [model_id, now, now, *new])
            if moved[0]:
                execute_arrays(_UPDATE_PG, [now, *moved])
            return
        stamp = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            if new[0]:
                cursor.executemany(_INSERT.format(false=0), [(model_id, c, f, g, stamp, stamp)
                                                             for c, f, g in zip(*new, strict=True)])
            if moved[0]:
                cursor.executemany(_UPDATE, [(f, g, stamp, i) for i, f, g in zip(*moved, strict=True)])


# --- engagement ---------------------------------------------------------------------------------

def horizon_of(model: ScoringModel, now: datetime) -> datetime:
    return now - timedelta(days=model.half_life_days * HORIZON_HALF_LIVES)


def engagement_contacts(model: ScoringModel, now: datetime) -> list[int]:
    """Contacts whose engagement can change: some engagement now, or events inside the horizon."""
    horizon = horizon_of(model, now)
    ids = set(ContactScore.objects.filter(model=model, rank_key__gt=-1e9).values_list("contact_id", flat=True))
    ids.update(Event.objects.filter(occurred_at__gte=horizon, contact__isnull=False).values_list(
        "contact_id", flat=True).distinct())
    return sorted(ids)


def _scorable_events(model: ScoringModel):
    """Only events some rule is about, with only the columns rules read (no traits, no context)."""
    wanted = {r.event.strip() for r in model.engagement_rules.all()}
    kinds = wanted & {"page", "identify", "screen", "group"}
    names = wanted - kinds
    which = Q(type__in=kinds) | Q(type="track", name__in=names)
    return Event.objects.filter(which).only("id", "contact_id", "occurred_at", "type", "bot", "properties",
                                            *EVENT_FIELDS)


def rescore_engagement(model: ScoringModel, *, progress: Progress | None = None,
                       now: datetime | None = None) -> int:
    """Engagement again from the events of the horizon; returns how many contacts' value moved."""
    now = now or timezone.now()
    ids = engagement_contacts(model, now)
    changed = 0
    for start in range(0, len(ids), ENGAGEMENT_CHUNK):
        chunk = ids[start:start + ENGAGEMENT_CHUNK]
        with sqlite_writer(), transaction.atomic():
            changed += _rescore_engagement_chunk(model, chunk, now)
        if progress:
            progress(start + len(chunk), len(ids))
    return changed


def _rescore_engagement_chunk(model: ScoringModel, chunk: list[int], now: datetime) -> int:
    horizon = horizon_of(model, now)
    scores = list(ContactScore.objects.select_for_update().filter(model=model, contact_id__in=chunk))
    before = {s.contact_id: (round(engine.current_of(model, s, now), 1), s.hot) for s in scores}
    ScoreEntry.objects.filter(model=model, kind=ScoreEntry.Kind.ENGAGEMENT, contact_id__in=chunk,
                              at__gte=horizon).delete()
    kept: dict[int, float] = defaultdict(float)  # what older entries still weigh at the horizon
    for contact_id, at, points in ScoreEntry.objects.filter(
            model=model, kind=ScoreEntry.Kind.ENGAGEMENT, contact_id__in=chunk).values_list(
            "contact_id", "at", "points"):
        kept[contact_id] += engine.decay(points, at, horizon, model.half_life_days)
    for score in scores:  # back to what the horizon leaves; the events below add the rest
        score.engagement = max(kept.get(score.contact_id, 0.0), 0.0)
        score.engagement_at = horizon
        score.rank_key = engine.rank_key(score.engagement, horizon, model.half_life_days)
    update_rows(ContactScore, scores, ["engagement", "engagement_at", "rank_key"])
    events = list(_scorable_events(model).filter(contact_id__in=chunk, occurred_at__gte=horizon).order_by(
        "occurred_at", "id"))
    if events:
        engine.score_events(model, events, rescore=True)
    after = {s.contact_id: (round(engine.current_of(model, s, now), 1), s.hot)
             for s in ContactScore.objects.filter(model=model, contact_id__in=chunk)}
    cooled = [c for c, (value, hot) in after.items()
              if hot and value < model.hot_threshold * engine.COOL_BELOW]
    if cooled:
        ContactScore.objects.filter(model=model, contact_id__in=cooled).update(hot=False)
    return sum(1 for c in set(before) | set(after) if before.get(c, (0.0, False))[0] != after.get(c, (0.0, False))[0])
