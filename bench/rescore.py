"""Re-scoring benchmark: every contact's fit after a rule change, at a million contacts on PostgreSQL.

    .venv/bin/python bench/rescore.py                  # 1,000,000 contacts, updates docs/benchmarks.md
    .venv/bin/python bench/rescore.py --contacts 20000 --no-doc      # a smoke test

The database `kizuna_bench_rescore` is dropped and created, migrated, and filled with SQL
(generate_series): companies, then contacts with industries, sizes, prefectures, regions, titles
and addresses drawn like a Japanese B2B base. The default scoring model's five fit rules are used.

Measured, each as the median of `--repeat` runs, through `kizuna.scoring.rescoring` (the code the
worker runs):
- first scoring: no score rows yet, every contact written;
- a rule change that moves every contact (a new +N rule on all company addresses, N changing each
  run), the case the target is about: ≥ 50,000 contacts/s;
- a rule change that moves few (one industry rule's points), where only changes are written.
Baselines in the same run: reading the rule columns of every contact with a bare psycopg cursor
(what no Python pass can beat), and the whole re-score as one hand-written SQL statement (CASE
expressions in an INSERT … ON CONFLICT), the database doing all the work.

Then the engagement pass (events of the horizon scored again) on `--engagement-contacts` contacts
with `--events-per-contact` page views each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "## Re-scoring (bench/rescore.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_bench_rescore"


def fresh_database(pg_url: str) -> str:
    import psycopg

    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        show = {s: conn.execute(f"SHOW {s}").fetchone()[0] for s in
                ("server_version", "shared_buffers", "max_wal_size")}
    return (f"PostgreSQL {show['server_version'].split()[0]} (shared_buffers {show['shared_buffers']}, "
            f"max_wal_size {show['max_wal_size']})")


def drop_database(pg_url: str) -> None:
    import psycopg

    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem_kb = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
    return (f"{model.group(1).strip() if model else platform.machine()}, {os.cpu_count()} cores, "
            f"{mem_kb / 1024 / 1024:.0f} GiB, Python {platform.python_version()}")


# --- data ------------------------------------------------------------------------------------------

def _literal(field) -> str:
    """The SQL for a column's Django-side default (the database has none)."""
    if field.null:
        return "NULL"
    default = field.get_default()
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, int | float):
        return str(default)
    if isinstance(default, dict | list):
        return "'{}'::jsonb" if isinstance(default, dict) else "'[]'::jsonb"
    if isinstance(default, dt.datetime):
        return "now()"
    return "'" + str(default or "").replace("'", "''") + "'"


def insert_series(model, count: int, exprs: dict[str, str]) -> None:
    """INSERT … SELECT over generate_series(1, count) AS g, `exprs` giving columns in terms of g."""
    from django.db import connection

    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(field.column)
        values.append(exprs.get(field.column, _literal(field)))
    sql = (f'INSERT INTO {model._meta.db_table} ({", ".join(columns)}) '
           f'SELECT {", ".join(values)} FROM generate_series(1, {count}) AS g')
    with connection.cursor() as cursor:
        cursor.execute(sql)


def _pick(values: list[str], salt: int) -> str:
    """A deterministic, uneven choice from `values` per row (hash of g)."""
    array = "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"
    return f"({array})[1 + (abs(hashint4(g * {salt})) % {len(values)})]"


def generate(contacts: int) -> None:
    from django.db import connection

    from kizuna.contacts.models import Company, CompanySize, Contact, Industry
    from kizuna.contacts.reference import PREFECTURE_CHOICES

    companies = max(contacts // 20, 1)
    insert_series(Company, companies, {"name": "'株式会社サンプル' || g", "employees": "(abs(hashint4(g)) % 5000)"})
    prefectures = [code for code, _label in PREFECTURE_CHOICES]
    weighted = ["13"] * 30 + ["27"] * 10 + ["14"] * 8 + ["23"] * 8 + ["11"] * 5 + prefectures
    kanto = {"08", "09", "10", "11", "12", "13", "14"}
    titles = ["代表取締役", "取締役", "営業部長", "部長", "課長", "係長", "主任", "マネージャー", "Sales Manager", "担当",
              ""]
    first = connection.cursor()
    first.execute("SELECT min(id) FROM contacts_company")
    company_base = first.fetchone()[0]
    insert_series(Contact, contacts, {
        "email": "'c' || g || '@' || " + _pick(["example.co.jp", "sample.jp", "gmail.com", "corp.example.jp"], 3),
        "family_name": _pick(["佐藤", "鈴木", "高橋", "田中", "伊藤"], 5),
        "industry": _pick([*Industry.values, "manufacturing", "it", ""], 7),
        "company_size": _pick([*CompanySize.values, ""], 11),
        "prefecture": (pref := _pick(weighted, 13)),
        "region": f"CASE WHEN {pref} IN ({', '.join(repr(k) for k in sorted(kanto))}) THEN 'kanto' ELSE 'other' END",
        "job_title": _pick(titles, 17),
        "company_id": f"{company_base} + (abs(hashint4(g * 19)) % {companies})",
    })
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# --- measurements --------------------------------------------------------------------------------

def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def read_baseline(columns: list[str]) -> float:
    """Seconds to read the rule columns of every contact with a bare server-side cursor."""
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    start = time.perf_counter()
    with raw.transaction(), raw.cursor(name="bench_read") as cursor:
        cursor.itersize = 20_000
        cursor.execute(f"SELECT id, {', '.join(columns)} FROM contacts_contact ORDER BY id")
        for _row in cursor:
            pass
    return time.perf_counter() - start


def sql_baseline(model) -> float:
    """The same re-score as one SQL statement: CASE per rule, upsert of fit and grade."""
    from django.db import connection

    cases = []
    for rule in model.fit_rules.all():
        values = [v.strip().lower() for v in re.split(r"[,\n、]", rule.value) if v.strip()]
        quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
        if rule.field == "email_domain":
            column = "lower(split_part(c.email, '@', 2))"
        else:
            column = f"lower(c.{rule.field})"
        if rule.operator == "in":
            test = f"{column} IN ({quoted})"
        elif rule.operator == "equals":
            test = f"{column} = {quoted}"
        elif rule.operator == "contains":
            test = " OR ".join(f"strpos({column}, '{v}') > 0" for v in values)
        elif rule.operator == "not_empty":
            test = f"coalesce(c.{rule.field}, '') <> ''"
        else:
            raise SystemExit(f"the SQL baseline does not know {rule.operator}")
        cases.append(f"CASE WHEN {test} THEN {rule.points} ELSE 0 END")
    fit = " + ".join(cases) or "0"
    grade = (f"CASE WHEN f >= {model.grade_a} THEN 'A' WHEN f >= {model.grade_b} THEN 'B' "
             f"WHEN f >= {model.grade_c} THEN 'C' ELSE 'D' END")
    sql = f"""
        INSERT INTO scoring_contactscore (model_id, contact_id, fit, grade, engagement, engagement_at, rank_key,
                                          hot, updated_at)
        SELECT {model.pk}, id, f, {grade}, 0, now(), -1e9, false, now()
        FROM (SELECT c.id, {fit} AS f FROM contacts_contact c) AS t
        ON CONFLICT (model_id, contact_id) DO UPDATE SET fit = EXCLUDED.fit, grade = EXCLUDED.grade,
                                                        updated_at = EXCLUDED.updated_at
        WHERE scoring_contactscore.fit IS DISTINCT FROM EXCLUDED.fit
           OR scoring_contactscore.grade IS DISTINCT FROM EXCLUDED.grade
    """
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql)
    return time.perf_counter() - start


def engagement_setup(count: int, per_contact: int) -> None:
    from django.db import connection

    from kizuna.events.models import Event

    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id) FROM contacts_contact")
        base = cursor.fetchone()[0]
    total = count * per_contact
    paths = ["/", "/pricing", "/case/kobe-seiki", "/product", "/blog/dx", "/careers", "/pricing/enterprise"]
    insert_series(Event, total, {
        "message_id": "'bench-' || g", "type": "'page'", "name": "''",
        "contact_id": f"{base} + ((g - 1) % {count})",
        "occurred_at": "now() - ((abs(hashint4(g * 23)) % (60 * 24 * 60)) || ' minutes')::interval",
        "received_at": "now()", "processed_at": "now()", "source": "'bench'",
        "path": (path := _pick(paths, 29)), "url": f"'https://www.example.co.jp' || {path}",
    })
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE events_event")


def run(args) -> dict:
    import django

    django.setup()
    from django.core.management import call_command

    from kizuna.scoring import rescoring
    from kizuna.scoring.models import ContactScore, FitRule
    from kizuna.scoring.setup import ensure_defaults

    call_command("migrate", verbosity=0)
    seconds, _ = timed(lambda: generate(args.contacts))
    print(f"generated {args.contacts:,} contacts in {seconds:.0f} s", flush=True)
    model = ensure_defaults()
    fields = sorted({r.field for r in model.fit_rules.all()} - {"email_domain"} | {"email"})
    out: dict = {"contacts": args.contacts, "repeat": args.repeat}

    first, changed = timed(lambda: rescoring.rescore_fit(model))
    out["first"] = {"seconds": first, "changed": changed}
    print(f"first scoring: {first:.1f} s, {changed:,} written", flush=True)

    everyone, read, sql = [], [], []
    extra = FitRule.objects.create(model=model, field="email", operator="not_empty", value="", points=1,
                                   position=99)
    for n in range(args.repeat):
        extra.points = 2 + n
        extra.save()
        seconds, changed = timed(lambda: rescoring.rescore_fit(model))
        everyone.append((seconds, changed))
        print(f"rule change moving everyone: {seconds:.1f} s, {changed:,} changed", flush=True)
        read.append(read_baseline(fields))
        extra.points = 100 + n  # the SQL statement moves everyone too
        extra.save()
        sql.append(sql_baseline(model))
        print(f"baselines: read {read[-1]:.1f} s, one SQL statement {sql[-1]:.1f} s", flush=True)
    extra.delete()
    rescoring.rescore_fit(model)

    few = []
    industry = FitRule.objects.get(model=model, field="industry")
    for n in range(args.repeat):
        industry.points = 21 + n
        industry.save()
        few.append(timed(lambda: rescoring.rescore_fit(model)))
        print(f"rule change moving few: {few[-1][0]:.1f} s, {few[-1][1]:,} changed", flush=True)
    out["everyone"], out["few"], out["read"], out["sql"] = everyone, few, read, sql
    assert ContactScore.objects.filter(model=model).count() == args.contacts

    if args.engagement_contacts:
        engagement_setup(args.engagement_contacts, args.events_per_contact)
        runs = []
        for _ in range(args.repeat):
            seconds, changed = timed(lambda: rescoring.rescore_engagement(model))
            runs.append((seconds, changed))
            print(f"engagement pass: {seconds:.1f} s, {changed:,} changed", flush=True)
        out["engagement"] = {"contacts": len(rescoring.engagement_contacts(model, django_now())),
                             "events": args.engagement_contacts * args.events_per_contact, "runs": runs}
    return out


def django_now():
    from django.utils import timezone

    return timezone.now()


def render(out: dict, server: str) -> str:
    n = out["contacts"]
    med = statistics.median
    everyone_s = med(s for s, _ in out["everyone"])
    few_s = med(s for s, _ in out["few"])
    read_s, sql_s = med(out["read"]), med(out["sql"])
    few_changed = med(c for _, c in out["few"])
    lines = [
        SECTION, "",
        f"Run {dt.date.today().isoformat()} on {machine()}; {server}. {n:,} contacts in "
        f"{max(n // 20, 1):,} companies, the default model's five fit rules (industry, title, company size, "
        f"region, free-mail domain) plus the rule being changed. Medians of {out['repeat']} runs; the worker's "
        "code (`kizuna.scoring.rescoring`), one process.",
        "",
        "| Re-score | Contacts changed | Seconds | Contacts/s |",
        "|---|---:|---:|---:|",
        f"| First scoring (no score rows yet) | {out['first']['changed']:,} | {out['first']['seconds']:.1f} | "
        f"{n / out['first']['seconds']:,.0f} |",
        f"| Rule change moving every contact | {n:,} | {everyone_s:.1f} | **{n / everyone_s:,.0f}** |",
        f"| Rule change moving few (industry points) | {few_changed:,.0f} | {few_s:.1f} | {n / few_s:,.0f} |",
        f"| Baseline: read the rule columns, bare cursor | — | {read_s:.1f} | {n / read_s:,.0f} |",
        f"| Baseline: the whole re-score as one SQL statement | {n:,} | {sql_s:.1f} | {n / sql_s:,.0f} |",
        "",
        f"Target ≥ 50,000 contacts/s after a rule change: {'met' if n / everyone_s >= 50_000 else 'NOT met'} "
        f"({n / everyone_s:,.0f}/s). Against the single SQL statement the Python pass takes "
        f"{everyone_s / sql_s:.2f}× its time, and {everyone_s / read_s:.2f}× the time of merely reading the "
        "columns; the rules are evaluated in Python so that they mean exactly what the editor and the live "
        "scorer mean (case folding, lists, custom fields).",
    ]
    if "engagement" in out:
        e = out["engagement"]
        seconds = med(s for s, _ in e["runs"])
        lines += ["", f"Engagement pass (the events of the last ten half-lives scored again with the current rules): "
                      f"{e['contacts']:,} contacts with {e['events']:,} page views in {seconds:.1f} s, "
                      f"{e['contacts'] / seconds:,.0f} contacts/s, {e['events'] / seconds:,.0f} events/s (median)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engagement-contacts", type=int, default=20_000)
    parser.add_argument("--events-per-contact", type=int, default=10)
    parser.add_argument("--pg-url", default=os.environ.get("KIZUNA_BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--no-doc", action="store_true", help="print the report, leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    args = parser.parse_args()
    server = fresh_database(args.pg_url)
    os.environ.update({"KIZUNA_DATABASE_URL": args.pg_url, "DJANGO_SETTINGS_MODULE": "kizuna.settings",
                       "KIZUNA_DATA_DIR": str(Path("/tmp") / "kizuna-bench-rescore"),
                       "KIZUNA_SECRET_KEY": "bench-secret-key-0123456789-0123456789-0123456789",
                       "KIZUNA_LOG_LEVEL": "WARNING"})
    try:
        out = run(args)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_database(args.pg_url)
    report = render(out, server)
    print(report)
    if not args.no_doc:
        from bench.results import write_section

        write_section(SECTION, report)


if __name__ == "__main__":
    main()
