"""Several web and worker processes on one database: the periodic passes every worker runs are
done by one of them at a time, the races they had are closed, and the shared state lives where
every process sees it (Redis for the cache and, optionally, the task queue)."""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from kizuna.contacts.models import Contact, ContactList, ListMembership, SubscriptionTopic
from kizuna.db import locks
from kizuna.messaging import bulk, outbox, transports
from kizuna.messaging.models import BulkSend, BulkStatus, EmailTemplate, Message, Sender
from kizuna.messaging.templates_service import save_version
from kizuna.segments import membership
from kizuna.segments.models import Segment
from tests.journeyhelp import contact, make_world, template
from tests.mailtest import SmtpServer

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13


class OtherProcess:
    """Holds a lock the way another worker process would: its own database session on
    PostgreSQL, its own open file on SQLite."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        if connection.vendor == "postgresql":
            import psycopg

            db = connection.settings_dict
            self.conn = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"],
                                        autocommit=True)
            assert self.conn.execute("SELECT pg_try_advisory_lock(%s)", [locks.lock_key(self.name)]).fetchone()[0]
        else:
            from django.conf import settings

            (settings.DATA_DIR / "locks").mkdir(exist_ok=True)
            path = settings.DATA_DIR / "locks" / f"{self.name.replace(':', '-')}.lock"
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self

    def __exit__(self, *exc):
        if connection.vendor == "postgresql":
            # Closing alone frees the lock too, but the server ends the session a moment later.
            self.conn.execute("SELECT pg_advisory_unlock(%s)", [locks.lock_key(self.name)])
            self.conn.close()
        else:
            os.close(self.fd)

    def die(self) -> None:
        """Ends like a killed process: the connection (or file) goes, with no unlocking."""
        if connection.vendor == "postgresql":
            self.conn.close()
        else:
            os.close(self.fd)


@pytest.mark.django_db(transaction=True)
def test_exclusive_is_held_by_one_process_and_freed_when_it_ends():
    other = OtherProcess("some-pass").__enter__()
    with locks.exclusive("some-pass") as mine:
        assert mine is False
    with locks.exclusive("another-pass") as mine:
        assert mine is True
    other.die()
    deadline = time.monotonic() + 10
    while True:  # the holder is gone: its lock goes with its session or file, once the server notices
        with locks.exclusive("some-pass") as mine:
            if mine or time.monotonic() > deadline:
                break
        time.sleep(0.05)
    assert mine is True
    with locks.exclusive("some-pass") as mine:  # and released again at the end of the block
        assert mine is True


def test_lock_keys_are_stable_and_distinct():
    assert locks.lock_key("bulk-tick") == locks.lock_key("bulk-tick")
    assert len({locks.lock_key(f"segment-recompute:{i}") for i in range(1000)}) == 1000


@pytest.fixture
def world(db):
    sender = Sender.objects.create(name="Default", from_name="キズナ", from_email="news@kizuna.example",
                                   organisation="株式会社キズナ", postal_address="東京都千代田区1-1", is_default=True)
    topic = SubscriptionTopic.objects.create(key="news", name="ニュース", requires_opt_in=False)
    template = EmailTemplate.objects.create(name="Newsletter", topic=topic, sender=sender)
    version, _ = save_version(template, subject="{{ contact.family_name }}様へ", html="<p>こんにちは</p>")
    members = ContactList.objects.create(name="展示会")
    for i in range(10):
        ListMembership.objects.create(contact_list=members,
                                      contact=Contact.objects.create(email=f"s{i}@example.jp"))
    return {"template": template, "version": version, "list": members}


@pytest.mark.django_db(transaction=True)
def test_bulk_scheduling_is_done_by_the_worker_holding_the_lock(world):
    send = BulkSend.objects.create(name="一斉", template=world["template"], version=world["version"],
                                   contact_list=world["list"])
    bulk.start(send)
    with OtherProcess("bulk-tick"):
        bulk.tick()  # another worker is ticking: this one leaves the send to it
        assert BulkSend.objects.get(pk=send.pk).status == BulkStatus.SCHEDULED
    bulk.tick()
    assert BulkSend.objects.get(pk=send.pk).status == BulkStatus.SENDING
    assert Message.objects.filter(bulk=send).count() == 10


@pytest.mark.django_db
def test_an_ab_decision_never_overrides_a_pause_or_an_earlier_decision(world):
    version_b, _ = save_version(world["template"], subject="B", html="<p>B</p>")
    send = BulkSend.objects.create(name="AB", template=world["template"], version=world["version"],
                                   variant_b=version_b, contact_list=world["list"], ab_sample_percent=20)
    bulk.start(send)
    bulk.tick()
    send.refresh_from_db()
    assert send.status == BulkStatus.TESTING
    stale = BulkSend.objects.get(pk=send.pk)  # what a second worker read before the pause
    bulk.pause(send)
    assert bulk.decide(stale) == ""
    send.refresh_from_db()
    assert send.status == BulkStatus.PAUSED and not send.ab_winner
    assert Message.objects.filter(bulk=send, status="held").count() == 8  # nobody released
    bulk.resume(send)
    assert bulk.decide(BulkSend.objects.get(pk=send.pk)) == "A"
    Message.objects.filter(bulk=send, variant="B").update(clicked_at=timezone.now())  # B would win now
    assert bulk.decide(stale) == "A"  # decided once: the second decision changes nothing
    assert set(Message.objects.filter(bulk=send, variant__in=["A", "B"]).exclude(status="held")
               .values_list("variant", flat=True)) <= {"A", "B"}
    assert BulkSend.objects.get(pk=send.pk).ab_winner == "A"


@pytest.mark.django_db(transaction=True)
def test_a_stalled_preparation_is_taken_over_once(world):
    send = BulkSend.objects.create(name="止まった", template=world["template"], version=world["version"],
                                   contact_list=world["list"], status=BulkStatus.PREPARING,
                                   started_at=timezone.now() - timedelta(minutes=5))
    seen = BulkSend.objects.get(pk=send.pk)
    BulkSend.objects.filter(pk=send.pk).update(started_at=timezone.now())  # its worker is alive after all
    bulk._tick()
    assert BulkSend.objects.get(pk=send.pk).status == BulkStatus.PREPARING
    assert not Message.objects.filter(bulk=seen).exists()
    BulkSend.objects.filter(pk=send.pk).update(started_at=timezone.now() - timedelta(minutes=5))
    bulk._tick()
    assert BulkSend.objects.get(pk=send.pk).status == BulkStatus.SENDING
    assert Message.objects.filter(bulk=send).count() == 10


@pytest.mark.django_db(transaction=True)
def test_segment_refresh_skips_a_segment_another_worker_recomputes():
    Contact.objects.create(email="a@example.jp", prefecture="13")
    segment = membership.save_segment(Segment.objects.create(name="東京"),
                                      {"field": "prefecture", "op": "in", "value": ["13"]})
    with OtherProcess(f"segment-recompute:{segment.pk}"):
        assert membership.refresh_due() == 0
    assert Segment.objects.get(pk=segment.pk).needs_full
    assert membership.refresh_due() == 1
    segment.refresh_from_db()
    assert not segment.needs_full and segment.member_count == 1


@pytest.mark.django_db
def test_a_filter_saved_during_a_recompute_is_recomputed_again():
    Contact.objects.create(email="a@example.jp", prefecture="13")
    Contact.objects.create(email="b@example.jp", prefecture="27")
    segment = membership.save_segment(Segment.objects.create(name="地域"),
                                      {"field": "prefecture", "op": "in", "value": ["13"]})
    running = Segment.objects.get(pk=segment.pk)  # the worker read the old filter
    membership.save_segment(segment, {"field": "prefecture", "op": "in", "value": ["27"]})  # a user saves
    membership.recompute(running)
    assert Segment.objects.get(pk=segment.pk).needs_full  # the new filter is still to be computed
    assert membership.refresh_due() == 1
    segment.refresh_from_db()
    assert not segment.needs_full
    assert list(membership.Membership.objects.filter(segment=segment).values_list("contact__email", flat=True)) == [
        "b@example.jp"]


def test_a_journal_unlinked_by_recovery_while_opening_is_replaced(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    path = outbox.journal_dir() / "w1.journal"
    recovering = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(recovering, fcntl.LOCK_EX)  # another worker's recover() holds the new, empty file
    opened: list[outbox.Journal] = []
    thread = threading.Thread(target=lambda: opened.append(outbox.Journal("w1")))
    thread.start()
    time.sleep(0.2)
    os.unlink(path)  # … takes it for a dead worker's journal, removes it and lets go
    os.close(recovering)
    thread.join(timeout=5)
    journal = opened[0]
    try:
        assert os.fstat(journal.fd).st_ino == os.stat(path).st_ino  # the journal is where recovery looks
        probe = os.open(path, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and it is locked: its worker is alive
        os.close(probe)
    finally:
        journal.close()


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def redis_url():
    """A database number and key prefix of our own on the real Redis; removed afterwards."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    try:
        client.ping()
    except redis.ConnectionError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT} (CI starts it)")
    prefix = f"kizuna-test-{secrets.token_hex(4)}"
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}", prefix
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)
    client.close()


def _kizuna_python(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code],  # noqa: S603
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "kizuna.settings", **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_login_lockouts_counted_by_one_process_hold_in_another(redis_url, settings):
    url, prefix = redis_url
    from kizuna.accounts import ratelimit

    env = {"KIZUNA_REDIS_URL": url, "KIZUNA_REDIS_PREFIX": prefix}
    # Another web process (its own interpreter) counts failures for one user...
    _kizuna_python("from django.conf import settings\n"
                   "assert settings.CACHES['default']['BACKEND'].endswith('RedisCache')\n"
                   "from kizuna.accounts import ratelimit\n"
                   "for _ in range(settings.LOGIN_MAX_FAILURES): ratelimit.record_failure('tanaka', '203.0.113.9')\n",
                   env)
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                          "KEY_PREFIX": prefix}}
    with override_settings(CACHES=caches):
        assert ratelimit.is_locked("tanaka", "198.51.100.1")  # ...and this one refuses the next try
        assert not ratelimit.is_locked("suzuki", "198.51.100.1")
    assert not ratelimit.is_locked("tanaka", "198.51.100.1")  # the test's own cache never saw them


@pytest.mark.django_db(transaction=True)
def test_the_redis_task_queue_runs_a_kizuna_task_once(redis_url):
    url, prefix = redis_url
    from django_tasks_redis import executor

    from kizuna.scoring import rescoring
    from kizuna.scoring.models import RescoreRun, ScoringModel

    tasks = {"default": {"BACKEND": "django_tasks_redis.RedisTaskBackend", "QUEUES": ["default"],
                         "OPTIONS": {"REDIS_URL": url, "REDIS_KEY_PREFIX": prefix + ":tasks"}}}
    Contact.objects.create(email="t@example.jp")
    model = ScoringModel.objects.create(name="Redis")
    with override_settings(TASKS=tasks):
        job = rescoring.request(model, RescoreRun.What.FIT)  # enqueued on commit, into Redis
        results = executor.process_tasks(max_tasks=5)
        assert [r.status.name for r in results] == ["SUCCESSFUL"]
        assert executor.process_tasks(max_tasks=5) == []  # nothing is left to run twice
    job.refresh_from_db()
    assert job.status == RescoreRun.Status.DONE and job.total == 1


# --- the outbox through a database restart -----------------------------------------------------


@pytest.fixture
def smtp(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path  # the journals
    with SmtpServer() as server:
        settings.KIZUNA_EMAIL_URL = server.url
        yield server


def _queue(count: int) -> None:
    world = make_world()
    tpl = template(world, "お知らせ")
    for i in range(count):
        outbox.enqueue(contact(world, f"o{i}@example.jp"), tpl.current, key=f"test:{i}")


def _sender() -> outbox.Sender:
    worker = outbox.new_worker_id()
    return outbox.Sender(transports.from_settings(), worker, outbox.Journal(worker))


def _lost(*_args, **_kwargs):
    raise OperationalError("server closed the connection unexpectedly")


def test_a_batch_sent_while_the_database_went_away_is_recorded_from_the_journal(smtp, monkeypatch):
    _queue(5)
    sender = _sender()
    monkeypatch.setattr(outbox, "RECORD_ATTEMPTS", 2)
    monkeypatch.setattr(outbox, "sleep", lambda _s: None)
    monkeypatch.setattr(outbox, "close_old_connections", lambda: None)  # it would close the test's transaction
    record = outbox.Sender._record
    monkeypatch.setattr(outbox.Sender, "_record", _lost)
    with pytest.raises(OperationalError):
        sender.run_once()  # sent, but the results could not be recorded
    assert sum(smtp.handler.per_recipient().values()) == 5
    assert Message.objects.filter(status="sending").count() == 5
    monkeypatch.setattr(outbox.Sender, "_record", record)
    assert sender.run_once() == 0  # the next pass settles them from the journal, sends nothing again
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert set(smtp.handler.per_recipient().values()) == {1}
    sender.close()
    sender.journal_file.close()


def test_rows_claimed_by_a_pass_that_failed_are_sent_by_the_next(smtp, monkeypatch):
    _queue(3)
    sender = _sender()
    load = outbox._load
    monkeypatch.setattr(outbox, "_load", _lost)
    with pytest.raises(OperationalError):
        sender.run_once()  # the claim committed; its answer never came to use
    assert Message.objects.filter(status="sending").count() == 3
    monkeypatch.setattr(outbox, "_load", load)
    assert sender.run_once() == 3  # put back in line, then claimed and sent
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert smtp.handler.per_recipient() == {f"o{i}@example.jp": 1 for i in range(3)}
    sender.close()
    sender.journal_file.close()
