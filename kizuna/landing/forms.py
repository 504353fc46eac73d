"""The landing page form: its settings, and its variants as JSON (the block editor writes it;
the JSON is only parsed here, blocks.check_variants checks it on save)."""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.landing.models import LandingPage

COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
RESERVED_SLUGS = {"new", "edit", "preview"}


class LandingPageForm(forms.ModelForm):
    variants = forms.CharField(label=gettext_lazy("Content (JSON)"), required=False,
                               widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false",
                                                            "data-variants-json": ""}))

    class Meta:
        model = LandingPage
        fields = ["name", "slug", "title", "description", "language", "accent_color"]
        widgets = {"accent_color": forms.TextInput(attrs={"type": "color"})}

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"].lower()
        if slug in RESERVED_SLUGS:
            raise forms.ValidationError(_("This address is reserved; choose another."))
        return slug

    def clean_accent_color(self) -> str:
        value = self.cleaned_data["accent_color"]
        if not COLOR_RE.fullmatch(value or ""):
            raise forms.ValidationError(_("Give a colour as #rrggbb."))
        return value.lower()

    def clean_variants(self) -> Any:
        raw = self.cleaned_data["variants"].strip()
        if not raw:
            return [{"key": "A", "weight": 100, "blocks": []}]
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(_("The content is not valid JSON (line %(line)s, column %(col)s).")
                                        % {"line": exc.lineno, "col": exc.colno}) from None
