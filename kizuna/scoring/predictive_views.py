"""The predictive model page of a scoring model: its settings, the Train button, and how good the
last training turned out. The work is in predictive_service.py."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _

from kizuna.accounts import audit
from kizuna.accounts.permissions import capability_required
from kizuna.scoring import predictive_service as service
from kizuna.scoring.models import PredictiveModel, ScoringModel


def _settings_from(request) -> dict:
    try:
        return {"target_stage": request.POST.get("target_stage", ""),
                "retrain_days": int(request.POST.get("retrain_days", "").strip()),
                "window_days": int(request.POST.get("window_days", "").strip())}
    except ValueError:
        raise ValueError(_("Enter whole numbers of days.")) from None


@capability_required("scoring.manage")
def predictive_page(request, pk: int):
    model = get_object_or_404(ScoringModel, pk=pk)
    pm = service.settings_for(model)
    error = ""
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "settings":
                values = _settings_from(request)
                before = {k: getattr(pm, k) for k in values}
                if service.update_settings(pm, **values):
                    messages.info(request, _("The target stage changed: the previous model and its scores were "
                                             "discarded. Train again."))
                audit.record(request.user, "update", pm, changes=audit.diff(before, values))
                messages.success(request, _("Saved."))
            elif action == "train":
                with transaction.atomic():
                    service.request_training(pm)
                    audit.record(request.user, "train", pm)
                messages.success(request, _("Training started in the background; this page shows the outcome "
                                            "when it is done."))
            return redirect("scoring:predictive", pk=model.pk)
        except service.AlreadyTraining:
            error = _("A training of this model is already waiting or running.")
        except ValueError as exc:
            error = str(exc)
    running = pm.status in (PredictiveModel.Status.QUEUED, PredictiveModel.Status.TRAINING)
    return render(request, "scoring/predictive.html", {
        "model": model, "pm": pm, "error": error, "running": running,
        "progress": service.progress(pm) if running else None,
        "stages": [(s, service.stage_label(s)) for s in service.TARGET_STAGES],
        "trained_stage": service.stage_label(pm.trained_stage) if pm.trained_stage else "",
        "verdict": service.verdict_text(pm), "refusal": service.refusal_text(pm),
        "left_out": service.left_out_text(pm),
        "factors": [service.describe_factor(f) for f in pm.factors or []],
        "positive_rate": round(100 * pm.n_positive / pm.n_examples, 1) if pm.n_examples else None,
        "next_due": pm.attempted_at + timedelta(days=pm.retrain_days) if pm.attempted_at and pm.retrain_days else None,
    })


@capability_required("scoring.manage")
def predictive_progress(request, pk: int):
    pm = get_object_or_404(PredictiveModel, model_id=pk)
    return JsonResponse(service.progress(pm))
