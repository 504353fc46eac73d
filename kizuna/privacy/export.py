"""Everything Kizuna holds about one contact, as one JSON document (GDPR art. 15 and 20,
APPI 開示請求): each personal-data provider contributes its section."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.privacy.registry import providers

FORMAT = "kizuna.contact-export/1"


def export_contact(contact: Contact) -> dict[str, Any]:
    data: dict[str, Any] = {"format": FORMAT, "exported_at": timezone.now(), "contact_id": contact.pk}
    for provider in providers():
        data[provider.key] = {"label": provider.label, **provider.export(contact)}
    return data


def export_json(contact: Contact) -> bytes:
    return json.dumps(export_contact(contact), cls=DjangoJSONEncoder, ensure_ascii=False, indent=1).encode()


def filename(contact: Contact) -> str:
    return f"kizuna-contact-{contact.pk}-{timezone.localdate():%Y%m%d}.json"
