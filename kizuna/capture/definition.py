"""A form's definition: a JSON document, checked before it is saved, with the path of every fault.

    {"language": "ja",
     "fields": [
       {"name": "email", "type": "email", "label": "メールアドレス", "required": true, "maps_to": "email"},
       {"name": "company", "type": "text", "label": "会社名", "maps_to": "company_name", "progressive": true},
       {"name": "agree", "type": "consent", "text": "ニュースレターを受け取る", "version": "2026-12",
        "topics": ["newsletter"]}],
     "pool": [{"name": "pref", "type": "prefecture", "label": "都道府県", "maps_to": "prefecture"}],
     "thank_you": {"message": "ありがとうございました。"},
     "actions": [{"type": "add_to_list", "list": 3}, {"type": "score", "model": 1, "points": 10}],
     "double_opt_in": {"template": 5},
     "spam": {"min_seconds": 3, "block_disposable": true},
     "allowed_origins": ["www.example.co.jp"]}

`check()` returns the normalised definition (defaults filled in) or raises DefinitionError with
every fault found, each with its path such as `fields[2].maps_to` — the style of the journey
graph (`nodes[3].then`) and of segment filters. What a field maps to decides which types it may
have, so a value the form accepts is one the contact service accepts too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kizuna.contacts.reference import normalise_company_size, normalise_industry, normalise_prefecture
from kizuna.contacts.services import CONTACT_TEXT_FIELDS

MAX_FIELDS = 50
MAX_POOL = 20
MAX_ACTIONS = 20
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
HONEYPOT = "website_url"
RESERVED = {HONEYPOT}
LANGUAGES = ("ja", "en")

TYPES = ("text", "textarea", "email", "phone", "number", "date", "select", "radio", "multiselect", "checkbox",
         "prefecture", "consent", "hidden")
CHOICE_TYPES = {"select", "radio", "multiselect"}
TEXT_LIMITS = {"text": 500, "textarea": 5000}
HIDDEN_SOURCES = ("page_url", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

_TEXTISH = {"text", "textarea", "select", "radio", "hidden"}
# Contact fields a form may fill, and the field types that can carry each.
CONTACT_TARGETS: dict[str, set[str]] = {
    **{name: set(_TEXTISH) for name in CONTACT_TEXT_FIELDS if name != "phone"},
    "email": {"email"},
    "phone": {"phone", "text", "hidden"},
    "prefecture": {"prefecture", "hidden"},
    "industry": {"select", "radio", "hidden"},
    "company_size": {"select", "radio", "number", "hidden"},
}
# Fields of the contact's company (linked by email domain): filled only where still empty.
COMPANY_TARGETS: dict[str, set[str]] = {
    "industry": {"select", "radio", "hidden"},
    "company_size": {"select", "radio", "number", "hidden"},
    "employees": {"number", "hidden"},
    "prefecture": {"prefecture", "hidden"},
    "address": {"text", "textarea", "hidden"},
    "phone": {"phone", "text", "hidden"},
    "website": {"text", "hidden"},
}
CUSTOM_TYPES: dict[str, set[str]] = {
    "text": {"text", "textarea", "select", "radio", "phone", "email", "hidden"},
    "number": {"number", "select", "radio", "hidden"},
    "date": {"date", "hidden"},
    "choice": {"select", "radio", "hidden"},
    "multi_choice": {"multiselect"},
    "boolean": {"checkbox", "hidden"},
}
NORMALISERS = {"industry": normalise_industry, "company_size": normalise_company_size,
               "prefecture": normalise_prefecture}
ACTION_TYPES = ("subscribe", "add_to_list", "add_tag", "score", "alert_owner", "enroll", "deliver_asset")


class DefinitionError(ValueError):
    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))


@dataclass
class CustomDef:
    type: str
    choices: list[str]
    required: bool


@dataclass
class Refs:
    """What a definition may name, loaded once per check."""

    contact_custom: dict[str, CustomDef] = field(default_factory=dict)
    company_custom: dict[str, CustomDef] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    lists: set[int] = field(default_factory=set)
    models: set[int] = field(default_factory=set)
    journeys: set[int] = field(default_factory=set)
    # id -> None when usable for a confirmation mail, else why not
    templates: dict[int, str | None] = field(default_factory=dict)
    write_keys: set[int] = field(default_factory=set)
    assets: set[int] | None = None  # None: the assets app is not installed

    @classmethod
    def load(cls) -> Refs:
        from kizuna.capture.actions import asset_support
        from kizuna.contacts.models import ContactList, CustomField, SubscriptionTopic
        from kizuna.events.models import WriteKey
        from kizuna.journeys.models import Journey
        from kizuna.messaging.models import EmailTemplate
        from kizuna.scoring.models import ScoringModel

        custom: dict[str, dict[str, CustomDef]] = {"contact": {}, "company": {}}
        for f in CustomField.objects.all():
            custom[f.target][f.key] = CustomDef(f.field_type, list(f.choices or []), f.required)
        templates: dict[int, str | None] = {}
        for t in EmailTemplate.objects.select_related("current"):
            templates[t.pk] = template_problem(t)
        support = asset_support()
        return cls(
            contact_custom=custom["contact"], company_custom=custom["company"],
            topics=set(SubscriptionTopic.objects.values_list("key", flat=True)),
            lists=set(ContactList.objects.values_list("id", flat=True)),
            models=set(ScoringModel.objects.values_list("id", flat=True)),
            journeys=set(Journey.objects.values_list("id", flat=True)),
            templates=templates, write_keys=set(WriteKey.objects.values_list("id", flat=True)),
            assets=set(support[0].objects.values_list("id", flat=True)) if support else None,
        )


def template_problem(template) -> str | None:
    """Why an email template cannot carry a confirmation link, or None when it can."""
    if template.kind != "transactional":
        return "must be a transactional template (a confirmation is not marketing)"
    if template.sender_id is None:
        return "has no sender"
    version = template.current
    if version is None:
        return "has no saved version"
    if "confirm_url" not in version.html and "confirm_url" not in (version.text or ""):
        return "does not contain {{ confirm_url }}, the link that confirms"
    return None


def safe_redirect(value: Any) -> str | None:
    """The URL when it is an absolute http(s) address a browser may be sent to, else None."""
    if not isinstance(value, str) or not value or len(value) > 2000 or value != value.strip():
        return None
    if any(ord(c) < 33 or c in '\\"<>`' for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    return value


DOMAIN_RE = re.compile(r"(\*\.)?([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def origin_domain(value: str) -> str | None:
    """'https://www.example.co.jp' or 'www.example.co.jp' or '*.example.co.jp' → the host pattern."""
    text = value.strip().lower()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query:
            return None
        text = parts.hostname or ""
    if text == "localhost" or DOMAIN_RE.fullmatch(text):
        return text
    return None


class _Checker:
    def __init__(self, refs: Refs, previous: dict | None):
        self.refs = refs
        self.previous = previous or {}
        self.errors: list[tuple[str, str]] = []
        self.names: set[str] = set()

    def fail(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def text(self, value: Any, path: str, limit: int, *, required: bool = False) -> str:
        if value is None:
            value = ""
        if not isinstance(value, str):
            self.fail(path, "must be a string")
            return ""
        if required and not value.strip():
            self.fail(path, "is required")
        elif len(value) > limit:
            self.fail(path, f"is {len(value)} characters; the limit is {limit}")
        return value.strip()

    def flag(self, value: Any, path: str, default: bool = False) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, "must be true or false")
            return default
        return value

    def ref(self, value: Any, known: set[int], path: str, what: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value not in known:
            self.fail(path, f"no {what} with id {value!r}")
            return None
        return value

    def number(self, value: Any, path: str) -> float | int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, "must be a number")
            return None
        return value

    # --- fields --------------------------------------------------------------------------
    def options(self, value: Any, path: str) -> list[dict[str, str]]:
        if not isinstance(value, list) or not value:
            self.fail(path, "a choice field needs a list of options")
            return []
        out: list[dict[str, str]] = []
        for index, option in enumerate(value):
            where = f"{path}[{index}]"
            if isinstance(option, str):
                option = {"value": option, "label": option}
            if not isinstance(option, dict) or not isinstance(option.get("value"), str) or not option["value"].strip():
                self.fail(where, "an option is a string or {\"value\": …, \"label\": …}")
                continue
            label = option.get("label", option["value"])
            if not isinstance(label, str) or len(label) > 200 or len(option["value"]) > 200:
                self.fail(where, "value and label are strings of at most 200 characters")
                continue
            out.append({"value": option["value"].strip(), "label": label.strip() or option["value"].strip()})
        if len({o["value"] for o in out}) != len(out):
            self.fail(path, "options must differ from each other")
        if len(out) > 200:
            self.fail(path, "at most 200 options")
        return out

    def target(self, f: dict, path: str) -> None:
        """Checks that the field's type (and options or value) suit what it maps to."""
        target = f["maps_to"]
        kind = f["type"]
        if target.startswith("custom."):
            found = self.refs.contact_custom.get(target[7:])
            allowed = CUSTOM_TYPES.get(found.type, set()) if found else None
            what = f"contact custom field {target[7:]!r}"
        elif target.startswith("company.custom."):
            found = self.refs.company_custom.get(target[15:])
            allowed = CUSTOM_TYPES.get(found.type, set()) if found else None
            what = f"company custom field {target[15:]!r}"
        elif target.startswith("company."):
            found, allowed, what = None, COMPANY_TARGETS.get(target[8:]), f"company field {target[8:]!r}"
        else:
            found, allowed, what = None, CONTACT_TARGETS.get(target), f"contact field {target!r}"
        if allowed is None:
            known = ", ".join(sorted(CONTACT_TARGETS))
            self.fail(f"{path}.maps_to", f"unknown target {target!r}: use a contact field ({known}), "
                                         "custom.<key>, company.<field> or company.custom.<key>")
            return
        if kind not in allowed:
            self.fail(f"{path}.type", f"a {kind} field cannot fill the {what}; use one of {', '.join(sorted(allowed))}")
            return
        values = [o["value"] for o in f.get("options", [])]
        if kind == "hidden" and f.get("value"):
            values = [f["value"]]
        base = target.rsplit(".", 1)[-1]
        if found is not None and found.type in ("choice", "multi_choice"):
            unknown = [v for v in values if v not in found.choices]
            if unknown:
                self.fail(f"{path}.options", f"{', '.join(map(repr, unknown))} not among the choices of the {what}: "
                                             f"{', '.join(found.choices)}")
        elif found is None and base in NORMALISERS and not target.startswith("company.custom."):
            bad = [v for v in values if NORMALISERS[base](v) is None]
            if bad:
                self.fail(f"{path}.options" if kind != "hidden" else f"{path}.value",
                          f"{', '.join(map(repr, bad))} is not a valid {base.replace('_', ' ')}")

    def field(self, raw: Any, path: str, *, in_pool: bool) -> dict | None:
        if not isinstance(raw, dict):
            self.fail(path, "a field is an object with name, type and label")
            return None
        known_keys = {"name", "type", "label", "required", "maps_to", "help", "placeholder", "options", "min",
                      "max", "max_length", "progressive", "text", "version", "topics", "policy_url", "value", "from"}
        for key in sorted(set(raw) - known_keys):
            self.fail(f"{path}.{key}", "is not a field setting")
        name = raw.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            self.fail(f"{path}.name", "must be 1–40 lower-case letters, digits or _, starting with a letter")
            name = None
        elif name in RESERVED or name.startswith("kz_"):
            self.fail(f"{path}.name", f"{name!r} is reserved")
        elif name in self.names:
            self.fail(f"{path}.name", f"another field is already named {name!r}")
        else:
            self.names.add(name)
        kind = raw.get("type")
        if kind not in TYPES:
            self.fail(f"{path}.type", f"must be one of {', '.join(TYPES)}")
            return None
        out: dict[str, Any] = {"name": name or "", "type": kind}
        if kind == "consent":
            return self.consent(raw, path, out, in_pool)
        if kind == "hidden":
            value, source = raw.get("value"), raw.get("from")
            if (value is None) == (source is None):
                self.fail(path, "a hidden field has either a fixed \"value\" or \"from\" (where to take it)")
            if value is not None:
                out["value"] = self.text(value, f"{path}.value", 500)
            elif source is not None:
                if not (source in HIDDEN_SOURCES or (isinstance(source, str) and re.fullmatch(
                        r"query:[A-Za-z0-9_.-]{1,64}", source))):
                    self.fail(f"{path}.from", f"must be one of {', '.join(HIDDEN_SOURCES)} or query:<parameter>")
                out["from"] = source
        else:
            out["label"] = self.text(raw.get("label"), f"{path}.label", 300, required=True)
            out["required"] = self.flag(raw.get("required"), f"{path}.required")
            out["help"] = self.text(raw.get("help"), f"{path}.help", 500)
            out["placeholder"] = self.text(raw.get("placeholder"), f"{path}.placeholder", 150)
        if kind in CHOICE_TYPES:
            out["options"] = self.options(raw.get("options"), f"{path}.options")
        elif raw.get("options") is not None:
            self.fail(f"{path}.options", "only select, radio and multiselect fields have options")
        if kind == "number":
            low, high = self.number(raw.get("min"), f"{path}.min"), self.number(raw.get("max"), f"{path}.max")
            if low is not None and high is not None and low > high:
                self.fail(f"{path}.max", "must not be less than min")
            out["min"], out["max"] = low, high
        if kind in TEXT_LIMITS:
            limit = raw.get("max_length", TEXT_LIMITS[kind])
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= TEXT_LIMITS[kind] * 2:
                self.fail(f"{path}.max_length", f"must be a whole number from 1 to {TEXT_LIMITS[kind] * 2}")
                limit = TEXT_LIMITS[kind]
            out["max_length"] = limit
        maps_to = raw.get("maps_to")
        if maps_to is not None:
            if not isinstance(maps_to, str) or not maps_to:
                self.fail(f"{path}.maps_to", "must be the name of a contact or company field")
            else:
                out["maps_to"] = maps_to
                self.target(out, path)
        out["progressive"] = self.flag(raw.get("progressive"), f"{path}.progressive")
        if out["progressive"] and in_pool:
            self.fail(f"{path}.progressive", "pool fields are the replacements; only form fields are progressive")
        if (out["progressive"] or in_pool) and (not maps_to or kind in ("email", "hidden")):
            self.fail(f"{path}.maps_to", "a progressive field must fill a contact or company field (not the email)")
        return out

    def consent(self, raw: dict, path: str, out: dict, in_pool: bool) -> dict:
        if in_pool:
            self.fail(f"{path}.type", "consent boxes cannot be in the pool")
        for key in ("maps_to", "progressive", "options", "value", "from"):
            if raw.get(key) is not None:
                self.fail(f"{path}.{key}", "a consent box has text, version, topics and required only")
        out["text"] = self.text(raw.get("text"), f"{path}.text", 2000, required=True)
        out["version"] = self.text(raw.get("version"), f"{path}.version", 50, required=True)
        out["required"] = self.flag(raw.get("required"), f"{path}.required")
        out["topics"] = self.topics(raw.get("topics", []), f"{path}.topics")
        if raw.get("policy_url") not in (None, ""):
            if safe_redirect(raw["policy_url"]) is None:
                self.fail(f"{path}.policy_url", "must be an http(s) address")
            out["policy_url"] = raw["policy_url"]
        if not out["topics"] and not out["required"]:
            self.fail(path, "a consent box needs topics to subscribe to, or must be required (an agreement)")
        return out

    def topics(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            self.fail(path, "must be a list of subscription topic keys")
            return []
        for index, key in enumerate(value):
            if key not in self.refs.topics:
                self.fail(f"{path}[{index}]", f"no subscription topic with key {key!r}")
        return list(dict.fromkeys(value))

    def fields(self, value: Any, path: str, *, in_pool: bool) -> list[dict]:
        if value is None and in_pool:
            return []
        limit = MAX_POOL if in_pool else MAX_FIELDS
        if not isinstance(value, list) or (not value and not in_pool):
            self.fail(path, "must be a list of fields")
            return []
        if len(value) > limit:
            self.fail(path, f"at most {limit} fields")
        out = []
        for index, raw in enumerate(value):
            checked = self.field(raw, f"{path}[{index}]", in_pool=in_pool)
            if checked is not None:
                out.append(checked)
        return out

    # --- the rest ----------------------------------------------------------------------------
    def action(self, raw: Any, path: str) -> dict | None:
        if not isinstance(raw, dict) or raw.get("type") not in ACTION_TYPES:
            types = [t for t in ACTION_TYPES if t != "deliver_asset" or self.refs.assets is not None]
            self.fail(f"{path}.type", f"an action's type is one of {', '.join(types)}")
            return None
        kind = raw["type"]
        out: dict[str, Any] = {"type": kind}
        allowed = {"type", *{"subscribe": ("topics", "text", "version"), "add_to_list": ("list",),
                             "add_tag": ("tag",), "score": ("model", "points"),
                             "alert_owner": ("message", "webhooks"), "enroll": ("journey",),
                             "deliver_asset": ("asset",)}[kind]}
        for key in sorted(set(raw) - allowed):
            self.fail(f"{path}.{key}", f"is not a setting of {kind}")
        if kind == "subscribe":
            out["topics"] = self.topics(raw.get("topics"), f"{path}.topics")
            if not out["topics"]:
                self.fail(f"{path}.topics", "name at least one topic")
            out["text"] = self.text(raw.get("text"), f"{path}.text", 2000, required=True)
            out["version"] = self.text(raw.get("version"), f"{path}.version", 50, required=True)
        elif kind == "add_to_list":
            out["list"] = self.ref(raw.get("list"), self.refs.lists, f"{path}.list", "list")
        elif kind == "add_tag":
            out["tag"] = self.text(raw.get("tag"), f"{path}.tag", 100, required=True)
        elif kind == "score":
            out["model"] = self.ref(raw.get("model"), self.refs.models, f"{path}.model", "scoring model")
            points = raw.get("points")
            if isinstance(points, bool) or not isinstance(points, int) or not -1000 <= points <= 1000 or not points:
                self.fail(f"{path}.points", "must be a whole number from -1000 to 1000, not 0")
            out["points"] = points
        elif kind == "alert_owner":
            out["message"] = self.text(raw.get("message"), f"{path}.message", 500)
            out["webhooks"] = self.flag(raw.get("webhooks"), f"{path}.webhooks")
        elif kind == "enroll":
            out["journey"] = self.ref(raw.get("journey"), self.refs.journeys, f"{path}.journey", "journey")
        elif kind == "deliver_asset":
            if self.refs.assets is None:
                self.fail(f"{path}.type", "assets are not available in this installation")
            else:
                out["asset"] = self.ref(raw.get("asset"), self.refs.assets, f"{path}.asset", "asset")
        return out

    def thank_you(self, value: Any, path: str) -> dict:
        if value is None:
            return {"message": ""}
        if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("message", "redirect"):
            self.fail(path, "must be {\"message\": \"…\"} or {\"redirect\": \"https://…\"}")
            return {"message": ""}
        if "redirect" in value:
            if safe_redirect(value["redirect"]) is None:
                self.fail(f"{path}.redirect", "must be an absolute http:// or https:// address (no javascript:, "
                                              "data: or relative addresses)")
            return {"redirect": value["redirect"]}
        return {"message": self.text(value["message"], f"{path}.message", 2000)}

    def versions(self, fields: list[dict], actions: list[dict]) -> None:
        """Consent words that changed must get a new version: the ledger tells versions apart."""
        before: dict[str, tuple[str, str]] = {}
        for f in (self.previous.get("fields") or []):
            if isinstance(f, dict) and f.get("type") == "consent":
                before[f"field:{f.get('name')}"] = (f.get("text", ""), f.get("version", ""))
        for index, a in enumerate(self.previous.get("actions") or []):
            if isinstance(a, dict) and a.get("type") == "subscribe":
                before[f"action:{index}"] = (a.get("text", ""), a.get("version", ""))
        for index, f in enumerate(fields):
            old = before.get(f"field:{f['name']}") if f["type"] == "consent" else None
            if old and old[1] == f["version"] and old[0] != f["text"]:
                self.fail(f"fields[{index}].version", "the consent text changed: give it a new version")
        for index, a in enumerate(actions):
            old = before.get(f"action:{index}") if a["type"] == "subscribe" else None
            if old and old[1] == a.get("version") and old[0] != a.get("text"):
                self.fail(f"actions[{index}].version", "the consent text changed: give it a new version")

    def check(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise DefinitionError([("definition", "must be a JSON object")])
        allowed = {"language", "title", "intro", "fields", "pool", "submit_label", "thank_you", "actions",
                   "double_opt_in", "spam", "allowed_origins", "track_with"}
        for key in sorted(set(data) - allowed):
            self.fail(key, f"is not a form setting ({', '.join(sorted(allowed))})")
        out: dict[str, Any] = {}
        language = data.get("language", "ja")
        if language not in LANGUAGES:
            self.fail("language", "must be 'ja' or 'en'")
        out["language"] = language if language in LANGUAGES else "ja"
        out["title"] = self.text(data.get("title"), "title", 200)
        out["intro"] = self.text(data.get("intro"), "intro", 2000)
        out["fields"] = self.fields(data.get("fields"), "fields", in_pool=False)
        out["pool"] = self.fields(data.get("pool"), "pool", in_pool=True)
        emails = [f for f in out["fields"] if f.get("maps_to") == "email"]
        if len(emails) != 1:
            self.fail("fields", "exactly one field must fill the contact's email (\"maps_to\": \"email\")")
        elif not emails[0].get("required"):
            self.fail(f"fields[{out['fields'].index(emails[0])}].required", "the email field must be required")
        mapped = [f["maps_to"] for f in out["fields"] + out["pool"] if f.get("maps_to")]
        for target in sorted({t for t in mapped if mapped.count(t) > 1}):
            self.fail("fields", f"two fields fill {target}")
        asked = {f.get("maps_to") for f in out["fields"]}  # pool fields are shown to known visitors only
        for key, custom in sorted(self.refs.contact_custom.items()):
            if custom.required and f"custom.{key}" not in asked:
                self.fail("fields", f"the contact custom field {key!r} is required for new contacts: add a field "
                                    f"that fills custom.{key}")
        out["submit_label"] = self.text(data.get("submit_label"), "submit_label", 100)
        out["thank_you"] = self.thank_you(data.get("thank_you"), "thank_you")
        actions = data.get("actions", [])
        if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
            self.fail("actions", f"must be a list of at most {MAX_ACTIONS} actions")
            actions = []
        out["actions"] = [a for a in (self.action(a, f"actions[{i}]") for i, a in enumerate(actions)) if a]
        double = data.get("double_opt_in")
        if double not in (None, False, {}):
            if not isinstance(double, dict) or set(double) != {"template"}:
                self.fail("double_opt_in", "must be {\"template\": <id of a transactional email template>}")
            else:
                template = double["template"]
                if isinstance(template, bool) or not isinstance(template, int) or template not in self.refs.templates:
                    self.fail("double_opt_in.template", f"no email template with id {template!r}")
                elif self.refs.templates[template]:
                    self.fail("double_opt_in.template", f"template {template} {self.refs.templates[template]}")
                out["double_opt_in"] = {"template": template}
        spam = data.get("spam") or {}
        if not isinstance(spam, dict) or set(spam) - {"min_seconds", "block_disposable"}:
            self.fail("spam", "must be {\"min_seconds\": 3, \"block_disposable\": true}")
            spam = {}
        seconds = spam.get("min_seconds", 3)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= 60:
            self.fail("spam.min_seconds", "must be a whole number of seconds from 0 to 60")
            seconds = 3
        out["spam"] = {"min_seconds": seconds,
                       "block_disposable": self.flag(spam.get("block_disposable"), "spam.block_disposable")}
        origins = data.get("allowed_origins", [])
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            self.fail("allowed_origins", "must be a list of sites, e.g. [\"www.example.co.jp\", \"*.example.co.jp\"]")
            origins = []
        out["allowed_origins"] = []
        for index, value in enumerate(origins):
            domain = origin_domain(value)
            if domain is None:
                self.fail(f"allowed_origins[{index}]", f"{value!r} is not a site name such as www.example.co.jp")
            else:
                out["allowed_origins"].append(domain)
        track = data.get("track_with")
        out["track_with"] = None if track is None else self.ref(track, self.refs.write_keys, "track_with",
                                                                "write key")
        self.versions(out["fields"], out["actions"])
        if self.errors:
            raise DefinitionError(self.errors)
        return out


def check(data: Any, refs: Refs | None = None, *, previous: dict | None = None) -> dict:
    """The normalised definition, or DefinitionError naming every fault by its path.

    `previous` is the definition being replaced: changed consent words need a new version."""
    return _Checker(refs or Refs.load(), previous).check(data)


def starter(language: str = "ja") -> dict:
    """A new form: email, name and company, and a consent box to fill in."""
    ja = language == "ja"
    return {
        "language": language,
        "fields": [
            {"name": "email", "type": "email", "label": "メールアドレス" if ja else "Email", "required": True,
             "maps_to": "email"},
            {"name": "family_name", "type": "text", "label": "姓" if ja else "Last name", "required": True,
             "maps_to": "family_name"},
            {"name": "given_name", "type": "text", "label": "名" if ja else "First name", "maps_to": "given_name"},
            {"name": "company", "type": "text", "label": "会社名" if ja else "Company", "maps_to": "company_name",
             "progressive": True},
        ],
        "pool": [
            {"name": "prefecture", "type": "prefecture", "label": "都道府県" if ja else "Prefecture",
             "maps_to": "prefecture"},
        ],
        "thank_you": {"message": "お申し込みありがとうございました。" if ja else "Thank you."},
        "actions": [],
        "spam": {"min_seconds": 3, "block_disposable": False},
    }
