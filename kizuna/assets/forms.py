"""The asset form: the file (required when new, a replacement when editing) and the settings.

The file is checked here (size, kind by content) through services.accept, so a refusal is shown
on the file field while the title and the other fields stay as typed.
"""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.assets import services
from kizuna.assets.delivery import uses_download_link
from kizuna.assets.models import Asset
from kizuna.assets.uploads import TooLargeUpload
from kizuna.messaging.models import EmailTemplate


class AssetForm(forms.ModelForm):
    file = forms.FileField(label=gettext_lazy("File"), required=False)

    class Meta:
        model = Asset
        fields = ["name", "slug", "description", "public", "link_days", "delivery_template"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, too_large: list[TooLargeUpload] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.too_large = too_large or []
        self.accepted: services.AcceptedFile | None = None
        self.fields["name"].required = False
        self.fields["name"].help_text = _("Empty: the file name.")
        self.fields["slug"].required = False
        templates = EmailTemplate.objects.filter(current__isnull=False).order_by("name")
        self.fields["delivery_template"].queryset = templates
        self.fields["delivery_template"].empty_label = _(
            "Built-in mail (Japanese or English, by the contact's language)")
        self.fields["file"].widget.attrs["accept"] = ",".join(
            ext for kind in services.sniffing.KINDS.values() for ext in kind.extensions)
        if self.instance.pk:
            self.fields["slug"].disabled = True
            self.fields["file"].label = _("Replace the file")
            self.fields["file"].help_text = _("Links already sent keep working and give the new file.")
        else:
            self.fields["slug"].help_text = _("Empty: made from the title. Used in email templates as "
                                              "asset_url('name'); it cannot change once saved.")

    def clean_file(self):
        for refused in self.too_large:
            raise forms.ValidationError(services.too_large_message(refused.limit, refused.size))
        uploaded = self.cleaned_data.get("file")
        if not uploaded:
            if not self.instance.pk:
                raise forms.ValidationError(_("Choose a file to upload."))
            return None
        try:
            self.accepted = services.accept(uploaded)
        except services.AssetRefused as exc:
            raise forms.ValidationError(exc.message) from exc
        return uploaded

    def clean_slug(self) -> str:
        if self.instance.pk:
            return self.instance.slug
        slug = (self.cleaned_data.get("slug") or "").strip().lower()
        if slug and Asset.objects.filter(slug=slug).exists():
            raise forms.ValidationError(_("Another asset already uses the name “%(slug)s”.") % {"slug": slug})
        return slug

    def clean_delivery_template(self) -> EmailTemplate | None:
        template = self.cleaned_data.get("delivery_template")
        if template is not None and not uses_download_link(template.current):
            raise forms.ValidationError(
                _("“%(name)s” does not use {{ download_url }}: the mail would arrive without the download link. "
                  "Add it to the template, or choose the built-in mail.") % {"name": template.name})
        return template

    def clean(self):
        data = super().clean()
        file_name = self.accepted.file_name if self.accepted else self.instance.file_name
        if not (data.get("name") or "").strip() and file_name:
            data["name"] = file_name.rpartition(".")[0] or file_name
        if not self.instance.pk and not data.get("slug") and "slug" not in self.errors and file_name:
            data["slug"] = services.new_slug(data.get("name") or "", file_name)
        return data

    def discard(self) -> None:
        """Drops a checked file that is not going to be saved (another field was wrong)."""
        if self.accepted is not None:
            services.storage.discard(self.accepted.incoming)
            self.accepted = None
