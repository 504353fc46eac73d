"""Personal-data providers: each app says which of its models hold a contact's personal data,
and how to export and erase them. The list is settings.KIZUNA_PERSONAL_DATA (module paths), so
an app added later plugs in with one line there and one module of its own; a test fails while a
model with a contact foreign key belongs to no provider.

A provider module defines:

    LABEL: str                      # its section in the export ("Email", "Web activity")
    MODELS: list[str]               # "app_label.Model" it is responsible for
    def export(contact) -> dict     # JSON-ready (plain values; datetimes become ISO text)
    def erase(contact, plan) -> dict[str, int]
        # runs inside the erasure's transaction, before the contact row is deleted; removes or
        # anonymises what would otherwise survive the delete (SET_NULL rows, copies of the
        # address, IPs) and returns counts for the audit entry
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module
from types import ModuleType
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class Provider:
    key: str  # the module's app label: "events", "messaging"
    module: ModuleType

    @property
    def label(self) -> str:
        return str(self.module.LABEL)

    @property
    def models(self) -> list[str]:
        return list(self.module.MODELS)

    def export(self, contact) -> dict[str, Any]:
        return self.module.export(contact)

    def erase(self, contact, plan) -> dict[str, int]:
        return self.module.erase(contact, plan) or {}


@lru_cache(maxsize=4)
def _load(paths: tuple[str, ...]) -> tuple[Provider, ...]:
    providers = []
    for path in paths:
        module = import_module(path)
        for name in ("LABEL", "MODELS", "export", "erase"):
            if not hasattr(module, name):
                raise TypeError(f"personal-data provider {path} lacks {name} (see kizuna/privacy/registry.py)")
        providers.append(Provider(path.split(".")[-2], module))
    return tuple(providers)


def providers() -> tuple[Provider, ...]:
    return _load(tuple(settings.KIZUNA_PERSONAL_DATA))


def rows(queryset, *fields: str) -> list[dict[str, Any]]:
    """A queryset as plain dicts, for providers' exports."""
    return [dict(row) for row in queryset.values(*fields)]
