"""What a recipient or visitor reaches without logging in: personal and public download links.

`/d/<token>`: a genuine, current token downloads (GET is recorded, HEAD only answers headers, so
link checkers count nothing); an expired one shows a page that can send a fresh link to the same
contact (rate-limited); anything forged or tampered with is refused with 400; a link to a deleted
asset or contact answers 404. `/d/p/<key>`: the public link of a public asset.
"""

from __future__ import annotations

import hashlib
import logging

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from kizuna.assets import delivery, downloads, links
from kizuna.assets.models import Asset
from kizuna.contacts.models import Contact
from kizuna.events.http import client_ip

log = logging.getLogger(__name__)
TRACKER_COOKIE = "_kz_aid"  # the anonymous id the tracker keeps (kizuna/events/static/kizuna/tracker.js)
RESENDS_PER_IP_HOUR = 10
_PURPOSE_HEADERS = ("accept", "via", "purpose", "x-purpose", "sec-purpose", "x-moz", "from")


def _hit(request: HttpRequest, anonymous_id: str = "") -> downloads.Hit:
    headers = {h: request.META.get("HTTP_" + h.upper().replace("-", "_"), "") for h in _PURPOSE_HEADERS}
    return downloads.Hit(method=request.method or "GET", ip=client_ip(request.META),
                         user_agent=request.META.get("HTTP_USER_AGENT", "")[:500], at=timezone.now(),
                         headers={k: v for k, v in headers.items() if v}, anonymous_id=anonymous_id)


def _page(request: HttpRequest, state: str, status: int, **context) -> HttpResponse:
    response = render(request, "assets/link_page.html", {"state": state, **context}, status=status)
    response["Cache-Control"] = "no-store, private"
    # Referrer-Policy stays same-origin (the site's): with no-referrer, Chrome sends `Origin: null`
    # on the re-send form's POST and the CSRF check refuses it.
    response["X-Robots-Tag"] = "noindex"
    return response


def _serve(request: HttpRequest, asset: Asset, **record) -> HttpResponse:
    try:
        response = downloads.file_response(asset, head=request.method == "HEAD")
    except FileNotFoundError:
        log.error("asset %s: its file %s is missing from the data directory", asset.pk, asset.storage_name)
        return _page(request, "missing", 404)
    if request.method == "GET":
        downloads.record(asset, _hit(request, record.pop("anonymous_id", "")), **record)
    return response


def masked(email: str) -> str:
    """t•••@example.co.jp: enough for the owner to recognise, little for whoever holds the link."""
    local, _at, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}" if domain else "•••"


@require_http_methods(["GET", "HEAD", "POST"])
def download(request: HttpRequest, token: str) -> HttpResponse:
    try:
        claims = links.read_token(token)
    except links.LinkInvalid:
        return _page(request, "invalid", 400)
    asset = Asset.objects.filter(pk=claims.asset_id).first()
    contact = Contact.objects.filter(pk=claims.contact_id).first()
    if asset is None or contact is None:
        return _page(request, "gone", 404)
    if not claims.expired():
        if request.method == "POST":
            return redirect(request.path)
        return _serve(request, asset, contact=contact, message_id=claims.message_id)
    context = {"asset": asset, "expired_at": claims.expires_at, "email": masked(contact.email or "")}
    if request.method != "POST":
        return _page(request, "expired", 410, **context)
    return _resend(request, asset, contact, context)


def _resend(request: HttpRequest, asset: Asset, contact: Contact, context: dict) -> HttpResponse:
    """A fresh link to the contact the expired one was made for: at most one mail per asset and
    contact an hour (the outbox key holds the hour), and a few requests per IP address an hour."""
    ip_key = "asset-resend:" + hashlib.sha256(client_ip(request.META).encode()).hexdigest()[:32]
    cache.add(ip_key, 0, 3600)
    try:
        requests = cache.incr(ip_key)
    except ValueError:
        cache.set(ip_key, 1, 3600)
        requests = 1
    if requests > RESENDS_PER_IP_HOUR:
        return _page(request, "limited", 429, **context)
    hour = timezone.now().strftime("%Y%m%d%H")
    try:
        _message, created = delivery.queue(asset, contact, key=f"resend:{asset.pk}:{contact.pk}:{hour}")
    except delivery.DeliveryError as exc:
        log.warning("asset %s: a fresh link for contact %s could not be queued: %s", asset.pk, contact.pk, exc)
        return _page(request, "failed", 503, **context)
    return _page(request, "resent" if created else "already_sent", 200 if created else 429, **context)


@require_http_methods(["GET", "HEAD"])
def public_download(request: HttpRequest, key: str) -> HttpResponse:
    asset = Asset.objects.filter(public_key=key, public=True).first()
    if asset is None:
        return _page(request, "gone", 404)
    anonymous_id = downloads.clean_anonymous_id(request.COOKIES.get(TRACKER_COOKIE, "") or request.GET.get("aid", ""))
    return _serve(request, asset, anonymous_id=anonymous_id)
