"""First-run defaults for tracking: the settings row and one write key for the website."""

from __future__ import annotations

from django.utils.translation import gettext as _

from kizuna.events.models import TrackingSettings, WriteKey


def ensure_tracking_defaults() -> WriteKey | None:
    """Returns the write key it created, or None when one already existed."""
    TrackingSettings.load()
    if WriteKey.objects.exists():
        return None
    return WriteKey.objects.create(name=_("Website"))
