"""A contact's downloads, for export and erasure (kizuna/privacy/registry.py). The download rows
feed the assets' counts, so with the anonymise policy they stay, cut loose from the person (no
contact, browser id, address or user agent); with the delete policy they go."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from kizuna.assets.models import Download
from kizuna.privacy.registry import rows

LABEL = _("Assets")
MODELS = ["assets.Download"]


def _downloads(contact):
    from kizuna.events.personal_data import browser_ids

    return Download.objects.filter(Q(contact=contact) | Q(anonymous_id__in=browser_ids(contact)))


def export(contact) -> dict[str, Any]:
    return {"downloads": rows(_downloads(contact).order_by("at", "id"), "asset__name", "via", "at", "ip",
                              "user_agent", "machine", "anonymous_id")}


def erase(contact, plan) -> dict[str, int]:
    if not plan.anonymise:
        deleted = _downloads(contact).delete()[0]
        return {"downloads_deleted": deleted} if deleted else {}
    changed = _downloads(contact).update(contact=None, anonymous_id="", ip=None, user_agent="")
    return {"downloads_anonymised": changed} if changed else {}
