"""The numbers behind every insights page. Reads the daily rollups (kizuna/insights/models.py);
only the per-contact reports (path to conversion, attribution, retention) read raw rows, and
only those of the contacts that converted, through their per-contact indexes."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, F, Min, OuterRef, Q, Sum
from django.db.models.functions import TruncDate, TruncMonth
from django.utils import timezone
from django.utils.translation import gettext as _

from kizuna.contacts.models import Contact, LifecycleStage, Source
from kizuna.events.models import Event, PageView, Session
from kizuna.insights.models import (
    CustomerEvent,
    CustomerFact,
    DailyContacts,
    DailyEvent,
    DailyFlow,
    DailyPage,
    DailySource,
    DailyStage,
    PathReach,
)
from kizuna.insights.periods import Period, change
from kizuna.insights.rollups import ANY_PAGE, start_of
from kizuna.lifecycle.models import Aidma, StageChange, StageSetting
from kizuna.lifecycle.transitions import ORDER, RANK
from kizuna.messaging.models import Message
from kizuna.messaging.reports import counts, derive


def _in(period: Period) -> Q:
    return Q(day__gte=period.start, day__lte=period.end)


def _between(field: str, period: Period) -> Q:
    return Q(**{f"{field}__gte": start_of(period.start), f"{field}__lt": start_of(period.end + timedelta(days=1))})


def stage_label(key: str) -> str:
    return str(LifecycleStage(key).label) if key in LifecycleStage.values else key or "—"


def source_label(key: str) -> str:
    return str(Source(key).label) if key in Source.values else key or "—"


# --- funnel -------------------------------------------------------------------------------------

def funnel_stages() -> list[str]:
    settings = {s.key: s for s in StageSetting.objects.all()}
    return [s.value for s in ORDER if settings.get(s.value) is None or settings[s.value].in_funnel]


def _flows(period: Period) -> dict[str, dict[str, int]]:
    """Per stage, from the transitions rollup in one read: `entered` and `moved` on to a later stage
    within the period; `entered_since` and `left_since` (in any direction) from the period's start
    until now, which give who was in each stage when the period began."""
    flows: dict[str, dict[str, int]] = {k: defaultdict(int) for k in ("entered", "moved", "entered_since",
                                                                     "left_since")}
    rows = (DailyStage.objects.filter(day__gte=period.start).values("from_stage", "to_stage").order_by()
            .annotate(since=Sum("n"), within=Sum("n", filter=Q(day__lte=period.end))))
    for r in rows:
        within, came, went = r["within"] or 0, r["to_stage"], r["from_stage"]
        flows["entered"][came] += within
        flows["entered_since"][came] += r["since"]
        if went:
            flows["left_since"][went] += r["since"]
        if went in RANK and came in RANK and RANK[came] > RANK[went]:
            flows["moved"][went] += within
    return flows


def funnel(period: Period, compare: bool = False) -> dict[str, Any]:
    """Per funnel stage: contacts in it now; in it when the period began (now, less the entries since
    the period's start, plus the departures since); transitions into it in the period; transitions
    out of it to a later stage (moved on), and that as a share of the contacts that were in the stage
    during the period (there at the start or entered), so it never passes 100%; and the ratio of
    entries into the next funnel stage to entries into this one (stage-to-stage conversion)."""
    stages = funnel_stages()
    settings = {s.key: s for s in StageSetting.objects.all()}
    current = dict(Contact.objects.values_list("lifecycle_stage").order_by().annotate(n=Count("id")))
    flows = _flows(period)
    entered, moved = flows["entered"], flows["moved"]
    before = _flows(period.previous())["entered"] if compare else {}
    rows = []
    for i, key in enumerate(stages):
        following = stages[i + 1] if i + 1 < len(stages) else None
        e, m = entered.get(key, 0), moved.get(key, 0)
        at_start = max(0, current.get(key, 0) - flows["entered_since"][key] + flows["left_since"][key])
        # Contacts deleted since, or stages set without a recorded transition, can leave the
        # reconstruction short; those that moved on were certainly in the stage.
        were_in = max(at_start + e, m)
        rows.append({
            "key": key, "label": stage_label(key), "current": current.get(key, 0), "at_start": at_start,
            "entered": e, "aidma": settings[key].get_aidma_display() if key in settings else "",
            "previous": before.get(key, 0) if compare else None,
            "change": change(e, before.get(key, 0)) if compare else None,
            "moved_on": m,
            "rate": round(100 * m / were_in, 1) if were_in and following else None,
            "next_rate": round(100 * entered.get(following, 0) / e, 1) if e and following else None,
        })
    top = max([r["current"] for r in rows] + [1])
    for row in rows:
        row["width"] = round(100 * row["current"] / top, 1)
    phases = []
    for phase in Aidma:
        keys = [k for k, s in settings.items() if s.aidma == phase.value]
        phases.append({"label": phase.label, "stages": [stage_label(k) for k in keys if k in RANK],
                       "current": sum(current.get(k, 0) for k in keys)})
    return {"rows": rows, "phases": phases, "other": current.get(LifecycleStage.OTHER.value, 0)}


def buckets(period: Period) -> tuple[str, list[date]]:
    """Days for up to 92 days, else weeks (Mondays) — so a trend stays readable."""
    if period.days <= 92:
        return "day", period.each_day()
    first = period.start - timedelta(days=period.start.weekday())
    return "week", [first + timedelta(weeks=i) for i in range((period.end - first).days // 7 + 1)]


def _bucket_of(day: date, unit: str) -> date:
    return day - timedelta(days=day.weekday()) if unit == "week" else day


def funnel_trend(period: Period) -> tuple[list[str], list[list[Any]]]:
    stages = funnel_stages()
    unit, days = buckets(period)
    table = {d: dict.fromkeys(stages, 0) for d in days}
    for r in DailyStage.objects.filter(_in(period), to_stage__in=stages).values("day", "to_stage").order_by() \
            .annotate(n=Sum("n")):
        table[_bucket_of(r["day"], unit)][r["to_stage"]] += r["n"]
    return ([_("Week") if unit == "week" else _("Day"), *[stage_label(s) for s in stages]],
            [[d.isoformat(), *[table[d][s] for s in stages]] for d in days])


def funnel_by(period: Period, field: str) -> tuple[list[str], list[list[Any]]]:
    """Entries into each funnel stage by the contact's source or first-touch campaign."""
    stages = funnel_stages()
    table: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(stages, 0))
    for r in DailyStage.objects.filter(_in(period), to_stage__in=stages).values(field, "to_stage").order_by() \
            .annotate(n=Sum("n")):
        table[r[field]][r["to_stage"]] += r["n"]
    label = source_label if field == "source" else (lambda k: k or _("(no campaign)"))
    rows = sorted(([label(k), *[v[s] for s in stages]] for k, v in table.items()), key=lambda r: -sum(r[1:]))
    return [_("Source") if field == "source" else _("Campaign"), *[stage_label(s) for s in stages]], rows


# --- dashboard pieces -----------------------------------------------------------------------------

def new_contacts(period: Period) -> list[list[Any]]:
    rows = DailyContacts.objects.filter(_in(period)).values("source").order_by().annotate(n=Sum("n")).order_by("-n")
    return [[source_label(r["source"]), r["n"]] for r in rows]


def new_contacts_total(period: Period) -> int:
    return DailyContacts.objects.filter(_in(period)).aggregate(n=Sum("n"))["n"] or 0


def hot_leads(limit: int = 10) -> dict[str, Any]:
    from kizuna.scoring.models import ContactScore, ScoringModel

    model = ScoringModel.objects.filter(active=True).first()
    if model is None:
        return {"model": None, "count": 0, "rows": []}
    hot = ContactScore.objects.filter(model=model, hot=True)
    return {"model": model, "count": hot.count(),
            "rows": list(hot.select_related("contact").order_by("-rank_key")[:limit])}


def email_trend(period: Period) -> tuple[list[str], list[list[Any]]]:
    """Per day sent: messages sent, and of them opened and clicked by a person, and opened by a machine only."""
    unit, days = buckets(period)
    table = {d: [0, 0, 0, 0] for d in days}
    rows = (Message.objects.filter(_between("sent_at", period))
            .annotate(d=TruncDate("sent_at", tzinfo=timezone.get_current_timezone())).values("d").order_by()
            .annotate(sent=Count("id"), opened=Count("id", filter=Q(opened_at__isnull=False)),
                      clicked=Count("id", filter=Q(clicked_at__isnull=False)),
                      machine=Count("id", filter=Q(opened_at__isnull=True, machine_opened_at__isnull=False))))
    for r in rows:
        cell = table[_bucket_of(r["d"], unit)]
        for i, k in enumerate(("sent", "opened", "clicked", "machine")):
            cell[i] += r[k]
    return ([_("Week") if unit == "week" else _("Day"), _("Sent"), _("Opened (people)"), _("Clicked (people)"),
             _("Opened by machines only")], [[d.isoformat(), *table[d]] for d in days])


# --- web analytics ----------------------------------------------------------------------------------

def pages(period: Period, order: str = "-views", limit: int = 50, **filters) -> list[dict[str, Any]]:
    rows = (DailyPage.objects.filter(_in(period), **filters).values("path").order_by()
            .annotate(views=Sum("views"), entries=Sum("entries"), exits=Sum("exits"), timed=Sum("timed"),
                      dwell=Sum("dwell_ms")).order_by(order, "path")[:limit])
    out = []
    for r in rows:
        r["avg_dwell"] = round(r["dwell"] / r["timed"] / 1000, 1) if r["timed"] else None
        r["exit_rate"] = round(100 * r["exits"] / r["views"], 1) if r["views"] else None
        out.append(r)
    return out


def page_views_total(period: Period) -> int:
    return DailyPage.objects.filter(_in(period)).aggregate(n=Sum("views"))["n"] or 0


def sessions_by(period: Period, field: str, limit: int = 30, exclude_blank: bool = True) -> list[dict[str, Any]]:
    qs = DailySource.objects.filter(_in(period))
    if exclude_blank:
        qs = qs.exclude(**{field: ""})
    return list(qs.values(field).order_by().annotate(sessions=Sum("sessions"), page_views=Sum("page_views"))
                .order_by("-sessions", field)[:limit])


def sessions_total(period: Period) -> int:
    return DailySource.objects.filter(_in(period)).aggregate(n=Sum("sessions"))["n"] or 0


def campaigns(period: Period, limit: int = 30) -> list[dict[str, Any]]:
    return list(DailySource.objects.filter(_in(period)).exclude(utm_campaign="")
                .values("utm_campaign", "utm_source", "utm_medium").order_by()
                .annotate(sessions=Sum("sessions"), page_views=Sum("page_views"))
                .order_by("-sessions", "utm_campaign")[:limit])


def flow(period: Period, path: str, limit: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Where visitors went after `path` (empty: they left) and where they came to it from."""
    qs = DailyFlow.objects.filter(_in(period))
    after = list(qs.filter(from_path=path).values("to_path").order_by().annotate(n=Sum("n")).order_by("-n")[:limit])
    before = list(qs.filter(to_path=path).values("from_path").order_by().annotate(n=Sum("n"))
                  .order_by("-n")[:limit])
    total = sum(r["n"] for r in after) or 0
    for r in after:
        r["share"] = round(100 * r["n"] / total, 1) if total else None
    return {"next": after, "previous": before}


def usage(period: Period, limit: int = 10) -> list[dict[str, Any]]:
    return list(DailyEvent.objects.filter(_in(period)).values("name").order_by()
                .annotate(n=Sum("n")).order_by("-n", "name")[:limit])


# --- email and journeys ---------------------------------------------------------------------------

def bulk_reports(period: Period, limit: int = 50) -> list[dict[str, Any]]:
    """Bulk sends created in the period, each with messaging's summary (one grouped query for all)."""
    from kizuna.messaging.models import BulkSend

    sends = list(BulkSend.objects.filter(_between("created_at", period)).select_related("template")[:limit])
    grouped = {r.pop("bulk"): r for r in Message.objects.filter(bulk__in=sends).values("bulk").order_by()
               .annotate(**counts())}
    empty = dict.fromkeys(counts(), 0)
    return [{"send": s, **derive(dict(grouped.get(s.pk, empty)))} for s in sends]


def template_reports(period: Period, limit: int = 50) -> list[dict[str, Any]]:
    """Per email template: the summary of its messages sent in the period."""
    from kizuna.messaging.models import EmailTemplate

    rows = list(Message.objects.filter(_between("sent_at", period)).values("version__template").order_by()
                .annotate(**counts()).order_by("-sent")[:limit])
    names = EmailTemplate.objects.in_bulk([r["version__template"] for r in rows])
    return [{"template": names.get(r.pop("version__template")), **derive(r)} for r in rows]


def journey_step_reports(period: Period, limit: int = 100) -> list[dict[str, Any]]:
    """Per journey step that sends email: the summary of its messages sent in the period."""
    from kizuna.journeys.models import Journey

    rows = list(Message.objects.filter(_between("sent_at", period)).exclude(extra__journey=None)
                .values("extra__journey", "extra__step").order_by().annotate(**counts())[:limit])
    names = dict(Journey.objects.filter(pk__in={r["extra__journey"] for r in rows
                                                 if isinstance(r["extra__journey"], int)}).values_list("pk", "name"))
    out = [{"journey": names.get(r["extra__journey"], f"#{r['extra__journey']}"), "journey_id": r.pop("extra__journey"),
            "step": r.pop("extra__step"), **derive(r)} for r in rows]
    return sorted(out, key=lambda r: (str(r["journey"]), str(r["step"])))


# --- conversions: path to conversion, attribution ---------------------------------------------------

def conversions(period: Period, stage: str = "", event: str = "") -> dict[int, datetime]:
    """Each contact that reached the stage (or did the tracked event) in the period, with when it first did."""
    if stage:
        qs = StageChange.objects.filter(_between("at", period), to_stage=stage).values("contact_id") \
            .order_by().annotate(at=Min("at"))
    else:
        qs = Event.objects.filter(_between("occurred_at", period), type="track", name=event, bot="") \
            .exclude(contact=None).values("contact_id").order_by().annotate(at=Min("occurred_at"))
    return {r["contact_id"]: r["at"] for r in qs}


def _per_contact(model, time_field: str, converted: dict[int, datetime], days: int, fields: list[str]):
    """Rows of `model` of the converted contacts from `days` before their conversion up to it."""
    ids = sorted(converted)
    for i in range(0, len(ids), 2000):
        batch = ids[i:i + 2000]
        earliest = min(converted[c] for c in batch) - timedelta(days=days)
        latest = max(converted[c] for c in batch)
        qs = (model.objects.filter(contact_id__in=batch, **{f"{time_field}__gte": earliest,
                                                             f"{time_field}__lte": latest})
              .values("contact_id", time_field, *fields).order_by("contact_id", time_field))
        for row in qs.iterator(chunk_size=5000):
            at = converted[row["contact_id"]]
            if at - timedelta(days=days) <= row[time_field] <= at:
                yield row


def _conversion_sql(period: Period, stage: str, event: str) -> tuple[str, list[Any]]:
    """The conversions query as SQL (PostgreSQL): contact_id, at — the same rows as `conversions`."""
    start, end = start_of(period.start), start_of(period.end + timedelta(days=1))
    if stage:
        return ("SELECT contact_id, min(at) AS at FROM lifecycle_stagechange WHERE to_stage = %s AND at >= %s "
                "AND at < %s GROUP BY contact_id", [stage, start, end])
    return ("SELECT contact_id, min(occurred_at) AS at FROM events_event WHERE type = 'track' AND name = %s "
            "AND bot = '' AND contact_id IS NOT NULL AND occurred_at >= %s AND occurred_at < %s GROUP BY contact_id",
            [event, start, end])


def _joined(period: Period, stage: str, event: str, days: int, table: str, time_field: str, fields: str,
            extra: str = "") -> list[tuple]:
    """On PostgreSQL, the rows of `table` in each converter's window, joined in the database: one
    statement instead of a round of per-contact reads and a filter in Python."""
    conv, params = _conversion_sql(period, stage, event)
    with connection.cursor() as cur:
        # A nested loop over the converters, each reading its window from the per-contact index: the
        # planner, misjudging how many converters there are, would otherwise scan the whole table.
        # (MATERIALIZED and OFFSET 0 keep it from flattening the lateral read into a hash join.)
        window = f"t.{time_field} >= conv.at - %s AND t.{time_field} <= conv.at"
        cur.execute(f"WITH conv AS MATERIALIZED ({conv}) SELECT conv.contact_id, {fields} FROM conv "  # noqa: S608
                    f"CROSS JOIN LATERAL (SELECT * FROM {table} t WHERE t.contact_id = conv.contact_id AND {window} "
                    f"{extra} OFFSET 0) t ORDER BY conv.contact_id, t.{time_field}",
                    [*params, timedelta(days=days)])
        return cur.fetchall()


def converter_count(period: Period, stage: str = "", event: str = "") -> int:
    if connection.vendor != "postgresql":
        return len(conversions(period, stage, event))
    conv, params = _conversion_sql(period, stage, event)
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM ({conv}) conv", params)  # noqa: S608
        return cur.fetchone()[0]


def lift_rows(viewed: dict[str, int], converters: int, reach: dict[str, int], base: int,
              min_contacts: int = 1) -> list[dict[str, Any]]:
    """lift = P(viewed | converted) / P(viewed | base), best first; paths seen by fewer than
    `min_contacts` converters are left out (one contact says nothing)."""
    rows = []
    for path, n in viewed.items():
        if n < min_contacts or not converters:
            continue
        p_conv = n / converters
        p_base = reach.get(path, 0) / base if base else 0
        rows.append({"path": path, "converters": n, "p_converted": round(100 * p_conv, 1),
                     "p_base": round(100 * p_base, 1), "lift": round(p_conv / p_base, 2) if p_base else None})
    return sorted(rows, key=lambda r: (-(r["lift"] or 0), -r["converters"], r["path"]))


def path_to_conversion(period: Period, *, stage: str = "", event: str = "", days: int = 30,
                       min_contacts: int = 2) -> dict[str, Any]:
    """Pages viewed by contacts in the `days` before they converted, ranked by lift over the share of
    all known contacts with page views that ever viewed the page."""
    seen: dict[int, set[str]] = defaultdict(set)
    if connection.vendor == "postgresql":
        converters = converter_count(period, stage, event)
        for contact_id, path in _joined(period, stage, event, days, "events_pageview", "occurred_at", "t.path"):
            seen[contact_id].add(path)
    else:
        converted = conversions(period, stage, event)
        converters = len(converted)
        for row in _per_contact(PageView, "occurred_at", converted, days, ["path"]):
            seen[row["contact_id"]].add(row["path"])
    viewed: dict[str, int] = defaultdict(int)
    for paths in seen.values():
        for path in paths:
            viewed[path] += 1
    reach = dict(PathReach.objects.filter(path__in=[*viewed, ANY_PAGE]).values_list("path", "contacts"))
    base = reach.pop(ANY_PAGE, 0)
    return {"converters": converters, "with_views": len(seen), "base": base,
            "rows": lift_rows(viewed, converters, reach, base, min_contacts)}


MODELS = ("first", "last", "linear", "position")


def credit(n: int, model: str) -> list[float]:
    """How one conversion's credit is shared among its n touches, oldest first."""
    if n <= 0:
        return []
    if model == "first":
        return [1.0] + [0.0] * (n - 1)
    if model == "last":
        return [0.0] * (n - 1) + [1.0]
    if model == "linear" or n == 1:
        return [1.0 / n] * n
    if n == 2:
        return [0.5, 0.5]
    return [0.4] + [0.2 / (n - 2)] * (n - 2) + [0.4]  # position-based: 40 / 20 / 40


def channel_of(session: dict[str, Any]) -> str:
    return session["source_kind"] or "direct"


def attribute(touches: dict[int, list[tuple[str, str]]]) -> dict[str, Any]:
    """Shares (percent of conversions) per channel and per campaign under each model.
    `touches` maps a contact to its (channel, campaign) touches, oldest first."""
    by: dict[str, dict[str, dict[str, float]]] = {"channel": defaultdict(lambda: dict.fromkeys(MODELS, 0.0)),
                                                   "campaign": defaultdict(lambda: dict.fromkeys(MODELS, 0.0))}
    counted = [t for t in touches.values() if t]
    for path in counted:
        for model in MODELS:
            for (channel, campaign), share in zip(path, credit(len(path), model), strict=True):
                by["channel"][channel][model] += share
                by["campaign"][campaign or ""][model] += share
    total = len(counted)
    out: dict[str, Any] = {"conversions": total}
    for dim, table in by.items():
        rows = [{"key": key, **{m: round(100 * v[m] / total, 1) for m in MODELS},
                 **{f"{m}_credit": round(v[m], 4) for m in MODELS}} for key, v in table.items()]
        out[dim] = sorted(rows, key=lambda r: (-r["linear"], r["key"]))
    return out


def attribution(period: Period, *, stage: str = "", event: str = "", days: int = 90) -> dict[str, Any]:
    touches: dict[int, list[tuple[str, str]]] = defaultdict(list)
    if connection.vendor == "postgresql":
        converters = converter_count(period, stage, event)
        for contact_id, kind, campaign in _joined(period, stage, event, days, "events_session", "started_at",
                                                  "t.source_kind, t.utm_campaign", "AND t.bot = ''"):
            touches[contact_id].append((kind or "direct", campaign))
    else:
        converted = conversions(period, stage, event)
        converters = len(converted)
        for row in _per_contact(Session, "started_at", converted, days, ["source_kind", "utm_campaign", "bot"]):
            if not row["bot"]:
                touches[row["contact_id"]].append((channel_of(row), row["utm_campaign"]))
    result = attribute(touches)
    result["converters"] = converters
    result["without_touches"] = converters - result["conversions"]
    return result


# --- retention ----------------------------------------------------------------------------------------

def retention(period: Period, *, renewal: str = "Renewed", churn: str = "Churned", early_days: int = 30,
              min_contacts: int = 2) -> dict[str, Any]:
    """Cohorts of contacts that became customers in the period, by month: how many renewed
    (a tracked `renewal` event after becoming a customer) and churned (a `churn` event, or moved
    from customer to "other"), and which tracked events in their first `early_days` go with renewal.
    Reads the customer rollup (`CustomerFact`, `CustomerEvent`), in a few grouped queries."""
    facts = CustomerFact.objects.filter(_between("became_at", period))
    renewed_q = Exists(CustomerEvent.objects.filter(fact_id=OuterRef("pk"), name=renewal))
    churned_q = Exists(CustomerEvent.objects.filter(fact_id=OuterRef("pk"), name=churn))
    rows = (facts.annotate(month=TruncMonth("became_at", tzinfo=timezone.get_current_timezone()),
                           r=renewed_q, c=churned_q)
            .values("month").order_by("month")
            .annotate(customers=Count("id"), renewed=Count("id", filter=Q(r=True)),
                      churned=Count("id", filter=Q(c=True) | Q(left_at__isnull=False))))
    cohort_rows = [{"month": r["month"].strftime("%Y-%m"), "customers": r["customers"], "renewed": r["renewed"],
                    "churned": r["churned"], "renewal_rate": round(100 * r["renewed"] / r["customers"], 1),
                    "churn_rate": round(100 * r["churned"] / r["customers"], 1)} for r in rows]
    total = sum(r["customers"] for r in cohort_rows)
    renewed = sum(r["renewed"] for r in cohort_rows)
    early = (CustomerEvent.objects.filter(_between("fact__became_at", period))
             .filter(first_at__lte=F("fact__became_at") + timedelta(days=early_days))
             .exclude(name__in=[renewal, churn])
             .annotate(r=Exists(CustomerEvent.objects.filter(fact_id=OuterRef("fact_id"), name=renewal)))
             .values("name").order_by().annotate(did=Count("id"), did_renewed=Count("id", filter=Q(r=True)))
             .filter(did__gte=min_contacts))
    behaviours = []
    for r in early:
        rest = total - r["did"]
        did_rate = r["did_renewed"] / r["did"]
        rest_rate = (renewed - r["did_renewed"]) / rest if rest else None
        behaviours.append({"name": r["name"], "contacts": r["did"], "renewal_rate": round(100 * did_rate, 1),
                           "others_rate": round(100 * rest_rate, 1) if rest_rate is not None else None,
                           "lift": round(did_rate / rest_rate, 2) if rest_rate else None})
    behaviours.sort(key=lambda r: (-(r["lift"] or 0), -r["contacts"], r["name"]))
    return {"customers": total, "renewed": renewed, "churned": sum(r["churned"] for r in cohort_rows),
            "cohorts": cohort_rows, "behaviours": behaviours}


def usage_trend(period: Period, names: list[str]) -> tuple[list[str], list[list[Any]]]:
    unit, days = buckets(period)
    table = {d: dict.fromkeys(names, 0) for d in days}
    for r in DailyEvent.objects.filter(_in(period), name__in=names).values("day", "name").order_by() \
            .annotate(n=Sum("n")):
        table[_bucket_of(r["day"], unit)][r["name"]] += r["n"]
    return [_("Week") if unit == "week" else _("Day"), *names], [[d.isoformat(), *[table[d][n] for n in names]]
                                                               for d in days]
