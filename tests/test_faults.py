"""Faults under load, with real processes: two `kizuna serve` and two `kizuna worker` on a
PostgreSQL cluster of the test's own (so restarting it disturbs nobody), a client posting events
to both web servers, a bulk send and a sign-up journey mailing a real SMTP server. Meanwhile the
workers and the web servers are killed with SIGKILL and started again, PostgreSQL is restarted
(immediate shutdown: a crash, recovered from its WAL), and the SMTP server refuses (451) for a
while. Afterwards:

- every event acknowledged with a 2xx is in the event log (exactly once: its messageId is unique),
  and the inbox is empty with no event failed: processing caught up;
- every signed-up person is exactly one contact;
- every mail was accepted by the SMTP server exactly once (counted there), and the outbox holds
  nothing unsent, unknown or failed.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from django.db import connection

from tests.mailtest import Inbox, SmtpServer, free_port

BULK_RECIPIENTS = 240
BULK_PER_MINUTE = 720  # 12 a second: the send lasts through every fault
CLIENTS = 2
DOMAINS = ["example.co.jp", "kizuna-shoji.jp", "sample.jp"]  # sign-ups share company domains
ROOT = Path(__file__).resolve().parent.parent


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port: initdb, start, restart, remove."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="kizuna-faults-pg-"))
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)  # noqa: S603

    def start(self) -> None:
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=100 -c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o", options, "start")
        self.psql_admin("CREATE DATABASE kizuna")

    def restart(self) -> None:
        """Immediate shutdown: every backend dies at once, as in a crash; startup replays the WAL."""
        # -l again: pg_ctl remembers the server's options, not its log (without one the server
        # would keep our pipe open and pg_ctl's output never end).
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-m", "immediate", "-w",
                  "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/kizuna"

    def psql_admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(sql)

    def query(self, sql: str, params=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchall()


class FlakySmtp(Inbox):
    """Accepts mail, or answers 451 at the end of DATA while `refusing` (the client has sent the
    whole message by then: the outbox journal's hardest case)."""

    refusing = False
    refused = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refusing:
            self.refused += 1
            return "451 4.3.0 Try again later"
        return await super().handle_DATA(server, session, envelope)


class Processes:
    """The web servers and workers, each in a process group of its own (SIGKILL takes granian's
    children with it, as a machine losing the process would)."""

    def __init__(self, env: dict[str, str], ports: list[int], log: Path):
        self.env, self.ports, self.log = env, ports, open(log, "ab")  # noqa: SIM115
        self.web: dict[int, subprocess.Popen] = {}
        self.workers: dict[int, subprocess.Popen] = {}
        self.kills = Counter()

    def _spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "kizuna.cli", *args], env=self.env,  # noqa: S603
                                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_web(self, n: int) -> None:
        self.web[n] = self._spawn("serve", "--port", str(self.ports[n]), "--workers", "1")

    def start_worker(self, n: int) -> None:
        self.workers[n] = self._spawn("worker", "--interval", "0.3")

    def kill(self, kind: str, n: int) -> None:
        proc = (self.web if kind == "web" else self.workers)[n]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.kills[kind] += 1

    def stop(self) -> None:
        for proc in [*self.web.values(), *self.workers.values()]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.web.values(), *self.workers.values()]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.log.close()


class Client(threading.Thread):
    """Posts batches to the web servers in turn, like an SDK: a batch not acknowledged with a
    2xx is sent again, with the same messageIds, to the next server."""

    def __init__(self, number: int, ports: list[int], write_key: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.number, self.ports, self.stop_event = number, ports, stop
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.acked: set[str] = set()
        self.signed_up: list[str] = []  # emails of acknowledged sign-ups
        self.answers: Counter = Counter()

    def batch(self, seq: int) -> tuple[list[dict], str]:
        user = f"c{self.number}-u{seq}"
        email = f"{user}@{DOMAINS[seq % len(DOMAINS)]}"
        anon = f"a-{user}"
        messages = [{"type": "page", "anonymousId": anon, "messageId": f"{user}-p{i}",
                     "context": {"page": {"url": f"https://example.co.jp/products/{i}", "path": f"/products/{i}"}}}
                    for i in range(6)]
        messages += [
            {"type": "identify", "anonymousId": anon, "userId": user, "messageId": f"{user}-id",
             "traits": {"email": email, "lastName": "試験", "firstName": f"{seq}"}},
            {"type": "track", "anonymousId": anon, "userId": user, "event": "Signed Up", "messageId": f"{user}-su",
             "properties": {"plan": "trial"}},
        ]
        return messages, email

    def post(self, port: int, messages: list[dict]) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/batch", data=json.dumps({"batch": messages}).encode(),
            headers={"Content-Type": "application/json", "Authorization": self.auth}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0  # refused or reset: the server was killed

    def run(self) -> None:
        seq, turn = 0, self.number
        while not self.stop_event.is_set():
            messages, email = self.batch(seq)
            while True:  # the same batch until it is acknowledged (or the test ends)
                turn += 1
                status = self.post(self.ports[turn % len(self.ports)], messages)
                self.answers[status] += 1
                if 200 <= status < 300:
                    self.acked.update(m["messageId"] for m in messages)
                    self.signed_up.append(email)
                    break
                if self.stop_event.wait(0.2):
                    break
            seq += 1
            self.stop_event.wait(0.05)


def _wait(check, timeout: float, what: str, on_timeout=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{on_timeout()}")
        time.sleep(0.25)


def _up(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/_noop", timeout=2)  # noqa: S310
        return True
    except OSError:
        return False


SETUP = """
import django
django.setup()
from kizuna.contacts.models import Contact, ContactList, ListMembership
from kizuna.events.models import WriteKey
from kizuna.messaging import bulk
from kizuna.messaging.models import BulkSend, EmailTemplate
from kizuna.messaging.templates_service import save_version
from tests.journeyhelp import contact, journey, make_world, template

world = make_world()
members = ContactList.objects.create(name="展示会来場者")
for i in range({recipients}):
    ListMembership.objects.create(contact_list=members, contact=contact(world, f"guest{{i}}@expo.example.jp"))
news = template(world, "展示会のお礼")
send = BulkSend.objects.create(name="展示会のお礼", template=news, version=news.current, contact_list=members,
                               rate_per_minute={per_minute})
welcome = EmailTemplate.objects.create(name="ようこそ", kind="transactional", sender=world["sender"])
save_version(welcome, subject="ようこそ", html="<p>{{{{ contact.family_name }}}} 様、ご登録ありがとうございます。</p>")
journey("登録のお礼", {{"trigger": {{"type": "event", "event": "Signed Up"}},
                       "nodes": [{{"id": "m", "type": "send_email", "template": welcome.pk}}]}})
bulk.start(send)
print(WriteKey.objects.get().key)
"""


@pytest.mark.django_db
def test_nothing_accepted_is_lost_or_doubled_through_kills_restarts_and_refusals(tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("several web and worker processes on one database is the PostgreSQL set-up")
    started = time.monotonic()
    pg = PrivatePostgres()
    smtp = SmtpServer(FlakySmtp())
    procs = None
    caught = False
    stop = threading.Event()
    try:
        pg.start()
        smtp.__enter__()
        ports = [free_port(), free_port()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_")}
        env.update({
            "DJANGO_SETTINGS_MODULE": "kizuna.settings", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "KIZUNA_DATA_DIR": str(tmp_path), "KIZUNA_DATABASE_URL": pg.url,
            "KIZUNA_BASE_URL": f"http://127.0.0.1:{ports[0]}", "KIZUNA_SECRET_KEY": secrets.token_hex(32),
            "KIZUNA_EMAIL_URL": f"{smtp.url}?connections=2&timeout=10", "KIZUNA_OUTBOX_BACKOFF": "1,2,2,2,2",
            "KIZUNA_OUTBOX_BATCH": "20", "KIZUNA_JOURNEY_IDLE": "0.2", "KIZUNA_WEB_THREADS": "8",
        })
        subprocess.run([sys.executable, "-m", "kizuna.cli", "init"], env=env, check=True,  # noqa: S603
                       capture_output=True, timeout=240)
        out = subprocess.run([sys.executable, "-c", SETUP.format(recipients=BULK_RECIPIENTS,  # noqa: S603
                                                                  per_minute=BULK_PER_MINUTE)],
                             env=env, check=True, capture_output=True, text=True, timeout=120)
        write_key = out.stdout.strip().splitlines()[-1]
        procs = Processes(env, ports, tmp_path / "processes.log")
        for n in (0, 1):
            procs.start_web(n)
            procs.start_worker(n)
        logs = lambda: (tmp_path / "processes.log").read_text(errors="replace")[-6000:]  # noqa: E731
        _wait(lambda: all(_up(p) for p in ports), 120, "the web servers", logs)
        handler: FlakySmtp = smtp.handler
        clients = [Client(n, ports, write_key, stop) for n in range(CLIENTS)]
        for c in clients:
            c.start()
        sent = lambda: len(handler.messages)  # noqa: E731
        _wait(lambda: sent() >= 20, 90, "the first mails", logs)

        procs.kill("worker", 0)  # a worker dies in the middle of sending and processing
        time.sleep(1.0)
        procs.start_worker(0)
        procs.kill("web", 0)  # a web server dies with requests in flight
        time.sleep(0.5)
        procs.start_web(0)
        mark = sent()
        handler.refusing = True  # the mail server refuses for a while
        _wait(lambda: handler.refused >= 10, 30, "refusals")
        time.sleep(2.0)
        handler.refusing = False
        _wait(lambda: sent() > mark + 10, 30, "sending to resume", logs)
        before = pg.query("SELECT pg_postmaster_start_time()")[0][0]
        pg.restart()  # the database crashes and comes back
        assert pg.query("SELECT pg_postmaster_start_time()")[0][0] > before
        time.sleep(2.0)
        procs.kill("worker", 1)
        procs.kill("web", 1)
        time.sleep(0.5)
        procs.start_worker(1)
        procs.start_web(1)
        _wait(lambda: all(_up(p) for p in ports), 60, "the restarted web servers", logs)
        time.sleep(3.0)  # more traffic on the restarted processes
        stop.set()
        for c in clients:
            c.join(timeout=30)

        acked = set().union(*(c.acked for c in clients))
        signed_up = [e for c in clients for e in c.signed_up]
        expected_mails = Counter({(f"guest{i}@expo.example.jp", "展示会のお礼"): 1 for i in range(BULK_RECIPIENTS)})
        expected_mails.update({(email, "ようこそ"): 1 for email in signed_up})

        def caught_up() -> bool:
            pending = pg.query("SELECT count(*) FROM events_incomingevent")[0][0]
            unsent = pg.query("SELECT count(*) FROM messaging_message WHERE status <> 'sent'")[0][0]
            open_runs = pg.query("SELECT count(*) FROM journeys_enrollment WHERE state NOT IN ('done', 'exited', "
                                 "'failed')")[0][0]
            return pending == 0 and unsent == 0 and open_runs == 0 and sum(_received(handler).values()) >= sum(
                expected_mails.values())

        def state() -> str:
            inbox = pg.query("SELECT count(*), count(*) FILTER (WHERE error <> '') FROM events_incomingevent")
            return (f"inbox {inbox} received {sum(_received(handler).values())} of {sum(expected_mails.values())}"
                    f" outbox {pg.query('SELECT status, count(*) FROM messaging_message GROUP BY status')}"
                    f" runs {pg.query('SELECT state, count(*) FROM journeys_enrollment GROUP BY state')}\n" + logs())

        _wait(caught_up, 120, "processing and sending to catch up", state)
        caught = True
    finally:
        stop.set()
        if procs is not None:
            procs.stop()
        smtp.__exit__()
        if not caught:  # failed on the way: the cluster goes now, the checks below do not run
            pg.stop()

    try:
        # Every acknowledged event is in the log, and nothing is left in the inbox or failed.
        logged = pg.query("SELECT message_id FROM events_event WHERE message_id = ANY(%s)", (list(acked),))
        assert len(logged) == len(acked) == len({m for (m,) in logged})
        assert pg.query("SELECT count(*) FROM events_incomingevent")[0][0] == 0
        # Every acknowledged sign-up is one contact, reached through its user id.
        contacts = Counter(e for (e,) in pg.query("SELECT email FROM contacts_contact WHERE email = ANY(%s)",
                                                 (signed_up,)))
        assert contacts == Counter(signed_up)
        users = pg.query("SELECT count(DISTINCT contact_id) FROM events_identity WHERE kind = 'user'")[0][0]
        assert users == len(signed_up)
        # Every mail reached the SMTP server exactly once; the outbox has nothing left in doubt.
        assert _received(handler) == expected_mails
        assert dict(pg.query("SELECT status, count(*) FROM messaging_message GROUP BY status")) == {
            "sent": sum(expected_mails.values())}
        # The faults happened, under load.
        assert procs.kills == Counter({"worker": 2, "web": 2})
        assert handler.refused >= 10
        answers = sum((c.answers for c in clients), Counter())
        assert answers[200] == len(signed_up) >= 30, answers
        # Refused connections while a server was down, 503 while the database was: never a 500.
        assert set(answers) <= {0, 200, 503}, answers
        print(f"faults: {len(acked)} events and {len(signed_up)} sign-ups acknowledged, "
              f"{sum(expected_mails.values())} mails, {handler.refused} refusals, answers {dict(answers)}, "
              f"{time.monotonic() - started:.0f} s")
    finally:
        pg.stop()


def _received(handler: Inbox) -> Counter:
    out: Counter = Counter()
    with handler.lock:
        for _from, rcpts, data in handler.messages:
            subject = str(message_from_bytes(data, policy=policy.default)["Subject"])
            for r in rcpts:
                out[(r, subject)] += 1
    return out
