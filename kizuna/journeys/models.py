"""Journeys: a graph (versioned, immutable once saved) and one durable state machine per
(journey, contact, run). See docs/decisions/0011-journeys.md.

`Enrollment` is the state: which node, in which state, due when. `StepRun` is the execution
log; its unique idempotency key (`enrollment:node:visit`) is written in the same transaction
as the enrollment's move, so a step is recorded exactly when its effects are.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from kizuna.contacts.models import Contact


class Journey(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        LIVE = "live", _("Live")
        PAUSED = "paused", _("Paused")
        ARCHIVED = "archived", _("Archived")

    class Entry(models.TextChoices):
        ONCE = "once", _("Once ever")
        ONE_AT_A_TIME = "one_at_a_time", _("One run at a time")
        EVERY_TIME = "every_time", _("Every time")

    name = models.CharField(_("name"), max_length=150, unique=True)
    description = models.CharField(_("description"), max_length=500, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.DRAFT)
    entry = models.CharField(pgettext_lazy("journey", "entry"), max_length=16, choices=Entry.choices,
                             default=Entry.ONCE)
    # At most one entry in this many days (e.g. a pricing mail at most once in 30 days).
    reentry_days = models.PositiveIntegerField(_("not again within days"), null=True, blank=True)
    # Segment-language trees: leaving on exit, finishing on goal; checked before every step.
    exit_filter = models.JSONField(_("exit when"), null=True, blank=True)
    goal_filter = models.JSONField(_("goal"), null=True, blank=True)
    current = models.ForeignKey("JourneyVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Trigger bookkeeping: the last schedule occurrence or date-trigger day handled.
    trigger_state = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("journey")

    def __str__(self) -> str:
        return self.name


class JourneyVersion(models.Model):
    """An immutable graph: saving a journey makes a new version; enrollments keep theirs."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    graph = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["journey", "number"]
        constraints = [models.UniqueConstraint(fields=["journey", "number"], name="one_journey_version_number")]

    def node(self, node_id: str) -> dict | None:
        return next((n for n in self.graph.get("nodes", []) if n.get("id") == node_id), None)


class Enrollment(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", _("Active")  # due to run its next step at due_at
        WAITING = "waiting", _("Waiting")  # in a wait or wait-for-event until due_at
        DONE = "done", _("Done")
        EXITED = "exited", _("Exited")
        FAILED = "failed", _("Failed")

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="enrollments")
    version = models.ForeignKey(JourneyVersion, on_delete=models.PROTECT, related_name="enrollments")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="journey_enrollments")
    run = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=8, choices=State.choices, default=State.ACTIVE)
    node = models.CharField(max_length=64, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    # Name of the event a wait-for-event node waits for ("" otherwise); the full spec is in context.
    waiting_for = models.CharField(max_length=200, blank=True)
    trigger_key = models.CharField(max_length=200, null=True, blank=True)
    context = models.JSONField(default=dict, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    goal_reached_at = models.DateTimeField(null=True, blank=True)
    entered_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-entered_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "contact", "run"], name="one_enrollment_per_run"),
            models.UniqueConstraint(fields=["journey", "trigger_key"], name="one_enrollment_per_trigger"),
        ]
        indexes = [
            models.Index(fields=["state", "due_at"], name="enrollment_due"),
            models.Index(fields=["contact", "state"], name="enrollment_contact"),
            models.Index(fields=["waiting_for", "contact"], name="enrollment_waiting_for"),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}/{self.contact_id}#{self.run}"


class StepRun(models.Model):
    """One execution of one node by one enrollment; the key makes a second execution impossible."""

    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="steps")
    node = models.CharField(max_length=64)
    key = models.CharField(max_length=120, unique=True)
    outcome = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["enrollment", "at"], name="steprun_enrollment")]


class TriggerCursor(models.Model):
    """How far a reader of an append-only table (segment changes) has got, and the ids below
    that it has not seen yet because their transactions had not committed (gaps)."""

    name = models.CharField(max_length=64, unique=True)
    position = models.BigIntegerField(default=0)
    gaps = models.JSONField(default=dict, blank=True)  # id → first seen missing (ISO time)
    updated_at = models.DateTimeField(default=timezone.now)
