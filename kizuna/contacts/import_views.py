"""The import wizard (upload → mapping → progress and results) and the contacts CSV export.

Views stay thin: the work is in `imports.py` and `exports.py`.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET

from kizuna.accounts.permissions import capability_required

from . import exports, imports
from . import fields as custom_fields
from .models import ContactList, CustomField, ImportJob, ImportPreset, SubscriptionTopic
from .queries import QueryError

ERRORS_SHOWN = 100


# --- Export -------------------------------------------------------------------------------------

@require_GET
@capability_required("contacts.export")
def contact_export(request):
    """The contacts matching the list's filters as CSV (UTF-8 with BOM), streamed."""
    try:
        name, stream, _count = exports.export_contacts(request.user, request.GET)
    except QueryError as exc:
        problems = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
        return HttpResponseBadRequest(_("The filters are not valid: %(errors)s") % {"errors": problems},
                                      content_type="text/plain; charset=utf-8")
    response = StreamingHttpResponse(stream, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


# --- Upload -------------------------------------------------------------------------------------

class UploadForm(forms.Form):
    kind = forms.ChoiceField(label=gettext_lazy("What is this list?"), choices=ImportJob.Kind.choices,
                             initial=ImportJob.Kind.OTHER)
    file = forms.FileField(label=gettext_lazy("CSV or Excel (XLSX) file"))


class _SizeLimit(FileUploadHandler):
    """Stops receiving a file once it passes IMPORT_MAX_BYTES, so an oversized upload is refused
    without first being written out in full."""

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.IMPORT_MAX_BYTES:
            self.request.import_too_large = True
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size):
        return None


@csrf_exempt
def import_upload(request):
    # The size limit must be installed before anything reads the body, CSRF check included;
    # the check itself runs just after, in csrf_protect.
    request.upload_handlers.insert(0, _SizeLimit(request))
    return _import_upload(request)


@csrf_protect
@capability_required("contacts.import")
def _import_upload(request):
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if getattr(request, "import_too_large", False):
            limit = imports.format_bytes(settings.IMPORT_MAX_BYTES)
            form.add_error("file", _("The file is larger than %(limit)s, the largest file you can import. Split it "
                                     "into smaller files.") % {"limit": limit})
        elif form.is_valid():
            try:
                job = imports.create_job(request.user, form.cleaned_data["file"], kind=form.cleaned_data["kind"])
            except imports.ImportFileError as exc:
                form.add_error("file", exc.message)
            else:
                return redirect("contacts:import_detail", pk=job.pk)
    return render(request, "contacts/import_upload.html", {
        "form": form, "limit": imports.format_bytes(settings.IMPORT_MAX_BYTES),
    }, status=400 if form.errors else 200)


# --- Jobs ---------------------------------------------------------------------------------------

@capability_required("contacts.import")
def import_list(request):
    jobs = ImportJob.objects.select_related("created_by", "contact_list")
    page = Paginator(jobs, 50).get_page(request.GET.get("page"))
    return render(request, "contacts/import_list.html", {"page": page, "jobs": page.object_list})


def _mapping_columns(job: ImportJob, mapping: dict[str, str], errors: dict[str, str]) -> list[dict]:
    columns = []
    for i, header in enumerate(job.headers):
        columns.append({
            "index": i, "header": header, "target": mapping.get(header, ""),
            "samples": [row[i] for row in job.samples if i < len(row) and row[i]][:3],
            "error": errors.get(f"mapping.{header}", ""),
        })
    return columns


def _mapping_page(request, job: ImportJob):
    defs = custom_fields.definitions(CustomField.Target.CONTACT)
    errors: dict[str, str] = {}
    values = {"duplicate_policy": job.duplicate_policy, "tags": ", ".join(job.tags), "list_name": job.list_name,
              "consent_topic": job.consent_topic.key if job.consent_topic else "",
              "consent_status": job.consent_status, "consent_source": job.consent_source, "save_preset_as": ""}
    mapping = dict(job.mapping)
    preset = None
    if request.method == "POST":
        mapping = {header: request.POST.get(f"map-{i}", "") for i, header in enumerate(job.headers)}
        values = {key: request.POST.get(key, "").strip() for key in values}
        try:
            imports.configure_job(
                request.user, job, mapping=mapping, duplicate_policy=values["duplicate_policy"],
                tags=values["tags"], list_name=values["list_name"], consent_topic_key=values["consent_topic"],
                consent_status=values["consent_status"], consent_source=values["consent_source"],
                save_preset_as=values["save_preset_as"],
            )
            imports.enqueue_job(job)
        except imports.ImportConfigError as exc:
            errors = exc.errors
        else:
            if values["save_preset_as"]:
                messages.success(request, _("The mapping was saved as the preset “%(name)s”.")
                                 % {"name": values["save_preset_as"]})
            return redirect("contacts:import_detail", pk=job.pk)
    elif request.GET.get("preset", "").isdigit():
        preset = ImportPreset.objects.filter(pk=int(request.GET["preset"])).first()
        if preset is not None:
            mapping = imports.preset_mapping(job, preset)
    return render(request, "contacts/import_mapping.html", {
        "job": job,
        "columns": _mapping_columns(job, mapping, errors),
        "targets": imports.target_choices(defs),
        "errors": errors,
        "general_errors": [m for k, m in errors.items() if not k.startswith("mapping.")],
        "values": values,
        "presets": ImportPreset.objects.all(),
        "preset": preset,
        "policies": ImportJob.DuplicatePolicy.choices,
        "lists": ContactList.objects.order_by("name").values_list("name", flat=True)[:500],
        "topics": SubscriptionTopic.objects.all(),
        "encoding": imports.ENCODING_LABELS.get(job.encoding, job.encoding),
    }, status=400 if errors else 200)


@capability_required("contacts.import")
def import_detail(request, pk: int):
    job = get_object_or_404(ImportJob.objects.select_related("created_by", "contact_list", "consent_topic"), pk=pk)
    if job.status == ImportJob.Status.DRAFT:
        return _mapping_page(request, job)
    if request.method == "POST":
        messages.warning(request, _("This import has already been started."))
        return redirect("contacts:import_detail", pk=job.pk)
    errors, error_lines = imports.error_rows(job, limit=ERRORS_SHOWN) if job.status in (
        ImportJob.Status.DONE, ImportJob.Status.FAILED) else ([], 0)
    mapped = job.mapping
    targets = dict(imports.target_choices())
    return render(request, "contacts/import_detail.html", {
        "job": job,
        "running": job.status not in (ImportJob.Status.DONE, ImportJob.Status.FAILED),
        "progress": imports.progress(job),
        "summary": imports.summary(job),
        "imported": job.created_count + job.updated_count,
        "errors": errors,
        "error_lines": error_lines,
        "more_errors": max(error_lines - len(errors), 0),
        "mapping": [(h, targets.get(mapped.get(h, ""), mapped.get(h, ""))) for h in job.headers],
        "encoding": imports.ENCODING_LABELS.get(job.encoding, job.encoding),
    })


@capability_required("contacts.import")
def import_progress(request, pk: int):
    job = get_object_or_404(ImportJob, pk=pk)
    return JsonResponse(imports.progress(job))


@capability_required("contacts.import")
def import_errors(request, pk: int):
    job = get_object_or_404(ImportJob, pk=pk)
    if not job.error_report:
        raise Http404(_("This import has no error report."))
    return FileResponse(job.error_report.open("rb"), as_attachment=True, filename=f"import-{job.pk}-errors.csv",
                        content_type="text/csv; charset=utf-8")
