"""Landing page screens (list, editor, results) and the public page at /p/<slug>.

The work is in services.py; the editor's blocks are checked by blocks.py."""

from __future__ import annotations

import json
import re
import uuid

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.csp import CSP
from django.utils.translation import gettext as _
from django.views.decorators.csp import csp_override
from django.views.decorators.http import require_POST

from kizuna.accounts.permissions import capability_required
from kizuna.accounts.roles import can
from kizuna.landing import services
from kizuna.landing.blocks import BlocksError
from kizuna.landing.forms import LandingPageForm
from kizuna.landing.models import LandingPage

AID_COOKIE = "_kz_aid"  # the tracker's own cookie: the page and the tracker agree on the browser
AID_RE = re.compile(r"[A-Za-z0-9-]{8,100}")
AID_MAX_AGE = 63072000  # two years, as the tracker keeps it


@capability_required("capture.view")
def page_list(request):
    pages = list(LandingPage.objects.order_by("name"))
    stats = services.stats([p.pk for p in pages])
    for page in pages:
        page.variant_stats = stats.get(page.pk, [])
        page.total = services.total(page.variant_stats)
    return render(request, "landing/page_list.html", {"pages": pages})


def _forms_available() -> list[dict]:
    try:
        from kizuna.capture.models import Form
    except ImportError:
        return []
    return [{"id": f.pk, "name": f.name} for f in Form.objects.order_by("name")]


def _editor(request, page: LandingPage | None):
    initial = {"variants": json.dumps([{"key": v.key, "weight": v.weight, "blocks": v.blocks}
                                       for v in page.variants.all()], ensure_ascii=False, indent=2)} if page else {
        "language": request.LANGUAGE_CODE if request.LANGUAGE_CODE in ("ja", "en") else "ja"}
    form = LandingPageForm(request.POST or None, instance=page or LandingPage(), initial=initial)
    block_errors: list[tuple[str, str]] = []
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.save(form.instance, form.cleaned_data["variants"], actor=request.user)
        except BlocksError as exc:
            block_errors = exc.errors
        else:
            messages.success(request, _("Landing page %(name)s saved.") % {"name": saved.name})
            return redirect("landing:detail", pk=saved.pk)
    return render(request, "landing/page_form.html", {
        "page": page, "form": form, "block_errors": block_errors, "forms_available": _forms_available(),
    }, status=400 if request.method == "POST" else 200)


@capability_required("capture.manage")
def page_create(request):
    return _editor(request, None)


@capability_required("capture.manage")
def page_edit(request, pk: int):
    return _editor(request, get_object_or_404(LandingPage, pk=pk))


@capability_required("capture.view")
def page_detail(request, pk: int):
    page = get_object_or_404(LandingPage, pk=pk)
    variants = services.stats([page.pk]).get(page.pk, [])
    control = variants[0] if variants else None
    for v in variants[1:]:
        v.comparison = services.compare(control, v)
    return render(request, "landing/page_detail.html", {
        "page": page, "variants": variants, "total": services.total(variants),
        "public_url": request.build_absolute_uri(page.path),
    })


@require_POST
@capability_required("capture.manage")
def page_publish(request, pk: int):
    page = get_object_or_404(LandingPage, pk=pk)
    publish = request.POST.get("publish") == "1"
    if publish and not page.variants.exists():
        messages.error(request, _("Add content before publishing."))
    else:
        services.set_published(page, publish, actor=request.user)
        messages.success(request, _("Published at %(path)s.") % {"path": page.path} if publish
                         else _("The page is a draft again; its address answers 404."))
    return redirect("landing:detail", pk=page.pk)


@require_POST
@capability_required("capture.manage")
def page_delete(request, pk: int):
    page = get_object_or_404(LandingPage, pk=pk)
    name = page.name
    page.delete()
    messages.success(request, _("Landing page %(name)s deleted.") % {"name": name})
    return redirect("landing:list")


# --- the public page ----------------------------------------------------------------------------

def _render_blocks(request, page: LandingPage, variant, contact, aid: str) -> list[dict]:
    name = services.greeting_name(contact, page.language)
    out = []
    for block in variant.blocks:
        item = dict(block)
        if block["type"] == "greeting":
            if name:
                before, _sep, after = block["known"].partition("{name}")
                item.update(known_parts=(before, name, after))
            elif not block.get("anonymous"):
                continue
        elif block["type"] == "text":
            item["paragraphs"] = [p.strip() for p in re.split(r"\n\s*\n", block["text"]) if p.strip()]
        elif block["type"] == "form":
            html = _form_html(request, block["form"], page, variant, aid)
            if html is None:
                continue
            item["html"] = html
        out.append(item)
    return out


def _form_html(request, form_id: int, page: LandingPage, variant, aid: str):
    try:
        from kizuna.capture.embed import render_form
        from kizuna.capture.models import Form
    except ImportError:
        return None
    form = Form.objects.filter(pk=form_id).first()
    if form is None:
        return None
    # The browser id the page chose (new browsers have no cookie yet), so the submission joins
    # the page view this page is about to send.
    return render_form(form, request, context={"landing_page": page.slug, "variant": variant.key}, anonymous_id=aid)


@csp_override({
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:", "https:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
})
def public_page(request, slug: str):
    """A published page; staff may preview drafts and any variant (?variant=B) without counting."""
    page = get_object_or_404(LandingPage, slug=slug)
    preview = can(request.user, "capture.view") and (page.status != LandingPage.Status.PUBLISHED
                                                      or "variant" in request.GET or "preview" in request.GET)
    if page.status != LandingPage.Status.PUBLISHED and not preview:
        raise Http404
    variants = list(page.variants.all())
    if not variants:
        raise Http404
    aid = request.COOKIES.get(AID_COOKIE, "")
    new_browser = not AID_RE.fullmatch(aid)
    if new_browser:
        aid = str(uuid.uuid4())
    variant = services.choose_variant(page, variants, aid)
    if preview and request.GET.get("variant"):
        variant = next((v for v in variants if v.key == request.GET["variant"]), variant)
    contact = services.known_contact(aid)
    key = services.write_key()
    response = render(request, "landing/public_page.html", {
        "page": page, "variant": variant, "blocks": _render_blocks(request, page, variant, contact, aid),
        "preview": preview, "track": {"landing_page": page.slug, "variant": variant.key},
        "tracker_src": f"/kz.js?k={key.key}",
    })
    if new_browser and not preview:
        response.set_cookie(AID_COOKIE, aid, max_age=AID_MAX_AGE, samesite="Lax", secure=request.is_secure())
    return response
