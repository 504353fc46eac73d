"""Privacy settings and the addresses erased on request."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class EventPolicy(models.TextChoices):
    ANONYMISE = "anonymise", _("Anonymise: keep the counts, remove who it was")
    DELETE = "delete", _("Delete them")


class PrivacySettings(models.Model):
    """One row (pk=1): what erasure does to events, and the retention rules the worker applies."""

    erase_events = models.CharField(
        _("a contact's events when the contact is erased"), max_length=10, choices=EventPolicy.choices,
        default=EventPolicy.ANONYMISE,
        help_text=_("Anonymised events lose the contact, the browser id, IP address, user agent, identifying "
                    "properties and query strings; page and campaign counts stay right."))
    inactive_months = models.PositiveSmallIntegerField(
        _("erase contacts inactive for (months)"), null=True, blank=True,
        help_text=_("No activity, no change and no mail opened or clicked for this long. Empty: never."))
    inactive_events = models.CharField(
        _("their events"), max_length=10, choices=EventPolicy.choices, default=EventPolicy.ANONYMISE)
    event_months = models.PositiveSmallIntegerField(
        _("keep events for (months)"), null=True, blank=True,
        help_text=_("Older events are deleted or anonymised by the worker. Empty: kept."))
    old_events = models.CharField(
        _("older events"), max_length=10, choices=EventPolicy.choices, default=EventPolicy.DELETE)
    operator_name = models.CharField(
        _("who receives the tracked data"), max_length=200, blank=True,
        help_text=_("Your organisation's name, shown on the public page about the tracker. Empty: the address of "
                    "this Kizuna."))
    contact_info = models.CharField(
        _("enquiries about personal data"), max_length=300, blank=True,
        help_text=_("An address, page or phone number for questions and requests, shown on the same page."))
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("privacy settings")

    @classmethod
    def current(cls) -> PrivacySettings:
        obj, _created = cls.objects.get_or_create(pk=1)
        return obj


class ErasedAddress(models.Model):
    """An address erased on request, kept only as a hash (contacts.emails.email_hash) so an import,
    the API or a colleague cannot bring the person back; their own sign-up through a form can."""

    email_hash = models.CharField(max_length=64, unique=True)
    erased_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-erased_at"]
        verbose_name = _("erased address")
