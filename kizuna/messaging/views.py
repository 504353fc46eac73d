"""Email pages: templates (editor, preview, test send, report), senders and the DNS check, bulk
sends (wizard, progress, pause/resume/cancel, report), outbox, suppressions, sending rules.
Views stay thin: the work is in templates_service, outbox, bulk and reports."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts import audit
from kizuna.accounts.permissions import capability_required
from kizuna.contacts.models import Contact
from kizuna.messaging import bulk as bulk_sends
from kizuna.messaging import compose, rendering, reports
from kizuna.messaging import outbox as mail_outbox
from kizuna.messaging.forms import BulkForm, SenderForm, SendingSettingsForm, TemplateForm, TestSendForm
from kizuna.messaging.models import (
    BulkSend,
    BulkStatus,
    CapturedMail,
    EmailTemplate,
    Message,
    MessageStatus,
    Sender,
    SendingSettings,
    Suppression,
    TemplateVersion,
)
from kizuna.messaging.templates_service import save_version

PAGE_SIZE = 50
STARTER_HTML = """<html><head><style>
  body { font-family: sans-serif; color: #222; }
  .button { background: #1f6feb; color: #fff; padding: 10px 18px; border-radius: 4px; text-decoration: none; }
</style></head><body>
<p>{{ contact.company_name }}<br>{{ contact.family_name | default("ご担当者") }} 様</p>
<p>いつもお世話になっております。</p>
<p><a class="button" href="https://www.example.co.jp/">詳しくはこちら</a></p>
</body></html>"""


# --- templates -------------------------------------------------------------------------------
@capability_required("email.view")
def template_list(request):
    templates = EmailTemplate.objects.select_related("current", "sender", "topic").order_by("name")
    return render(request, "messaging/template_list.html", {"templates": templates})


@capability_required("email.change")
def template_edit(request, pk: int | None = None):
    template = get_object_or_404(EmailTemplate, pk=pk) if pk else None
    version = template.current if template else None
    initial = {"subject": version.subject, "preheader": version.preheader, "html": version.html,
               "text": version.text, "is_mjml": version.is_mjml} if version else {
        "html": STARTER_HTML, "sender": Sender.objects.filter(is_default=True).first()}
    form = TemplateForm(request.POST or None, instance=template, initial=initial)
    warnings: list[str] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            rendering.validate(data["subject"], data["html"], data["text"], mjml=data["is_mjml"])
        except rendering.TemplateProblem as exc:
            field = exc.field if exc.field in form.fields else "html"
            form.add_error(field, _("%(problem)s (line %(line)s)") % {"problem": exc.message, "line": exc.line or "?"})
        else:
            with transaction.atomic():
                saved = form.save(commit=False)
                saved.updated_at = timezone.now()
                saved.save()
                version, warnings = save_version(saved, subject=data["subject"], html=data["html"], text=data["text"],
                                                 preheader=data["preheader"], is_mjml=data["is_mjml"],
                                                 user=request.user)
            audit.record(request.user, "update" if template else "create", saved, changes={"version": version.number})
            for warning in warnings:
                messages.warning(request, warning)
            messages.success(request, _("Saved as version %(n)s.") % {"n": version.number})
            return redirect("messaging:template_edit", pk=saved.pk)
    versions = template.versions.all()[:20] if template else []
    return render(request, "messaging/template_edit.html", {
        "form": form, "template": template, "versions": versions, "test_form": TestSendForm(),
        "contacts": Contact.objects.exclude(email=None).order_by("-id")[:20],
    })


def _preview_context(request, template: EmailTemplate) -> tuple[dict, Contact | None]:
    contact_id = request.GET.get("contact", "") or request.POST.get("contact", "")
    contact = Contact.objects.filter(pk=contact_id).select_related("company", "owner").first() if contact_id.isdigit() \
        else None
    if contact is None:
        return rendering.sample_context(), None
    fake = Message(contact=contact, to_email=contact.email or "", version=template.current,
                   sender=template.sender or Sender(), kind=template.kind)
    return compose.contact_context(fake, "preview"), contact


def _preview_response(rendered: rendering.RenderedMessage, part: str) -> HttpResponse:
    if part == "text":
        return HttpResponse(f"{rendered.subject}\n\n{rendered.text}", content_type="text/plain; charset=utf-8")
    response = HttpResponse(rendered.html)
    # The preview shows the marketer's own HTML: no scripts, and only inside Kizuna's frame.
    response["Content-Security-Policy"] = ("default-src 'none'; img-src * data:; style-src 'unsafe-inline'; "
                                           "frame-ancestors 'self'")
    response["X-Frame-Options"] = "SAMEORIGIN"
    return response


@capability_required("email.view")
def template_preview(request, pk: int):
    """A saved version rendered as a page (the editor's frame shows it at desktop or mobile width)."""
    template = get_object_or_404(EmailTemplate.objects.select_related("current", "sender"), pk=pk)
    version_id = request.GET.get("version", "")
    version = template.versions.filter(pk=version_id).first() if version_id.isdigit() else template.current
    if version is None:
        return HttpResponse(_("Nothing saved yet."), content_type="text/plain; charset=utf-8")
    context, _contact = _preview_context(request, template)
    compiled = rendering.compile_template(version.subject, version.compiled_html, version.text, inline=False)
    sender = template.sender
    footer_html, footer_text = compose.footer(sender, template.kind, "preview") if sender else ("", "")
    rendered = rendering.render(compiled, context, footer_html=footer_html, footer_text=footer_text)
    return _preview_response(rendered, request.GET.get("part", ""))


@require_POST
@capability_required("email.change")
def template_live_preview(request):
    """What the editor holds right now, unsaved: the frame follows the typing."""
    template = EmailTemplate.objects.filter(pk=request.POST.get("template") or 0).select_related("sender").first()
    template = template or EmailTemplate(kind=request.POST.get("kind", "marketing"))
    sender = Sender.objects.filter(pk=request.POST.get("sender") or 0).first() or template.sender
    subject, html, text = request.POST.get("subject", ""), request.POST.get("html", ""), request.POST.get("text", "")
    try:
        rendering.validate(subject or "-", html or "<p></p>", text, mjml=bool(request.POST.get("is_mjml")))
        compiled = rendering.compile_template(subject, html, text, mjml=bool(request.POST.get("is_mjml")))
    except rendering.TemplateProblem as exc:
        from django.utils.html import escape

        return _preview_response(rendering.RenderedMessage(
            subject="", text=str(exc),
            html=f'<p style="color:#b00020;font-family:sans-serif">{escape(str(exc))}</p>'), "")
    template.current = None
    context, _contact = _preview_context(request, template) if request.POST.get("contact") else (
        rendering.sample_context(), None)
    footer_html, footer_text = compose.footer(sender, template.kind, "preview") if sender else ("", "")
    rendered = rendering.render(compiled, context, footer_html=footer_html, footer_text=footer_text)
    return _preview_response(rendered, request.POST.get("part", ""))


@require_POST
@capability_required("email.send")
def template_test_send(request, pk: int):
    template = get_object_or_404(EmailTemplate.objects.select_related("current", "sender"), pk=pk)
    form = TestSendForm(request.POST)
    if not form.is_valid() or template.current is None or template.sender is None:
        messages.error(request, _("A test needs a saved template, a sender and a valid address."))
        return redirect("messaging:template_edit", pk=pk)
    email = form.cleaned_data["email"].lower()
    contact = Contact.objects.filter(email=email).first() or Contact(email=email, family_name="テスト")
    if contact.pk is None:
        contact.save()
    stamp = timezone.now().strftime("%Y%m%d%H%M%S%f")
    mail_outbox.enqueue(contact, template.current, key=f"test:{template.current.pk}:{email}:{stamp}",
                   kind="transactional", extra={"test": True})
    messages.success(request, _("A test message to %(email)s is queued.") % {"email": email})
    return redirect("messaging:template_edit", pk=pk)


@capability_required("email.view")
def template_report(request, pk: int):
    template = get_object_or_404(EmailTemplate, pk=pk)
    sent = Message.objects.filter(version__template=template).exclude(extra__test=True)
    return render(request, "messaging/report.html", {
        "title": template.name, "back": ("messaging:template_edit", template.pk),
        "stats": reports.summary(sent), "links": reports.links(sent),
    })


# --- senders ---------------------------------------------------------------------------------
@capability_required("email.manage")
def sender_list(request):
    return render(request, "messaging/sender_list.html", {"senders": Sender.objects.all()})


@capability_required("email.manage")
def sender_edit(request, pk: int | None = None):
    sender = get_object_or_404(Sender, pk=pk) if pk else None
    form = SenderForm(request.POST or None, instance=sender)
    generated = ""
    if request.method == "POST" and request.POST.get("generate_dkim") and sender is not None:
        from kizuna.messaging.dkim import generate_key

        sender.dkim_private_key, generated = generate_key()
        sender.dkim_selector = sender.dkim_selector or "kizuna"
        sender.save(update_fields=["dkim_private_key", "dkim_selector"])
        messages.success(request, _("A new DKIM key is set. Publish the DNS record below before sending."))
        return redirect("messaging:sender_dns", pk=sender.pk)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        if saved.is_default:
            Sender.objects.exclude(pk=saved.pk).update(is_default=False)
        audit.record(request.user, "update" if sender else "create", saved)
        messages.success(request, _("Sender saved."))
        return redirect("messaging:sender_list")
    return render(request, "messaging/sender_form.html", {"form": form, "sender": sender, "generated": generated})


def _resolver():
    """The system's resolver, or KIZUNA_DNS_NAMESERVER (host[:port]) when set."""
    server = getattr(settings, "KIZUNA_DNS_NAMESERVER", "")
    if not server:
        return None
    import dns.resolver

    host, _, port = server.partition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port or 53)
    return resolver


@capability_required("email.manage")
def sender_dns(request, pk: int):
    from kizuna.messaging import dnscheck

    sender = get_object_or_404(Sender, pk=pk)
    public = ""
    if sender.dkim_private_key:
        public = dnscheck.public_record_for(sender.dkim_private_key)
    report = dnscheck.check_domain(sender.domain, dkim_selector=sender.dkim_selector or None,
                                   dkim_public_key=public or None, resolver=_resolver())
    return render(request, "messaging/sender_dns.html", {"sender": sender, "report": report, "public": public})


# --- bulk sends ------------------------------------------------------------------------------
@capability_required("email.view")
def bulk_list(request):
    sends = BulkSend.objects.select_related("template", "contact_list", "segment").order_by("-created_at")[:200]
    return render(request, "messaging/bulk_list.html", {"sends": sends})


@capability_required("email.send")
def bulk_create(request):
    segment = request.GET.get("segment", "")
    form = BulkForm(request.POST or None, initial={"segment": int(segment)} if segment.isdigit() else None)
    if request.method == "POST" and form.is_valid():
        send = form.save(commit=False)
        send.version = send.template.current
        send.created_by = request.user
        try:
            with transaction.atomic():
                send.save()
                bulk_sends.start(send, at=None if form.cleaned_data["send_now"] else send.scheduled_at)
        except bulk_sends.BulkError as exc:
            form.add_error(None, str(exc))
        else:
            audit.record(request.user, "create", send, changes={"list": send.contact_list_id,
                                                                "segment": send.segment_id})
            return redirect("messaging:bulk_detail", pk=send.pk)
    return render(request, "messaging/bulk_form.html", {"form": form})


def _bulk_state(send: BulkSend) -> dict:
    """Progress for the page and its poller: {done, percent, text} as app.js expects."""
    progress = bulk_sends.progress(send)
    total = progress["total"] or 0
    finished = progress["done"]
    state = {"status": send.status, "status_label": send.get_status_display(), "total": total,
             "prepared": progress["prepared"], "finished": finished,
             "percent": round(100 * finished / total) if total else 0,
             "sent": progress.get(MessageStatus.SENT, 0), "skipped": progress.get(MessageStatus.SKIPPED, 0),
             "failed": progress.get(MessageStatus.FAILED, 0), "unknown": progress.get(MessageStatus.UNKNOWN, 0),
             "held": progress.get(MessageStatus.HELD, 0),
             "done": send.status in (BulkStatus.DONE, BulkStatus.CANCELLED)}
    state["text"] = _("%(status)s: %(finished)s of %(total)s handled (%(sent)s sent, %(skipped)s not sent by the "
                      "rules, %(failed)s failed)") % {**state, "status": state["status_label"]}
    return state


@capability_required("email.view")
def bulk_detail(request, pk: int):
    send = get_object_or_404(BulkSend.objects.select_related("template", "contact_list", "segment", "version"),
                             pk=pk)
    sent = Message.objects.filter(bulk=send)
    return render(request, "messaging/bulk_detail.html", {
        "send": send, "state": _bulk_state(send), "stats": reports.summary(sent), "links": reports.links(sent),
        "ab": bulk_sends.ab_results(send) if send.variant_b_id else None,
    })


@capability_required("email.view")
def bulk_progress(request, pk: int):
    return JsonResponse(_bulk_state(get_object_or_404(BulkSend, pk=pk)))


@require_POST
@capability_required("email.send")
def bulk_action(request, pk: int, action: str):
    send = get_object_or_404(BulkSend, pk=pk)
    actions = {"pause": bulk_sends.pause, "resume": bulk_sends.resume, "cancel": bulk_sends.cancel,
               "decide": bulk_sends.decide}
    if action not in actions:
        return HttpResponse(status=404)
    try:
        actions[action](send)
    except bulk_sends.BulkError as exc:
        messages.error(request, str(exc))
    else:
        audit.record(request.user, action, send)
    return redirect("messaging:bulk_detail", pk=pk)


# --- outbox, suppressions, settings ----------------------------------------------------------
@capability_required("email.view")
def outbox_list(request):
    status = request.GET.get("status", "")
    rows = Message.objects.select_related("version__template", "contact").order_by("-id")
    if status in MessageStatus.values:
        rows = rows.filter(status=status)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "messaging/outbox.html", {"page": page, "status": status,
                                                    "statuses": MessageStatus.choices})


@capability_required("email.view")
def message_detail(request, pk: int):
    message = get_object_or_404(Message.objects.select_related("version__template", "contact", "sender"), pk=pk)
    captured = CapturedMail.objects.filter(message=message).first()
    raw = bytes(captured.raw).decode("utf-8", "replace") if captured else ""
    parsed = None
    if captured:
        from email import message_from_bytes, policy

        mail = message_from_bytes(bytes(captured.raw), policy=policy.default)
        html = mail.get_body(("html",))
        text = mail.get_body(("plain",))
        parsed = {"subject": str(mail["Subject"]), "from": str(mail["From"]),
                  "text": text.get_content() if text else "", "html": html.get_content() if html else ""}
    return render(request, "messaging/message_detail.html", {
        "message": message, "raw": raw, "parsed": parsed, "activities": message.activities.all()[:200],
        "bounces": message.bounces.all(),
    })


@capability_required("email.view")
def message_body(request, pk: int):
    """The HTML part of a captured message, in the frame of the message page (own strict CSP)."""
    captured = get_object_or_404(CapturedMail, message_id=pk)
    from email import message_from_bytes, policy

    html = message_from_bytes(bytes(captured.raw), policy=policy.default).get_body(("html",))
    return _preview_response(rendering.RenderedMessage(subject="", text="", html=html.get_content() if html else ""),
                             "")


@capability_required("email.view")
def suppression_list(request):
    query = request.GET.get("q", "").strip().lower()
    rows = Suppression.objects.all()
    if query:
        rows = rows.filter(email__contains=query)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "messaging/suppressions.html", {"page": page, "q": query})


@capability_required("email.manage")
def sending_settings(request):
    current = SendingSettings.get()
    form = SendingSettingsForm(request.POST or None, instance=current)
    if request.method == "POST" and form.is_valid():
        form.save()
        audit.record(request.user, "update", current, label=_("sending rules"))
        messages.success(request, _("Sending rules saved."))
        return redirect("messaging:settings")
    return render(request, "messaging/settings.html", {"form": form})


__all__ = ["TemplateVersion"]
