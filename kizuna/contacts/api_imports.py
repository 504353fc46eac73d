"""REST API for import jobs: upload a file, check the guessed mapping, start, follow, read errors.

    POST /import-jobs                 multipart: file, kind           → 201 job (headers, samples, guess)
    POST /import-jobs/{id}/start      JSON: mapping and options       → 202 job (queued)
    GET  /import-jobs                 the latest jobs
    GET  /import-jobs/{id}            status, counts, progress
    GET  /import-jobs/{id}/errors     the per-row error report as JSON
    GET  /import-presets              saved column mappings

Writes need the capability contacts.import, reads contacts.view.
"""

from __future__ import annotations

from datetime import datetime

from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import File, Form, Query, Router, Schema, Status, UploadedFile
from pydantic import Field

from kizuna.api import ApiError, require

from . import imports
from .models import ImportJob, ImportPreset

router = Router(tags=["imports"])


class TargetOut(Schema):
    value: str
    label: str


class CountsOut(Schema):
    rows: int
    created: int
    updated: int
    skipped: int
    errors: int


class ProgressOut(Schema):
    done: bool
    percent: float
    text: str


class ImportJobOut(Schema):
    id: int
    status: str
    kind: str
    file_name: str
    file_format: str
    file_size: int
    encoding: str
    headers: list[str]
    samples: list[list[str]]
    mapping: dict[str, str] = Field(description="{column name: field}; columns not listed are ignored")
    duplicate_policy: str
    tags: list[str]
    list_name: str
    consent_topic: str | None
    consent_status: str
    consent_source: str
    counts: CountsOut
    progress: ProgressOut
    summary: str
    failure: str
    error_report_url: str | None
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ImportJobCreatedOut(ImportJobOut):
    targets: list[TargetOut] = Field(description="every field a column can be mapped to")


class StartIn(Schema):
    mapping: dict[str, str] | None = Field(
        None, description="{column name: field}; empty or missing field: the column is ignored. "
                          "Default: the job's guessed mapping (or the preset's)")
    preset: str = Field("", description="name of a saved mapping preset to use instead of `mapping`")
    duplicate_policy: str = Field("update", description="update, skip or fill")
    tags: list[str] = []
    list_name: str = Field("", description="a list to add the contacts to; created if it does not exist")
    consent_topic: str = Field("", description="subscription topic key")
    consent_status: str = Field("", description="opted_in or opted_out")
    consent_source: str = ""
    save_preset_as: str = ""


class ErrorRowOut(Schema):
    row: int | None
    column: str
    value: str
    message: str


class ErrorsOut(Schema):
    count: int
    items: list[ErrorRowOut]


class PresetOut(Schema):
    name: str
    mapping: dict[str, str]


def _job_out(job: ImportJob, *, with_targets: bool = False) -> dict:
    progress = imports.progress(job)
    out = {
        "id": job.pk, "status": job.status, "kind": job.kind, "file_name": job.original_name,
        "file_format": job.file_format, "file_size": job.file_size, "encoding": job.encoding,
        "headers": job.headers, "samples": job.samples, "mapping": job.mapping,
        "duplicate_policy": job.duplicate_policy, "tags": job.tags, "list_name": job.list_name,
        "consent_topic": job.consent_topic.key if job.consent_topic_id else None,
        "consent_status": job.consent_status, "consent_source": job.consent_source,
        "counts": {"rows": job.total_rows, "created": job.created_count, "updated": job.updated_count,
                   "skipped": job.skipped_count, "errors": job.error_count},
        "progress": {"done": progress["done"], "percent": progress["percent"], "text": progress["text"]},
        "summary": imports.summary(job) if job.status == ImportJob.Status.DONE else "",
        "failure": job.failure,
        "error_report_url": reverse("contacts:import_errors", args=[job.pk]) if job.error_report else None,
        "created_by": job.created_by.get_username() if job.created_by_id else None,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
    }
    if with_targets:
        out["targets"] = [{"value": v, "label": label} for v, label in imports.target_choices()]
    return out


def _get(pk: int) -> ImportJob:
    return get_object_or_404(ImportJob.objects.select_related("created_by", "consent_topic"), pk=pk)


@router.post("/import-jobs", response={201: ImportJobCreatedOut}, summary="Upload a file to import")
def create_import_job(request, file: File[UploadedFile], kind: Form[str] = "other"):
    require(request, "contacts.import")
    try:
        job = imports.create_job(request.auth, file, kind=kind)
    except imports.ImportFileError as exc:
        status = 413 if exc.code == "too_large" else 400
        raise ApiError(status, "too_large" if status == 413 else "invalid_file", exc.message,
                       {"file": exc.message}) from exc
    return Status(201, _job_out(job, with_targets=True))


@router.post("/import-jobs/{job_id}/start", response={202: ImportJobOut}, summary="Map the columns and start")
def start_import_job(request, job_id: int, payload: StartIn):
    require(request, "contacts.import")
    job = _get(job_id)
    if job.status != ImportJob.Status.DRAFT:
        raise ApiError(409, "conflict", f"this import has already been started (status: {job.status})")
    mapping = payload.mapping if payload.mapping is not None else job.mapping
    if payload.preset:
        preset = ImportPreset.objects.filter(name=payload.preset).first()
        if preset is None:
            raise ApiError(422, "invalid", "the import settings are not valid",
                           {"preset": f"there is no preset named {payload.preset!r}"})
        mapping = imports.preset_mapping(job, preset)
    try:
        imports.configure_job(
            request.auth, job, mapping=mapping, duplicate_policy=payload.duplicate_policy, tags=payload.tags,
            list_name=payload.list_name, consent_topic_key=payload.consent_topic,
            consent_status=payload.consent_status, consent_source=payload.consent_source,
            save_preset_as=payload.save_preset_as,
        )
        imports.enqueue_job(job)
    except imports.ImportConfigError as exc:
        if "status" in exc.errors:
            raise ApiError(409, "conflict", exc.errors["status"]) from exc
        raise ApiError(422, "invalid", "the import settings are not valid", exc.errors) from exc
    job.refresh_from_db()
    return Status(202, _job_out(job))


@router.get("/import-jobs", response=list[ImportJobOut], summary="Recent import jobs")
def list_import_jobs(request, limit: Query[int] = 50, before: Query[int | None] = None):
    require(request, "contacts.view")
    if not 1 <= limit <= 200:
        raise ApiError(422, "invalid", "the request is not valid", {"limit": "must be between 1 and 200"})
    jobs = ImportJob.objects.select_related("created_by", "consent_topic").order_by("-id")
    if before is not None:
        jobs = jobs.filter(id__lt=before)
    return [_job_out(job) for job in jobs[:limit]]


@router.get("/import-jobs/{job_id}", response=ImportJobOut, summary="An import job: status, counts, progress")
def get_import_job(request, job_id: int):
    require(request, "contacts.view")
    return _job_out(_get(job_id))


@router.get("/import-jobs/{job_id}/errors", response=ErrorsOut, summary="The rows that were not imported, and why")
def get_import_errors(request, job_id: int, offset: Query[int] = 0, limit: Query[int] = 100):
    require(request, "contacts.view")
    if offset < 0 or not 1 <= limit <= 1000:
        raise ApiError(422, "invalid", "the request is not valid",
                       {"limit": "must be between 1 and 1000; offset must be 0 or more"})
    items, count = imports.error_rows(_get(job_id), offset=offset, limit=limit)
    return {"count": count, "items": items}


@router.get("/import-presets", response=list[PresetOut], summary="Saved column mappings")
def list_import_presets(request):
    require(request, "contacts.view")
    return [{"name": p.name, "mapping": p.mapping} for p in ImportPreset.objects.all()]
