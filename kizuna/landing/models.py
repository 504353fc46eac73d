"""Landing pages: a published page of blocks under /p/<slug>, with A/B variants.

`LandingVisit` is one browser's first-party record on one page: the variant it was shown (the
assignment is sticky because it is a hash of the browser's anonymous id), how often it viewed
the page and when it converted. It is written by the event-processing handler from the page
views the tracker sends, so the figures come from the same pipeline as every other report.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Contact


class LandingPage(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PUBLISHED = "published", _("Published")

    name = models.CharField(_("name"), max_length=150, unique=True)
    slug = models.SlugField(_("address"), max_length=80, unique=True, allow_unicode=False,
                            help_text=_("The page is published at /p/<address>."))
    title = models.CharField(_("page title"), max_length=200)
    description = models.CharField(_("description for search engines"), max_length=300, blank=True)
    language = models.CharField(_("language"), max_length=5, choices=settings.LANGUAGES, default="ja")
    accent_color = models.CharField(_("accent colour"), max_length=7, default="#1f6feb")
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.DRAFT)
    published_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("landing page")

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> str:
        return f"/p/{self.slug}"


class LandingVariant(models.Model):
    """One version of the page's content; visitors are split between variants by weight."""

    page = models.ForeignKey(LandingPage, on_delete=models.CASCADE, related_name="variants")
    key = models.CharField(max_length=8)  # A, B, C… shown in reports and sent with page views
    weight = models.PositiveSmallIntegerField(default=100)  # percent of visitors
    blocks = models.JSONField(default=list)

    class Meta:
        ordering = ["page", "key"]
        constraints = [models.UniqueConstraint(fields=["page", "key"], name="one_landing_variant_key")]

    def __str__(self) -> str:
        return f"{self.page_id}/{self.key}"


class LandingVisit(models.Model):
    page = models.ForeignKey(LandingPage, on_delete=models.CASCADE, related_name="visits")
    variant = models.CharField(max_length=8)
    anonymous_id = models.CharField(max_length=100)
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                db_constraint=False)
    views = models.PositiveIntegerField(default=0)
    first_viewed_at = models.DateTimeField()
    last_viewed_at = models.DateTimeField()
    converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["page", "anonymous_id"], name="one_landing_visit")]
        indexes = [models.Index(fields=["anonymous_id"], name="landing_visit_anon")]
