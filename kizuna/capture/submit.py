"""Accepting a submission: the checks in order, then one row, then the answer.

1. the form token (signed, this form's, not expired), 2. the honeypot (a bot is told it
succeeded and nothing is kept), 3. the minimum fill time, 4. the fields, by type and then by the
contact service's own validation (`clean_contact_input`, the one the UI, API and imports use),
5. disposable addresses when the form blocks them, 6. the rate limit per IP, taken in the same
transaction that stores the submission (writes.py: concurrent posts share that transaction).
A bad value gets an error naming its field; the good values are kept for the form shown again.
Rejections are counted per reason, never stored.

The contact, consent and actions follow from the stored row in the worker (processing.py).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.utils import timezone
from django.utils.translation import gettext as _

from kizuna.capture import spam, tokens, writes
from kizuna.capture.definition import HONEYPOT, TEXT_LIMITS
from kizuna.capture.models import Form, Submission
from kizuna.contacts.emails import InvalidEmail, normalise_email
from kizuna.contacts.models import Company, Contact
from kizuna.contacts.reference import normalise_prefecture
from kizuna.contacts.services import CONTACT_TEXT_FIELDS, ContactError, clean_company_input, clean_contact_input
from kizuna.events.referrers import utm_from_url

ANON_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
LINE_BREAK = re.compile(r"[\r\n\u2028\u2029]")
TRUE = {"on", "1", "true", "yes"}
PHONE_RE = re.compile(r"\+?[0-9()\- ]+")


@dataclass
class Visit:
    """What the HTTP layer knows of the visitor and the page the form was on."""

    ip: str = ""
    user_agent: str = ""
    page_url: str = ""
    referrer: str = ""
    anonymous_id: str = ""


@dataclass
class Outcome:
    status: int  # the HTTP status to answer with
    code: str  # ok, invalid, bad_token, expired, too_fast, rate_limited, closed
    message: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # to show again
    submission: Submission | None = None
    token: str = ""  # the token to show the form again with
    shown: list[str] | None = None

    @property
    def accepted(self) -> bool:
        return self.code == "ok"


@dataclass
class Checked:
    values: dict[str, Any] = field(default_factory=dict)  # as posted, per field
    contact: dict[str, Any] = field(default_factory=dict)  # for the contact service
    company: dict[str, Any] = field(default_factory=dict)
    consents: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    email: str = ""


def http_url(value: Any) -> str:
    """An http(s) address as sent, or "" (pages and referrers are shown and stored, never run)."""
    if not isinstance(value, str) or len(value) > 2000 or CONTROL.search(value) or LINE_BREAK.search(value):
        return ""
    return value if urlsplit(value).scheme in ("http", "https") else ""


def stored_ip(ip: str) -> str:
    """The address as it may be stored: shortened when the tracking settings anonymise addresses
    (before anything is stored, as for events; the rate limit then counts per shortened address)."""
    from kizuna.events.enrichment import anonymize_ip
    from kizuna.events.http import cache

    return anonymize_ip(ip) if ip and cache.anonymize_ip() else ip


def visit_from(post: Mapping[str, Any], meta: Mapping[str, Any], ip: str) -> Visit:
    aid = str(post.get("kz_aid", "") or "")
    return Visit(
        ip=stored_ip(ip), user_agent=str(meta.get("HTTP_USER_AGENT", ""))[:500],
        page_url=http_url(post.get("kz_page")) or http_url(meta.get("HTTP_REFERER", "")),
        referrer=http_url(post.get("kz_ref")),
        anonymous_id=aid if ANON_RE.fullmatch(aid) else "",
    )


def shown_fields(form: Form, shown: list[str] | None) -> list[dict]:
    """The fields the visitor saw: the form's, or the ones progressive profiling chose."""
    definition = form.definition
    if shown is None:
        return list(definition["fields"])
    by_name = {f["name"]: f for f in definition["fields"] + definition.get("pool", [])}
    return [by_name[name] for name in shown if name in by_name]


def _hidden_value(f: dict, visit: Visit) -> str:
    if "value" in f:
        return f["value"]
    source = f.get("from", "")
    if source == "page_url":
        return visit.page_url
    if source == "referrer":
        return visit.referrer
    if source.startswith("utm_"):
        return utm_from_url(visit.page_url).get(source, "") if visit.page_url else ""
    if source.startswith("query:") and visit.page_url:
        found = parse_qs(urlsplit(visit.page_url).query).get(source[6:])
        return found[0][:500] if found else ""
    return ""


def _number(text: str) -> int | float:
    value = unicodedata.normalize("NFKC", text).strip().replace(",", "")
    number = int(value) if re.fullmatch(r"-?\d{1,15}", value) else float(value)
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(value)
    return number


def check_field(f: dict, post: Mapping[str, Any], getlist) -> tuple[Any, Any, str]:
    """(value as posted, typed value or None when empty, error message or "") for one field."""
    kind, name = f["type"], f["name"]
    if kind == "multiselect":
        raw = [str(v) for v in getlist(name)][:200]
        allowed = {o["value"] for o in f["options"]}
        if any(v not in allowed for v in raw):
            return raw, None, _("Choose among the options shown.")
        if f.get("required") and not raw:
            return raw, None, _("Choose at least one.")
        return raw, list(dict.fromkeys(raw)), ""
    if kind in ("checkbox", "consent"):
        ticked = str(post.get(name, "") or "").strip().lower() in TRUE
        if f.get("required") and not ticked:
            return ticked, False, _("Please tick this box to continue.") if kind == "consent" else \
                _("This box must be ticked.")
        return ticked, ticked, ""
    raw = str(post.get(name, "") or "")
    text = raw.strip()
    if not text:
        return raw, None, _("This field is required.") if f.get("required") else ""
    if CONTROL.search(text) or (kind != "textarea" and LINE_BREAK.search(text)):
        return raw, None, _("This field contains characters that are not allowed (line breaks or control codes).")
    if kind in TEXT_LIMITS:
        limit = f.get("max_length", TEXT_LIMITS[kind])
        if len(text) > limit:
            return raw, None, _("Please use at most %(n)s characters.") % {"n": limit}
        return raw, text, ""
    if kind == "email":
        try:
            return raw, normalise_email(text), ""
        except InvalidEmail:
            return raw, None, _("Enter a valid email address.")
    if kind == "phone":
        phone = unicodedata.normalize("NFKC", text).replace("ー", "-").replace("−", "-")
        digits = sum(c.isdigit() for c in phone)
        if not PHONE_RE.fullmatch(phone) or not 8 <= digits <= 15:
            return raw, None, _("Enter a phone number: digits, with hyphens if you like (03-1234-5678).")
        return raw, phone, ""
    if kind == "number":
        try:
            number = _number(text)
        except ValueError:
            return raw, None, _("Enter a number.")
        if f.get("min") is not None and number < f["min"]:
            return raw, None, _("Enter a number of at least %(n)s.") % {"n": f["min"]}
        if f.get("max") is not None and number > f["max"]:
            return raw, None, _("Enter a number of at most %(n)s.") % {"n": f["max"]}
        return raw, number, ""
    if kind == "date":
        try:
            value = dt.date.fromisoformat(unicodedata.normalize("NFKC", text).replace("/", "-")).isoformat()
        except ValueError:
            return raw, None, _("Enter a date (YYYY-MM-DD).")
        return raw, value, ""
    if kind in ("select", "radio"):
        if text not in {o["value"] for o in f["options"]}:
            return raw, None, _("Choose one of the options.")
        return raw, text, ""
    if kind == "prefecture":
        code = normalise_prefecture(text)
        if not code:
            return raw, None, _("Choose a prefecture.")
        return raw, code, ""
    return raw, text, ""


def _place(checked: Checked, target: str, value: Any) -> None:
    """Puts a typed value where the contact or company service expects it."""
    if target.startswith("company."):
        rest = target[8:]
        if rest.startswith("custom."):
            checked.company.setdefault("custom", {})[rest[7:]] = value
        else:
            checked.company[rest] = value if rest == "employees" else str(value)
    elif target.startswith("custom."):
        checked.contact.setdefault("custom", {})[target[7:]] = value
    else:
        checked.contact[target] = value if isinstance(value, str) else str(value)


def _service_errors(exc: ContactError, owners: dict[str, str], prefix: str = "") -> dict[str, str]:
    """The contact service's errors, put on the fields that filled the values at fault."""
    out: dict[str, str] = {}
    for path, message in exc.errors.items():
        name = owners.get(prefix + path) or owners.get(prefix + path.split(".")[0])
        if name:
            out[name] = _("This value is not accepted: %(reason)s") % {"reason": message}
    return out


def check_values(form: Form, fields: list[dict], post: Mapping[str, Any], getlist, visit: Visit) -> Checked:
    checked = Checked()
    owners: dict[str, str] = {}  # target path -> field name
    for f in fields:
        name = f["name"]
        if f["type"] == "hidden":
            # From the page's address (the visitor's to choose): one line, no control characters.
            value = CONTROL.sub("", LINE_BREAK.sub(" ", _hidden_value(f, visit)))[:500]
            checked.values[name] = value
            if f.get("maps_to") and value:
                _place(checked, f["maps_to"], value)
                owners[f["maps_to"]] = name
            continue
        raw, value, error = check_field(f, post, getlist)
        checked.values[name] = raw
        if error:
            checked.errors[name] = error
            continue
        if f["type"] == "consent":
            checked.consents.append({"field": name, "text": f["text"], "version": f["version"],
                                     "topics": f["topics"], "given": bool(value),
                                     "policy_url": f.get("policy_url", "")})
            continue
        target = f.get("maps_to")
        if target and (value not in (None, "", []) or f["type"] == "checkbox"):
            if target in CONTACT_TEXT_FIELDS and len(str(value)) > CONTACT_TEXT_FIELDS[target]:
                checked.errors[name] = _("Please use at most %(n)s characters.") % {"n": CONTACT_TEXT_FIELDS[target]}
                continue
            _place(checked, target, value)
            owners[target] = name
            if target == "email":
                checked.email = value
    for index, action in enumerate(form.definition.get("actions", [])):
        if action["type"] == "subscribe":
            checked.consents.append({"action": index, "text": action["text"], "version": action["version"],
                                     "topics": action["topics"], "given": True})
    try:  # the contact service's own rules (lengths, custom fields), without writing anything
        clean_contact_input(dict(checked.contact), existing=Contact())
    except ContactError as exc:
        checked.errors.update({k: v for k, v in _service_errors(exc, owners).items() if k not in checked.errors})
    if checked.company:
        try:
            clean_company_input(dict(checked.company), existing=Company())
        except ContactError as exc:
            found = _service_errors(exc, owners, prefix="company.")
            checked.errors.update({k: v for k, v in found.items() if k not in checked.errors})
    return checked


def _reject(form: Form, status: int, code: str, message: str, reason: str, **extra) -> Outcome:
    writes.record(writes.Write(form.pk, counts=[reason]))
    return Outcome(status, code, message, **extra)


def submit(form: Form, post: Mapping[str, Any], visit: Visit, *, getlist=None) -> Outcome:
    """Checks a post to the form and stores it when it passes; the Outcome says what to answer."""
    getlist = getlist or (lambda name: post.getlist(name) if hasattr(post, "getlist") else [])
    now = timezone.now()
    if not form.active:
        return Outcome(410, "closed", _("This form is closed."))
    token_text = str(post.get("kz_token", "") or "")
    try:
        token = tokens.read(token_text, form, now=now)
    except tokens.TokenError as exc:
        if exc.code == "expired":
            values = {f["name"]: _posted(f, post, getlist) for f in form.definition["fields"]}
            return _reject(form, 400, "expired", _("The form had expired. Please check it and send it again."),
                           "bad_token", values=values, token=tokens.issue(form))
        return _reject(form, 400, "bad_token", _("This form could not be verified. Please reload the page and "
                                                 "try again."), "bad_token")
    fields = shown_fields(form, token.shown)
    if str(post.get(HONEYPOT, "") or "").strip():
        return _reject(form, 200, "ok", "", "honeypot")  # a bot is told it worked
    values = {f["name"]: _posted(f, post, getlist) for f in fields}
    if token.kind == tokens.PAGE and now - token.issued < dt.timedelta(seconds=form.definition["spam"]["min_seconds"]):
        return _reject(form, 400, "too_fast", _("That was quick! Please check the form and send it again."),
                       "too_fast", values=values, token=token_text, shown=token.shown)
    checked = check_values(form, fields, post, getlist, visit)
    reasons: list[str] = []
    if not checked.errors and form.definition["spam"]["block_disposable"] and spam.is_disposable(checked.email):
        email_field = next(f["name"] for f in fields if f.get("maps_to") == "email")
        checked.errors[email_field] = _("Please use your work or personal address; temporary addresses are "
                                        "not accepted.")
        reasons.append("disposable")
    submission = None
    if not checked.errors:
        submission = Submission(
            form=form, email=checked.email, values=checked.values,
            mapped={"contact": checked.contact, "company": checked.company}, consents=checked.consents,
            context=token.context, ip=visit.ip or None, user_agent=visit.user_agent, page_url=visit.page_url,
            referrer=visit.referrer, utm=utm_from_url(visit.page_url) if visit.page_url else {},
            anonymous_id=visit.anonymous_id, created_at=now, next_attempt_at=now)
    # The rate limit is taken in the same transaction that stores the submission.
    allowed = writes.record(writes.Write(form.pk, counts=reasons, ip=visit.ip, submission=submission)).allowed
    if not allowed:
        return Outcome(429, "rate_limited", _("Too many submissions from your network. Please wait a minute and "
                                              "try again."), values=values, token=token_text, shown=token.shown)
    if checked.errors:
        return Outcome(400, "invalid", _("Please correct the fields marked below."), errors=checked.errors,
                       values=values, token=token_text, shown=token.shown)
    return Outcome(200, "ok", submission=submission)


def _posted(f: dict, post: Mapping[str, Any], getlist) -> Any:
    """A field's value as posted, to show it again (never a typed or cleaned value)."""
    if f["type"] == "multiselect":
        return [str(v) for v in getlist(f["name"])][:200]
    if f["type"] in ("checkbox", "consent"):
        return str(post.get(f["name"], "") or "").strip().lower() in TRUE
    if f["type"] == "hidden":
        return ""
    return str(post.get(f["name"], "") or "")[:10000]
