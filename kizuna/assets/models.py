"""Downloadable assets (whitepapers, case studies, price lists) and every download of them.

The file itself lives under the data dir with a random storage name (see storage.py); the row
keeps what the uploader may see (display name, sniffed kind, size, SHA-256). Replacing the file
changes those fields only: the asset's id, slug and public key, and so every link already sent,
stay valid. Gated links are signed per contact (links.py); a public asset also has a public link.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Contact

SLUG_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?"


def new_public_key() -> str:
    return secrets.token_urlsafe(12)


class Asset(models.Model):
    name = models.CharField(_("title"), max_length=200)
    slug = models.CharField(
        _("merge-tag name"), max_length=80, unique=True,
        validators=[RegexValidator(f"^{SLUG_PATTERN}$", _("Use lower-case letters, digits and hyphens only."))],
        help_text=_("Used in email templates: asset_url('this-name'). It cannot change once saved."),
    )
    description = models.TextField(_("description"), blank=True)
    file_name = models.CharField(_("file name"), max_length=200)
    file_type = models.CharField(_("type"), max_length=8)  # a key of sniffing.KINDS
    charset = models.CharField(max_length=16, blank=True)  # text files
    size = models.BigIntegerField(_("size"))
    sha256 = models.CharField("SHA-256", max_length=64)
    storage_name = models.CharField(max_length=32, unique=True, editable=False)
    public = models.BooleanField(
        _("public link"), default=False,
        help_text=_("Anyone with the public link may download it. Off: only through personal links sent by email."),
    )
    public_key = models.CharField(max_length=32, unique=True, default=new_public_key, editable=False)
    link_days = models.PositiveSmallIntegerField(
        _("personal links expire after (days)"), default=7,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
    )
    delivery_template = models.ForeignKey(
        "messaging.EmailTemplate", verbose_name=_("delivery mail"), null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("The mail that sends the download link. Empty: Kizuna's built-in mail in Japanese or English."),
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    file_updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("asset")

    def __str__(self) -> str:
        return self.name


class Download(models.Model):
    """One download as it happened. Machine fetches (link scanners, prefetch) are kept and flagged,
    and counted apart, like machine clicks."""

    class Via(models.TextChoices):
        LINK = "link", _("Personal link")
        PUBLIC = "public", _("Public link")

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="downloads")
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    message = models.ForeignKey("messaging.Message", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    anonymous_id = models.CharField(max_length=100, blank=True)
    via = models.CharField(max_length=8, choices=Via.choices)
    at = models.DateTimeField(default=timezone.now)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    machine = models.BooleanField(default=False)
    reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["asset", "-at"], name="download_asset_time"),
                   models.Index(fields=["contact", "-at"], name="download_contact_time")]
