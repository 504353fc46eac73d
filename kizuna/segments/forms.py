"""The segment form: a name, a description and the filter as JSON (the builder writes it; power
users may edit it directly). The filter is only parsed here; services.save checks it."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.segments.models import Segment
from kizuna.segments.services import DESCRIPTION_MAX, NAME_MAX


class SegmentForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=NAME_MAX)
    description = forms.CharField(label=gettext_lazy("Description"), max_length=DESCRIPTION_MAX, required=False)
    filter = forms.CharField(label=gettext_lazy("Filter (JSON)"), required=False,
                             widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "data-filter-json": ""}))

    def __init__(self, *args, segment: Segment | None = None, **kwargs):
        self.segment = segment
        super().__init__(*args, **kwargs)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        taken = Segment.objects.filter(name=name)
        if self.segment is not None:
            taken = taken.exclude(pk=self.segment.pk)
        if taken.exists():
            raise forms.ValidationError(_("Another segment is already called %(name)s.") % {"name": name})
        return name

    def clean_filter(self) -> Any:
        raw = self.cleaned_data["filter"].strip() or '{"all": []}'
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                _("The filter is not valid JSON: %(reason)s (line %(line)s, column %(column)s).")
                % {"reason": exc.msg, "line": exc.lineno, "column": exc.colno}) from None
