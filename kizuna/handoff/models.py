"""Who gets a hot lead, and how they hear of it.

A lead that turns hot (a `scoring.LeadAlert`) is given an owner by the first matching
`SalesRoute` (territory by prefecture, region or industry, round robin among its members),
unless it already has one or its company has one. The owner is told by email, and every active
`Webhook` (Slack, Teams or any URL) gets a signed POST. Each of those is a `Delivery` row, sent
by the worker and retried with backoff, so a down endpoint never loses an alert.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kizuna.scoring.models import LeadAlert


class HandoffSettings(models.Model):
    """One row: how owners are chosen when a lead turns hot."""

    keep_existing_owner = models.BooleanField(_("keep a contact's existing owner"), default=True)
    use_company_owner = models.BooleanField(_("give it to the company's owner when there is one"), default=True)
    email_owner = models.BooleanField(_("email the owner"), default=True)
    fallback_email = models.EmailField(
        _("when no owner can be found, email"), blank=True,
        help_text=_("For example the inside-sales team's shared address."))

    class Meta:
        verbose_name = _("hand-off settings")

    @classmethod
    def current(cls) -> HandoffSettings:
        return cls.objects.order_by("pk").first() or cls.objects.create()


class SalesRoute(models.Model):
    """A territory: contacts whose field value is in `values` go to its members in turn."""

    class Field(models.TextChoices):
        ANY = "", _("Any contact")
        PREFECTURE = "prefecture", _("Prefecture")
        REGION = "region", _("Region")
        INDUSTRY = "industry", _("Industry")

    name = models.CharField(_("name"), max_length=100)
    field = models.CharField(_("when"), max_length=16, choices=Field.choices, blank=True)
    values = models.CharField(_("is one of"), max_length=500, blank=True,
                              help_text=_("Codes separated by commas, e.g. 13,14 or kanto or manufacturing."))
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="sales_routes",
                                     verbose_name=_("sales people (in turn)"))
    position = models.PositiveIntegerField(default=0)
    turn = models.PositiveIntegerField(default=0)  # round-robin cursor

    class Meta:
        ordering = ["position", "id"]
        verbose_name = _("sales route")

    def __str__(self) -> str:
        return self.name

    def value_list(self) -> list[str]:
        return [v.strip() for v in self.values.split(",") if v.strip()]


class Webhook(models.Model):
    class Kind(models.TextChoices):
        SLACK = "slack", "Slack"
        TEAMS = "teams", "Microsoft Teams"
        JSON = "json", _("Any URL (signed JSON)")

    name = models.CharField(_("name"), max_length=100)
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices, default=Kind.JSON)
    url = models.URLField(_("URL"), max_length=1000)
    secret = models.CharField(_("signing secret"), max_length=100)
    language = models.CharField(_("language"), max_length=8, choices=settings.LANGUAGES, default="ja")
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("webhook")

    def __str__(self) -> str:
        return self.name


class Delivery(models.Model):
    """One notice to one place, retried until sent or given up: a hot lead's alert, or a journey's
    alert or webhook step (no alert; `payload` says it all, `key` is the step's idempotency key)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed (gave up)")

    alert = models.ForeignKey(LeadAlert, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    contact = models.ForeignKey("contacts.Contact", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="+")
    event = models.CharField(max_length=40, default="lead.hot")
    subject = models.CharField(max_length=300, blank=True)
    payload = models.JSONField(null=True, blank=True)
    key = models.CharField(max_length=150, null=True, blank=True, unique=True)
    webhook = models.ForeignKey(Webhook, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    email = models.EmailField(blank=True)  # set for an email notice
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    @property
    def channel(self) -> str:
        return self.webhook.name if self.webhook_id else self.email


class Handoff(models.Model):
    """Who a hot lead went to, and why that person (shown with the alert)."""

    class How(models.TextChoices):
        EXISTING = "existing", _("already the owner")
        COMPANY = "company", _("owner of the company")
        ROUTE = "route", _("sales route")
        NONE = "none", _("no owner found")

    alert = models.OneToOneField(LeadAlert, on_delete=models.CASCADE, related_name="handoff")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="handoffs")
    how = models.CharField(max_length=10, choices=How.choices)
    route = models.ForeignKey(SalesRoute, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
