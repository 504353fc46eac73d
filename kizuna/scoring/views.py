"""Scoring pages: the score section of a contact (history chart, reasons), hot leads, and the
rules editor with "try on this contact". The work is in engine.py and rules.py."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts import audit
from kizuna.accounts.permissions import capability_required
from kizuna.contacts.merge import STAGE_ORDER
from kizuna.contacts.models import Contact, LifecycleStage
from kizuna.contacts.panels import register_contact_panel
from kizuna.events.models import Event
from kizuna.scoring import engine, rescoring
from kizuna.scoring.models import (
    ContactScore,
    EngagementRule,
    FitRule,
    LeadAlert,
    PredictiveModel,
    RescoreRun,
    ScoringModel,
)
from kizuna.scoring.rules import FIT_FIELDS, FIT_OPERATORS, RuleError, check_engagement_rule, check_fit_rule

CHART_W, CHART_H = 560, 120
STAGES = [str(s.value) for s in STAGE_ORDER]


def _chart(points: list[tuple], threshold: float) -> dict:
    """An SVG polyline of the engagement history (no chart library needed for one line)."""
    top = max([v for _t, v in points] + [threshold, 1.0]) * 1.1
    step = CHART_W / max(len(points) - 1, 1)
    coords = " ".join(f"{i * step:.1f},{CHART_H - v / top * CHART_H:.1f}" for i, (_t, v) in enumerate(points))
    return {"points": coords, "threshold_y": f"{CHART_H - threshold / top * CHART_H:.1f}", "w": CHART_W,
            "h": CHART_H, "start": points[0][0], "end": points[-1][0], "top": round(top)}


def _useful_predictive(models) -> dict[int, PredictiveModel]:
    """The predictive models whose score is in use, by scoring model id."""
    return {p.model_id: p for p in PredictiveModel.objects.filter(
        model__in=models, useful=True).exclude(trained_stage="").defer("trained_model")}


def _prediction(predictive: PredictiveModel | None, score: ContactScore | None, contact) -> dict | None:
    if predictive is None:
        return None
    stage = predictive.trained_stage
    reached = stage in STAGES and contact.lifecycle_stage in STAGES[STAGES.index(stage):]
    value = score.predicted if score is not None else None
    return {"stage": LifecycleStage(stage).label if stage in LifecycleStage.values else stage,
            "reached": reached, "percent": None if value is None or reached else round(100 * value),
            "at": predictive.trained_at}


def score_panel(request, contact) -> dict:
    now = timezone.now()
    models = []
    active = list(ScoringModel.objects.filter(active=True))
    predictives = _useful_predictive(active)
    for model in active:
        score = ContactScore.objects.filter(model=model, contact=contact).first()
        fit, fit_reasons = engine.fit_of(model, contact)
        models.append({
            "model": model, "score": score, "fit": fit, "grade": model.grade(fit), "fit_reasons": fit_reasons,
            "engagement": round(engine.current_of(model, score, now), 1),
            "predicted": _prediction(predictives.get(model.pk), score, contact),
            "chart": _chart(engine.history(model, contact, now=now), model.hot_threshold),
            "reasons": engine.reasons_for(model, contact.pk, now=now, limit=8),
        })
    return {"models": models}


def register_panels() -> None:
    register_contact_panel(30, "scoring/_contact_panel.html", score_panel)


@capability_required("contacts.view")
def hot_leads(request):
    chosen = request.GET.get("model", "")
    model = (ScoringModel.objects.filter(pk=int(chosen)).first() if chosen.isdecimal() and len(chosen) < 18 else None) \
        or ScoringModel.objects.filter(active=True).first()
    rows, band = [], request.GET.get("band", "hot")
    if model is not None:
        engine.cool_down(model)
        scores = ContactScore.objects.filter(model=model).select_related("contact", "contact__owner")
        if band == "hot":
            scores = scores.filter(hot=True)
        else:  # the middle band for inside sales: warm, not hot
            scores = scores.filter(hot=False, rank_key__gt=-1e8)
        now = timezone.now()
        for score in scores.order_by("-rank_key")[:200]:
            value = engine.current_of(model, score, now)
            if band != "hot" and not (model.hot_threshold * 0.3 <= value < model.hot_threshold):
                continue
            rows.append({"score": score, "engagement": round(value, 1),
                         "predicted": None if score.predicted is None else round(100 * score.predicted),
                         "reasons": engine.reasons_for(model, score.contact_id, now=now, limit=5, grouped=True)})
    predictive = _useful_predictive([model]).get(model.pk) if model is not None else None
    return render(request, "scoring/hot_leads.html", {
        "model": model, "models": ScoringModel.objects.all(), "rows": rows[:100], "band": band,
        "predictive": predictive,
        "predictive_stage": LifecycleStage(predictive.trained_stage).label if predictive else "",
        "alerts": LeadAlert.objects.filter(model=model).select_related("contact")[:20] if model else [],
    })


@capability_required("scoring.manage")
def model_list(request):
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name:
            messages.error(request, _("Name the scoring model."))
        elif ScoringModel.objects.filter(name=name).exists():
            messages.error(request, _("A scoring model with this name exists."))
        else:
            model = ScoringModel.objects.create(name=name[:100])
            audit.record(request.user, "create", model)
            return redirect("scoring:model", pk=model.pk)
    return render(request, "scoring/model_list.html", {"models": ScoringModel.objects.all()})


def _int_or_none(value: str):
    value = (value or "").strip()
    return int(value) if value.isdigit() else None


@capability_required("scoring.manage")
def model_detail(request, pk: int):
    model = get_object_or_404(ScoringModel, pk=pk)
    errors: dict[str, str] = {}
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "fit":
                data = {k: request.POST.get(k, "").strip() for k in ("field", "operator", "value", "points")}
                check_fit_rule(data["field"], data["operator"], data["value"], data["points"])
                values = {"field": data["field"], "operator": data["operator"], "value": data["value"],
                          "points": int(data["points"])}
                editing = _rule_being_edited(model.fit_rules, request.POST.get("rule"))
                if editing is not None:
                    FitRule.objects.filter(pk=editing.pk).update(**values)
                else:
                    FitRule.objects.create(model=model, position=model.fit_rules.count(), **values)
            elif action == "engagement":
                raw = request.POST.get("conditions", "").strip() or "[]"
                try:
                    conditions = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise RuleError("conditions", f"not valid JSON: {exc.msg} (line {exc.lineno})") from None
                points, times, days = (request.POST.get(k, "").strip() for k in ("points", "max_times", "per_days"))
                event = request.POST.get("event", "").strip()
                check_engagement_rule(event, conditions, points, times or None, days or None)
                values = {"name": request.POST.get("name", "").strip()[:150] or event, "event": event,
                          "conditions": conditions, "points": int(points), "max_times": _int_or_none(times),
                          "per_days": _int_or_none(days),
                          "include_machine": bool(request.POST.get("include_machine"))}
                editing = _rule_being_edited(model.engagement_rules, request.POST.get("rule"))
                if editing is not None:
                    EngagementRule.objects.filter(pk=editing.pk).update(**values)
                else:
                    EngagementRule.objects.create(model=model, position=model.engagement_rules.count(), **values)
            elif action == "settings":
                before = (model.half_life_days, model.grade_a, model.grade_b, model.grade_c)
                for field in ("half_life_days", "hot_threshold"):
                    value = float(request.POST.get(field, ""))
                    if value <= 0:
                        raise RuleError(field, "must be more than 0")
                    setattr(model, field, value)
                grades = [int(request.POST.get(f"grade_{g}", "")) for g in "abc"]
                if not grades[0] > grades[1] > grades[2]:
                    raise RuleError("grades", "grade A needs more points than B, and B more than C")
                model.grade_a, model.grade_b, model.grade_c = grades
                model.hot_min_grade = request.POST.get("hot_min_grade", "C")[:1]
                model.save()
            elif action in ("delete_fit", "delete_engagement"):
                rules = FitRule if action == "delete_fit" else EngagementRule
                rules.objects.filter(model=model, pk=request.POST.get("rule")).delete()
            audit.record(request.user, "update", model, changes={"action": action})
            messages.success(request, _("Saved."))
            what = _rescore_needed(action, model, before if action == "settings" else None)
            if what:
                rescoring.request(model, what, request.user)
                messages.info(request, _("Every contact is being re-scored in the background with the new rules."))
            return redirect("scoring:model", pk=model.pk)
        except RuleError as exc:
            errors[action or ""] = str(exc)
        except ValueError:
            errors[action or ""] = _("Enter numbers where numbers are asked for.")
    trial = None
    contact_id = request.GET.get("try", "")
    if contact_id.isdigit():
        trial = _try_on(model, get_object_or_404(Contact, pk=contact_id))
    return render(request, "scoring/model_detail.html", {
        "model": model, "fit_rules": model.fit_rules.all(), "engagement_rules": model.engagement_rules.all(),
        "fields": FIT_FIELDS, "operators": sorted(FIT_OPERATORS), "errors": errors, "trial": trial,
        "rescore": _rescore_state(model), "rescore_choices": RescoreRun.What.choices,
        "fit_post": request.POST if "fit" in errors else _edit_form(model, request.GET, "fit"),
        "eng_post": request.POST if "engagement" in errors else _edit_form(model, request.GET, "engagement"),
    })


def _rescore_state(model: ScoringModel) -> dict | None:
    job = RescoreRun.objects.filter(model=model).first()
    if job is None:
        return None
    active = job.status in (RescoreRun.Status.QUEUED, RescoreRun.Status.RUNNING)
    return {"job": job, "active": active and not rescoring.stalled(job), "progress": rescoring.progress(job),
            "seconds": round((job.finished_at - job.started_at).total_seconds(), 1)
            if job.finished_at and job.started_at else None}


def _try_on(model: ScoringModel, contact: Contact) -> dict:
    """What this model would give the contact from their last 200 events, without saving."""
    from kizuna.scoring.rules import EventView, event_matches

    fit, fit_reasons = engine.fit_of(model, contact)
    matched = []
    rules = list(model.engagement_rules.all())
    for event in Event.objects.filter(contact=contact).order_by("-occurred_at")[:200]:
        view = EventView.of(event)
        for rule in rules:
            if event_matches(rule, view):
                matched.append({"at": event.occurred_at, "rule": rule.name, "points": rule.points,
                                "what": event.path or event.name or event.type})
    return {"contact": contact, "fit": fit, "grade": model.grade(fit), "fit_reasons": fit_reasons,
            "matched": matched[:50]}


def _rule_being_edited(rules, pk: str | None):
    """The rule a form edits (its id in `rule`), or None for a new one; another model's rule is
    refused rather than silently turned into a new rule."""
    if not pk:
        return None
    if not str(pk).isdigit() or not rules.filter(pk=pk).exists():
        raise RuleError("rule", "this rule no longer exists: reload the page")
    return rules.get(pk=pk)


def _edit_form(model: ScoringModel, query, kind: str) -> dict:
    """A rule form pre-filled with the rule to edit (?edit_fit=<id> or ?edit_engagement=<id>)."""
    pk = str(query.get(f"edit_{kind}", ""))
    if not pk.isdigit():
        return {}
    if kind == "fit":
        fit = model.fit_rules.filter(pk=pk).first()
        return {} if fit is None else {"rule": fit.pk, "field": fit.field, "operator": fit.operator,
                                       "value": fit.value, "points": fit.points}
    rule = model.engagement_rules.filter(pk=pk).first()
    if rule is None:
        return {}
    return {"rule": rule.pk, "name": rule.name, "event": rule.event,
            "conditions": json.dumps(rule.conditions, ensure_ascii=False), "points": rule.points,
            "max_times": rule.max_times or "", "per_days": rule.per_days or "",
            "include_machine": "on" if rule.include_machine else ""}


def _rescore_needed(action: str, model: ScoringModel, before: tuple | None) -> str:
    """Which scores a change invalidates: fit rules and grade bounds the fit, engagement rules
    and the half-life the engagement."""
    if action in ("fit", "delete_fit"):
        return RescoreRun.What.FIT
    if action in ("engagement", "delete_engagement"):
        return RescoreRun.What.ENGAGEMENT
    if action == "settings" and before is not None:
        half_life = before[0] != model.half_life_days
        grades = before[1:] != (model.grade_a, model.grade_b, model.grade_c)
        if half_life and grades:
            return RescoreRun.What.ALL
        return RescoreRun.What.ENGAGEMENT if half_life else RescoreRun.What.FIT if grades else ""
    return ""


@require_POST
@capability_required("scoring.manage")
def rescore(request, pk: int):
    model = get_object_or_404(ScoringModel, pk=pk)
    what = request.POST.get("what", RescoreRun.What.ALL)
    if what not in RescoreRun.What.values:
        messages.error(request, _("Choose what to re-score: fit, engagement or both."))
    else:
        rescoring.request(model, what, request.user)
        audit.record(request.user, "update", model, changes={"action": f"rescore {what}"})
        messages.success(request, _("Re-scoring queued: the worker goes through every contact in the background."))
    return redirect("scoring:model", pk=model.pk)


@capability_required("scoring.manage")
def rescore_progress(request, pk: int):
    job = RescoreRun.objects.filter(model_id=pk).first()
    if job is None:
        raise Http404
    return JsonResponse(rescoring.progress(job))
