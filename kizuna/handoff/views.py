"""The hand-off settings page (owners, routes, webhooks) and the log of notices sent."""

from __future__ import annotations

import secrets

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts import audit
from kizuna.accounts.permissions import capability_required
from kizuna.handoff import delivery
from kizuna.handoff.forms import HandoffSettingsForm, SalesRouteForm, WebhookForm
from kizuna.handoff.models import Delivery, HandoffSettings, SalesRoute, Webhook


@capability_required("scoring.manage")
def settings_page(request):
    config = HandoffSettings.current()
    settings_form = HandoffSettingsForm(instance=config, prefix="s")
    route_form = SalesRouteForm(prefix="r")
    webhook_form = WebhookForm(prefix="w")
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "settings":
            settings_form = HandoffSettingsForm(request.POST, instance=config, prefix="s")
            if settings_form.is_valid():
                audit.record(request.user, "update", settings_form.save())
                messages.success(request, _("Hand-off settings saved."))
                return redirect("handoff:settings")
        elif action == "route":
            route_form = SalesRouteForm(request.POST, prefix="r")
            if route_form.is_valid():
                route = route_form.save(commit=False)
                route.values = route_form.cleaned_data["values"]
                route.position = SalesRoute.objects.count()
                route.save()
                route_form.save_m2m()
                audit.record(request.user, "create", route)
                return redirect("handoff:settings")
        elif action == "webhook":
            webhook_form = WebhookForm(request.POST, prefix="w")
            if webhook_form.is_valid():
                hook = webhook_form.save(commit=False)
                hook.secret = "whsec_" + secrets.token_urlsafe(24)
                hook.save()
                audit.record(request.user, "create", hook)
                messages.success(request, _("Webhook added. Its signing secret: %(secret)s") % {"secret": hook.secret})
                return redirect("handoff:settings")
    return render(request, "handoff/settings.html", {
        "settings_form": settings_form, "route_form": route_form, "webhook_form": webhook_form,
        "routes": SalesRoute.objects.prefetch_related("members"),
        "webhooks": Webhook.objects.all(),
        "deliveries": Delivery.objects.filter(alert__isnull=False).select_related("webhook", "alert__contact")[:50],
    })


@require_POST
@capability_required("scoring.manage")
def route_delete(request, pk: int):
    route = get_object_or_404(SalesRoute, pk=pk)
    audit.record(request.user, "delete", route)
    route.delete()
    return redirect("handoff:settings")


@require_POST
@capability_required("scoring.manage")
def webhook_toggle(request, pk: int):
    hook = get_object_or_404(Webhook, pk=pk)
    if request.POST.get("delete"):
        audit.record(request.user, "delete", hook)
        hook.delete()
    else:
        hook.active = not hook.active
        hook.save(update_fields=["active"])
        audit.record(request.user, "update", hook)
    return redirect("handoff:settings")


@require_POST
@capability_required("scoring.manage")
def webhook_test(request, pk: int):
    """Posts a sample notice now, so a wrong URL or secret shows up before a real lead."""
    hook = get_object_or_404(Webhook, pk=pk)
    facts = delivery.sample_facts()
    try:
        status = delivery.post_webhook(hook, 0, delivery.PAYLOADS[hook.kind](facts))
    except delivery.DeliveryError as exc:
        messages.error(request, _("The test notice failed: %(error)s") % {"error": exc})
    else:
        messages.success(request, _("The test notice was accepted (HTTP %(status)s).") % {"status": status})
    return redirect("handoff:settings")


@require_POST
@capability_required("scoring.manage")
def delivery_retry(request, pk: int):
    delivery.retry(get_object_or_404(Delivery, pk=pk))
    messages.success(request, _("The notice will be sent again shortly."))
    return redirect("handoff:settings")
