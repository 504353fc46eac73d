"""Email sending benchmark: a bulk send of personalized, tracked messages to a local SMTP server.

    .venv/bin/python bench/send.py                       # both databases, 20,000 messages, updates docs
    .venv/bin/python bench/send.py --databases sqlite --messages 5000 --no-doc   # a quick look

For each database (a fresh SQLite file, or the PostgreSQL database kizuna_bench_send dropped and
created): `kizuna init`, then contacts, a list, a marketing template with three tracked links and
personalization, a sender and a bulk send to the list. An SMTP sink (aiosmtpd, in its own process)
accepts and counts messages.

- Baseline, same run: the sink's raw acceptance rate: one process sends one prepared 6 KB message
  over the same number of SMTP connections, as fast as the sink takes it.
- Kizuna: `kizuna worker --only mail` sends the bulk send; the rate is messages received by the
  sink per second between the first and the last (start-up excluded), and the wall time is given.
  Every message is rendered for its contact, links rewritten, List-Unsubscribe added, the outbox
  row claimed and recorded, an "Email Sent" event stored.

The sink, Kizuna's worker and the database share the machine's cores; CPU use of each is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Email sending (bench/send.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_bench_send"
TARGET = 500
TICK = os.sysconf("SC_CLK_TCK")

SINK = r"""
import asyncio, os, signal, sys, time
from aiosmtpd.controller import Controller

class Sink:
    def __init__(self):
        self.count = 0
        self.first = self.last = 0.0
        self.recipients = set()
    async def handle_DATA(self, server, session, envelope):
        now = time.monotonic()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        self.recipients.update(envelope.rcpt_tos)
        return "250 OK queued"

sink = Sink()
controller = Controller(sink, hostname="127.0.0.1", port=int(sys.argv[1]), data_size_limit=10_000_000)
controller.start()
status = sys.argv[2]
def report(*_):
    with open(status, "w") as fh:
        fh.write(f"{sink.count} {sink.first} {sink.last} {len(sink.recipients)}\n")
def reset(*_):
    sink.count, sink.first, sink.last = 0, 0.0, 0.0
    sink.recipients.clear()
signal.signal(signal.SIGUSR1, report)
signal.signal(signal.SIGUSR2, reset)
signal.signal(signal.SIGTERM, lambda *_: (report(), controller.stop(), os._exit(0)))
while True:
    time.sleep(3600)
"""

SETUP = """
import random
from kizuna.contacts.models import Contact, ContactList, ListMembership, SubscriptionTopic
from kizuna.messaging import bulk
from kizuna.messaging.models import BulkSend, EmailTemplate, Sender, SendingSettings
from kizuna.messaging.templates_service import save_version

SendingSettings.objects.update_or_create(pk=1, defaults={{"frequency_cap": 0, "quiet_start": None}})
sender = Sender.objects.create(name="Bench", from_name="株式会社キズナ マーケティング部", from_email="news@kizuna.example",
                               organisation="株式会社キズナ", postal_address="東京都千代田区丸の内1-1-1")
topic = SubscriptionTopic.objects.create(key="news", name="ニュースレター", requires_opt_in=False)
template = EmailTemplate.objects.create(name="Newsletter", kind="marketing", topic=topic, sender=sender)
html = '''<html><head><style>body {{ font-family: sans-serif; }} .cta {{ background: #1f6feb; color: #fff; padding: 8px; }}
h1 {{ font-size: 20px; }}</style></head><body>
<p>{{{{ contact.company_name }}}}<br>{{{{ contact.department }}}} {{{{ contact.family_name | default("ご担当者") }}}} 様</p>
<h1>製造業のDX、次の一手</h1>
<p>いつもお世話になっております。{{{{ owner.name | default("キズナ") }}}}です。{{{{ contact.prefecture }}}}の製造業の皆様に向けた
オンラインセミナーのご案内です。生産管理と在庫管理をクラウドでつなぐ事例を、導入企業の担当者様がご紹介します。</p>
<p><a class="cta" href="https://www.example.co.jp/seminar/2026-12?utm_source=kizuna&amp;utm_medium=email">申し込む</a></p>
<p><a href="https://www.example.co.jp/cases/maruyama-seiki">丸山精機株式会社様 導入事例</a> /
<a href="https://www.example.co.jp/download/whitepaper.pdf">ホワイトペーパー</a></p>
</body></html>'''
version, _ = save_version(template, subject="{{{{ contact.family_name }}}}様: 12月のオンラインセミナーのご案内", html=html)
members = ContactList.objects.create(name="Bench")
names = ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤"]
depts = ["情報システム部", "生産管理部", "経営企画部", "購買部", ""]
contacts = Contact.objects.bulk_create([Contact(
    email=f"user{{i}}@example{{i % 97}}.jp", family_name=names[i % 10], given_name="太郎",
    company_name=f"株式会社サンプル{{i % 500}}", department=depts[i % 5], prefecture="13")
    for i in range({n})], batch_size=2000)
ListMembership.objects.bulk_create([ListMembership(contact_list=members, contact=c) for c in contacts], batch_size=2000)
send = BulkSend.objects.create(name="Bench", template=template, version=version, contact_list=members)
bulk.start(send)
bulk.prepare(send)
print(send.pk)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    return sum(values) - values[3] - values[4]


def proc_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(parts[11]) + int(parts[12])
        except (FileNotFoundError, IndexError):
            pass
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()  # noqa: S607
    return [pid] + [int(p) for p in out]


def database_pids(db: str) -> list[int]:
    if db != "postgres":
        return []
    out = subprocess.run(["pgrep", "-f", "postgres"], capture_output=True, text=True).stdout.split()  # noqa: S607
    return [int(p) for p in out]


class Sink:
    def __init__(self, work: Path):
        self.port = free_port()
        self.status = work / f"sink-{self.port}.txt"
        script = work / "sink.py"
        script.write_text(SINK)
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.port), str(self.status)])  # noqa: S603
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the SMTP sink did not start") from None
                time.sleep(0.1)

    def read(self) -> tuple[int, float, float, int]:
        self.status.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(200):
            if self.status.exists() and self.status.read_text().endswith("\n"):
                count, first, last, recipients = self.status.read_text().split()
                return int(count), float(first), float(last), int(recipients)
            time.sleep(0.02)
        raise RuntimeError("the SMTP sink did not answer")

    def reset(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)
        time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def baseline(port: int, connections: int, seconds: float, message: bytes) -> float:
    """The sink's raw acceptance: prepared bytes, no rendering, same connections."""
    sent = [0] * connections
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            while time.monotonic() < stop:
                smtp.sendmail("bounce@kizuna.example", [f"b{i}@example.jp"], message)
                sent[i] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(sent) / (time.monotonic() - start)


def sample_message() -> bytes:
    body = "<p>株式会社サンプル<br>佐藤 様</p>\r\n" + "<p>製造業のDX、次の一手。オンラインセミナーのご案内です。</p>\r\n" * 40
    return ("From: news@kizuna.example\r\nTo: b@example.jp\r\nSubject: =?utf-8?b?5qGI5YaF?=\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body).encode()


def kizuna(env: dict[str, str], *args: str, timeout: int = 900) -> str:
    result = subprocess.run([sys.executable, "-m", "kizuna.cli", *args], env=env, capture_output=True,  # noqa: S603
                            text=True, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"kizuna {args[0]} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def fresh(db: str, pg_url: str, work: Path) -> dict[str, str]:
    data = work / f"data-{db}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_")}
    env.update({"KIZUNA_DATA_DIR": str(data), "KIZUNA_SECRET_KEY": "bench-secret-key-0123456789-0123456789-01234",
                "KIZUNA_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "kizuna.settings",
                "KIZUNA_BASE_URL": "https://mail.kizuna.example"})
    if db == "postgres":
        import psycopg

        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        env["KIZUNA_DATABASE_URL"] = pg_url
    kizuna(env, "init")
    return env


def run_db(db: str, args: argparse.Namespace, work: Path) -> dict:
    env = fresh(db, args.pg_url, work)
    started = time.monotonic()
    kizuna(env, "shell", "-c", textwrap.dedent(SETUP.format(n=args.messages)))
    prepare_s = time.monotonic() - started
    sink = Sink(work)
    try:
        base = statistics.median(baseline(sink.port, args.connections, args.baseline_seconds, sample_message())
                                 for _ in range(3))
        sink.reset()
        before = sink.read()[0]
        sink_ticks0, db_ticks0 = proc_ticks([sink.proc.pid]), proc_ticks(database_pids(db))
        env["KIZUNA_EMAIL_URL"] = f"smtp://127.0.0.1:{sink.port}?connections={args.connections}"
        busy0, t0 = busy_ticks(), time.monotonic()
        worker = subprocess.Popen([sys.executable, "-m", "kizuna.cli", "worker", "--only", "mail"],  # noqa: S603
                                  env=env)
        deadline = time.monotonic() + 1800
        cpu_worker = cpu_db = cpu_sink = 0
        while True:
            time.sleep(0.5)
            pids = children(worker.pid)
            w = proc_ticks(pids)
            d = proc_ticks(database_pids(db)) - db_ticks0
            s = proc_ticks([sink.proc.pid]) - sink_ticks0
            cpu_worker, cpu_db, cpu_sink = max(cpu_worker, w), max(cpu_db, d), max(cpu_sink, s)
            count = sink.read()[0] - before
            if count >= args.messages or time.monotonic() > deadline or worker.poll() is not None:
                break
        wall = time.monotonic() - t0
        busy = busy_ticks() - busy0
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        total, first, last, recipients = sink.read()
    finally:
        sink.stop()
    sent = total - before
    rate = (sent - 1) / (last - first) if last > first else 0.0
    return {"db": db, "messages": args.messages, "sent": sent, "recipients": recipients,
            "rate": rate, "wall": wall, "wall_rate": sent / wall, "baseline": base, "prepare_s": prepare_s,
            "cpu": {"worker": cpu_worker / TICK / wall, "sink": cpu_sink / TICK / wall,
                    "database": cpu_db / TICK / wall if db == "postgres" else 0.0,
                    "all": busy / TICK / wall}}


def render(results: list[dict], args: argparse.Namespace) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [SECTION, "",
             f"- Date: {dt.datetime.now(dt.UTC).date().isoformat()}; machine: {os.cpu_count()} cores ({cpu}), "
             f"Python {platform.python_version()}",
             f"- Dataset: {args.messages:,} contacts in a list, one bulk send; marketing template with "
             "personalization (company, department, name with default, owner, prefecture), CSS inlined at save, "
             "3 tracked links, open pixel, footer with sender address, List-Unsubscribe one-click headers; "
             f"no DKIM; `kizuna worker --only mail` with {args.connections} SMTP connections",
             "- SMTP sink: aiosmtpd in its own process on the same machine, accepting and counting",
             f"- Baseline (same run): the sink's raw acceptance, prepared 6 KB messages over the same "
             f"{args.connections} connections, median of 3 × {args.baseline_seconds:g} s",
             "", "| database | sent | Kizuna, messages/s (first→last) | wall time incl. start-up | baseline: sink raw, "
             "messages/s | ratio | CPU (cores) worker / sink / database / all |", "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["cpu"]
        lines.append(
            f"| {r['db']} | {r['sent']:,} | **{r['rate']:,.0f}** | {r['wall']:.1f} s ({r['wall_rate']:,.0f}/s) | "
            f"{r['baseline']:,.0f} | {r['rate'] / r['baseline']:.0%} | {c['worker']:.2f} / {c['sink']:.2f} / "
            f"{c['database']:.2f} / {c['all']:.2f} |")
    verdicts = [f"{r['db']}: {'met' if r['rate'] >= TARGET else 'not met'}" for r in results]
    counted = "; ".join(f"{r['db']}: {r['recipients']:,} distinct recipients for {r['messages']:,} contacts"
                        for r in results)
    lines += ["", f"Target ≥ {TARGET} messages/s sustained: {', '.join(verdicts)}. Counted at the sink: {counted}.",
              ""]
    return "\n".join(lines) + "\n"


def write_doc(report: str) -> None:
    from results import write_section

    write_section(SECTION, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="both")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--baseline-seconds", type=float, default=5)
    parser.add_argument("--pg-url", default=os.environ.get("KIZUNA_BENCH_SEND_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    dbs = ["sqlite", "postgres"] if args.databases == "both" else [args.databases]
    with tempfile.TemporaryDirectory(prefix="kizuna-bench-send-") as tmp:
        results = []
        for db in dbs:
            print(f"[{db}] preparing {args.messages:,} recipients …", flush=True)
            result = run_db(db, args, Path(tmp))
            print(f"[{db}] {result['sent']:,} sent, {result['rate']:,.0f} messages/s (baseline "
                  f"{result['baseline']:,.0f}/s), wall {result['wall']:.1f} s, cpu {result['cpu']}", flush=True)
            results.append(result)
    report = render(results, args)
    print(report)
    if args.doc:
        write_doc(report)


if __name__ == "__main__":
    main()
