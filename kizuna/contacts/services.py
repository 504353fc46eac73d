"""Creating, changing and deleting contacts and companies: the one path every caller uses
(UI, API, forms), so derived fields, company linking and the audit log are never skipped.
Imports use the bulk path in `imports.py`, which applies the same rules set-wise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from kizuna.accounts import audit

from . import fields as custom_fields
from .emails import InvalidEmail, domain_of, normalise_email
from .models import Company, Contact, LifecycleStage, Tag
from .reference import (
    PREFECTURE_REGION,
    CompanySize,
    Industry,
    is_free_mail,
    normalise_company_size,
    normalise_industry,
    normalise_prefecture,
)
from .signals import contact_saved

CONTACT_TEXT_FIELDS = {
    "family_name": 100, "given_name": 100, "family_name_kana": 100, "given_name_kana": 100,
    "phone": 40, "company_name": 255, "job_title": 150, "department": 150, "time_zone": 64,
}
AUDITED_FIELDS = [
    "email", "family_name", "given_name", "family_name_kana", "given_name_kana", "phone",
    "company_name", "job_title", "department", "prefecture", "industry", "company_size",
    "lifecycle_stage", "owner_id", "language", "time_zone", "custom", "do_not_contact", "dnc_reason",
]


class ContactError(ValueError):
    """Invalid input; `errors` maps a field path to a message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class ContactConflict(ContactError):
    """Valid input that clashes with another record (the same email or domain): callers such as
    the API answer it differently (409) from invalid input (422)."""


def _check_owner(value: Any) -> str | None:
    """The error for an owner id that is not a user, or None; a bad id would fail only at commit."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be a user id"
    if not get_user_model().objects.filter(pk=value).exists():
        return f"there is no user with id {value}"
    return None


@dataclass
class CleanedContact:
    values: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] | None = None
    tags: list[str] | None = None


def clean_contact_input(data: dict[str, Any], *, existing: Contact | None = None) -> CleanedContact:
    """Validates and normalises contact input (partial when `existing` is given)."""
    errors: dict[str, str] = {}
    out = CleanedContact()
    for key, value in data.items():
        if key == "email":
            if value in (None, ""):
                out.values["email"] = None
                continue
            try:
                out.values["email"] = normalise_email(str(value))
            except InvalidEmail as exc:
                errors["email"] = f"invalid email address: {exc}"
        elif key in CONTACT_TEXT_FIELDS:
            text = "" if value is None else str(value).strip()
            if len(text) > CONTACT_TEXT_FIELDS[key]:
                errors[key] = f"is longer than {CONTACT_TEXT_FIELDS[key]} characters"
            out.values[key] = text
        elif key == "prefecture":
            code = normalise_prefecture(str(value or ""))
            if code is None:
                errors[key] = f"{value!r} is not a Japanese prefecture"
            else:
                out.values[key] = code
        elif key == "industry":
            code = normalise_industry(str(value or ""))
            if code is None:
                errors[key] = f"{value!r} is not a known industry ({', '.join(Industry.values)})"
            else:
                out.values[key] = code
        elif key == "company_size":
            code = normalise_company_size(str(value or ""))
            if code is None:
                errors[key] = f"{value!r} is not a company size ({', '.join(CompanySize.values)} or a head count)"
            else:
                out.values[key] = code
        elif key == "lifecycle_stage":
            if value not in LifecycleStage.values:
                errors[key] = f"{value!r} is not a stage ({', '.join(LifecycleStage.values)})"
            else:
                out.values[key] = value
        elif key == "language":
            if value not in ("", None, "ja", "en"):
                errors[key] = "must be 'ja' or 'en'"
            else:
                out.values[key] = value or ""
        elif key == "owner_id":
            if problem := _check_owner(value):
                errors[key] = problem
            out.values[key] = value
        elif key == "custom":
            if not isinstance(value, dict):
                errors[key] = "must be an object of custom field values"
                continue
            merged, problems = custom_fields.clean_custom(
                "contact", value, existing=existing.custom if existing else None, partial=existing is not None
            )
            errors.update({f"custom.{k}": v for k, v in problems.items()})
            out.custom = merged
        elif key == "tags":
            if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
                errors[key] = "must be a list of strings"
                continue
            names = [t.strip() for t in value if t.strip()]
            too_long = [t for t in names if len(t) > 100]
            if too_long:
                errors[key] = "a tag is longer than 100 characters"
            out.tags = list(dict.fromkeys(names))
        else:
            errors[key] = "is not a contact field"
    if existing is None and "custom" not in data:
        _merged, problems = custom_fields.clean_custom("contact", {})
        errors.update({f"custom.{k}": v for k, v in problems.items()})
    if errors:
        raise ContactError(errors)
    return out


def company_for_domain(domain: str, name_hint: str = "") -> Company | None:
    """The company owning a business email domain, created on first sight; None for free mail."""
    if not domain or is_free_mail(domain):
        return None
    company = Company.objects.filter(domain=domain).first()
    if company is None:
        try:
            with transaction.atomic():
                company = Company.objects.create(name=name_hint or domain, domain=domain)
        except IntegrityError:
            company = Company.objects.get(domain=domain)
    return company


def _apply_derived(contact: Contact) -> None:
    contact.region = PREFECTURE_REGION.get(contact.prefecture, "")
    if contact.email and contact.company_id is None:
        contact.company = company_for_domain(domain_of(contact.email), contact.company_name)


def _snapshot(contact: Contact) -> dict[str, Any]:
    return {f: getattr(contact, f) for f in AUDITED_FIELDS}


def _set_tags(contact: Contact, names: list[str]) -> None:
    tags = []
    for name in names:
        tag, _ = Tag.objects.get_or_create(name=name)
        tags.append(tag)
    contact.tags.set(tags)


def _save_unique_email(contact: Contact) -> None:
    """Saves; a concurrent request that took the same email first is a conflict, not a crash."""
    try:
        with transaction.atomic():
            contact.save()
    except IntegrityError as exc:
        if contact.email and Contact.objects.filter(email=contact.email).exclude(pk=contact.pk).exists():
            raise ContactConflict({"email": f"a contact with {contact.email} already exists"}) from exc
        raise


# Who may bring back an address erased on request: only the person, signing up again themselves.
SELF_SOURCES = {"form", "event"}


def _check_not_erased(email: str | None, source: str) -> None:
    """An address erased on request is not added again by a colleague, the API or an import; the
    person's own sign-up (a form, an identify from a form on the site) lifts the block."""
    if not email:
        return
    from kizuna.privacy import erasure

    when = erasure.erased_at(email)
    if when is None:
        return
    if source in SELF_SOURCES:
        erasure.forget_erasure(email)
        return
    raise ContactConflict({"email": f"this person's data was erased on request on {when:%Y-%m-%d}; they can "
                                    "sign up again themselves through a form, or an administrator can allow the "
                                    "address again under Settings → Privacy"})


@transaction.atomic
def create_contact(actor, data: dict[str, Any], *, source: str = "manual", via: str = "") -> Contact:
    cleaned = clean_contact_input(data)
    email = cleaned.values.get("email")
    if email and Contact.objects.filter(email=email).exists():
        raise ContactConflict({"email": f"a contact with {email} already exists"})
    _check_not_erased(email, source)
    contact = Contact(source=source, **cleaned.values)
    if cleaned.custom is not None:
        contact.custom = cleaned.custom
    _apply_derived(contact)
    _save_unique_email(contact)
    if cleaned.tags is not None:
        _set_tags(contact, cleaned.tags)
    changes = audit.diff({}, _snapshot(contact))
    audit.record(actor, "create", contact, changes=changes)
    contact_saved.send(sender=Contact, actor=actor, contact=contact, changes=changes, created=True, via=via or source)
    return contact


@transaction.atomic
def update_contact(actor, contact: Contact, data: dict[str, Any], *, via: str = "manual") -> Contact:
    cleaned = clean_contact_input(data, existing=contact)
    before = _snapshot(contact)
    before_tags = sorted(contact.tags.values_list("name", flat=True))
    email = cleaned.values.get("email")
    if email and email != contact.email and Contact.objects.filter(email=email).exclude(pk=contact.pk).exists():
        raise ContactConflict({"email": f"a contact with {email} already exists"})
    if email and email != contact.email:
        _check_not_erased(email, via)
    if "email" in cleaned.values and cleaned.values["email"] != contact.email:
        contact.company = None  # relink by the new domain
    for key, value in cleaned.values.items():
        setattr(contact, key, value)
    if cleaned.custom is not None:
        contact.custom = cleaned.custom
    _apply_derived(contact)
    contact.updated_at = timezone.now()
    _save_unique_email(contact)
    changes = audit.diff(before, _snapshot(contact))
    if cleaned.tags is not None:
        _set_tags(contact, cleaned.tags)
        if sorted(cleaned.tags) != before_tags:
            changes["tags"] = [before_tags, sorted(cleaned.tags)]
    if changes:
        audit.record(actor, "update", contact, changes=changes)
        contact_saved.send(sender=Contact, actor=actor, contact=contact, changes=changes, created=False, via=via)
    return contact


@transaction.atomic
def delete_contact(actor, contact: Contact) -> None:
    audit.record(actor, "delete", contact, changes=audit.diff(_snapshot(contact), {}))
    contact.delete()


COMPANY_FIELDS = ["name", "domain", "industry", "company_size", "employees", "prefecture",
                  "address", "phone", "website", "owner_id", "custom"]


def clean_company_input(data: dict[str, Any], *, existing: Company | None = None) -> dict[str, Any]:
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "name":
            text = str(value or "").strip()
            if not text:
                errors[key] = "is required"
            elif len(text) > 255:
                errors[key] = "is longer than 255 characters"
            out[key] = text
        elif key == "domain":
            text = str(value or "").strip().lower().removeprefix("@")
            if text:
                try:
                    text = domain_of(normalise_email(f"x@{text}"))
                except InvalidEmail:
                    errors[key] = f"{value!r} is not a domain name"
            out[key] = text or None
        elif key in ("address", "phone", "website"):
            out[key] = str(value or "").strip()[:500]
        elif key == "industry":
            code = normalise_industry(str(value or ""))
            if code is None:
                errors[key] = f"{value!r} is not a known industry"
            out[key] = code or ""
        elif key == "company_size":
            code = normalise_company_size(str(value or ""))
            if code is None:
                errors[key] = f"{value!r} is not a company size"
            out[key] = code or ""
        elif key == "employees":
            if value in (None, ""):
                out[key] = None
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                out[key] = value
            else:
                errors[key] = "must be a whole number of 0 or more"
        elif key == "prefecture":
            code = normalise_prefecture(str(value or ""))
            if code is None:
                errors[key] = f"{value!r} is not a Japanese prefecture"
            out[key] = code or ""
        elif key == "owner_id":
            if problem := _check_owner(value):
                errors[key] = problem
            out[key] = value
        elif key == "custom":
            if not isinstance(value, dict):
                errors[key] = "must be an object"
                continue
            merged, problems = custom_fields.clean_custom(
                "company", value, existing=existing.custom if existing else None, partial=existing is not None
            )
            errors.update({f"custom.{k}": v for k, v in problems.items()})
            out[key] = merged
        else:
            errors[key] = "is not a company field"
    if existing is None and "name" not in data:
        errors["name"] = "is required"
    if out.get("employees") is not None and not out.get("company_size"):
        out["company_size"] = normalise_company_size(str(out["employees"])) or ""
    if out.get("domain"):
        clash = Company.objects.filter(domain=out["domain"])
        if existing is not None:
            clash = clash.exclude(pk=existing.pk)
        if clash.exists():
            errors["domain"] = f"another company already has the domain {out['domain']}"
            if len(errors) == 1:
                raise ContactConflict(errors)
    if errors:
        raise ContactError(errors)
    return out


@transaction.atomic
def save_company(actor, data: dict[str, Any], company: Company | None = None) -> Company:
    values = clean_company_input(data, existing=company)
    before = {f: getattr(company, f) for f in COMPANY_FIELDS} if company else {}
    company = company or Company()
    for key, value in values.items():
        setattr(company, key, value)
    company.updated_at = timezone.now()
    company.save()
    after = {f: getattr(company, f) for f in COMPANY_FIELDS}
    changes = audit.diff(before, after)
    if changes:
        audit.record(actor, "update" if before else "create", company, changes=changes)
    return company


@transaction.atomic
def delete_company(actor, company: Company) -> None:
    audit.record(actor, "delete", company, changes={"name": [company.name, None]})
    company.delete()
