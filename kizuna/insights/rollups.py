"""Keeping the daily rollups current: incrementally in the worker, or all at once (`kizuna insights rebuild`).

A pass looks at the rows added to each source table since the last pass (by id), finds the
earliest day they touch, and recomputes every day from there to today: the day's rows are
deleted and written again from the raw data, in one transaction. Late changes to existing rows
(a page view's dwell time arrives with a later engagement event, an anonymous history joins a
contact) always come with a new event, so they are caught by the same rule. Recomputing is what
makes the rollups idempotent: two passes over the same data write the same rows.

Only one process runs a pass at a time (kizuna/db/locks.py); a second worker skips it.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta

from django.db import transaction
from django.db.models import Count, F, Max, Min, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.locks import exclusive
from kizuna.db.loops import repeat
from kizuna.events.models import Event, PageView, Session
from kizuna.insights.models import (
    ContactPage,
    CustomerEvent,
    CustomerFact,
    DailyContacts,
    DailyEvent,
    DailyFlow,
    DailyPage,
    DailySource,
    DailyStage,
    PathReach,
    RollupState,
)
from kizuna.lifecycle.models import StageChange

LOCK = "insights-rollups"
CHUNK_DAYS = 7  # days recomputed per transaction
ANY_PAGE = ""  # PathReach row counting contacts with any page view


def start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def local_day(at: datetime) -> date:
    return timezone.localtime(at).date()


def _day(field: str) -> TruncDate:
    return TruncDate(field, tzinfo=timezone.get_current_timezone())


def _between(field: str, first: date, last: date) -> Q:
    return Q(**{f"{field}__gte": start_of(first), f"{field}__lt": start_of(last + timedelta(days=1))})


# --- what one day (range) is made of --------------------------------------------------------------

def _pages(first: date, last: date) -> None:
    views = PageView.objects.filter(_between("occurred_at", first, last), session__bot="")
    timed = Q(measured=True) | Q(is_exit=False)
    rows = (views.annotate(d=_day("occurred_at")).values("d", "path").order_by()
            .annotate(views=Count("id"), entries=Count("id", filter=Q(seq=1)),
                      exits=Count("id", filter=Q(is_exit=True)),
                      timed=Count("id", filter=timed), dwell=Coalesce(Sum("dwell_ms", filter=timed), 0)))
    DailyPage.objects.bulk_create([DailyPage(day=r["d"], path=r["path"], views=r["views"], entries=r["entries"],
                                             exits=r["exits"], timed=r["timed"], dwell_ms=r["dwell"]) for r in rows],
                                  batch_size=2000)
    following = PageView.objects.filter(session_id=OuterRef("session_id"), seq=OuterRef("seq") + 1).values("path")[:1]
    flows = (views.annotate(d=_day("occurred_at"), to=Coalesce(Subquery(following), Value("")))
             .values("d", "path", "to").order_by().annotate(n=Count("id")))
    DailyFlow.objects.bulk_create([DailyFlow(day=r["d"], from_path=r["path"], to_path=r["to"], n=r["n"])
                                   for r in flows], batch_size=2000)


def _sources(first: date, last: date) -> None:
    rows = (Session.objects.filter(_between("started_at", first, last), bot="").annotate(d=_day("started_at"))
            .values("d", "source_kind", "source_host", "keyword", "utm_source", "utm_medium", "utm_campaign")
            .order_by().annotate(sessions=Count("id"), pv=Sum("page_views"), ms=Sum("engaged_ms")))
    DailySource.objects.bulk_create([
        DailySource(day=r["d"], source_kind=r["source_kind"], source_host=r["source_host"][:255],
                    keyword=r["keyword"][:500], utm_source=r["utm_source"], utm_medium=r["utm_medium"],
                    utm_campaign=r["utm_campaign"], sessions=r["sessions"], page_views=r["pv"] or 0,
                    engaged_ms=r["ms"] or 0) for r in rows], batch_size=2000)


def _stages(first: date, last: date) -> None:
    first_campaign = (Session.objects.filter(contact_id=OuterRef("contact_id")).exclude(utm_campaign="")
                      .order_by("started_at").values("utm_campaign")[:1])
    rows = (StageChange.objects.filter(_between("at", first, last)).annotate(d=_day("at"))
            .annotate(source=F("contact__source"), campaign=Coalesce(Subquery(first_campaign), Value("")))
            .values("d", "from_stage", "to_stage", "source", "campaign").order_by()
            .annotate(n=Count("contact_id", distinct=True)))
    DailyStage.objects.bulk_create([DailyStage(day=r["d"], from_stage=r["from_stage"], to_stage=r["to_stage"],
                                               source=r["source"] or "", campaign=r["campaign"], n=r["n"])
                                    for r in rows], batch_size=2000)


def _contacts(first: date, last: date) -> None:
    rows = (Contact.objects.filter(_between("created_at", first, last)).annotate(d=_day("created_at"))
            .values("d", "source").order_by().annotate(n=Count("id")))
    DailyContacts.objects.bulk_create([DailyContacts(day=r["d"], source=r["source"], n=r["n"]) for r in rows],
                                      batch_size=2000)


def _events(first: date, last: date) -> None:
    rows = (Event.objects.filter(_between("occurred_at", first, last), type="track", bot="")
            .annotate(d=_day("occurred_at")).values("d", "name").order_by()
            .annotate(n=Count("id"), contacts=Count("contact_id", distinct=True)))
    DailyEvent.objects.bulk_create([DailyEvent(day=r["d"], name=r["name"][:200], n=r["n"], contacts=r["contacts"])
                                    for r in rows], batch_size=2000)


# name → (rollup tables, how to compute a day range, source model and its time field)
DAILY = {
    "pages": ((DailyPage, DailyFlow), _pages, Event, "occurred_at"),
    "sources": ((DailySource,), _sources, Session, "started_at"),
    "stages": ((DailyStage,), _stages, StageChange, "at"),
    "contacts": ((DailyContacts,), _contacts, Contact, "created_at"),
    "events": ((DailyEvent,), _events, Event, "occurred_at"),
}


def recompute(name: str, first: date, last: date) -> None:
    """Writes the rollup `name` for the days first..last from the raw data, in chunks of days."""
    tables, compute, _model, _field = DAILY[name]
    day = first
    while day <= last:
        end = min(last, day + timedelta(days=CHUNK_DAYS - 1))
        with transaction.atomic():
            for table in tables:
                table.objects.filter(day__gte=day, day__lte=end).delete()
            compute(day, end)
        day = end + timedelta(days=1)


def recompute_contacts(contact_ids: set[int]) -> None:
    """`ContactPage` of these contacts from their page views, then `PathReach` of the paths involved."""
    ids = sorted(contact_ids)
    paths: set[str] = set()
    for i in range(0, len(ids), 1000):
        batch = ids[i:i + 1000]
        with transaction.atomic():
            paths.update(ContactPage.objects.filter(contact_id__in=batch).values_list("path", flat=True))
            ContactPage.objects.filter(contact_id__in=batch).delete()
            rows = (PageView.objects.filter(contact_id__in=batch, session__bot="").values("contact_id", "path")
                    .order_by().annotate(first=Min("occurred_at"), n=Count("id")))
            fresh = [ContactPage(contact_id=r["contact_id"], path=r["path"], first_at=r["first"], views=r["n"])
                     for r in rows]
            ContactPage.objects.bulk_create(fresh, batch_size=2000)
            paths.update(p.path for p in fresh)
    if ids:
        refresh_reach(paths)


def recompute_customers(contact_ids: set[int] | None = None) -> int:
    """`CustomerFact` and `CustomerEvent` of these contacts (all when None) from their stage changes and
    tracked events. Returns how many customers were written."""
    customer = "customer"
    facts = StageChange.objects.filter(to_stage=customer)
    if contact_ids is not None:
        facts = facts.filter(contact_id__in=contact_ids)
    written = 0
    ids = sorted(contact_ids) if contact_ids is not None else None
    batches = ([ids[i:i + 1000] for i in range(0, len(ids), 1000)] if ids is not None else [None])
    for batch in batches:
        with transaction.atomic():
            scope = CustomerFact.objects.all() if batch is None else CustomerFact.objects.filter(contact_id__in=batch)
            scope.delete()
            rows = facts if batch is None else facts.filter(contact_id__in=batch)
            became = dict(rows.values("contact_id").order_by().annotate(at=Min("at")).values_list("contact_id", "at"))
            if not became:
                continue
            left = StageChange.objects.filter(from_stage=customer, to_stage="other")
            if batch is not None:
                left = left.filter(contact_id__in=batch)
            left_at: dict[int, datetime] = {}
            for contact_id, at in left.values_list("contact_id", "at"):
                if contact_id in became and at >= became[contact_id] and (
                        contact_id not in left_at or at < left_at[contact_id]):
                    left_at[contact_id] = at
            CustomerFact.objects.bulk_create([CustomerFact(contact_id=c, became_at=at, left_at=left_at.get(c))
                                              for c, at in became.items()], batch_size=5000)
            written += len(became)
            events = (Event.objects.filter(type="track", bot="", contact__customer_fact__isnull=False,
                                           occurred_at__gte=F("contact__customer_fact__became_at"))
                      .values("contact__customer_fact", "name").order_by().annotate(first=Min("occurred_at")))
            if batch is not None:
                events = events.filter(contact_id__in=batch)
            CustomerEvent.objects.bulk_create([CustomerEvent(fact_id=r["contact__customer_fact"], name=r["name"][:200],
                                                             first_at=r["first"]) for r in events.iterator(5000)],
                                              batch_size=5000)
    return written


def refresh_reach(paths: set[str] | None = None) -> None:
    """Counts of contacts per path (all paths when None), and of contacts with any page view."""
    with transaction.atomic():
        qs = ContactPage.objects.all()
        if paths is not None:
            paths = set(paths)
            qs = qs.filter(path__in=paths)
            PathReach.objects.filter(path__in=paths | {ANY_PAGE}).delete()
        else:
            PathReach.objects.all().delete()
        counts = qs.values("path").order_by().annotate(n=Count("contact_id"))
        PathReach.objects.bulk_create([PathReach(path=r["path"], contacts=r["n"]) for r in counts if r["path"]],
                                      batch_size=2000)
        PathReach.objects.create(path=ANY_PAGE, contacts=ContactPage.objects.values("contact_id").distinct().count())


# --- passes -----------------------------------------------------------------------------------------

def _state(name: str) -> RollupState:
    return RollupState.objects.get_or_create(name=name)[0]


def update() -> dict[str, int]:
    """One incremental pass over every rollup; returns days recomputed per rollup (nothing when
    another process holds the lock)."""
    done: dict[str, int] = {}
    with exclusive(LOCK) as held:
        if not held:
            return done
        today = local_day(timezone.now())
        for name, (_tables, _compute, model, field) in DAILY.items():
            state = _state(name)
            seen = model.objects.filter(pk__gt=state.last_id).aggregate(first=Min(field), top=Max("pk"))
            if seen["top"] is None:
                continue
            first = min(local_day(seen["first"]), today)
            recompute(name, first, max(today, local_day(seen["first"])))
            done[name] = (today - first).days + 1
            RollupState.objects.filter(name=name).update(last_id=seen["top"], updated_at=timezone.now())
        state = _state("contact_pages")
        new = Event.objects.filter(pk__gt=state.last_id).exclude(contact=None)
        top = Event.objects.filter(pk__gt=state.last_id).aggregate(top=Max("pk"))["top"]
        if top is not None and state.last_id == 0:  # the first pass: all contacts at once, not one by one
            ContactPage.objects.all().delete()
            rebuild_contact_pages()
            refresh_reach()
            done["contact_pages"] = ContactPage.objects.count()
            RollupState.objects.filter(name="contact_pages").update(last_id=top, updated_at=timezone.now())
        elif top is not None:
            contacts = set(new.filter(pk__lte=top).values_list("contact_id", flat=True).distinct())
            recompute_contacts(contacts)
            done["contact_pages"] = len(contacts)
            RollupState.objects.filter(name="contact_pages").update(last_id=top, updated_at=timezone.now())
        state = _state("customers")
        seen_events = _state("customers_events").last_id
        top = StageChange.objects.aggregate(top=Max("pk"))["top"] or 0
        event_top = Event.objects.aggregate(top=Max("pk"))["top"] or 0
        if state.last_id == 0 and top:
            done["customers"] = recompute_customers()
        elif top > state.last_id or event_top > seen_events:
            touched = set(StageChange.objects.filter(pk__gt=state.last_id).values_list("contact_id", flat=True))
            touched |= set(Event.objects.filter(pk__gt=seen_events, pk__lte=event_top, type="track")
                           .filter(contact__customer_fact__isnull=False)
                           .values_list("contact_id", flat=True).distinct())
            if touched:
                done["customers"] = recompute_customers(touched)
        RollupState.objects.filter(name="customers").update(last_id=top, updated_at=timezone.now())
        RollupState.objects.update_or_create(name="customers_events", defaults={"last_id": event_top,
                                                                                "updated_at": timezone.now()})
    return done


def rebuild() -> dict[str, int]:
    """Every rollup from scratch (waits for no one: it takes the same lock and fails when held)."""
    done: dict[str, int] = {}
    with exclusive(LOCK) as held:
        if not held:
            raise RuntimeError("another process is updating the rollups; try again when it has finished")
        today = local_day(timezone.now())
        for name, (tables, _compute, model, field) in DAILY.items():
            bounds = model.objects.aggregate(first=Min(field), top=Max("pk"))
            for table in tables:
                table.objects.all().delete()
            if bounds["top"] is not None:
                first = local_day(bounds["first"])
                last = max(today, local_day(model.objects.aggregate(last=Max(field))["last"]))
                recompute(name, first, last)
                done[name] = (last - first).days + 1
            RollupState.objects.update_or_create(name=name, defaults={"last_id": bounds["top"] or 0,
                                                                       "updated_at": timezone.now()})
        top = Event.objects.aggregate(top=Max("pk"))["top"] or 0
        ContactPage.objects.all().delete()
        rebuild_contact_pages()
        refresh_reach()
        done["contact_pages"] = ContactPage.objects.count()
        RollupState.objects.update_or_create(name="contact_pages", defaults={"last_id": top,
                                                                             "updated_at": timezone.now()})
        stage_top = StageChange.objects.aggregate(top=Max("pk"))["top"] or 0
        done["customers"] = recompute_customers()
        RollupState.objects.update_or_create(name="customers", defaults={"last_id": stage_top,
                                                                         "updated_at": timezone.now()})
        RollupState.objects.update_or_create(name="customers_events", defaults={"last_id": top,
                                                                                "updated_at": timezone.now()})
    return done


def rebuild_contact_pages() -> None:
    """All of `ContactPage` in one statement per contact-id range."""
    bounds = PageView.objects.exclude(contact=None).aggregate(lo=Min("contact_id"), hi=Max("contact_id"))
    if bounds["lo"] is None:
        return
    step = 50_000
    for lo in range(bounds["lo"], bounds["hi"] + 1, step):
        with transaction.atomic():
            rows = (PageView.objects.filter(contact_id__gte=lo, contact_id__lt=lo + step, session__bot="")
                    .values("contact_id", "path").order_by().annotate(first=Min("occurred_at"), n=Count("id")))
            ContactPage.objects.bulk_create([ContactPage(contact_id=r["contact_id"], path=r["path"],
                                                         first_at=r["first"], views=r["n"]) for r in rows],
                                            batch_size=5000)


def run(stop: threading.Event, idle_seconds: float = 30.0) -> None:
    """The worker's rollup loop: a pass every `idle_seconds`."""
    repeat(stop, update, idle_seconds=idle_seconds, what="insights rollup pass", steady=True)


