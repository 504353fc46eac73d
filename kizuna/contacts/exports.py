"""Exporting contacts to CSV that Excel opens correctly, in constant memory at any size.

- UTF-8 with a byte-order mark: without it, Japanese Excel reads the file as Shift_JIS and
  shows mojibake.
- Cells beginning with = + - @ (or a tab or carriage return) are prefixed with an apostrophe,
  so a spreadsheet shows them as text instead of running them as formulas (CSV injection: a
  contact's name is whatever a visitor typed into a form).
- The same filters as the contacts list (`queries.filter_contacts`), so "export these" means
  what the user sees.
- Rows are read in keyset chunks by id, each chunk one query plus one for its tags, so a million
  contacts stream with the memory of one chunk.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Mapping
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from kizuna.accounts import audit

from . import fields as custom_fields
from .models import Contact, CustomField
from .queries import FILTER_KEYS, filter_contacts
from .reference import PREFECTURE_JA

CHUNK = 2000
FORMULA_FIRST = frozenset("=+-@\t\r")  # a spreadsheet runs a cell starting with one of these

# (header, values_list path) in export order; headers are the model's field names as users see them.
COLUMNS: list[tuple[Any, str]] = [
    (_lazy("ID"), "id"),
    (_lazy("Email"), "email"),
    (_lazy("Family name"), "family_name"),
    (_lazy("Given name"), "given_name"),
    (_lazy("Family name (furigana)"), "family_name_kana"),
    (_lazy("Given name (furigana)"), "given_name_kana"),
    (_lazy("Company name"), "company_name"),
    (_lazy("Department"), "department"),
    (_lazy("Job title"), "job_title"),
    (_lazy("Phone"), "phone"),
    (_lazy("Prefecture"), "prefecture"),
    (_lazy("Region"), "region"),
    (_lazy("Industry"), "industry"),
    (_lazy("Company size"), "company_size"),
    (_lazy("Lifecycle stage"), "lifecycle_stage"),
    (_lazy("Linked company"), "company__name"),
    (_lazy("Owner"), "owner__username"),
    (_lazy("Source"), "source"),
    (_lazy("Do not contact"), "do_not_contact"),
    (_lazy("Created"), "created_at"),
    (_lazy("Updated"), "updated_at"),
    (_lazy("Last activity"), "last_activity_at"),
]
PREFECTURE_AT = [p for _h, p in COLUMNS].index("prefecture")


def safe_cell(value: str) -> str:
    """Neutralises a cell a spreadsheet would run as a formula (OWASP "CSV injection")."""
    if value[:1] in FORMULA_FIRST:
        return "'" + value
    return value


def _cell(value: Any, tz) -> str:
    """A value as a safe cell; the common case (text) first, since this runs ~25 times a row."""
    if value.__class__ is str:
        return "'" + value if value[:1] in FORMULA_FIRST else value
    if value is None:
        return ""
    if value.__class__ is bool:
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (list, tuple)):
        return safe_cell(", ".join(str(v) for v in value))
    return safe_cell(str(value))


class _Line:
    """A write-only file for csv.writer that hands back what was written."""

    def __init__(self):
        self.buffer = io.StringIO()

    def write(self, text: str) -> None:
        self.buffer.write(text)

    def take(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def header_row(defs: dict[str, CustomField]) -> list[str]:
    return [str(h) for h, _path in COLUMNS] + [_("Tags")] + [f.label for f in defs.values()]


def rows(qs: QuerySet[Contact], defs: dict[str, CustomField]) -> Iterator[list[str]]:
    """Every contact of `qs` as a list of cell texts, in id order, one chunk in memory at a time."""
    paths = [p for _h, p in COLUMNS] + ["custom"]
    through = Contact.tags.through
    tz = timezone.get_current_timezone()
    keys = list(defs)
    last = 0
    while True:
        chunk = list(qs.filter(id__gt=last).order_by("id").values_list(*paths)[:CHUNK])
        if not chunk:
            return
        ids = [r[0] for r in chunk]
        tags: dict[int, list[str]] = {}
        for contact_id, name in (through.objects.filter(contact_id__in=ids)
                                 .order_by("tag__name").values_list("contact_id", "tag__name")):
            tags.setdefault(contact_id, []).append(name)
        for r in chunk:
            values = list(r[:-1])
            values[PREFECTURE_AT] = PREFECTURE_JA.get(values[PREFECTURE_AT], values[PREFECTURE_AT])
            values.append(", ".join(tags.get(r[0], ())))
            if keys:
                custom = r[-1] or {}
                values.extend(custom.get(key) for key in keys)
            yield [_cell(v, tz) for v in values]
        last = ids[-1]
        if len(chunk) < CHUNK:
            return


def stream_csv(qs: QuerySet[Contact]) -> Iterator[bytes]:
    """The CSV file as byte chunks: the BOM and header first, then about CHUNK rows a piece."""
    defs = custom_fields.definitions(CustomField.Target.CONTACT)
    line = _Line()
    writer = csv.writer(line, lineterminator="\r\n")
    writer.writerow(header_row(defs))
    yield ("\ufeff" + line.take()).encode("utf-8")
    pending = 0
    for row in rows(qs, defs):
        writer.writerow(row)
        pending += 1
        if pending >= CHUNK:
            yield line.take().encode("utf-8")
            pending = 0
    if pending:
        yield line.take().encode("utf-8")


def used_filters(params: Mapping[str, Any]) -> dict[str, str]:
    """The filters that narrow the export, for the audit log."""
    return {k: str(params.get(k)) for k in params
            if (k in FILTER_KEYS or str(k).startswith("custom.")) and str(params.get(k) or "").strip()}


def export_contacts(actor, params: Mapping[str, Any]) -> tuple[str, Iterator[bytes], int]:
    """(file name, byte stream, number of contacts) for the contacts matching `params`.

    Raises queries.QueryError for invalid filters. The export is audit-logged before streaming
    starts, with who, how many and which filters.
    """
    qs = filter_contacts(Contact.objects.all(), params)
    count = qs.count()
    filters = used_filters(params)
    audit.record(actor, "export", object_type="contacts.contact", label=f"{count} contacts",
                 changes={"count": count, "filters": filters})
    name = f"contacts-{timezone.localtime():%Y%m%d-%H%M}.csv"
    return name, stream_csv(qs), count
