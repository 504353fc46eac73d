"""Ingestion and processing benchmark: `kizuna serve` under wrk, then one worker on the backlog.

    .venv/bin/python bench/ingest.py                       # both databases, 10 s per scenario, updates docs
    .venv/bin/python bench/ingest.py --quick --databases sqlite     # a smoke run in about a minute

For each database, on a fresh data dir (SQLite) or the database kizuna_bench_ingest (PostgreSQL):
`kizuna init`, a write key, then `kizuna serve --workers 2` WITHOUT a worker, so ingestion is
measured alone and every accepted event waits in the inbox. wrk (Debian's package) drives:

1. the baseline: GET /v1/_noop on the same server, which returns 204 without touching anything;
2. single page views: POST /v1/page, one event per request, like the tracker's pixel-free hits;
3. batches: POST /v1/batch with 100 mixed page/track events from 1,000 browsers.

Every request carries unique messageIds (thread id + counter), so deduplication hides no work.
Stored events are counted afterwards and must equal 2xx responses × events per request. Then
one `kizuna process_events` process drains the inbox; its wall time gives events/s processed.
The load generator shares the machine's cores with the server: on 2 cores it takes one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Ingestion and processing (bench/ingest.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_bench_ingest"
KIZUNA = [sys.executable, "-m", "kizuna.cli"]

LUA_COMMON = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  math.randomseed(tid * 7919 + os.time())
end
local UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
local function page_event(id, visitor, n)
  return string.format('{"type":"page","messageId":"%s","anonymousId":"v-%d","timestamp":"%s",' ..
    '"properties":{"url":"https://www.example.co.jp/p/%d","path":"/p/%d","title":"Page %d",' ..
    '"referrer":"https://search.yahoo.co.jp/search?p=MA","page_view_id":"%s"},' ..
    '"context":{"userAgent":"%s","ip":"203.0.113.%d","library":{"name":"kizuna.js","version":"1"}}}',
    id, visitor, TS, n % 40, n % 40, n % 40, id, UA, visitor % 250)
end
local function track_event(id, visitor, n)
  return string.format('{"type":"track","event":"Page Engaged","messageId":"%s","anonymousId":"v-%d",' ..
    '"timestamp":"%s","properties":{"page_view_id":"x","visible_ms":%d,"scroll_depth":50},' ..
    '"context":{"userAgent":"%s","ip":"203.0.113.%d"}}', id, visitor, TS, n % 60000, UA, visitor % 250)
end
"""

LUA_PAGE = LUA_COMMON + r"""
request = function()
  counter = counter + 1
  local id = string.format("p%s-%d-%d", RUN, tid, counter)
  local body = '{"writeKey":"' .. KEY .. '",' .. string.sub(page_event(id, math.random(1, 1000), counter), 2)
  return wrk.format("POST", "/v1/page", {["Content-Type"] = "text/plain;charset=UTF-8"}, body)
end
"""

LUA_BATCH = LUA_COMMON + r"""
request = function()
  local parts = {}
  for i = 1, 100 do
    counter = counter + 1
    local id = string.format("b%s-%d-%d", RUN, tid, counter)
    local visitor = math.random(1, 1000)
    if i % 3 == 0 then parts[i] = page_event(id, visitor, counter) else parts[i] = track_event(id, visitor, counter) end
  end
  local body = '{"writeKey":"' .. KEY .. '","batch":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/v1/batch", {["Content-Type"] = "application/json"}, body)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
        return shutil.which("wrk") or "wrk"
    raise SystemExit("bench/ingest.py needs wrk: sudo apt-get install wrk")


def env_for(db: str, data_dir: Path, pg_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_")}
    env.update({"KIZUNA_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "kizuna.settings",
                "KIZUNA_SECRET_KEY": "bench-secret-key-0123456789-0123456789-0123456789",
                "KIZUNA_BASE_URL": f"http://127.0.0.1:{port}", "KIZUNA_EMAIL_URL": "console://",
                "PYTHONPATH": str(ROOT)})
    if db == "postgres":
        env["KIZUNA_DATABASE_URL"] = pg_url
    return env


def fresh_database(db: str, pg_url: str) -> str:
    if db != "postgres":
        return f"SQLite {sqlite3.sqlite_version}"
    import psycopg

    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    return f"PostgreSQL {version} (synchronous_commit {sync})"


def shell(env: dict[str, str], code: str) -> str:
    out = subprocess.run([*KIZUNA, "shell", "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def run_wrk(wrk: str, url: str, seconds: int, connections: int, script: Path | None) -> dict:
    cmd = [wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "--timeout", "10s"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rate, "requests": total, "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else "", "p50": pct("50"), "p99": pct("99")}


def bench_database(db: str, args, wrk: str) -> dict:
    server_desc = fresh_database(db, args.pg_url)
    data_dir = Path(tempfile.mkdtemp(prefix="kizuna-bench-ingest-"))
    port = free_port()
    env = env_for(db, data_dir, args.pg_url, port)
    subprocess.run([*KIZUNA, "init"], env=env, check=True, capture_output=True, cwd=ROOT)
    key = shell(env, "from kizuna.events.models import WriteKey; print(WriteKey.objects.first().key)")
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*KIZUNA, "serve", "--port", str(port), "--workers", str(args.workers)], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    results: dict = {"server": server_desc}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/v1/_noop", timeout=2)  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.3)
        scripts = Path(tempfile.mkdtemp(prefix="kizuna-wrk-"))
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        run_id = str(int(time.time()))
        for name, body in (("page", LUA_PAGE), ("page_8", LUA_PAGE), ("batch", LUA_BATCH)):
            # A run id per scenario: the same ids twice would be deduplicated, hiding work.
            header = f'KEY = "{key}"\nRUN = "{run_id}{name}"\nTS = "{stamp}"\ntid = 0\n'
            (scripts / f"{name}.lua").write_text(header + body)
        run_wrk(wrk, base + "/v1/_noop", 2, 8, None)  # warm-up
        seconds = args.seconds
        results["noop"] = run_wrk(wrk, base + "/v1/_noop", seconds, args.connections, None)
        results["noop_8"] = run_wrk(wrk, base + "/v1/_noop", seconds, 8, None)
        results["page"] = run_wrk(wrk, base + "/v1/page", seconds, args.connections, scripts / "page.lua")
        results["page_8"] = run_wrk(wrk, base + "/v1/page", seconds, 8, scripts / "page_8.lua")
        results["batch"] = run_wrk(wrk, base + "/v1/batch", seconds, 8, scripts / "batch.lua")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(results, indent=1), file=sys.stderr)
    stored = int(shell(env, "from kizuna.events.models import IncomingEvent; print(IncomingEvent.objects.count())"))
    sent = (results["page"]["requests"] - results["page"]["non2xx"]) + (
        results["page_8"]["requests"] - results["page_8"]["non2xx"]) + 100 * (
        results["batch"]["requests"] - results["batch"]["non2xx"])
    results["stored"], results["acknowledged"] = stored, sent
    # wrk counts requests still in flight at the end as sent; allow those few.
    limit = args.process_limit
    if stored > limit:
        shell(env, f"from kizuna.events.models import IncomingEvent as I; "
                   f"I.objects.filter(id__gt=I.objects.order_by('id').values_list('id', flat=True)[{limit}]).delete()")
    started = time.monotonic()
    out = subprocess.run([*KIZUNA, "process_events"], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    elapsed = time.monotonic() - started
    processed = int(re.search(r"Processed (\d+)", out.stdout).group(1))
    results["processing"] = {"events": processed, "seconds": elapsed, "rate": processed / elapsed}
    results["counts"] = json.loads(shell(env, (
        "import json; from kizuna.events.models import Event, Session, PageView, Visitor; "
        "print(json.dumps({'events': Event.objects.count(), 'sessions': Session.objects.count(), "
        "'page_views': PageView.objects.count(), 'visitors': Visitor.objects.count()}))")))
    shutil.rmtree(data_dir, ignore_errors=True)
    return results


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    mem = next((int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, Python {platform.python_version()}"


def render(all_results: dict, args) -> str:
    lines = [SECTION, "",
             f"- Date: {dt.datetime.now(dt.UTC).date().isoformat()}; machine: {machine()}",
             f"- Server: `kizuna serve --workers {args.workers}` (granian, WSGI), no worker running; wrk 1 thread on "
             f"the same machine (it takes one of the cores); {args.seconds} s per scenario; "
             f"{args.connections} connections unless noted",
             "- Baseline: GET /v1/_noop on the same server (204, no work), measured in the same run", "",
             "| database | baseline /v1/_noop | single page hits | page hits, 8 conn. | batches of 100 | "
             "stored = acknowledged | processing, 1 worker |",
             "|---|---|---|---|---|---|---|"]
    for r in all_results.values():
        noop, page, page8, batch, proc = r["noop"], r["page"], r["page_8"], r["batch"], r["processing"]
        lines.append(
            f"| {r['server']} | {noop['rps']:,.0f} req/s, p99 {noop['p99']:.1f} ms | "
            f"**{page['rps']:,.0f} req/s**, p50 {page['p50']:.1f} ms, p99 **{page['p99']:.1f} ms** "
            f"({page['rps'] / noop['rps']:.0%} of baseline) | {page8['rps']:,.0f} req/s, p99 {page8['p99']:.1f} ms | "
            f"**{batch['rps'] * 100:,.0f} events/s** ({batch['rps']:,.0f} req/s, p99 {batch['p99']:.0f} ms) | "
            f"{r['stored']:,} / {r['acknowledged']:,} "
            f"(non-2xx: {page['non2xx'] + page8['non2xx'] + batch['non2xx']}) | "
            f"**{proc['rate']:,.0f} events/s** ({proc['events']:,} events in {proc['seconds']:.1f} s) |")
    lines += ["", "Targets: batches ≥ 20,000 events/s on PostgreSQL and ≥ 10,000 on SQLite; single hits ≥ 2,000 req/s "
              "with p99 < 25 ms; processing ≥ 3,000 events/s per worker process.", ""]
    for db, r in all_results.items():
        c = r["counts"]
        lines.append(f"- {db}: after processing, {c['events']:,} events, {c['sessions']:,} sessions, "
                     f"{c['page_views']:,} page views, {c['visitors']:,} visitors.")
    return "\n".join(lines) + "\n"


def write_doc(report: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(report, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + report
    DOC.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--process-limit", type=int, default=200_000, help="events processed in the last step")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--quick", action="store_true", help="2 s per scenario, 20,000 events processed, no doc")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.process_limit = 2, 20_000
    wrk = ensure_wrk()
    results = {db: bench_database(db, args, wrk) for db in args.databases.replace(",", " ").split()}
    report = render(results, args)
    print(report)
    if not args.quick:
        write_doc(report)


if __name__ == "__main__":
    main()
