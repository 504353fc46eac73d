"""Importing contacts from CSV and XLSX files: business cards, seminar attendees, newsletter lists.

The life of an import job:

1. `create_job` stores the upload, refuses what cannot be read (too big, empty, header only,
   not CSV/XLSX, an encoding we cannot tell or a file mixing two encodings), reads the header and
   a few sample rows, and guesses the column mapping.
2. `configure_job` checks the mapping and options (duplicate policy, tags, list, consent).
3. `enqueue_job` hands the job to the background worker; `run_job` does the work.

The engine reads the file once. A parser (a thread for small files, a child process for big
ones, so that checking rows and writing them use both cores) validates and normalises each row,
writes the per-row error report as it goes, and hands chunks of good rows through a small
bounded queue to the writer. The writer writes them set-wise (a few statements per chunk, never
one per row; COPY on PostgreSQL) inside ONE transaction: a fatal error, wherever it happens,
leaves nothing written. Memory stays bounded whatever the file size, apart from the set of email
addresses seen, which finds duplicates inside the file.

The same rules as `services.clean_contact_input` apply, row by row, with the same normalisers;
`services` is the one-contact path, this is the bulk path.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import pickle
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import openpyxl
from charset_normalizer import from_bytes
from django.conf import settings
from django.core.cache import cache
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from kizuna.accounts import audit

from . import fields as custom_fields
from .emails import InvalidEmail, domain_of, email_hash, normalise_email
from .exports import safe_cell
from .models import (
    Company,
    Consent,
    ConsentRecord,
    ConsentStatus,
    Contact,
    ContactList,
    CustomField,
    ImportJob,
    ImportPreset,
    LifecycleStage,
    ListMembership,
    Source,
    SubscriptionTopic,
    Tag,
)
from .reference import (
    PREFECTURE_REGION,
    CompanySize,
    Industry,
    is_free_mail,
    normalise_company_size,
    normalise_industry,
    normalise_prefecture,
)
from .services import CONTACT_TEXT_FIELDS

logger = logging.getLogger(__name__)

CHUNK_ROWS = 5000  # rows per write (4× on PostgreSQL); SQLite allows 32,766 parameters in one IN (…)
SAMPLE_ROWS = 5
QUEUE_CHUNKS = 4  # chunks parsed ahead of the writer: bounds memory
# Files from this size are parsed in a child process (starting it costs about a second).
PARSE_IN_PROCESS_FROM = 4 * 1024 * 1024
PROGRESS_TTL = 24 * 3600


class ImportFileError(Exception):
    """The uploaded file cannot be imported at all (empty, too big, unreadable). `code` is one of
    too_large, empty, unsupported, unreadable."""

    def __init__(self, message: str, code: str = "unreadable"):
        self.message, self.code = message, code
        super().__init__(message)


class ImportConfigError(Exception):
    """The mapping or options are not valid; `errors` maps a path to a message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class ImportFatalError(Exception):
    """Stops a running import; the transaction is rolled back, so nothing is written."""


# --- Targets and mapping guesses ----------------------------------------------------------------

TARGETS: list[tuple[str, Any]] = [
    ("email", gettext_lazy("Email")),
    ("full_name", gettext_lazy("Full name (family and given, split at the space)")),
    ("family_name", gettext_lazy("Family name")),
    ("given_name", gettext_lazy("Given name")),
    ("full_name_kana", gettext_lazy("Full name in furigana (split at the space)")),
    ("family_name_kana", gettext_lazy("Family name (furigana)")),
    ("given_name_kana", gettext_lazy("Given name (furigana)")),
    ("company_name", gettext_lazy("Company name")),
    ("department", gettext_lazy("Department")),
    ("job_title", gettext_lazy("Job title")),
    ("phone", gettext_lazy("Phone")),
    ("prefecture", gettext_lazy("Prefecture")),
    ("industry", gettext_lazy("Industry")),
    ("company_size", gettext_lazy("Company size or head count")),
    ("lifecycle_stage", gettext_lazy("Lifecycle stage")),
    ("tags", gettext_lazy("Tags (comma-separated)")),
]

# Header spellings seen in Japanese business-card, seminar and newsletter exports, compared
# after `_header_key` (NFKC, lower case, no spaces or punctuation).
ALIASES: dict[str, list[str]] = {
    "email": ["email", "e-mail", "emailaddress", "mail", "mailaddress", "メール", "メールアドレス", "eメール",
              "eメールアドレス", "電子メール", "電子メールアドレス", "メアド", "アドレス", "連絡先メールアドレス"],
    "full_name": ["氏名", "名前", "お名前", "氏名漢字", "名前漢字", "担当者", "担当者名", "ご担当者名", "参加者名",
                  "name", "fullname", "contactname", "姓名"],
    "family_name": ["姓", "苗字", "名字", "氏", "lastname", "familyname", "surname"],
    "given_name": ["名", "下の名前", "firstname", "givenname"],
    "full_name_kana": ["フリガナ", "ふりがな", "氏名フリガナ", "氏名ふりがな", "氏名カナ", "カナ", "かな", "よみがな",
                       "読み", "読み仮名", "名前フリガナ", "お名前フリガナ", "氏名よみ", "furigana"],
    "family_name_kana": ["セイ", "せい", "姓フリガナ", "姓ふりがな", "姓カナ", "姓よみ", "familynamefurigana",
                         "lastnamekana", "familynamekana"],
    "given_name_kana": ["メイ", "めい", "名フリガナ", "名ふりがな", "名カナ", "名よみ", "givennamefurigana",
                        "firstnamekana", "givennamekana"],
    "company_name": ["会社名", "会社", "企業名", "社名", "法人名", "勤務先", "勤務先名", "所属会社", "貴社名", "御社名",
                     "団体名", "組織名", "company", "companyname", "organization", "organisation", "accountname"],
    "department": ["部署", "部署名", "所属", "所属部署", "部門", "部課", "所属部門", "department", "dept", "division"],
    "job_title": ["役職", "役職名", "肩書", "肩書き", "職位", "title", "jobtitle", "position"],
    "phone": ["電話番号", "電話", "tel", "telephone", "phone", "phonenumber", "携帯電話", "携帯電話番号", "携帯番号",
              "携帯", "会社電話番号", "代表電話番号", "直通電話", "mobile", "電話番号会社"],
    "prefecture": ["都道府県", "都道府県名", "県", "prefecture"],
    "industry": ["業種", "業界", "業種名", "industry"],
    "company_size": ["従業員数", "従業員規模", "企業規模", "会社規模", "社員数", "規模", "employees", "companysize",
                     "numberofemployees", "employeecount", "headcount"],
    "lifecycle_stage": ["ステージ", "ライフサイクルステージ", "lifecyclestage", "stage"],
    "tags": ["タグ", "tags", "tag"],
}
_HEADER_STRIP = re.compile(r"[\s_\-・･:：()\[\]（）「」【】<>＜＞*※]|必須|任意")


def _header_key(text: str) -> str:
    return _HEADER_STRIP.sub("", unicodedata.normalize("NFKC", text).lower())


_ALIAS_LOOKUP = {_header_key(name): target for target, names in ALIASES.items() for name in [target, *names]}


def target_choices(defs: dict[str, CustomField] | None = None) -> list[tuple[str, str]]:
    """Everything a column can be mapped to: contact fields, then contact custom fields."""
    defs = custom_fields.definitions(CustomField.Target.CONTACT) if defs is None else defs
    return [(k, str(label)) for k, label in TARGETS] + [
        (f"custom.{key}", _("Custom field: %(label)s") % {"label": f.label}) for key, f in defs.items()
    ]


def guess_mapping(headers: list[str], defs: dict[str, CustomField] | None = None) -> dict[str, str]:
    """{header: target} for the headers we recognise; the first column claiming a target wins."""
    defs = custom_fields.definitions(CustomField.Target.CONTACT) if defs is None else defs
    custom_lookup: dict[str, str] = {}
    for key, f in defs.items():
        custom_lookup.setdefault(_header_key(key), f"custom.{key}")
        custom_lookup.setdefault(_header_key(f.label), f"custom.{key}")
        custom_lookup.setdefault(_header_key(f"custom.{key}"), f"custom.{key}")
    guessed: dict[str, str] = {}
    for header in headers:
        key = _header_key(header)
        target = custom_lookup.get(key) or _ALIAS_LOOKUP.get(key)
        if target and target not in guessed.values():
            guessed[header] = target
    # Separate name parts beat a combined column: a card export with 氏名, 姓 and 名 maps 姓/名.
    values = set(guessed.values())
    for whole, parts in (("full_name", {"family_name", "given_name"}),
                         ("full_name_kana", {"family_name_kana", "given_name_kana"})):
        if whole in values and parts <= values:
            guessed = {h: t for h, t in guessed.items() if t != whole}
    return guessed


# --- Reading files ------------------------------------------------------------------------------

BYTE_LINE_ENCODINGS = {"utf-8", "utf-8-sig", "cp932", "euc_jp"}
ENCODING_LABELS = {"utf-8": "UTF-8", "utf-8-sig": gettext_lazy("UTF-8 with BOM"), "cp932": "Shift_JIS (CP932)",
                   "euc_jp": "EUC-JP", "utf-16": "UTF-16", "": "—"}


def format_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):,.1f} MB"
    if n >= 1024:
        return f"{n / 1024:,.0f} KB"
    return f"{n} B"


def _line_decodes(line: bytes, encoding: str) -> bool:
    try:
        line.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def detect_encoding(path: Path) -> str:
    """The text encoding of a CSV file: utf-8-sig, utf-8, cp932 (Shift_JIS), euc_jp or utf-16.

    The whole file is checked, line by line, so a file that is UTF-8 in one part and Shift_JIS in
    another is refused here with the line where it changes, before anything is imported.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            fh.seek(0)
            try:
                text = io.TextIOWrapper(fh, encoding="utf-16", newline="")
                while text.read(1 << 20):
                    pass
                text.detach()
            except UnicodeDecodeError as exc:
                raise ImportFileError(_("The file starts as UTF-16 but is not valid UTF-16: %(reason)s")
                                      % {"reason": exc.reason}) from exc
            return "utf-16"
        bom = head.startswith(b"\xef\xbb\xbf")
        fh.seek(3 if bom else 0)
        first_utf8 = first_non_utf8 = first_non_cp932 = None
        non_ascii = False
        for number, line in enumerate(fh, 1):
            if line.isascii():
                if b"\x00" in line:
                    raise ImportFileError(_("Line %(line)s contains a NUL byte: this is not a text (CSV) file.")
                                          % {"line": number})
                continue
            non_ascii = True
            if _line_decodes(line, "utf-8"):
                if first_utf8 is None:
                    first_utf8 = number
            elif first_non_utf8 is None:
                first_non_utf8 = number
            if first_non_cp932 is None and not _line_decodes(line, "cp932"):
                first_non_cp932 = number
            if first_utf8 is not None and first_non_utf8 is not None:
                break
    if first_non_utf8 is None:
        return "utf-8-sig" if bom else "utf-8"
    if first_utf8 is not None:
        line = max(first_utf8, first_non_utf8)
        if first_utf8 < first_non_utf8:
            message = _("The file mixes text encodings: it starts in UTF-8, but line %(line)s is not UTF-8 "
                        "(probably Shift_JIS). Save the whole file in one encoding and upload it again.")
        else:
            message = _("The file mixes text encodings: it starts in Shift_JIS, but line %(line)s is UTF-8. "
                        "Save the whole file in one encoding and upload it again.")
        raise ImportFileError(message % {"line": line})
    if bom:
        raise ImportFileError(_("The file starts with a UTF-8 byte-order mark, but line %(line)s is not UTF-8.")
                              % {"line": first_non_utf8})
    if non_ascii and first_non_cp932 is None:
        return "cp932"
    with open(path, "rb") as fh:
        sample = fh.read(1 << 20)
    best = from_bytes(sample).best()
    guess = (best.encoding if best else "").replace("-", "_").lower()
    if guess in {"euc_jp", "euc_jis_2004", "euc_jisx0213"}:
        with open(path, "rb") as fh:
            if all(_line_decodes(line, "euc_jp") for line in fh):
                return "euc_jp"
    raise ImportFileError(
        _("Cannot tell the text encoding of this file: line %(utf8)s is not UTF-8 and line %(sjis)s is not "
          "Shift_JIS. Save it as “CSV UTF-8” from Excel and upload it again.")
        % {"utf8": first_non_utf8, "sjis": first_non_cp932}
    )


def _detect_delimiter(path: Path, encoding: str) -> str:
    with open(path, encoding=encoding, newline="", errors="replace") as fh:
        first = fh.readline()
    counts = {d: first.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Position:
    """Bytes consumed (or rows read) so far, for the progress bar."""

    def __init__(self, total: int):
        self.total = max(total, 1)
        self.done = 0
        self.line = 0

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0)


def _decoded_lines(fh, encoding: str, pos: _Position) -> Iterator[str]:
    """Lines decoded one by one, so a decoding error names its line. Splitting bytes at b"\\n" is
    safe in these encodings: no multi-byte character contains the byte 0x0A."""
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    for raw in fh:
        pos.line += 1
        pos.done += len(raw)
        if pos.line == 1 and encoding == "utf-8-sig":
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            yield raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise ImportFatalError(
                _("Line %(line)s is not valid %(encoding)s (the rest of the file is): the file mixes text "
                  "encodings. Nothing was imported; save the file in one encoding and import it again.")
                % {"line": pos.line, "encoding": ENCODING_LABELS.get(encoding, encoding)}
            ) from exc


@dataclass
class Record:
    """One spreadsheet row: its number as a spreadsheet shows it (header = 1) and its cells."""

    number: int
    cells: list[Any] | None
    problem: str = ""


def csv_records(path: Path, encoding: str, delimiter: str = ",", pos: _Position | None = None) -> Iterator[Record]:
    pos = pos or _Position(path.stat().st_size)
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        fh.seek(0)
        by_lines = encoding in BYTE_LINE_ENCODINGS and not (b"\r" in head and b"\n" not in head)
        if by_lines:
            lines: Any = _decoded_lines(fh, encoding, pos)
        else:  # UTF-16, or lines ending in CR alone (old Mac files): let Python split the lines
            lines = io.TextIOWrapper(fh, encoding=encoding, newline=None if encoding != "utf-16" else "")
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        number = 0
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise ImportFatalError(_("The file is not valid %(encoding)s: %(reason)s")
                                       % {"encoding": ENCODING_LABELS.get(encoding, encoding), "reason": exc.reason}
                                       ) from exc
            except csv.Error as exc:
                text = str(exc)
                if "unexpected end of data" in text or "field larger than field limit" in text:
                    raise ImportFatalError(
                        _("Line %(line)s: a quoted value (\") is never closed, so the rest of the file would be "
                          "read as one value. Nothing was imported; fix the quotes and import it again.")
                        % {"line": start}
                    ) from exc
                number += 1
                yield Record(number, None, _("malformed CSV at line %(line)s: %(reason)s")
                             % {"line": reader.line_num, "reason": text})
                continue
            number += 1
            if not by_lines:
                pos.done = fh.tell()
            yield Record(number, cells)


UNNEUTRALISE = frozenset({"'=", "'+", "'-", "'@", "'\t", "'\r"})


class NoCachedValue:
    """An XLSX formula cell whose value was never calculated and saved."""

    def __init__(self, formula: str):
        self.formula = formula

    def __str__(self) -> str:
        return self.formula


_FORMULA_TAG = re.compile(rb"<(?:\w+:)?f[ >/]")


def _xlsx_has_formulas(path: Path) -> bool:
    """Scans the sheets' XML for <f> elements; only then is the slower formula check needed."""
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if not name.startswith("xl/worksheets/") or not name.endswith(".xml"):
                continue
            tail = b""
            with zf.open(name) as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    if _FORMULA_TAG.search(tail + chunk):
                        return True
                    tail = chunk[-16:]
    return False


def xlsx_records(path: Path, pos: _Position | None = None) -> Iterator[Record]:
    """Rows of the first worksheet with cached (calculated) values, as Excel shows them."""
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        formulas_wb = openpyxl.load_workbook(path, read_only=True, data_only=False) if _xlsx_has_formulas(
            path) else None
    except Exception as exc:  # openpyxl raises many types for a damaged workbook
        raise ImportFatalError(_("The XLSX workbook cannot be read: %(reason)s") % {"reason": exc}) from exc
    try:
        ws = wb.worksheets[0]
        pos = pos or _Position(0)
        pos.total = max(ws.max_row or 0, 1)
        ws.reset_dimensions()  # trust the rows, not the stated size: some writers get it wrong
        rows = ws.iter_rows(values_only=True)
        if formulas_wb is not None:
            fws = formulas_wb.worksheets[0]
            fws.reset_dimensions()
            formula_rows = fws.iter_rows(values_only=True)
        for number, values in enumerate(rows, 1):
            cells = ["" if v is None else v for v in values]
            if formulas_wb is not None:
                formula_values = next(formula_rows, ())
                for i, (v, f) in enumerate(zip(values, formula_values, strict=False)):
                    if v is None and isinstance(f, str) and f.startswith("="):
                        cells[i] = NoCachedValue(f)
            while cells and cells[-1] == "":
                cells.pop()
            pos.done = number
            yield Record(number, cells)
    finally:
        wb.close()
        if formulas_wb is not None:
            formulas_wb.close()


def cell_text(value: Any) -> str:
    """A cell as text: XLSX numbers without a spurious '.0', dates as YYYY-MM-DD, and without the
    apostrophe our exports put before = + - @ (so an exported file imports back as it was)."""
    if isinstance(value, str):
        value = value.strip()
        return value[1:] if value[:2] in UNNEUTRALISE else value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == dtime(0) else value.isoformat(sep=" ")
    if isinstance(value, (date, dtime)):
        return value.isoformat()
    return str(value).strip()


def _records(job: ImportJob, pos: _Position | None = None) -> Iterator[Record]:
    path = Path(job.file.path)
    if job.file_format == ImportJob.Format.XLSX:
        return xlsx_records(path, pos)
    return csv_records(path, job.encoding, job.delimiter or ",", pos)


def _unique_headers(cells: list[Any]) -> list[str]:
    headers: list[str] = []
    for i, cell in enumerate(cells, 1):
        name = cell_text(cell).replace("\n", " ")[:200] or f"Column {i}"
        base, n = name, 2
        while name in headers:
            name, n = f"{base} ({n})", n + 1
        headers.append(name)
    return headers


def _is_blank(cells: list[Any]) -> bool:
    return not any(cell_text(c) for c in cells)


# --- Creating and configuring jobs --------------------------------------------------------------

def _is_user(actor) -> bool:
    return actor is not None and getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None)


def create_job(actor, uploaded_file, *, kind: str = ImportJob.Kind.OTHER) -> ImportJob:
    """Stores an upload as a draft import job with its headers, samples and a guessed mapping.

    Raises ImportFileError, with a message for the user, for a file that cannot be imported; the
    stored file is then removed again.
    """
    if kind not in ImportJob.Kind.values:
        raise ImportFileError(_("Unknown kind of list %(kind)r: use one of %(kinds)s.")
                              % {"kind": kind, "kinds": ", ".join(ImportJob.Kind.values)}, "invalid")
    size = uploaded_file.size or 0
    limit = settings.IMPORT_MAX_BYTES
    if size > limit:
        raise ImportFileError(_("The file is %(size)s; the largest file you can import is %(limit)s. "
                                "Split it into smaller files.")
                              % {"size": format_bytes(size), "limit": format_bytes(limit)}, "too_large")
    if size == 0:
        raise ImportFileError(_("The file is empty."), "empty")
    original = os.path.basename(uploaded_file.name or "import.csv")[:255]
    ext = original.rsplit(".", 1)[-1].lower() if "." in original else "csv"
    if not re.fullmatch(r"[a-z0-9]{1,8}", ext):
        ext = "csv"
    stored = default_storage.save(f"imports/{timezone.now():%Y/%m}/{uuid.uuid4().hex}.{ext}", uploaded_file)
    path = Path(default_storage.path(stored))
    try:
        job = ImportJob(original_name=original, file_size=size, kind=kind,
                        created_by=actor if _is_user(actor) else None)
        job.file.name = stored
        _read_header(job, path, ext)
    except BaseException:
        default_storage.delete(stored)
        raise
    job.mapping = guess_mapping(job.headers)
    job.save()
    return job


def _read_header(job: ImportJob, path: Path, ext: str) -> None:
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"PK\x03\x04"):
        job.file_format, job.encoding, job.delimiter = ImportJob.Format.XLSX, "", ""
        try:
            zipfile.ZipFile(path).close()
        except zipfile.BadZipFile as exc:
            raise ImportFileError(_("The file looks like an Excel workbook but is damaged.")) from exc
    elif magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise ImportFileError(_("Old Excel files (.xls) cannot be read: save the sheet as .xlsx or CSV "
                                "and upload that."), "unsupported")
    elif ext in {"xlsx", "xlsm", "xls", "numbers", "ods", "pdf", "zip"}:
        raise ImportFileError(_("This is not a CSV or XLSX file."), "unsupported")
    else:
        job.file_format = ImportJob.Format.CSV
        job.encoding = detect_encoding(path)
        job.delimiter = _detect_delimiter(path, job.encoding)
    headers: list[str] | None = None
    samples: list[list[str]] = []
    has_data = False
    try:
        for record in _records(job):
            if record.cells is None:
                if headers is None:
                    raise ImportFileError(_("The header row cannot be read: %(reason)s") % {"reason": record.problem})
                has_data = True
                continue
            if headers is None:
                if _is_blank(record.cells):
                    raise ImportFileError(_("The first row must hold the column names, but it is empty."))
                headers = _unique_headers(record.cells)
                continue
            if _is_blank(record.cells):
                continue
            has_data = True
            samples.append([cell_text(c)[:100] for c in record.cells[: len(headers)]])
            if len(samples) >= SAMPLE_ROWS:
                break
    except ImportFatalError as exc:
        raise ImportFileError(str(exc)) from exc
    if headers is None:
        raise ImportFileError(_("The file is empty."), "empty")
    if not has_data:
        raise ImportFileError(_("The file has a header row but no data rows."), "empty")
    job.headers, job.samples = headers, samples


def _clean_tags(value: Any, errors: dict[str, str]) -> list[str]:
    if isinstance(value, str):
        value = re.split(r"[,、]", value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        errors["tags"] = _("must be a list of tag names")
        return []
    names = list(dict.fromkeys(t.strip() for t in value if t.strip()))
    if any(len(t) > 100 for t in names):
        errors["tags"] = _("a tag is longer than 100 characters")
    return names


def validate_mapping(job: ImportJob, mapping: Any, defs: dict[str, CustomField]) -> tuple[dict[str, str],
                                                                                          dict[str, str]]:
    """(clean mapping {header: target}, errors). Unmapped columns are left out: they are ignored."""
    errors: dict[str, str] = {}
    if not isinstance(mapping, dict):
        return {}, {"mapping": _("must be an object of {column name: field}")}
    targets = dict(target_choices(defs))
    clean: dict[str, str] = {}
    claimed: dict[str, str] = {}
    for header, target in mapping.items():
        if target in (None, ""):
            continue
        if header not in job.headers:
            errors[f"mapping.{header}"] = _("there is no column named %(name)r in this file") % {"name": header}
            continue
        if not isinstance(target, str) or target not in targets:
            errors[f"mapping.{header}"] = _("unknown field %(target)r") % {"target": target}
            continue
        if target in claimed:
            errors[f"mapping.{header}"] = (_("%(target)s is already mapped from the column %(other)r")
                                           % {"target": targets[target], "other": claimed[target]})
            continue
        claimed[target] = header
        clean[header] = target
    if "email" not in claimed and not any(k.startswith("mapping.") for k in errors):
        errors["mapping"] = _("Map a column to Email: email is required to import, since duplicates are found "
                              "by email.")
    for key, f in defs.items():
        if f.required and f"custom.{key}" not in claimed:
            errors.setdefault("mapping", _("The custom field %(label)s is required: map a column to it.")
                              % {"label": f.label})
    return clean, errors


def configure_job(actor, job: ImportJob, *, mapping: dict[str, str], duplicate_policy: str = "update",
                  tags: list[str] | str = (), list_name: str = "", consent_topic_key: str = "",
                  consent_status: str = "", consent_source: str = "", save_preset_as: str = "") -> ImportJob:
    """Checks and stores the mapping and options of a draft job; raises ImportConfigError."""
    if job.status != ImportJob.Status.DRAFT:
        raise ImportConfigError({"status": _("this import has already been started")})
    defs = custom_fields.definitions(CustomField.Target.CONTACT)
    clean_mapping, errors = validate_mapping(job, mapping, defs)
    if duplicate_policy not in ImportJob.DuplicatePolicy.values:
        errors["duplicate_policy"] = _("must be one of %(values)s") % {
            "values": ", ".join(ImportJob.DuplicatePolicy.values)}
    tag_names = _clean_tags(tags, errors)
    list_name = (list_name or "").strip()
    if len(list_name) > 150:
        errors["list_name"] = _("is longer than 150 characters")
    topic = None
    consent_topic_key = (consent_topic_key or "").strip()
    consent_source = (consent_source or "").strip()
    if consent_topic_key:
        topic = SubscriptionTopic.objects.filter(key=consent_topic_key).first()
        if topic is None:
            errors["consent_topic"] = _("there is no subscription topic %(key)r") % {"key": consent_topic_key}
        if consent_status not in (ConsentStatus.OPTED_IN, ConsentStatus.OPTED_OUT):
            errors["consent_status"] = _("choose opted_in or opted_out for the consent topic")
        if len(consent_source) > 255:
            errors["consent_source"] = _("is longer than 255 characters")
    elif consent_status:
        errors["consent_topic"] = _("choose the subscription topic the consent is for")
    save_preset_as = (save_preset_as or "").strip()
    if len(save_preset_as) > 150:
        errors["save_preset_as"] = _("is longer than 150 characters")
    if errors:
        raise ImportConfigError(errors)
    with transaction.atomic():
        job.mapping = clean_mapping
        job.duplicate_policy = duplicate_policy
        job.tags = tag_names
        job.list_name = list_name
        existing_list = ContactList.objects.filter(name=list_name).first() if list_name else None
        job.contact_list = existing_list
        job.consent_topic = topic
        job.consent_status = consent_status if topic else ""
        job.consent_source = (consent_source or _("%(kind)s: %(file)s") % {
            "kind": job.get_kind_display(), "file": job.original_name})[:255] if topic else ""
        job.save()
        if save_preset_as:
            ImportPreset.objects.update_or_create(name=save_preset_as, defaults={"mapping": clean_mapping})
    return job


def preset_mapping(job: ImportJob, preset: ImportPreset) -> dict[str, str]:
    """A preset's mapping applied to this file: only the columns this file has."""
    return {h: t for h, t in preset.mapping.items() if h in job.headers}


def _mark_queued(job: ImportJob) -> None:
    """DRAFT → QUEUED, once: a second click on "Start" cannot queue the same file twice."""
    if not job.mapping:
        raise ImportConfigError({"mapping": _("map the columns first")})
    if not ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.DRAFT).update(status=ImportJob.Status.QUEUED):
        raise ImportConfigError({"status": _("this import has already been started")})
    job.status = ImportJob.Status.QUEUED


def enqueue_job(job: ImportJob) -> None:
    """Queues a configured job for the worker (once the surrounding transaction commits)."""
    from .tasks import run_import

    _mark_queued(job)
    transaction.on_commit(lambda: run_import.enqueue(job.pk))


def run_now(job: ImportJob, *, on_progress: Callable[[dict[str, Any]], None] | None = None) -> ImportJob:
    """Runs a configured job in this process, for the `kizuna import` command."""
    _mark_queued(job)
    return run_job(job.pk, on_progress=on_progress)


# --- Progress -------------------------------------------------------------------------------------

def _progress_key(job_id: int) -> str:
    return f"kizuna:import-progress:{job_id}"


def summary(job: ImportJob) -> str:
    """The result in one line, numbers first: "997 imported (990 new, 7 updated), 3 errors"."""
    imported = job.created_count + job.updated_count
    parts = [ngettext("%(n)s imported", "%(n)s imported", imported) % {"n": f"{imported:,}"}
             + " (" + _("%(new)s new, %(updated)s updated") % {"new": f"{job.created_count:,}",
                                                              "updated": f"{job.updated_count:,}"} + ")"]
    if job.skipped_count:
        parts.append(_("%(n)s skipped") % {"n": f"{job.skipped_count:,}"})
    parts.append(ngettext("%(n)s error", "%(n)s errors", job.error_count) % {"n": f"{job.error_count:,}"})
    return ", ".join(parts)


def progress(job: ImportJob) -> dict[str, Any]:
    """{done, percent, text} for the progress bar; live figures come from the cache while the
    import's transaction is still open."""
    Status = ImportJob.Status
    if job.status == Status.DONE:
        return {"done": True, "percent": 100, "text": summary(job), "status": job.status}
    if job.status == Status.FAILED:
        return {"done": True, "percent": 100, "text": _("Failed: %(reason)s") % {"reason": job.failure},
                "status": job.status}
    if job.status == Status.DRAFT:
        return {"done": False, "percent": 0, "text": _("Waiting for the column mapping."), "status": job.status}
    if job.status == Status.QUEUED:
        return {"done": False, "percent": 0, "text": _("Queued: waiting for a worker to start."),
                "status": job.status}
    live = cache.get(_progress_key(job.pk)) or {}
    percent = round(live.get("percent", 0), 1)
    text = _("%(read)s rows checked, %(written)s written (%(percent)s%%)") % {
        "read": f"{live.get('read', 0):,}", "written": f"{live.get('written', 0):,}", "percent": f"{percent:.0f}"}
    if live.get("finishing"):
        text = _("All %(read)s rows checked; saving…") % {"read": f"{live.get('read', 0):,}"}
    at = live.get("at")
    if at and time.time() - at > 300:
        text += " " + _("(no progress for %(minutes)s minutes: is the worker running?)") % {
            "minutes": int((time.time() - at) // 60)}
    return {"done": False, "percent": percent, "text": text, "status": job.status}


def error_rows(job: ImportJob, *, offset: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
    """(lines of the error report from `offset`, how many lines it has). Values in the report
    never span lines, so counting newlines counts errors, without parsing a big report."""
    if not job.error_report:
        return [], 0
    with job.error_report.open("rb") as fh:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1
    items: list[dict[str, Any]] = []
    with job.error_report.open("rb") as fh:
        reader = csv.reader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""))
        next(reader, None)
        for i, line in enumerate(reader):
            if i >= offset + limit:
                break
            if i >= offset and len(line) >= 4:
                items.append({"row": int(line[0]) if line[0].isdigit() else None, "column": line[1],
                              "value": _unneutralise(line[2]), "message": line[3]})
    return items, max(total, 0)


def _unneutralise(text: str) -> str:
    return text[1:] if text[:2] in UNNEUTRALISE else text


# --- The engine: reading and checking rows ---------------------------------------------------------

ROW_FIELDS = ["email", "family_name", "given_name", "family_name_kana", "given_name_kana", "phone", "company_name",
              "job_title", "department", "prefecture", "region", "industry", "company_size", "lifecycle_stage"]
IDX = {name: i for i, name in enumerate(ROW_FIELDS)}
I_CUSTOM, I_TAGS = len(ROW_FIELDS), len(ROW_FIELDS) + 1
I_PREFECTURE, I_REGION = IDX["prefecture"], IDX["region"]
KANA_FIELDS = {"family_name_kana", "given_name_kana"}
TEXT_LIMITS = [(name, limit) for name, limit in CONTACT_TEXT_FIELDS.items() if name in IDX]
CUSTOM_FIELD_ATTRS = ("key", "label", "field_type", "choices", "required")
REPORT_HEADER = "\ufeffrow,column,value,message\r\n"


@dataclass
class _Plan:
    """What the parser needs to know, resolved once per job. Plain data (custom field definitions
    included), so it can be handed to a parser process."""

    headers: list[str]
    columns: dict[str, int]  # target -> column index
    custom: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    path: str = ""
    file_format: str = ImportJob.Format.CSV
    encoding: str = "utf-8"
    delimiter: str = ","
    size: int = 0
    chunk_rows: int = CHUNK_ROWS
    language: str = "en"
    report_path: str = ""
    # Hashes of addresses erased on request (kizuna.privacy): such rows are refused, not imported.
    erased: list[str] = field(default_factory=list)

    @classmethod
    def for_job(cls, job: ImportJob, defs: dict[str, CustomField]) -> _Plan:
        mapping, errors = validate_mapping(job, job.mapping, defs)
        if errors:
            raise ImportFatalError(_("The column mapping is no longer valid: %(errors)s")
                                   % {"errors": "; ".join(f"{k}: {v}" for k, v in errors.items())})
        columns = {target: job.headers.index(header) for header, target in mapping.items()}
        custom = [(t.removeprefix("custom."), i,
                   {a: getattr(defs[t.removeprefix("custom.")], a) for a in CUSTOM_FIELD_ATTRS})
                  for t, i in columns.items() if t.startswith("custom.")]
        return cls(headers=list(job.headers), columns=columns, custom=custom, path=job.file.path,
                   file_format=str(job.file_format), encoding=job.encoding, delimiter=job.delimiter or ",",
                   size=job.file_size, chunk_rows=CHUNK_ROWS * (4 if connection.vendor == "postgresql" else 1),
                   language=translation.get_language() or settings.LANGUAGE_CODE, erased=_erased_hashes())

    def header_of(self, target: str) -> str:
        index = self.columns.get(target)
        if index is None and target in ("family_name", "given_name"):
            index = self.columns.get("full_name")
        if index is None and target in KANA_FIELDS:
            index = self.columns.get("full_name_kana")
        return self.headers[index] if index is not None else ""

    def records(self, pos: _Position) -> Iterator[Record]:
        if self.file_format == ImportJob.Format.XLSX:
            return xlsx_records(Path(self.path), pos)
        return csv_records(Path(self.path), self.encoding, self.delimiter, pos)


def _erased_hashes() -> list[str]:
    from kizuna.privacy.models import ErasedAddress

    return list(ErasedAddress.objects.values_list("email_hash", flat=True))


class _RowChecker:
    """Validates and normalises rows; small vocabularies (prefectures, industries, sizes) are
    memoised, since a million rows hold only a few dozen distinct values."""

    def __init__(self, plan: _Plan):
        self.plan = plan
        self.cols = plan.columns
        self.width = len(plan.headers)
        self.mapped = sorted(set(self.cols.values()))
        cols = self.cols
        self.email_index = cols["email"]
        self.wholes = [(cols[whole], IDX[family], IDX[given], whole == "full_name_kana")
                       for whole, family, given in (("full_name", "family_name", "given_name"),
                                                    ("full_name_kana", "family_name_kana", "given_name_kana"))
                       if whole in cols]
        self.texts = [(IDX[t], cols[t], t in KANA_FIELDS) for t in CONTACT_TEXT_FIELDS if t in cols]
        self.limits = [(IDX[t], limit, t) for t, limit in TEXT_LIMITS]
        self.coded = [(t, IDX[t], cols[t]) for t in ("prefecture", "industry", "company_size", "lifecycle_stage")
                      if t in cols]
        self.tags_index = cols.get("tags")
        self.custom = [(key, i, CustomField(**definition)) for key, i, definition in plan.custom]
        self.memo: dict[tuple[str, str], tuple[str, str]] = {}
        self.stages = {v: v for v in LifecycleStage.values}
        self.stages.update({str(label).lower(): value for value, label in LifecycleStage.choices})
        self.industries = ", ".join(Industry.values)
        self.sizes = ", ".join(CompanySize.values)
        self.erased = frozenset(plan.erased)

    def _coded(self, kind: str, raw: str) -> tuple[str, str]:
        """(code, error) for prefecture, industry, company size and stage, memoised."""
        hit = self.memo.get((kind, raw))
        if hit is not None:
            return hit
        if kind == "prefecture":
            code = normalise_prefecture(raw)
            result = (code, "") if code is not None else (
                "", _("%(value)r is not a Japanese prefecture") % {"value": raw})
        elif kind == "industry":
            code = normalise_industry(raw)
            result = (code, "") if code is not None else (
                "", _("%(value)r is not a known industry (%(values)s)") % {"value": raw, "values": self.industries})
        elif kind == "company_size":
            code = normalise_company_size(raw)
            result = (code, "") if code is not None else (
                "", _("%(value)r is not a company size (%(values)s or a head count)")
                % {"value": raw, "values": self.sizes})
        else:
            code = self.stages.get(raw.lower())
            result = (code, "") if code is not None else (
                "", _("%(value)r is not a lifecycle stage (%(values)s)")
                % {"value": raw, "values": ", ".join(LifecycleStage.values)})
        if len(self.memo) < 10_000:
            self.memo[(kind, raw)] = result
        return result

    def is_blank(self, cells: list[Any]) -> bool:
        """Empty rows are skipped, not reported (spreadsheets often end with a few)."""
        if any(cells):
            i = self.email_index
            if i < len(cells) and cell_text(cells[i]):
                return False
        return _is_blank(cells)

    def check(self, cells: list[Any], number: int) -> tuple[list[Any] | None, list[tuple[str, str, str]]]:
        """(staged row or None, [(column, value, message)]). Each mapped cell is read once; this
        runs a million times per big import, hence the precomputed positions."""
        errors: list[tuple[str, str, str]] = []
        headers = self.plan.headers
        n = len(cells)
        if n > self.width and any(cell_text(c) for c in cells[self.width:]):
            errors.append(("", "", _("the row has %(cells)s values but the header has %(columns)s columns: a value "
                                     "may contain an unquoted comma") % {"cells": n, "columns": self.width}))
        texts = [""] * self.width
        for i in self.mapped:
            if i >= n:
                continue
            c = cells[i]
            if c.__class__ is str:
                text = c.strip()
                if text[:1] == "'" and text[:2] in UNNEUTRALISE:
                    text = text[1:]
            elif isinstance(c, NoCachedValue):
                errors.append((headers[i], c.formula, _("this formula has no saved value: open the file in "
                                                        "Excel, let it calculate, save it and import again")))
                continue
            else:
                text = cell_text(c)
            if text[:1] == "=":
                errors.append((headers[i], text, _("looks like a formula: import values, not formulas")))
            texts[i] = text
        if errors:
            return None, errors
        row: list[Any] = [""] * len(ROW_FIELDS) + [None, None]
        i = self.email_index
        raw = texts[i]
        if not raw:
            errors.append((headers[i], "", _("email is required to import: duplicates are found by email")))
        else:
            try:
                row[0] = normalise_email(raw)
            except InvalidEmail as exc:
                errors.append((headers[i], raw, _("invalid email address: %(reason)s") % {"reason": exc}))
            else:
                if self.erased and email_hash(row[0]) in self.erased:
                    errors.append((headers[i], raw, _("this person's data was erased on request: they are not "
                                                      "imported again")))
        for i, family, given, kana in self.wholes:
            text = texts[i]
            if text:
                if kana:
                    text = unicodedata.normalize("NFKC", text)
                parts = text.replace("\u3000", " ").split(None, 1)
                if parts:
                    row[family] = parts[0]
                    row[given] = parts[1].strip() if len(parts) > 1 else ""
        for position, i, kana in self.texts:
            text = texts[i]
            if text:
                row[position] = unicodedata.normalize("NFKC", text) if kana else text
        for position, limit, target in self.limits:
            if len(row[position]) > limit:
                errors.append((self.plan.header_of(target), row[position][:200],
                               _("is longer than %(n)s characters") % {"n": limit}))
        for target, position, i in self.coded:
            text = texts[i]
            if text:
                code, problem = self._coded(target, text)
                if problem:
                    errors.append((headers[i], text, problem))
                else:
                    row[position] = code
        if row[I_PREFECTURE]:
            row[I_REGION] = PREFECTURE_REGION.get(row[I_PREFECTURE], "")
        i = self.tags_index
        if i is not None and texts[i]:
            names = [t.strip() for t in re.split(r"[,、;]", texts[i]) if t.strip()]
            if any(len(t) > 100 for t in names):
                errors.append((headers[i], texts[i][:200], _("a tag is longer than 100 characters")))
            elif names:
                row[I_TAGS] = tuple(dict.fromkeys(names))
        if self.custom:
            custom: dict[str, Any] = {}
            for key, i, definition in self.custom:
                raw = cells[i] if i < n else ""
                try:
                    value = custom_fields.clean_value(definition, texts[i] if isinstance(raw, str) else raw)
                except custom_fields.FieldError as exc:
                    errors.append((headers[i], cell_text(raw), str(exc)))
                    continue
                if value is not None:
                    custom[key] = value
            row[I_CUSTOM] = custom or None
        if errors:
            return None, errors
        return row, []


def _parse(plan: _Plan, report_path: str, emit: Callable[[tuple], bool]) -> None:
    """Reads and checks every row, writes the error report, and emits
    ("chunk", rows, fraction read, rows read so far) … then ("end", stats, 1.0, rows read).
    Touches no database, so it can run in another thread or process. Stops when emit says False."""
    checker = _RowChecker(plan)
    stats = {"rows": 0, "good": 0, "error_rows": 0, "error_lines": 0}
    seen: dict[str, int] = {}
    chunk: list[list[Any]] = []
    position = _Position(plan.size)
    email_header = plan.header_of("email")
    with open(report_path, "w", encoding="utf-8-sig", newline="") as report:
        writer = csv.writer(report)
        report.write(REPORT_HEADER.removeprefix("\ufeff"))
        try:
            records = plan.records(position)
            next(records, None)  # the header
            for record in records:
                cells = record.cells
                if cells is None:
                    stats["rows"] += 1
                    stats["error_rows"] += 1
                    stats["error_lines"] += 1
                    writer.writerow([record.number, "", "", record.problem])
                    continue
                if checker.is_blank(cells):
                    continue
                stats["rows"] += 1
                row, errors = checker.check(cells, record.number)
                if row is not None:
                    first = seen.get(row[0])
                    if first is not None:
                        errors = [(email_header, row[0],
                                   _("duplicate of row %(row)s (the same email address)") % {"row": first})]
                        row = None
                    else:
                        seen[row[0]] = record.number
                if errors:
                    stats["error_rows"] += 1
                    stats["error_lines"] += len(errors)
                    for column, value, message in errors:
                        value = str(value)[:200].replace("\r", " ").replace("\n", " ")
                        writer.writerow([record.number, column, safe_cell(value), message])
                    continue
                stats["good"] += 1
                chunk.append(row)
                if len(chunk) >= plan.chunk_rows:
                    if not emit(("chunk", chunk, position.fraction, stats["rows"])):
                        return
                    chunk = []
        except ImportFatalError as exc:
            exc.stats = stats
            raise
    if chunk and not emit(("chunk", chunk, position.fraction, stats["rows"])):
        return
    emit(("end", stats, 1.0, stats["rows"]))


class _ThreadParser:
    """Runs `_parse` in a thread: no start-up cost, for small files."""

    def __init__(self, plan: _Plan, report_path: str):
        self.plan, self.report_path = plan, report_path
        self.out: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._main, name="import-parser", daemon=True)

    def _emit(self, item: tuple) -> bool:
        while not self.stopped.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _main(self) -> None:
        try:
            with translation.override(self.plan.language):
                _parse(self.plan, self.report_path, self._emit)
        except ImportFatalError as exc:
            self._emit(("error", (True, str(exc), getattr(exc, "stats", None)), 0.0, 0))
        except BaseException as exc:  # handed to the writer, which fails the job
            logger.exception("import parser failed")
            self._emit(("error", (False, repr(exc), None), 0.0, 0))

    def start(self) -> None:
        self.thread.start()

    def get(self) -> tuple:
        return self.out.get()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def parse_to_stream(plan_fields: dict[str, Any], out) -> None:
    """The parser process's work (see `tasks.import_parser_main`): parse, writing every item
    pickled to `out`, a pipe read only by the import that started this process."""
    plan = _Plan(**plan_fields)

    def emit(item: tuple) -> bool:
        pickle.dump(item, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
        return True

    try:
        with translation.override(plan.language):
            _parse(plan, plan.report_path, emit)
    except ImportFatalError as exc:
        emit(("error", (True, str(exc), getattr(exc, "stats", None)), 0.0, 0))
    except BaseException:
        import traceback

        emit(("error", (False, traceback.format_exc(limit=5), None), 0.0, 0))


class _ProcessParser:
    """Runs `_parse` in a child process, so checking rows (Python) and writing them (the database
    driver) use two cores instead of taking turns on one interpreter lock. A thread keeps a few
    chunks read ahead from the pipe, so neither side waits for the other; the bounded queue holds
    the parser back when the writer falls behind, so memory stays bounded."""

    def __init__(self, plan: _Plan, report_path: str):
        self.plan = dataclasses.replace(plan, report_path=report_path)
        self.process: subprocess.Popen | None = None
        self.out: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="import-parser-pipe", daemon=True)

    def start(self) -> None:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE}
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-c", "from kizuna.contacts.tasks import import_parser_main; import_parser_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self.process.stdin.write(json.dumps(dataclasses.asdict(self.plan)).encode() + b"\n")
        self.process.stdin.close()
        self.thread.start()

    def _pump(self) -> None:
        while not self.stopped.is_set():
            try:
                item = pickle.load(self.process.stdout)  # noqa: S301 (written by our own child process)
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                code = self.process.wait()
                item = ("error", (False, _("the file reader stopped unexpectedly (exit code %(code)s)")
                                  % {"code": code}, None), 0.0, 0)
            while not self.stopped.is_set():
                try:
                    self.out.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if item[0] != "chunk":
                return

    def get(self) -> tuple:
        return self.out.get()

    def stop(self) -> None:
        if self.process is None:
            return
        self.stopped.set()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.thread.join(timeout=10)
        self.process.stdout.close()


def _parser_for(plan: _Plan, report_path: str) -> _ThreadParser | _ProcessParser:
    if plan.size >= PARSE_IN_PROCESS_FROM:
        return _ProcessParser(plan, report_path)
    return _ThreadParser(plan, report_path)


# --- The engine: writing --------------------------------------------------------------------------

def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


class _Writer:
    """Writes chunks of checked rows set-wise. Subclasses differ in how rows reach the database:
    executemany on SQLite (in-process, already fast), COPY into a temporary table on PostgreSQL
    (one round trip per chunk instead of one per row)."""

    def __init__(self, job: ImportJob, plan: _Plan, cursor):
        self.job, self.plan, self.cur = job, plan, cursor
        self.policy = job.duplicate_policy
        self.now = timezone.now()
        self.db_now = connection.ops.adapt_datetimefield_value(self.now)
        self.created = self.updated = self.skipped = 0
        self.companies: dict[str, int] = {}
        self.tag_ids: dict[str, int] = {}
        self.job_tag_ids: list[int] = []
        self.list_id: int | None = None
        self.mapped = set(plan.columns)
        if "full_name" in self.mapped:
            self.mapped |= {"family_name", "given_name"}
        if "full_name_kana" in self.mapped:
            self.mapped |= {"family_name_kana", "given_name_kana"}
        self.has_custom = bool(plan.custom)
        contact_fields = [f for f in Contact._meta.concrete_fields if not f.primary_key]
        self.columns = [f.column for f in contact_fields]
        self.defaults = {f.column: f.get_default() for f in contact_fields}
        self.defaults["custom"] = "{}"
        self.defaults["source"] = Source.IMPORT
        self.defaults["created_at"] = self.defaults["updated_at"] = self.db_now
        self.template = [self.defaults[c] for c in self.columns]
        self.row_columns = [(self.columns.index(name), IDX[name]) for name in ROW_FIELDS]
        self.i_custom = self.columns.index("custom")
        self.i_company = self.columns.index("company_id")
        self.i_stage = self.columns.index("lifecycle_stage")
        self.method = (ConsentRecord.Method.BUSINESS_CARD if job.kind == ImportJob.Kind.BUSINESS_CARDS
                       else ConsentRecord.Method.IMPORT)
        self.actor_id = job.created_by_id
        self.links = bool(job.tags or job.list_name or job.consent_topic_id)

    # -- shared set-wise helpers

    def _in(self, values: list[Any]) -> tuple[str, list[Any]]:
        """A membership test: `= ANY(%s)` with one array on PostgreSQL, IN (…) on SQLite."""
        raise NotImplementedError

    def bulk_insert(self, model_or_table, columns: list[str], rows: list[tuple], conflict: str,
                    pg_types: list[str]) -> int:
        raise NotImplementedError

    def prepare(self) -> None:
        """Tags and the list are created inside the import's transaction: all or nothing."""
        for name in self.job.tags:
            self.tag_ids[name] = Tag.objects.get_or_create(name=name)[0].pk
        self.job_tag_ids = [self.tag_ids[n] for n in self.job.tags]
        if self.job.list_name:
            contact_list, _created = ContactList.objects.get_or_create(name=self.job.list_name)
            self.list_id = contact_list.pk
            self.job.contact_list = contact_list

    def _company_ids(self, rows: list[list[Any]]) -> None:
        """Links business domains to companies, creating the missing ones (free mail never)."""
        wanted: dict[str, str] = {}
        for row in rows:
            domain = domain_of(row[0])
            if domain not in self.companies and domain not in wanted and not is_free_mail(domain):
                wanted[domain] = (row[IDX["company_name"]] or domain)[:255]
        if not wanted:
            return
        domains = list(wanted)
        test, params = self._in(domains)
        self.cur.execute(f"SELECT domain, id FROM {_table(Company)} WHERE domain {test}", params)
        self.companies.update(self.cur.fetchall())
        missing = [d for d in domains if d not in self.companies]
        if missing:
            self.bulk_insert(Company, ["name", "domain", "industry", "company_size", "prefecture", "address", "phone",
                                       "website", "custom", "created_at", "updated_at"],
                             [(wanted[d], d, "", "", "", "", "", "", "{}", self.db_now, self.db_now) for d in missing],
                             "ON CONFLICT (domain) DO NOTHING",
                             ["text", "text", "text", "text", "text", "text", "text", "text", "jsonb", "timestamptz",
                              "timestamptz"])
            test, params = self._in(missing)
            self.cur.execute(f"SELECT domain, id FROM {_table(Company)} WHERE domain {test}", params)
            self.companies.update(self.cur.fetchall())

    def _insert_values(self, row: list[Any]) -> list[Any]:
        """All columns of a new contact (the stage as given: blank means "the default" for a new
        contact, "unchanged" for an existing one)."""
        values = self.template.copy()
        for position, index in self.row_columns:
            values[position] = row[index]
        if row[I_CUSTOM]:
            values[self.i_custom] = json.dumps(row[I_CUSTOM], ensure_ascii=False)
        values[self.i_company] = self.companies.get(domain_of(row[0]))
        return values

    def _set_clauses(self, value: Callable[[str], str], alias: str) -> list[str]:
        """SET expressions for an existing contact under the duplicate policy: `update` lets
        non-blank values overwrite; `fill` writes only into empty fields."""
        c = alias
        clauses = []
        text_fields = [f for f in ROW_FIELDS if f in self.mapped and f not in ("email", "region")]
        for name in text_fields:
            col = _q(name)
            if self.policy == ImportJob.DuplicatePolicy.UPDATE:
                clauses.append(f"{col} = COALESCE(NULLIF({value(name)}, ''), {c}{col})")
            else:
                clauses.append(f"{col} = CASE WHEN {c}{col} = '' THEN {value(name)} ELSE {c}{col} END")
            if name == "prefecture":
                region = _q("region")
                if self.policy == ImportJob.DuplicatePolicy.UPDATE:
                    clauses.append(f"{region} = COALESCE(NULLIF({value('region')}, ''), {c}{region})")
                else:
                    clauses.append(f"{region} = CASE WHEN {c}{col} = '' AND {value('prefecture')} <> '' "
                                   f"THEN {value('region')} ELSE {c}{region} END")
        if self.has_custom:
            clauses.append(self._merge_custom(value("custom"), c))
        clauses.append(f"{_q('company_id')} = COALESCE({c}{_q('company_id')}, {value('company_id')})")
        clauses.append(f"{_q('updated_at')} = {value('updated_at')}")
        return clauses

    def _merge_custom(self, new: str, c: str) -> str:
        raise NotImplementedError

    def write(self, chunk: list[list[Any]]) -> None:
        """Inserts the new contacts, then applies the duplicate policy to those that already
        existed: they are the rows the insert skipped (found by the unique email), so a contact
        created meanwhile by someone else is handled like any other existing one."""
        self._company_ids(chunk)
        inserted = self._insert_new(chunk)
        self.created += len(inserted)
        ids = dict(inserted)
        rest = [row for row in chunk if row[0] not in inserted]
        if rest:
            existing = self._existing_ids(rest)
            rest = [row for row in rest if row[0] in existing]
            if self.policy == ImportJob.DuplicatePolicy.SKIP:
                self.skipped += len(rest)
            else:
                self._update_existing(rest, existing)
                self.updated += len(rest)
                ids.update(existing)
        if self.links or any(row[I_TAGS] for row in chunk):
            touched = [(ids[row[0]], row) for row in chunk if ids.get(row[0]) is not None]
            self._link(touched, new_ids=set(inserted.values()))

    def _insert_new(self, chunk: list[list[Any]]) -> dict[str, int | None]:
        """Inserts the rows whose email is new: {email: id} of those inserted (ids only when
        tags, a list or consent need them, else None)."""
        raise NotImplementedError

    def _existing_ids(self, rows: list[list[Any]]) -> dict[str, int]:
        raise NotImplementedError

    def _update_existing(self, rows: list[list[Any]], existing: dict[str, int]) -> None:
        raise NotImplementedError

    def _link(self, touched: list[tuple[int, list[Any]]], new_ids: set[int]) -> None:
        """Tags, list membership and consent (with its ledger) for the contacts written."""
        if not touched:
            return
        ids = [cid for cid, _row in touched]
        pairs = [(cid, tag_id) for cid in ids for tag_id in self.job_tag_ids]
        row_tags = {name for _cid, row in touched if row[I_TAGS] for name in row[I_TAGS]}
        unknown = [name for name in row_tags if name not in self.tag_ids]
        if unknown:
            self.bulk_insert(Tag, ["name"], [(n,) for n in unknown], "ON CONFLICT (name) DO NOTHING", ["text"])
            test, params = self._in(unknown)
            self.cur.execute(f"SELECT name, id FROM {_table(Tag)} WHERE name {test}", params)
            self.tag_ids.update(self.cur.fetchall())
        if row_tags:
            pairs += [(cid, self.tag_ids[name]) for cid, row in touched if row[I_TAGS] for name in row[I_TAGS]
                      if self.tag_ids[name] not in self.job_tag_ids]
        if pairs:
            self.bulk_insert(Contact.tags.through, ["contact_id", "tag_id"], pairs,
                             "ON CONFLICT (contact_id, tag_id) DO NOTHING", ["bigint", "bigint"])
        if self.list_id is not None:
            self.bulk_insert(ListMembership, ["contact_list_id", "contact_id", "added_at", "source"],
                             [(self.list_id, cid, self.db_now, Source.IMPORT) for cid in ids],
                             "ON CONFLICT (contact_list_id, contact_id) DO NOTHING",
                             ["bigint", "bigint", "timestamptz", "text"])
        if self.job.consent_topic_id:
            self._consent(ids, new_ids)

    def _consent(self, ids: list[int], new_ids: set[int]) -> None:
        status, topic_id = self.job.consent_status, self.job.consent_topic_id
        old = [cid for cid in ids if cid not in new_ids]
        current: dict[int, str] = {}
        if old:
            test, params = self._in(old)
            self.cur.execute(f"SELECT contact_id, status FROM {_table(Consent)} WHERE topic_id = %s "
                             f"AND contact_id {test}", [topic_id, *params])
            current = dict(self.cur.fetchall())
        if self.policy == ImportJob.DuplicatePolicy.FILL:
            changed = [cid for cid in ids if cid not in current]
        else:
            changed = [cid for cid in ids if current.get(cid) != status]
        if not changed:
            return
        self.bulk_insert(Consent, ["contact_id", "topic_id", "status", "updated_at"],
                         [(cid, topic_id, status, self.db_now) for cid in changed],
                         "ON CONFLICT (contact_id, topic_id) DO UPDATE SET status = excluded.status, "
                         "updated_at = excluded.updated_at",
                         ["bigint", "bigint", "text", "timestamptz"])
        source = self.job.consent_source[:255]
        self.bulk_insert(ConsentRecord, ["contact_id", "topic_id", "status", "at", "method", "source", "text_shown",
                                         "text_version", "actor_id", "reason"],
                         [(cid, topic_id, status, self.db_now, self.method, source, "", "", self.actor_id, "")
                          for cid in changed], "",
                         ["bigint", "bigint", "text", "timestamptz", "text", "text", "text", "text", "bigint", "text"])

    def finish(self) -> None:
        pass


class _SqliteWriter(_Writer):
    def _in(self, values):
        return f"IN ({', '.join(['%s'] * len(values))})", list(values)

    def bulk_insert(self, model_or_table, columns, rows, conflict, pg_types) -> int:
        if not rows:
            return 0
        cols = ", ".join(_q(c) for c in columns)
        marks = ", ".join(["%s"] * len(columns))
        self.cur.executemany(f"INSERT INTO {_table(model_or_table)} ({cols}) VALUES ({marks}) {conflict}", rows)
        return self.cur.rowcount

    def _merge_custom(self, new, c):
        if self.policy == ImportJob.DuplicatePolicy.UPDATE:
            return f"{_q('custom')} = json_patch({c}{_q('custom')}, {new})"
        return f"{_q('custom')} = json_patch({new}, {c}{_q('custom')})"

    def _insert_new(self, chunk):
        # The import holds SQLite's write lock for its whole transaction, so what exists now is
        # exactly what the insert will find: no race to handle.
        self.prefetched = self._existing_ids(chunk)
        new = [row for row in chunk if row[0] not in self.prefetched]
        values = []
        for row in new:
            row_values = self._insert_values(row)
            if not row_values[self.i_stage]:
                row_values[self.i_stage] = LifecycleStage.LEAD
            values.append(row_values)
        self.bulk_insert(Contact, self.columns, values, "ON CONFLICT (email) DO NOTHING", [])
        if not (self.links or any(row[I_TAGS] for row in new)):
            return dict.fromkeys((row[0] for row in new), None)
        test, params = self._in([row[0] for row in new])
        self.cur.execute(f"SELECT email, id FROM {_table(Contact)} WHERE email {test}", params)
        return dict(self.cur.fetchall())

    def _existing_ids(self, rows):
        prefetched = getattr(self, "prefetched", None)
        if prefetched is not None:
            return {row[0]: prefetched[row[0]] for row in rows if row[0] in prefetched}
        test, params = self._in([row[0] for row in rows])
        self.cur.execute(f"SELECT email, id FROM {_table(Contact)} WHERE email {test}", params)
        return dict(self.cur.fetchall())

    def _update_existing(self, rows, existing):
        order: list[str] = []

        def value(name: str) -> str:
            order.append(name)
            return "%s"

        clauses = self._set_clauses(value, "")
        params = []
        for row in rows:
            source = {name: row[IDX[name]] for name in ROW_FIELDS}
            source["custom"] = json.dumps(row[I_CUSTOM] or {}, ensure_ascii=False)
            source["company_id"] = self.companies.get(domain_of(row[0]))
            source["updated_at"] = self.db_now
            params.append([source[name] for name in order] + [existing[row[0]]])
        self.cur.executemany(f"UPDATE {_table(Contact)} SET {', '.join(clauses)} WHERE id = %s", params)


class _PostgresWriter(_Writer):
    STAGE = "kizuna_import_stage"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # COPY sends text anyway: formatting the timestamp once beats a million datetime dumps.
        stamp = self.now.isoformat()
        for column in ("created_at", "updated_at"):
            self.template[self.columns.index(column)] = stamp

    def prepare(self):
        super().prepare()
        cols = ", ".join(_q(c) for c in self.columns)
        # Dropped at commit; the DROP covers an import nested in an outer transaction (tests).
        self.cur.execute(f"DROP TABLE IF EXISTS pg_temp.{self.STAGE}")
        self.cur.execute(f"CREATE TEMPORARY TABLE {self.STAGE} ON COMMIT DROP AS "
                         f"SELECT {cols} FROM {_table(Contact)} WITH NO DATA")

    def _in(self, values):
        return "= ANY(%s)", [list(values)]

    def bulk_insert(self, model_or_table, columns, rows, conflict, pg_types) -> int:
        if not rows:
            return 0
        cols = ", ".join(_q(c) for c in columns)
        arrays = ", ".join(f"%s::{t}[]" for t in pg_types)
        self.cur.execute(f"INSERT INTO {_table(model_or_table)} ({cols}) SELECT * FROM unnest({arrays}) {conflict}",
                         [list(col) for col in zip(*rows, strict=True)])
        return self.cur.rowcount

    def _merge_custom(self, new, c):
        if self.policy == ImportJob.DuplicatePolicy.UPDATE:
            return f"{_q('custom')} = {c}{_q('custom')} || {new}"
        return f"{_q('custom')} = {new} || {c}{_q('custom')}"

    def _insert_new(self, chunk):
        """COPY straight into the contacts table when every address is new (the common case of a
        big import, and the cheapest way in); a duplicate makes PostgreSQL refuse the whole COPY,
        which is undone to its savepoint, and the chunk goes the careful way instead."""
        import psycopg

        raw = self.cur.cursor
        want_ids = self.links or any(row[I_TAGS] for row in chunk)
        before = 0
        if want_ids:
            raw.execute(f"SELECT COALESCE(MAX(id), 0) FROM {_table(Contact)}")
            (before,) = raw.fetchone()
        cols = ", ".join(_q(c) for c in self.columns)
        try:
            with transaction.atomic(), raw.copy(f"COPY {_table(Contact)} ({cols}) FROM STDIN") as copy:
                for row in chunk:
                    values = self._insert_values(row)
                    if not values[self.i_stage]:
                        values[self.i_stage] = LifecycleStage.LEAD
                    copy.write_row(values)
        except psycopg.errors.UniqueViolation:
            return self._insert_staged(chunk)
        if not want_ids:
            return dict.fromkeys((row[0] for row in chunk), None)
        # Ours are the rows after `before` (ids only grow); others may have added a few meanwhile.
        emails = {row[0] for row in chunk}
        raw.execute(f"SELECT email, id FROM {_table(Contact)} WHERE id > %s", [before])
        return {email: cid for email, cid in raw.fetchall() if email in emails}

    def _insert_staged(self, chunk):
        """Stages the chunk in a temporary table and inserts the new rows with ON CONFLICT."""
        raw = self.cur.cursor
        raw.execute(f"TRUNCATE {self.STAGE}")
        cols = ", ".join(_q(c) for c in self.columns)
        with raw.copy(f"COPY {self.STAGE} ({cols}) FROM STDIN") as copy:
            for row in chunk:
                copy.write_row(self._insert_values(row))
        select = ", ".join(f"COALESCE(NULLIF({_q(c)}, ''), '{LifecycleStage.LEAD}')" if c == "lifecycle_stage"
                           else _q(c) for c in self.columns)
        raw.execute(f"INSERT INTO {_table(Contact)} ({cols}) SELECT {select} FROM {self.STAGE} "
                    f"ON CONFLICT (email) DO NOTHING RETURNING email, id")
        return dict(raw.fetchall())

    def _existing_ids(self, rows):
        # Joining the staged chunk is cheaper than binding thousands of addresses as an array.
        wanted = {row[0] for row in rows}
        raw = self.cur.cursor
        raw.execute(f"SELECT s.email, c.id FROM {self.STAGE} s JOIN {_table(Contact)} c ON c.email = s.email")
        return {email: cid for email, cid in raw.fetchall() if email in wanted}

    def _update_existing(self, rows, existing):
        clauses = self._set_clauses(lambda name: f"s.{_q(name)}", "c.")
        # The target of SET is never qualified in PostgreSQL; the old values are c.<column>.
        self.cur.execute(f"UPDATE {_table(Contact)} AS c SET {', '.join(clauses)} FROM {self.STAGE} AS s "
                         f"WHERE c.email = s.email AND c.id = ANY(%s)", [[existing[row[0]] for row in rows]])


def _writer_for(job: ImportJob, plan: _Plan, cursor) -> _Writer:
    return _PostgresWriter(job, plan, cursor) if connection.vendor == "postgresql" else _SqliteWriter(
        job, plan, cursor)


# --- Running a job -----------------------------------------------------------------------------

def _set_progress(job_id: int, **values) -> None:
    cache.set(_progress_key(job_id), {**values, "at": time.time()}, PROGRESS_TTL)


def run_job(job_id: int, *, on_progress: Callable[[dict[str, Any]], None] | None = None) -> ImportJob:
    """Runs a queued import to the end. Safe to call twice: only a queued job is claimed."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.VALIDATING, started_at=timezone.now())
    job = ImportJob.objects.select_related("created_by", "consent_topic").get(pk=job_id)
    if not claimed:
        logger.info("import job %s is %s, not queued: nothing to do", job_id, job.status)
        return job
    language = (job.created_by.language if job.created_by else "") or settings.LANGUAGE_CODE
    with translation.override(language):
        try:
            _run(job, on_progress)
        except ImportFatalError as exc:
            _fail(job, str(exc))
        except Exception as exc:
            logger.exception("import job %s failed", job_id)
            _fail(job, _("unexpected error, nothing was imported: %(error)s") % {"error": exc})
    job.refresh_from_db()
    return job


def _fail(job: ImportJob, message: str) -> None:
    """Marks the job failed (its transaction was rolled back: nothing was imported) and records
    the attempt in the audit log."""
    job.status = ImportJob.Status.FAILED
    job.failure = message[:5000]
    job.created_count = job.updated_count = job.skipped_count = 0
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "failure", "created_count", "updated_count", "skipped_count", "finished_at",
                            "error_report", "error_count", "total_rows", "processed_rows"])
    cache.delete(_progress_key(job.pk))
    audit.record(job.created_by, "import_failed", job, label=job.original_name[:255],
                 changes={"file": job.original_name, "rows": job.total_rows, "error": job.failure})


def _save_report(job: ImportJob, report_path: str) -> None:
    """Keeps the error report (UTF-8 with a BOM, so Excel opens it) with the job."""
    if os.path.getsize(report_path) <= len(REPORT_HEADER.encode()):
        return  # no errors
    if job.error_report:
        job.error_report.delete(save=False)
    with open(report_path, "rb") as fh:
        job.error_report.save(f"import-{job.pk}-errors.csv", File(fh), save=False)


def _run(job: ImportJob, on_progress) -> None:
    """Parser and writer side by side; everything the writer does is one transaction."""
    plan = _Plan.for_job(job, custom_fields.definitions(CustomField.Target.CONTACT))
    fd, report_path = tempfile.mkstemp(prefix=f"kizuna-import-{job.pk}-", suffix=".csv")
    os.close(fd)
    parser = _parser_for(plan, report_path)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.WRITING)
    _set_progress(job.pk, read=0, written=0, percent=0)
    written = rows_read = 0
    stats: dict[str, int] | None = None
    parser.start()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                writer = _writer_for(job, plan, cursor)
                writer.prepare()
                while True:
                    kind, payload, fraction, rows_read = parser.get()
                    if kind == "error":
                        fatal, message, stats = payload
                        raise ImportFatalError(message) if fatal else RuntimeError(message)
                    if kind == "end":
                        stats = payload
                        break
                    writer.write(payload)
                    written += len(payload)
                    live = {"read": rows_read, "written": written, "percent": min(fraction * 100, 99.0)}
                    _set_progress(job.pk, **live)
                    if on_progress:
                        on_progress(live)
                _set_progress(job.pk, read=rows_read, written=written, percent=99.0, finishing=True)
                writer.finish()
            _save_report(job, report_path)
            job.status = ImportJob.Status.DONE
            job.total_rows = job.processed_rows = stats["rows"]
            job.error_count = stats["error_rows"]
            job.created_count, job.updated_count, job.skipped_count = writer.created, writer.updated, writer.skipped
            job.finished_at = timezone.now()
            job.save()
            audit.record(job.created_by, "import", job, label=job.original_name[:255], changes={
                "file": job.original_name, "kind": job.kind, "rows": stats["rows"], "created": writer.created,
                "updated": writer.updated, "skipped": writer.skipped, "errors": stats["error_rows"],
                "policy": job.duplicate_policy, "tags": job.tags, "list": job.list_name,
                "consent": ({"topic": job.consent_topic.key, "status": job.consent_status,
                             "source": job.consent_source} if job.consent_topic_id else None),
            })
        cache.delete(_progress_key(job.pk))
        if on_progress:
            on_progress({"read": stats["rows"], "written": written, "percent": 100.0, "finishing": True})
    except BaseException:
        parser.stop()
        job.refresh_from_db(fields=["contact_list"])
        job.total_rows = job.processed_rows = stats["rows"] if stats else rows_read
        job.error_count = stats["error_rows"] if stats else 0
        try:
            _save_report(job, report_path)
        except OSError:
            logger.exception("could not keep the error report of import %s", job.pk)
        raise
    finally:
        parser.stop()
        with contextlib.suppress(OSError):
            os.unlink(report_path)
