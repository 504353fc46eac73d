"""Journey engine benchmark on PostgreSQL: steps per second for one worker, and the time from a
tracked event to the triggered mail at the SMTP server.

    .venv/bin/python bench/journeys.py                              # 100,000 enrollments, updates docs
    .venv/bin/python bench/journeys.py --enrollments 5000 --runs 1 --no-doc   # a quick look
    .venv/bin/python bench/journeys.py --profile 2000 --no-doc      # cProfile of both paths

On the database kizuna_bench_journeys (dropped and created): `kizuna init`, contacts, a segment on
a tag (so tag steps refresh a segment), a list, a template with a sender and a topic.

1. Throughput. N contacts enrolled in a journey of wait and action steps:
   add a tag → wait 1 day → send an email → add to a list (four steps per run, a segment refresh
   after the tag). This process is the worker: `engine.advance()` in a loop until nothing is due
   (the same call the worker loop makes), once at the enrollment time and once a day later.
   Steps per second = StepRun rows written / time spent in `advance`. Per run: a fresh journey.
   Baselines, same run: the same journey through the one-enrollment-at-a-time path the engine had
   before (KIZUNA_JOURNEY_SET_BASED off; on a smaller number of runs, it is slow), and a bare SQL
   UPDATE of the same enrollment rows (one statement per batch, touching each row as often as
   the engine writes it) — the floor of writing the state at all.
2. Latency. `kizuna serve` and one `kizuna worker` (every loop) run; a journey triggered by a
   tracked event ("Requested Pricing") sends a mail. For each of K known contacts (identified
   beforehand, with consent), the event is POSTed to /v1/track; the time from just before the
   POST to the SMTP server (aiosmtpd, in this process) accepting the mail for that contact. The
   identify events are processed (inbox empty) before timing starts; the first WARM_UP events
   are not counted.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime as dt
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import KIZUNA, ROOT, Server, child_env, free_port, fresh_database, kizuna  # noqa: E402

SECTION = "## Journey engine throughput and event-to-mail latency (bench/journeys.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_bench_journeys"
TARGET_STEPS = 2000
TARGET_P95 = 2.0
WARM_UP = 3  # events sent first and not counted: the worker's first queries warm its caches


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, str]:
    from results import machine as described

    return described()


# --- set-up --------------------------------------------------------------------------------------

def setup_world(contacts: int) -> dict:
    from kizuna.contacts.consent import set_consent
    from kizuna.contacts.models import ConsentStatus, Contact, ContactList, SubscriptionTopic
    from kizuna.messaging.models import EmailTemplate, Sender, SendingSettings
    from kizuna.messaging.templates_service import save_version
    from kizuna.segments import membership
    from kizuna.segments.models import Segment

    sender = Sender.objects.create(name="Marketing", from_name="株式会社キズナ", from_email="news@kizuna.example",
                                   organisation="株式会社キズナ", postal_address="東京都千代田区丸の内1-1-1",
                                   is_default=True)
    topic = SubscriptionTopic.objects.create(key="news", name="お知らせ", requires_opt_in=True)
    SendingSettings.objects.update_or_create(pk=1, defaults={"frequency_cap": 0})
    tpl = EmailTemplate.objects.create(name="料金のご案内", kind="marketing", topic=topic, sender=sender)
    save_version(tpl, subject="料金のご案内", html="<p>{{ contact.family_name }} 様</p><p>料金表をお送りします。</p>")
    tpl.refresh_from_db()
    Contact.objects.bulk_create([Contact(email=f"bench{i}@example.co.jp", family_name="試験", given_name=str(i))
                                 for i in range(contacts)], batch_size=5000)
    ids = list(Contact.objects.order_by("pk").values_list("pk", flat=True))
    latency = [Contact.objects.create(email=f"latency{i}@example.co.jp", family_name="遅延", given_name=str(i))
               for i in range(200)]
    for c in latency:
        set_consent(c, topic, ConsentStatus.OPTED_IN, method="bench")
    membership.save_segment(Segment.objects.create(name="Followed up"),
                            {"field": "tag", "op": "has", "value": "followed-up"})
    lst = ContactList.objects.create(name="Journey finished")
    return {"template": tpl.pk, "list": lst.pk, "ids": ids, "latency": [c.pk for c in latency]}


def steps_journey(world: dict, name: str):
    from kizuna.journeys import engine
    from kizuna.journeys.models import Journey

    j = Journey(name=name, entry=Journey.Entry.EVERY_TIME)
    engine.save_journey(j, {"trigger": {"type": "manual"}, "nodes": [
        {"id": "tag", "type": "add_tag", "tag": "followed-up", "next": "wait"},
        {"id": "wait", "type": "wait", "duration": {"days": 1}, "next": "mail"},
        {"id": "mail", "type": "send_email", "template": world["template"], "next": "list"},
        {"id": "list", "type": "add_to_list", "list": world["list"]}]})
    engine.set_status(j, Journey.Status.LIVE)
    return j


# --- 1. throughput -------------------------------------------------------------------------------

def drive(journey, ids: list[int], *, set_based: bool, batch: int, profile: cProfile.Profile | None = None) -> dict:
    """Enrolls, then advances until nothing is due, now and a day later; times `advance` only."""
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from kizuna.contacts.models import Contact
    from kizuna.journeys import engine
    from kizuna.journeys.models import Enrollment, StepRun

    settings.KIZUNA_JOURNEY_SET_BASED = set_based
    # The same contacts run again in each measurement: their tag and list rows from before are removed,
    # so every run does the same writes.
    Contact.tags.through.objects.filter(contact_id__in=ids).delete()
    from kizuna.contacts.models import ListMembership

    ListMembership.objects.filter(contact_id__in=ids).delete()
    from kizuna.segments.membership import refresh_contacts

    refresh_contacts(ids, fields={"tag"})
    start = timezone.now()
    t0 = time.monotonic()
    enrolled = engine.enroll_many(journey, ids, now=start)
    enroll_seconds = time.monotonic() - t0
    with connection.cursor() as cur:
        cur.execute("ANALYZE journeys_enrollment")
    spent = 0.0
    batches = 0
    for moment in (start, start + dt.timedelta(days=1, minutes=1)):
        while True:
            t = time.monotonic()
            if profile:
                profile.enable()
            done = engine.advance(limit=batch, now=moment)
            if profile:
                profile.disable()
            spent += time.monotonic() - t
            batches += 1
            if not done:
                break
    steps = StepRun.objects.filter(enrollment__journey=journey).count()
    open_runs = Enrollment.objects.filter(journey=journey).exclude(state="done").count()
    return {"enrolled": enrolled, "enroll_rate": enrolled / enroll_seconds, "steps": steps, "seconds": spent,
            "rate": steps / spent, "not_done": open_runs, "batches": batches}


def bare_update(journey, batch: int) -> dict:
    """The same rows written as often as the engine writes them (per batch: claim, then one UPDATE),
    with nothing computed: the floor."""
    from django.db import connection, transaction

    from kizuna.journeys.models import Enrollment

    ids = list(Enrollment.objects.filter(journey=journey).order_by("pk").values_list("pk", flat=True))
    t = time.monotonic()
    for _pass in range(2):  # the engine writes each enrollment once a pass, two passes
        for offset in range(0, len(ids), batch):
            part = ids[offset:offset + batch]
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute("SELECT id FROM journeys_enrollment WHERE id = ANY(%s) ORDER BY id FOR UPDATE SKIP LOCKED",
                            [part])
                cur.execute("UPDATE journeys_enrollment SET updated_at = now(), due_at = now(), "
                            "context = context WHERE id = ANY(%s)", [part])
    seconds = time.monotonic() - t
    rows = 2 * len(ids)
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds}


# --- 2. latency ----------------------------------------------------------------------------------

class Sink:
    """aiosmtpd handler: when each recipient's mail was accepted (this process's monotonic clock)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        now = time.monotonic()
        with self.lock:
            for r in envelope.rcpt_tos:
                self.at.setdefault(r, now)
        return "250 OK"


def post(base: str, key: str, path: str, body: dict) -> None:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own local server
        assert response.status == 200, response.status


def latency(args, env: dict, world: dict, base: str, key: str, work: Path) -> dict:
    from aiosmtpd.controller import Controller
    from django.db import connection

    from kizuna.contacts.models import Contact
    from kizuna.journeys import engine
    from kizuna.journeys.models import Journey
    from kizuna.messaging.models import Message, MessageStatus

    # The throughput runs only queued their mail: it is not this measurement's, and the worker
    # would otherwise send that backlog first.
    Message.objects.filter(status=MessageStatus.QUEUED).update(status=MessageStatus.CANCELLED)
    j = Journey(name="Pricing request", entry=Journey.Entry.EVERY_TIME)
    engine.save_journey(j, {"trigger": {"type": "event", "event": "Requested Pricing", "where": []}, "nodes": [
        {"id": "mail", "type": "send_email", "template": world["template"]}]})
    engine.set_status(j, Journey.Status.LIVE)
    people = list(Contact.objects.filter(pk__in=world["latency"][:args.samples + WARM_UP]).order_by("pk"))
    connection.close()
    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    worker_env = {**env, "KIZUNA_EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}"}
    with (work / "worker.log").open("wb") as out:
        worker = subprocess.Popen([*KIZUNA, "worker"], env=worker_env, cwd=ROOT, stdout=out,  # noqa: S603
                                  stderr=subprocess.STDOUT, start_new_session=True)
    times: list[float] = []
    try:
        # Identify every visitor first (not timed), so the event belongs to a known contact.
        for i, p in enumerate(people):
            post(base, key, "/v1/identify", {"type": "identify", "anonymousId": f"lat-{i}", "traits": {"email": p.email}})
        from kizuna.events.models import IncomingEvent

        deadline = time.monotonic() + 120
        while IncomingEvent.objects.exists() and time.monotonic() < deadline:  # the worker is up and has read them
            time.sleep(0.5)
        connection.close()
        for i, p in enumerate(people):
            t = time.monotonic()
            post(base, key, "/v1/track", {"type": "track", "anonymousId": f"lat-{i}", "event": "Requested Pricing",
                                          "properties": {"plan": "pro"}})
            deadline = t + 30
            while p.email not in sink.at and time.monotonic() < deadline:
                time.sleep(0.005)
            if p.email in sink.at and i >= WARM_UP:
                times.append(sink.at[p.email] - t)
            time.sleep(args.gap)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        controller.stop()
    times.sort()
    p95 = times[max(0, int(round(0.95 * len(times))) - 1)] if times else float("nan")
    return {"samples": len(people) - WARM_UP, "received": len(times), "median": statistics.median(times) if times else None,
            "p95": p95, "max": times[-1] if times else None}


# --- run, report ---------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kizuna-bench-journeys-"))
    server_desc = fresh_database("postgres", args.pg_url)
    port = free_port()
    env = child_env("postgres", work / "data", args.pg_url, port)
    (work / "data").mkdir()
    kizuna(env, "init", "-v0")
    key = kizuna(env, "shell", "-c", "from kizuna.events.models import WriteKey; "
                 "print(WriteKey.objects.create(name='Benchmark').key)").strip().splitlines()[-1]
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    out: dict = {"server": server_desc, "machine": machine(), "loadavg": [loadavg()], "args": vars(args)}
    log(f"creating {args.enrollments:,} contacts")
    world = setup_world(args.enrollments)
    ids = world["ids"]
    if args.profile:
        for set_based in (True,) if args.profile > 3000 else (False, True):
            prof = cProfile.Profile()
            j = steps_journey(world, f"profile {set_based}")
            r = drive(j, ids[:args.profile], set_based=set_based, batch=args.batch, profile=prof)
            log(f"profile set_based={set_based}: {r['steps']} steps in {r['seconds']:.2f} s = {r['rate']:.0f}/s")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return out
    out["new"], out["old"], out["bare"] = [], [], []
    if args.throughput_from:  # figures of an earlier run's throughput part (its JSON); latency only
        saved = json.loads(Path(args.throughput_from).read_text())
        out.update({k: saved[k] for k in ("new", "old", "bare")})
        out["loadavg"] = saved["loadavg"] + out["loadavg"]
        out["args"].update({k: saved["args"][k] for k in ("enrollments", "old", "batch", "runs")})
    for number in range(0 if args.throughput_from else args.runs):
        j = steps_journey(world, f"old {number}")
        log(f"run {number + 1}: old path, {args.old:,} enrollments")
        out["old"].append(drive(j, ids[:args.old], set_based=False, batch=args.batch))
        log(f"  {out['old'][-1]}")
        j = steps_journey(world, f"new {number}")
        log(f"run {number + 1}: set-based, {len(ids):,} enrollments")
        out["new"].append(drive(j, ids, set_based=True, batch=args.batch))
        log(f"  {out['new'][-1]}")
        out["bare"].append(bare_update(j, args.batch))
        log(f"  bare UPDATE {out['bare'][-1]}")
        out["loadavg"].append(loadavg())
    (work / "throughput.json").write_text(json.dumps(out))
    log(f"throughput figures saved in {work / 'throughput.json'}")
    connection.close()
    if not args.samples:
        return out
    log(f"latency: {args.samples} events through the HTTP API and a running worker")
    server = Server(env, port, 2, work / "serve.log")
    try:
        out["latency"] = latency(args, env, world, server.base, key, work)
    finally:
        server.stop()
    out["loadavg"].append(loadavg())
    log(f"  {out['latency']}")
    return out


def median(rows: list[dict], field: str) -> float:
    return statistics.median(r[field] for r in rows)


def render(out: dict) -> str:
    m, a = out["machine"], out["args"]
    new, old, bare, lat = median(out["new"], "rate"), median(out["old"], "rate"), median(out["bare"], "rate"), \
        out["latency"]
    lo, hi = min(r["rate"] for r in out["new"]), max(r["rate"] for r in out["new"])
    return "\n".join([
        SECTION, "",
        f"- Date: {dt.date.today().isoformat()}; machine: {m['cores']} cores ({m['cpu']}), {m['ram']} RAM, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"- {out['server']}",
        f"- Load average (1, 5, 15 min) at the start and after each run: {'; '.join(out['loadavg'])}. The machine "
        "is shared with other work.",
        f"- Throughput: {a['enrollments']:,} enrollments in a journey add a tag (a segment on that tag is "
        "refreshed) → wait 1 day → send an email (queued in the outbox) → add to a list; four steps each. One "
        f"process is the worker: `engine.advance()` with batches of {a['batch']} until nothing is due, at the "
        "enrollment time and a day later; only the time in `advance` counts. Median of "
        f"{a['runs']} runs (range in brackets). Baselines in the same runs: the previous one-enrollment-at-a-time "
        f"path (`KIZUNA_JOURNEY_SET_BASED` off) on {a['old']:,} enrollments of the same journey, and a bare "
        "SQL claim + UPDATE of the same enrollment rows as often as the engine writes them.",
        "",
        "| path | enrollments | steps | steps/s | ratio |",
        "|---|---|---|---|---|",
        f"| set-based (now) | {a['enrollments']:,} | {out['new'][0]['steps']:,} | **{new:,.0f} steps/s** "
        f"({lo:,.0f}–{hi:,.0f}) | ×{new / old:,.1f} the old path; target {TARGET_STEPS:,} "
        f"{'met' if new >= TARGET_STEPS else 'NOT met'} |",
        f"| one at a time (before) | {a['old']:,} | {out['old'][0]['steps']:,} | {old:,.0f} steps/s | ×1.0 |",
        f"| bare SQL UPDATE of the rows | {a['enrollments']:,} | {out['bare'][0]['rows']:,} row writes | "
        f"{bare:,.0f} rows/s | the engine does {new / bare:.2f} steps per bare row write |",
        "",
        f"Runs not done at the end: {sum(r['not_done'] for r in out['new'] + out['old'])}. Enrolling "
        f"(`engine.enroll_many`, one process): {median(out['new'], 'enroll_rate'):,.0f} contacts/s.",
        "",
        f"- Latency: `kizuna serve --workers 2` and one `kizuna worker` (every loop, default idle times) on the "
        f"same machine; a journey triggered by the tracked event \"Requested Pricing\" sends one mail. "
        f"{lat['samples']} known contacts (identified first; {WARM_UP} warm-up events before, not counted), one event "
        f"each through POST /v1/track, {a['gap']} s apart; time from before the POST until the SMTP server "
        "(aiosmtpd) accepted that contact's mail.",
        "",
        "| events | mails received | median | p95 | max |",
        "|---|---|---|---|---|",
        f"| {lat['samples']} | {lat['received']} | {lat['median']:.2f} s | **{lat['p95']:.2f} s** | "
        f"{lat['max']:.2f} s |",
        "",
        f"Target: p95 ≤ {TARGET_P95:.0f} s: {'met' if lat['p95'] <= TARGET_P95 else 'NOT met'}.",
        "",
    ])


def update_doc(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text()
    start = doc.find(SECTION)
    if start >= 0:
        following = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + (doc[following + 1:] if following >= 0 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--enrollments", type=int, default=100_000)
    parser.add_argument("--old", type=int, default=2_000, help="enrollments for the one-at-a-time baseline")
    parser.add_argument("--batch", type=int, default=None, help="claim size (default: the engine's)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100, help="events for the latency measurement")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between latency events")
    parser.add_argument("--profile", type=int, default=0, help="profile both paths on this many enrollments")
    parser.add_argument("--throughput-from", help="JSON of an earlier run's throughput part: measure latency only")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if args.batch is None:
        args.batch = int(os.environ.get("KIZUNA_JOURNEY_BATCH", "1000"))
    out = run(args)
    if args.profile or not args.samples:
        return
    text = render(out)
    print(text)
    if not args.no_doc:
        update_doc(text)


if __name__ == "__main__":
    main()
