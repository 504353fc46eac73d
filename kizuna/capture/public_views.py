"""The public side of forms: the hosted page, the JS embed's endpoint, the submit endpoint (from
any site: JSON for the embed, a plain HTML post otherwise), the thank-you page and the double
opt-in confirmation.

No login and no CSRF cookie: other sites post here, so a signed form token stands in for it
(tokens.py), and the Origin of a cross-site post must be one of the form's allowed sites. Every
answer is small and says what is wrong; visitor-supplied text is only ever escaped.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csp import get_nonce
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import translation
from django.utils.csp import CSP
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from kizuna.capture import embed, processing, spam, tokens, writes
from kizuna.capture import submit as submitting
from kizuna.capture.definition import safe_redirect
from kizuna.capture.models import Form, Submission
from kizuna.events.http import KeyInfo, client_ip

CORS_ALLOW = [("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
              ("Access-Control-Allow-Headers", "Content-Type, Accept"), ("Access-Control-Max-Age", "86400")]


# --- what every post reads, kept for a few seconds --------------------------------------------

class _Recent:
    """Forms by address and the tracking settings' domains, re-read every few seconds rather than
    on every post (as the tracking endpoints keep their write keys): a saved form or write key
    reaches every web process within `ttl` seconds, and at once in the process that saved it."""

    ttl = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: dict[str, tuple[Form | None, float]] = {}
        self._domains: tuple[tuple[str, ...], float] | None = None

    def form(self, slug: str) -> Form | None:
        now = time.monotonic()
        found = self._forms.get(slug)
        if found is not None and now - found[1] < self.ttl:
            return found[0]
        form = Form.objects.filter(slug=slug).first()
        with self._lock:
            if len(self._forms) > 1000:
                self._forms.clear()
            self._forms[slug] = (form, now)
        return form

    def domains(self) -> tuple[str, ...]:
        """The sites the tracking settings allow (every enabled write key's domains)."""
        now = time.monotonic()
        found = self._domains
        if found is not None and now - found[1] < self.ttl:
            return found[0]
        from kizuna.events.models import WriteKey

        domains: list[str] = []
        for text in WriteKey.objects.filter(enabled=True).values_list("allowed_domains", flat=True):
            domains += [d.strip().lower() for d in text.splitlines() if d.strip()]
        self._domains = (tuple(dict.fromkeys(domains)), now)
        return self._domains[0]

    def clear(self, *args, **kwargs) -> None:
        with self._lock:
            self._forms, self._domains = {}, None


recent = _Recent()


def _form_or_404(slug: str) -> Form:
    form = recent.form(slug)
    if form is None:
        raise Http404("no such form")
    return form


# --- origins -----------------------------------------------------------------------------------

def tracking_domains() -> tuple[str, ...]:
    return recent.domains()


def origin_allowed(form: Form, origin: str) -> bool:
    """Kizuna's own pages always; other sites when in the form's list, or when it has none, in the
    tracking settings' domains; any site when neither names one."""
    base = urlsplit(settings.BASE_URL)
    if origin == f"{base.scheme}://{base.netloc}":
        return True
    domains = tuple(form.definition.get("allowed_origins") or ()) or tracking_domains()
    if not domains:
        return True
    return bool(origin) and KeyInfo(0, "", True, domains).allows_origin(origin)  # the write keys' own rule


def cors_headers(request: HttpRequest, form: Form) -> list[tuple[str, str]] | None:
    """The CORS headers for this request's Origin; None when that site may not use the form."""
    origin = request.headers.get("Origin", "")
    if not origin:
        return []
    if not origin_allowed(form, origin):
        return None
    return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]


# --- answers -------------------------------------------------------------------------------------

def _json(status: int, body: dict | None, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    if body is None:
        response = HttpResponse(status=status)
    else:
        response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    response["Cache-Control"] = "no-store"
    for name, value in headers or []:
        response[name] = value
    return response


def _page(request: HttpRequest, form: Form, template: str, context: dict, status: int = 200) -> HttpResponse:
    tracker = ""
    key_id = form.definition.get("track_with")
    if key_id:
        from kizuna.events.models import WriteKey
        from kizuna.events.snippet import tracker_snippet

        key = WriteKey.objects.filter(pk=key_id, enabled=True).first()
        if key is not None:
            nonce = get_nonce(request)  # the loader is an inline script: the page's CSP allows it by nonce
            tracker = tracker_snippet(settings.BASE_URL, key.key).replace("<script>", f'<script nonce="{nonce}">', 1)
    with translation.override(form.language):
        response = render(request, template, {"form": form, "title": form.definition.get("title") or form.name,
                                              "tracker": tracker, **context}, status=status)
    # The form posts here and may then be sent on to its thank-you address.
    response._csp_config = {**settings.SECURE_CSP, "form-action": [CSP.SELF, *embed.form_action_sources(form)]}
    response["Cache-Control"] = "no-store"
    return response


def thanks_url(form: Form) -> str:
    redirect = safe_redirect(form.definition.get("thank_you", {}).get("redirect"))
    return redirect or reverse("capture:thanks", args=[form.slug])


# --- views ---------------------------------------------------------------------------------------

@require_http_methods(["GET", "HEAD"])
def hosted(request: HttpRequest, slug: str) -> HttpResponse:
    form = get_object_or_404(Form, slug=slug)
    if not form.active:
        return _page(request, form, "capture/hosted.html", {"closed": True}, status=410)
    return _page(request, form, "capture/hosted.html", {"form_html": embed.render_form(form, request)})


@require_http_methods(["GET", "OPTIONS"])
def embed_json(request: HttpRequest, slug: str) -> HttpResponse:
    """What the JS embed fetches: the form's HTML for the page it is on (CORS)."""
    form = _form_or_404(slug)
    cors = cors_headers(request, form)
    if cors is None:
        return _json(403, {"error": {"code": "origin", "message": "This site may not show this form."}})
    if request.method == "OPTIONS":
        return _json(204, None, cors + CORS_ALLOW)
    if not form.active:
        with translation.override(form.language):
            return _json(410, {"error": {"code": "closed", "message": _("This form is closed.")}}, cors)
    html = embed.render_form(
        form, request, page_url=submitting.http_url(request.GET.get("page", "")),
        referrer=submitting.http_url(request.GET.get("ref", "")), anonymous_id=request.GET.get("aid", ""))
    return _json(200, {"html": str(html)}, cors)


@csrf_exempt  # other sites post here: the signed form token and the Origin check stand in for CSRF
@require_http_methods(["POST", "OPTIONS"])
def submit(request: HttpRequest, slug: str) -> HttpResponse:
    form = _form_or_404(slug)
    cors = cors_headers(request, form)
    wants_json = "application/json" in request.headers.get("Accept", "")
    if cors is None:
        writes.record(writes.Write(form.pk, counts=["origin"]))
        message = "This site may not send this form."
        if wants_json:
            return _json(403, {"ok": False, "error": {"code": "origin", "message": message}})
        return HttpResponse(message, status=403, content_type="text/plain; charset=utf-8")
    if request.method == "OPTIONS":
        return _json(204, None, cors + CORS_ALLOW)
    visit = submitting.visit_from(request.POST, request.META, client_ip(request.META))
    with translation.override(form.language):
        outcome = submitting.submit(form, request.POST, visit)
        if wants_json:
            return _json_outcome(form, outcome, cors)
        return _html_outcome(request, form, outcome, visit)


def _json_outcome(form: Form, outcome: submitting.Outcome, cors: list[tuple[str, str]]) -> HttpResponse:
    if outcome.accepted:
        thank_you = form.definition.get("thank_you", {})
        return _json(200, {"ok": True, "message": thank_you.get("message") or _("Thank you. We have received it."),
                           "redirect": safe_redirect(thank_you.get("redirect"))}, cors)
    body: dict = {"ok": False, "error": {"code": outcome.code, "message": outcome.message}, "errors": outcome.errors}
    if outcome.code == "expired":
        body["token"] = outcome.token
    headers = list(cors)
    if outcome.status == 429:
        headers.append(("Retry-After", str(spam.retry_after())))
    return _json(outcome.status, body, headers)


def _html_outcome(request: HttpRequest, form: Form, outcome: submitting.Outcome,
                  visit: submitting.Visit) -> HttpResponse:
    if outcome.accepted:
        return HttpResponseRedirect(thanks_url(form), status=303)
    if outcome.code == "closed":
        return _page(request, form, "capture/hosted.html", {"closed": True}, status=410)
    form_html = embed.render_form(
        form, request, values=outcome.values, errors=outcome.errors, message=outcome.message,
        token=outcome.token, shown=outcome.shown, page_url=visit.page_url, referrer=visit.referrer,
        anonymous_id=visit.anonymous_id, count=False)
    response = _page(request, form, "capture/hosted.html", {"form_html": form_html}, status=outcome.status)
    if outcome.status == 429:
        response["Retry-After"] = str(spam.retry_after())
    return response


@require_http_methods(["GET", "HEAD"])
def thanks(request: HttpRequest, slug: str) -> HttpResponse:
    form = get_object_or_404(Form, slug=slug)
    message = form.definition.get("thank_you", {}).get("message", "")
    return _page(request, form, "capture/thanks.html", {"message": message,
                                                         "double_opt_in": bool(form.definition.get("double_opt_in"))})


@csrf_exempt  # the signed link is the credential, as for the unsubscribe page
@require_http_methods(["GET", "POST"])
def confirm(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """A GET only shows the button (link scanners follow links); the POST confirms."""
    form = get_object_or_404(Form, slug=slug)
    state, status = "ask", 200
    try:
        submission_id = tokens.read_confirmation(token)
    except tokens.TokenError as exc:
        state, status = exc.code, 400
    else:
        submission = Submission.objects.filter(pk=submission_id, form=form).first()
        if submission is None:
            state, status = "bad_token", 400
        elif request.method == "POST":
            state = processing.confirm(submission, submitting.stored_ip(client_ip(request.META)))
            if state == "confirmed":
                submission.refresh_from_db(fields=["status"])
                state = "recorded" if submission.status == Submission.Status.PROCESSED else "confirmed"
        elif submission.confirmed_at:
            state = "done"
    return _page(request, form, "capture/confirm.html", {"state": state}, status=status)

