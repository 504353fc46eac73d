"""The form editor's Django form: name, address, open or closed, and the definition as JSON."""

from __future__ import annotations

import json

from django import forms
from django.utils.translation import gettext_lazy as _

from kizuna.capture.models import Form


class FormEditor(forms.ModelForm):
    definition_json = forms.CharField(
        label=_("Definition (JSON)"), widget=forms.Textarea(attrs={"rows": 28, "spellcheck": "false"}),
        help_text=_("Fields, thank-you message or redirect, actions, double opt-in, spam settings and allowed "
                    "sites. The reference beside it lists what you can use."))

    class Meta:
        model = Form
        fields = ["name", "slug", "active"]

    def clean_definition_json(self):
        text = self.cleaned_data["definition_json"]
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                _("This is not valid JSON: %(reason)s (line %(line)s, column %(column)s)."),
                params={"reason": exc.msg, "line": exc.lineno, "column": exc.colno}) from None
