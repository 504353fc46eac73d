"""Privacy pages: the settings (erasure policy, retention, erased addresses), a contact's export
and erasure, and the public page about what the tracker sends where."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from kizuna.accounts import audit
from kizuna.accounts.permissions import capability_required
from kizuna.contacts.emails import email_hash
from kizuna.contacts.models import Contact
from kizuna.contacts.panels import register_contact_panel
from kizuna.privacy import disclosure, erasure, export, retention
from kizuna.privacy.forms import ErasedAddressForm, EraseForm, PrivacySettingsForm
from kizuna.privacy.models import ErasedAddress, PrivacySettings
from kizuna.privacy.registry import providers


def _panel(request, contact: Contact) -> dict:
    return {"contact": contact}


def register_panels() -> None:
    register_contact_panel(90, "privacy/_contact_panel.html", _panel)


@capability_required("privacy.manage")
def settings_page(request):
    config = PrivacySettings.current()
    form = PrivacySettingsForm(request.POST or None, instance=config, prefix="s")
    lookup = ErasedAddressForm(request.POST or None, prefix="e") if request.POST.get("action") == "erased" else \
        ErasedAddressForm(prefix="e")
    found = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "settings" and form.is_valid():
            before = {f: getattr(PrivacySettings.current(), f) for f in form.Meta.fields}
            saved = form.save()
            changes = audit.diff(before, {f: getattr(saved, f) for f in form.Meta.fields})
            if changes:
                audit.record(request.user, "update", saved, label=_("Privacy settings"), changes=changes)
            messages.success(request, _("Privacy settings saved."))
            return redirect("privacy:settings")
        if action == "erased" and lookup.is_valid():
            email = lookup.cleaned_data["email"]
            found = erasure.erased_at(email)
            if found is not None and request.POST.get("unblock"):
                erasure.forget_erasure(email)
                audit.record(request.user, "unblock_erased", object_type="privacy.erasedaddress",
                             label="", changes={"email_sha256": email_hash(email)})
                messages.success(request, _("The address may be added again."))
                return redirect("privacy:settings")
            if found is None:
                lookup.add_error("email", _("This address is not on the list of erased addresses."))
    return render(request, "privacy/settings.html", {
        "form": form, "lookup": lookup, "found": found, "config": config,
        "preview": retention.preview(config), "erased_count": ErasedAddress.objects.count(),
        "providers": providers(),
        "public_url": request.build_absolute_uri("/privacy/tracking"),
    }, status=400 if form.errors else 200)


@capability_required("contacts.export")
def contact_export(request, pk: int):
    """Everything about one contact as a JSON download; the export itself is audited."""
    contact = get_object_or_404(Contact, pk=pk)
    body = export.export_json(contact)
    audit.record(request.user, "export", contact, changes={"format": export.FORMAT})
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export.filename(contact)}"'
    response["Cache-Control"] = "no-store"
    return response


@capability_required("privacy.manage")
def contact_erase(request, pk: int):
    contact = get_object_or_404(Contact, pk=pk)
    form = EraseForm(request.POST or None, contact=contact)
    config = PrivacySettings.current()
    if request.method == "POST" and form.is_valid():
        result = erasure.erase_contact(contact, actor=request.user, events=form.cleaned_data["events"])
        messages.success(request, _("Contact #%(id)s was erased. The erasure is in the audit log.")
                         % {"id": result["contact_id"]})
        return redirect("contacts:list")
    return render(request, "privacy/erase.html", {"contact": contact, "form": form, "config": config,
                                                  "providers": providers()},
                  status=400 if form.errors else 200)


@require_http_methods(["GET", "HEAD"])
def tracking_disclosure(request):
    """Public: linked from a site's privacy policy. ?lang=ja or ?lang=en, else the browser's language."""
    lang = request.GET.get("lang", "")
    if lang not in ("ja", "en"):
        lang = translation.get_language_from_request(request)
    with translation.override(lang):
        response = render(request, "privacy/tracking_disclosure.html", {
            "d": disclosure.describe(), "lang": lang, "path": request.path})
    response["Cache-Control"] = "public, max-age=300"
    return response
