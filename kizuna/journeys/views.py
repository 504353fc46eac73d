"""Journey pages: the list, the builder (the flow as a diagram, edited in place, with live
numbers per step), status changes, the enrollments of a journey, and the inspector of one
contact's runs in every journey (also a panel on the contact page, with enrolling by hand).
The work is in services.py and stats.py; these views only read the request and render."""

from __future__ import annotations

import datetime as dt
import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.accounts.permissions import capability_required
from kizuna.accounts.roles import can
from kizuna.contacts.models import Contact
from kizuna.contacts.panels import register_contact_panel
from kizuna.journeys import engine, services, stats
from kizuna.journeys.forms import JourneyForm
from kizuna.journeys.graph import GraphError
from kizuna.journeys.models import Enrollment, Journey
from kizuna.segments.describe import Names, describe

ENROLLMENTS_PER_PAGE = 50
PANEL_RUNS = 10
STATS_EVERY_MS = 5000
NEW_GRAPH = {"trigger": {"type": "manual"}, "start": None, "nodes": []}


@capability_required("journeys.view")
def journey_list(request):
    rows = services.journey_rows(Journey.objects.order_by("name"))
    return render(request, "journeys/journey_list.html", {"rows": rows})


def _json_or(raw: str, fallback):
    try:
        return json.loads(raw) if raw and raw.strip() else fallback
    except json.JSONDecodeError:
        return fallback


def _words(tree, names: Names):
    """A saved exit or goal condition in words (None when there is none or it cannot be read)."""
    if not tree:
        return None
    try:
        return describe(tree, names)
    except (KeyError, TypeError, AttributeError):
        return None


def _builder(request, journey: Journey | None):
    """The journey page. GET shows it; POST (journeys.manage) saves the settings and the graph,
    or shows every fault on the step or field at fault with everything typed kept."""
    readonly = not can(request.user, "journeys.manage")
    current = journey.current if journey is not None and journey.current_id else None
    graph = current.graph if current else NEW_GRAPH
    initial = {"entry": Journey.Entry.ONCE, "exit_filter": "", "goal_filter": "", "graph": json.dumps(graph)}
    if journey is not None:
        initial.update(name=journey.name, description=journey.description, entry=journey.entry,
                       reentry_days=journey.reentry_days, base_version=current.number if current else None,
                       exit_filter=json.dumps(journey.exit_filter) if journey.exit_filter else "",
                       goal_filter=json.dumps(journey.goal_filter) if journey.goal_filter else "")
    form = JourneyForm(request.POST or None, initial=initial)
    errors: list[dict] = []
    open_steps: list[str] = []
    status = 200
    if request.method == "POST":
        graph = _json_or(request.POST.get("graph", ""), graph)
        open_steps = [s for s in request.POST.get("open_steps", "").split(",") if s]
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            settings = services.Settings(name=data["name"], description=data["description"], entry=data["entry"],
                                         reentry_days=data["reentry_days"], exit_filter=data["exit_filter"],
                                         goal_filter=data["goal_filter"])
            try:
                saved, version = services.save(request.user, journey, settings, data["graph"],
                                               base_version=data["base_version"])
            except services.JourneyError as exc:
                for key, message in exc.errors.items():
                    form.add_error(key if key in form.fields and key != "base_version" else None, message)
            except GraphError as exc:
                errors = services.place_errors(data["graph"], exc.errors)
            else:
                if version is None:
                    messages.success(request, _("%(name)s saved (settings only; the steps are unchanged, still "
                                                "version %(n)s).") % {"name": saved.name, "n": saved.current.number})
                else:
                    messages.success(request, _("%(name)s saved as version %(n)s.") % {"name": saved.name,
                                                                                       "n": version.number})
                return redirect("journeys:detail", pk=saved.pk)
    problems = engine.problems(journey) if journey is not None else []
    if request.method == "GET":
        errors = services.place_errors(graph, problems)
    names = Names.load()
    page_stats = stats.shared_journey_stats(journey) if journey is not None else None
    schema = services.builder_schema(journey, readonly=readonly)
    schema.update(open=open_steps, countUrl=reverse("api:segment_count"), statsEvery=STATS_EVERY_MS,
                  statsUrl=reverse("journeys:stats", args=[journey.pk]) if journey else None)
    return render(request, "journeys/journey_builder.html", {
        "journey": journey, "current": current, "form": form, "readonly": readonly,
        "graph": graph, "errors": errors, "problems": problems, "schema": schema, "stats": page_stats,
        "status_actions": _status_actions(journey) if journey is not None and not readonly else [],
        "exit_words": _words(journey.exit_filter, names) if journey else None,
        "goal_words": _words(journey.goal_filter, names) if journey else None,
        "versions": _versions(page_stats),
    }, status=status)


def _versions(page_stats: dict | None) -> list[dict]:
    if not page_stats:
        return []
    return [{**v, "created_at": dt.datetime.fromisoformat(v["created_at"])} for v in page_stats["versions"]]


def _status_actions(journey: Journey) -> list[dict]:
    """The status buttons the page offers now, each with the question it asks first."""
    number = journey.current.number if journey.current_id else 0
    go_live = (_("Go live with version %(n)s? Its trigger starts enrolling contacts from now on.") % {"n": number}
               if journey.status == Journey.Status.DRAFT else
               _("Resume? Waiting contacts continue, and the trigger enrolls again."))
    labels = {
        Journey.Status.LIVE: (_("Go live") if journey.status == Journey.Status.DRAFT else _("Resume"), go_live),
        Journey.Status.PAUSED: (_("Pause"), _("Pause? Every contact stays where it is until you resume; "
                                              "the trigger enrolls no one meanwhile.")),
        Journey.Status.ARCHIVED: (_("Archive"), _("Archive? Every contact still in it leaves it now; this cannot be "
                                                  "undone for them.")),
        Journey.Status.DRAFT: (_("Back to draft"), _("Make it a draft again? Nothing runs until it goes live.")),
    }
    return [{"status": status, "label": labels[status][0], "confirm": labels[status][1],
             "danger": status == Journey.Status.ARCHIVED}
            for status in services.STATUS_CHANGES.get(journey.status, [])]


@capability_required("journeys.manage")
def journey_create(request):
    return _builder(request, None)


@capability_required("journeys.view")
def journey_detail(request, pk: int):
    journey = get_object_or_404(Journey.objects.select_related("current"), pk=pk)
    if request.method == "POST" and not can(request.user, "journeys.manage"):
        raise PermissionDenied(_("Your role does not allow this (%(cap)s).") % {"cap": "journeys.manage"})
    return _builder(request, journey)


@require_POST
@capability_required("journeys.manage")
def journey_status(request, pk: int):
    journey = get_object_or_404(Journey.objects.select_related("current"), pk=pk)
    status = request.POST.get("status", "")
    try:
        services.change_status(request.user, journey, status)
    except services.JourneyError as exc:
        messages.error(request, " ".join(exc.errors.values()))
    except ValueError as exc:  # engine.set_status refusing
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(name)s is now %(status)s.") % {
            "name": journey.name, "status": Journey.Status(journey.status).label})
    return redirect("journeys:detail", pk=pk)


@capability_required("journeys.view")
def journey_stats(request, pk: int):
    """The builder's live numbers (polled every few seconds)."""
    journey = get_object_or_404(Journey, pk=pk)
    return JsonResponse(stats.shared_journey_stats(journey))


@capability_required("journeys.view")
def enrollment_list(request, pk: int):
    journey = get_object_or_404(Journey.objects.select_related("current"), pk=pk)
    state, node, q = request.GET.get("state", ""), request.GET.get("node", ""), request.GET.get("q", "")
    page = Paginator(services.enrollments(journey, state=state, node=node, q=q),
                     ENROLLMENTS_PER_PAGE).get_page(request.GET.get("page"))
    names = Names.load()
    journey_names = dict(Journey.objects.values_list("id", "name"))
    rows = [{"e": e, "title": services.node_title(e.version.node(e.node), names, journey_names) if e.node else "",
             "state": services.STATE_LABELS.get(e.state, e.state), "open": e.state in services.OPEN_STATES,
             "reason": services.REASONS.get(e.reason, e.reason)} for e in page]
    nodes = [(n["id"], services.node_title(n, names, journey_names))
             for n in (journey.current.graph["nodes"] if journey.current_id else [])]
    counts = stats.list_counts([journey.pk]).get(journey.pk, {})
    return render(request, "journeys/enrollment_list.html", {
        "journey": journey, "page": page, "rows": rows, "state": state, "node": node, "q": q, "nodes": nodes,
        "states": [(k, v) for k, v in services.STATE_LABELS.items()],
        "state_counts": [(k, v, counts.get(k, 0)) for k, v in services.STATE_LABELS.items()],
    })


@capability_required("journeys.view")
def contact_inspector(request, contact_id: int):
    contact = get_object_or_404(Contact, pk=contact_id)
    wanted = request.GET.get("journey", "")
    journey = Journey.objects.filter(pk=wanted).first() if wanted.isdigit() else None
    return render(request, "journeys/inspector.html", {
        "contact": contact, "runs": services.contact_runs(contact, journey=journey), "only": journey,
        "live": services.live_journeys() if can(request.user, "journeys.manage") else [],
    })


@require_POST
@capability_required("journeys.manage")
def contact_enroll(request, contact_id: int):
    contact = get_object_or_404(Contact, pk=contact_id)
    journey = Journey.objects.filter(pk=request.POST.get("journey") or 0).select_related("current").first()
    if journey is None:
        messages.error(request, _("Choose a live journey."))
    else:
        try:
            e = services.enroll_by_hand(request.user, journey, contact)
        except services.JourneyError as exc:
            messages.error(request, " ".join(exc.errors.values()))
        else:
            messages.success(request, _("%(contact)s enrolled in %(journey)s (run %(run)s).") % {
                "contact": contact.full_name or contact.email, "journey": journey.name, "run": e.run})
    back = request.POST.get("next", "")
    if back == "inspector":
        return redirect("journeys:inspector", contact_id=contact.pk)
    return redirect("contacts:detail", pk=contact.pk)


def journeys_panel(request, contact: Contact) -> dict:
    """The contact page's Journeys section: the latest runs, and enrolling by hand."""
    if not can(request.user, "journeys.view"):
        return {"hidden": True}
    names = Names.load()
    journey_names = dict(Journey.objects.values_list("id", "name"))
    runs = list(Enrollment.objects.filter(contact=contact).select_related("journey", "version")
                .order_by("-entered_at", "-id")[:PANEL_RUNS])
    rows = [{"e": e, "title": services.node_title(e.version.node(e.node), names, journey_names) if e.node else "",
             "state": services.STATE_LABELS.get(e.state, e.state), "open": e.state in services.OPEN_STATES}
            for e in runs]
    return {"rows": rows, "can_manage": can(request.user, "journeys.manage"),
            "live": list(services.live_journeys()) if can(request.user, "journeys.manage") else []}


def register_panels() -> None:
    register_contact_panel(45, "journeys/_contact_panel.html", journeys_panel)
