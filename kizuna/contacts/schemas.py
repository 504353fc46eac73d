"""Request and response shapes of the contacts API (contacts, companies, custom fields, consent).

Input schemas check JSON types only and refuse unknown keys; the meaning of the values
(an address, a prefecture, a custom field's choices) is checked by `services` and `fields`,
the same functions the UI and imports use, so every door accepts the same data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import ConfigDict, Field, IPvAnyAddress

from .models import LifecycleStage
from .queries import COUNT_CAP, SORTS
from .reference import CompanySize, Industry

STAGES = ", ".join(LifecycleStage.values)
INDUSTRIES = ", ".join(Industry.values)
SIZES = ", ".join(CompanySize.values)


class StrictIn(Schema):
    """Input: unknown keys are an error (a typo must not be silently dropped)."""

    model_config = ConfigDict(extra="forbid")


# --- Contacts -----------------------------------------------------------------------------------

class ContactIn(StrictIn):
    """A contact's fields. On create, omitted fields are empty; on PATCH, omitted fields are kept."""

    email: str | None = Field(None, description="normalised: full-width folded, lower-cased; unique")
    family_name: str | None = None
    given_name: str | None = None
    family_name_kana: str | None = Field(None, description="furigana of the family name")
    given_name_kana: str | None = Field(None, description="furigana of the given name")
    phone: str | None = None
    company_name: str | None = Field(None, description="as the contact gave it; the linked company "
                                                       "is found by the email's domain")
    job_title: str | None = None
    department: str | None = None
    prefecture: str | None = Field(None, description="JIS code ('13'), or a name ('東京都', 'Tokyo')")
    industry: str | None = Field(None, description=f"one of: {INDUSTRIES}")
    company_size: str | None = Field(None, description=f"one of: {SIZES}, or a head count")
    lifecycle_stage: str = Field(LifecycleStage.LEAD.value, description=f"one of: {STAGES}")
    owner_id: int | None = Field(None, description="the user id of the owner (admins and marketers only)")
    language: Literal["ja", "en", ""] | None = None
    time_zone: str | None = None
    tags: list[str] = Field(default_factory=list, description="replaces the contact's tags")
    custom: dict[str, Any] = Field(
        default_factory=dict,
        description="custom field values by key; on PATCH merged into the stored ones, null removes one",
    )


class CompanySummary(Schema):
    id: int
    name: str
    domain: str | None


class ListSummary(Schema):
    id: int
    name: str


class ContactOut(Schema):
    id: int
    email: str | None
    family_name: str
    given_name: str
    family_name_kana: str
    given_name_kana: str
    full_name: str
    phone: str
    company: CompanySummary | None
    company_name: str
    job_title: str
    department: str
    prefecture: str
    region: str
    industry: str
    company_size: str
    lifecycle_stage: str
    owner_id: int | None
    tags: list[str]
    lists: list[ListSummary]
    source: str
    language: str
    time_zone: str
    custom: dict[str, Any]
    do_not_contact: bool
    dnc_reason: str
    consents: dict[str, str] = Field(description="{topic key: opted_in | opted_out}; topics not listed: unknown")
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime | None


class ContactPage(Schema):
    items: list[ContactOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")
    prev_cursor: str | None = Field(description="pass as `cursor` for the previous page; null on the first")
    count: int = Field(description=f"contacts matching the filters, counted up to {COUNT_CAP:,}")
    count_capped: bool = Field(description="true when there are more than `count`")


class ContactFilters(Schema):
    """Every filter of the contacts page; custom fields filter as `custom.<key>=value` too."""

    q: str | None = Field(None, description="name, furigana, company or email contains; an '@' searches "
                                            "addresses starting with it")
    email: str | None = Field(None, description="exact address")
    stage: str | None = Field(None, description=f"lifecycle stage: {STAGES}")
    prefecture: str | None = Field(None, description="JIS code or name")
    region: str | None = None
    industry: str | None = Field(None, description=f"one of: {INDUSTRIES}")
    company_size: str | None = Field(None, description=f"one of: {SIZES}")
    owner: str | None = Field(None, description="owner's user id, or 'none' for unowned")
    tag: str | None = Field(None, description="tag name")
    list: str | None = Field(None, description="static list id")
    company: str | None = Field(None, description="company id")
    source: str | None = Field(None, description="manual, form, import, api, event")
    created_after: str | None = Field(None, description="YYYY-MM-DD, inclusive")
    created_before: str | None = Field(None, description="YYYY-MM-DD, exclusive")
    updated_since: str | None = Field(None, description="ISO 8601 date-time")
    do_not_contact: str | None = Field(None, description="true or false")
    sort: str = Field("newest", description=f"one of: {', '.join(SORTS)}")
    cursor: str = Field("", description="next_cursor or prev_cursor of a page")
    limit: int = Field(50, ge=1, le=200)


# --- Consent ------------------------------------------------------------------------------------

class ConsentIn(StrictIn):
    status: Literal["opted_in", "opted_out", "unknown"]
    source: str = Field("", max_length=255, description="where consent was given, e.g. a form's URL")
    text_shown: str = Field("", description="the words the contact agreed to")
    ip: IPvAnyAddress | None = Field(None, description="the contact's IP address when consenting")


class TopicConsentOut(Schema):
    topic: str
    name: str
    requires_opt_in: bool
    status: str
    updated_at: datetime | None


class ConsentRecordOut(Schema):
    topic: str | None = Field(description="null: the contact-wide do-not-contact flag")
    status: str
    at: datetime
    method: str
    source: str
    text_shown: str
    ip: str | None
    actor: str | None
    reason: str


class ConsentsOut(Schema):
    do_not_contact: bool
    dnc_reason: str
    dnc_at: datetime | None
    topics: list[TopicConsentOut]
    ledger: list[ConsentRecordOut] = Field(description="newest first")
    ledger_count: int


class ConsentChangeOut(TopicConsentOut):
    changed: bool = Field(description="false when the status was already the one sent")


# --- Companies ----------------------------------------------------------------------------------

class CompanyFields(StrictIn):
    domain: str | None = Field(None, description="contacts with addresses at this domain are linked; unique")
    industry: str | None = Field(None, description=f"one of: {INDUSTRIES}")
    company_size: str | None = Field(None, description=f"one of: {SIZES}; derived from employees when empty")
    employees: int | None = Field(None, ge=0)
    prefecture: str | None = None
    address: str | None = None
    phone: str | None = None
    website: str | None = None
    owner_id: int | None = None
    custom: dict[str, Any] = Field(default_factory=dict)


class CompanyIn(CompanyFields):
    name: str


class CompanyPatch(CompanyFields):
    name: str | None = None


class CompanyOut(Schema):
    id: int
    name: str
    domain: str | None
    industry: str
    company_size: str
    employees: int | None
    prefecture: str
    address: str
    phone: str
    website: str
    owner_id: int | None
    custom: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class CompanyPage(Schema):
    items: list[CompanyOut]
    next_cursor: str | None
    prev_cursor: str | None
    count: int
    count_capped: bool


# --- Custom fields ------------------------------------------------------------------------------

FieldType = Literal["text", "number", "date", "choice", "multi_choice", "boolean"]


class CustomFieldIn(StrictIn):
    target: Literal["contact", "company"] = "contact"
    key: str = Field(max_length=64, description="lower-case letters, digits and _, starting with a letter; "
                                                "unique per target; cannot change later")
    label: str = Field(min_length=1, max_length=150)
    field_type: FieldType = "text"
    choices: list[str] = Field(default_factory=list, description="choice and multi_choice fields only")
    required: bool = False
    help_text: str = Field("", max_length=300)
    position: int = Field(0, ge=0)


class CustomFieldPatch(StrictIn):
    target: Literal["contact", "company"] | None = Field(None, description="cannot change")
    key: str | None = Field(None, description="cannot change: stored values live under it")
    label: str | None = Field(None, min_length=1, max_length=150)
    field_type: FieldType | None = None
    choices: list[str] | None = None
    required: bool | None = None
    help_text: str | None = Field(None, max_length=300)
    position: int | None = Field(None, ge=0)


class CustomFieldOut(Schema):
    id: int
    target: str
    key: str
    label: str
    field_type: str
    choices: list[str]
    required: bool
    help_text: str
    position: int
    created_at: datetime


class CustomFieldList(Schema):
    items: list[CustomFieldOut]
