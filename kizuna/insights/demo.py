"""Demo history for the insights reports: a year of lifecycle transitions, visits before deals,
product usage, renewals and churn — written directly (the demo's live traffic goes through the
event pipeline; a year of history would take too long that way), then the rollups rebuilt."""

from __future__ import annotations

import random
from datetime import timedelta

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.events.models import Event, PageView, Session
from kizuna.insights import rollups
from kizuna.lifecycle.models import StageChange
from kizuna.lifecycle.transitions import ORDER, RANK

BEFORE_DEALS = ["/pricing", "/case-studies/maruyama-seisakusho", "/product/scoring", "/demo", "/blog/ma-tool-hikaku"]
BROWSING = ["/", "/blog", "/blog/lead-nurturing", "/product", "/seminar", "/company", "/careers"]
SOURCES = [("search", "www.google.co.jp", "MA ツール 比較", ""), ("email", "", "", "newsletter-12"),
           ("paid", "", "", "ma-2026"), ("social", "www.linkedin.com", "", ""), ("direct", "", "", ""),
           ("referral", "news.example.jp", "", "")]
FAMILY = ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村"]
GIVEN = ["太郎", "花子", "健一", "美咲", "大輔", "陽子"]


def _visit(rng: random.Random, contact: Contact, at, paths: list[str], n: int) -> None:
    kind, host, keyword, campaign = rng.choice(SOURCES)
    session = Session.objects.create(
        anonymous_id=f"demo-insights-{contact.pk}", contact=contact, started_at=at, last_activity_at=at,
        page_views=len(paths), source_kind=kind, source_host=host, keyword=keyword, utm_campaign=campaign,
        utm_source="newsletter" if kind == "email" else ("google" if kind == "paid" else ""),
        entry_path=paths[0], exit_path=paths[-1], company_name=contact.company_name[:255])
    for seq, path in enumerate(paths, start=1):
        when = at + timedelta(seconds=50 * seq)
        event = Event.objects.create(message_id=f"demo-insights-{contact.pk}-{n}-{seq}", type="page", contact=contact,
                                     anonymous_id=session.anonymous_id, occurred_at=when, received_at=when,
                                     processed_at=when, source="Demo site", path=path,
                                     url=f"https://www.example.co.jp{path}", session=session)
        PageView.objects.create(event=event, page_view_id=event.message_id, session=session, contact=contact,
                                anonymous_id=session.anonymous_id, seq=seq, occurred_at=when,
                                url=event.url, path=path, dwell_ms=rng.randint(4, 90) * 1000,
                                measured=rng.random() < 0.7, is_exit=seq == len(paths))


def _track(contact: Contact, name: str, at, n: int) -> None:
    Event.objects.create(message_id=f"demo-insights-{contact.pk}-{name}-{n}", type="track", name=name,
                         contact=contact, anonymous_id=f"demo-insights-{contact.pk}", occurred_at=at, received_at=at,
                         processed_at=at, source="Demo app")


def generate_demo_insights(*, seed: int = 5, new_contacts: int = 0) -> str:
    """History for contacts that have none yet (at most one recorded stage change); with
    `new_contacts`, makes that many contacts first."""
    rng = random.Random(seed)
    now = timezone.now()
    stages = [s.value for s in ORDER]
    with transaction.atomic():
        created: list[Contact] = []
        for i in range(new_contacts):
            stage = rng.choices(stages, weights=[15, 40, 15, 10, 6, 12, 2])[0]
            age = rng.choice([rng.randint(0, 29), rng.randint(200, 400), rng.randint(30, 400)])
            created.append(Contact.objects.create(
                email=f"insights-demo-{seed}-{i}@example.co.jp", family_name=rng.choice(FAMILY),
                given_name=rng.choice(GIVEN), lifecycle_stage=stage,
                source=rng.choice(["import", "form", "form", "manual", "api"]), created_at=now - timedelta(days=age)))
        busy = set(StageChange.objects.values("contact_id").order_by().annotate(n=Count("id")).filter(n__gt=1)
                   .values_list("contact_id", flat=True))
        made = visits = usage = 0
        # The contacts just made come first, so they get a history however many others there are.
        others = (Contact.objects.exclude(pk__in=busy).exclude(pk__in=[c.pk for c in created])
                  .exclude(lifecycle_stage="other").order_by("pk")[:max(0, 3000 - len(created))])
        for contact in [*created, *others]:
            rank = RANK.get(contact.lifecycle_stage)
            if rank is None:
                continue
            start = max(contact.created_at, now - timedelta(days=365))
            # Where the contact is now it reached at some point of its history, not necessarily lately.
            span = (now - start).total_seconds() * rng.uniform(0.15, 1.0)
            times = sorted(start + timedelta(seconds=rng.uniform(0, span)) for _ in range(rank + 1))
            StageChange.objects.filter(contact=contact).delete()
            for k, at in enumerate(times):
                StageChange.objects.create(contact=contact, from_stage=stages[k - 1] if k else "", to_stage=stages[k],
                                           at=at, via="import")
                made += 1
            for n in range(rng.randint(1, 3)):  # visits before reaching the current stage
                keen = rank >= RANK["opportunity"] and rng.random() < 0.7
                paths = rng.sample(BEFORE_DEALS if keen else BROWSING, rng.randint(1, 3))
                _visit(rng, contact, times[-1] - timedelta(days=rng.uniform(1, 25)), paths, n)
                visits += 1
            if rank >= RANK["customer"]:
                became = times[RANK["customer"]]
                feature = rng.random() < 0.55
                if feature:
                    _track(contact, "Feature D Used", became + timedelta(days=rng.randint(1, 20)), 0)
                for n in range(rng.randint(1, 6)):
                    at = became + timedelta(days=rng.randint(0, 120))
                    if at < now:
                        _track(contact, rng.choice(["Feature A Used", "Report Exported", "Dashboard Viewed"]), at, n)
                        usage += 1
                later = became + timedelta(days=rng.randint(45, 120))
                if later < now:
                    if rng.random() < (0.8 if feature else 0.4):
                        _track(contact, "Renewed", later, 0)
                    elif rng.random() < 0.5:
                        _track(contact, "Churned", later, 0)
            if rank >= RANK["opportunity"] and rng.random() < 0.6:
                _track(contact, "Quote Requested", times[RANK["opportunity"]] + timedelta(hours=2), 0)
    rollups.rebuild()
    return f"{made} stage transitions, {visits} visits, {usage} usage events; insights rollups built"
