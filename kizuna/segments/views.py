"""Segment pages: the list, the builder (create and edit), the detail page with members, growth
and recent changes, CSV export, recompute and delete. The work is in services.py; the live count
the builder shows comes from the API (POST /api/v1/segments/count, session-authenticated)."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts.permissions import capability_required
from kizuna.accounts.roles import can
from kizuna.segments import builder, services
from kizuna.segments.describe import Names, describe
from kizuna.segments.filters import FilterError
from kizuna.segments.forms import SegmentForm
from kizuna.segments.models import Segment, SegmentChange

SAMPLE_SIZE = 50
CHANGES_SHOWN = 30


@capability_required("segments.view")
def segment_list(request):
    segments = list(services.with_week_ago(Segment.objects.order_by("name")))
    for segment in segments:
        segment.growth = services.growth(segment)
    return render(request, "segments/segment_list.html", {"segments": segments})


def _editor(request, segment: Segment | None):
    """The builder page; POST saves, or shows the fault (with its path) beside the builder."""
    form = SegmentForm(request.POST or None, segment=segment, initial={
        "name": segment.name, "description": segment.description,
        "filter": json.dumps(segment.filter, ensure_ascii=False, indent=2),
    } if segment else {"filter": '{"all": []}'})
    filter_error = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            saved = services.save(request.user, segment, name=data["name"], description=data["description"],
                                  tree=data["filter"])
        except FilterError as exc:
            filter_error = exc
        except services.SegmentError as exc:
            for key, message in exc.errors.items():
                form.add_error(key if key in form.fields else None, message)
        else:
            messages.success(request, _("Segment %(name)s saved. Its members are being computed.")
                             % {"name": saved.name})
            return redirect("segments:detail", pk=saved.pk)
    names = Names.load()
    return render(request, "segments/segment_form.html", {
        "segment": segment, "form": form, "filter_error": filter_error,
        "schema": json.dumps(builder.schema(names, exclude_segment=segment.pk if segment else None),
                             ensure_ascii=False),
        "count_url": reverse("api:segment_count"),
    }, status=400 if request.method == "POST" else 200)


@capability_required("segments.manage")
def segment_create(request):
    return _editor(request, None)


@capability_required("segments.manage")
def segment_edit(request, pk: int):
    return _editor(request, get_object_or_404(Segment, pk=pk))


@capability_required("segments.view")
def segment_detail(request, pk: int):
    segment = get_object_or_404(services.with_week_ago(Segment.objects.all()), pk=pk)
    names = Names.load()
    try:
        description = describe(segment.filter, names)
    except (KeyError, TypeError, AttributeError):  # stored by hand without checking: show the JSON
        description = None
    used_by, bulk_sends = services.users_of(segment)
    return render(request, "segments/segment_detail.html", {
        "segment": segment, "description": description, "growth": services.growth(segment),
        "chart": services.chart(segment),
        "sample": services.members(segment).select_related("company", "owner").order_by("id")[:SAMPLE_SIZE],
        "changes": SegmentChange.objects.filter(segment=segment).select_related("contact")[:CHANGES_SHOWN],
        "used_by": used_by, "bulk_sends": bulk_sends,
        "filter_json": json.dumps(segment.filter, ensure_ascii=False, indent=2),
    })


@capability_required("segments.view")
def segment_progress(request, pk: int):
    """For the [data-progress-url] poller while the worker computes the members."""
    segment = get_object_or_404(Segment, pk=pk)
    done = not segment.needs_full
    text = (_("%(n)s members.") % {"n": segment.member_count} if done
            else _("The worker is computing the members…"))
    return JsonResponse({"done": done, "percent": None, "text": text, "members": segment.member_count})


@require_POST
@capability_required("segments.manage")
def segment_recompute(request, pk: int):
    segment = get_object_or_404(Segment, pk=pk)
    services.request_recompute(request.user, segment)
    messages.success(request, _("Recomputing %(name)s.") % {"name": segment.name})
    return redirect("segments:detail", pk=pk)


@require_POST
@capability_required("segments.manage")
def segment_delete(request, pk: int):
    segment = get_object_or_404(Segment, pk=pk)
    try:
        services.delete(request.user, segment)
    except services.SegmentInUse as exc:
        used = [_("segment “%(name)s”") % {"name": s.name} for s in exc.segments]
        used += [_("bulk send “%(name)s”") % {"name": b.name} for b in exc.bulk_sends]
        messages.error(request, _("%(name)s cannot be deleted while it is used by: %(users)s. Change those "
                                  "first.") % {"name": segment.name, "users": ", ".join(used)})
        return redirect("segments:detail", pk=pk)
    messages.success(request, _("Segment %(name)s deleted.") % {"name": segment.name})
    return redirect("segments:list")


@capability_required("segments.view")
def segment_export(request, pk: int):
    """The members as CSV, in the contacts export format (UTF-8 with BOM, formula-safe)."""
    if not can(request.user, "contacts.export"):
        raise PermissionDenied(_("Your role does not allow this (%(cap)s).") % {"cap": "contacts.export"})
    segment = get_object_or_404(Segment, pk=pk)
    name, stream, _count = services.export_members(request.user, segment)
    response = StreamingHttpResponse(stream, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response
