"""Forms for the contacts area.

Contact and company forms only shape input: the services validate it (the same rules as the
API and imports) and report problems by field path, which `add_service_errors` puts back on the
form fields. Custom fields become real form fields, one per definition, of the matching type.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any

from django import forms
from django.db.models import Q
from django.utils.html import escape
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from kizuna.accounts.models import User

from . import fields as custom_fields
from . import services
from .models import (
    Company,
    ConsentStatus,
    Contact,
    ContactList,
    CustomField,
    DoNotContactReason,
    SubscriptionTopic,
)

CUSTOM_PREFIX = "custom_"
KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
KEY_HELP = _("Lower-case letters, digits and _, starting with a letter; used in the API, imports and templates.")
BLANK = [("", "—")]
YES_NO = [("", "—"), ("yes", _("Yes")), ("no", _("No"))]
# Service error paths whose form field has another name.
PATH_TO_FIELD = {"owner_id": "owner"}


# --- Custom fields as form fields ---------------------------------------------------------------

def custom_form_field(definition: CustomField) -> forms.Field:
    """A form field of the definition's type; values are checked again by `fields.clean_value`."""
    common: dict[str, Any] = {
        # Django renders help text as HTML; an admin's text is escaped like any other string.
        "label": definition.label, "required": definition.required, "help_text": escape(definition.help_text),
    }
    kind = definition.field_type
    if kind == CustomField.Type.NUMBER:
        return forms.DecimalField(widget=forms.NumberInput(attrs={"step": "any"}), **common)
    if kind == CustomField.Type.DATE:
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"), **common)
    if kind == CustomField.Type.BOOLEAN:
        # A select, not a checkbox: "not answered" must stay different from "no".
        return forms.ChoiceField(choices=YES_NO, **common)
    if kind == CustomField.Type.CHOICE:
        return forms.ChoiceField(choices=BLANK + [(c, c) for c in definition.choices], **common)
    if kind == CustomField.Type.MULTI_CHOICE:
        return forms.MultipleChoiceField(
            choices=[(c, c) for c in definition.choices], widget=forms.CheckboxSelectMultiple, **common
        )
    return forms.CharField(max_length=2000, **common)


def custom_initial(definition: CustomField, value: Any) -> Any:
    """A stored (canonical) value as its form field expects it."""
    if value is None:
        return None
    if definition.field_type == CustomField.Type.BOOLEAN:
        return "yes" if value is True else "no" if value is False else ""
    return value


def custom_input(value: Any) -> Any:
    """A cleaned form value as `fields.clean_value` takes it (None or "" for no value)."""
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


class CustomFieldsMixin:
    """Adds a form field for each custom field defined for `custom_target`."""

    custom_target: str

    def add_custom_fields(self, stored: dict[str, Any] | None) -> None:
        self.custom_definitions = list(CustomField.objects.filter(target=self.custom_target))
        for definition in self.custom_definitions:
            name = CUSTOM_PREFIX + definition.key
            self.fields[name] = custom_form_field(definition)
            if stored and definition.key in stored and name not in self.initial:
                self.initial[name] = custom_initial(definition, stored[definition.key])

    def custom_values(self) -> dict[str, Any]:
        return {d.key: custom_input(self.cleaned_data.get(CUSTOM_PREFIX + d.key)) for d in self.custom_definitions}

    @property
    def custom_bound_fields(self) -> list[forms.BoundField]:
        return [self[CUSTOM_PREFIX + d.key] for d in self.custom_definitions]

    def add_service_errors(self, errors: dict[str, str]) -> None:
        """Puts a service's {path: message} errors on the matching fields (the rest on the form).
        A field that already has an error keeps only its own, so nothing is said twice."""
        for path, message in errors.items():
            name = PATH_TO_FIELD.get(path, path)
            if path.startswith("custom."):
                name = CUSTOM_PREFIX + path.removeprefix("custom.")
            if name in self.fields and not self.fields[name].disabled:
                if name not in self.errors:
                    self.add_error(name, capfirst(message))
            else:
                self.add_error(None, f"{path}: {message}")


def _model_fields(model, names: list[str]) -> dict[str, forms.Field]:
    fields = forms.fields_for_model(model, fields=names)
    return {name: fields[name] for name in names}


def _owner_queryset(current_owner_id: int | None):
    """Active users, plus the current owner even when deactivated (so saving keeps it)."""
    return User.objects.filter(Q(is_active=True) | Q(pk=current_owner_id)).order_by("username")


# --- Contacts -----------------------------------------------------------------------------------

CONTACT_GROUPS: list[tuple[Any, list[str]]] = [
    (_("Person"), ["family_name", "given_name", "family_name_kana", "given_name_kana", "email", "phone"]),
    (_("Work"), ["company_name", "department", "job_title", "prefecture", "industry", "company_size"]),
    (_("Marketing"), ["lifecycle_stage", "owner", "tags", "language", "time_zone"]),
]
CONTACT_MODEL_FIELDS = [n for _t, names in CONTACT_GROUPS for n in names if n != "tags"]


def split_tags(text: str) -> list[str]:
    """'展示会, DX、seminar' → ['展示会', 'DX', 'seminar'] (both commas, Japanese and ASCII)."""
    return [t.strip() for t in re.split(r"[,、，]", text or "") if t.strip()]


class ContactForm(CustomFieldsMixin, forms.Form):
    custom_target = CustomField.Target.CONTACT

    def __init__(self, *args, contact: Contact | None = None, can_assign_owner: bool = True, **kwargs):
        self.contact = contact
        initial = kwargs.pop("initial", None) or {}
        if contact is not None:
            initial = {**forms.model_to_dict(contact, fields=CONTACT_MODEL_FIELDS), **initial}
            initial.setdefault("tags", ", ".join(t.name for t in contact.tags.all()))
        super().__init__(*args, initial=initial, **kwargs)
        model_fields = _model_fields(Contact, CONTACT_MODEL_FIELDS)
        model_fields["email"].widget = forms.TextInput(attrs={"inputmode": "email", "autocomplete": "off"})
        owner = model_fields["owner"]
        owner.queryset = _owner_queryset(contact.owner_id if contact else None)
        if not can_assign_owner:
            owner.disabled = True
            owner.help_text = _("Only admins and marketers assign owners.")
        self.fields.update(model_fields)
        self.fields["tags"] = forms.CharField(
            label=_("Tags"), required=False, help_text=_("Separate tags with commas."),
        )
        self.add_custom_fields(contact.custom if contact else None)

    @property
    def groups(self) -> list[tuple[Any, list[forms.BoundField]]]:
        groups = [(title, [self[n] for n in names]) for title, names in CONTACT_GROUPS]
        if self.custom_definitions:
            groups.append((_("Custom fields"), self.custom_bound_fields))
        return groups

    def clean(self):
        """Runs the service's checks on the fields that passed their own, so one submission shows
        every problem (the service checks again when saving)."""
        cleaned = super().clean()
        if self.errors:
            try:
                services.clean_contact_input(self.service_data(), existing=self.contact)
            except services.ContactError as exc:
                self.add_service_errors(exc.errors)
        return cleaned

    def service_data(self) -> dict[str, Any]:
        """The cleaned form as `services.create_contact/update_contact` take it (valid fields only)."""
        cleaned = self.cleaned_data
        data = {name: cleaned[name] for name in CONTACT_MODEL_FIELDS if name != "owner" and name in cleaned}
        if not self.fields["owner"].disabled and "owner" in cleaned:
            data["owner_id"] = cleaned["owner"].pk if cleaned["owner"] else None
        if "tags" in cleaned:
            data["tags"] = split_tags(cleaned["tags"])
        data["custom"] = {k: v for k, v in self.custom_values().items() if CUSTOM_PREFIX + k in cleaned}
        return data


# --- Companies ----------------------------------------------------------------------------------

COMPANY_MODEL_FIELDS = ["name", "domain", "industry", "company_size", "employees", "prefecture",
                        "address", "phone", "website", "owner"]


class CompanyForm(CustomFieldsMixin, forms.Form):
    custom_target = CustomField.Target.COMPANY

    def __init__(self, *args, company: Company | None = None, **kwargs):
        initial = kwargs.pop("initial", None) or {}
        if company is not None:
            initial = {**forms.model_to_dict(company, fields=COMPANY_MODEL_FIELDS), **initial}
        super().__init__(*args, initial=initial, **kwargs)
        model_fields = _model_fields(Company, COMPANY_MODEL_FIELDS)
        model_fields["name"].required = True
        model_fields["domain"].help_text = _("Contacts whose email address is at this domain are linked to it.")
        model_fields["owner"].queryset = _owner_queryset(company.owner_id if company else None)
        self.fields.update(model_fields)
        self.add_custom_fields(company.custom if company else None)

    def service_data(self) -> dict[str, Any]:
        """The cleaned form as `services.save_company` takes it."""
        data = {name: self.cleaned_data[name] for name in COMPANY_MODEL_FIELDS if name != "owner"}
        owner = self.cleaned_data.get("owner")
        data["owner_id"] = owner.pk if owner else None
        data["custom"] = self.custom_values()
        return data


# --- Consent ------------------------------------------------------------------------------------

class ConsentForm(forms.Form):
    topic = forms.ModelChoiceField(label=_("Topic"), queryset=SubscriptionTopic.objects.all())
    status = forms.ChoiceField(label=_("Consent"), choices=ConsentStatus.choices)
    source = forms.CharField(
        label=_("How it was given"), required=False, max_length=255,
        help_text=_("For example: phone call on 3 November, business card exchange at a trade show."),
    )


class DoNotContactForm(forms.Form):
    reason = forms.ChoiceField(label=_("Reason"), choices=DoNotContactReason.choices,
                               initial=DoNotContactReason.MANUAL)
    source = forms.CharField(label=_("Note"), required=False, max_length=255)


# --- Lists --------------------------------------------------------------------------------------

class ContactListForm(forms.ModelForm):
    class Meta:
        model = ContactList
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


# --- Settings -----------------------------------------------------------------------------------

def _check_key(value: str) -> str:
    value = (value or "").strip()
    if not KEY_RE.match(value):
        raise forms.ValidationError(
            _("Use lower-case letters, digits and _ only, starting with a letter (for example: budget_2026).")
        )
    return value


class CustomFieldForm(forms.ModelForm):
    """A custom field definition. Key and target are fixed once created: stored values live under them."""

    choices = forms.CharField(
        label=_("Choices"), required=False, widget=forms.Textarea(attrs={"rows": 5}),
        help_text=_("Choice fields only: one choice per line."),
    )

    class Meta:
        model = CustomField
        fields = ["target", "label", "key", "field_type", "choices", "required", "help_text", "position"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key"].help_text = KEY_HELP
        if self.instance.pk:
            self.initial["choices"] = "\n".join(self.instance.choices or [])
            for name in ("target", "key"):
                self.fields[name].disabled = True
            self.fields["key"].help_text = _("The key cannot change: values are stored under it.")

    def clean_key(self) -> str:
        return _check_key(self.cleaned_data.get("key", ""))

    def clean_choices(self) -> list[str]:
        text = self.cleaned_data.get("choices") or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def clean(self):
        cleaned = super().clean()
        field_type = cleaned.get("field_type")
        if field_type and "choices" in cleaned:
            for problem in custom_fields.validate_definition(field_type, cleaned["choices"]):
                self.add_error("choices", capfirst(problem) + ".")
        key, target = cleaned.get("key"), cleaned.get("target")
        if key and target:
            clash = CustomField.objects.filter(target=target, key=key).exclude(pk=self.instance.pk)
            if clash.exists():
                self.add_error("key", _("Another field on the same records already has the key %(key)s.")
                               % {"key": key})
        return cleaned

    def validate_constraints(self):
        """The key's uniqueness is checked in `clean` with a clearer message."""


class SubscriptionTopicForm(forms.ModelForm):
    class Meta:
        model = SubscriptionTopic
        fields = ["name", "key", "description", "requires_opt_in"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key"].help_text = KEY_HELP

    def clean_key(self) -> str:
        return _check_key(self.cleaned_data.get("key", ""))
