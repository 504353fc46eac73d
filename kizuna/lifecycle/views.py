"""The old funnel address (now in Insights), stage settings with stage rules, and the stage panel on a contact."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts import audit
from kizuna.accounts.permissions import capability_required
from kizuna.accounts.roles import can
from kizuna.contacts import services
from kizuna.contacts.models import Contact, LifecycleStage
from kizuna.contacts.panels import register_contact_panel
from kizuna.lifecycle import transitions
from kizuna.lifecycle.models import Aidma, StageRule, StageSetting


class StageRuleForm(forms.ModelForm):
    class Meta:
        model = StageRule
        fields = ["name", "scoring_model", "min_engagement", "min_grade", "to_stage"]

    def clean_to_stage(self):
        stage = self.cleaned_data["to_stage"]
        if stage not in transitions.RANK or transitions.RANK[stage] == 0:
            raise forms.ValidationError(_("Rules move contacts forward: choose a stage after Subscriber."))
        return stage

    def clean_min_engagement(self):
        value = self.cleaned_data["min_engagement"]
        if value <= 0:
            raise forms.ValidationError(_("Use a positive engagement; every contact has at least 0."))
        return value


def stage_panel(request, contact: Contact) -> dict:
    return {"changes": contact.stage_changes.select_related("rule", "actor")[:20],
            "stages": LifecycleStage.choices, "can_change": can(request.user, "contacts.change")}


def register_panels() -> None:
    register_contact_panel(35, "lifecycle/_contact_panel.html", stage_panel)


@capability_required("contacts.view")
def funnel(request):
    """The funnel moved to Insights; old links and bookmarks (with their ?days=N) land there."""
    query = request.GET.urlencode()
    return redirect(reverse("insights:funnel") + (f"?{query}" if query else ""), permanent=True)


@capability_required("scoring.manage")
def stage_settings(request):
    transitions.ensure_defaults()
    settings = {s.key: s for s in StageSetting.objects.all()}
    form = StageRuleForm()
    if request.method == "POST" and request.POST.get("action") == "stages":
        for key, setting in settings.items():
            aidma = request.POST.get(f"aidma-{key}", "")
            setting.aidma = aidma if aidma in Aidma.values else ""
            setting.in_funnel = bool(request.POST.get(f"funnel-{key}"))
            setting.save()
        audit.record(request.user, "update", None, object_type="lifecycle stages")
        messages.success(request, _("Stage settings saved."))
        return redirect("lifecycle:settings")
    if request.method == "POST" and request.POST.get("action") == "rule":
        form = StageRuleForm(request.POST)
        if form.is_valid():
            audit.record(request.user, "create", form.save())
            messages.success(request, _("Stage rule added. It applies from the next score change."))
            return redirect("lifecycle:settings")
    rows = [{"key": s.value, "label": s.label, "setting": settings.get(s.value)} for s in LifecycleStage]
    return render(request, "lifecycle/settings.html", {
        "rows": rows, "aidma": Aidma.choices, "form": form,
        "rules": StageRule.objects.select_related("scoring_model"),
    })


@require_POST
@capability_required("scoring.manage")
def rule_delete(request, pk: int):
    rule = get_object_or_404(StageRule, pk=pk)
    audit.record(request.user, "delete", rule)
    rule.delete()
    return redirect("lifecycle:settings")


@require_POST
@capability_required("contacts.change")
def contact_stage(request, pk: int):
    """The stage picker on a contact: a transition by hand, recorded and audited."""
    contact = get_object_or_404(Contact, pk=pk)
    stage = request.POST.get("stage", "")
    if stage not in LifecycleStage.values:
        messages.error(request, _("Not a lifecycle stage: %(stage)s") % {"stage": stage})
    else:
        services.update_contact(request.user, contact, {"lifecycle_stage": stage}, via="manual")
    return redirect("contacts:detail", pk=contact.pk)
