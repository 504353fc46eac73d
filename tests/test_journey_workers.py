"""Real worker processes on PostgreSQL: two `kizuna worker --only journeys` side by side, one
killed with SIGKILL in the middle of the run and replaced; every contact still gets each mail
exactly once (counted at the SMTP server) and every run reaches the end.

The issue's scale is 50,000 contacts (KIZUNA_TEST_JOURNEY_CONTACTS=50000; its run is recorded in
docs/benchmarks.md); by default the test takes fewer so that it fits in a CI run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from kizuna.contacts.models import Consent, ConsentStatus, Contact
from kizuna.journeys import engine
from kizuna.journeys.models import Enrollment, StepRun
from kizuna.messaging.models import Message, MessageStatus
from tests.journeyhelp import make_world, received
from tests.mailtest import SmtpServer
from tests.test_journey_engine import three_mails

CONTACTS = int(os.environ.get("KIZUNA_TEST_JOURNEY_CONTACTS", "3000"))


def _worker(env: dict, only: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kizuna.cli", "worker", "--only", only], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(*procs: subprocess.Popen | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _phase(what: str, started: list[float] = []) -> None:  # noqa: B006 - the first call's time
    """Prints when each phase ended (shown with pytest -s: the figures of a large run)."""
    started[:] = started or [time.monotonic()]
    print(f"journey workers, {CONTACTS} contacts: {what} at {time.monotonic() - started[0]:.1f} s", file=sys.stderr)


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_run_neither_loses_nor_repeats_a_mail(tmp_path: Path):
    if connection.vendor != "postgresql":
        pytest.skip("several worker processes side by side is the PostgreSQL set-up")
    world = make_world()
    j, tpls = three_mails(world, "Killed")
    people = Contact.objects.bulk_create([Contact(email=f"k{i}@example.co.jp", family_name=f"k{i}")
                                          for i in range(CONTACTS)], batch_size=5000)
    Consent.objects.bulk_create([Consent(contact=p, topic=world["topic"], status=ConsentStatus.OPTED_IN)
                                 for p in people], batch_size=5000)
    _phase("contacts created")
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kizuna.settings", "KIZUNA_DATA_DIR": str(tmp_path),
           "KIZUNA_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           # Many batches, so that the kill lands in the middle of the run and of a batch.
           "KIZUNA_JOURNEY_BATCH": str(max(20, min(500, CONTACTS // 60))), "PYTHONPATH": os.pathsep.join(sys.path)}
    first, second = _worker(env, "journeys"), _worker(env, "journeys")
    replacement = None
    try:
        assert engine.enroll_many(j, [p.pk for p in people]) == CONTACTS
        _phase("enrolled")
        _wait_for(lambda: StepRun.objects.count() >= CONTACTS, 600, "the workers to start")
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = StepRun.objects.count()
        _phase(f"one worker killed after {killed_at} steps")
        replacement = _worker(env, "journeys")
        _wait_for(lambda: not Enrollment.objects.exclude(state="done").exists(), 1200, "every run to end")
    finally:
        _stop(first, second, replacement)
    _phase("every run done")
    assert killed_at < 3 * CONTACTS  # the kill landed mid-run
    assert StepRun.objects.count() == 3 * CONTACTS
    assert Message.objects.count() == 3 * CONTACTS
    # The mail goes out through the outbox's own workers to a real SMTP server.
    with SmtpServer() as server:
        mail_env = {**env, "KIZUNA_EMAIL_URL": server.url}
        senders = [_worker(mail_env, "mail") for _ in range(2)]
        try:
            _wait_for(lambda: not Message.objects.filter(
                status__in=[MessageStatus.QUEUED, MessageStatus.SENDING]).exists(), 1800, "the outbox to empty")
        finally:
            _stop(*senders)
    _phase("outbox empty")
    assert received(server) == Counter({(p.email, t.name): 1 for p in people for t in tpls})
