"""The content of a landing page variant: a list of blocks, checked before it is saved.

    [{"type": "heading", "text": "製造業のためのMA入門", "level": 1},
     {"type": "greeting", "known": "{name}様、いつもありがとうございます。", "anonymous": "ようこそ。"},
     {"type": "text", "text": "二段落目は空行で区切ります。"},
     {"type": "image", "src": "https://example.co.jp/cover.png", "alt": "表紙"},
     {"type": "form", "form": 3},
     {"type": "cta", "text": "資料を見る", "url": "/p/guide", "style": "primary"}]

`check()` returns the normalised list or raises BlocksError with every fault and its path
(`blocks[2].url`), the style of journey graphs and segment filters. Text is stored as typed and
escaped when shown; URLs are limited to http(s) and site-relative paths, so no block can carry
`javascript:` or `data:` into a page.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

MAX_BLOCKS = 60
BLOCK_TYPES = ("heading", "text", "greeting", "image", "form", "cta")
LIMITS = {"heading": 200, "text": 5000, "greeting": 200, "alt": 200, "cta": 100, "url": 2000}
KEY_RE = re.compile(r"[A-Z]")
_LOAD = object()  # "look the forms up"; None means the forms app is not installed


class BlocksError(ValueError):
    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))


def safe_url(value: Any) -> str | None:
    """An http(s) URL or a path on this site; anything else (javascript:, data:, //host) is None."""
    if not isinstance(value, str) or not value.strip() or len(value) > LIMITS["url"]:
        return None
    value = value.strip()
    if any(ord(ch) < 32 for ch in value):
        return None
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc:
        return value
    return None


def _forms() -> set[int] | None:
    """Ids of the forms a block may show, or None when the forms app is not installed."""
    try:
        from kizuna.capture.models import Form
    except ImportError:
        return None
    return set(Form.objects.values_list("id", flat=True))


def check(blocks: Any, *, forms: Any = _LOAD) -> list[dict]:
    errors: list[tuple[str, str]] = []
    if not isinstance(blocks, list):
        raise BlocksError([("blocks", "must be a list of blocks")])
    if len(blocks) > MAX_BLOCKS:
        errors.append(("blocks", f"a page may have at most {MAX_BLOCKS} blocks"))
    known_forms = _forms() if forms is _LOAD else forms
    out: list[dict] = []

    def text(block: dict, key: str, path: str, limit: int, required: bool = True) -> str:
        value = block.get(key, "")
        if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
            errors.append((f"{path}.{key}", f"must be a text of at most {limit} characters"
                           + (", not empty" if required else "")))
            return ""
        return value.strip()

    for i, block in enumerate(blocks):
        path = f"blocks[{i}]"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            errors.append((f"{path}.type", f"must be one of {', '.join(BLOCK_TYPES)}"))
            continue
        kind = block["type"]
        allowed = {"type"}
        item: dict[str, Any] = {"type": kind}
        if kind == "heading":
            allowed |= {"text", "level"}
            item["text"] = text(block, "text", path, LIMITS["heading"])
            level = block.get("level", 2)
            if level not in (1, 2, 3):
                errors.append((f"{path}.level", "must be 1, 2 or 3"))
            item["level"] = level
        elif kind == "text":
            allowed |= {"text"}
            item["text"] = text(block, "text", path, LIMITS["text"])
        elif kind == "greeting":
            allowed |= {"known", "anonymous"}
            item["known"] = text(block, "known", path, LIMITS["greeting"])
            item["anonymous"] = text(block, "anonymous", path, LIMITS["greeting"], required=False)
            if item["known"] and "{name}" not in item["known"]:
                errors.append((f"{path}.known", "must contain {name}, where the visitor's name goes"))
        elif kind == "image":
            allowed |= {"src", "alt"}
            item["src"] = safe_url(block.get("src"))
            if item["src"] is None:
                errors.append((f"{path}.src", "must be an http(s) address or a path on this site"))
            item["alt"] = text(block, "alt", path, LIMITS["alt"], required=False)
        elif kind == "form":
            allowed |= {"form"}
            form = block.get("form")
            if known_forms is None:
                errors.append((f"{path}.form", "forms are not available on this installation"))
            elif isinstance(form, bool) or not isinstance(form, int) or form not in known_forms:
                errors.append((f"{path}.form", f"no form with id {form!r}"))
            item["form"] = form
        elif kind == "cta":
            allowed |= {"text", "url", "style"}
            item["text"] = text(block, "text", path, LIMITS["cta"])
            item["url"] = safe_url(block.get("url"))
            if item["url"] is None:
                errors.append((f"{path}.url", "must be an http(s) address or a path on this site"))
            style = block.get("style", "primary")
            if style not in ("primary", "secondary"):
                errors.append((f"{path}.style", "must be primary or secondary"))
            item["style"] = style
        for extra in sorted(set(block) - allowed):
            errors.append((f"{path}.{extra}", "is not allowed here"))
        out.append(item)
    if errors:
        raise BlocksError(errors)
    return out


def check_variants(variants: Any, *, forms: Any = _LOAD) -> list[dict]:
    """[{"key": "A", "weight": 50, "blocks": [...]}, ...]: keys A–Z once each, weights adding to 100."""
    if not isinstance(variants, list) or not variants:
        raise BlocksError([("variants", "must be a non-empty list")])
    if len(variants) > 5:
        raise BlocksError([("variants", "a page may have at most 5 variants")])
    errors: list[tuple[str, str]] = []
    out: list[dict] = []
    seen: set[str] = set()
    known_forms = _forms() if forms is _LOAD else forms
    for i, variant in enumerate(variants):
        path = f"variants[{i}]"
        if not isinstance(variant, dict):
            errors.append((path, "must be an object with key, weight and blocks"))
            continue
        key = variant.get("key")
        if not isinstance(key, str) or not KEY_RE.fullmatch(key) or key in seen:
            errors.append((f"{path}.key", "must be one capital letter, different for each variant"))
        else:
            seen.add(key)
        weight = variant.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            errors.append((f"{path}.weight", "must be a whole percentage from 0 to 100"))
            weight = 0
        try:
            blocks = check(variant.get("blocks"), forms=known_forms)
        except BlocksError as exc:
            errors += [(f"{path}.{p}", m) for p, m in exc.errors]
            blocks = []
        out.append({"key": key, "weight": weight, "blocks": blocks})
    total = sum(v["weight"] for v in out)
    if not errors and total != 100:
        errors.append(("variants", f"the weights must add up to 100, not {total}"))
    if errors:
        raise BlocksError(errors)
    return out
