"""Tracking pages: visitors, visiting companies, live events, a contact's web activity, and
the tracking settings. Views stay thin: queries live in queries.py, changes in settings.py
functions of this module's forms."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts import audit
from kizuna.accounts.permissions import capability_required
from kizuna.contacts.panels import register_contact_panel
from kizuna.events import enrichment, http, processing, queries
from kizuna.events.forms import IpRangeForm, IpRangeImportForm, TrackingSettingsForm, WriteKeyForm
from kizuna.events.models import IpRange, Session, TrackingSettings, Visitor, WriteKey
from kizuna.events.snippet import tracker_snippet

PAGE_SIZE = 50


# --- contact page panel ----------------------------------------------------------------------
def activity_panel(request, contact) -> dict:
    before = request.GET.get("activity_before", "")
    sessions, older = queries.contact_sessions(contact, before=before, limit=20)
    return {"sessions": sessions, "older": older, "events": queries.contact_other_events(contact, sessions)}


def register_panels() -> None:
    register_contact_panel(50, "events/_activity_panel.html", activity_panel)


# --- visitors --------------------------------------------------------------------------------
@capability_required("tracking.view")
def visitor_list(request):
    params = {k: request.GET.get(k, "").strip() for k in ("known", "company", "source", "bots", "cursor")}
    page = queries.visitors(params, limit=PAGE_SIZE)
    return render(request, "events/visitor_list.html", {
        "page": page, "params": params, "sources": queries.SOURCE_CHOICES,
    })


@capability_required("tracking.view")
def visitor_detail(request, anonymous_id: str):
    visitor = get_object_or_404(Visitor.objects.select_related("contact", "company"), anonymous_id=anonymous_id)
    sessions = list(Session.objects.filter(anonymous_id=anonymous_id).order_by("-started_at")[:50])
    queries.attach_pages(sessions)
    return render(request, "events/visitor_detail.html", {"visitor": visitor, "sessions": sessions})


@capability_required("tracking.view")
def visiting_companies(request):
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    days = days if days in (7, 30, 90) else 30
    rows = queries.visiting_companies(timezone.now() - timedelta(days=days))
    return render(request, "events/visiting_companies.html", {"rows": rows, "days": days})


# --- live events -------------------------------------------------------------------------------
@capability_required("tracking.view")
def live_events(request):
    return render(request, "events/live.html", {
        "events": queries.recent_events(50), "status": processing.lag(),
    })


@capability_required("tracking.view")
def live_events_fragment(request):
    """The table body and status of the live page, fetched every few seconds."""
    rows = render_to_string("events/_live_rows.html", {"events": queries.recent_events(50)}, request=request)
    status = processing.lag()
    status["oldest_received_at"] = status["oldest_received_at"].isoformat() if status["oldest_received_at"] else None
    return JsonResponse({"rows": rows, "status": status})


@require_POST
@capability_required("tracking.manage")
def retry_failed(request):
    count = processing.retry_failed()
    audit.record(request.user, "retry", object_type="events", label=_("failed events"),
                 changes={"count": [0, count]})
    messages.success(request, _("%(n)s failed events were put back in line.") % {"n": count})
    return redirect("events:live")


# --- settings ----------------------------------------------------------------------------------
@capability_required("tracking.manage")
def tracking_settings(request):
    current = TrackingSettings.load()
    form = TrackingSettingsForm(request.POST or None, instance=current, prefix="s")
    if request.method == "POST" and request.POST.get("action") == "settings":
        before = {f: getattr(current, f) for f in form.fields}  # validation changes the instance
        if form.is_valid():
            saved = form.save()
            after = {f: getattr(saved, f) for f in form.fields}
            audit.record(request.user, "update", saved, label=_("tracking settings"),
                         changes=audit.diff(before, after))
            http.cache.clear()
            messages.success(request, _("Tracking settings saved."))
            return redirect("events:settings")
    keys = list(WriteKey.objects.all())
    for key in keys:
        key.snippet = tracker_snippet(settings.BASE_URL, key.key)
    return render(request, "events/settings.html", {
        "form": form, "keys": keys, "key_form": WriteKeyForm(prefix="k"),
        "range_form": IpRangeForm(prefix="r"), "import_form": IpRangeImportForm(),
        "ranges": IpRange.objects.select_related("company")[:500], "range_count": IpRange.objects.count(),
        "status": processing.lag(),
    })


def _report(request, form) -> None:
    """Form errors as messages on the settings page, each naming its field."""
    for field, errors in form.errors.items():
        label = form.fields[field].label if field in form.fields else _("Form")
        messages.error(request, f"{label}: {' '.join(errors)}")


@require_POST
@capability_required("tracking.manage")
def write_key_save(request, pk: int | None = None):
    key = get_object_or_404(WriteKey, pk=pk) if pk else None
    before = {"name": key.name, "allowed_domains": key.allowed_domains, "enabled": key.enabled} if key else {}
    form = WriteKeyForm(request.POST, instance=key, prefix="k")
    if not form.is_valid():
        _report(request, form)
        return redirect("events:settings")
    saved = form.save()
    after = {"name": saved.name, "allowed_domains": saved.allowed_domains, "enabled": saved.enabled}
    audit.record(request.user, "update" if key else "create", saved, changes=audit.diff(before, after))
    http.cache.clear()
    messages.success(request, _("Write key “%(name)s” saved.") % {"name": saved.name})
    return redirect("events:settings")


@require_POST
@capability_required("tracking.manage")
def write_key_delete(request, pk: int):
    key = get_object_or_404(WriteKey, pk=pk)
    audit.record(request.user, "delete", key, changes={"name": [key.name, None]})
    key.delete()
    http.cache.clear()
    messages.success(request, _("Write key deleted; sites using it can no longer send events."))
    return redirect("events:settings")


@require_POST
@capability_required("tracking.manage")
def ip_range_add(request):
    form = IpRangeForm(request.POST, prefix="r")
    if form.is_valid():
        saved = form.save()
        audit.record(request.user, "create", saved, label=saved.network,
                     changes={"network": [None, saved.network], "company_name": [None, saved.company_name]})
        messages.success(request, _("IP range %(network)s added.") % {"network": saved.network})
    else:
        _report(request, form)
    return redirect("events:settings")


@require_POST
@capability_required("tracking.manage")
def ip_range_delete(request, pk: int):
    item = get_object_or_404(IpRange, pk=pk)
    audit.record(request.user, "delete", item, label=item.network,
                 changes={"network": [item.network, None], "company_name": [item.company_name, None]})
    item.delete()
    messages.success(request, _("IP range deleted."))
    return redirect("events:settings")


@require_POST
@capability_required("tracking.manage")
def ip_range_import(request):
    form = IpRangeImportForm(request.POST, request.FILES)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
        return redirect("events:settings")
    rows, errors = enrichment.parse_ip_ranges_csv(form.cleaned_data["file"].read())
    with transaction.atomic():
        if form.cleaned_data["replace"]:
            IpRange.objects.all().delete()
        existing = set(IpRange.objects.values_list("network", flat=True))
        new = [IpRange(network=r["network"], company_name=r["company"], note=r["note"],
                       company=queries.company_named(r["company"]))
               for r in rows if r["network"] not in existing]
        IpRange.objects.bulk_create(new)
        updated = 0
        for r in rows:
            if r["network"] in existing:
                updated += IpRange.objects.filter(network=r["network"]).update(
                    company_name=r["company"], note=r["note"], company=queries.company_named(r["company"]))
        audit.record(request.user, "import", object_type="ip ranges", label=form.cleaned_data["file"].name,
                     changes={"added": [0, len(new)], "updated": [0, updated], "errors": [0, len(errors)]})
    messages.success(request, _("%(added)s IP ranges added, %(updated)s updated.") % {
        "added": len(new), "updated": updated})
    for error in errors[:50]:
        messages.error(request, _("Line %(line)s: %(message)s") % error)
    if len(errors) > 50:
        messages.error(request, _("…and %(n)s more lines with errors.") % {"n": len(errors) - 50})
    return redirect("events:settings")

