"""Asset pages: the list with download figures, upload and edit, the detail page with the links to
copy and the downloads. The work is in services.py; the upload pages stream the file to the data
dir with their own handler (uploads.py), which must be in place before the body is read — so
those views are CSRF-exempt on the outside and CSRF-protected inside, as Django documents."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import escape
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from kizuna.accounts.permissions import capability_required
from kizuna.assets import downloads, links, services, storage
from kizuna.assets.delivery import human_size
from kizuna.assets.forms import AssetForm
from kizuna.assets.models import Asset, Download
from kizuna.assets.sniffing import KINDS
from kizuna.assets.uploads import AssetUploadHandler, IncomingFile

PAGE_SIZE = 50


@capability_required("capture.view")
def asset_list(request):
    assets = list(Asset.objects.select_related("delivery_template"))
    figures = services.stats([a.pk for a in assets])
    rows = [{"asset": a, "kind": KINDS.get(a.file_type), "size": human_size(a.size), **figures[a.pk]} for a in assets]
    return render(request, "assets/asset_list.html", {"rows": rows, "limit": human_size(storage.max_bytes())})


def _with_streamed_uploads(request, asset: Asset | None):
    """Runs the form view with the streaming upload handler, then deletes any received file that
    was not kept (a refused form, a failed CSRF check: the body is read to find the token)."""
    if request.method != "POST":
        return _asset_form(request, asset)
    request.upload_handlers = [AssetUploadHandler(request)]
    try:
        return _asset_form(request, asset)
    finally:
        if hasattr(request, "_files"):
            for _field, files in request.FILES.lists():
                for received in files:
                    if isinstance(received, IncomingFile):
                        received.close()
                        storage.discard(received.incoming)


@csrf_exempt
@capability_required("capture.manage")
def asset_create(request):
    return _with_streamed_uploads(request, None)


@csrf_exempt
@capability_required("capture.manage")
def asset_edit(request, pk: int):
    return _with_streamed_uploads(request, get_object_or_404(Asset, pk=pk))


@csrf_protect
def _asset_form(request, asset: Asset | None):
    before = services.settings_of(asset) if asset is not None else {}
    if request.method == "POST":
        storage.sweep_incoming()
        form = AssetForm(request.POST, request.FILES, instance=asset,
                         too_large=getattr(request, "too_large_uploads", None))
        if form.is_valid():
            data = {k: form.cleaned_data[k] for k in ("description", "public", "link_days", "delivery_template")}
            if asset is None:
                saved = services.create(form.accepted, name=form.cleaned_data["name"], user=request.user,
                                        slug=form.cleaned_data["slug"], **data)
                messages.success(request, _("Uploaded “%(name)s”.") % {"name": saved.name})
                return redirect("assets:detail", pk=saved.pk)
            services.save_settings(asset, before, user=request.user)
            if form.accepted is not None:
                services.replace_file(asset, form.accepted, user=request.user)
                messages.success(request, _("Saved, with the new file. Links already sent give the new file."))
            else:
                messages.success(request, _("Saved."))
            return redirect("assets:detail", pk=asset.pk)
        form.discard()
    else:
        form = AssetForm(instance=asset)
    return render(request, "assets/asset_form.html", {
        "form": form, "asset": asset, "limit": human_size(storage.max_bytes()),
        "allowed": ", ".join(str(k.label) for k in KINDS.values()),
    })


@capability_required("capture.view")
def asset_detail(request, pk: int):
    asset = get_object_or_404(Asset.objects.select_related("delivery_template", "created_by"), pk=pk)
    rows = Download.objects.filter(asset=asset).select_related("contact").order_by("-at", "-id")
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    merge_tag = f"<a href=\"{{{{ asset_url('{asset.slug}') }}}}\">{escape(asset.name)}</a>"
    rule = [{"field": "properties.slug", "op": "equals", "value": asset.slug}]
    return render(request, "assets/asset_detail.html", {
        "asset": asset, "kind": KINDS.get(asset.file_type), "size": human_size(asset.size),
        "figures": services.stats([asset.pk])[asset.pk], "page": page, "merge_tag": merge_tag,
        "public_url": links.public_url(asset) if asset.public else "",
        "event_name": downloads.EVENT_NAME, "rule_conditions": json.dumps(rule, ensure_ascii=False),
    })


@capability_required("capture.view")
@require_http_methods(["GET", "HEAD"])
def asset_file(request, pk: int):
    """The file for staff, with the same safe headers; not counted as a download."""
    asset = get_object_or_404(Asset, pk=pk)
    try:
        return downloads.file_response(asset, head=request.method == "HEAD")
    except FileNotFoundError:
        raise Http404("the file is missing from the data directory") from None


@require_POST
@capability_required("capture.manage")
def asset_delete(request, pk: int):
    asset = get_object_or_404(Asset, pk=pk)
    name = asset.name
    services.delete(asset, user=request.user)
    messages.success(request, _("Deleted “%(name)s”. Its links no longer work.") % {"name": name})
    return redirect("assets:list")
