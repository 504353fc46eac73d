"""Users (with a role), API keys and the audit log."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .roles import Role


class User(AbstractUser):
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.VIEWER)
    language = models.CharField(
        _("language"),
        max_length=8,
        blank=True,
        choices=[("", _("Browser default"))] + list(settings.LANGUAGES),
        help_text=_("Empty: follow the browser."),
    )
    two_factor_required = models.BooleanField(
        _("two-factor login required"), default=False,
        help_text=_("The user must set up an authenticator app before using Kizuna."),
    )

    def __str__(self) -> str:
        full = f"{self.last_name} {self.first_name}".strip()
        return full or self.username

    @property
    def display_name(self) -> str:
        return str(self)


API_KEY_PREFIX = "kz_"


def hash_secret(secret: str) -> str:
    # Keys are 256-bit random, so a fast hash is enough: no dictionary to attack.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(models.Model):
    """A bearer token acting for a user, limited to its scopes. Only a hash is stored."""

    name = models.CharField(_("name"), max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({API_KEY_PREFIX}{self.prefix}…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def issue(cls, *, user, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
        """Creates a key and returns it with the full token, which is never shown again."""
        prefix = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        key = cls.objects.create(
            user=user, name=name, prefix=prefix, secret_hash=hash_secret(secret), scopes=sorted(scopes)
        )
        return key, f"{API_KEY_PREFIX}{prefix}_{secret}"

    @classmethod
    def authenticate(cls, token: str) -> ApiKey | None:
        if not token.startswith(API_KEY_PREFIX) or token.count("_") < 2:
            return None
        prefix, _sep, secret = token[len(API_KEY_PREFIX) :].partition("_")
        key = cls.objects.select_related("user").filter(prefix=prefix, revoked_at__isnull=True).first()
        if key is None or not secrets.compare_digest(key.secret_hash, hash_secret(secret)):
            return None
        if not key.user.is_active:
            return None
        return key


class AuditLog(models.Model):
    """Who changed what, when: contacts and configuration."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    object_label = models.CharField(max_length=255, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.object_type}#{self.object_id}"


class TwoFactorDevice(models.Model):
    """A user's authenticator app (TOTP, RFC 6238). The shared secret is kept encrypted with a key
    derived from the secret key (see twofactor.py), so a copy of the database alone does not
    give away the second factor. A code is accepted once: `last_step` is the newest time step used."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="two_factor")
    secret = models.TextField(editable=False)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_step = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None


class RecoveryCode(models.Model):
    """A one-time code for when the phone is lost. Only its hash is stored (the codes are random,
    80 bits, so a fast hash is enough, as for API keys)."""

    device = models.ForeignKey(TwoFactorDevice, on_delete=models.CASCADE, related_name="recovery_codes")
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)
