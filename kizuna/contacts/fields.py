"""Custom fields: validating values against their definitions.

One validator for the UI, the API and imports, so a value that one accepts, all accept.
Values are stored in the `custom` JSON of a contact or company in a canonical form:
text → str, number → int or float, date → 'YYYY-MM-DD', choice → str, multi_choice → [str],
boolean → bool.
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from collections.abc import Iterable
from typing import Any

from .models import CustomField

TRUE = {"1", "true", "yes", "y", "on", "はい", "○", "◯", "有", "あり"}
FALSE = {"0", "false", "no", "n", "off", "いいえ", "×", "無", "なし"}


class FieldError(ValueError):
    pass


def _parse_date(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).strip()
    t = t.replace("年", "-").replace("月", "-").replace("日", "").replace("/", "-").replace(".", "-")
    try:
        return dt.date.fromisoformat("-".join(p.zfill(2) for p in t.split("-"))).isoformat()
    except ValueError as exc:
        raise FieldError(f"{text!r} is not a date (use YYYY-MM-DD)") from exc


def clean_value(field: CustomField, value: Any) -> Any:
    """The canonical value, None for 'no value', or FieldError with a message for people."""
    if value is None or (isinstance(value, str) and not value.strip()) or value == []:
        if field.required:
            raise FieldError("is required")
        return None
    kind = field.field_type
    if kind == CustomField.Type.TEXT:
        text = str(value).strip()
        if len(text) > 2000:
            raise FieldError("is longer than 2,000 characters")
        return text
    if kind == CustomField.Type.NUMBER:
        if isinstance(value, bool):
            raise FieldError("must be a number")
        if isinstance(value, (int, float)):
            number = value
        else:
            text = unicodedata.normalize("NFKC", str(value)).strip().replace(",", "")
            try:
                number = int(text) if text.lstrip("-").isdigit() else float(text)
            except ValueError as exc:
                raise FieldError(f"{value!r} is not a number") from exc
        if isinstance(number, float) and not math.isfinite(number):
            raise FieldError("must be a finite number")
        return number
    if kind == CustomField.Type.DATE:
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        return _parse_date(str(value))
    if kind == CustomField.Type.BOOLEAN:
        if isinstance(value, bool):
            return value
        text = unicodedata.normalize("NFKC", str(value)).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise FieldError(f"{value!r} is not yes or no")
    if kind == CustomField.Type.CHOICE:
        text = str(value).strip()
        if text not in field.choices:
            raise FieldError(f"{text!r} is not one of: {', '.join(field.choices)}")
        return text
    if kind == CustomField.Type.MULTI_CHOICE:
        items: Iterable[Any]
        if isinstance(value, str):
            items = [p for p in value.replace("、", ",").replace(";", ",").split(",")]
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            raise FieldError("must be a list of choices")
        cleaned = [str(i).strip() for i in items if str(i).strip()]
        unknown = [i for i in cleaned if i not in field.choices]
        if unknown:
            raise FieldError(f"{', '.join(map(repr, unknown))} not among: {', '.join(field.choices)}")
        return list(dict.fromkeys(cleaned))
    raise FieldError(f"unknown field type {kind}")


def definitions(target: str) -> dict[str, CustomField]:
    return {f.key: f for f in CustomField.objects.filter(target=target)}


def clean_custom(
    target: str, values: dict[str, Any], *, existing: dict[str, Any] | None = None,
    defs: dict[str, CustomField] | None = None, partial: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Validates a {key: value} dict; returns (merged custom dict, {key: error})."""
    defs = definitions(target) if defs is None else defs
    result = dict(existing or {})
    errors: dict[str, str] = {}
    for key, raw in values.items():
        field = defs.get(key)
        if field is None:
            errors[key] = "is not a defined custom field"
            continue
        try:
            value = clean_value(field, raw)
        except FieldError as exc:
            errors[key] = str(exc)
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    if not partial:
        for key, field in defs.items():
            if field.required and key not in result and key not in errors:
                errors[key] = "is required"
    return result, errors


def validate_definition(field_type: str, choices: list[str]) -> list[str]:
    """Errors in a field definition itself."""
    problems = []
    if field_type in (CustomField.Type.CHOICE, CustomField.Type.MULTI_CHOICE):
        if not choices:
            problems.append("a choice field needs at least one choice")
        if len(set(choices)) != len(choices):
            problems.append("choices must be different from each other")
    elif choices:
        problems.append("only choice fields have choices")
    return problems
