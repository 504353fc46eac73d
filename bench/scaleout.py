"""Scale-out benchmark: ingestion and journeys with 1, 2 and 4 worker processes on PostgreSQL.

    .venv/bin/python bench/scaleout.py                 # 3 runs, writes docs/benchmarks.md
    .venv/bin/python bench/scaleout.py --runs 1 --no-doc --backlog 6000 --contacts 600   # a smoke run

On the database kizuna_bench_scaleout (dropped and created): `kizuna init`, one `kizuna serve
--workers 2`, then for each number N of worker processes, in every run:

1. ingestion under processing: N `kizuna worker --only events` run while wrk posts batches of 100
   events (bench/ingest.py's realistic page and track events of 1,000 browsers) for a few seconds;
   events/s acknowledged (2xx × 100) and events/s processed meanwhile (rows added to the log);
   the baseline is the same server answering /v1/_noop at the same concurrency;
2. processing alone: a backlog of the same events (copied from a first wrk run, each run with new
   message ids) appears in the inbox in one commit while N idle workers wait; the time until the
   inbox is empty gives events/s processed;
3. journeys: a live journey of three actions (add a tag, set the job title, add a tag) has every
   bench contact enrolled while it is paused; N `kizuna worker --only journeys` start, the journey
   goes live, and the time until every run is done gives steps/s (StepRun rows / wall time).

The event log is emptied between measurements so every one starts from the same state. At the
end: storage per event and per contact from the tables' sizes, and how fast retention deletes.
The load generator, server, workers and PostgreSQL share the machine's cores; /proc/loadavg is
read before each measurement and reported, with the machine's busy share that is not ours.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import (  # noqa: E402 - the bench directory is not a package
    BATCH_EVENTS,
    KIZUNA,
    ROOT,
    Database,
    Load,
    Scenario,
    Server,
    child_env,
    ensure_wrk,
    free_port,
    fresh_database,
    kizuna,
    machine,
)

SECTION = "## Scale-out: 1, 2 and 4 worker processes (bench/scaleout.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_bench_scaleout"
JOURNEY_BATCH = 200  # claim size set for the workers (KIZUNA_JOURNEY_BATCH; PostgreSQL's default is now 1000)
LOG_TABLES = "events_event, events_pageview, events_session, events_visitor, scoring_scoreentry"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


class Workers:
    """N `kizuna worker --only <loop>` processes, each in its own process group."""

    def __init__(self, env: dict[str, str], n: int, loop: str, database: Database, logfile: Path):
        self.database, self.name = database, f"kizuna-bench-{loop}"
        env = {**env, "PGAPPNAME": self.name}  # libpq names the workers' connections
        with logfile.open("ab") as out:
            self.procs = [subprocess.Popen([*KIZUNA, "worker", "--only", loop], env=env, cwd=ROOT,  # noqa: S603
                                           stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                          for _ in range(n)]
        deadline = time.monotonic() + 90
        while self._backends() < n:  # each loop holds a connection once it runs
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise SystemExit(f"workers did not start:\n{logfile.read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(2.0)  # user-agent rules and IP data load after the first connection

    def _backends(self) -> int:
        return self.database.run("SELECT count(*) FROM pg_stat_activity WHERE application_name = ?",
                                 (self.name,))[0][0]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def empty_log(database: Database) -> None:
    database.run(f"TRUNCATE {LOG_TABLES} CASCADE", fetch=False)


def wait_until(check, timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise SystemExit("timed out")
        time.sleep(0.05)
    return time.monotonic()


def ingestion_under_processing(n, env, database, load, seconds, logfile) -> dict:
    workers = Workers(env, n, "events", database, logfile)
    try:
        before = database.count("events_event")
        result, _cpu = load.run(Scenario("batch", "/v1/batch", "batch", 8, BATCH_EVENTS), seconds)
        processed = database.count("events_event") - before
    finally:
        workers.stop()
    database.run("TRUNCATE events_incomingevent", fetch=False)
    empty_log(database)
    return {"acknowledged": result.rps * BATCH_EVENTS, "processed": processed / seconds, "p99": result.p99,
            "non2xx": result.non2xx}


def processing_alone(n, env, database, tag, logfile) -> dict:
    workers = Workers(env, n, "events", database, logfile)
    try:
        # New message ids (in the column and in the payload) for every run: the log dedupes by them.
        database.run("INSERT INTO events_incomingevent (message_id, lane, received_at, payload, error) "
                     "SELECT message_id || ?, lane, received_at, "
                     "regexp_replace(payload, '\"messageId\":\"([^\"]*)\"', '\"messageId\":\"\\1' || ? || '\"'), '' "
                     "FROM bench_backlog", (tag, tag), fetch=False)
        start = time.monotonic()
        end = wait_until(lambda: database.count("events_incomingevent") == 0, 900)
    finally:
        workers.stop()
    done = database.count("events_event")
    failed = database.count("events_incomingevent")
    empty_log(database)
    return {"events": done, "seconds": end - start, "rate": done / (end - start), "failed": failed}


def journeys(n, env, database, contact_ids, tag, logfile) -> dict:
    from kizuna.journeys import engine
    from kizuna.journeys.models import Journey, StepRun

    j = Journey(name=f"bench {tag}", entry=Journey.Entry.EVERY_TIME)
    engine.save_journey(j, {"trigger": {"type": "manual"}, "nodes": [
        {"id": "a", "type": "add_tag", "tag": f"bench-{tag}", "next": "b"},
        {"id": "b", "type": "update_field", "field": "job_title", "value": f"部長 {tag}", "next": "c"},
        {"id": "c", "type": "add_tag", "tag": f"done-{tag}"}]})
    engine.set_status(j, Journey.Status.LIVE)
    enroll_start = time.monotonic()
    enrolled = engine.enroll_many(j, contact_ids)
    enroll_seconds = time.monotonic() - enroll_start
    Journey.objects.filter(pk=j.pk).update(status=Journey.Status.PAUSED)  # held until the workers are up
    from django.db import connection

    connection.close()
    workers = Workers(env, n, "journeys", database, logfile)
    try:
        Journey.objects.filter(pk=j.pk).update(status=Journey.Status.LIVE)
        connection.close()
        start = time.monotonic()
        end = wait_until(lambda: database.run(
            "SELECT count(*) FROM journeys_enrollment WHERE journey_id = ? AND state IN ('active', 'waiting')",
            (j.pk,))[0][0] == 0, 900)
    finally:
        workers.stop()
    steps = StepRun.objects.filter(enrollment__journey=j).count()
    failed = database.run("SELECT count(*) FROM journeys_enrollment WHERE journey_id = ? AND state = 'failed'",
                          (j.pk,))[0][0]
    connection.close()
    return {"enrolled": enrolled, "enroll_rate": enrolled / enroll_seconds, "steps": steps,
            "seconds": end - start, "rate": steps / (end - start), "failed": failed}


def storage(database: Database) -> dict:
    def size(table: str) -> int:
        return database.run("SELECT pg_total_relation_size(?::regclass)", (table,))[0][0]

    tables = ["events_event", "events_pageview", "events_session", "events_visitor", "contacts_contact",
              "contacts_contact_tags", "accounts_auditentry", "journeys_enrollment", "journeys_steprun"]
    out = {}
    for table in tables:
        try:
            out[table] = (size(table), database.count(table))
        except Exception:  # noqa: BLE001 - a table another version names differently
            continue
    return out


def retention_rate() -> dict:
    from django.conf import settings
    from django.utils import timezone

    from kizuna.events import retention
    from kizuna.events.models import Event

    settings.KIZUNA_EVENT_RETENTION_DAYS = 1
    total = Event.objects.count()
    start = time.monotonic()
    counts = retention.purge(now=timezone.now() + dt.timedelta(days=2))
    seconds = time.monotonic() - start
    return {"events": total, "deleted": counts.get("events.Event", 0), "seconds": seconds,
            "rate": counts.get("events.Event", 0) / seconds if seconds else 0.0}


def run(args: argparse.Namespace) -> dict:
    ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="kizuna-scaleout-"))
    logfile = work / "processes.log"
    server_desc = fresh_database("postgres", args.pg_url)
    port = free_port()
    env = child_env("postgres", work / "data", args.pg_url, port)
    env["KIZUNA_JOURNEY_BATCH"] = str(JOURNEY_BATCH)  # several batches for 600 runs, so N workers share them
    (work / "data").mkdir()
    kizuna(env, "init", "-v0")
    key = kizuna(env, "shell", "-c", "from kizuna.events.models import WriteKey; "
                 "print(WriteKey.objects.create(name='Benchmark').key)").strip().splitlines()[-1]
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))  # this checkout's kizuna, as the child processes get (PYTHONPATH)
    import django

    django.setup()
    from django.db import connection

    from kizuna.contacts.models import Contact

    database = Database("postgres", work / "data", args.pg_url)
    out: dict = {"server": server_desc, "machine": machine(), "loadavg_start": loadavg(), "loads": [],
                 "workers": args.workers, "runs": args.runs, "seconds": args.seconds, "backlog": args.backlog,
                 "contacts": args.contacts, "per_n": {n: {"ack": [], "processing": [], "journeys": []}
                                                      for n in args.workers}, "noop": []}
    Contact.objects.bulk_create([Contact(email=f"bench{i}@example.co.jp", family_name="試験", given_name=str(i))
                                 for i in range(args.contacts)], batch_size=2000)
    contact_ids = list(Contact.objects.values_list("pk", flat=True))
    connection.close()
    server = Server(env, port, 2, work / "serve.log")
    scripts = work / "wrk"
    scripts.mkdir()
    load = Load(scripts, key, server.base, 1)
    try:
        log("making the backlog: wrk into the inbox, no worker running")
        load.run(Scenario("backlog", "/v1/batch", "batch", 8, BATCH_EVENTS), max(2, args.backlog // 20_000))
        time.sleep(2)
        database.run(f"CREATE TABLE bench_backlog AS SELECT message_id, lane, received_at, payload "
                     f"FROM events_incomingevent ORDER BY id LIMIT {int(args.backlog)}", fetch=False)
        database.run("TRUNCATE events_incomingevent", fetch=False)
        out["backlog"] = database.count("bench_backlog")
        for run_number in range(args.runs):
            noop, _cpu = load.run(Scenario("noop", "/v1/_noop", "page", 8, 0), args.seconds)
            out["noop"].append(noop.rps)
            for n in args.workers:
                tag = f"-r{run_number}n{n}"
                out["loads"].append(loadavg())
                ack = ingestion_under_processing(n, env, database, load, args.seconds, logfile)
                proc = processing_alone(n, env, database, tag, logfile)
                jour = journeys(n, env, database, contact_ids, tag, logfile)
                for key_, value in (("ack", ack), ("processing", proc), ("journeys", jour)):
                    out["per_n"][n][key_].append(value)
                log(f"run {run_number + 1}, {n} worker(s): acknowledged {ack['acknowledged']:,.0f}/s while "
                    f"processing {ack['processed']:,.0f}/s; processing alone {proc['rate']:,.0f} events/s "
                    f"({proc['events']:,} in {proc['seconds']:.1f} s); journeys {jour['rate']:,.0f} steps/s "
                    f"({jour['steps']:,} in {jour['seconds']:.1f} s); load {out['loads'][-1]}")
    finally:
        server.stop()
    # One last backlog into the log, to measure storage and retention on it.
    workers = Workers(env, 2, "events", database, logfile)
    try:
        database.run("INSERT INTO events_incomingevent (message_id, lane, received_at, payload, error) "
                     "SELECT message_id, lane, received_at, payload, '' FROM bench_backlog", fetch=False)
        wait_until(lambda: database.count("events_incomingevent") == 0, 900)
    finally:
        workers.stop()
    database.run("VACUUM ANALYZE", fetch=False)
    out["storage"] = storage(database)
    out["retention"] = retention_rate()
    out["loadavg_end"] = loadavg()
    connection.close()
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def render(out: dict) -> str:
    m = out["machine"]
    lines = [
        SECTION, "",
        f"- Date: {dt.date.today().isoformat()}; machine: {m['cores']} cores ({m['cpu']}), {m['ram']} RAM, "
        f"Linux {m['kernel']}, Python {m['python']}, granian {m['granian']}, {m['wrk']}",
        f"- PostgreSQL: {out['server']}",
        f"- Load average (1, 5, 15 min) at the start {out['loadavg_start']}, at the end {out['loadavg_end']}; "
        f"before each measurement: {', '.join(out['loads'])}. The machine was shared with other work while "
        "this ran: figures from a quiet machine would be higher.",
        f"- One `kizuna serve --workers 2`; N `kizuna worker --only events` (or `--only journeys`) processes; "
        f"wrk, the server, the workers and PostgreSQL share the {m['cores']} cores. Median of {out['runs']} "
        f"runs (range in brackets).",
        f"- Ingestion under processing: wrk posts batches of {BATCH_EVENTS} page and track events of 1,000 "
        f"browsers on 8 connections for {out['seconds']:g} s while the N workers process; baseline: the same "
        f"server answering /v1/_noop at the same concurrency, "
        f"{median(out['noop']):,.0f} req/s.",
        f"- Processing alone: {out['backlog']:,} of the same events appear in the inbox in one commit while the "
        f"N workers wait; time until the inbox is empty. {os.environ.get('KIZUNA_EVENT_LANES', '4')} lanes.",
        f"- Journeys: {out['contacts']:,} contacts enrolled in a journey of three actions (add a tag, set the "
        "job title, add a tag: each a contact update with its audit entry and segment refresh), held paused "
        "until the N workers are up; time until every run is done.",
        "",
        "| worker processes | acknowledged while processing | processed meanwhile | processing alone "
        "| journey steps |",
        "|---|---|---|---|---|",
    ]

    def cell(values: list[float], unit: str) -> str:
        return f"**{median(values):,.0f} {unit}** ({min(values):,.0f}–{max(values):,.0f})"

    base = {}
    for n in out["workers"]:
        r = out["per_n"][n]
        ack = [a["acknowledged"] for a in r["ack"]]
        during = [a["processed"] for a in r["ack"]]
        alone = [p["rate"] for p in r["processing"]]
        steps = [j["rate"] for j in r["journeys"]]
        base.setdefault("alone", median(alone))
        base.setdefault("steps", median(steps))
        lines.append(f"| {n} | {cell(ack, 'events/s')} | {cell(during, 'events/s')} | {cell(alone, 'events/s')}"
                     f" (×{median(alone) / base['alone']:.2f}) | {cell(steps, 'steps/s')}"
                     f" (×{median(steps) / base['steps']:.2f}) |")
    first, last = out["workers"][0], out["workers"][-1]
    ack_first = median([a["acknowledged"] for a in out["per_n"][first]["ack"]])
    ack_last = median([a["acknowledged"] for a in out["per_n"][last]["ack"]])
    scaling = ", ".join(
        f"×{median([p['rate'] for p in out['per_n'][n]['processing']]) / base['alone']:.2f} with {n}"
        for n in out["workers"][1:])
    lines += ["", f"Reading: processing alone goes {scaling} worker processes on {m['cores']} cores: it scales "
              "while there are cores to take, then stops (PostgreSQL, the server and wrk share them). Ingestion "
              f"acknowledged while processing falls from {ack_first:,.0f} to {ack_last:,.0f} events/s as the "
              "workers take the CPU the web server had. Journey steps are CPU-bound contact updates; a batch "
              f"claims {JOURNEY_BATCH} runs, so {out['contacts']:,} runs keep at most "
              f"{-(-out['contacts'] // JOURNEY_BATCH)} workers busy. The capacity model built on these figures is in "
              "docs/deployment.md."]
    failed = sum(p["failed"] for n in out["workers"] for p in out["per_n"][n]["processing"]) + sum(
        j["failed"] for n in out["workers"] for j in out["per_n"][n]["journeys"])
    non2xx = sum(a["non2xx"] for n in out["workers"] for a in out["per_n"][n]["ack"])
    enroll = median([j["enroll_rate"] for n in out["workers"] for j in out["per_n"][n]["journeys"]])
    lines += ["", f"Failed events or runs: {failed}; non-2xx answers: {non2xx}. Enrolling (one process, "
              f"`engine.enroll_many`): {enroll:,.0f} contacts/s.", ""]
    st = out["storage"]
    lines += ["Storage after processing the backlog once more (PostgreSQL, tables with their indexes and TOAST, "
              "after VACUUM ANALYZE):", "", "| table | rows | size | per row |", "|---|---|---|---|"]
    for table, (size, rows) in st.items():
        lines.append(f"| {table} | {rows:,} | {size / 1024 / 1024:,.1f} MiB | "
                     f"{(size / rows) if rows else 0:,.0f} B |")
    r = out["retention"]
    lines += ["", f"Retention (`events.retention.purge`, batches of 5,000 by the time index, with the page views "
              f"and the ledger's references): {r['deleted']:,} events deleted in {r['seconds']:.1f} s = "
              f"**{r['rate']:,.0f} events/s**.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk window of the ingestion measurement")
    parser.add_argument("--backlog", type=int, default=20_000, help="events processed alone per measurement")
    parser.add_argument("--contacts", type=int, default=600, help="contacts enrolled per journey measurement")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    out = run(args)
    report = render(out)
    print(report)
    if not args.no_doc:
        from results import write_section

        write_section(SECTION, report)
        log("figures written to docs/benchmarks.md")
    log(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
