"""Journey simulation benchmark: `simulation.simulate` over 30 days with 10,000 entrants.

    .venv/bin/python bench/journey_simulation.py                       # SQLite, in a temporary data dir
    .venv/bin/python bench/journey_simulation.py --postgres            # PostgreSQL database kizuna_simbench
    .venv/bin/python bench/journey_simulation.py --contacts 2000       # smaller

A fresh database is set up with `kizuna init`, then filled with bulk inserts: N contacts (one in
nine opted out of the newsletter topic), each with one to three page views of /pricing… in the last
30 days plus as many other page views and a "Demo Booked" event for one in five, and three email
templates. The journey is the pricing follow-up with every kind of work the simulation does:

    event trigger (page, path starts with /pricing), every time, not again within 30 days
    → wait until 10:00 the next day in the contact's time zone
    → condition: manufacturing, or viewed a case study twice in 30 days (behaviour at that moment)
    → then: wait for "Demo Booked" 5 days → goal | mail; else: 50/50 split → mail A | mail B
    goal: Demo Booked; exit: opted out

Each run is timed with the number of queries; the median of three runs is reported, with the
baseline of the same run: reading the trigger's events once with one query.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgres://postgres@127.0.0.1:5432/kizuna_simbench"


def setup_database(postgres: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_")}
    env["KIZUNA_DATA_DIR"] = tempfile.mkdtemp(prefix="kizuna-simbench-")
    env["DJANGO_SETTINGS_MODULE"] = "kizuna.settings"
    if postgres:
        import psycopg

        with psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS kizuna_simbench WITH (FORCE)")
            conn.execute("CREATE DATABASE kizuna_simbench")
        env["KIZUNA_DATABASE_URL"] = PG_URL
    subprocess.run([sys.executable, "-m", "kizuna.cli", "init"], env=env, check=True, capture_output=True,
                   cwd=ROOT)
    return env


def fill(contacts: int) -> object:
    import datetime as dt

    from django.utils import timezone

    from kizuna.contacts.models import Consent, ConsentStatus, Contact, SubscriptionTopic
    from kizuna.events.models import Event
    from kizuna.journeys import engine
    from kizuna.journeys.models import Journey
    from kizuna.messaging.models import EmailTemplate, Sender
    from kizuna.messaging.templates_service import save_version

    rng = random.Random(2026)
    now = timezone.now()
    sender = Sender.objects.create(name="Bench", from_name="Kizuna", from_email="news@kizuna.example",
                                   organisation="Kizuna", postal_address="東京都千代田区丸の内1-1-1", is_default=True)
    topic, _created = SubscriptionTopic.objects.get_or_create(key="news", defaults={"name": "お知らせ"})
    templates = []
    for name in ("料金のご案内", "導入事例A", "導入事例B"):
        t = EmailTemplate.objects.create(name=name, kind="marketing", topic=topic, sender=sender)
        save_version(t, subject=name, html=f"<p>{name}</p>")
        templates.append(t.pk)
    Contact.objects.bulk_create([
        Contact(email=f"c{i}@example.co.jp", family_name="山田", industry=rng.choice(["manufacturing", "it", "retail"]),
                time_zone=rng.choice(["Asia/Tokyo", "Asia/Tokyo", "America/New_York", ""]))
        for i in range(contacts)], batch_size=2000)
    ids = list(Contact.objects.values_list("pk", flat=True))
    Consent.objects.bulk_create([Consent(contact_id=c, topic=topic, status=ConsentStatus.OPTED_OUT if i % 9 == 0
                                         else ConsentStatus.OPTED_IN) for i, c in enumerate(ids)], batch_size=2000)
    events, n = [], 0

    def event(cid: int, at, kind: str, name: str = "", path: str = "") -> None:
        nonlocal n
        n += 1
        events.append(Event(message_id=f"bench-{n}", type=kind, name=name, contact_id=cid, occurred_at=at,
                            received_at=at, processed_at=at, path=path, url=f"https://www.example.co.jp{path}",
                            properties={"path": path} if path else {}))

    for cid in ids:
        for _v in range(rng.randint(1, 3)):
            event(cid, now - dt.timedelta(days=rng.uniform(0, 30)), "page", path=rng.choice(
                ["/pricing", "/pricing/enterprise"]))
        for _v in range(rng.randint(1, 3)):
            event(cid, now - dt.timedelta(days=rng.uniform(0, 40)), "page", path=rng.choice(
                ["/products", "/case-studies/a", "/case-studies/b", "/blog"]))
        if rng.random() < 0.2:
            event(cid, now - dt.timedelta(days=rng.uniform(0, 30)), "track", name="Demo Booked")
    Event.objects.bulk_create(events, batch_size=5000)
    journey = Journey(name="Pricing follow-up", entry="every_time", reentry_days=30,
                      goal_filter={"event": "Demo Booked"},
                      exit_filter={"field": "consent.news", "op": "in", "value": ["opted_out"]})
    engine.save_journey(journey, {
        "trigger": {"type": "event", "event": "page", "where": [{"field": "path", "op": "starts_with",
                                                                 "value": "/pricing"}]},
        "nodes": [
            {"id": "morning", "type": "wait", "time_of_day": "10:00", "days": 1, "next": "fit"},
            {"id": "fit", "type": "condition", "if": {"any": [
                {"field": "industry", "op": "in", "value": ["manufacturing"]},
                {"event": "page", "where": [{"field": "path", "op": "starts_with", "value": "/case-studies"}],
                 "count": {"op": "gte", "value": 2}, "within_days": 30}]}, "then": "demo", "else": "ab"},
            {"id": "demo", "type": "wait_event", "event": "Demo Booked", "timeout": {"days": 5}, "then": "won",
             "else": "price"},
            {"id": "won", "type": "goal", "name": "demo"},
            {"id": "price", "type": "send_email", "template": templates[0]},
            {"id": "ab", "type": "split", "branches": [{"percent": 50, "next": "a"}, {"percent": 50, "next": "b"}]},
            {"id": "a", "type": "send_email", "template": templates[1]},
            {"id": "b", "type": "send_email", "template": templates[2]},
        ]})
    return journey, len(events)


def measure(contacts: int) -> None:
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from kizuna.journeys import simulation

    started = time.monotonic()
    journey, events = fill(contacts)
    print(f"{connection.vendor}: {contacts:,} contacts, {events:,} events, filled in {time.monotonic() - started:.1f} s")
    from datetime import timedelta

    from django.utils import timezone

    from kizuna.events.models import Event

    baseline = []
    for _run in range(3):  # the floor: reading the trigger's events once, nothing else
        t0 = time.monotonic()
        len(Event.objects.filter(type="page", bot="", contact__isnull=False, path__istartswith="/pricing",
                                 occurred_at__gte=timezone.now() - timedelta(days=30))
            .values_list("id", "contact_id", "occurred_at", "path"))
        baseline.append(time.monotonic() - t0)
    timings = []
    for _run in range(3):
        with CaptureQueriesContext(connection) as queries:
            t0 = time.monotonic()
            result = simulation.simulate(journey, days=30)
            timings.append(time.monotonic() - t0)
    print(f"entrants {result.entrants:,}, runs {result.runs:,}, occurrences {result.occurrences:,}, "
          f"mails {sum(m.would_send for m in result.messages):,} "
          f"(+{sum(sum(m.blocked.values()) for m in result.messages):,} stopped), ended {dict(result.ended)}")
    print(f"simulate: median {statistics.median(timings):.2f} s (runs: {', '.join(f'{t:.2f}' for t in timings)}), "
          f"{len(queries)} queries; baseline (the trigger's events read once) {statistics.median(baseline):.2f} s; "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.contacts)
        return
    env = setup_database(args.postgres)
    try:
        subprocess.run([sys.executable, __file__, "--child", "--contacts", str(args.contacts)], env=env, check=True,
                       cwd=ROOT)
    finally:
        if args.postgres:
            import psycopg

            with psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                conn.execute("DROP DATABASE IF EXISTS kizuna_simbench WITH (FORCE)")


if __name__ == "__main__":
    main()
