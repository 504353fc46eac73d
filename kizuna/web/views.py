from django.db.models import Count
from django.shortcuts import render
from django.utils import timezone

from kizuna.accounts.permissions import capability_required
from kizuna.contacts.models import Company, Contact, ImportJob, LifecycleStage


@capability_required("contacts.view")
def home(request):
    """The overview: audience size, growth this week, the stage breakdown, recent imports."""
    week_ago = timezone.now() - timezone.timedelta(days=7)
    by_stage = dict(Contact.objects.order_by().values_list("lifecycle_stage").annotate(n=Count("id")))
    stages = [(s.label, by_stage.get(s.value, 0)) for s in LifecycleStage]
    context = {
        "contact_count": Contact.objects.count(),
        "company_count": Company.objects.count(),
        "new_this_week": Contact.objects.filter(created_at__gte=week_ago).count(),
        "stages": stages,
        "recent_contacts": Contact.objects.select_related("company").order_by("-created_at", "-id")[:8],
        "recent_imports": ImportJob.objects.order_by("-created_at")[:5],
    }
    return render(request, "web/home.html", context)


def health(request):
    """For load balancers and monitoring: database reachable, event processing lag.

    503 when the database is down or processing is more than KIZUNA_HEALTH_MAX_LAG seconds behind.
    """
    from django.conf import settings
    from django.http import JsonResponse

    from kizuna.events.processing import lag

    try:
        events = lag()
    except Exception as exc:  # noqa: BLE001 - the answer must be JSON, whatever failed
        return JsonResponse({"status": "error", "database": f"{type(exc).__name__}"}, status=503)
    limit = getattr(settings, "KIZUNA_HEALTH_MAX_LAG", 300)
    healthy = events["lag_seconds"] <= limit
    body = {"status": "ok" if healthy else "lagging", "database": "ok", "events": events}
    return JsonResponse(body, status=200 if healthy else 503)
