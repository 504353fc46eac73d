from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _

from kizuna.handoff import ssrf
from kizuna.handoff.assignment import parse_territory
from kizuna.handoff.models import HandoffSettings, SalesRoute, Webhook


class HandoffSettingsForm(forms.ModelForm):
    class Meta:
        model = HandoffSettings
        fields = ["keep_existing_owner", "use_company_owner", "email_owner", "fallback_email"]


class SalesRouteForm(forms.ModelForm):
    members = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        label=_("sales people (in turn)"), widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = SalesRoute
        fields = ["name", "field", "values", "members"]

    def clean(self):
        data = super().clean()
        field, raw = data.get("field", ""), data.get("values", "")
        if field:
            codes, unknown = parse_territory(field, raw)
            if unknown:
                self.add_error("values", _("Not a known value for this field: %(words)s") % {
                    "words": ", ".join(unknown)})
            elif not codes:
                self.add_error("values", _("List at least one value, or choose “Any contact”."))
            data["values"] = codes
        else:
            data["values"] = ""
        return data


class WebhookForm(forms.ModelForm):
    class Meta:
        model = Webhook
        fields = ["name", "kind", "url", "language"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        if not url.lower().startswith(("https://", "http://")):
            raise forms.ValidationError(_("Use an http:// or https:// address."))
        try:
            ssrf.check_url(url)  # checked again, after resolving, at every send
        except ssrf.UnsafeTarget as exc:
            raise forms.ValidationError(_("This address cannot receive webhooks: %(reason)s") % {"reason": exc}) \
                from exc
        return url
