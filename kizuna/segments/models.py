"""Segments: a filter (see filters.py) and its materialised membership, kept current.

`Membership` holds who is in a segment now; `SegmentChange` records every entry and exit once
(the same transaction that changes the membership writes it), which journeys trigger on.
`SegmentCount` keeps one count per day for the growth chart.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Contact


class Segment(models.Model):
    name = models.CharField(_("name"), max_length=150, unique=True)
    description = models.CharField(_("description"), max_length=500, blank=True)
    filter = models.JSONField(_("filter"), default=dict)
    # What can change the result (filters.triggers): fields, events, email, segments, windowed.
    triggers = models.JSONField(default=dict, blank=True)
    member_count = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)
    compute_ms = models.PositiveIntegerField(null=True, blank=True)
    needs_full = models.BooleanField(default=True)  # a full recompute is due (new, edited, bulk change)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("segment")

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="segment_memberships")
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "contact"], name="one_membership")]
        indexes = [models.Index(fields=["contact", "segment"], name="membership_contact")]


class SegmentChange(models.Model):
    class Kind(models.TextChoices):
        ENTERED = "entered", _("Entered")
        EXITED = "exited", _("Exited")

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="segment_changes")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["segment", "at"], name="segchange_segment_time"),
                   models.Index(fields=["contact", "at"], name="segchange_contact_time")]


class SegmentCount(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="counts")
    day = models.DateField()
    members = models.PositiveIntegerField()

    class Meta:
        ordering = ["day"]
        constraints = [models.UniqueConstraint(fields=["segment", "day"], name="one_count_per_day")]
