"""Forms of the tracking settings page; every check says what is wrong and where."""

from __future__ import annotations

import re

from django import forms
from django.utils.translation import gettext_lazy as _

from kizuna.events import enrichment
from kizuna.events.models import IpRange, TrackingSettings, WriteKey

DOMAIN_RE = re.compile(r"^(\*\.)?([a-z0-9-]+\.)*[a-z0-9-]+$")


class TrackingSettingsForm(forms.ModelForm):
    class Meta:
        model = TrackingSettings
        fields = ["consent_required", "respect_dnt", "identify_forms", "anonymize_ip", "session_timeout_minutes",
                  "bot_user_agents", "bot_networks"]
        widgets = {"bot_user_agents": forms.Textarea(attrs={"rows": 4}),
                   "bot_networks": forms.Textarea(attrs={"rows": 4})}

    def clean_session_timeout_minutes(self):
        value = self.cleaned_data["session_timeout_minutes"]
        if not 5 <= value <= 240:
            raise forms.ValidationError(_("Choose between 5 and 240 minutes."))
        return value

    def clean(self):
        data = super().clean()
        for error in enrichment.compile_bot_rules(data.get("bot_user_agents", ""), "")[1]:
            self.add_error("bot_user_agents", error)
        for error in enrichment.compile_bot_rules("", data.get("bot_networks", ""))[1]:
            self.add_error("bot_networks", error)
        return data


class WriteKeyForm(forms.ModelForm):
    class Meta:
        model = WriteKey
        fields = ["name", "allowed_domains", "enabled"]
        widgets = {"allowed_domains": forms.Textarea(attrs={"rows": 2})}

    def clean_allowed_domains(self):
        lines = [line.strip().lower() for line in self.cleaned_data["allowed_domains"].splitlines() if line.strip()]
        bad = [line for line in lines if not DOMAIN_RE.match(line)]
        if bad:
            raise forms.ValidationError(
                _("Not a domain: %(bad)s (write example.co.jp or *.example.co.jp, without https://)")
                % {"bad": ", ".join(bad[:5])})
        return "\n".join(lines)


class IpRangeForm(forms.ModelForm):
    class Meta:
        model = IpRange
        fields = ["network", "company_name", "note"]

    def clean_network(self):
        text = self.cleaned_data["network"].strip()
        try:
            enrichment.parse_network(text)
        except ValueError as exc:
            raise forms.ValidationError(
                _("%(text)s is not an IP address, CIDR range or 'start - end' range (%(why)s).")
                % {"text": text[:60], "why": exc}) from None
        return text


class IpRangeImportForm(forms.Form):
    file = forms.FileField(label=_("CSV file"))
    replace = forms.BooleanField(label=_("Replace the whole table (otherwise add and update)"), required=False)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > 10 * 1024 * 1024:
            raise forms.ValidationError(_("The file is larger than 10 MB."))
        return upload
