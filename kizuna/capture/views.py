"""The form pages: the list with submissions and conversion, a form's page (figures, rejections,
the codes to embed it, a preview, its submissions), the editor, CSV export. The work is in
services.py; the public side is in public_views.py."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts.permissions import capability_required
from kizuna.capture import definition as definitions
from kizuna.capture import embed, processing, services
from kizuna.capture.forms import FormEditor
from kizuna.capture.models import Form, Submission
from kizuna.contacts.panels import register_contact_panel

PAGE_SIZE = 50


def submissions_panel(request, contact) -> dict:
    return {"submissions": list(Submission.objects.filter(contact=contact).select_related("form")[:10])}


def register_panels() -> None:
    register_contact_panel(45, "capture/_contact_panel.html", submissions_panel)


@capability_required("capture.view")
def form_list(request):
    forms = list(Form.objects.order_by("name"))
    figures = services.stats(forms)
    for form in forms:
        form.figures = figures[form.pk]
    return render(request, "capture/form_list.html", {"forms": forms, "days": services.STATS_DAYS})


def _editor(request, form: Form | None):
    instance = form or Form()
    initial = {"definition_json": json.dumps(form.definition if form else definitions.starter(
        "ja" if request.LANGUAGE_CODE == "ja" else "en"), ensure_ascii=False, indent=2)}
    editor = FormEditor(request.POST or None, instance=instance, initial=initial)
    faults: list[tuple[str, str]] = []
    if request.method == "POST" and editor.is_valid():
        saved = editor.save(commit=False)
        try:
            services.save_form(request.user, saved, editor.cleaned_data["definition_json"])
        except definitions.DefinitionError as exc:
            faults = exc.errors
        else:
            messages.success(request, _("Form %(name)s saved.") % {"name": saved.name})
            return redirect("capture:detail", pk=saved.pk)
    return render(request, "capture/form_edit.html", {
        "form_obj": form, "editor": editor, "faults": faults, "ref": services.reference(),
    }, status=400 if request.method == "POST" else 200)


@capability_required("capture.manage")
def form_create(request):
    return _editor(request, None)


@capability_required("capture.manage")
def form_edit(request, pk: int):
    return _editor(request, get_object_or_404(Form, pk=pk))


@capability_required("capture.view")
def form_detail(request, pk: int):
    form = get_object_or_404(Form, pk=pk)
    status = request.GET.get("status", "")
    rows = form.submissions.select_related("contact").order_by("-id")
    if status in Submission.Status.values:
        rows = rows.filter(status=status)
    before = request.GET.get("before", "")
    if before.isdigit():
        rows = rows.filter(id__lt=int(before))
    page = list(rows[:PAGE_SIZE + 1])
    older = page[PAGE_SIZE].pk + 1 if len(page) > PAGE_SIZE else None
    page = page[:PAGE_SIZE]
    names = [f["name"] for f in form.definition.get("fields", []) + form.definition.get("pool", [])
             if f["type"] != "consent"]
    for s in page:
        s.shown_values = [(n, _text(s.values.get(n))) for n in names if s.values.get(n) not in (None, "", [], False)]
        s.extra_values = [(k, _text(v)) for k, v in s.values.items()
                          if k not in names and v not in (None, "", [], False)]
    return render(request, "capture/form_detail.html", {
        "form_obj": form, "figures": services.stats([form])[form.pk], "rejected": services.rejected_by_reason(form),
        "days": services.STATS_DAYS, "submissions": page, "older": older, "status": status,
        "statuses": Submission.Status.choices,
        "hosted_url": embed.absolute(reverse("capture:hosted", args=[form.slug])),
        "js_code": embed.js_snippet(form), "plain_code": embed.plain_html(form, request),
        "preview": embed.render_form(form, request, count=False),
    })


def _text(value) -> str:
    """A submitted value as text for the page (escaped by the template)."""
    if isinstance(value, bool):
        return "✔" if value else "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


@capability_required("capture.manage")
def form_export(request, pk: int):
    form = get_object_or_404(Form, pk=pk)
    name, stream = services.export_csv(request.user, form)
    response = StreamingHttpResponse(stream, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_POST
@capability_required("capture.manage")
def plain_html_replace(request, pk: int):
    form = get_object_or_404(Form, pk=pk)
    services.replace_plain_html(request.user, form)
    messages.success(request, _("The plain-HTML code was replaced: copies made before now are refused. "
                                "Paste the new code into your sites."))
    return redirect(reverse("capture:detail", args=[form.pk]) + "#embed")


@require_POST
@capability_required("capture.manage")
def submission_retry(request, pk: int, sid: int):
    submission = get_object_or_404(Submission, pk=sid, form_id=pk, status=Submission.Status.FAILED)
    processing.retry(submission)
    messages.success(request, _("Submission %(id)s will be processed again.") % {"id": submission.pk})
    return redirect("capture:detail", pk=pk)


@require_POST
@capability_required("capture.manage")
def confirmation_template(request):
    language = request.POST.get("language", "ja")
    try:
        template = services.create_confirmation_template(request.user, language)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Email template %(name)s (id %(id)s) created: use it for double opt-in.")
                         % {"name": template.name, "id": template.pk})
    back = request.POST.get("back", "")
    return redirect(back if back.startswith("/forms/") else "capture:list")
