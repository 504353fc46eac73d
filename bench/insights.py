"""Insights benchmark: the dashboard and every report at 1,000,000 contacts and 10,000,000 events, on PostgreSQL.

    .venv/bin/python bench/insights.py                          # generate (once), build rollups, measure, update docs
    .venv/bin/python bench/insights.py --fresh                  # generate the kept database again
    .venv/bin/python bench/insights.py --contacts 20000 --events 200000 --no-doc   # smoke run

The database `kizuna_insights_bench` is kept between runs (generating takes a while on 2 cores), and
a later run only measures again; --fresh drops and makes it again. A child process fills it with SQL only (INSERT … SELECT over
generate_series): companies and contacts as bench/segments.py makes them (Japanese B2B names,
stages, sources), each contact's lifecycle transitions up to its current stage over the last year,
visits (sessions with source, referrer, search keyword, UTM campaign, company) and their page views
(as events and `PageView` rows with visible dwell time), tracked product-usage events, renewals and
churn of customers, and one bulk send's messages with human and machine opens — together
`--events` rows in the event log. Indexes are dropped during the load and made again afterwards.

Then `kizuna insights rebuild` builds the rollups (timed), and a second child process renders each
page with Django's test client as an admin: one warm-up, then the median of 3. The baseline, in the
same run, is the render of a trivial page (/healthz) and of the old home page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Insights reports (bench/insights.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_insights_bench"
DAYS = 365
TARGET_S = 1.0
PAGES = ["insights:dashboard", "insights:funnel", "insights:web", "insights:email", "insights:conversion",
         "insights:attribution", "insights:retention"]
USAGE = [("Feature A Used", 30), ("Feature D Used", 15), ("Report Exported", 20), ("Dashboard Viewed", 25),
         ("Quote Requested", 3), ("CTA Clicked", 7)]
SOURCES = [("search", "www.google.co.jp", 30), ("search", "search.yahoo.co.jp", 10), ("direct", "", 30),
           ("referral", "news.example.jp", 8), ("social", "www.linkedin.com", 4), ("email", "", 10), ("paid", "", 8)]
KEYWORDS = ["MA ツール 比較", "マーケティングオートメーション", "リードナーチャリング", "BtoB メール配信", "スコアリング"]
CAMPAIGNS = ["ma-2026", "seminar-12", "newsletter", "whitepaper"]


@functools.cache
def _segments():
    """bench/segments.py, whose data generator and database helpers this benchmark shares."""
    spec = importlib.util.spec_from_file_location("bench_segments", Path(__file__).with_name("segments.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def database_exists(pg_url: str) -> bool:
    with _segments().admin_connect(pg_url) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [pg_url.rsplit("/", 1)[1]])
                    .fetchone())


def fresh_database(pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    if not name.startswith("kizuna_insights_bench"):
        raise SystemExit("the benchmark only drops databases named kizuna_insights_bench…")
    with _segments().admin_connect(pg_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def run_child(mode: str, env: dict[str, str], options: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(options)], env=env,  # noqa: S603
                         stdout=subprocess.PIPE, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stdout}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- generation (child) --------------------------------------------------------------------------

def child_generate(options: dict) -> dict:
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from kizuna.accounts.models import User
    from kizuna.contacts.models import SubscriptionTopic
    from kizuna.messaging.models import BulkSend, EmailTemplate, Sender, TemplateVersion

    seg = _segments()
    started = time.perf_counter()
    now = timezone.now()
    contacts, events = options["contacts"], options["events"]
    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '512MB'")
        cur.execute("SET work_mem = '128MB'")
    loader = seg.Loader(contacts, events, now)
    with transaction.atomic():
        owners = [User.objects.create(username=f"sales{i}", role="sales", email=f"sales{i}@example.co.jp").pk
                  for i in range(12)]
        sender = Sender.objects.create(name="マーケティング部", from_name="株式会社サンプル", from_email="news@example.co.jp",
                                       organisation="株式会社サンプル", postal_address="東京都千代田区丸の内1-1-1")
        template = EmailTemplate.objects.create(name="メールマガジン 12月号", sender=sender,
                                                topic=SubscriptionTopic.objects.filter(key="newsletter").first())
        version = TemplateVersion.objects.create(template=template, number=1, subject="【サンプル通信】MA活用の最新事例",
                                                 html="<p>x</p>", text="", compiled_html="<p>x</p>")
        bulk = BulkSend.objects.create(name=template.name, template=template, version=version, status="done",
                                       started_at=now - dt.timedelta(days=10), finished_at=now - dt.timedelta(days=10))
    tables = ["contacts_company", "contacts_contact", "events_event", "events_session", "events_pageview",
              "lifecycle_stagechange", "messaging_message"]
    with connection.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
    definitions = loader.drop_indexes(tables)
    log("companies and contacts")
    loader.companies_({"owners": owners})
    loader.contacts_({"owners": owners})
    sql = loader.sql
    stages = ["subscriber", "lead", "mql", "sql", "opportunity", "customer", "evangelist"]
    log("lifecycle transitions")
    sql("""
        INSERT INTO lifecycle_stagechange (contact_id, from_stage, to_stage, at, via)
        SELECT c.id, CASE WHEN k = 1 THEN '' ELSE (%(stages)s::text[])[k - 1] END, (%(stages)s::text[])[k],
               b.base + (%(now)s - b.base) * (k::float / (b.r + 1)) * (0.6 + 0.4 * b.jitter), 'import'
        FROM contacts_contact c
        CROSS JOIN LATERAL (SELECT array_position(%(stages)s::text[], c.lifecycle_stage::text) r,
                                   greatest(c.created_at, %(now)s - interval '365 days') base,
                                   random() jitter) b
        CROSS JOIN LATERAL generate_series(1, b.r) k""", {"stages": stages, "now": now})
    transitions = loader.scalar("SELECT count(*) FROM lifecycle_stagechange")
    # The event budget: messages' opens are not events here; page views ~72 %, usage ~25 %, the rest customers'.
    sessions = max(100, int(events * 0.72 / 4.5))
    paths = seg.pool([(p, w) for p, _t, w in seg.PAGES], 400)
    source_pool = seg.pool([(i, w) for i, (_k, _h, w) in enumerate(SOURCES, 1)], 100)
    log(f"{sessions:,} visits")
    active = max(10, contacts // 2)
    sql(f"""
        INSERT INTO events_session (id, anonymous_id, contact_id, started_at, last_activity_at, page_views, engaged_ms,
            entry_url, entry_path, exit_url, exit_path, referrer, source_kind, source_host, source_engine, keyword,
            click_id, utm_source, utm_medium, utm_campaign, utm_term, utm_content, ip, country, network_org,
            company_id, company_name, browser, os, device, bot)
        SELECT s.i, coalesce('c' || s.cid, 'anon-' || s.anon), s.cid, s.at, s.at + s.n * interval '40 seconds', s.n,
               s.n * 35000, '', (%(paths)s::text[])[1 + (s.i * 31 + 17) %% {len(paths)}], '',
               (%(paths)s::text[])[1 + (s.i * 31 + s.n * 17) %% {len(paths)}],
               CASE WHEN (%(hosts)s::text[])[s.src] <> '' THEN 'https://' || (%(hosts)s::text[])[s.src] || '/' ELSE '' END,
               (%(kinds)s::text[])[s.src], (%(hosts)s::text[])[s.src], '',
               CASE WHEN (%(kinds)s::text[])[s.src] = 'search' THEN (%(keywords)s::text[])[1 + s.i %% 5] ELSE '' END,
               '', '', '', CASE WHEN (%(kinds)s::text[])[s.src] IN ('email', 'paid') THEN
                   (%(campaigns)s::text[])[1 + s.i %% 4] ELSE '' END, '', '', NULL, 'JP', '',
               NULL, CASE WHEN s.i %% 9 = 0 THEN '株式会社サンプル' || (s.i %% 300) ELSE '' END, 'Chrome', 'Windows',
               'desktop', CASE WHEN s.rb < 0.02 THEN 'user agent: Googlebot' ELSE '' END
        FROM (SELECT i, CASE WHEN random() < 0.7 THEN {loader.contact_of_rank(f"floor({active} * power(random(), 2))")}
                        END cid, floor(random() * 2000000)::bigint anon,
                     %(start)s + (i - 1) * %(step)s AS at, 1 + floor(power(random(), 1.5) * 8)::int n,
                     (%(sources)s::int[])[1 + floor(random() * {len(source_pool)})::int] src, random() rb
              FROM generate_series(1, %(count)s) i OFFSET 0) s""",
        {"paths": paths, "hosts": [h for _k, h, _w in SOURCES], "kinds": [k for k, _h, _w in SOURCES],
         "keywords": KEYWORDS, "campaigns": CAMPAIGNS, "sources": source_pool, "start": now - dt.timedelta(days=DAYS),
         "step": dt.timedelta(days=DAYS) / sessions, "count": sessions})
    log("page views as events and page views")
    sql(f"""
        INSERT INTO events_event (id, message_id, type, name, properties, traits, context, anonymous_id, user_id,
            occurred_at, received_at, processed_at, source, ip, user_agent, url, path, title, referrer, utm_source,
            utm_medium, utm_campaign, utm_term, utm_content, bot, contact_id, session_id)
        SELECT s.id * 16 + k, 'pv-' || (s.id * 16 + k), 'page', '', '{{}}', '{{}}', '{{}}', s.anonymous_id, '',
               s.started_at + k * interval '40 seconds', s.started_at + k * interval '40 seconds',
               s.started_at + k * interval '40 seconds', 'Website', NULL, '',
               'https://www.example.co.jp' || (%(paths)s::text[])[1 + (s.id * 31 + k * 17) %% {len(paths)}],
               (%(paths)s::text[])[1 + (s.id * 31 + k * 17) %% {len(paths)}], '', '', '', '', s.utm_campaign, '', '',
               s.bot, s.contact_id, s.id
        FROM events_session s CROSS JOIN LATERAL generate_series(1, s.page_views) k""", {"paths": paths})
    sql("""
        INSERT INTO events_pageview (event_id, page_view_id, session_id, contact_id, anonymous_id, seq, occurred_at,
            url, path, title, dwell_ms, measured, scroll_depth, is_exit)
        SELECT e.id, e.message_id, e.session_id, e.contact_id, e.anonymous_id, (e.id % 16)::int, e.occurred_at,
               e.url, e.path, '', 5000 + (e.id * 7919) % 60000, (e.id % 3) <> 0, 50,
               (e.id % 16)::int = s.page_views
        FROM events_event e JOIN events_session s ON s.id = e.session_id WHERE e.type = 'page'""")
    page_events = loader.scalar("SELECT count(*) FROM events_event")
    base = sessions * 16 + 100
    usage_pool = seg.pool([(i, w) for i, (_n, w) in enumerate(USAGE, 1)], 100)
    log("customers' early usage, renewals and churn")
    sql("""
        INSERT INTO events_event (id, message_id, type, name, properties, traits, context, anonymous_id, user_id,
            occurred_at, received_at, processed_at, source, ip, user_agent, url, path, title, referrer, utm_source,
            utm_medium, utm_campaign, utm_term, utm_content, bot, contact_id, session_id)
        SELECT %(base)s + row_number() OVER (), 'cu-' || (%(base)s + row_number() OVER ()), 'track', x.name, '{}',
               '{}', '{}', 'c' || x.contact_id, '', x.at, x.at, x.at, 'App', NULL, '', '', '', '', '', '', '', '', '',
               '', '', x.contact_id, NULL
        FROM (SELECT c.contact_id, v.name, v.at FROM
                (SELECT contact_id, min(at) at, random() r1, random() r2 FROM lifecycle_stagechange
                 WHERE to_stage = 'customer' GROUP BY contact_id) c
              CROSS JOIN LATERAL (VALUES
                 (CASE WHEN c.r1 < 0.5 THEN 'Feature D Used' END, c.at + interval '5 days'),
                 (CASE WHEN c.r2 < CASE WHEN c.r1 < 0.5 THEN 0.7 ELSE 0.35 END THEN 'Renewed'
                       WHEN c.r2 > 0.9 THEN 'Churned' END, c.at + interval '200 days')) v(name, at)
              WHERE v.name IS NOT NULL AND v.at < %(now)s) x""", {"base": base, "now": now})
    done = loader.scalar("SELECT count(*) FROM events_event")
    usage = max(0, events - done)
    base = loader.scalar("SELECT max(id) FROM events_event") + 1
    log(f"{usage:,} product-usage events")
    sql(f"""
        INSERT INTO events_event (id, message_id, type, name, properties, traits, context, anonymous_id, user_id,
            occurred_at, received_at, processed_at, source, ip, user_agent, url, path, title, referrer, utm_source,
            utm_medium, utm_campaign, utm_term, utm_content, bot, contact_id, session_id)
        SELECT %(base)s + i, 'us-' || (%(base)s + i), 'track', (%(names)s::text[])[s.u], '{{}}', '{{}}', '{{}}',
               'c' || s.cid, '', s.at, s.at, s.at, 'App', NULL, '', '', '', '', '', '', '', '', '', '', '', s.cid, NULL
        FROM (SELECT i, {loader.contact_of_rank(f"floor({active} * power(random(), 2))")} cid,
                     (%(usage)s::int[])[1 + floor(random() * {len(usage_pool)})::int] u,
                     %(start)s + random() * interval '{DAYS} days' AS at
              FROM generate_series(1, %(count)s) i OFFSET 0) s""",
        {"base": base, "names": [n for n, _w in USAGE], "usage": usage_pool, "start": now - dt.timedelta(days=DAYS),
         "count": usage})
    log("one bulk send")
    sql("""
        INSERT INTO messaging_message (idempotency_key, contact_id, to_email, version_id, sender_id, kind, bulk_id,
            variant, extra, status, priority, due_at, attempts, claimed_by, created_at, sent_at, provider_id, error,
            bounce, opens, clicks, opened_at, clicked_at, machine_opened_at)
        SELECT 'b-' || c.id, c.id, c.email, %(version)s, %(sender)s, 'marketing', %(bulk)s, '', '{}', 'sent', 0,
               %(at)s, 1, '', %(at)s, %(at)s + (c.id %% 600) * interval '1 second', '', '', '', 0, 0,
               CASE WHEN c.id %% 5 = 0 THEN %(at)s + interval '2 hours' END,
               CASE WHEN c.id %% 25 = 0 THEN %(at)s + interval '3 hours' END,
               CASE WHEN c.id %% 7 = 0 THEN %(at)s + interval '1 minute' END
        FROM contacts_contact c WHERE c.id %% 5 = 1""",
        {"version": version.pk, "sender": sender.pk, "bulk": bulk.pk, "at": now - dt.timedelta(days=10)})
    log("indexes, sequences, vacuum")
    with connection.cursor() as cur:
        cur.execute("SET session_replication_role = origin")
    for definition in definitions:
        sql(definition)
    for table in ["contacts_company", "contacts_contact", "events_event", "events_session", "events_pageview",
                  "lifecycle_stagechange", "messaging_message"]:
        sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    connection.cursor().execute("VACUUM ANALYZE")
    counts = {t: loader.scalar(f"SELECT count(*) FROM {t}") for t in tables}  # noqa: S608
    return {"seconds": time.perf_counter() - started, "counts": counts, "transitions": transitions,
            "page_events": page_events, "db_gb": loader.scalar("SELECT pg_database_size(current_database())") / 1e9}


# --- rollups and measurement (child) ----------------------------------------------------------------------

def child_rebuild(options: dict) -> dict:
    import django

    django.setup()
    from django.db import connection

    from kizuna.insights import rollups

    started = time.perf_counter()
    done = rollups.rebuild()
    seconds = time.perf_counter() - started
    connection.cursor().execute("ANALYZE")
    started = time.perf_counter()
    rollups.update()  # nothing new: what an idle worker pass costs
    idle = time.perf_counter() - started
    return {"seconds": seconds, "idle_pass_s": idle, "done": done}


def child_update(options: dict) -> dict:
    """One worker pass on a kept database (after new code's migrations: new rollups fill on their first pass)."""
    import django

    django.setup()
    from kizuna.insights import rollups

    started = time.perf_counter()
    done = rollups.update()
    return {"seconds": time.perf_counter() - started, "done": done}


def child_measure(options: dict) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from kizuna.accounts.models import User
    from kizuna.insights.models import (
        ContactPage,
        CustomerEvent,
        CustomerFact,
        DailyFlow,
        DailyPage,
        DailySource,
        DailyStage,
    )

    settings.ALLOWED_HOSTS = ["*"]
    admin, _created = User.objects.get_or_create(username="bench-admin", defaults={"role": "admin"})
    client = Client()
    client.force_login(admin)
    runs = options["runs"]

    def timed(url: str) -> tuple[list[float], float, int]:
        first = time.perf_counter()
        response = client.get(url)
        warm = time.perf_counter() - first
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            client.get(url)
            times.append(time.perf_counter() - t)
        return times, warm, len(response.content)

    out: dict = {"pages": {}, "baseline": {}}
    for name, url in (("/healthz", reverse("web:healthz")), ("home page (web:home)", reverse("web:home"))):
        times, warm, _size = timed(url)
        out["baseline"][name] = {"median": statistics.median(times), "warm": warm}
    for name in PAGES:
        times, warm, size = timed(reverse(name))
        out["pages"][name] = {"median": statistics.median(times), "warm": warm, "bytes": size, "runs": times}
    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        out["pg"] = cur.fetchone()[0]
    out["rollup_rows"] = {m.__name__: m.objects.count() for m in (DailyPage, DailyFlow, DailySource, DailyStage,
                                                                   ContactPage, CustomerFact, CustomerEvent)}
    out["load"] = os.getloadavg()
    return out


def render(gen: dict, rebuild: dict, m: dict, options: dict) -> str:
    c = gen["counts"]
    base = m["baseline"]["/healthz"]["median"]
    lines = [
        SECTION, "",
        f"- Date: {dt.datetime.now(dt.UTC).date().isoformat()}; {os.cpu_count()} cores shared with other work "
        f"(load average at the end {m['load'][0]:.1f}); PostgreSQL {m['pg']}",
        f"- Dataset (SQL, {gen['seconds'] / 60:.1f} min, {gen['db_gb']:.1f} GB): {c['contacts_contact']:,} contacts, "
        f"{c['events_event']:,} events over {DAYS} days ({gen['page_events']:,} page views in "
        f"{c['events_session']:,} visits, the rest product usage, renewals and churn), "
        f"{c['lifecycle_stagechange']:,} stage transitions, {c['messaging_message']:,} messages",
        f"- Rollups: `kizuna insights rebuild` {rebuild['seconds'] / 60:.1f} min; an incremental pass with nothing "
        f"new {rebuild['idle_pass_s'] * 1000:.0f} ms; rows: "
        + ", ".join(f"{k} {v:,}" for k, v in m["rollup_rows"].items())
        + (f"; on the kept database a worker pass took {rebuild['kept_pass']['seconds']:.1f} s "
           f"({rebuild['kept_pass']['done'] or 'nothing new'})" if "kept_pass" in rebuild else ""),
        f"- Each page rendered by Django's test client as an admin with its default period, one warm-up, then the "
        f"median of {options['runs']}; baseline in the same run: /healthz {base * 1000:.1f} ms, the old home page "
        f"{m['baseline']['home page (web:home)']['median'] * 1000:.0f} ms",
        "",
        "| page | median | first (cold) | target ≤ 1 s | ratio to /healthz |",
        "|---|---|---|---|---|",
    ]
    for name, v in m["pages"].items():
        ok = "met" if v["median"] <= TARGET_S else "**not met**"
        lines.append(f"| {name} | **{v['median'] * 1000:.0f} ms** | {v['warm'] * 1000:.0f} ms | {ok} | "
                     f"{v['median'] / base:.0f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--fresh", action="store_true", help="drop and generate the database again")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_options", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = {"generate": child_generate, "rebuild": child_rebuild, "update": child_update,
                  "measure": child_measure}[args.child](
            json.loads(args.child_options))
        print(json.dumps(result, default=str))
        return
    data_dir = tempfile.mkdtemp(prefix="kizuna-insights-bench-")
    env = _segments().child_env(args.pg, data_dir)
    state = ROOT / "var" / f"{args.pg.rsplit('/', 1)[1]}.json"
    options = {"contacts": args.contacts, "events": args.events, "runs": args.runs}
    if not args.fresh and database_exists(args.pg) and state.exists():
        gen, rebuild = json.loads(state.read_text())
        subprocess.run([sys.executable, "-m", "kizuna.cli", "migrate", "-v0"], env=env, check=True,  # noqa: S603
                       cwd=ROOT, stdout=subprocess.DEVNULL)
        rebuild["kept_pass"] = run_child("update", env, options)
        log(f"worker pass on the kept database: {rebuild['kept_pass']}")
    else:
        fresh_database(args.pg)
        subprocess.run([sys.executable, "-m", "kizuna.cli", "init", "-v0"], env=env, check=True,  # noqa: S603
                       cwd=ROOT, stdout=subprocess.DEVNULL)
        gen = run_child("generate", env, options)
        log(f"generated in {gen['seconds'] / 60:.1f} min: {gen['counts']}")
        rebuild = run_child("rebuild", env, options)
        log(f"rollups rebuilt in {rebuild['seconds'] / 60:.1f} min")
        state.parent.mkdir(exist_ok=True)
        state.write_text(json.dumps([gen, rebuild]))
    measured = run_child("measure", env, options)
    report = render(gen, rebuild, measured, options)
    print(report)
    if args.doc:
        sys.path.insert(0, str(ROOT / "bench"))
        from results import write_section

        write_section(SECTION, report)


if __name__ == "__main__":
    main()
