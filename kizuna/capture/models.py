"""Forms and their submissions (docs/decisions/0015-forms.md).

A `Form` is a checked JSON definition (definition.py) behind a public slug. A `Submission` is
stored the moment a visitor's post passes the spam checks and the field validation, and is
acknowledged only then; the contact, consent and actions follow from it in the worker
(processing.py), in one transaction per submission, so an accepted submission is never lost
and never applied twice. `FormCounter` keeps per-day counts of what is not a submission: views
of the form and rejections by reason.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Contact


class Form(models.Model):
    name = models.CharField(_("name"), max_length=150, unique=True)
    slug = models.SlugField(
        _("URL slug"), max_length=80, unique=True,
        help_text=_("The form's public page is /f/<slug>: lower-case letters, digits and hyphens."),
    )
    active = models.BooleanField(
        _("accepting submissions"), default=True,
        help_text=_("Untick to close the form: its pages say so and posts are refused."),
    )
    definition = models.JSONField(_("definition"), default=dict)
    # Plain-HTML codes (copied into other sites) carry a token issued when copied; those issued
    # before this moment are refused ("replace the code").
    plain_html_since = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("form")

    def __str__(self) -> str:
        return self.name

    @property
    def language(self) -> str:
        return (self.definition or {}).get("language") or "ja"


class Submission(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received", _("Received")
        AWAITING = "awaiting", _("Awaiting confirmation")
        CONFIRMED = "confirmed", _("Confirmed")
        PROCESSED = "processed", _("Processed")
        FAILED = "failed", _("Failed")

    form = models.ForeignKey(Form, on_delete=models.CASCADE, related_name="submissions")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    email = models.CharField(max_length=254)  # normalised
    # What the visitor sent, field by field, as shown on the form (escaped wherever displayed).
    values = models.JSONField(default=dict)
    # The values that passed validation, by target: {"contact": {...}, "company": {...}}.
    mapped = models.JSONField(default=dict)
    # The consent boxes shown, with the exact words and their version, and whether ticked.
    consents = models.JSONField(default=list, blank=True)
    context = models.JSONField(default=dict, blank=True)  # where it was embedded (landing page, variant)
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="form_submissions")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    page_url = models.CharField(max_length=2000, blank=True)
    referrer = models.CharField(max_length=2000, blank=True)
    utm = models.JSONField(default=dict, blank=True)
    anonymous_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    confirmed_ip = models.GenericIPAddressField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    error = models.TextField(blank=True)
    notes = models.JSONField(default=list, blank=True)  # what processing did, action by action

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["form", "-created_at"], name="submission_form_time"),
            models.Index(fields=["next_attempt_at"], condition=models.Q(status__in=["received", "confirmed"]),
                         name="submission_due"),
            models.Index(fields=["contact", "-created_at"], name="submission_contact"),
        ]


class FormCounter(models.Model):
    """Views of a form and its rejections by reason, per day (submissions are rows of their own)."""

    VIEW = "view"
    REJECTED = ("honeypot", "too_fast", "rate_limited", "disposable", "bad_token", "origin")

    form = models.ForeignKey(Form, on_delete=models.CASCADE, related_name="counters", db_index=False)
    day = models.DateField()
    kind = models.CharField(max_length=20)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["form", "day", "kind"], name="form_counter_unique")]
