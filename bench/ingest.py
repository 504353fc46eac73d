"""Ingestion and processing benchmark: `kizuna serve` under wrk, then one worker on the backlog.

    .venv/bin/python bench/ingest.py                          # both databases, 3 runs of 10 s, updates docs
    .venv/bin/python bench/ingest.py --quick --databases sqlite   # a smoke run in about a minute

For each database, on a fresh data directory (SQLite) or the database kizuna_bench_ingest, dropped
and created (PostgreSQL): `kizuna init`, a write key made with `kizuna shell -c`, then
`kizuna serve --workers 2` WITHOUT a worker, so ingestion is measured alone and every accepted
event waits in the inbox. wrk (Debian's package) drives, with Lua scripts written here:

- single page views, POST /v1/page, one event per request as a browser sends it (text/plain,
  writeKey in the body, Origin, the browser's User-Agent, X-Forwarded-For from a proxy in front);
- batches, POST /v1/batch, 100 page and track events of 1,000 browsers per request, as a server
  relay sends them (write key as the HTTP Basic username, each event with its context.ip);
- the baseline: the very same requests sent to /v1/_noop on the same server, which answers 204
  without reading them, at the same concurrency. What separates a scenario from its baseline is
  Kizuna's own work: parsing, validation, the group commit.

Every event has a unique messageId (run, scenario, wrk thread, counter), so deduplication hides no
work. After each scenario the inbox is counted and must hold exactly the 2xx responses × events
per request, give or take the requests still in flight when wrk stopped (at most one per
connection). Then the server stops and one `kizuna process_events` process drains (a capped part
of) the inbox; its wall time gives events/s processed per worker process.

wrk runs on the same machine and takes CPU from the server: the CPU each side used is measured
from /proc and reported, with whatever else ran on the machine at the time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import importlib.metadata
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Ingestion (bench/ingest.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_bench_ingest"
KIZUNA = [sys.executable, "-m", "kizuna.cli"]
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {"batch": {"sqlite": 10_000, "postgres": 20_000}, "single_rps": 2_000, "single_p99_ms": 25.0,
           "processing": 3_000}
PAGE_SWEEP = (4, 8, 16, 32, 64)
BATCH_SWEEP = (2, 4, 8, 16)
QUICK_PAGE_SWEEP = (8, 32)
QUICK_BATCH_SWEEP = (4, 8)
BATCH_EVENTS = 100
VISITORS = 1000

# The generated part of every script: per-thread state, realistic pages, one request builder per mode.
LUA = r"""
local SITE = "https://www.example.co.jp"
local PAGES = {
  {"/", "株式会社サンプル | 製造業向けクラウドERP"},
  {"/products/erp", "クラウドERP 機能一覧 | 株式会社サンプル"},
  {"/products/erp/inventory", "在庫管理 | クラウドERP | 株式会社サンプル"},
  {"/products/erp/production", "生産管理 | クラウドERP | 株式会社サンプル"},
  {"/pricing", "料金プラン | 株式会社サンプル"},
  {"/cases", "導入事例 | 株式会社サンプル"},
  {"/cases/maruyama-seiki", "丸山精機株式会社様 導入事例 | 株式会社サンプル"},
  {"/cases/toyo-foods", "東洋食品株式会社様 導入事例 | 株式会社サンプル"},
  {"/seminars", "セミナー・イベント | 株式会社サンプル"},
  {"/seminars/2026-12-dx", "製造業DXセミナー 2026年12月 | 株式会社サンプル"},
  {"/download/whitepaper", "資料ダウンロード | 株式会社サンプル"},
  {"/blog", "ブログ | 株式会社サンプル"},
  {"/blog/invoice-system", "インボイス制度と基幹システムの見直し方 | 株式会社サンプル"},
  {"/blog/electronic-books", "電子帳簿保存法への対応チェックリスト | 株式会社サンプル"},
  {"/company", "会社概要 | 株式会社サンプル"},
  {"/contact", "お問い合わせ | 株式会社サンプル"},
}
local UAS = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 " ..
    "Safari/537.36 Edg/131.0.0.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 " ..
    "Safari/605.1.15",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) " ..
    "Version/18.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; SO-51D) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 " ..
    "Mobile Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
}
local OCTETS = {126, 153, 133, 60, 114, 219, 180, 202, 118, 49}
local EXTERNAL = {"https://www.google.com/", "https://search.yahoo.co.jp/", "https://www.facebook.com/",
                  "https://t.co/", "https://b.hatena.ne.jp/", ""}
local CAMPAIGN = "?utm_source=newsletter&utm_medium=email&utm_campaign=2026-12-seminar"

local counter = 0
local last = {}  -- visitor -> {url of the last page view, its page_view_id}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(tid * 7919 + SEED)
end

-- Thread t of n sends for the browsers t, t + n, t + 2n, ...: no browser is shared between threads.
local function visitor()
  return math.random(0, math.floor(VISITORS / NTHREADS) - 1) * NTHREADS + tid
end
local function aid(v)
  return string.format("%08x-%04x-4%03x-a%03x-%012d", (v * 7919 * 104729) % 2147483647, v % 65536, v % 4096,
                       (v * 13) % 4096, v)
end
local function ip(v)
  return string.format("%d.%d.%d.%d", OCTETS[v % #OCTETS + 1], (v * 37) % 256, (v * 11) % 256, v % 250 + 1)
end
local function ua(v) return UAS[v % #UAS + 1] end
local function next_id()
  counter = counter + 1
  return string.format("%s-t%d-%d", RUN, tid, counter)
end
local function now()
  return os.date("!%Y-%m-%dT%H:%M:%S", os.time()) .. string.format(".%03dZ", counter % 1000)
end

-- The members of a page message, as the tracker builds it (no braces: the caller adds fields).
local function page_message(v, id, ts, extra)
  local p = PAGES[math.random(#PAGES)]
  local prev = last[v]
  local referrer
  if prev == nil or math.random() < 0.05 then referrer = EXTERNAL[math.random(#EXTERNAL)] else referrer = prev[1] end
  local url, search = SITE .. p[1], ""
  if math.random() < 0.03 then search = CAMPAIGN; url = url .. search end
  last[v] = {url, id}
  local page = string.format('{"url":"%s","path":"%s","title":"%s","referrer":"%s","search":"%s"}',
                             url, p[1], p[2], referrer, search)
  return string.format('"type":"page","name":"%s","messageId":"%s","anonymousId":"%s","timestamp":"%s",' ..
    '"context":{"library":{"name":"kizuna.js","version":"1"},"page":%s,"userAgent":"%s","locale":"ja-JP",' ..
    '"timezone":"Asia/Tokyo","screen":{"width":1920,"height":1080}%s},"properties":{"url":"%s","path":"%s",' ..
    '"title":"%s","referrer":"%s","search":"%s","page_view_id":"%s"}',
    p[2], id, aid(v), ts, page, ua(v), extra, url, p[1], p[2], referrer, search, id)
end

local function track_message(v, id, ts, extra)
  local prev = last[v]
  local r, name, props = math.random()
  if r < 0.7 then
    name = "Page Engaged"
    props = string.format('{"page_view_id":"%s","visible_ms":%d,"scroll_depth":%d}', prev[2],
                          math.random(800, 240000), math.random(0, 100))
  elseif r < 0.85 then
    name = "CTA Clicked"
    props = '{"label":"資料ダウンロード","href":"' .. SITE .. '/download/whitepaper"}'
  else
    name = "Video Played"
    props = '{"title":"製品紹介動画","position":0}'
  end
  return string.format('"type":"track","event":"%s","messageId":"%s","anonymousId":"%s","timestamp":"%s",' ..
    '"context":{"library":{"name":"kizuna.js","version":"1"},"page":{"url":"%s"},"userAgent":"%s",' ..
    '"locale":"ja-JP"%s},"properties":%s', name, id, aid(v), ts, prev[1], ua(v), extra, props)
end

if MODE == "batch" then
  request = function()
    local ts = now()
    local parts = {}
    for i = 1, PER_REQUEST do
      local v = visitor()
      local extra = ',"ip":"' .. ip(v) .. '"'
      if last[v] == nil or math.random() < 0.45 then
        parts[i] = "{" .. page_message(v, next_id(), ts, extra) .. "}"
      else
        parts[i] = "{" .. track_message(v, next_id(), ts, extra) .. "}"
      end
    end
    local body = '{"sentAt":"' .. ts .. '","batch":[' .. table.concat(parts, ",") .. ']}'
    return wrk.format("POST", PATH, {["Content-Type"] = "application/json", ["Authorization"] = AUTH,
                                     ["User-Agent"] = "kizuna-relay/1.0"}, body)
  end
else
  request = function()
    local v, ts = visitor(), now()
    local body = '{"writeKey":"' .. KEY .. '","sentAt":"' .. ts .. '",' .. page_message(v, next_id(), ts, "") .. '}'
    return wrk.format("POST", PATH, {["Content-Type"] = "text/plain;charset=UTF-8", ["Origin"] = SITE,
                                     ["User-Agent"] = ua(v), ["X-Forwarded-For"] = ip(v)}, body)
  end
end
"""


# --- Machine and processes ---------------------------------------------------------------------

def machine() -> dict[str, str]:
    from results import machine as described

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split(" [")[0]
    return {**described(), "granian": importlib.metadata.version("granian"), "wrk": wrk_version.strip()}


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk with apt-get")
        if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        return
    raise SystemExit("bench/ingest.py needs wrk, the HTTP load generator: sudo apt-get install wrk")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks used so far) for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return table


def _busy_ticks() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]  # all but idle and iowait


@dataclass
class CpuSample:
    at: float
    busy: int
    server: dict[int, int]
    database: dict[int, int]


def cpu_sample(server_pid: int, database_pids: set[int]) -> CpuSample:
    """CPU ticks so far of each process of the server's tree and of the database, and the machine's."""
    table = _proc_table()
    tree, frontier = set(), {server_pid}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, (ppid, _n, _t) in table.items() if ppid in frontier} - tree
    return CpuSample(time.monotonic(), _busy_ticks(), {pid: table[pid][2] for pid in tree if pid in table},
                     {pid: table[pid][2] for pid in database_pids if pid in table})


def _used(before: dict[int, int], after: dict[int, int]) -> int:
    """Ticks used in between; a process that ended in between is not counted (an undercount)."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items())


def cpu_share(before: CpuSample, after: CpuSample, wrk_seconds: float) -> dict[str, float]:
    """Cores used on average during the interval, by side; `other` is the rest of the machine."""
    span = (after.at - before.at) * TICK
    busy = (after.busy - before.busy) / span
    server = _used(before.server, after.server) / span
    database = _used(before.database, after.database) / span
    wrk = wrk_seconds * TICK / span
    return {"busy": busy, "server": server, "database": database, "wrk": wrk,
            "other": max(0.0, busy - server - database - wrk)}


# --- Databases ---------------------------------------------------------------------------------

def child_env(db: str, data_dir: Path, pg_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_") or k == "KIZUNA_WEB_THREADS"}
    env.update({"KIZUNA_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "kizuna.settings",
                "KIZUNA_SECRET_KEY": "bench-secret-key-0123456789-0123456789-0123456789",
                "KIZUNA_BASE_URL": f"http://127.0.0.1:{port}", "KIZUNA_EMAIL_URL": "console://",
                "KIZUNA_LOG_LEVEL": "WARNING", "KIZUNA_PROXY_COUNT": "1", "PYTHONPATH": str(ROOT)})
    if db == "postgres":
        env["KIZUNA_DATABASE_URL"] = pg_url
    return env


def fresh_database(db: str, pg_url: str) -> str:
    """Recreates the bench database; returns a description of the server and its settings."""
    if db != "postgres":
        return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"
    import psycopg

    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        show = {s: conn.execute(f"SHOW {s}").fetchone()[0] for s in
                ("server_version", "synchronous_commit", "shared_buffers", "max_wal_size")}
    return (f"PostgreSQL {show['server_version'].split()[0]} (synchronous_commit {show['synchronous_commit']}, "
            f"shared_buffers {show['shared_buffers']}, max_wal_size {show['max_wal_size']})")


class Database:
    """Direct SQL on the bench database, for counting between scenarios without Django."""

    def __init__(self, db: str, data_dir: Path, pg_url: str) -> None:
        self.db, self.path, self.pg_url = db, data_dir / "kizuna.sqlite3", pg_url

    def run(self, sql: str, params: tuple = (), fetch: bool = True) -> list[tuple]:
        if self.db == "sqlite":
            conn = sqlite3.connect(self.path, timeout=60)
            try:
                cursor = conn.execute(sql, params)
                rows = cursor.fetchall() if fetch else []
                conn.commit()
                return rows
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if fetch else []

    def pids(self) -> set[int]:
        """PostgreSQL's processes working for this database (its backends and the shared ones)."""
        if self.db == "sqlite":
            return set()
        name = self.pg_url.rsplit("/", 1)[1]
        rows = self.run("SELECT pid FROM pg_stat_activity WHERE (datname = ? OR datname IS NULL) "
                        "AND pid <> pg_backend_pid()", (name,))
        return {pid for (pid,) in rows}

    def count(self, table: str) -> int:
        return self.run(f"SELECT COUNT(*) FROM {table}")[0][0]  # noqa: S608 - our own table names


def kizuna(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([*KIZUNA, *args], env=env, capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"kizuna {' '.join(args)[:80]} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


class Server:
    """`kizuna serve` in its own process group, so stopping it can never touch anything else."""

    def __init__(self, env: dict[str, str], port: int, workers: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                [*KIZUNA, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base + "/v1/_noop", timeout=2) as response:  # noqa: S310
                    if response.status == 204:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"kizuna serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # run_together stops granian and its workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --- wrk ---------------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    path: str
    mode: str  # "page" or "batch"
    connections: int
    per_request: int  # events stored per 2xx response (0 for the baseline)


@dataclass
class Result:
    scenario: Scenario
    rps: float
    requests: int
    non2xx: int
    socket_errors: str
    p50: float
    p99: float
    stored: int = 0
    acknowledged: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.rps * self.scenario.per_request

    @property
    def in_flight(self) -> int:
        """Events stored but not acknowledged: requests wrk dropped when its time was up."""
        return self.stored - self.acknowledged


class Load:
    def __init__(self, work: Path, key: str, base: str, threads: int) -> None:
        self.work, self.key, self.base, self.threads = work, key, base, threads
        self.auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        self.stamp = dt.datetime.now(dt.UTC).strftime("%H%M%S")
        self.seq = 0

    def script(self, scenario: Scenario) -> Path:
        """A fresh script per run, with its own messageId prefix, so no event repeats another."""
        self.seq += 1
        header = (f'local KEY = "{self.key}"\nlocal AUTH = "{self.auth}"\nlocal PATH = "{scenario.path}"\n'
                  f'local MODE = "{scenario.mode}"\nlocal RUN = "kb{self.stamp}-{self.seq}"\n'
                  f"local SEED = {self.seq}\nlocal NTHREADS = {self.threads}\nlocal VISITORS = {VISITORS}\n"
                  f"local PER_REQUEST = {BATCH_EVENTS}\n")
        path = self.work / f"{self.seq:03d}-{scenario.name}.lua"
        path.write_text(header + LUA)
        return path

    def run(self, scenario: Scenario, seconds: float) -> tuple[Result, float]:
        """Runs wrk; returns its parsed figures and the CPU seconds wrk itself used."""
        cmd = ["wrk", "-t", str(min(self.threads, scenario.connections)), "-c", str(scenario.connections),
               "-d", f"{seconds:g}s", "--latency", "--timeout", "10s", "-s", str(self.script(scenario)),
               self.base + scenario.path]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0 or "Requests/sec" not in out.stdout:
            raise SystemExit(f"wrk failed:\n{out.stdout}\n{out.stderr}")
        return parse_wrk(scenario, out.stdout), (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def request_sizes(load: Load) -> dict[str, float]:
    """Mean body size of each kind of request, read by a local listener that answers 204."""
    sizes = {}
    for mode, path in (("page", "/v1/page"), ("batch", "/v1/batch")):
        bodies: list[int] = []
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)

            def answer(listener: socket.socket = listener, bodies: list[int] = bodies) -> None:
                listener.settimeout(5)
                while not bodies:  # wrk opens a first connection only to check the address
                    try:
                        conn, _addr = listener.accept()
                    except TimeoutError:
                        return
                    with conn, conn.makefile("rb") as stream, contextlib.suppress(OSError):  # wrk resets at the end
                        while stream.readline():
                            length = 0
                            while (header := stream.readline()) not in (b"\r\n", b""):
                                name, _sep, value = header.partition(b":")
                                if name.strip().lower() == b"content-length":
                                    length = int(value)
                            bodies.append(len(stream.read(length)))
                            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

            thread = threading.Thread(target=answer, daemon=True)
            thread.start()
            url = f"http://127.0.0.1:{listener.getsockname()[1]}{path}"
            script = load.script(Scenario("size", path, mode, 1, 0))
            subprocess.run(["wrk", "-t", "1", "-c", "1", "-d", "1s", "-s", str(script), url],
                           capture_output=True, check=False)
            thread.join(5)
        sizes[mode] = statistics.mean(bodies) if bodies else 0.0
    return sizes


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(scenario: Scenario, out: str) -> Result:
    def pct(p: int) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return _ms(m.group(1), m.group(2))

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return Result(scenario, rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                  requests=int(re.search(r"(\d+) requests in", out).group(1)), non2xx=int(bad.group(1)) if bad else 0,
                  socket_errors=errors.group(1).strip() if errors else "", p50=pct(50), p99=pct(99))


# --- One database ------------------------------------------------------------------------------

def measure(load: Load, server: Server, database: Database, scenario: Scenario, seconds: float) -> Result:
    """One wrk run, with the inbox counted before and after and the CPU each side used."""
    inbox_before = database.count("events_incomingevent")
    pids = database.pids()
    cpu_before = cpu_sample(server.proc.pid, pids)
    result, wrk_cpu = load.run(scenario, seconds)
    cpu_after = cpu_sample(server.proc.pid, pids | database.pids())
    # Requests wrk abandoned at the end are still being committed: wait until the count is still.
    inbox, deadline = database.count("events_incomingevent"), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = database.count("events_incomingevent")
        if again == inbox:
            break
        inbox = again
    result.stored = inbox - inbox_before
    result.acknowledged = (result.requests - result.non2xx) * scenario.per_request
    result.cpu = cpu_share(cpu_before, cpu_after, wrk_cpu)
    flag = ""
    if result.non2xx or result.socket_errors.replace("connect 0, read 0, write 0, timeout 0", ""):
        flag += f"  non-2xx {result.non2xx}, socket errors: {result.socket_errors}"
    if result.stored < result.acknowledged or result.in_flight > scenario.connections * scenario.per_request:
        flag += f"  MISMATCH stored {result.stored:,} vs acknowledged {result.acknowledged:,}"
    print(f"    {scenario.name:<11} c={scenario.connections:<3} {result.rps:>8,.0f} req/s "
          f"{result.events_per_s:>8,.0f} ev/s  p50 {result.p50:6.1f} ms  p99 {result.p99:6.1f} ms  "
          f"stored {result.stored:>7,}  cpu server {result.cpu['server']:.2f} db {result.cpu['database']:.2f} "
          f"wrk {result.cpu['wrk']:.2f} other {result.cpu['other']:.2f}{flag}", flush=True)
    return result


def noop_reads_bodies(base: str) -> bool:
    """Whether /v1/_noop can take a batch-sized body and keep the connection: granian closes a
    connection whose unread body is larger than its buffer, and then the baseline would measure
    reconnections rather than requests."""
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    try:
        for _ in range(3):
            conn.request("POST", "/v1/_noop", body=b"x" * 100_000, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 204:
                return False
        return True
    except OSError:
        return False
    finally:
        conn.close()


def best_concurrency(results: list[Result]) -> int:
    """The highest throughput; a lower concurrency within 3% of it wins (same rate, less queueing)."""
    top = max(r.rps for r in results)
    return min(r.scenario.connections for r in results if r.rps >= 0.97 * top)


def bench_database(db: str, args: argparse.Namespace, work: Path) -> dict:
    print(f"[{db}]", flush=True)
    server_desc = fresh_database(db, args.pg_url)
    data_dir = work / f"data-{db}"
    data_dir.mkdir()
    port = free_port()
    env = child_env(db, data_dir, args.pg_url, port)
    kizuna(env, "init", "-v0")
    key = kizuna(env, "shell", "-c", "from kizuna.events.models import WriteKey; "
                 "print(WriteKey.objects.create(name='Benchmark').key)").strip().splitlines()[-1]
    database = Database(db, data_dir, args.pg_url)
    server = Server(env, port, args.workers, work / f"serve-{db}.log")
    scripts = work / f"wrk-{db}"
    scripts.mkdir()
    load = Load(scripts, key, server.base, args.wrk_threads)
    out: dict = {"server": server_desc, "runs": [], "sizes": request_sizes(load)}
    try:
        warm = args.warm_up
        measure(load, server, database, Scenario("warm-up", "/v1/page", "page", 8, 1), warm)
        measure(load, server, database, Scenario("warm-up", "/v1/batch", "batch", 4, BATCH_EVENTS), warm)
        print("  choosing concurrency:", flush=True)
        sweep = args.sweep_seconds
        pages = [measure(load, server, database, Scenario("page", "/v1/page", "page", c, 1), sweep)
                 for c in (QUICK_PAGE_SWEEP if args.quick else PAGE_SWEEP)]
        batches = [measure(load, server, database, Scenario("batch", "/v1/batch", "batch", c, BATCH_EVENTS), sweep)
                   for c in (QUICK_BATCH_SWEEP if args.quick else BATCH_SWEEP)]
        page_c, batch_c = best_concurrency(pages), best_concurrency(batches)
        out.update(page_c=page_c, batch_c=batch_c, sweep={"page": [(r.scenario.connections, r.rps, r.p99)
                                                                     for r in pages],
                                                            "batch": [(r.scenario.connections, r.events_per_s, r.p99)
                                                                      for r in batches]})
        out["noop_batch_bodies"] = noop_reads_bodies(server.base)
        print(f"  single hits at {page_c} connections, batches at {batch_c}; the batches' baseline sends "
              f"{'batch' if out['noop_batch_bodies'] else 'single-hit'} bodies", flush=True)
        plan = [Scenario("noop-page", "/v1/_noop", "page", page_c, 0),
                Scenario("page", "/v1/page", "page", page_c, 1),
                Scenario("noop-page-8", "/v1/_noop", "page", 8, 0),
                Scenario("page-8", "/v1/page", "page", 8, 1),
                Scenario("noop-batch", "/v1/_noop", "batch" if out["noop_batch_bodies"] else "page", batch_c, 0),
                Scenario("batch", "/v1/batch", "batch", batch_c, BATCH_EVENTS)]
        for run in range(args.runs):
            print(f"  run {run + 1} of {args.runs}:", flush=True)
            out["runs"].append({s.name: measure(load, server, database, s, args.seconds) for s in plan})
    finally:
        server.stop()
    inbox = database.count("events_incomingevent")
    out["inbox"] = inbox
    out["processing"] = process(db, env, database, inbox, args.process_events)
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def process(db: str, env: dict[str, str], database: Database, inbox: int, cap: int) -> dict:
    """Leaves the oldest `cap` inbox events, then times one `kizuna process_events` on them."""
    if inbox > cap:
        cut = database.run("SELECT id FROM events_incomingevent ORDER BY id LIMIT 1 OFFSET ?", (cap,))[0][0]
        database.run("DELETE FROM events_incomingevent WHERE id >= ?", (cut,), fetch=False)
        if db == "postgres":
            database.run("VACUUM ANALYZE events_incomingevent", fetch=False)
    waiting = database.count("events_incomingevent")
    print(f"  processing {waiting:,} events (of {inbox:,} ingested) with one `kizuna process_events`", flush=True)
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    first = cpu_sample(os.getpid(), database.pids())
    seen = dict(first.database)
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        worker = subprocess.Popen([*KIZUNA, "process_events"], env=env, cwd=ROOT, text=True,  # noqa: S603
                                  stdout=log, stderr=subprocess.STDOUT)
        # The worker's database backend ends with it: its CPU is read while it runs.
        while True:
            seen.update(cpu_sample(os.getpid(), database.pids()).database)
            try:
                worker.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        wall = time.monotonic() - start
        log.seek(0)
        output = log.read()
    last = cpu_sample(os.getpid(), set())
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    if worker.returncode != 0:
        raise SystemExit(f"kizuna process_events failed:\n{output[-5000:]}")
    found = re.search(r"Processed (\d+) events; (\d+) waiting, (\d+) failed", output)
    if not found:
        raise SystemExit(f"unexpected output of process_events: {output[-5000:]}")
    processed, left, failed = (int(g) for g in found.groups())
    worker_cpu = (after_cpu.ru_utime - before_cpu.ru_utime) + (after_cpu.ru_stime - before_cpu.ru_stime)
    counts = {table: database.count(f"events_{table}") for table in ("event", "session", "pageview", "visitor")}
    result = {"waiting": waiting, "processed": processed, "left": left, "failed": failed, "seconds": wall,
              "rate": processed / wall, "worker_cpu": worker_cpu / wall,
              "database_cpu": _used(first.database, seen) / TICK / wall,
              "other_cpu": max(0.0, (last.busy - first.busy) / TICK / wall - worker_cpu / wall
                               - _used(first.database, seen) / TICK / wall),
              "counts": counts}
    print(f"    {processed:,} events in {wall:.1f} s = {result['rate']:,.0f} events/s "
          f"(worker CPU {result['worker_cpu']:.2f} cores, database {result['database_cpu']:.2f}, "
          f"other {result['other_cpu']:.2f}); left {left}, failed {failed}; "
          f"log: {counts['event']:,} events, {counts['session']:,} sessions, {counts['pageview']:,} page views, "
          f"{counts['visitor']:,} visitors", flush=True)
    return result


# --- Summary -----------------------------------------------------------------------------------

@dataclass
class Summary:
    """One scenario over the runs: medians, and the range of throughput."""

    rps: float
    rps_low: float
    rps_high: float
    events_per_s: float
    p50: float
    p99: float
    connections: int
    non2xx: int
    stored: int
    acknowledged: int
    in_flight_max: int
    cpu: dict[str, float]


def summarise(runs: list[dict[str, Result]], name: str) -> Summary:
    results = [run[name] for run in runs]
    rates = [r.rps for r in results]
    return Summary(
        rps=statistics.median(rates), rps_low=min(rates), rps_high=max(rates),
        events_per_s=statistics.median(r.events_per_s for r in results),
        p50=statistics.median(r.p50 for r in results), p99=statistics.median(r.p99 for r in results),
        connections=results[0].scenario.connections, non2xx=sum(r.non2xx for r in results),
        stored=sum(r.stored for r in results), acknowledged=sum(r.acknowledged for r in results),
        in_flight_max=max(r.in_flight for r in results),
        cpu={k: statistics.median(r.cpu[k] for r in results) for k in results[0].cpu})


def summaries(out: dict) -> dict[str, Summary]:
    return {name: summarise(out["runs"], name) for name in out["runs"][0]}


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def single_ok(s: Summary) -> bool:
    return s.rps >= TARGETS["single_rps"] and s.p99 < TARGETS["single_p99_ms"]


def rate_cell(s: Summary, events: bool = False) -> str:
    main = f"{s.events_per_s:,.0f} events/s" if events else f"{s.rps:,.0f} req/s"
    spread = f"{s.rps_low * (BATCH_EVENTS if events else 1):,.0f}–{s.rps_high * (BATCH_EVENTS if events else 1):,.0f}"
    return f"**{main}** ({spread})"


def render(results: dict[str, dict], args: argparse.Namespace, info: dict[str, str]) -> str:
    dbs = list(results)
    sums = {db: summaries(results[db]) for db in dbs}
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    runs = f"median of {args.runs} runs" if args.runs > 1 else "one run"
    sizes = results[dbs[0]]["sizes"]
    lines = [
        SECTION, "",
        f"- Date: {dt.datetime.now(dt.UTC).date().isoformat()}; machine: {info['cores']} cores ({info['cpu']}), "
        f"{info['ram']} RAM, Linux {info['kernel']}, Python {info['python']}",
        *[f"- {names[db]}: {results[db]['server']}" for db in dbs],
        f"- Server: `kizuna serve --workers {args.workers}` (granian {info['granian']}, WSGI, "
        f"{os.environ.get('KIZUNA_WEB_THREADS', '16')} blocking threads per worker, group commit on), "
        "no worker running: every accepted event waits in the inbox",
        f"- Load: {info['wrk']}, {args.wrk_threads} thread{'s' if args.wrk_threads > 1 else ''}, on the same machine: "
        "load generator, server and "
        f"database share the {info['cores']} cores (the CPU each used is below); {args.seconds:g} s per scenario, "
        f"{runs} (throughput range in brackets); wrk keeps a fixed number of connections busy, so latency is "
        "measured under full load",
        "- Single hit: POST /v1/page, one page view as the tracker sends it (text/plain, writeKey in the body, "
        "Origin, browser User-Agent, X-Forwarded-For through KIZUNA_PROXY_COUNT=1), "
        f"{sizes['page']:,.0f} bytes on average, 16 pages with Japanese titles, 1,000 browsers",
        f"- Batch: POST /v1/batch with {BATCH_EVENTS} events (45% page, 55% track: Page Engaged, CTA Clicked, "
        "Video Played) of 1,000 browsers, write key as the HTTP Basic username, each event with context.ip, "
        f"{sizes['batch'] / 1024:,.0f} KB on average",
        "- Baseline: the same requests, at the same concurrency, to /v1/_noop on the same server, which answers "
        "204 without reading the body: the cost of HTTP, granian and the load generator"
        + ("" if all(results[db]["noop_batch_bodies"] for db in dbs) else
           ". For batches the baseline sends the single-hit request instead: granian closes a connection whose "
           "unread body is larger than its buffer (~64 KB), so batch bodies to /v1/_noop would measure "
           "reconnections"), "",
        "| | " + " | ".join(names[db] for db in dbs) + " | target |",
        "|---|" + "---|" * len(dbs) + "---|",
    ]

    def row(label: str, cells: list[str], target: str) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    row("**Batches of 100**, events/s acknowledged",
        [f"{rate_cell(sums[db]['batch'], events=True)}, {sums[db]['batch'].connections} conn., "
         f"p50 {sums[db]['batch'].p50:.0f} ms, p99 {sums[db]['batch'].p99:.0f} ms; "
         f"{verdict(sums[db]['batch'].events_per_s >= TARGETS['batch'][db])}" for db in dbs],
        "≥ 10,000 SQLite, ≥ 20,000 PostgreSQL")
    row("baseline: /v1/_noop, same concurrency",
        [f"{sums[db]['noop-batch'].rps:,.0f} req/s, p99 {sums[db]['noop-batch'].p99:.1f} ms "
         f"({'batch' if results[db]['noop_batch_bodies'] else 'single-hit'} bodies); "
         f"batch requests = {sums[db]['batch'].rps / sums[db]['noop-batch'].rps:.1%} of it" for db in dbs], "")
    row("**Single page hits**, best concurrency",
        [f"{rate_cell(sums[db]['page'])}, {sums[db]['page'].connections} conn., p50 {sums[db]['page'].p50:.1f} ms, "
         f"p99 **{sums[db]['page'].p99:.1f} ms**; "
         f"{verdict(single_ok(sums[db]['page']))}"
         for db in dbs], "≥ 2,000 req/s, p99 < 25 ms")
    row("baseline: /v1/_noop, same concurrency",
        [f"{sums[db]['noop-page'].rps:,.0f} req/s, p99 {sums[db]['noop-page'].p99:.1f} ms; "
         f"hits = {sums[db]['page'].rps / sums[db]['noop-page'].rps:.0%}" for db in dbs], "")
    row("Single page hits, 8 connections",
        [f"{rate_cell(sums[db]['page-8'])}, p50 {sums[db]['page-8'].p50:.1f} ms, p99 {sums[db]['page-8'].p99:.1f} ms; "
         f"{verdict(single_ok(sums[db]['page-8']))}"
         for db in dbs], "")
    row("baseline: /v1/_noop, 8 connections",
        [f"{sums[db]['noop-page-8'].rps:,.0f} req/s, p99 {sums[db]['noop-page-8'].p99:.1f} ms; "
         f"hits = {sums[db]['page-8'].rps / sums[db]['noop-page-8'].rps:.0%}" for db in dbs], "")

    def stored_cell(db: str) -> str:
        measured = [s for name, s in sums[db].items() if not name.startswith("noop")]
        stored, acked = sum(s.stored for s in measured), sum(s.acknowledged for s in measured)
        bad = sum(s.non2xx for s in sums[db].values())
        lost = sum(max(0, r.acknowledged - r.stored) for run in results[db]["runs"] for r in run.values())
        noop_stored = sum(s.stored for name, s in sums[db].items() if name.startswith("noop"))
        return (f"{stored:,} stored / {acked:,} acknowledged, {lost} lost, non-2xx {bad}, "
                f"{stored - acked:,} stored from requests cut off at wrk's stop; noop stored {noop_stored}")

    row("Stored = acknowledged (all measured runs)", [stored_cell(db) for db in dbs], "nothing lost, no errors")
    procs = {db: results[db]["processing"] for db in dbs}
    row("**Processing**, 1 `kizuna process_events`",
        [f"**{p['rate']:,.0f} events/s** ({p['processed']:,} events in {p['seconds']:.1f} s, {p['failed']} failed); "
         f"{verdict(p['rate'] >= TARGETS['processing'])}" for p in procs.values()], "≥ 3,000 events/s per process")
    row("After processing",
        [f"{p['counts']['event']:,} events, {p['counts']['session']:,} sessions, {p['counts']['pageview']:,} page "
         f"views, {p['counts']['visitor']:,} visitors" for p in procs.values()], "")
    lines += ["", "CPU used on average (cores of 2) while measuring; *other* is whatever else ran on the machine:", "",
              "| | " + " | ".join(names[db] for db in dbs) + " |", "|---|" + "---|" * len(dbs)]

    def cpu_cell(c: dict[str, float]) -> str:
        return (f"server {c['server']:.2f}, database {c['database']:.2f}, wrk {c['wrk']:.2f}, "
                f"other {c['other']:.2f}")

    for name, label in (("batch", "batches"), ("noop-batch", "baseline for batches"), ("page", "single hits"),
                        ("noop-page", "baseline for single hits")):
        lines.append(f"| {label} | " + " | ".join(cpu_cell(sums[db][name].cpu) for db in dbs) + " |")
    lines.append("| processing | " + " | ".join(
        f"worker {p['worker_cpu']:.2f}, database {p['database_cpu']:.2f}, other {p['other_cpu']:.2f}"
        for p in procs.values()) + " |")
    lines += ["", "Concurrency chosen from a sweep of "
              f"{args.sweep_seconds:g} s runs (highest throughput; a lower concurrency within 3% of it wins):", ""]
    for db in dbs:
        sweep = results[db]["sweep"]
        pages = ", ".join(f"{c}: {rps:,.0f} req/s (p99 {p99:.1f} ms)" for c, rps, p99 in sweep["page"])
        batches = ", ".join(f"{c}: {eps:,.0f} events/s (p99 {p99:.0f} ms)" for c, eps, p99 in sweep["batch"])
        lines.append(f"- {names[db]}: single hits {pages}; batches {batches}")
    processed = sorted({f"{p['waiting']:,}" for p in procs.values()})
    lines += ["", f"Processing ran on the oldest {' and '.join(processed)} inbox events (the rest of the "
              f"{' and '.join(f'{results[db]['inbox']:,}' for db in dbs)} ingested was deleted first), one process, "
              "into an empty log; its wall time includes the command's start-up (about a second). The batch "
              "holds page views, engagement and click events of 1,000 browsers in the order they arrived.", ""]
    met, missed = [], []
    for db in dbs:
        checks = [(f"batches on {names[db]}", sums[db]["batch"].events_per_s >= TARGETS["batch"][db]),
                  (f"single hits on {names[db]}", single_ok(sums[db]["page"])),
                  (f"processing on {names[db]}", procs[db]["rate"] >= TARGETS["processing"])]
        for label, ok in checks:
            (met if ok else missed).append(label)
    lines += [f"Targets met: {', '.join(met) or 'none'}. Not met: {', '.join(missed) or 'none'}.", ""]
    return "\n".join(lines) + "\n"


def write_doc(report: str) -> None:
    from results import write_section

    write_section(SECTION, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="both", help="sqlite, postgres or both")
    parser.add_argument("--seconds", type=float, default=10, help="length of each measured scenario")
    parser.add_argument("--runs", type=int, default=3, help="runs of every scenario; medians are reported")
    parser.add_argument("--workers", type=int, default=2, help="granian workers of `kizuna serve`")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--process-events", type=int, default=150_000,
                        help="inbox events left for the processing step (the rest is deleted)")
    parser.add_argument("--pg-url", default=os.environ.get("KIZUNA_BENCH_INGEST_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s scenarios, one run, no doc")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/benchmarks.md (default: yes unless --quick)")
    args = parser.parse_args()
    args.warm_up, args.sweep_seconds = 2.0, 3.0
    if args.quick:
        args.seconds, args.runs, args.process_events, args.warm_up, args.sweep_seconds = 2, 1, 10_000, 1.0, 2.0
    choice = args.databases.replace(",", " ").split()
    databases = ["sqlite", "postgres"] if choice == ["both"] else choice
    if not databases or set(databases) - {"sqlite", "postgres"}:
        parser.error("--databases is sqlite, postgres or both")
    ensure_wrk()
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="kizuna-bench-ingest-"))
    try:
        results = {db: bench_database(db, args, work) for db in databases}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(results, args, info)
    print("\n" + report)
    if args.doc if args.doc is not None else not args.quick:
        write_doc(report)
        print(f"figures written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
