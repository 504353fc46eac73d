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


# Membership and SegmentChange are written in bulk by set-based SQL (a new segment of 100,000
# members writes 200,000 rows), so their foreign keys have no database constraint: PostgreSQL
# checks one row at a time at commit, locking the contact row each time, which cost more than
# the whole rest of a recompute (docs/benchmarks.md). Deleting a contact or a segment still
# deletes their rows (Django cascades); a membership row left by a contact deleted while a
# recompute ran goes at the next recompute. Indexes that a composite index already covers are
# left out too: each costs every row written.


class Membership(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships",
                                db_index=False, db_constraint=False)  # one_membership covers it
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="segment_memberships",
                                db_index=False, db_constraint=False)  # membership_contact covers it
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "contact"], name="one_membership")]
        indexes = [models.Index(fields=["contact", "segment"], name="membership_contact")]


class SegmentChange(models.Model):
    class Kind(models.TextChoices):
        ENTERED = "entered", _("Entered")
        EXITED = "exited", _("Exited")

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes",
                                db_index=False, db_constraint=False)  # segchange_segment_time covers it
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="segment_changes",
                                db_index=False, db_constraint=False)  # segchange_contact_time covers it
    kind = models.CharField(max_length=8, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["segment", "at"], name="segchange_segment_time"),
                   models.Index(fields=["contact", "at"], name="segchange_contact_time")]


class SegmentCount(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="counts",
                                db_index=False)  # one_count_per_day covers it
    day = models.DateField()
    members = models.PositiveIntegerField()

    class Meta:
        ordering = ["day"]
        constraints = [models.UniqueConstraint(fields=["segment", "day"], name="one_count_per_day")]
