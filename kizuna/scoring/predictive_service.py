"""The predictive score in the database: examples from contact history, training, storage, and
the third score written for every contact. The statistics are in predictive.py.

An example is a contact seen at a cut-off. A contact at (or past) the target stage is seen just
before it got there — the moment comes from the audit log — with its profile as it was then
(later edits in the audit log undone) and its activity in the window before; every other contact
is seen now. The stage itself is never a feature, nor anything recorded after the cut-off: a
customer's visits to the support pages, or the company size sales filled in after the deal, would
teach the model to recognise customers instead of predicting them. Contacts at the stage with no
record of when they got there (imported that way, or already there when first recorded), or who
got there before the window was tracked, are left out for the same reason.

Each training replaces the previous one; scores are written only while the model is useful
(holdout AUC and cross-validation agree), so a weak model never ranks anybody.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Case, CharField, Q, Value, When
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.accounts.models import AuditLog
from kizuna.contacts.merge import STAGE_ORDER
from kizuna.contacts.models import Company, Contact, LifecycleStage, Source
from kizuna.contacts.reference import PREFECTURE_EN, PREFECTURE_JA, CompanySize, Industry, is_free_mail
from kizuna.db.loops import repeat
from kizuna.db.writelock import sqlite_writer
from kizuna.events.bulk import execute_arrays
from kizuna.events.models import Event, Session
from kizuna.scoring import predictive
from kizuna.scoring.engine import decay, fit_of
from kizuna.scoring.models import ContactScore, FitRule, PredictiveModel, ScoreEntry, ScoringModel

log = logging.getLogger(__name__)

STAGES = [str(s.value) for s in STAGE_ORDER]
TARGET_STAGES = STAGES[1:]  # everyone starts at the first stage: nothing to predict
CHUNK = 2000
MAX_EXAMPLES = 50_000  # a uniform sample beyond this: the base rate stays true, training stays quick
SEED = 0
STALE_AFTER = timedelta(hours=2)  # a training "running" this long was lost with its worker
SCHEDULE_SECONDS = 600

_PRICING_WORDS = ("/pricing", "/price", "/plans", "料金", "価格")
PRICING_PATHS = _PRICING_WORDS + tuple(quote(w) for w in _PRICING_WORDS if not w.isascii())
TRACKED = {"Form Submitted": "form", "File Downloaded": "download", "Email Opened": "open",
           "Email Clicked": "click"}
# Points a rule gives for a stage change are the stage in disguise: not part of the engagement feature.
STAGE_EVENT = "Lifecycle Stage Changed"
BEHAVIOUR = ("sessions", "page_views", "pricing_views", "form_submits", "downloads", "email_opens_human",
             "email_clicks_human", "days_since_last_activity", "engagement")
_COUNTED = {"page": ("page_views",), "pricing": ("page_views", "pricing_views"), "form": ("form_submits",),
            "download": ("downloads",), "open": ("email_opens_human",), "click": ("email_clicks_human",)}

# Profile fields the audit log records, so that their value at a past moment can be rebuilt.
CONTACT_FIELDS = ("email", "industry", "company_size", "prefecture", "job_title", "department", "custom")
COMPANY_FIELDS = ("industry", "company_size", "employees", "prefecture", "custom")
_COLUMNS = ["id", *CONTACT_FIELDS, "region", "source", "company_id", "lifecycle_stage"]

ProgressFn = Callable[[str, int, int], None]


class AlreadyTraining(RuntimeError):
    """Another training of the same model is queued or running."""


def stages_from(stage: str) -> list[str]:
    return STAGES[STAGES.index(stage):]


def stages_before(stage: str) -> list[str]:
    return STAGES[:STAGES.index(stage)]


def stage_label(stage: str) -> str:
    return str(LifecycleStage(stage).label) if stage in LifecycleStage.values else stage


def settings_for(model: ScoringModel) -> PredictiveModel:
    """The stored settings, or unsaved defaults: looking at the page must not schedule training."""
    return PredictiveModel.objects.filter(model=model).first() or PredictiveModel(model=model)


def update_settings(pm: PredictiveModel, *, target_stage: str, retrain_days: int, window_days: int) -> bool:
    """Saves the settings; a new target stage discards the model trained for the old one (its
    scores answer another question). True when that happened."""
    if target_stage not in TARGET_STAGES:
        raise ValueError(_("The target stage must be one of: %(stages)s.") % {
            "stages": ", ".join(stage_label(s) for s in TARGET_STAGES)})
    if not 0 <= retrain_days <= 365:
        raise ValueError(_("Retrain every 0 to 365 days."))
    if not 7 <= window_days <= 730:
        raise ValueError(_("The activity window is 7 to 730 days."))
    changed = pm.pk is not None and target_stage != pm.target_stage
    pm.target_stage, pm.retrain_days, pm.window_days = target_stage, retrain_days, window_days
    with sqlite_writer(), transaction.atomic():
        if pm.pk is None:
            pm.save()
        elif changed:
            running = pm.status in (PredictiveModel.Status.QUEUED, PredictiveModel.Status.TRAINING)
            status = pm.status
            _forget(pm)
            if running:  # a queued training will use the new stage; a running one discards its outcome
                pm.status = status
            clear_predictions(pm.model)
            pm.save()
        else:  # only the settings: a training finishing meanwhile keeps its outcome
            pm.save(update_fields=["target_stage", "retrain_days", "window_days"])
    return changed


def _forget(pm: PredictiveModel) -> None:
    pm.status = PredictiveModel.Status.NEW
    pm.trained_model, pm.trained_at, pm.trained_stage, pm.attempted_at = None, None, "", None
    pm.auc = pm.cv_auc_mean = pm.cv_auc_std = None
    pm.useful, pm.verdict, pm.factors, pm.detail, pm.error = False, "", [], {}, ""
    pm.n_examples = pm.n_positive = pm.n_left_out = pm.n_scored = 0


# --- examples from the database ----------------------------------------------------------------


@dataclass
class Dataset:
    examples: list[predictive.Example]
    contact_ids: list[int] = field(default_factory=list)  # in the order of the examples
    n_undated: int = 0  # at the stage, with no record of when they got there
    n_untracked: int = 0  # got there before the behaviour window was tracked

    @property
    def n_left_out(self) -> int:
        return self.n_undated + self.n_untracked


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _pricing() -> Q:
    return reduce(or_, (Q(path__icontains=p) for p in PRICING_PATHS))


def _event_kind() -> Case:
    return Case(
        When(Q(type="track") & Q(properties__machine=True), then=Value("machine")),
        When(Q(type="page") & _pricing(), then=Value("pricing")),
        When(type="page", then=Value("page")),
        *(When(name=name, then=Value(kind)) for name, kind in TRACKED.items()),
        default=Value("other"), output_field=CharField(),
    )


def _audit(object_type: str, ids: Iterable[int], since: datetime | None = None) -> dict[int, list[tuple]]:
    """(at, action, changes) per object, oldest first."""
    found: dict[int, list[tuple]] = defaultdict(list)
    keys = [str(i) for i in ids]
    for part in _chunks(keys, CHUNK):
        entries = AuditLog.objects.filter(object_type=object_type, object_id__in=part)
        if since is not None:
            entries = entries.filter(at__gte=since)
        for object_id, at, action, changes in entries.order_by("at", "id").values_list(
                "object_id", "at", "action", "changes"):
            found[int(object_id)].append((at, action, changes if isinstance(changes, dict) else {}))
    return found


def reached(contact_ids: Sequence[int], target: str) -> dict[int, tuple[datetime, list[dict]]]:
    """When each contact first moved into the target stage (or past it), by the audit log, with
    the changes recorded from that moment on (to undo them). Contacts at the stage when first
    recorded, or moved there without a record (imports), are missing: nothing shows how they got there."""
    wanted = set(stages_from(target))
    found: dict[int, tuple[datetime, list[dict]]] = {}
    for contact_id, history in _audit("contacts.contact", contact_ids).items():
        for index, (at, action, changes) in enumerate(history):
            stage = changes.get("lifecycle_stage")
            if not (isinstance(stage, list) and len(stage) == 2 and stage[1] in wanted and stage[0] not in wanted):
                continue
            if action != "create" and stage[0]:
                found[contact_id] = (at, [c for _at, _action, c in history[index:]])
            break
    return found


_EMPTY: dict[str, Any] = {"employees": None, "custom": {}}


def _undo(values: dict[str, Any], changes: Sequence[dict], fields: Sequence[str]) -> dict[str, Any]:
    """The values before `changes` (oldest first) were made; a record created later is empty."""
    values = dict(values)
    for change in reversed(changes):
        for name in fields:
            pair = change.get(name)
            if isinstance(pair, list) and len(pair) == 2:
                values[name] = pair[0] if pair[0] is not None else _EMPTY.get(name, "")
    return values


def _behaviour(model: ScoringModel, cutoffs: dict[int, datetime], window_days: int) -> dict[int, dict[str, float]]:
    """Activity counts in the window before each contact's cut-off: people only (no bots, no
    proxy opens or scanner clicks), plus the engagement the ledger gives at the cut-off."""
    window = timedelta(days=window_days)
    ids = list(cutoffs)
    start, end = min(cutoffs.values()) - window, max(cutoffs.values())
    out = {i: dict.fromkeys(BEHAVIOUR, 0.0) for i in ids}
    last: dict[int, datetime] = {}

    def inside(contact_id: int, at: datetime) -> bool:
        cutoff = cutoffs[contact_id]
        return cutoff - window <= at < cutoff

    events = (Event.objects.filter(contact_id__in=ids, occurred_at__gte=start, occurred_at__lt=end, bot="")
              .filter(Q(type="page") | Q(type="track", name__in=list(TRACKED)))
              .annotate(kind=_event_kind()).values_list("contact_id", "occurred_at", "kind"))
    for contact_id, at, kind in events.iterator(chunk_size=20_000):
        if kind not in _COUNTED or not inside(contact_id, at):
            continue
        counts = out[contact_id]
        for name in _COUNTED[kind]:
            counts[name] += 1
        if contact_id not in last or at > last[contact_id]:
            last[contact_id] = at
    sessions = Session.objects.filter(contact_id__in=ids, started_at__gte=start, started_at__lt=end, bot="")
    for contact_id, at in sessions.values_list("contact_id", "started_at").iterator(chunk_size=20_000):
        if inside(contact_id, at):
            out[contact_id]["sessions"] += 1
    # Engagement decays: entries older than ten half-lives weigh less than a thousandth.
    lookback = timedelta(days=max(window_days, 10 * model.half_life_days))
    engagement: dict[int, float] = defaultdict(float)
    ledger = ScoreEntry.objects.filter(model=model, contact_id__in=ids, kind=ScoreEntry.Kind.ENGAGEMENT,
                                       at__gte=min(cutoffs.values()) - lookback, at__lt=end).exclude(
        engagement_rule__event=STAGE_EVENT)
    for contact_id, at, points in ledger.values_list("contact_id", "at", "points").iterator(chunk_size=20_000):
        cutoff = cutoffs[contact_id]
        if cutoff - lookback <= at < cutoff:
            engagement[contact_id] += decay(points, at, cutoff, model.half_life_days)
    for contact_id, counts in out.items():
        counts["engagement"] = max(engagement.get(contact_id, 0.0), 0.0)
        seen = last.get(contact_id)
        counts["days_since_last_activity"] = (
            (cutoffs[contact_id] - seen).total_seconds() / 86400 if seen else float(window_days))
    return out


def _profile(row: dict[str, Any], company: dict[str, Any] | None, fit: int) -> predictive.Profile:
    company = company or {}
    email = row.get("email") or ""
    domain = email.rpartition("@")[2].lower() if "@" in email else ""
    return {
        "industry": row.get("industry") or company.get("industry") or None,
        "company_size": row.get("company_size") or company.get("company_size") or None,
        "prefecture": row.get("prefecture") or company.get("prefecture") or None,
        "job_title": row.get("job_title") or None,
        "department": (row.get("department") or "").strip() or None,
        "source": row.get("source") or None,
        "free_mail": ("yes" if is_free_mail(domain) else "no") if domain else None,
        "employees": company.get("employees"),
        "fit": fit,
    }


def _features(model: ScoringModel, rows: dict[int, dict], cutoffs: dict[int, datetime], *,
              rules: Sequence[FitRule], window_days: int, undo: dict[int, list[dict]] | None = None,
              all_rules: Sequence[FitRule] | None = None) -> dict[int, tuple]:
    """(profile, behaviour[, fit with every rule]) per contact at its cut-off. `rules` leaves out
    rules on the lifecycle stage: the fit feature must not carry the label."""
    if not cutoffs:
        return {}
    undo = undo or {}
    company_ids = {rows[i]["company_id"] for i in cutoffs if rows[i]["company_id"]}
    companies = {c["id"]: c for c in Company.objects.filter(id__in=company_ids).values("id", *COMPANY_FIELDS)}
    company_history: dict[int, list[tuple]] = {}
    if undo:
        undone_companies = {rows[i]["company_id"] for i in undo if rows[i]["company_id"]}
        company_history = _audit("contacts.company", undone_companies, since=min(cutoffs[i] for i in undo))
    behaviour = _behaviour(model, cutoffs, window_days)
    out: dict[int, tuple] = {}
    for contact_id, cutoff in cutoffs.items():
        row = rows[contact_id]
        company = companies.get(row["company_id"])
        if contact_id in undo:
            row = _undo(row, undo[contact_id], CONTACT_FIELDS)
            if company is not None:
                later = [c for at, _action, c in company_history.get(company["id"], []) if at >= cutoff]
                company = _undo(company, later, COMPANY_FIELDS)
        contact = SimpleNamespace(**row, company=SimpleNamespace(**company) if company else None)
        fit, _reasons = fit_of(model, contact, list(rules))
        features: tuple = (_profile(row, company, fit), behaviour[contact_id])
        if all_rules is not None:
            features += (fit_of(model, contact, list(all_rules))[0],)
        out[contact_id] = features
    return out


def _feature_rules(model: ScoringModel) -> list[FitRule]:
    return [r for r in model.fit_rules.all() if r.field != "lifecycle_stage"]


def build_examples(model: ScoringModel, target: str, *, window_days: int = 90, now: datetime | None = None,
                   progress: ProgressFn | None = None) -> Dataset:
    """Every contact on the funnel (stage "other" is not on it) as one example, labelled by
    whether it reached `target`."""
    now = now or timezone.now()
    wanted = set(stages_from(target))
    ids = list(Contact.objects.filter(lifecycle_stage__in=STAGES).order_by("id").values_list("id", flat=True))
    if len(ids) > MAX_EXAMPLES:
        ids = sorted(random.Random(SEED).sample(ids, MAX_EXAMPLES))
    first_event = Event.objects.order_by("occurred_at").values_list("occurred_at", flat=True).first()
    tracked_since = first_event or now
    rules = _feature_rules(model)
    window = timedelta(days=window_days)
    data = Dataset(examples=[])
    for done, chunk in enumerate(_chunks(ids, CHUNK)):
        rows = {r["id"]: r for r in Contact.objects.filter(id__in=chunk).values(*_COLUMNS)}
        at_stage = [i for i in rows if rows[i]["lifecycle_stage"] in wanted]
        dated = reached(at_stage, target)
        data.n_undated += len(at_stage) - len(dated)
        untracked = {i for i, (at, _changes) in dated.items() if at - window < tracked_since}
        data.n_untracked += len(untracked)
        positives = {i: at for i, (at, _changes) in dated.items() if i not in untracked}
        negatives = {i: now for i in rows if rows[i]["lifecycle_stage"] not in wanted}
        features = _features(model, rows, negatives, rules=rules, window_days=window_days)
        features.update(_features(model, rows, positives, rules=rules, window_days=window_days,
                                  undo={i: dated[i][1] for i in positives}))
        for contact_id in sorted(features):
            profile, behaviour = features[contact_id]
            data.examples.append(predictive.Example(profile, behaviour, contact_id in positives))
            data.contact_ids.append(contact_id)
        if progress:
            progress("reading", min((done + 1) * CHUNK, len(ids)), len(ids))
    return data


# --- scores ------------------------------------------------------------------------------------

_UPSERT_PG = """
INSERT INTO scoring_contactscore (model_id, contact_id, fit, grade, engagement, engagement_at, rank_key, hot,
                                  updated_at, predicted)
SELECT %b, c, f, g, 0, %b, -1e9, false, %b, p
FROM unnest(%b::bigint[], %b::integer[], %b::varchar[], %b::float8[]) AS t(c, f, g, p)
ON CONFLICT (model_id, contact_id) DO UPDATE SET predicted = EXCLUDED.predicted
"""
_UPSERT_SQLITE = """
INSERT INTO scoring_contactscore (model_id, contact_id, fit, grade, engagement, engagement_at, rank_key, hot,
                                  updated_at, predicted)
VALUES (%s, %s, %s, %s, 0, %s, -1e9, 0, %s, %s)
ON CONFLICT (model_id, contact_id) DO UPDATE SET predicted = excluded.predicted
"""


def _write(model_id: int, ids: list[int], fits: list[int], grades: list[str], predicted: list[float],
           now: datetime) -> None:
    """One statement per chunk; a contact without a score row gets one with its fit (engagement 0)."""
    with sqlite_writer(), transaction.atomic():
        if connection.vendor == "postgresql":
            execute_arrays(_UPSERT_PG, [model_id, now, now, ids, fits, grades, predicted])
            return
        stamp = connection.ops.adapt_datetimefield_value(now)
        with connection.cursor() as cursor:
            cursor.executemany(_UPSERT_SQLITE, [(model_id, i, f, g, stamp, stamp, p) for i, f, g, p in
                                                zip(ids, fits, grades, predicted, strict=True)])


def clear_predictions(model: ScoringModel) -> int:
    with sqlite_writer(), transaction.atomic():
        return ContactScore.objects.filter(model=model, predicted__isnull=False).update(predicted=None)


def score_contacts(pm: PredictiveModel, trained: predictive.TrainedModel, *, now: datetime | None = None,
                   progress: ProgressFn | None = None) -> int:
    """Writes the chance of reaching the stage for every contact still before it, in chunks; the
    others (already there, or off the funnel) get none."""
    now = now or timezone.now()
    model = pm.model
    before = stages_before(pm.trained_stage or pm.target_stage)
    rules, all_rules = _feature_rules(model), list(model.fit_rules.all())
    contacts = Contact.objects.filter(lifecycle_stage__in=before)
    total, done, last_id = contacts.count(), 0, 0
    while True:
        rows = {r["id"]: r for r in contacts.filter(id__gt=last_id).order_by("id").values(*_COLUMNS)[:CHUNK]}
        if not rows:
            break
        last_id = max(rows)
        features = _features(model, rows, dict.fromkeys(rows, now), rules=rules, window_days=pm.window_days,
                             all_rules=all_rules)
        ids = list(features)
        chances = trained.probabilities([(features[i][0], features[i][1]) for i in ids])
        fits = [features[i][2] for i in ids]
        _write(model.pk, ids, fits, [model.grade(f) for f in fits], [round(p, 6) for p in chances], now)
        done += len(ids)
        if progress:
            progress("scoring", done, total)
    with sqlite_writer(), transaction.atomic():
        ContactScore.objects.filter(model=model, predicted__isnull=False).exclude(
            contact__lifecycle_stage__in=before).update(predicted=None)
    return done


# --- training ----------------------------------------------------------------------------------


def _progress_key(pk: int) -> str:
    return f"kizuna:predictive-progress:{pk}"


def _reporter(pk: int) -> ProgressFn:
    def report(phase: str, done: int, total: int) -> None:
        cache.set(_progress_key(pk), {"phase": phase, "done": done, "total": total, "at": time.time()}, 3600)

    return report


def _claim(pm: PredictiveModel, now: datetime, *, queued_only: bool) -> bool:
    rows = PredictiveModel.objects.filter(pk=pm.pk)
    if queued_only:
        rows = rows.filter(status=PredictiveModel.Status.QUEUED)
    else:
        rows = rows.exclude(status=PredictiveModel.Status.TRAINING, started_at__gt=now - STALE_AFTER)
    claimed = rows.update(status=PredictiveModel.Status.TRAINING, started_at=now, error="")
    pm.refresh_from_db()
    return bool(claimed)


def request_training(pm: PredictiveModel, *, now: datetime | None = None) -> None:
    """Queues a training for the worker, once: a second click while one waits or runs is refused."""
    from kizuna.scoring.tasks import train_predictive

    now = now or timezone.now()
    if pm.pk is None:
        pm.save()
    busy = (Q(status=PredictiveModel.Status.QUEUED, queued_at__gt=now - STALE_AFTER)
            | Q(status=PredictiveModel.Status.TRAINING, started_at__gt=now - STALE_AFTER))
    if not PredictiveModel.objects.filter(pk=pm.pk).exclude(busy).update(
            status=PredictiveModel.Status.QUEUED, queued_at=now):
        raise AlreadyTraining(pm.pk)
    pm.refresh_from_db()
    cache.delete(_progress_key(pm.pk))
    transaction.on_commit(lambda: train_predictive.enqueue(pm.pk))


def run_queued(pk: int) -> PredictiveModel | None:
    """The background task's body: trains if the model is still waiting for it."""
    pm = PredictiveModel.objects.select_related("model").filter(pk=pk).first()
    if pm is None or not _claim(pm, timezone.now(), queued_only=True):
        return pm
    return train(pm, claimed=True)


_SETTINGS = {"id", "model", "target_stage", "retrain_days", "window_days", "queued_at"}


def _save_outcome(pm: PredictiveModel, stage: str) -> None:
    """Saves what the training found, never the settings: they may have been changed meanwhile.
    A target stage changed during the training makes its outcome answer the old question."""
    current = PredictiveModel.objects.filter(pk=pm.pk).values_list("target_stage", flat=True).first()
    if current is not None and current != stage:
        clear_predictions(pm.model)
        _forget(pm)
    pm.save(update_fields=[f.name for f in PredictiveModel._meta.concrete_fields if f.name not in _SETTINGS])


def train(pm: PredictiveModel, *, now: datetime | None = None, claimed: bool = False) -> PredictiveModel:
    """Builds the examples, trains, stores the outcome and writes the scores (or clears them when
    the model is refused or not useful). Runs in this process."""
    now = now or timezone.now()
    if pm.pk is None:
        pm.save()
    if not claimed and not _claim(pm, now, queued_only=False):
        raise AlreadyTraining(pm.pk)
    report = _reporter(pm.pk)
    stage = pm.target_stage
    try:
        data = build_examples(pm.model, stage, window_days=pm.window_days, now=now, progress=report)
        report("training", 0, 1)
        try:
            trained = predictive.train(data.examples, seed=SEED, trained_at=now)
        except predictive.NotEnoughData as exc:
            clear_predictions(pm.model)
            _forget(pm)
            pm.status, pm.attempted_at = PredictiveModel.Status.REFUSED, timezone.now()
            pm.n_examples, pm.n_positive = exc.n_positive + exc.n_negative, exc.n_positive
            pm.n_left_out = data.n_left_out
            pm.detail = {"n_positive": exc.n_positive, "n_negative": exc.n_negative,
                         "min_examples": exc.min_examples, "min_per_class": exc.min_per_class,
                         "undated": data.n_undated, "untracked": data.n_untracked, "stage": stage,
                         "window_days": pm.window_days}
            _save_outcome(pm, stage)
            return pm
        pm.trained_stage = stage
        n_scored = score_contacts(pm, trained, now=now, progress=report) if trained.useful else 0
        if not trained.useful:
            clear_predictions(pm.model)
        pm.status = PredictiveModel.Status.TRAINED
        pm.attempted_at, pm.trained_at = timezone.now(), now
        pm.n_examples, pm.n_positive, pm.n_left_out = trained.n_examples, trained.n_positive, data.n_left_out
        pm.n_scored = n_scored
        pm.auc, pm.cv_auc_mean, pm.cv_auc_std = trained.auc, trained.cv_auc_mean, trained.cv_auc_std
        pm.useful = trained.useful
        pm.verdict = predictive.verdict_kind(trained.auc, trained.useful)
        pm.factors = [{"name": f.name, "direction": f.direction, "weight": f.weight} for f in trained.factors]
        pm.trained_model = trained.to_bytes()
        pm.detail = {"undated": data.n_undated, "untracked": data.n_untracked, "window_days": pm.window_days}
        pm.error = ""
        _save_outcome(pm, stage)
    except Exception as exc:
        log.exception("training the predictive score of %s failed", pm.model)
        clear_predictions(pm.model)
        pm.status, pm.attempted_at, pm.useful = PredictiveModel.Status.FAILED, timezone.now(), False
        pm.error = str(exc)[:2000] or type(exc).__name__
        pm.save(update_fields=["status", "attempted_at", "useful", "error"])
    finally:
        cache.delete(_progress_key(pm.pk))
    return pm


def retrain_due(now: datetime | None = None) -> list[PredictiveModel]:
    """Trains, here and now, every model of an active scoring model whose last training (of any
    outcome) is older than its interval; models retrained by hand only (0 days) are left alone."""
    now = now or timezone.now()
    done = []
    for pm in PredictiveModel.objects.filter(model__active=True, retrain_days__gt=0).select_related("model"):
        if pm.attempted_at is not None and pm.attempted_at + timedelta(days=pm.retrain_days) > now:
            continue
        if not _claim(pm, now, queued_only=False):
            continue
        done.append(train(pm, now=now, claimed=True))
    return done


def run(stop: threading.Event, every_seconds: float = SCHEDULE_SECONDS) -> None:
    """The worker's schedule loop for retraining."""
    repeat(stop, retrain_due, idle_seconds=every_seconds, what="scheduled retraining", steady=True)


# --- words for the page and the command --------------------------------------------------------


def progress(pm: PredictiveModel) -> dict[str, Any]:
    """{done, percent, text} for the progress box."""
    Status = PredictiveModel.Status
    if pm.status not in (Status.QUEUED, Status.TRAINING):
        return {"done": True, "percent": 100, "text": pm.get_status_display(), "status": pm.status}
    if pm.status == Status.QUEUED:
        return {"done": False, "percent": 0, "text": _("Queued: waiting for a worker to start."),
                "status": pm.status}
    live = cache.get(_progress_key(pm.pk)) or {}
    phase, done, total = live.get("phase", "reading"), live.get("done", 0), max(live.get("total", 0), 1)
    if phase == "reading":
        percent = 45 * done / total
        text = _("Reading contacts: %(done)s of %(total)s") % {"done": f"{done:,}", "total": f"{total:,}"}
    elif phase == "training":
        percent, text = 50, _("Training and checking on contacts held out…")
    else:
        percent = 60 + 40 * done / total
        text = _("Writing scores: %(done)s of %(total)s") % {"done": f"{done:,}", "total": f"{total:,}"}
    return {"done": False, "percent": round(percent), "text": text, "status": pm.status}


def verdict_text(pm: PredictiveModel) -> str:
    if pm.auc is None:
        return ""
    values = {"auc": f"{pm.auc:.2f}", "mean": f"{pm.cv_auc_mean or 0:.2f}", "std": f"{pm.cv_auc_std or 0:.2f}",
              "stage": stage_label(pm.trained_stage)}
    texts = {
        "strong": _("Holdout AUC %(auc)s: the model tells the contacts who reach %(stage)s from the others well. "
                    "Its score is used."),
        "moderate": _("Holdout AUC %(auc)s: the model tells the contacts who reach %(stage)s from the others "
                      "moderately. Its score is used, as a hint."),
        "unstable": _("Holdout AUC %(auc)s, but it varies across the training data (cross-validated "
                      "%(mean)s ± %(std)s): the model is not useful yet and its score is not used. More history "
                      "will help."),
        "chance": _("Holdout AUC %(auc)s: no better than chance. The model is not useful and its score is not "
                    "used."),
        "weak": _("Holdout AUC %(auc)s: too weak to rank leads. The model is not useful and its score is not used."),
    }
    return texts.get(pm.verdict, "") % values


def left_out_text(pm: PredictiveModel) -> list[str]:
    detail, out = pm.detail or {}, []
    if detail.get("undated"):
        out.append(_("%(n)s contacts at the stage were left out: nothing records when they got there (set by an "
                     "import, or already there when first recorded).") % {"n": f"{detail['undated']:,}"})
    if detail.get("untracked"):
        out.append(_("%(n)s contacts were left out because they got there before %(days)s days of activity had "
                     "been tracked.") % {"n": f"{detail['untracked']:,}", "days": detail.get("window_days", "")})
    return out


def refusal_text(pm: PredictiveModel) -> str:
    detail = pm.detail or {}
    if pm.status != PredictiveModel.Status.REFUSED or "n_positive" not in detail:
        return ""
    positive, negative = detail["n_positive"], detail["n_negative"]
    return _("Not enough data to train: %(n)s contacts, %(positive)s of whom reached %(stage)s and %(negative)s "
             "did not. At least %(min)s contacts are needed, with at least %(per)s on each side.") % {
        "n": f"{positive + negative:,}", "positive": f"{positive:,}", "negative": f"{negative:,}",
        "stage": stage_label(detail.get("stage", pm.target_stage)), "min": detail["min_examples"],
        "per": detail["min_per_class"]}


_FEATURES = {
    "industry": gettext_lazy("Industry"), "company_size": gettext_lazy("Company size"),
    "prefecture": gettext_lazy("Prefecture"), "seniority": gettext_lazy("Seniority"),
    "department": gettext_lazy("Department"), "source": gettext_lazy("Source"),
    "free_mail": gettext_lazy("Free mail address"), "employees": gettext_lazy("Employees"),
    "fit": gettext_lazy("Fit points"), "sessions": gettext_lazy("Visits"), "page_views": gettext_lazy("Page views"),
    "pricing_views": gettext_lazy("Pricing page views"), "form_submits": gettext_lazy("Forms submitted"),
    "downloads": gettext_lazy("Downloads"), "email_opens_human": gettext_lazy("Email opens by people"),
    "email_clicks_human": gettext_lazy("Email clicks by people"),
    "days_since_last_activity": gettext_lazy("Days since last activity"), "engagement": gettext_lazy("Engagement"),
}
_SENIORITY = {"executive": gettext_lazy("executive"), "manager": gettext_lazy("manager"),
              "lead": gettext_lazy("team lead"), "staff": gettext_lazy("staff")}


def _value_label(feature: str, value: str) -> str:
    if value == predictive.MISSING:
        return _("(empty)")
    if value == "(other)":
        return _("(other)")
    if feature == "prefecture":
        names = PREFECTURE_JA if translation.get_language() == "ja" else PREFECTURE_EN
        return names.get(value, value)
    choices: dict[str, Any] = {
        "industry": dict(Industry.choices), "company_size": dict(CompanySize.choices),
        "source": dict(Source.choices), "seniority": _SENIORITY,
        "free_mail": {"yes": _("yes"), "no": _("no")},
    }.get(feature, {})
    return str(choices.get(value, value))


def describe_factor(factor: dict[str, Any]) -> dict[str, Any]:
    """A factor as the page shows it: "Industry = Manufacturing", "Pricing page views"."""
    name = str(factor.get("name", ""))
    if " = " in name:
        feature, value = name.split(" = ", 1)
        label = f"{_FEATURES.get(feature, feature)} = {_value_label(feature, value)}"
    else:
        feature = name.removesuffix(" (log)")
        label = str(_FEATURES.get(feature, feature))
    return {"label": label, "name": name, "raises": factor.get("direction") == "+",
            "weight": abs(float(factor.get("weight") or 0))}
