"""Form submissions benchmark: `kizuna serve` under wrk, then one worker applying the backlog.

    .venv/bin/python bench/forms.py                               # both databases, 3 runs of 10 s, updates docs
    .venv/bin/python bench/forms.py --quick --databases sqlite     # a smoke run in about a minute

For each database, on a fresh data directory (SQLite) or the database kizuna_bench_forms, dropped and
created (PostgreSQL): `kizuna init`, a subscription topic and a form made with `kizuna shell -c` (email,
family and given name, company, prefecture, a message, a consent box with its text and version; actions
add to a list, tag, score; disposable addresses blocked; minimum fill time 3 s), then `kizuna serve
--workers 2` WITHOUT a worker, so accepting submissions is measured alone and every accepted submission
waits for processing. A form token is read from the hosted page, as a browser gets it, and the runs start
after the form's minimum fill time. wrk (Debian's package) drives, with Lua written here:

- submit (embed): POST /f/<slug>/submit as the JS embed sends it: form-encoded, Accept: application/json,
  Origin, a browser User-Agent, X-Forwarded-For through a proxy (KIZUNA_PROXY_COUNT=1) with a different
  visitor address per request (so the per-IP rate limit, which runs on every request, refuses nothing),
  a unique email and tracker id per request. Acknowledged = 200 {"ok": true}, answered only once the
  submission row is committed.
- submit (HTML): the same post as the hosted page or a plain-HTML form sends it; acknowledged = 303.
- baselines, same server and concurrency: /v1/_noop (granian and the WSGI front, no Django) and
  OPTIONS /f/<slug>/submit (the whole Django middleware stack and the form lookup, no write).

After each scenario the submissions are counted: stored must equal the acknowledged responses, give or
take the requests in flight when wrk stopped. The CPU each side used is read from /proc, with
/proc/loadavg before and after, since the machine is shared. Then the server stops and one worker
thread (processing.process_due, as the worker's forms loop runs it) applies the oldest submissions:
contact, company, consent, actions and the Form Submitted event.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ingest as base  # noqa: E402 - the server, wrk and /proc helpers of the ingestion benchmark

SECTION = "## Form submissions (bench/forms.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_bench_forms"
TARGET = 300  # submissions/s acknowledged
SWEEP = (4, 8, 16, 32)
QUICK_SWEEP = (8, 16)

SETUP = """
from kizuna.capture import services
from kizuna.capture.models import Form
from kizuna.contacts.models import ContactList, SubscriptionTopic
from kizuna.scoring.models import ScoringModel
from kizuna.scoring.setup import ensure_defaults

SubscriptionTopic.objects.get_or_create(key="newsletter", defaults={"name": "メールマガジン"})
seminar = ContactList.objects.create(name="資料請求者")
model = ensure_defaults() or ScoringModel.objects.first()
definition = {
    "language": "ja", "title": "製造業DX ホワイトペーパー",
    "fields": [
        {"name": "email", "type": "email", "label": "メールアドレス", "required": True, "maps_to": "email"},
        {"name": "sei", "type": "text", "label": "姓", "required": True, "maps_to": "family_name"},
        {"name": "mei", "type": "text", "label": "名", "maps_to": "given_name"},
        {"name": "company", "type": "text", "label": "会社名", "maps_to": "company_name", "progressive": True},
        {"name": "pref", "type": "prefecture", "label": "都道府県", "maps_to": "prefecture"},
        {"name": "message", "type": "textarea", "label": "ご質問"},
        {"name": "agree", "type": "consent", "text": "メールマガジンの配信に同意します。", "version": "2026-12",
         "topics": ["newsletter"]},
    ],
    "pool": [{"name": "dept", "type": "text", "label": "部署", "maps_to": "department"}],
    "thank_you": {"message": "ありがとうございました。"},
    "actions": [{"type": "add_to_list", "list": seminar.pk}, {"type": "add_tag", "tag": "資料請求"},
                {"type": "score", "model": model.pk, "points": 10}],
    "spam": {"min_seconds": 3, "block_disposable": True},
}
print(services.save_form(None, Form(name="ホワイトペーパー", slug="whitepaper"), definition).slug)
"""

PROCESS = """
import time
from kizuna.capture import processing
from kizuna.capture.models import Submission
cap = {cap}
start = time.monotonic()
done = 0
while done < cap:
    n = processing.process_due(limit=min(50, cap - done))
    if not n:
        break
    done += n
wall = time.monotonic() - start
print("processed", done, "in", round(wall, 3), "failed", Submission.objects.filter(status="failed").count(),
      "left", Submission.objects.filter(status="received").count())
"""

LUA = r"""
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

request = function()
  counter = counter + 1
  local n = tid * 10000000 + counter
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  local headers = {["Content-Type"] = "application/x-www-form-urlencoded", ["User-Agent"] = UA,
                   ["X-Forwarded-For"] = ip, ["Origin"] = ORIGIN}
  if ACCEPT ~= "" then headers["Accept"] = ACCEPT end
  if METHOD == "OPTIONS" then
    return wrk.format("OPTIONS", PATH, headers, nil)
  end
  local body = "email=bench-" .. RUN .. "-" .. n .. "%40example.co.jp&kz_aid=aid-" .. RUN .. "-" .. n .. "&" .. BODY
  return wrk.format(METHOD, PATH, headers, body)
end
"""

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
      "Safari/537.36")
ORIGIN = "https://www.example.co.jp"
PAGE = "https://www.example.co.jp/download/whitepaper?utm_source=newsletter&utm_medium=email&utm_campaign=dx2026"


@dataclass
class Scenario:
    name: str
    path: str
    method: str
    accept: str
    connections: int
    stores: bool


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
    cpu: dict[str, float] = field(default_factory=dict)
    load: tuple[str, str] = ("", "")

    @property
    def acknowledged(self) -> int:
        return self.requests - self.non2xx if self.scenario.stores else 0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def body(token: str) -> str:
    fields = {"sei": "山田", "mei": "太郎", "company": "丸山精機株式会社", "pref": "13",
              "message": "生産管理の導入事例を知りたいです。", "agree": "on", "kz_page": PAGE,
              "kz_ref": "https://www.google.com/", "kz_token": token, "website_url": ""}
    return urlencode(fields)


class Load:
    def __init__(self, work: Path, base_url: str, token: str, threads: int) -> None:
        self.work, self.base_url, self.token, self.threads = work, base_url, token, threads
        self.stamp = dt.datetime.now(dt.UTC).strftime("%H%M%S")
        self.seq = 0

    def script(self, scenario: Scenario) -> Path:
        self.seq += 1

        def lua(value: str) -> str:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

        header = (f"local PATH = {lua(scenario.path)}\nlocal METHOD = {lua(scenario.method)}\n"
                  f"local ACCEPT = {lua(scenario.accept)}\nlocal UA = {lua(UA)}\nlocal ORIGIN = {lua(ORIGIN)}\n"
                  f"local RUN = {lua(f'b{self.stamp}{self.seq}')}\nlocal BODY = {lua(body(self.token))}\n")
        path = self.work / f"{self.seq:03d}-{scenario.name}.lua"
        path.write_text(header + LUA)
        return path

    def run(self, scenario: Scenario, seconds: float) -> tuple[Result, float]:
        import resource
        import subprocess

        cmd = ["wrk", "-t", str(min(self.threads, scenario.connections)), "-c", str(scenario.connections),
               "-d", f"{seconds:g}s", "--latency", "--timeout", "10s", "-s", str(self.script(scenario)),
               self.base_url + scenario.path]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0 or "Requests/sec" not in out.stdout:
            raise SystemExit(f"wrk failed:\n{out.stdout}\n{out.stderr}")
        parsed = base.parse_wrk(base.Scenario(scenario.name, scenario.path, "page", scenario.connections, 0),
                                out.stdout)
        result = Result(scenario, parsed.rps, parsed.requests, parsed.non2xx, parsed.socket_errors, parsed.p50,
                        parsed.p99)
        return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(load: Load, server: base.Server, database: base.Database, scenario: Scenario, seconds: float) -> Result:
    count_before = database.count("capture_submission")
    pids = database.pids()
    avg_before = loadavg()
    cpu_before = base.cpu_sample(server.proc.pid, pids)
    result, wrk_cpu = load.run(scenario, seconds)
    cpu_after = base.cpu_sample(server.proc.pid, pids | database.pids())
    result.load = (avg_before, loadavg())
    stored, deadline = database.count("capture_submission"), time.monotonic() + 10
    while time.monotonic() < deadline:  # requests cut off when wrk stopped may still be committing
        time.sleep(0.5)
        again = database.count("capture_submission")
        if again == stored:
            break
        stored = again
    result.stored = stored - count_before
    result.cpu = base.cpu_share(cpu_before, cpu_after, wrk_cpu)
    flag = ""
    if result.non2xx or result.socket_errors.replace("connect 0, read 0, write 0, timeout 0", ""):
        flag += f"  non-2xx {result.non2xx}, socket errors: {result.socket_errors}"
    if result.stored < result.acknowledged:  # more stored is fine: requests cut off when wrk stopped
        flag += f"  LOST: stored {result.stored:,} < acknowledged {result.acknowledged:,}"
    print(f"    {scenario.name:<12} c={scenario.connections:<3} {result.rps:>7,.0f} req/s  p50 {result.p50:6.1f} ms  "
          f"p99 {result.p99:6.1f} ms  stored {result.stored:>6,}  cpu server {result.cpu['server']:.2f} "
          f"db {result.cpu['database']:.2f} wrk {result.cpu['wrk']:.2f} other {result.cpu['other']:.2f}  "
          f"load {result.load[0]} → {result.load[1]}{flag}", flush=True)
    return result


def read_token(base_url: str, slug: str) -> str:
    with urllib.request.urlopen(f"{base_url}/f/{slug}", timeout=30) as response:  # noqa: S310 - our server
        html = response.read().decode()
    return re.search(r'name="kz_token" value="([^"]+)"', html).group(1)


def process(env: dict[str, str], database: base.Database, cap: int) -> dict:
    waiting = database.count("capture_submission")
    print(f"  processing {min(cap, waiting):,} of {waiting:,} submissions with one worker thread", flush=True)
    output = base.kizuna(env, "shell", "-c", PROCESS.format(cap=cap))
    found = re.search(r"processed (\d+) in ([\d.]+) failed (\d+) left (\d+)", output)
    if not found:
        raise SystemExit(f"unexpected output of the processing step: {output[-3000:]}")
    done, wall, failed, left = int(found.group(1)), float(found.group(2)), int(found.group(3)), int(found.group(4))
    counts = {t: database.count(t) for t in ("contacts_contact", "contacts_consentrecord", "events_incomingevent",
                                             "scoring_scoreentry")}
    print(f"    {done:,} in {wall:.1f} s = {done / wall:,.0f} submissions/s; failed {failed}, left {left}; {counts}",
          flush=True)
    return {"processed": done, "seconds": wall, "rate": done / wall, "failed": failed, "left": left,
            "counts": counts}


def bench_database(db: str, args: argparse.Namespace, work: Path) -> dict:
    print(f"[{db}]", flush=True)
    server_desc = base.fresh_database(db, args.pg_url)
    data_dir = work / f"data-{db}"
    data_dir.mkdir()
    port = base.free_port()
    env = base.child_env(db, data_dir, args.pg_url, port)
    base.kizuna(env, "init", "-v0")
    slug = base.kizuna(env, "shell", "-c", SETUP).strip().splitlines()[-1]
    database = base.Database(db, data_dir, args.pg_url)
    server = base.Server(env, port, args.workers, work / f"serve-{db}.log")
    scripts = work / f"wrk-{db}"
    scripts.mkdir()
    out: dict = {"server": server_desc, "runs": []}
    try:
        token = read_token(server.base, slug)
        time.sleep(3.2)  # the form's minimum fill time
        load = Load(scripts, server.base, token, args.wrk_threads)
        out["body_bytes"] = len(body(token)) + 60
        submit = f"/f/{slug}/submit"
        measure(load, server, database, Scenario("warm-up", submit, "POST", "application/json", 8, True),
                args.warm_up)
        print("  choosing concurrency:", flush=True)
        sweep = [measure(load, server, database, Scenario("submit", submit, "POST", "application/json", c, True),
                         args.sweep_seconds) for c in (QUICK_SWEEP if args.quick else SWEEP)]
        top = max(r.rps for r in sweep)
        conns = min(r.scenario.connections for r in sweep if r.rps >= 0.97 * top)
        out["connections"] = conns
        out["sweep"] = [(r.scenario.connections, r.rps, r.p99) for r in sweep]
        plan = [Scenario("noop", "/v1/_noop", "POST", "", conns, False),
                Scenario("options", submit, "OPTIONS", "", conns, False),
                Scenario("submit", submit, "POST", "application/json", conns, True),
                Scenario("submit-html", submit, "POST", "", conns, True)]
        for run in range(args.runs):
            print(f"  run {run + 1} of {args.runs}:", flush=True)
            out["runs"].append({s.name: measure(load, server, database, s, args.seconds) for s in plan})
    finally:
        server.stop()
    out["stored_total"] = database.count("capture_submission")
    out["processing"] = process(env, database, args.process)
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


@dataclass
class Summary:
    rps: float
    low: float
    high: float
    p50: float
    p99: float
    non2xx: int
    stored: int
    acknowledged: int
    cpu: dict[str, float]
    loads: list[tuple[str, str]]


def summarise(runs: list[dict[str, Result]], name: str) -> Summary:
    rs = [run[name] for run in runs]
    rates = [r.rps for r in rs]
    return Summary(statistics.median(rates), min(rates), max(rates), statistics.median(r.p50 for r in rs),
                   statistics.median(r.p99 for r in rs), sum(r.non2xx for r in rs), sum(r.stored for r in rs),
                   sum(r.acknowledged for r in rs), {k: statistics.median(r.cpu[k] for r in rs) for k in rs[0].cpu},
                   [r.load for r in rs])


def render(results: dict[str, dict], args: argparse.Namespace, info: dict[str, str]) -> str:
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
    dbs = list(results)
    sums = {db: {n: summarise(results[db]["runs"], n) for n in results[db]["runs"][0]} for db in dbs}
    runs = f"median of {args.runs} runs" if args.runs > 1 else "one run"
    lines = [
        SECTION, "",
        f"- Date: {dt.datetime.now(dt.UTC).date().isoformat()}; machine: {info['cores']} cores ({info['cpu']}), "
        f"{info['ram']} RAM, Linux {info['kernel']}, Python {info['python']}; the machine is shared: "
        "/proc/loadavg before → after each run is listed below",
        *[f"- {names[db]}: {results[db]['server']}" for db in dbs],
        f"- Server: `kizuna serve --workers {args.workers}` (granian {info['granian']}, WSGI, "
        f"{os.environ.get('KIZUNA_WEB_THREADS', '16')} blocking threads per worker), no worker running: every "
        "accepted submission waits to be applied",
        f"- Load: {info['wrk']}, {args.wrk_threads} thread, on the same machine; {args.seconds:g} s per scenario, "
        f"{runs} (range in brackets); wrk keeps a fixed number of connections busy",
        "- Submit: POST /f/whitepaper/submit, a 7-field form (email, names, company, prefecture, message, consent box) "
        f"as the JS embed sends it, form-encoded, about {results[dbs[0]]['body_bytes']:,} bytes, Origin, browser "
        "User-Agent, one visitor IP per request (X-Forwarded-For, KIZUNA_PROXY_COUNT=1) so the per-IP rate limit "
        "is taken on every request and refuses none, unique email and tracker id; each answer comes after the "
        "token, honeypot, fill-time, field and contact-service checks, the disposable-domain check, the rate-limit "
        "bucket and the submission row are committed",
        "- Baselines on the same server at the same concurrency: /v1/_noop (granian and the WSGI front, no Django) "
        "and OPTIONS on the submit address (Django's middleware and the form lookup, no write)", "",
        "| | " + " | ".join(names[db] for db in dbs) + " | target |", "|---|" + "---|" * len(dbs) + "---|",
    ]

    def row(label: str, cells: list[str], target: str = "") -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")

    def cell(s: Summary) -> str:
        return f"**{s.rps:,.0f}/s** ({s.low:,.0f}–{s.high:,.0f}), p50 {s.p50:.1f} ms, p99 {s.p99:.1f} ms"

    row("**Submissions acknowledged** (JSON, the embed)",
        [f"{cell(sums[db]['submit'])}, {results[db]['connections']} conn.; "
         f"{'met' if sums[db]['submit'].rps >= TARGET else '**not met**'}" for db in dbs], f"≥ {TARGET}/s")
    row("Submissions acknowledged (HTML post, 303)", [cell(sums[db]["submit-html"]) for db in dbs])
    row("baseline: OPTIONS on the submit address", [cell(sums[db]["options"]) for db in dbs])
    row("baseline: /v1/_noop", [cell(sums[db]["noop"]) for db in dbs])
    row("Submissions = % of the Django baseline",
        [f"{sums[db]['submit'].rps / sums[db]['options'].rps:.0%}" for db in dbs])

    def stored(db: str) -> str:
        measured = [r for run in results[db]["runs"] for name, r in run.items() if r.scenario.stores]
        acked, kept = sum(r.acknowledged for r in measured), sum(r.stored for r in measured)
        lost = sum(max(0, r.acknowledged - r.stored) for r in measured)
        bad = sum(s.non2xx for s in sums[db].values())
        return (f"{kept:,} stored / {acked:,} acknowledged, {lost} lost, non-2xx {bad} "
                "(more stored than acknowledged: requests cut off when wrk stopped)")

    row("Stored = acknowledged (measured runs)", [stored(db) for db in dbs], "nothing lost")
    procs = {db: results[db]["processing"] for db in dbs}
    row("Applied afterwards by one worker thread",
        [f"{p['rate']:,.0f}/s ({p['processed']:,} in {p['seconds']:.1f} s, {p['failed']} failed): contact, "
         "company, consent, list, tag, score, Form Submitted event" for p in procs.values()])
    lines += ["", "CPU used on average (cores of 2) and /proc/loadavg before → after each run:", "",
              "| | " + " | ".join(names[db] for db in dbs) + " |", "|---|" + "---|" * len(dbs)]
    for name in ("submit", "submit-html", "options", "noop"):
        cells = []
        for db in dbs:
            c = sums[db][name].cpu
            loads = "; ".join(f"{a} → {b}" for a, b in sums[db][name].loads)
            cells.append(f"server {c['server']:.2f}, database {c['database']:.2f}, wrk {c['wrk']:.2f}, "
                         f"other {c['other']:.2f}; load {loads}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    def per_request(db: str, name: str) -> str:
        s = sums[db][name]
        return f"{1000 * s.cpu['server'] / s.rps:.2f} ms" + (
            f" (+ {1000 * s.cpu['database'] / s.rps:.2f} ms in PostgreSQL)" if s.cpu["database"] >= 0.01 else "")

    lines += ["", "Where the time goes: per acknowledged submission the server used "
              + "; ".join(f"{per_request(db, 'submit')} of CPU on {names[db]}" for db in dbs)
              + ", against " + "; ".join(f"{per_request(db, 'options')}" for db in dbs)
              + " for the Django baseline: the token, the field checks, the contact service's validation and "
              "the share of the grouped transaction (rate-limit buckets and rows, several posts per commit). "
              "Applying a submission afterwards is the heavier half (about 60 queries through the contact, "
              "consent, scoring and event services), done by the worker at its own pace."]
    lines += ["", f"Concurrency chosen from a sweep of {args.sweep_seconds:g} s runs (highest throughput; a lower "
              "concurrency within 3% of it wins):", ""]
    for db in dbs:
        lines.append(f"- {names[db]}: " + ", ".join(f"{c}: {r:,.0f}/s (p99 {p:.1f} ms)"
                                                    for c, r, p in results[db]["sweep"]))
    lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="both", help="sqlite, postgres or both")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="granian workers of `kizuna serve`")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--process", type=int, default=1000, help="submissions applied in the processing step")
    parser.add_argument("--pg-url", default=os.environ.get("KIZUNA_BENCH_FORMS_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s scenarios, one run, no doc")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/benchmarks.md (default: yes unless --quick)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs = 2, 1
    args.sweep_seconds = 2 if args.quick else 5
    args.warm_up = 2 if args.quick else 5
    base.ensure_wrk()
    dbs = ["sqlite", "postgres"] if args.databases == "both" else [args.databases]
    info = base.machine()
    results = {}
    with tempfile.TemporaryDirectory(prefix="kizuna-bench-forms-") as tmp:
        for db in dbs:
            results[db] = bench_database(db, args, Path(tmp))
    report = render(results, args, info)
    print(report)
    if args.doc if args.doc is not None else not args.quick:
        from bench.results import write_section

        write_section(SECTION, report)


if __name__ == "__main__":
    main()
