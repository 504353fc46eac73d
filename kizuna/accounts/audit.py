"""Recording changes in the audit log: one function for every app."""

from __future__ import annotations

from typing import Any

from django.db import models

from .models import AuditLog


def _plain(value: Any) -> Any:
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields whose value changed."""
    keys = set(before) | set(after)
    return {
        k: [_plain(before.get(k)), _plain(after.get(k))]
        for k in sorted(keys)
        if _plain(before.get(k)) != _plain(after.get(k))
    }


def record(actor, action: str, obj: models.Model | None = None, *, object_type: str = "",
           object_id: str = "", label: str = "", changes: dict | None = None) -> AuditLog:
    """Writes one audit entry. `actor` may be a user, an API-key user, or None (the system)."""
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        label = label or str(obj)[:255]
    actor_label = ""
    if actor is not None and getattr(actor, "is_authenticated", False):
        actor_label = actor.get_username()
        key_name = getattr(actor, "api_key_name", None)
        if key_name:
            actor_label = f"{actor_label} (API key {key_name})"
    else:
        actor, actor_label = None, "system"
    return AuditLog.objects.create(
        actor=actor, actor_label=actor_label[:150], action=action, object_type=object_type,
        object_id=object_id, object_label=label, changes=changes or {},
    )


def history(obj: models.Model, limit: int = 100):
    return AuditLog.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk))[:limit]
