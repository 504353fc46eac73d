"""Lead scores: fit (who they are) and engagement (what they do), per scoring model.

Engagement decays exponentially with a half-life, so it is kept as a value at a moment
(`engagement`, `engagement_at`) and every past value can be rebuilt exactly from the ledger:
score(t) = Σ points_i · 2^(−(t − t_i) / half_life) over the entries up to t. See
docs/decisions/0008-lead-scoring.md.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Contact
from kizuna.events.models import Event


class ScoringModel(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    description = models.CharField(_("description"), max_length=300, blank=True)
    active = models.BooleanField(_("active"), default=True)
    half_life_days = models.FloatField(_("engagement half-life (days)"), default=30,
                                       help_text=_("After this many days without activity, engagement is halved."))
    grade_a = models.IntegerField(_("fit points for grade A"), default=40)
    grade_b = models.IntegerField(_("fit points for grade B"), default=25)
    grade_c = models.IntegerField(_("fit points for grade C"), default=10)
    hot_threshold = models.FloatField(_("hot when engagement reaches"), default=100)
    hot_min_grade = models.CharField(_("and fit grade is at least"), max_length=1, default="C",
                                     choices=[("A", "A"), ("B", "B"), ("C", "C"), ("D", "D")])
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("scoring model")

    def __str__(self) -> str:
        return self.name

    def grade(self, fit: int) -> str:
        if fit >= self.grade_a:
            return "A"
        if fit >= self.grade_b:
            return "B"
        if fit >= self.grade_c:
            return "C"
        return "D"


class FitRule(models.Model):
    """Points for a profile fact, e.g. industry in (製造業, 情報通信業) +20."""

    model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="fit_rules")
    field = models.CharField(_("field"), max_length=80)
    operator = models.CharField(_("condition"), max_length=16)
    value = models.TextField(_("value"), blank=True)
    points = models.IntegerField(_("points"))
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["model", "position", "id"]


class EngagementRule(models.Model):
    """Points for an event, e.g. a page view whose URL contains /pricing +10, at most 3 a week."""

    model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="engagement_rules")
    name = models.CharField(_("name"), max_length=150)
    event = models.CharField(_("event"), max_length=200,
                             help_text=_("page, identify, or a tracked event's name such as Email Clicked."))
    conditions = models.JSONField(_("conditions"), default=list, blank=True)
    points = models.IntegerField(_("points"))
    max_times = models.PositiveIntegerField(_("at most (times)"), null=True, blank=True)
    per_days = models.PositiveIntegerField(_("per (days)"), null=True, blank=True,
                                           help_text=_("Empty: the limit is for all time."))
    include_machine = models.BooleanField(_("count machine activity"), default=False,
                                          help_text=_("Proxy opens and scanner clicks score nothing unless ticked."))
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["model", "position", "id"]

    def __str__(self) -> str:
        return self.name


class ContactScore(models.Model):
    model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="scores")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="scores")
    fit = models.IntegerField(default=0)
    grade = models.CharField(max_length=1, default="D")
    engagement = models.FloatField(default=0)  # its value at engagement_at; decays after
    engagement_at = models.DateTimeField(default=timezone.now)
    # log2(engagement) + engagement_at / half-life: orders contacts by *current* engagement
    # without recomputing the decay (the current value is 2^(key − now / half-life)).
    rank_key = models.FloatField(default=-1e9, db_index=True)
    hot = models.BooleanField(default=False)
    hot_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    # The third score: the chance (0–1) of reaching the predictive model's target stage, written
    # by its last training; empty when no useful model exists or the contact is already there.
    predicted = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "contact"], name="one_score_per_model")]
        indexes = [models.Index(fields=["model", "hot", "rank_key"], name="score_hot_rank")]


class ScoreEntry(models.Model):
    """The ledger: every change of a score, with the rule and the event that caused it."""

    class Kind(models.TextChoices):
        FIT = "fit", _("Fit")
        ENGAGEMENT = "engagement", _("Engagement")

    model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="score_entries")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    at = models.DateTimeField()
    points = models.IntegerField()
    engagement_rule = models.ForeignKey(EngagementRule, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    rule_name = models.CharField(max_length=200)
    # No database constraint (the event log is partitioned on PostgreSQL); deleting events clears
    # this through the ORM or kizuna.events.partitions.
    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              db_constraint=False)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["contact", "model", "at"], name="ledger_contact"),
                   models.Index(fields=["engagement_rule", "contact", "at"], name="ledger_rule_cap")]
        constraints = [models.UniqueConstraint(fields=["engagement_rule", "event"], name="one_entry_per_rule_event")]


class LeadAlert(models.Model):
    """A contact turned hot in a model: once per turn (it must cool below 80 % of the threshold
    before it can alert again). The reasons are the ledger entries weighing most at that moment."""

    model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="alerts")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="lead_alerts")
    created_at = models.DateTimeField(default=timezone.now)
    engagement = models.FloatField()
    grade = models.CharField(max_length=1)
    reasons = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model", "created_at"], name="alert_model_time")]


class PredictiveModel(models.Model):
    """The predictive score of one scoring model: the stage it predicts, how often it is retrained,
    and the outcome of the last training, judged on contacts the model did not learn from."""

    class Status(models.TextChoices):
        NEW = "new", _("Not trained yet")
        QUEUED = "queued", _("Waiting for the worker")
        TRAINING = "training", _("Training")
        TRAINED = "trained", _("Trained")
        REFUSED = "refused", _("Not enough data")
        FAILED = "failed", _("Failed")

    model = models.OneToOneField(ScoringModel, on_delete=models.CASCADE, related_name="predictive")
    target_stage = models.CharField(_("target stage"), max_length=16, default="customer")
    retrain_days = models.PositiveIntegerField(_("retrain every (days)"), default=7,
                                               help_text=_("0: only when someone asks for it."))
    window_days = models.PositiveIntegerField(_("behaviour window (days)"), default=90,
                                              help_text=_("Activity counted before each contact's cut-off."))
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.NEW)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    attempted_at = models.DateTimeField(null=True, blank=True)  # the last training finished, whatever its outcome
    trained_at = models.DateTimeField(null=True, blank=True)  # the stored model's training
    trained_stage = models.CharField(max_length=16, blank=True)
    n_examples = models.PositiveIntegerField(default=0)
    n_positive = models.PositiveIntegerField(default=0)
    n_left_out = models.PositiveIntegerField(default=0)  # at the stage, but no record of when they got there
    n_scored = models.PositiveIntegerField(default=0)
    auc = models.FloatField(null=True, blank=True)  # on the holdout
    cv_auc_mean = models.FloatField(null=True, blank=True)
    cv_auc_std = models.FloatField(null=True, blank=True)
    useful = models.BooleanField(default=False)
    verdict = models.CharField(max_length=16, blank=True)  # predictive.verdict_kind(); worded when shown
    factors = models.JSONField(default=list, blank=True)  # [{"name", "direction", "weight"}], strongest first
    trained_model = models.BinaryField(null=True, blank=True)  # predictive.TrainedModel.to_bytes()
    # The numbers behind the outcome: contacts left out and why; for a refusal, the counts and minimums.
    detail = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        verbose_name = _("predictive model")

    def __str__(self) -> str:
        return f"{self.model} → {self.target_stage}"


class RescoreRun(models.Model):
    """Re-scoring every contact of a model after its rules changed: a job for the worker, with its
    progress on the row (written after every chunk) so the page can show it and a stalled run is
    visible as such."""

    class What(models.TextChoices):
        FIT = "fit", _("Fit")
        ENGAGEMENT = "engagement", _("Engagement")
        ALL = "all", _("Fit and engagement")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Waiting for the worker")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    model = models.ForeignKey(ScoringModel, on_delete=models.CASCADE, related_name="rescores")
    what = models.CharField(max_length=12, choices=What.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)  # contacts to go through, over all phases
    done = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)  # contacts whose fit, grade or engagement moved
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "status"], name="rescore_model_status")]
