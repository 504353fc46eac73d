"""Real worker processes on PostgreSQL: two `kizuna worker --only journeys` side by side, one
killed with SIGKILL in the middle of the run and replaced; every contact still gets each mail
exactly once (counted at the SMTP server) and every run reaches the end."""

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

from kizuna.journeys import engine
from kizuna.journeys.models import Enrollment, StepRun
from kizuna.messaging import outbox
from tests.journeyhelp import contact, make_world, received
from tests.mailtest import SmtpServer
from tests.test_journey_engine import three_mails

CONTACTS = 600


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kizuna.cli", "worker", "--only", "journeys"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_run_neither_loses_nor_repeats_a_mail(settings, tmp_path: Path):
    if connection.vendor != "postgresql":
        pytest.skip("several worker processes side by side is the PostgreSQL set-up")
    world = make_world()
    j, tpls = three_mails(world, "Killed")
    people = [contact(world, f"k{i}@example.co.jp") for i in range(CONTACTS)]
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kizuna.settings", "KIZUNA_DATA_DIR": str(tmp_path),
           "KIZUNA_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "KIZUNA_JOURNEY_BATCH": "20", "PYTHONPATH": os.pathsep.join(sys.path)}
    first, second = _worker(env), _worker(env)
    replacement = None
    try:
        engine.enroll_many(j, [p.pk for p in people])
        _wait_for(lambda: StepRun.objects.count() >= CONTACTS // 3, 120, "the workers to start")
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = StepRun.objects.count()
        replacement = _worker(env)
        _wait_for(lambda: not Enrollment.objects.exclude(state="done").exists(), 300, "every run to end")
    finally:
        for proc in (first, second, replacement):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert killed_at < 3 * CONTACTS  # the kill landed mid-run
    assert StepRun.objects.count() == 3 * CONTACTS
    with SmtpServer() as server:
        settings.KIZUNA_EMAIL_URL = server.url
        while outbox.drain():
            pass
    assert received(server) == Counter({(p.email, t.name): 1 for p in people for t in tpls})
