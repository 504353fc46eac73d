"""The journey builder's form: the settings as fields, and the graph and the exit and goal
conditions as JSON that the builder script writes. JSON is only parsed here; services.save
checks it (graph.check, filters.check) and names the path of every fault."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.journeys.models import Journey
from kizuna.journeys.services import DESCRIPTION_MAX, NAME_MAX


def _json(value: str, what: str) -> Any:
    try:
        return json.loads(value) if value.strip() else None
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            _("%(what)s is not valid JSON: %(reason)s (line %(line)s, column %(column)s).")
            % {"what": what, "reason": exc.msg, "line": exc.lineno, "column": exc.colno}) from None


class JourneyForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=NAME_MAX)
    description = forms.CharField(label=gettext_lazy("Description"), max_length=DESCRIPTION_MAX, required=False,
                                  widget=forms.Textarea(attrs={"rows": 2}))
    entry = forms.ChoiceField(label=gettext_lazy("A contact may enter"), choices=Journey.Entry.choices,
                              initial=Journey.Entry.ONCE)
    reentry_days = forms.IntegerField(
        label=gettext_lazy("Not again within (days)"), required=False, min_value=1, max_value=3650,
        help_text=gettext_lazy("Optional, e.g. 30: a pricing mail at most once in 30 days."))
    graph = forms.CharField(required=False, widget=forms.HiddenInput)
    exit_filter = forms.CharField(required=False, widget=forms.HiddenInput)
    goal_filter = forms.CharField(required=False, widget=forms.HiddenInput)
    base_version = forms.IntegerField(required=False, widget=forms.HiddenInput)
    open_steps = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_graph(self) -> Any:
        return _json(self.cleaned_data["graph"], _("The diagram"))

    def clean_exit_filter(self) -> Any:
        return _json(self.cleaned_data["exit_filter"], _("The exit condition"))

    def clean_goal_filter(self) -> Any:
        return _json(self.cleaned_data["goal_filter"], _("The goal"))
