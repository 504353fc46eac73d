"""Saving forms and reading their figures: what the form pages call."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from kizuna.accounts import audit
from kizuna.capture import definition as definitions
from kizuna.capture.models import Form, FormCounter, Submission
from kizuna.contacts.exports import safe_cell
from kizuna.db.writelock import sqlite_writer

STATS_DAYS = 30


@transaction.atomic
def save_form(actor, form: Form, data: Any, *, refs: definitions.Refs | None = None) -> Form:
    """Checks the definition (DefinitionError names every fault) and saves the form, audited."""
    previous = form.definition if form.pk else None
    checked = definitions.check(data, refs, previous=previous)
    before = {"name": form.name, "slug": form.slug, "active": form.active, "definition": previous} if form.pk else {}
    with sqlite_writer():
        form.definition = checked
        form.updated_at = timezone.now()
        if form.pk is None and actor is not None and getattr(actor, "pk", None):
            form.created_by = actor
        form.save()
        after = {"name": form.name, "slug": form.slug, "active": form.active, "definition": checked}
        audit.record(actor, "update" if before else "create", form, changes=audit.diff(before, after))
    return form


def replace_plain_html(actor, form: Form) -> None:
    """Refuses every plain-HTML copy of the form issued until now."""
    with sqlite_writer(), transaction.atomic():
        form.plain_html_since = timezone.now()
        form.save(update_fields=["plain_html_since"])
        audit.record(actor, "update", form, changes={"plain_html_since": [None, form.plain_html_since.isoformat()]})


def stats(forms: Iterable[Form], days: int = STATS_DAYS) -> dict[int, dict[str, Any]]:
    """Per form, over the last `days` days: views, submissions, conversion (%), rejected; and
    all submissions ever."""
    ids = [f.pk for f in forms]
    since_day = timezone.localdate() - dt.timedelta(days=days - 1)
    since = timezone.now() - dt.timedelta(days=days)
    out = {i: {"views": 0, "submissions": 0, "rejected": 0, "total": 0, "conversion": None, "failed": 0}
           for i in ids}
    for form_id, kind, n in (FormCounter.objects.filter(form_id__in=ids, day__gte=since_day)
                             .values_list("form_id", "kind").annotate(n=Sum("count"))):
        out[form_id]["views" if kind == FormCounter.VIEW else "rejected"] += n
    for form_id, n in (Submission.objects.filter(form_id__in=ids, created_at__gte=since).values_list("form_id")
                       .annotate(n=Count("id"))):
        out[form_id]["submissions"] = n
    for form_id, n in Submission.objects.filter(form_id__in=ids).values_list("form_id").annotate(n=Count("id")):
        out[form_id]["total"] = n
    for form_id, n in (Submission.objects.filter(form_id__in=ids, status=Submission.Status.FAILED)
                       .values_list("form_id").annotate(n=Count("id"))):
        out[form_id]["failed"] = n
    for row in out.values():
        if row["views"]:
            row["conversion"] = round(100 * row["submissions"] / row["views"], 1)
    return out


REASONS = {
    "honeypot": gettext_lazy("Honeypot filled (bot)"), "too_fast": gettext_lazy("Sent too fast"),
    "rate_limited": gettext_lazy("Rate limit"), "disposable": gettext_lazy("Disposable address"),
    "bad_token": gettext_lazy("Invalid or expired form token"), "origin": gettext_lazy("Site not allowed"),
}


def rejected_by_reason(form: Form, days: int = STATS_DAYS) -> list[tuple[str, str, int]]:
    """(reason code, label, count) over the last `days` days, every reason listed."""
    since_day = timezone.localdate() - dt.timedelta(days=days - 1)
    counts = dict(FormCounter.objects.filter(form=form, day__gte=since_day, kind__in=FormCounter.REJECTED)
                  .values_list("kind").annotate(n=Sum("count")))
    return [(code, str(REASONS.get(code, code)), counts.get(code, 0)) for code in FormCounter.REJECTED]


# --- CSV export ------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return safe_cell(", ".join(str(v) for v in value))
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")
    return safe_cell(str(value))


class _Line:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text


def export_csv(actor, form: Form) -> tuple[str, Iterator[bytes]]:
    """(file name, bytes) of every submission of the form: UTF-8 with BOM for Excel, one column
    per field, cells that a spreadsheet would run as formulas neutralised. Audit-logged."""
    names = [f["name"] for f in form.definition.get("fields", []) + form.definition.get("pool", [])]
    consent_names = [f["name"] for f in form.definition.get("fields", []) if f["type"] == "consent"]
    names = [n for n in names if n not in consent_names]
    header = [_("ID"), _("Received at"), _("Status"), _("Email"), _("Contact ID"), *names,
              *[f"{n} ({_('consent')})" for n in consent_names], _("Page"), _("Referrer"), "utm_source",
              "utm_medium", "utm_campaign", "utm_term", "utm_content", _("IP"), _("Anonymous id")]
    audit.record(actor, "export", form, changes={"submissions": form.submissions.count()})

    def rows() -> Iterator[bytes]:
        line = _Line()
        writer = csv.writer(line, lineterminator="\r\n")
        writer.writerow(header)
        yield ("\ufeff" + line.text).encode("utf-8")
        last = 0
        while True:
            chunk = list(form.submissions.filter(id__gt=last).order_by("id")[:1000])
            if not chunk:
                return
            line.text = ""
            for s in chunk:
                given = {c.get("field"): c.get("given") for c in s.consents if c.get("field")}
                utm = s.utm or {}
                writer.writerow([
                    s.pk, _cell(s.created_at), s.get_status_display(), _cell(s.email), s.contact_id or "",
                    *[_cell(s.values.get(n)) for n in names], *[_cell(given.get(n)) for n in consent_names],
                    _cell(s.page_url), _cell(s.referrer),
                    *[_cell(utm.get(k)) for k in ("utm_source", "utm_medium", "utm_campaign", "utm_term",
                                                  "utm_content")],
                    s.ip or "", _cell(s.anonymous_id)])
            yield line.text.encode("utf-8")
            last = chunk[-1].pk

    return f"form-{form.slug}-{timezone.localtime():%Y%m%d-%H%M}.csv", rows()


# --- the editor's reference --------------------------------------------------------------------

def reference() -> dict[str, Any]:
    """What a definition may name, for the editor's side panel."""
    from kizuna.capture.actions import asset_support
    from kizuna.contacts.models import ContactList, CustomField, SubscriptionTopic
    from kizuna.events.models import WriteKey
    from kizuna.journeys.models import Journey
    from kizuna.messaging.models import EmailTemplate
    from kizuna.scoring.models import ScoringModel

    support = asset_support()
    templates = []
    for t in EmailTemplate.objects.select_related("current").filter(kind="transactional"):
        templates.append({"id": t.pk, "name": t.name, "problem": definitions.template_problem(t)})
    return {
        "contact_targets": sorted(definitions.CONTACT_TARGETS),
        "company_targets": sorted(definitions.COMPANY_TARGETS),
        "custom": CustomField.objects.order_by("target", "key"),
        "topics": SubscriptionTopic.objects.order_by("key"),
        "lists": ContactList.objects.order_by("name"),
        "models": ScoringModel.objects.order_by("name"),
        "journeys": Journey.objects.order_by("name"),
        "templates": templates,
        "write_keys": WriteKey.objects.order_by("name"),
        "assets": support[0].objects.all()[:200] if support else None,
        "types": definitions.TYPES,
        "actions": [a for a in definitions.ACTION_TYPES if a != "deliver_asset" or support],
        "hidden_sources": definitions.HIDDEN_SOURCES,
    }


# --- the double opt-in mail ------------------------------------------------------------------------

CONFIRMATION = {
    "ja": {
        "name": "フォーム確認メール（ダブルオプトイン）",
        "subject": "【ご確認のお願い】{{ form_name }}",
        "html": """<html><body>
<p>{{ contact.family_name | default("お客") }}様</p>
<p>「{{ form_name }}」へのご登録ありがとうございます。</p>
<p>下のリンクからご登録の確認をお願いいたします。確認が済むまで、メールをお送りすることはありません。</p>
<p><a href="{{ confirm_url }}" data-kizuna-notrack>ご登録を確認する</a></p>
<p>このリンクの有効期限は7日間です。お心当たりのない場合は、このメールを破棄してください。</p>
</body></html>""",
    },
    "en": {
        "name": "Form confirmation (double opt-in)",
        "subject": "Please confirm: {{ form_name }}",
        "html": """<html><body>
<p>Hello {{ contact.given_name | default("") }},</p>
<p>Thank you for signing up with "{{ form_name }}".</p>
<p>Please confirm with the link below. We will send you nothing else until you do.</p>
<p><a href="{{ confirm_url }}" data-kizuna-notrack>Confirm my sign-up</a></p>
<p>The link is valid for seven days. If you did not sign up, please ignore this email.</p>
</body></html>""",
    },
}


def create_confirmation_template(actor, language: str):
    """A transactional template with the confirmation link, from the default sender; raises
    ValueError when no sender exists yet."""
    from kizuna.messaging.models import EmailTemplate, MessageKind, Sender
    from kizuna.messaging.templates_service import save_version

    sender = Sender.objects.filter(is_default=True).first() or Sender.objects.order_by("pk").first()
    if sender is None:
        raise ValueError(_("Add an email sender first (Settings → Email senders)."))
    words = CONFIRMATION["ja" if language == "ja" else "en"]
    name, number = words["name"], 1
    while EmailTemplate.objects.filter(name=name).exists():
        number += 1
        name = f"{words['name']} {number}"
    with sqlite_writer(), transaction.atomic():
        template = EmailTemplate.objects.create(name=name, kind=MessageKind.TRANSACTIONAL, sender=sender)
        save_version(template, subject=words["subject"], html=words["html"], user=actor)
        audit.record(actor, "create", template)
    return template
