"""What recipients reach from a message: the open pixel, click redirects, unsubscribe.

No login, so every URL carries a signed token. A GET never changes consent (link scanners
follow links); the RFC 8058 one-click POST and the preference form's POST do.
"""

from __future__ import annotations

import base64

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from kizuna.contacts.consent import consent_status
from kizuna.contacts.models import ConsentStatus, SubscriptionTopic
from kizuna.events.http import client_ip
from kizuna.messaging import tracking

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_HEADERS = ("accept", "via", "x-forwarded-for", "purpose", "x-purpose", "sec-purpose", "x-moz", "from")


def _req(request: HttpRequest) -> tracking.Request:
    headers = {h: request.META.get("HTTP_" + h.upper().replace("-", "_"), "") for h in _HEADERS}
    return tracking.Request(method=request.method or "GET", ip=client_ip(request.META),
                            user_agent=request.META.get("HTTP_USER_AGENT", ""),
                            headers={k: v for k, v in headers.items() if v}, at=timezone.now())


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store, private"
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    tracking.record_open(token, _req(request))
    return _no_store(HttpResponse(PIXEL, content_type="image/gif"))


@require_http_methods(["GET", "HEAD"])
def click(request: HttpRequest, token: str, position: str) -> HttpResponse:
    req = _req(request)
    if position == "x":
        url = tracking.record_click(token, None, req, signed_url=request.GET.get("u", ""),
                                    mac=request.GET.get("h", ""))
    else:
        url = tracking.record_click(token, int(position), req) if position.isdigit() else None
    if url is None:
        raise Http404("unknown link")
    return _no_store(HttpResponseRedirect(url))


@csrf_exempt  # the signed token is the credential; mail clients post without a session
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    message = tracking.find(token)
    if message is None:
        raise Http404("unknown link")
    ip = client_ip(request.META)
    if request.method == "POST" and request.POST.get("List-Unsubscribe") == "One-Click":
        tracking.unsubscribe(message, method="one-click", ip=ip)
        return _no_store(HttpResponse("unsubscribed\n", content_type="text/plain"))
    topics = list(SubscriptionTopic.objects.order_by("name"))
    contact = message.contact
    done = ""
    if request.method == "POST":
        if request.POST.get("action") == "all":
            tracking.unsubscribe(message, topics=topics, everything=True, method="preference page", ip=ip)
            done = "all"
        else:
            keep = set(request.POST.getlist("topic"))
            leave = [t for t in topics if t.key not in keep]
            tracking.unsubscribe(message, topics=leave, method="preference page", ip=ip)
            if contact is not None:
                from kizuna.contacts.consent import set_consent

                for topic in topics:
                    if topic.key in keep:
                        set_consent(contact, topic, ConsentStatus.OPTED_IN, method="preference page",
                                    source=f"email {message.pk}", ip=ip)
            done = "saved"
    states = []
    for topic in topics:
        status = consent_status(contact, topic) if contact is not None else ConsentStatus.UNKNOWN
        subscribed = status == ConsentStatus.OPTED_IN or (status == ConsentStatus.UNKNOWN and not topic.requires_opt_in)
        states.append({"topic": topic, "subscribed": subscribed, "this": topic.pk == message.topic_id})
    return _no_store(render(request, "messaging/unsubscribe.html", {
        "message": message, "states": states, "done": done, "token": token,
        "everything": bool(contact and contact.do_not_contact),
    }))
