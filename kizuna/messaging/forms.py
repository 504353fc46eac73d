from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import ContactList
from kizuna.messaging.models import BulkSend, EmailTemplate, Sender, SendingSettings, TemplateVersion
from kizuna.segments.models import Segment


class SenderForm(forms.ModelForm):
    class Meta:
        model = Sender
        fields = ["name", "from_name", "from_email", "reply_to", "organisation", "postal_address", "contact_info",
                  "dkim_selector", "dkim_private_key", "is_default"]
        widgets = {"dkim_private_key": forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})}

    def clean_dkim_private_key(self) -> str:
        key = self.cleaned_data.get("dkim_private_key", "").strip()
        if key and "PRIVATE KEY-----" not in key:
            raise forms.ValidationError(_("Paste the whole PEM key, from -----BEGIN … PRIVATE KEY----- to the end."))
        return key

    def clean(self):
        data = super().clean()
        if bool(data.get("dkim_selector")) != bool(data.get("dkim_private_key")):
            raise forms.ValidationError(_("A DKIM selector and a private key go together: give both or neither."))
        return data


class TemplateForm(forms.ModelForm):
    subject = forms.CharField(label=_("Subject"), max_length=300)
    preheader = forms.CharField(label=_("Preheader"), max_length=200, required=False)
    is_mjml = forms.BooleanField(label=_("The body is MJML"), required=False)
    html = forms.CharField(label=_("Body (HTML or MJML)"), widget=forms.Textarea(attrs={"rows": 18,
                                                                                      "spellcheck": "false"}))
    text = forms.CharField(label=_("Plain-text part"), required=False,
                           help_text=_("Empty: made from the HTML for every message."),
                           widget=forms.Textarea(attrs={"rows": 6}))

    class Meta:
        model = EmailTemplate
        fields = ["name", "kind", "topic", "sender"]

    def clean(self):
        data = super().clean()
        if data.get("kind") == "marketing" and not data.get("topic"):
            self.add_error("topic", _("Marketing mail needs a subscription topic (consent is checked per topic)."))
        return data


class BulkForm(forms.ModelForm):
    version = forms.ModelChoiceField(queryset=TemplateVersion.objects.none(), required=False, widget=forms.HiddenInput)
    send_now = forms.BooleanField(label=_("Send now"), required=False, initial=True)

    class Meta:
        model = BulkSend
        fields = ["name", "template", "contact_list", "segment", "scheduled_at", "rate_per_minute", "variant_b",
                  "ab_sample_percent", "ab_metric", "ab_wait_minutes"]
        widgets = {"scheduled_at": forms.DateTimeInput(attrs={"type": "datetime-local"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].queryset = EmailTemplate.objects.filter(current__isnull=False)
        self.fields["contact_list"].queryset = ContactList.objects.order_by("name")
        self.fields["segment"].queryset = Segment.objects.order_by("name")
        self.fields["segment"].help_text = _("Its members when the send starts. Choose a list or a segment.")
        self.fields["variant_b"].queryset = TemplateVersion.objects.select_related("template").order_by(
            "template__name", "-number")
        self.fields["variant_b"].label_from_instance = lambda v: f"{v.template.name} v{v.number}: {v.subject}"

    def clean(self):
        data = super().clean()
        if not data.get("contact_list") and not data.get("segment"):
            self.add_error("contact_list", _("Choose a list or a segment to send to."))
        elif data.get("contact_list") and data.get("segment"):
            self.add_error("segment", _("Choose a list or a segment, not both."))
        if data.get("variant_b") and not data.get("ab_sample_percent"):
            self.add_error("ab_sample_percent", _("Choose the share of the list that tests the two variants."))
        if data.get("ab_sample_percent") and not data.get("variant_b"):
            self.add_error("variant_b", _("An A/B test needs a variant B."))
        if (data.get("ab_sample_percent") or 0) > 50:
            self.add_error("ab_sample_percent", _("At most 50%: the rest receives the winner."))
        if not data.get("send_now") and not data.get("scheduled_at"):
            self.add_error("scheduled_at", _("Choose when to send, or tick “Send now”."))
        return data


class SendingSettingsForm(forms.ModelForm):
    class Meta:
        model = SendingSettings
        fields = ["frequency_cap", "frequency_days", "quiet_start", "quiet_end", "default_time_zone",
                  "rate_per_second"]
        widgets = {"quiet_start": forms.TimeInput(attrs={"type": "time"}),
                   "quiet_end": forms.TimeInput(attrs={"type": "time"})}

    def clean_default_time_zone(self) -> str:
        import zoneinfo

        value = self.cleaned_data["default_time_zone"]
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise forms.ValidationError(_("Unknown time zone: use a name like Asia/Tokyo.")) from exc
        return value


class TestSendForm(forms.Form):
    email = forms.EmailField(label=_("Send a test to"))
