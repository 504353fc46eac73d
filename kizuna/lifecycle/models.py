"""Lifecycle stages: the funnel a contact moves along, and the AIDMA view of it.

The stages themselves are the fixed keys of `contacts.LifecycleStage` (Subscriber → Lead → MQL →
SQL → Opportunity → Customer → Evangelist; imports, the API and merges rely on them); what is
configured here is how they map onto AIDMA, which appear in the funnel, and the rules that move
contacts forward. Every transition is a `StageChange` row (the funnel reads these) and an event
("Lifecycle Stage Changed") in the event log, which scoring rules and journeys can react to.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from kizuna.contacts.models import Contact, LifecycleStage
from kizuna.scoring.models import ScoringModel


class Aidma(models.TextChoices):
    ATTENTION = "attention", pgettext_lazy("AIDMA", "Attention")
    INTEREST = "interest", pgettext_lazy("AIDMA", "Interest")
    DESIRE = "desire", pgettext_lazy("AIDMA", "Desire")
    MEMORY = "memory", pgettext_lazy("AIDMA", "Memory")
    ACTION = "action", pgettext_lazy("AIDMA", "Action")


DEFAULT_AIDMA = {
    LifecycleStage.SUBSCRIBER: Aidma.ATTENTION, LifecycleStage.LEAD: Aidma.INTEREST,
    LifecycleStage.MQL: Aidma.DESIRE, LifecycleStage.SQL: Aidma.DESIRE,
    LifecycleStage.OPPORTUNITY: Aidma.MEMORY, LifecycleStage.CUSTOMER: Aidma.ACTION,
    LifecycleStage.EVANGELIST: Aidma.ACTION,
}


class StageSetting(models.Model):
    key = models.CharField(_("stage"), max_length=16, choices=LifecycleStage.choices, unique=True)
    aidma = models.CharField(_("AIDMA phase"), max_length=10, choices=Aidma.choices, blank=True)
    in_funnel = models.BooleanField(_("shown in the funnel"), default=True)

    class Meta:
        verbose_name = _("stage setting")


class StageRule(models.Model):
    """Moves a contact forward to `to_stage` when its scores in a model reach the bar."""

    name = models.CharField(_("name"), max_length=150)
    to_stage = models.CharField(_("move to"), max_length=16, choices=LifecycleStage.choices)
    scoring_model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="stage_rules",
                                      verbose_name=_("scoring model"))
    min_engagement = models.FloatField(_("when engagement reaches"))
    min_grade = models.CharField(_("and fit grade is at least"), max_length=1, default="D",
                                 choices=[("A", "A"), ("B", "B"), ("C", "C"), ("D", "D")])
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["scoring_model", "min_engagement", "id"]
        verbose_name = _("stage rule")

    def __str__(self) -> str:
        return self.name


class StageChange(models.Model):
    class Via(models.TextChoices):
        RULE = "rule", _("Rule")
        MANUAL = "manual", _("By hand")
        API = "api", _("API")
        IMPORT = "import", _("Import")
        FORM = "form", _("Form")
        EVENT = "event", _("Tracked event")
        JOURNEY = "journey", _("Journey step")

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="stage_changes")
    from_stage = models.CharField(max_length=16, blank=True)
    to_stage = models.CharField(max_length=16)
    at = models.DateTimeField(default=timezone.now)
    via = models.CharField(max_length=8, choices=Via.choices)
    rule = models.ForeignKey(StageRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")

    class Meta:
        ordering = ["-at", "-id"]
        # The contact is the index's last column so "who reached stage X in a period" (insights'
        # conversions) is read from the index alone.
        indexes = [models.Index(fields=["to_stage", "at", "contact"], name="stagechange_stage_time"),
                   models.Index(fields=["contact", "at"], name="stagechange_contact_time")]
