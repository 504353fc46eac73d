"""Ingestion end to end: the official Segment client against a running Kizuna, retries through
a flaky proxy, and a worker killed with SIGKILL in the middle of a burst."""

from __future__ import annotations

import base64
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import orjson


def _wait(predicate, timeout: float = 180.0, interval: float = 0.2):  # earlier tests may leave a backlog
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def _write_key(server, name: str) -> str:
    key = "wk_" + uuid.uuid4().hex[:20]
    code = (
        "from kizuna.events.models import WriteKey; "
        f"WriteKey.objects.create(name={name!r}, key={key!r})"
    )
    subprocess.run([sys.executable, "-m", "kizuna.cli", "shell", "-c", code], env=server.env, check=True,  # noqa: S603
                   capture_output=True, timeout=120)
    time.sleep(1.1)  # the endpoints re-read unknown keys at most once a second
    return key


def _pending(server) -> int:
    return server.query("SELECT COUNT(*) FROM events_incomingevent")[0][0]


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to Kizuna, but answers 503 to the first `failures` requests *after* Kizuna
    stored them: exactly the case where a client retry must not duplicate anything."""

    def __init__(self, upstream: str, failures: int):
        self.upstream, self.failures, self.seen = upstream, failures, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        server: FlakyProxy = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(server.upstream + self.path, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, payload = response.status, response.read()
        with server.lock:
            server.seen += 1
            fail = server.seen <= server.failures
        if fail:
            status, payload = 503, b'{"error":"try again"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_official_segment_client_lands_exactly_once_even_with_retries(kizuna_server):
    from segment.analytics import Client

    key = _write_key(kizuna_server, "Backend")
    proxy = FlakyProxy(kizuna_server, failures=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    errors = []
    client = Client(key, host=f"http://127.0.0.1:{proxy.server_address[1]}", upload_size=25, max_retries=5,
                    on_error=lambda e, batch: errors.append(e), gzip=True)
    user = f"user-{uuid.uuid4().hex[:8]}"
    client.identify(user, {"email": f"{user}@example.co.jp", "firstName": "太郎", "lastName": "山田"})
    for i in range(100):
        client.track(user, "Report Downloaded", {"n": i})
    client.page(user, "Docs", "Pricing", {"url": "https://example.co.jp/pricing"})
    client.flush()
    client.join()
    proxy.shutdown()
    assert not errors
    assert proxy.seen > proxy.failures  # the client really did retry
    _wait(lambda: _pending(kizuna_server) == 0)
    rows = kizuna_server.query(
        "SELECT type, COUNT(*), COUNT(DISTINCT message_id) FROM events_event WHERE user_id = ? GROUP BY type",
        (user,))
    assert {t: (n, d) for t, n, d in rows} == {"identify": (1, 1), "track": (100, 100), "page": (1, 1)}
    contacts = kizuna_server.query(
        "SELECT c.family_name, c.given_name FROM contacts_contact c JOIN events_identity i ON i.contact_id = c.id "
        "WHERE i.kind = 'user' AND i.value = ?", (user,))
    assert contacts == [("山田", "太郎")]
    linked = kizuna_server.query(
        "SELECT COUNT(*) FROM events_event WHERE user_id = ? AND contact_id IS NULL", (user,))[0][0]
    assert linked == 0


def _post_batch(base: str, key: str, batch: list[dict]) -> None:
    body = orjson.dumps({"batch": batch})
    auth = base64.b64encode(f"{key}:".encode()).decode()
    request = urllib.request.Request(base + "/v1/batch", data=body, method="POST",
                                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        assert response.status == 200


def test_worker_killed_mid_burst_processes_every_event_exactly_once(kizuna_server):
    key = _write_key(kizuna_server, "Burst")
    run = uuid.uuid4().hex[:8]
    kizuna_server.stop_worker()
    try:
        events = []
        for i in range(10_000):
            visitor = f"{run}-v{i % 200}"
            if i % 4 == 0:
                events.append({"type": "page", "anonymousId": visitor, "messageId": f"{run}-{i}",
                               "properties": {"url": f"https://example.co.jp/p/{i % 37}", "path": f"/p/{i % 37}",
                                              "title": f"Page {i % 37}"}})
            else:
                events.append({"type": "track", "anonymousId": visitor, "event": "Scrolled",
                               "messageId": f"{run}-{i}", "properties": {"i": i}})
        for start in range(0, len(events), 500):
            _post_batch(kizuna_server, key, events[start:start + 500])
        assert _pending(kizuna_server) == 10_000

        worker = kizuna_server.start_worker("--only", "events")
        _wait(lambda: _pending(kizuna_server) < 9_500, interval=0.02)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        left = _pending(kizuna_server)
        assert 0 < left < 10_000, f"the kill should land mid-burst, {left} were waiting"

        kizuna_server.start_worker("--only", "events")
        _wait(lambda: _pending(kizuna_server) == 0, timeout=120)
    finally:
        kizuna_server.stop_worker()
        kizuna_server.start_worker("--interval", "0.2")

    like = f"{run}-%"
    total, distinct = kizuna_server.query(
        "SELECT COUNT(*), COUNT(DISTINCT message_id) FROM events_event WHERE message_id LIKE ?", (like,))[0]
    assert (total, distinct) == (10_000, 10_000)
    pages = kizuna_server.query(
        "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events_pageview WHERE anonymous_id LIKE ?", (like,))[0]
    assert pages == (2_500, 2_500)
    session_pages = kizuna_server.query(
        "SELECT SUM(page_views) FROM events_session WHERE anonymous_id LIKE ?", (like,))[0][0]
    assert session_pages == 2_500
    visitors = kizuna_server.query(
        "SELECT COUNT(*), SUM(page_views) FROM events_visitor WHERE anonymous_id LIKE ?", (like,))[0]
    assert visitors == (200, 2_500)
    seqs = kizuna_server.query(
        "SELECT session_id, COUNT(*), MAX(seq), COUNT(DISTINCT seq) FROM events_pageview "
        "WHERE anonymous_id LIKE ? GROUP BY session_id", (like,))
    assert all(n == top == distinct for _, n, top, distinct in seqs)


def test_health_reports_processing_lag(kizuna_server):
    with urllib.request.urlopen(kizuna_server + "/health", timeout=10) as response:  # noqa: S310
        body = orjson.loads(response.read())
    assert response.status == 200 and body["status"] == "ok"
    assert set(body["events"]) >= {"pending", "failed", "lag_seconds"}
