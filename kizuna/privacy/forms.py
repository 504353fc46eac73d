from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.emails import InvalidEmail, normalise_email
from kizuna.privacy.models import EventPolicy, PrivacySettings


class PrivacySettingsForm(forms.ModelForm):
    class Meta:
        model = PrivacySettings
        fields = ["erase_events", "inactive_months", "inactive_events", "event_months", "old_events", "operator_name",
                  "contact_info"]

    def clean_inactive_months(self):
        value = self.cleaned_data["inactive_months"]
        if value is not None and value < 1:
            raise forms.ValidationError(_("Use at least 1 month, or leave it empty."))
        return value

    def clean_event_months(self):
        value = self.cleaned_data["event_months"]
        if value is not None and value < 1:
            raise forms.ValidationError(_("Use at least 1 month, or leave it empty."))
        return value


class ErasedAddressForm(forms.Form):
    email = forms.CharField(label=_("Email address"), max_length=254)

    def clean_email(self):
        try:
            return normalise_email(self.cleaned_data["email"])
        except InvalidEmail as exc:
            raise forms.ValidationError(_("Not a valid email address: %(reason)s") % {"reason": exc}) from exc


class EraseForm(forms.Form):
    events = forms.ChoiceField(label=_("Their tracked events"), choices=EventPolicy.choices)
    confirm = forms.CharField(label=_("Type the contact's email address (or its number) to confirm"), max_length=254)

    def __init__(self, *args, contact, **kwargs):
        super().__init__(*args, **kwargs)
        self.contact = contact
        self.fields["events"].initial = PrivacySettings.current().erase_events

    def clean_confirm(self):
        typed = self.cleaned_data["confirm"].strip().lower()
        expected = {str(self.contact.pk), (self.contact.email or "").lower()} - {""}
        if typed not in expected:
            raise forms.ValidationError(_("That is not this contact's email address or number."))
        return typed
