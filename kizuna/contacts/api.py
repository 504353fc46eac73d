"""REST API for contacts, companies, custom field definitions and consent.

    GET    /contacts                          filters, sort, cursor pages, capped count
    POST   /contacts                          → 201; an existing email is 409
    GET    /contacts/lookup?email=            by address, normalised as everywhere else
    GET    /contacts/{id}    PATCH    DELETE
    GET    /contacts/{id}/consents            current status per topic and the ledger
    PUT    /contacts/{id}/consents/{topic}    set one topic's consent (ledger method "api")
    GET    /companies        POST             GET/PATCH/DELETE /companies/{id}
    GET    /custom-fields    POST             GET/PATCH/DELETE /custom-fields/{id}

Each operation's `auth` checks the capability before ninja reads any input (403 before 404 or
422); handlers then find the object (404), check ownership where sales may change their own
contacts, and hand the input to `services`, `consent` and `fields`, which validate (422), detect
clashes (409) and write the audit log.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Prefetch, Q, QuerySet
from ninja import Query, Router, Status

from kizuna.accounts import audit
from kizuna.accounts.roles import can, can_change_contact
from kizuna.api import ApiError, ErrorOut, require, requires

from . import consent, fields, queries, services
from .emails import InvalidEmail, normalise_email
from .forms import KEY_RE
from .models import (
    Company,
    Consent,
    ConsentRecord,
    ConsentStatus,
    Contact,
    CustomField,
    ListMembership,
    Source,
    SubscriptionTopic,
)
from .reference import normalise_industry, normalise_prefecture
from .schemas import (
    CompanyIn,
    CompanyOut,
    CompanyPage,
    CompanyPatch,
    ConsentChangeOut,
    ConsentIn,
    ConsentsOut,
    ContactFilters,
    ContactIn,
    ContactOut,
    ContactPage,
    CustomFieldIn,
    CustomFieldList,
    CustomFieldOut,
    CustomFieldPatch,
)

router = Router(tags=["contacts"])

READ_ERRORS = {frozenset({401, 403, 404}): ErrorOut}
LIST_ERRORS = {frozenset({400, 401, 403, 422}): ErrorOut}
WRITE_ERRORS = {frozenset({400, 401, 403, 404, 409, 415, 422}): ErrorOut}
PAGE_PARAMS = {"sort", "cursor", "limit"}
COMPANY_FILTERS = {"q", "domain", "industry", "prefecture", "owner"}
COMPANY_SORTS = ("newest", "oldest")
LEDGER_LIMIT = 100
FIELD_AUDITED = ["target", "key", "label", "field_type", "choices", "required", "help_text", "position"]


def _invalid(errors: dict[str, str], message: str = "the request is not valid") -> ApiError:
    return ApiError(422, "invalid", message, errors)


def _save_company(request, data: dict[str, Any], company: Company | None = None) -> Company:
    try:
        return services.save_company(request.auth, data, company)
    except services.ContactError as exc:
        raise _service_error(exc, "company") from exc
    except IntegrityError as exc:  # a concurrent request took the domain between check and save
        domain = data.get("domain")
        if domain and Company.objects.filter(domain=str(domain).strip().lower().removeprefix("@")).exists():
            raise ApiError(409, "conflict", "the company clashes with an existing one",
                           {"domain": f"another company already has the domain {domain}"}) from exc
        raise


def _service_error(exc: services.ContactError, what: str) -> ApiError:
    """ContactConflict (same email or domain) is 409; other input errors are 422, with paths."""
    if isinstance(exc, services.ContactConflict):
        return ApiError(409, "conflict", f"the {what} clashes with an existing one", exc.errors)
    return _invalid(exc.errors, f"the {what} is not valid")


def _check_params(request, allowed: set[str], *, custom: bool = False) -> None:
    """Unknown query parameters are a 400: a misspelt filter must not silently list everything.
    With `custom`, `custom.<key>` parameters pass here and `filter_custom` checks the key."""
    errors = {
        key: "is not a known parameter"
        for key in request.GET
        if key not in allowed and not (custom and key.startswith("custom."))
    }
    if errors:
        raise ApiError(400, "bad_request", "the query has unknown parameters", errors)


# --- Contacts -----------------------------------------------------------------------------------

def _contacts(qs: QuerySet[Contact] | None = None) -> QuerySet[Contact]:
    """Contacts with everything their output shows, in a fixed number of queries."""
    qs = Contact.objects.all() if qs is None else qs
    return qs.select_related("company").prefetch_related(
        "tags",
        Prefetch("list_memberships", queryset=ListMembership.objects.select_related("contact_list")),
        Prefetch("consents", queryset=Consent.objects.select_related("topic")),
    )


def _contact_out(contact: Contact) -> dict[str, Any]:
    company = contact.company
    return {
        **{f: getattr(contact, f) for f in (
            "id", "email", "family_name", "given_name", "family_name_kana", "given_name_kana", "full_name",
            "phone", "company_name", "job_title", "department", "prefecture", "region", "industry",
            "company_size", "lifecycle_stage", "owner_id", "source", "language", "time_zone",
            "do_not_contact", "dnc_reason", "created_at", "updated_at", "last_activity_at",
        )},
        "company": {"id": company.pk, "name": company.name, "domain": company.domain} if company else None,
        "tags": sorted(t.name for t in contact.tags.all()),
        "lists": sorted(
            ({"id": m.contact_list_id, "name": m.contact_list.name} for m in contact.list_memberships.all()),
            key=lambda item: item["name"],
        ),
        "custom": contact.custom or {},
        "consents": {c.topic.key: c.status for c in contact.consents.all()},
    }


def _get_contact(contact_id: int) -> Contact:
    contact = _contacts().filter(pk=contact_id).first()
    if contact is None:
        raise ApiError(404, "not_found", f"there is no contact with id {contact_id}")
    return contact


def _require_contact_change(request, contact: Contact) -> None:
    """Writers change any contact; sales only their own (and may not give it to someone else)."""
    if can_change_contact(request.auth, contact):
        return
    if can(request.auth, "contacts.change_own"):
        raise ApiError(403, "forbidden", f"you may change only the contacts you own; contact {contact.pk} "
                                         "is owned by someone else")
    require(request, "contacts.change")


def _reload(contact: Contact) -> dict[str, Any]:
    return _contact_out(_get_contact(contact.pk))


@router.get("/contacts", auth=requires("contacts.view"),
            response={200: ContactPage, **LIST_ERRORS}, summary="List contacts")
def list_contacts(request, filters: Query[ContactFilters]):
    """Filters combine with AND; pages follow `next_cursor`/`prev_cursor`, stable under inserts."""
    _check_params(request, set(queries.FILTER_KEYS) | PAGE_PARAMS, custom=True)
    try:
        standard = {k: v for k, v in request.GET.items() if not k.startswith("custom.")}
        qs = queries.filter_custom(queries.filter_contacts(Contact.objects.all(), standard), request.GET)
        page = queries.paginate(_contacts(qs), sort=filters.sort, cursor=filters.cursor, limit=filters.limit)
    except queries.QueryError as exc:
        raise ApiError(400, "bad_request", "the filters are not valid", exc.errors) from exc
    count, capped = queries.capped_count(qs)
    return {"items": [_contact_out(c) for c in page.items], "next_cursor": page.next_cursor,
            "prev_cursor": page.prev_cursor, "count": count, "count_capped": capped}


@router.post("/contacts", auth=requires("contacts.change"),
             response={201: ContactOut, **WRITE_ERRORS}, summary="Create a contact")
def create_contact(request, payload: ContactIn):
    try:
        contact = services.create_contact(request.auth, payload.model_dump(exclude_unset=True),
                                          source=Source.API)
    except services.ContactError as exc:
        raise _service_error(exc, "contact") from exc
    return Status(201, _reload(contact))


@router.get("/contacts/lookup", auth=requires("contacts.view"),
            response={200: ContactOut, **READ_ERRORS, 422: ErrorOut},
            summary="Find a contact by email address")
def lookup_contact(request, email: str):
    try:
        address = normalise_email(email)
    except InvalidEmail as exc:
        raise _invalid({"email": f"invalid email address: {exc}"}) from exc
    contact = _contacts().filter(email=address).first()
    if contact is None:
        raise ApiError(404, "not_found", f"there is no contact with the email {address}")
    return _contact_out(contact)


@router.get("/contacts/{contact_id}", auth=requires("contacts.view"),
            response={200: ContactOut, **READ_ERRORS}, summary="A contact")
def get_contact(request, contact_id: int):
    return _contact_out(_get_contact(contact_id))


@router.patch("/contacts/{contact_id}", auth=requires("contacts.change", "contacts.change_own"),
              response={200: ContactOut, **WRITE_ERRORS}, summary="Change a contact")
def update_contact(request, contact_id: int, payload: ContactIn):
    """Only the fields sent change. Sales may change the contacts they own, but not their owner."""
    contact = _get_contact(contact_id)
    _require_contact_change(request, contact)
    data = payload.model_dump(exclude_unset=True)
    if "owner_id" in data and data["owner_id"] != contact.owner_id and not can(request.auth, "contacts.change"):
        raise ApiError(403, "forbidden", "only admins and marketers assign owners", {"owner_id": "may not change"})
    try:
        services.update_contact(request.auth, contact, data, via="api")
    except services.ContactError as exc:
        raise _service_error(exc, "contact") from exc
    return _reload(contact)


@router.delete("/contacts/{contact_id}", auth=requires("contacts.delete"),
               response={204: None, **READ_ERRORS}, summary="Delete a contact")
def delete_contact(request, contact_id: int):
    services.delete_contact(request.auth, _get_contact(contact_id))
    return Status(204, None)


# --- Consent ------------------------------------------------------------------------------------

def _topic_status(topic: SubscriptionTopic, row: Consent | None) -> dict[str, Any]:
    return {"topic": topic.key, "name": topic.name, "requires_opt_in": topic.requires_opt_in,
            "status": row.status if row else ConsentStatus.UNKNOWN.value, "updated_at": row.updated_at if row else None}


@router.get("/contacts/{contact_id}/consents", auth=requires("contacts.view"),
            response={200: ConsentsOut, **READ_ERRORS, 422: ErrorOut},
            summary="A contact's consent: status per topic and the ledger")
def get_consents(request, contact_id: int, limit: int = LEDGER_LIMIT):
    if not 1 <= limit <= 1000:
        raise _invalid({"limit": "must be between 1 and 1000"})
    contact = _get_contact(contact_id)
    rows = {c.topic_id: c for c in contact.consents.all()}
    ledger = ConsentRecord.objects.filter(contact=contact).select_related("topic", "actor")
    return {
        "do_not_contact": contact.do_not_contact, "dnc_reason": contact.dnc_reason, "dnc_at": contact.dnc_at,
        "topics": [_topic_status(t, rows.get(t.pk)) for t in SubscriptionTopic.objects.all()],
        "ledger": [
            {"topic": r.topic.key if r.topic else None, "status": r.status, "at": r.at, "method": r.method,
             "source": r.source, "text_shown": r.text_shown, "ip": r.ip,
             "actor": r.actor.get_username() if r.actor else None, "reason": r.reason}
            for r in ledger[:limit]
        ],
        "ledger_count": ledger.count(),
    }


@router.put("/contacts/{contact_id}/consents/{topic_key}", auth=requires("contacts.change", "contacts.change_own"),
            response={200: ConsentChangeOut, **WRITE_ERRORS},
            summary="Set a contact's consent for one topic")
def set_consent(request, contact_id: int, topic_key: str, payload: ConsentIn):
    """Writes a ledger row (method "api") with the source and the words shown, and an audit entry."""
    contact = _get_contact(contact_id)
    _require_contact_change(request, contact)
    topic = SubscriptionTopic.objects.filter(key=topic_key).first()
    if topic is None:
        raise ApiError(404, "not_found", f"there is no subscription topic with the key {topic_key!r}")
    key = getattr(request, "api_key", None)
    source = payload.source.strip() or (f"API key {key.name}" if key else "API")
    with transaction.atomic():
        before = consent.consent_status(contact, topic)
        changed = consent.set_consent(
            contact, topic, payload.status, method=ConsentRecord.Method.API, source=source,
            text_shown=payload.text_shown, ip=str(payload.ip) if payload.ip else None, actor=request.auth,
        )
        if changed:
            audit.record(request.auth, "consent", contact, changes={f"consent.{topic.key}": [before, payload.status]})
    row = Consent.objects.filter(contact=contact, topic=topic).first()
    return {**_topic_status(topic, row), "changed": changed}


# --- Companies ----------------------------------------------------------------------------------

def _company_out(company: Company) -> dict[str, Any]:
    return {f: getattr(company, f) for f in (
        "id", "name", "domain", "industry", "company_size", "employees", "prefecture", "address", "phone",
        "website", "owner_id", "custom", "created_at", "updated_at",
    )}


def _get_company(company_id: int) -> Company:
    company = Company.objects.filter(pk=company_id).first()
    if company is None:
        raise ApiError(404, "not_found", f"there is no company with id {company_id}")
    return company


def _filter_companies(qs: QuerySet[Company], params) -> QuerySet[Company]:
    errors: dict[str, str] = {}
    if q := params.get("q", "").strip():
        qs = qs.filter(Q(name__icontains=q) | Q(domain__istartswith=q.lower()))
    if domain := params.get("domain", "").strip():
        qs = qs.filter(domain=domain.lower())
    if industry := params.get("industry", "").strip():
        code = normalise_industry(industry)
        if not code:
            errors["industry"] = f"unknown industry {industry!r}"
        qs = qs.filter(industry=code or industry)
    if prefecture := params.get("prefecture", "").strip():
        code = normalise_prefecture(prefecture)
        if not code:
            errors["prefecture"] = f"unknown prefecture {prefecture!r}"
        qs = qs.filter(prefecture=code or prefecture)
    if owner := params.get("owner", "").strip():
        qs = queries.filter_owner(qs, owner, errors)
    if errors:
        raise queries.QueryError(errors)
    return qs


@router.get("/companies", auth=requires("companies.view"),
            response={200: CompanyPage, **LIST_ERRORS}, tags=["companies"], summary="List companies")
def list_companies(request, q: str = "", domain: str = "", industry: str = "", prefecture: str = "",
                   owner: str = "", sort: str = "newest", cursor: str = "", limit: int = 50):
    _check_params(request, COMPANY_FILTERS | PAGE_PARAMS)
    if not 1 <= limit <= 200:
        raise _invalid({"limit": "must be between 1 and 200"})
    if sort not in COMPANY_SORTS:
        raise ApiError(400, "bad_request", "the filters are not valid",
                       {"sort": f"unknown sort {sort!r} (one of {', '.join(COMPANY_SORTS)})"})
    try:
        qs = _filter_companies(Company.objects.all(), request.GET)
        page = queries.paginate(qs, sort=sort, cursor=cursor, limit=limit)
    except queries.QueryError as exc:
        raise ApiError(400, "bad_request", "the filters are not valid", exc.errors) from exc
    count, capped = queries.capped_count(qs)
    return {"items": [_company_out(c) for c in page.items], "next_cursor": page.next_cursor,
            "prev_cursor": page.prev_cursor, "count": count, "count_capped": capped}


@router.post("/companies", auth=requires("companies.change"),
             response={201: CompanyOut, **WRITE_ERRORS}, tags=["companies"], summary="Create a company")
def create_company(request, payload: CompanyIn):
    company = _save_company(request, payload.model_dump(exclude_unset=True))
    return Status(201, _company_out(company))


@router.get("/companies/{company_id}", auth=requires("companies.view"),
            response={200: CompanyOut, **READ_ERRORS}, tags=["companies"],
            summary="A company")
def get_company(request, company_id: int):
    return _company_out(_get_company(company_id))


@router.patch("/companies/{company_id}", auth=requires("companies.change"),
              response={200: CompanyOut, **WRITE_ERRORS}, tags=["companies"],
              summary="Change a company")
def update_company(request, company_id: int, payload: CompanyPatch):
    company = _get_company(company_id)
    return _company_out(_save_company(request, payload.model_dump(exclude_unset=True), company))


@router.delete("/companies/{company_id}", auth=requires("companies.change"),
               response={204: None, **READ_ERRORS}, tags=["companies"],
               summary="Delete a company (its contacts stay, unlinked)")
def delete_company(request, company_id: int):
    services.delete_company(request.auth, _get_company(company_id))
    return Status(204, None)


# --- Custom fields ------------------------------------------------------------------------------

def _field_out(definition: CustomField) -> dict[str, Any]:
    return {f: getattr(definition, f) for f in ("id", *FIELD_AUDITED, "created_at")}


def _get_field(field_id: int) -> CustomField:
    definition = CustomField.objects.filter(pk=field_id).first()
    if definition is None:
        raise ApiError(404, "not_found", f"there is no custom field with id {field_id}")
    return definition


def _clean_choices(choices: list[str], errors: dict[str, str]) -> list[str]:
    cleaned = [c.strip() for c in choices]
    for i, choice in enumerate(cleaned):
        if not choice:
            errors[f"choices.{i}"] = "is empty"
    return cleaned


def _save_field(request, definition: CustomField, values: dict[str, Any], *, created: bool) -> CustomField:
    """Validates the merged definition, saves it and audits what changed."""
    errors: dict[str, str] = {}
    if "choices" in values:
        values["choices"] = _clean_choices(values["choices"], errors)
    if "label" in values:
        values["label"] = values["label"].strip()
        if not values["label"]:
            errors["label"] = "is required"
    before = {} if created else {f: getattr(definition, f) for f in FIELD_AUDITED}
    for name, value in values.items():
        setattr(definition, name, value)
    if not errors:
        problems = fields.validate_definition(definition.field_type, definition.choices)
        if problems:
            errors["choices"] = "; ".join(problems)
    if errors:
        raise _invalid(errors, "the custom field is not valid")
    try:
        with transaction.atomic():
            definition.save()
            changes = audit.diff(before, {f: getattr(definition, f) for f in FIELD_AUDITED})
            if changes:
                audit.record(request.auth, "create" if created else "update", definition, changes=changes)
    except IntegrityError as exc:  # the same key, created by a concurrent request
        raise _key_taken(definition.target, definition.key) from exc
    return definition


def _key_taken(target: str, key: str) -> ApiError:
    return ApiError(409, "conflict", "the custom field clashes with an existing one",
                    {"key": f"another {target} field already has the key {key}"})


@router.get("/custom-fields", auth=requires("fields.view"),
            response={200: CustomFieldList, **LIST_ERRORS}, tags=["custom fields"],
            summary="Custom field definitions")
def list_custom_fields(request, target: str = ""):
    _check_params(request, {"target"})
    definitions = CustomField.objects.all()
    if target:
        if target not in CustomField.Target.values:
            raise ApiError(400, "bad_request", "the filters are not valid",
                           {"target": f"must be one of: {', '.join(CustomField.Target.values)}"})
        definitions = definitions.filter(target=target)
    return {"items": [_field_out(d) for d in definitions]}


@router.post("/custom-fields", auth=requires("fields.manage"),
             response={201: CustomFieldOut, **WRITE_ERRORS}, tags=["custom fields"],
             summary="Define a custom field")
def create_custom_field(request, payload: CustomFieldIn):
    values = payload.model_dump()
    key = values["key"].strip()
    if not KEY_RE.match(key):
        raise _invalid({"key": "use lower-case letters, digits and _ only, starting with a letter "
                               "(for example: budget_2026)"}, "the custom field is not valid")
    if CustomField.objects.filter(target=values["target"], key=key).exists():
        raise _key_taken(values["target"], key)
    values["key"] = key
    definition = _save_field(request, CustomField(), values, created=True)
    return Status(201, _field_out(definition))


@router.get("/custom-fields/{field_id}", auth=requires("fields.view"),
            response={200: CustomFieldOut, **READ_ERRORS}, tags=["custom fields"],
            summary="A custom field definition")
def get_custom_field(request, field_id: int):
    return _field_out(_get_field(field_id))


@router.patch("/custom-fields/{field_id}", auth=requires("fields.manage"),
              response={200: CustomFieldOut, **WRITE_ERRORS}, tags=["custom fields"],
              summary="Change a custom field definition")
def update_custom_field(request, field_id: int, payload: CustomFieldPatch):
    """Key and target cannot change: the values stored on contacts and companies live under them."""
    definition = _get_field(field_id)
    values = payload.model_dump(exclude_unset=True)
    errors = {}
    for name in ("target", "key"):
        if name in values and values.pop(name) != getattr(definition, name):
            errors[name] = "cannot change: stored values live under it"
    for name in ("label", "field_type", "choices", "required", "help_text", "position"):
        if name in values and values[name] is None:
            errors[name] = "may not be null"
    if errors:
        raise _invalid(errors, "the custom field is not valid")
    return _field_out(_save_field(request, definition, values, created=False))


@router.delete("/custom-fields/{field_id}", auth=requires("fields.manage"),
               response={204: None, **READ_ERRORS}, tags=["custom fields"],
               summary="Delete a custom field definition (stored values stay)")
def delete_custom_field(request, field_id: int):
    definition = _get_field(field_id)
    with transaction.atomic():
        audit.record(request.auth, "delete", definition,
                     changes=audit.diff({f: getattr(definition, f) for f in FIELD_AUDITED}, {}))
        definition.delete()
    return Status(204, None)
