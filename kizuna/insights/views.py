"""Insights pages: the dashboard and the reports. Each page builds its charts (kizuna/insights/charts.py)
from reports.py; the same URL with ?format=csv|svg&chart=<key> downloads one of them."""

from __future__ import annotations

from typing import Any

from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext

from kizuna.accounts.permissions import capability_required
from kizuna.contacts.models import LifecycleStage
from kizuna.events import queries
from kizuna.insights import periods, reports
from kizuna.insights.charts import Chart, respond
from kizuna.insights.rollups import start_of

TABS = [("insights:dashboard", gettext_lazy("Dashboard")), ("insights:funnel", gettext_lazy("Funnel")),
        ("insights:web", gettext_lazy("Web")), ("insights:email", gettext_lazy("Email and journeys")),
        ("insights:conversion", gettext_lazy("Path to conversion")),
        ("insights:attribution", gettext_lazy("Attribution")), ("insights:retention", gettext_lazy("Retention"))]


def _period(request, default_days: int = 30):
    period, compare, errors = periods.parse(request.GET, default_days)
    return period, compare, errors


def _page(request, template: str, charts: list[Chart], context: dict[str, Any], errors: list[str]):
    download = respond(request, charts)
    if download is not None:
        return download
    return render(request, template, {"charts": {c.key: c for c in charts}, "chart_list": charts,
                                      "errors": errors, "tabs": TABS, **context})


def _int(request, name: str, default: int, low: int, high: int, errors: list[str]) -> int:
    text = request.GET.get(name, "").strip()
    if not text:
        return default
    if not text.isdecimal() or not low <= int(text) <= high:
        errors.append(_("%(field)s must be a whole number from %(low)d to %(high)d, not “%(value)s”.")
                      % {"field": name, "low": low, "high": high, "value": text[:20]})
        return default
    return int(text)


def _goal(request, errors: list[str]) -> tuple[str, str, str]:
    """(stage, event, the goal's value for the form) from ?goal=stage:<key> or ?goal=event:<name>."""
    goal = request.GET.get("goal", "").strip() or "stage:customer"
    kind, _sep, value = goal.partition(":")
    if kind == "stage" and value in LifecycleStage.values:
        return value, "", goal
    if kind == "event":
        value = request.GET.get("event_name", "").strip() or value
    if kind == "event" and value.strip() and len(value) <= 200:
        return "", value.strip(), goal
    errors.append(_("Choose a conversion: a lifecycle stage, or a tracked event's name (at most 200 characters)."))
    return "customer", "", "stage:customer"


def _goal_context(goal: str) -> dict[str, Any]:
    return {"goal": goal, "goal_stages": [(f"stage:{s.value}", s.label) for s in LifecycleStage
                                          if s != LifecycleStage.OTHER],
            "goal_event": goal[6:] if goal.startswith("event:") else ""}


@capability_required("contacts.view")
def dashboard(request):
    period, compare, errors = _period(request)
    funnel = reports.funnel(period, compare)
    stages = funnel["rows"]
    trend_cols, trend_rows = reports.funnel_trend(period)
    email_cols, email_rows = reports.email_trend(period)
    top = reports.pages(period, limit=10)
    previous = period.previous()
    kpis = []
    for label, fn in ((_("New contacts"), reports.new_contacts_total), (_("Visits"), reports.sessions_total),
                      (_("Page views"), reports.page_views_total)):
        now = fn(period)
        before = fn(previous) if compare else None
        kpis.append({"label": label, "value": now, "previous": before,
                     "change": periods.change(now, before) if compare else None})
    charts = [
        Chart("funnel", _("Entered each stage"), [_("Stage"), _("Entered"), _("Previous period")],
              [[r["label"], r["entered"], r["previous"]] for r in stages], series=[1, 2] if compare else [1]),
        Chart("funnel-trend", _("Funnel over time"), trend_cols, trend_rows, kind="lines",
              series=list(range(1, len(trend_cols)))),
        Chart("new-by-source", _("New contacts by source"), [_("Source"), _("Contacts")],
              reports.new_contacts(period)),
        Chart("email-trend", _("Email performance"), email_cols, email_rows, kind="lines", series=[1, 2, 3, 4]),
        Chart("top-pages", _("Top pages"), [_("Page"), _("Views"), _("Average visible time (s)")],
              [[r["path"], r["views"], r["avg_dwell"]] for r in top]),
    ]
    return _page(request, "insights/dashboard.html", charts, {
        "period": period, "compare": compare, "previous": previous, "kpis": kpis, "funnel": funnel,
        "hot": reports.hot_leads(),
    }, errors)


@capability_required("contacts.view")
def funnel(request):
    if "days" in request.GET and "start" not in request.GET:  # the old lifecycle funnel's ?days=N
        days = request.GET["days"]
        if days.isdecimal() and 1 <= int(days) <= periods.MAX_DAYS:
            today = timezone.localdate()
            return redirect(f"{request.path}?start={(today - timezone.timedelta(days=int(days) - 1)).isoformat()}"
                            f"&end={today.isoformat()}")
    period, compare, errors = _period(request, 90)
    data = reports.funnel(period, compare)
    src_cols, src_rows = reports.funnel_by(period, "source")
    camp_cols, camp_rows = reports.funnel_by(period, "campaign")
    trend_cols, trend_rows = reports.funnel_trend(period)
    charts = [
        Chart("funnel", _("Funnel"), [_("Stage"), _("Contacts now"), _("At the start"), _("Entered"), _("Moved on"),
                                      _("Moved on (%)"), _("Next stage ÷ this stage (%)")],
              [[r["label"], r["current"], r["at_start"], r["entered"], r["moved_on"], r["rate"], r["next_rate"]]
               for r in data["rows"]], series=[3]),
        Chart("funnel-trend", _("Funnel over time"), trend_cols, trend_rows, kind="lines",
              series=list(range(1, len(trend_cols)))),
        Chart("funnel-by-source", _("Funnel by source"), src_cols, src_rows, series=[1]),
        Chart("funnel-by-campaign", _("Funnel by first-touch campaign"), camp_cols, camp_rows, series=[1]),
    ]
    return _page(request, "insights/funnel.html", charts,
                 {"period": period, "compare": compare, "previous": period.previous(), "funnel": data, **data}, errors)


@capability_required("tracking.view")
def web(request):
    period, compare, errors = _period(request)
    chosen = request.GET.get("page", "").strip()[:1000]
    top = reports.pages(period)
    entries = reports.pages(period, order="-entries", limit=20, entries__gt=0)
    exits = reports.pages(period, order="-exits", limit=20, exits__gt=0)
    dwell = [r for r in top if r["avg_dwell"] is not None]
    if not chosen and top:
        chosen = top[0]["path"]
    flow = reports.flow(period, chosen) if chosen else {"next": [], "previous": []}
    companies = queries.visiting_companies(start_of(period.start), limit=30)
    charts = [
        Chart("pages", _("Top pages"), [_("Page"), _("Views"), _("Entries"), _("Exits"), _("Exit rate (%)"),
                                        _("Average visible time (s)")],
              [[r["path"], r["views"], r["entries"], r["exits"], r["exit_rate"], r["avg_dwell"]] for r in top]),
        Chart("entry-pages", _("Entry pages"), [_("Page"), _("Entries")], [[r["path"], r["entries"]] for r in entries]),
        Chart("exit-pages", _("Exit pages"), [_("Page"), _("Exits"), _("Exit rate (%)")],
              [[r["path"], r["exits"], r["exit_rate"]] for r in exits]),
        Chart("dwell", _("Average visible time per page (s)"), [_("Page"), _("Seconds"), _("Timed views")],
              sorted(([r["path"], r["avg_dwell"], r["timed"]] for r in dwell), key=lambda r: -r[1])[:20]),
        Chart("sources", _("Visits by source"), [_("Source"), _("Visits"), _("Page views")],
              [[dict(queries.SOURCE_CHOICES).get(r["source_kind"], r["source_kind"] or _("Direct")), r["sessions"],
                r["page_views"]] for r in reports.sessions_by(period, "source_kind", exclude_blank=False)]),
        Chart("referrers", _("Referrers"), [_("Site"), _("Visits")],
              [[r["source_host"], r["sessions"]] for r in reports.sessions_by(period, "source_host")]),
        Chart("keywords", _("Search keywords"), [_("Keyword"), _("Visits")],
              [[r["keyword"], r["sessions"]] for r in reports.sessions_by(period, "keyword")]),
        Chart("campaigns", _("UTM campaigns"), [_("Campaign"), _("Visits"), _("utm_source"), _("utm_medium"),
                                                _("Page views")],
              [[r["utm_campaign"], r["sessions"], r["utm_source"], r["utm_medium"], r["page_views"]]
               for r in reports.campaigns(period)]),
        Chart("next-pages", _("Where visitors went next"), [_("Next page"), _("Visits"), _("Share (%)")],
              [[r["to_path"] or _("(left the site)"), r["n"], r["share"]] for r in flow["next"]]),
        Chart("previous-pages", _("Where visitors came from"), [_("Previous page"), _("Visits")],
              [[r["from_path"], r["n"]] for r in flow["previous"]]),
        Chart("companies", _("Visiting companies"), [_("Company"), _("Visits"), _("Visitors"), _("Page views")],
              [[r["company_name"], r["sessions"], r["visitors"], r["page_views"]] for r in companies]),
    ]
    return _page(request, "insights/web.html", charts, {"period": period, "compare": compare, "chosen": chosen,
                                                        "paths": [r["path"] for r in top]}, errors)


def _email_columns() -> list[str]:
    return [_("Sent"), _("Delivered"), _("Opened (people)"), _("Opened by machines only"), _("Clicked (people)"),
            _("Clicked by machines only"), _("Open rate (%)"), _("Click rate (%)"), _("Unsubscribed"), _("Bounced")]


def _email_values(s: dict[str, Any]) -> list[Any]:
    def pct(v):
        return round(100 * v, 1) if v is not None else None
    return [s["sent"], s["delivered"], s["human_opens"], s["machine_only_opens"], s["human_clicks"],
            s["machine_only_clicks"], pct(s["open_rate"]), pct(s["click_rate"]), s["unsubscribes"],
            s["hard"] + s["soft"]]


@capability_required("email.view")
def email(request):
    period, compare, errors = _period(request)
    trend_cols, trend_rows = reports.email_trend(period)
    charts = [
        Chart("email-trend", _("Email performance"), trend_cols, trend_rows, kind="lines", series=[1, 2, 3, 4]),
        Chart("templates", _("Per email"), [pgettext("channel", "Email"), *_email_columns()],
              [[str(r["template"]), *_email_values(r)] for r in reports.template_reports(period)], series=[3, 1]),
        Chart("bulk-sends", _("Per bulk send"), [_("Bulk send"), *_email_columns()],
              [[r["send"].name, *_email_values(r)] for r in reports.bulk_reports(period)], series=[3, 1]),
        Chart("journey-steps", _("Per journey step"), [_("Journey step"), *_email_columns()],
              [[f"{r['journey']} · {r['step']}", *_email_values(r)] for r in reports.journey_step_reports(period)],
              series=[3, 1]),
    ]
    return _page(request, "insights/email.html", charts, {"period": period, "compare": compare}, errors)


@capability_required("contacts.view")
def conversion(request):
    period, compare, errors = _period(request, 90)
    stage, event, goal = _goal(request, errors)
    days = _int(request, "days", 30, 1, 365, errors)
    min_contacts = _int(request, "min", 2, 1, 10_000, errors)
    data = reports.path_to_conversion(period, stage=stage, event=event, days=days, min_contacts=min_contacts)
    charts = [Chart("lift", _("Pages viewed before converting, by lift"),
                    [_("Page"), _("Lift"), _("Converted contacts who viewed it"), _("Of converted (%)"),
                     _("Of all contacts with page views (%)")],
                    [[r["path"], r["lift"], r["converters"], r["p_converted"], r["p_base"]] for r in data["rows"]])]
    return _page(request, "insights/conversion.html", charts, {
        "period": period, "compare": compare, "days": days, "min": min_contacts, "data": data,
        **_goal_context(goal)}, errors)


@capability_required("contacts.view")
def attribution(request):
    period, compare, errors = _period(request, 90)
    stage, event, goal = _goal(request, errors)
    days = _int(request, "days", 90, 1, 365, errors)
    data = reports.attribution(period, stage=stage, event=event, days=days)
    cols = [_("First touch (%)"), _("Last touch (%)"), _("Linear (%)"), _("Position-based 40/20/40 (%)")]
    labels = dict(queries.SOURCE_CHOICES)

    def rows(dim: str, label) -> list[list[Any]]:
        return [[label(r["key"]), r["first"], r["last"], r["linear"], r["position"]] for r in data[dim]]

    charts = [
        Chart("by-channel", _("Credit by source"), [_("Source"), *cols], rows("channel", lambda k: str(labels.get(
            k, _("Direct") if k == "direct" else k))), series=[1, 2, 3, 4]),
        Chart("by-campaign", _("Credit by campaign"), [_("Campaign"), *cols],
              rows("campaign", lambda k: k or _("(no campaign)")), series=[1, 2, 3, 4]),
    ]
    return _page(request, "insights/attribution.html", charts, {
        "period": period, "compare": compare, "days": days, "data": data, **_goal_context(goal)}, errors)


@capability_required("contacts.view")
def retention(request):
    period, compare, errors = _period(request, 365)
    renewal = request.GET.get("renewal", "").strip()[:200] or "Renewed"
    churn = request.GET.get("churn", "").strip()[:200] or "Churned"
    early = _int(request, "early", 30, 1, 365, errors)
    data = reports.retention(period, renewal=renewal, churn=churn, early_days=early)
    top = [r["name"] for r in reports.usage(period, limit=5)]
    usage_cols, usage_rows = reports.usage_trend(period, top)
    charts = [
        Chart("cohorts", _("New customers by month"), [_("Month"), _("New customers"), _("Renewed"), _("Churned"),
                                                       _("Renewal rate (%)"), _("Churn rate (%)")],
              [[r["month"], r["customers"], r["renewed"], r["churned"], r["renewal_rate"], r["churn_rate"]]
               for r in data["cohorts"]], series=[1, 2, 3]),
        Chart("usage", _("Product usage events"), usage_cols, usage_rows, kind="lines",
              series=list(range(1, len(usage_cols)))),
        Chart("behaviours", _("Early behaviours and renewal"),
              [_("Event in the first days"), _("Lift"), _("Customers who did it"), _("Their renewal rate (%)"),
               _("Renewal rate of the others (%)")],
              [[r["name"], r["lift"], r["contacts"], r["renewal_rate"], r["others_rate"]] for r in data["behaviours"]]),
    ]
    return _page(request, "insights/retention.html", charts, {
        "period": period, "compare": compare, "data": data, "renewal": renewal, "churn": churn,
        "early": early}, errors)


