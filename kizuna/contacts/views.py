"""Contacts, companies, static lists and their settings (custom fields, subscription topics).

Views stay thin: they check the role, shape input with `forms.py` and hand it to the domain
functions (`services`, `consent`, `queries`), which validate, link companies and audit. Lists
of contacts use keyset pages and capped counts, so they stay fast at a million contacts.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from kizuna.accounts import audit
from kizuna.accounts.models import User
from kizuna.accounts.permissions import capability_required
from kizuna.accounts.roles import can, can_change_contact

from . import consent, queries, services
from .forms import (
    CompanyForm,
    ConsentForm,
    ContactForm,
    ContactListForm,
    CustomFieldForm,
    DoNotContactForm,
    SubscriptionTopicForm,
)
from .models import (
    Company,
    ConsentRecord,
    ConsentStatus,
    Contact,
    ContactList,
    CustomField,
    DoNotContactReason,
    LifecycleStage,
    ListMembership,
    Source,
    SubscriptionTopic,
    Tag,
)
from .panels import rendered_panels
from .reference import PREFECTURE_CHOICES, CompanySize, Industry, Region

PAGE_SIZE = 50
LEDGER_SHOWN = 100
TAG_SUGGESTIONS = 500
MANUAL_SOURCE = "contact page"
SORT_LABELS = {
    "newest": gettext_lazy("Newest first"),
    "oldest": gettext_lazy("Oldest first"),
    "updated": gettext_lazy("Recently updated"),
    "activity": gettext_lazy("Recent activity"),
    "name": gettext_lazy("Name (furigana)"),
    "company": gettext_lazy("Company name"),
}


def _deny() -> None:
    raise PermissionDenied(_("Your role does not allow this."))


def _display_custom(value: Any) -> str:
    """A stored custom value as people read it."""
    if isinstance(value, bool):
        return str(_("Yes") if value else _("No"))
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _custom_rows(target: str, stored: dict[str, Any]) -> list[dict[str, Any]]:
    """Every defined field with its label and value, then values whose definition is gone."""
    rows = []
    definitions = list(CustomField.objects.filter(target=target))
    for d in definitions:
        rows.append({"label": d.label, "key": d.key, "value": _display_custom(stored.get(d.key)), "defined": True})
    known = {d.key for d in definitions}
    for key in sorted(set(stored) - known):
        rows.append({"label": key, "key": key, "value": _display_custom(stored[key]), "defined": False})
    return rows


# --- Contacts list ------------------------------------------------------------------------------

def _options(choices, current: str) -> list[dict[str, Any]]:
    return [{"value": str(v), "label": label, "selected": str(v) == current} for v, label in choices]


def _filter_fields(params) -> list[dict[str, Any]]:
    """The select filters of the contacts list, with the current choice marked."""
    get = lambda k: str(params.get(k) or "")  # noqa: E731
    owners = [("none", _("No owner"))] + [
        (u.pk, str(u)) for u in User.objects.filter(is_active=True).order_by("last_name", "first_name", "username")
    ]
    lists = ContactList.objects.order_by("name").values_list("id", "name")
    return [
        {"name": "stage", "label": _("Stage"), "options": _options(LifecycleStage.choices, get("stage"))},
        {"name": "prefecture", "label": _("Prefecture"), "options": _options(PREFECTURE_CHOICES, get("prefecture"))},
        {"name": "region", "label": _("Region"), "options": _options(Region.choices, get("region"))},
        {"name": "industry", "label": _("Industry"), "options": _options(Industry.choices, get("industry"))},
        {"name": "company_size", "label": _("Company size"),
         "options": _options(CompanySize.choices, get("company_size"))},
        {"name": "owner", "label": _("Owner"), "options": _options(owners, get("owner"))},
        {"name": "list", "label": _("List"), "options": _options(lists, get("list"))},
    ]


def _shown(contacts):
    """What a table of contacts shows: owner and company in the same query, custom values left out."""
    return contacts.select_related("owner", "company").defer("custom")


FORM_FILTERS = {"q", "stage", "prefecture", "region", "industry", "company_size", "owner", "tag", "list"}
EXTRA_FILTER_LABELS = {
    "company": gettext_lazy("Company"), "email": gettext_lazy("Email"), "source": gettext_lazy("Source"),
    "created_after": gettext_lazy("Created on or after"), "created_before": gettext_lazy("Created before"),
    "updated_since": gettext_lazy("Updated since"), "do_not_contact": gettext_lazy("Do not contact"),
}


def _extra_filters(params) -> list[dict[str, Any]]:
    """Filters that came from a link (a company's contacts, a custom field value) rather than the
    form: shown so the user knows they apply, kept as hidden inputs, each with a link to drop it."""
    extras = []
    for key in params:
        if key in FORM_FILTERS or not params.get(key) or not (key in EXTRA_FILTER_LABELS or key.startswith("custom.")):
            continue
        value = params.get(key)
        label = EXTRA_FILTER_LABELS.get(key) or key
        if key == "company" and value.isdigit():
            value = Company.objects.filter(pk=int(value)).values_list("name", flat=True).first() or value
        rest = params.copy()
        rest.pop(key)
        rest.pop("cursor", None)
        extras.append({"key": key, "raw": params.get(key), "label": label, "value": value,
                       "remove": "?" + rest.urlencode()})
    return extras


@capability_required("contacts.view")
def contact_list(request):
    """Search, filter and sort contacts; one keyset page at a time, the count capped."""
    params = request.GET
    sort = params.get("sort") or queries.DEFAULT_SORT
    page, count, capped, errors = None, 0, False, {}
    try:
        matching = queries.filter_contacts(Contact.objects.all(), params)
        page = queries.paginate(_shown(matching), sort=sort, cursor=params.get("cursor", ""), limit=PAGE_SIZE)
        count, capped = queries.capped_count(matching)
    except queries.QueryError as exc:
        errors = exc.errors
    context = {
        "page": page, "count": count, "capped": capped, "errors": errors,
        "q": params.get("q", ""), "tag": params.get("tag", ""), "sort": sort,
        "sorts": [(key, SORT_LABELS.get(key, key)) for key in queries.SORTS],
        "filter_fields": _filter_fields(params),
        "extra_filters": _extra_filters(params),
        "tag_names": Tag.objects.order_by("name").values_list("name", flat=True)[:TAG_SUGGESTIONS],
        "filtered": any(params.get(k) for k in queries.FILTER_KEYS),
    }
    return render(request, "contacts/contact_list.html", context, status=400 if errors else 200)


# --- One contact --------------------------------------------------------------------------------

def _consent_context(contact: Contact) -> dict[str, Any]:
    current = {c.topic_id: c for c in contact.consents.all()}
    topics = []
    for topic in SubscriptionTopic.objects.all():
        row = current.get(topic.pk)
        topics.append({
            "topic": topic,
            "status": row.status if row else ConsentStatus.UNKNOWN,
            "status_label": (row.get_status_display() if row else ConsentStatus.UNKNOWN.label),
            "updated_at": row.updated_at if row else None,
            "may_send": bool(consent.may_send(contact, consent.MARKETING, topic)),
        })
    ledger = list(contact.consent_records.select_related("topic", "actor")[:LEDGER_SHOWN])
    reasons = dict(DoNotContactReason.choices)
    for record in ledger:
        record.reason_label = reasons.get(record.reason, record.reason)
    return {"topics": topics, "ledger": ledger, "statuses": ConsentStatus.choices}


@capability_required("contacts.view")
def contact_detail(request, pk: int):
    """Everything about one contact; POST adds it to or removes it from a static list."""
    contact = get_object_or_404(
        Contact.objects.select_related("company", "owner").prefetch_related("tags", "consents"), pk=pk
    )
    if request.method == "POST":
        return _change_membership(request, contact)
    memberships = list(contact.list_memberships.select_related("contact_list").order_by("contact_list__name"))
    member_of = {m.contact_list_id for m in memberships}
    context = {
        "contact": contact,
        "can_edit": can_change_contact(request.user, contact),
        "custom_rows": _custom_rows(CustomField.Target.CONTACT, contact.custom or {}),
        "memberships": memberships,
        "other_lists": [lst for lst in ContactList.objects.order_by("name") if lst.pk not in member_of],
        "dnc_form": DoNotContactForm(),
        "dnc_reason": dict(DoNotContactReason.choices).get(contact.dnc_reason, contact.dnc_reason),
        "history": audit.history(contact),
        "panels": rendered_panels(request, contact),
        **_consent_context(contact),
    }
    return render(request, "contacts/contact_detail.html", context)


@transaction.atomic
def add_to_list(actor, contact: Contact, contact_list: ContactList) -> bool:
    """Adds a contact to a static list by hand (audited on the contact); False if already there."""
    _m, created = ListMembership.objects.get_or_create(
        contact_list=contact_list, contact=contact, defaults={"source": Source.MANUAL}
    )
    if created:
        audit.record(actor, "add_to_list", contact, changes={"list": [None, contact_list.name]})
    return created


@transaction.atomic
def remove_from_list(actor, contact: Contact, contact_list: ContactList) -> bool:
    """Removes a contact from a static list (audited on the contact); False if it was not there."""
    deleted, _d = ListMembership.objects.filter(contact_list=contact_list, contact=contact).delete()
    if deleted:
        audit.record(actor, "remove_from_list", contact, changes={"list": [contact_list.name, None]})
    return bool(deleted)


def _change_membership(request, contact: Contact):
    if not can(request.user, "lists.change"):
        _deny()
    action = request.POST.get("action")
    list_id = request.POST.get("list", "")
    contact_list = ContactList.objects.filter(pk=list_id).first() if list_id.isdigit() else None
    if contact_list is None:
        messages.error(request, _("Choose a list."))
    elif action == "add_to_list":
        if add_to_list(request.user, contact, contact_list):
            messages.success(request, _("Added to the list %(name)s.") % {"name": contact_list.name})
    elif action == "remove_from_list":
        if remove_from_list(request.user, contact, contact_list):
            messages.success(request, _("Removed from the list %(name)s.") % {"name": contact_list.name})
    else:
        messages.error(request, _("Unknown action."))
    return redirect("contacts:detail", pk=contact.pk)


@capability_required("contacts.change")
def contact_create(request):
    form = ContactForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            contact = services.create_contact(request.user, form.service_data(), source=Source.MANUAL)
        except services.ContactError as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, _("Contact %(name)s created.") % {"name": contact})
            return redirect("contacts:detail", pk=contact.pk)
    return render(request, "contacts/contact_form.html", {"form": form}, status=400 if form.errors else 200)


@capability_required("contacts.view")
def contact_edit(request, pk: int):
    contact = get_object_or_404(Contact.objects.prefetch_related("tags"), pk=pk)
    if not can_change_contact(request.user, contact):
        _deny()
    form = ContactForm(request.POST or None, contact=contact,
                       can_assign_owner=can(request.user, "contacts.change"))
    if request.method == "POST" and form.is_valid():
        try:
            services.update_contact(request.user, contact, form.service_data())
        except services.ContactError as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, _("Contact %(name)s saved.") % {"name": contact})
            return redirect("contacts:detail", pk=contact.pk)
    return render(request, "contacts/contact_form.html", {"form": form, "contact": contact},
                  status=400 if form.errors else 200)


@capability_required("contacts.delete")
def contact_delete(request, pk: int):
    contact = get_object_or_404(Contact, pk=pk)
    if request.method == "POST":
        name = str(contact)
        services.delete_contact(request.user, contact)
        messages.success(request, _("Contact %(name)s deleted.") % {"name": name})
        return redirect("contacts:list")
    return render(request, "contacts/contact_confirm_delete.html", {"contact": contact})


def _dnc_snapshot(contact: Contact) -> dict[str, Any]:
    return {"do_not_contact": contact.do_not_contact, "dnc_reason": contact.dnc_reason}


@require_POST
@capability_required("contacts.view")
def contact_consent(request, pk: int):
    """Consent and do-not-contact changes by hand: ledger rows with method "manual" and the user."""
    contact = get_object_or_404(Contact, pk=pk)
    if not can_change_contact(request.user, contact):
        _deny()
    action = request.POST.get("action")
    method = ConsentRecord.Method.MANUAL
    if action == "topic":
        form = ConsentForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("The consent change was not valid: %(errors)s")
                           % {"errors": "; ".join(str(e) for errs in form.errors.values() for e in errs)})
        else:
            topic, status = form.cleaned_data["topic"], form.cleaned_data["status"]
            before = consent.consent_status(contact, topic)
            if consent.set_consent(contact, topic, status, method=method, actor=request.user,
                                   source=form.cleaned_data["source"] or MANUAL_SOURCE):
                audit.record(request.user, "consent", contact, changes={f"consent.{topic.key}": [before, status]})
                messages.success(request, _("Consent for %(topic)s set to %(status)s.")
                                 % {"topic": topic.name, "status": ConsentStatus(status).label})
    elif action == "set_dnc":
        form = DoNotContactForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Choose a reason."))
        else:
            before = _dnc_snapshot(contact)
            reason = form.cleaned_data["reason"]
            if consent.set_do_not_contact(contact, reason, method=method, actor=request.user,
                                          source=form.cleaned_data["source"] or MANUAL_SOURCE):
                audit.record(request.user, "consent", contact, changes=audit.diff(before, _dnc_snapshot(contact)))
                messages.success(request, _("Marked as do not contact."))
    elif action == "clear_dnc":
        before = _dnc_snapshot(contact)
        if consent.clear_do_not_contact(contact, method=method, actor=request.user,
                                        source=request.POST.get("source", "")[:255] or MANUAL_SOURCE):
            audit.record(request.user, "consent", contact, changes=audit.diff(before, _dnc_snapshot(contact)))
            messages.success(request, _("The contact can be contacted again."))
    else:
        messages.error(request, _("Unknown action."))
    return redirect("contacts:detail", pk=contact.pk)


# --- Companies ----------------------------------------------------------------------------------

def _contact_counts(company_ids: list[int]) -> dict[int, int]:
    rows = Contact.objects.filter(company_id__in=company_ids).order_by().values_list("company_id")
    return dict(rows.annotate(n=Count("id")))


@capability_required("companies.view")
def company_list(request):
    q = request.GET.get("q", "").strip()
    companies = Company.objects.all()
    if q:
        companies = companies.filter(Q(name__icontains=q) | Q(domain__istartswith=q.lower()))
    try:
        page = queries.paginate(companies.select_related("owner"), sort="newest",
                                cursor=request.GET.get("cursor", ""), limit=PAGE_SIZE)
    except queries.QueryError as exc:
        return render(request, "contacts/company_list.html", {"q": q, "errors": exc.errors}, status=400)
    counts = _contact_counts([c.pk for c in page.items])
    for company in page.items:
        company.contact_count = counts.get(company.pk, 0)
    count, capped = queries.capped_count(companies)
    return render(request, "contacts/company_list.html",
                  {"page": page, "q": q, "count": count, "capped": capped})


def _contacts_page(request, params: dict[str, str]):
    """A keyset page of the contacts matching `params`, with a capped count, for detail pages."""
    matching = queries.filter_contacts(Contact.objects.all(), params)
    try:
        page = queries.paginate(_shown(matching), cursor=request.GET.get("cursor", ""), limit=PAGE_SIZE)
    except queries.QueryError:  # a stale or edited cursor: start again from the first page
        page = queries.paginate(_shown(matching), limit=PAGE_SIZE)
    count, capped = queries.capped_count(matching)
    return page, count, capped


@capability_required("companies.view")
def company_detail(request, pk: int):
    company = get_object_or_404(Company.objects.select_related("owner"), pk=pk)
    page, count, capped = _contacts_page(request, {"company": str(company.pk)})
    return render(request, "contacts/company_detail.html", {
        "company": company, "page": page, "count": count, "capped": capped,
        "custom_rows": _custom_rows(CustomField.Target.COMPANY, company.custom or {}),
        "history": audit.history(company),
    })


def _company_form(request, company: Company | None):
    form = CompanyForm(request.POST or None, company=company)
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.save_company(request.user, form.service_data(), company)
        except services.ContactError as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, _("Company %(name)s saved.") % {"name": saved.name})
            return redirect("contacts:company_detail", pk=saved.pk)
    return render(request, "contacts/company_form.html", {"form": form, "company": company},
                  status=400 if form.errors else 200)


@capability_required("companies.change")
def company_create(request):
    return _company_form(request, None)


@capability_required("companies.change")
def company_edit(request, pk: int):
    return _company_form(request, get_object_or_404(Company, pk=pk))


# --- Static lists -------------------------------------------------------------------------------

@capability_required("contacts.view")
def list_index(request):
    """All static lists with their sizes; POST creates one."""
    form = ContactListForm(request.POST or None)
    if request.method == "POST":
        if not can(request.user, "lists.change"):
            _deny()
        if form.is_valid():
            contact_list = form.save()
            audit.record(request.user, "create", contact_list, changes=audit.diff({}, form.cleaned_data))
            messages.success(request, _("List %(name)s created.") % {"name": contact_list.name})
            return redirect("contacts:list_detail", pk=contact_list.pk)
    lists = ContactList.objects.annotate(member_count=Count("memberships")).order_by("name")
    return render(request, "contacts/list_index.html", {"lists": lists, "form": form},
                  status=400 if form.errors else 200)


@capability_required("contacts.view")
def list_detail(request, pk: int):
    """A list's members; POST removes one member, or deletes the list (its contacts stay)."""
    contact_list = get_object_or_404(ContactList, pk=pk)
    if request.method == "POST":
        if not can(request.user, "lists.change"):
            _deny()
        action = request.POST.get("action")
        if action == "remove":
            contact_id = request.POST.get("contact", "")
            contact = get_object_or_404(Contact, pk=int(contact_id) if contact_id.isdigit() else 0)
            if remove_from_list(request.user, contact, contact_list):
                messages.success(request, _("%(name)s removed from the list.") % {"name": contact})
            return redirect(request.get_full_path())
        if action == "delete":
            with transaction.atomic():
                audit.record(request.user, "delete", contact_list, changes={"name": [contact_list.name, None]})
                contact_list.delete()
            messages.success(request, _("List %(name)s deleted.") % {"name": contact_list.name})
            return redirect("contacts:list_index")
        messages.error(request, _("Unknown action."))
        return redirect("contacts:list_detail", pk=pk)
    page, count, capped = _contacts_page(request, {"list": str(contact_list.pk)})
    return render(request, "contacts/list_detail.html", {
        "contact_list": contact_list, "page": page, "count": count, "capped": capped,
        "history": audit.history(contact_list),
    })


# --- Settings: custom fields --------------------------------------------------------------------

FIELD_AUDITED = ["target", "key", "label", "field_type", "choices", "required", "help_text", "position"]
TOPIC_AUDITED = ["key", "name", "description", "requires_opt_in"]


def _snapshot(obj, names: list[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


@capability_required("fields.manage")
def field_list(request):
    definitions = list(CustomField.objects.all())
    sections = [(label, [f for f in definitions if f.target == target]) for target, label in CustomField.Target.choices]
    return render(request, "contacts/field_list.html", {"sections": sections})


def _field_form(request, definition: CustomField | None):
    before = _snapshot(definition, FIELD_AUDITED) if definition else {}
    form = CustomFieldForm(request.POST or None, instance=definition)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            saved = form.save()
            changes = audit.diff(before, _snapshot(saved, FIELD_AUDITED))
            if changes:
                audit.record(request.user, "update" if definition else "create", saved, changes=changes)
        messages.success(request, _("Custom field %(label)s saved.") % {"label": saved.label})
        return redirect("contacts:field_list")
    return render(request, "contacts/field_form.html", {"form": form, "definition": definition},
                  status=400 if form.errors else 200)


@capability_required("fields.manage")
def field_create(request):
    return _field_form(request, None)


@capability_required("fields.manage")
def field_edit(request, pk: int):
    return _field_form(request, get_object_or_404(CustomField, pk=pk))


# --- Settings: subscription topics --------------------------------------------------------------

def _save_topic(request, form: SubscriptionTopicForm, before: dict[str, Any]) -> SubscriptionTopic:
    with transaction.atomic():
        topic = form.save()
        changes = audit.diff(before, _snapshot(topic, TOPIC_AUDITED))
        if changes:
            audit.record(request.user, "update" if before else "create", topic, changes=changes)
    messages.success(request, _("Subscription topic %(name)s saved.") % {"name": topic.name})
    return topic


@capability_required("topics.manage")
def topic_list(request):
    """The topics contacts opt into or out of; POST creates one."""
    form = SubscriptionTopicForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _save_topic(request, form, {})
        return redirect("contacts:topic_list")
    return render(request, "contacts/topic_list.html", {"topics": SubscriptionTopic.objects.all(), "form": form},
                  status=400 if form.errors else 200)


@capability_required("topics.manage")
def topic_edit(request, pk: int):
    topic = get_object_or_404(SubscriptionTopic, pk=pk)
    before = _snapshot(topic, TOPIC_AUDITED)
    form = SubscriptionTopicForm(request.POST or None, instance=topic)
    if request.method == "POST" and form.is_valid():
        _save_topic(request, form, before)
        return redirect("contacts:topic_list")
    return render(request, "contacts/topic_form.html", {"form": form, "topic": topic},
                  status=400 if form.errors else 200)
