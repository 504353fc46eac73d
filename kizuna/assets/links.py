"""Personal download links: `/d/<token>`, signed with django.core.signing, with an expiry.

The token holds (asset, contact, message, expiry) and an HMAC under a salt of its own, so it can
be neither forged nor moved to another asset or person, and needs no row per link. The expiry is
inside the signed part rather than checked with `max_age`: an expired link is still known to be
genuine, so its page can offer to send a fresh one to the same contact, while a tampered one is
refused outright. The asset's expiry setting applies to links made after it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core import signing
from django.urls import reverse
from django.utils import timezone

SALT = "kizuna.assets.download-link"
VERSION = 1


class LinkInvalid(ValueError):
    """Not a token this server made (forged, tampered with, cut short)."""


@dataclass(frozen=True)
class Claims:
    asset_id: int
    contact_id: int
    message_id: int | None
    expires_at: datetime

    def expired(self, now: datetime | None = None) -> bool:
        return (now or timezone.now()) >= self.expires_at


def _signer() -> signing.Signer:
    return signing.Signer(salt=SALT)


def make_token(asset_id: int, contact_id: int, *, expires_at: datetime, message_id: int | None = None) -> str:
    return _signer().sign_object([VERSION, asset_id, contact_id, message_id or 0, int(expires_at.timestamp())])


def read_token(token: str) -> Claims:
    """The claims of a genuine token, expired or not; LinkInvalid for anything else."""
    if not token or len(token) > 300:
        raise LinkInvalid("not a download link")
    try:
        data = _signer().unsign_object(token)
    except (signing.BadSignature, ValueError, UnicodeDecodeError) as exc:
        raise LinkInvalid("the signature does not match") from exc
    if (not isinstance(data, list) or len(data) != 5 or data[0] != VERSION
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in data)):
        raise LinkInvalid("unknown link format")
    _version, asset_id, contact_id, message_id, expires = data
    return Claims(asset_id, contact_id, message_id or None, datetime.fromtimestamp(expires, tz=UTC))


def base_url() -> str:
    """Where recipients reach Kizuna: the tracking host when one is set, as for click links."""
    from kizuna.messaging.compose import tracking_base

    return tracking_base()


def expiry_for(asset, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(days=asset.link_days)


def download_url(asset, contact, *, message_id: int | None = None, expires_at: datetime | None = None) -> str:
    """The personal, expiring download link of `asset` for `contact` (absolute URL).

    `message_id` names the mail the link is in (the download is then credited to it);
    `expires_at` defaults to now + the asset's link_days."""
    contact_id = contact if isinstance(contact, int) else contact.pk
    token = make_token(asset.pk, contact_id, expires_at=expires_at or expiry_for(asset), message_id=message_id)
    return base_url() + reverse("assets:download", args=[token])


def public_url(asset) -> str:
    """The public link of an asset (it answers only while the asset is public)."""
    return base_url() + reverse("assets:public_download", args=[asset.public_key])
