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
    """The older name of /readyz, kept for load balancers already pointed at it."""
    from kizuna.web.observability import readyz

    return readyz(request)
