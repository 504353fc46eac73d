"""End-to-end fixtures: Kizuna started as real processes (web server and worker, exactly as
`kizuna demo` runs them) on a database of its own, and Debian's Chromium driven by Playwright.

The database follows the test pass: a fresh SQLite file on the SQLite pass, a fresh PostgreSQL
database (dropped afterwards) on the PostgreSQL pass.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ADMIN_PASSWORD = "e2e-" + secrets.token_urlsafe(12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kizuna(*args: str, env: dict[str, str], **kwargs):
    return subprocess.run([sys.executable, "-m", "kizuna.cli", *args], env=env, check=True,  # noqa: S603
                          capture_output=True, text=True, timeout=300, **kwargs)


class Server(str):
    """The base URL (a str, so pages can use it directly) plus handles on the processes."""

    env: dict[str, str]
    procs: dict[str, subprocess.Popen]
    logs: object

    def start_worker(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "kizuna.cli", "worker", *args],  # noqa: S603
                                env=self.env, stdout=self.logs, stderr=subprocess.STDOUT)
        self.procs["worker"] = proc
        return proc

    def stop_worker(self) -> None:
        proc = self.procs.get("worker")
        if proc and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Reads the server's own database (SQLite file or PostgreSQL database)."""
        url = self.env.get("KIZUNA_DATABASE_URL", "")
        if url.startswith("postgres"):
            import psycopg

            with psycopg.connect(url) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        import sqlite3

        conn = sqlite3.connect(Path(self.env["KIZUNA_DATA_DIR"]) / "kizuna.sqlite3", timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


@pytest.fixture(scope="session")
def kizuna_server():
    """Base URL of a running Kizuna with an admin user (password ADMIN_PASSWORD)."""
    import psycopg

    data_dir = Path(tempfile.mkdtemp(prefix="kizuna-e2e-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_")}
    env.update({
        "KIZUNA_DATA_DIR": str(data_dir),
        "KIZUNA_BASE_URL": f"http://127.0.0.1:{port}",
        "KIZUNA_EMAIL_URL": "capture://",
        "DJANGO_SETTINGS_MODULE": "kizuna.settings",
        "KIZUNA_WEBHOOK_ALLOW_PRIVATE": "1",  # browser tests' webhook receivers listen on 127.0.0.1
    })
    pg_url = os.environ.get("KIZUNA_DATABASE_URL", "")
    pg_db = None
    if pg_url.startswith("postgres"):
        pg_db = f"kizuna_e2e_{secrets.token_hex(4)}"
        admin_url = pg_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_db}"')
        env["KIZUNA_DATABASE_URL"] = pg_url.rsplit("/", 1)[0] + "/" + pg_db
    _kizuna("init", env=env)
    _kizuna("createuser", "admin", "--role", "admin", "--password", ADMIN_PASSWORD, env=env)
    logs = open(data_dir / "processes.log", "w")  # noqa: SIM115
    server = Server(f"http://127.0.0.1:{port}")
    server.env, server.logs = env, logs
    server.procs = {"web": subprocess.Popen(
        [sys.executable, "-m", "kizuna.cli", "serve", "--port", str(port), "--workers", "1"],  # noqa: S603
        env=env, stdout=logs, stderr=subprocess.STDOUT)}
    server.start_worker("--interval", "0.2")
    procs = server.procs.values()
    base = server
    deadline = time.monotonic() + 120  # a loaded CI machine can take a while to import everything
    # If the processes never answer, the finally below still stops them and drops the database.
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/login/", timeout=2)  # noqa: S310
                break
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    logs.flush()
                    raise RuntimeError("Kizuna did not start:\n" + (data_dir / "processes.log").read_text()) from None
                time.sleep(0.3)
        yield server
    finally:
        procs = list(server.procs.values())
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()
        if pg_db:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')


@pytest.fixture
def page(browser, kizuna_server):
    context = browser.new_context(base_url=kizuna_server, locale="en-US", viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


def login(page, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def switch_language(page, code: str) -> None:
    """Chooses the UI language in the header. The choice is kept on the user's account, and the
    server is shared by the session's tests: a test that switches to Japanese switches back."""
    page.select_option("#lang-select", code)
    page.wait_for_function(f"document.documentElement.lang === '{code}'")


SHOTS = os.environ.get("KIZUNA_SCREENSHOTS", "")


def shot(page, name: str) -> None:
    """A full-page screenshot into $KIZUNA_SCREENSHOTS, when it is set, to look at."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def kizuna_shell(server, code: str, timeout: float = 600) -> str:
    """Runs Python in `kizuna shell` against the server's database; returns what it printed."""
    result = subprocess.run([sys.executable, "-m", "kizuna.cli", "shell", "-c", code], env=server.env,  # noqa: S603
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
