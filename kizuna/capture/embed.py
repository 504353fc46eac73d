"""A form as HTML, wherever it is shown: the hosted page, the JS embed, landing pages.

`render_form(form, request)` returns the form with its signed token, the honeypot, the hidden
page fields and progressive profiling applied, and a link to its stylesheet, so a landing page
can place it anywhere:

    from kizuna.capture.embed import render_form
    html = render_form(form, request, context={"landing_page": page.slug, "variant": "b"})

`context` (a few short strings) travels signed in the token and is stored with the submission
and sent with its "Form Submitted" event, so conversions can be counted per page and variant.
A page whose CSP limits form-action must allow `form_action_sources(form)` (the form posts to
Kizuna and may redirect to its thank-you address).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.utils import translation
from django.utils.html import escape
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from kizuna.capture import tokens, writes
from kizuna.capture.definition import HONEYPOT
from kizuna.capture.models import Form, FormCounter
from kizuna.contacts.models import Contact
from kizuna.contacts.reference import PREFECTURES

TRACKER_COOKIE = "_kz_aid"  # the tracker's anonymous id (kizuna/events/static/kizuna/tracker.js)
STYLESHEET = "kizuna/forms.css"


def absolute(path: str) -> str:
    return settings.BASE_URL + path


def submit_url(form: Form) -> str:
    return absolute(reverse("capture:submit", args=[form.slug]))


def form_action_sources(form: Form) -> list[str]:
    """Origins a page's CSP form-action must allow for this form."""
    sources = [absolute("")]
    redirect = form.definition.get("thank_you", {}).get("redirect")
    if redirect:
        parts = urlsplit(redirect)
        sources.append(f"{parts.scheme}://{parts.netloc}")
    return sources


def contact_for_visitor(anonymous_id: str) -> Contact | None:
    """The contact a tracked browser has identified as, if any."""
    if not anonymous_id:
        return None
    from kizuna.events.models import Identity, IdentityKind

    identity = (Identity.objects.filter(kind=IdentityKind.ANONYMOUS, value=anonymous_id)
                .select_related("contact", "contact__company").first())
    return identity.contact if identity else None


def is_known(contact: Contact, target: str) -> bool:
    """True when the contact (or its company) already has a value for this target."""
    empty = (None, "", [])
    if target.startswith("custom."):
        return (contact.custom or {}).get(target[7:]) not in empty
    if target.startswith("company."):
        company = contact.company if contact.company_id else None
        if company is None:
            return False
        rest = target[8:]
        if rest.startswith("custom."):
            return (company.custom or {}).get(rest[7:]) not in empty
        return getattr(company, rest, None) not in empty
    return getattr(contact, target, None) not in empty


def progressive(form: Form, contact: Contact | None) -> tuple[list[dict], list[str] | None]:
    """The fields to show: each progressive field the contact already filled is replaced by the
    next pool field still unknown. Returns (fields, their names or None when unchanged)."""
    fields = form.definition["fields"]
    if contact is None or not any(f.get("progressive") for f in fields):
        return list(fields), None
    pool = iter([p for p in form.definition.get("pool", []) if not is_known(contact, p["maps_to"])])
    shown: list[dict] = []
    changed = False
    for f in fields:
        if f.get("progressive") and is_known(contact, f["maps_to"]):
            changed = True
            replacement = next(pool, None)
            if replacement is not None:
                shown.append(replacement)
            continue
        shown.append(f)
    return shown, ([f["name"] for f in shown] if changed else None)


def count_view(form: Form) -> None:
    writes.record(writes.Write(form.pk, counts=[FormCounter.VIEW]))


def prefecture_options(language: str) -> list[dict[str, str]]:
    if language == "ja":
        return [{"value": code, "label": ja} for code, ja, _en, _r in PREFECTURES]
    return [{"value": code, "label": f"{en} ({ja})"} for code, ja, en, _r in PREFECTURES]


def _widgets(form: Form, fields: list[dict], values: dict[str, Any], errors: dict[str, str]) -> list[dict]:
    out = []
    for f in fields:
        if f["type"] == "hidden":
            continue  # filled on the server from the page address and the definition
        value = values.get(f["name"], "")
        item = {**f, "value": value, "error": errors.get(f["name"], ""),
                "id": f"kz-{form.slug}-{f['name']}"}
        if f["type"] == "prefecture":
            item["options"] = prefecture_options(form.language)
        if f["type"] in ("select", "radio", "prefecture"):
            item["options"] = [{**o, "selected": o["value"] == value} for o in item["options"]]
        if f["type"] == "multiselect":
            chosen = set(value if isinstance(value, list) else [])
            item["options"] = [{**o, "selected": o["value"] in chosen} for o in f["options"]]
        out.append(item)
    return out


def render_form(form: Form, request, *, context: dict | None = None, values: dict | None = None,
                errors: dict | None = None, message: str = "", token: str = "", shown: list[str] | None = None,
                page_url: str | None = None, referrer: str | None = None, anonymous_id: str | None = None,
                count: bool = True) -> SafeString:
    """The form's HTML with its signed token, honeypot, hidden fields and progressive profiling.

    Shown again after a refused post, pass the posted `values`, the `errors` by field name, the
    `message`, and the `token` and `shown` it was posted with. `count` records a view."""
    definition = form.definition
    aid = anonymous_id if anonymous_id is not None else request.COOKIES.get(TRACKER_COOKIE, "")
    aid = aid if isinstance(aid, str) and len(aid) <= 100 else ""
    if token:
        fields = _by_names(form, shown)
    else:
        fields, shown = progressive(form, contact_for_visitor(aid))
        token = tokens.issue(form, shown=shown, context=context)
    if count:
        count_view(form)
    with translation.override(form.language):
        html = render_to_string("capture/_form.html", {
            "form": form, "definition": definition, "fields": _widgets(form, fields, values or {}, errors or {}),
            "action": submit_url(form), "token": token, "aid": aid, "honeypot": HONEYPOT,
            "page_url": request.build_absolute_uri() if page_url is None else page_url,
            "referrer": request.META.get("HTTP_REFERER", "") if referrer is None else referrer,
            "message": message, "stylesheet": absolute(static(STYLESHEET)),
            "submit_label": definition.get("submit_label") or _("Send"),
            "notices": [a for a in definition.get("actions", []) if a["type"] == "subscribe"],
        })
    return SafeString(html)


def _by_names(form: Form, shown: list[str] | None) -> list[dict]:
    from kizuna.capture.submit import shown_fields

    return shown_fields(form, shown)


def plain_html(form: Form, request) -> str:
    """The code to paste into any site: the form with a token issued now that does not expire
    (until the form's code is replaced) and no minimum fill time, which a static page cannot
    measure; the honeypot, the rate limit and the allowed sites still apply."""
    token = tokens.issue(form, kind=tokens.PLAIN_HTML)
    return str(render_form(form, request, token=token, shown=None, page_url="", referrer="", anonymous_id="",
                           count=False))


def js_snippet(form: Form) -> str:
    """The JS embed: a div where the form appears, and the small script that fills it."""
    script = escape(absolute(static("kizuna/forms-embed.js")))
    return (f'<div data-kizuna-form="{escape(form.slug)}"></div>\n'
            f'<script src="{script}" async></script>\n')
