"""Ingestion endpoints called through the real WSGI stack (in process), and their validation."""

from __future__ import annotations

import base64
import gzip
import io
import json
import sys
from datetime import timedelta

import orjson
import pytest
from django.test import override_settings
from django.utils import timezone

from kizuna.events import http as tracking_http
from kizuna.events import ingest
from kizuna.events.models import IncomingEvent, WriteKey

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_direct_writes")]


@pytest.fixture
def _direct_writes():
    tracking_http.cache.clear()
    with override_settings(KIZUNA_INGEST_GROUP_COMMIT=False):
        yield
    tracking_http.cache.clear()


@pytest.fixture
def write_key(db):
    return WriteKey.objects.create(name="Website")


def call(method: str, path: str, body: bytes | dict | None = None, headers: dict[str, str] | None = None,
         query: str = "") -> tuple[int, dict[str, str], bytes]:
    """Runs one request through kizuna.wsgi.application, as granian would."""
    from kizuna.wsgi import application

    if isinstance(body, dict):
        body = orjson.dumps(body)
    body = body or b""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "REMOTE_ADDR": "203.0.113.9", "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json", "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "pytest-client/1.0",
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    captured: dict = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(response_headers)

    chunks = application(environ, start_response)
    data = b"".join(chunks)
    return captured["status"], captured["headers"], data


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(i: int = 0, **extra) -> dict:
    return {"type": "track", "event": "Signed Up", "userId": f"u{i}", "messageId": f"m-{i}",
            "properties": {"plan": "pro"}, **extra}


def stored() -> list[dict]:
    return [orjson.loads(p) for p in IncomingEvent.objects.order_by("id").values_list("payload", flat=True)]


def test_single_track_with_basic_auth(write_key):
    status, headers, body = call("POST", "/v1/track", track(), basic(write_key.key))
    assert (status, orjson.loads(body)) == (200, {"success": True})
    [event] = stored()
    assert event["type"] == "track" and event["name"] == "Signed Up" and event["userId"] == "u0"
    assert event["source"] == "Website" and event["ip"] == "203.0.113.9"


def test_write_key_in_body_and_every_single_endpoint(write_key):
    bodies = {
        "identify": {"userId": "u1", "traits": {"email": "a@example.co.jp"}},
        "page": {"anonymousId": "a1", "name": "Home", "properties": {"url": "https://example.co.jp/"}},
        "screen": {"userId": "u1", "name": "Dashboard"},
        "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
        "alias": {"previousId": "a1", "userId": "u1"},
        "track": {"anonymousId": "a1", "event": "Clicked"},
    }
    for kind, msg in bodies.items():
        status, _, body = call("POST", f"/v1/{kind}", {**msg, "writeKey": write_key.key})
        assert status == 200, (kind, body)
    assert [e["type"] for e in stored()] == list(bodies)


def test_message_id_deduplicates(write_key):
    for _ in range(3):
        assert call("POST", "/v1/track", track(7), basic(write_key.key))[0] == 200
    assert IncomingEvent.objects.count() == 1


def test_batch_with_bad_events_keeps_the_good_ones(write_key):
    batch = [track(1), {"type": "track", "userId": "u2"}, track(3), "not an object",
             {"type": "nope", "userId": "x"}, track(5, timestamp="yesterday")]
    status, _, body = call("POST", "/v1/batch", {"batch": batch}, basic(write_key.key))
    data = orjson.loads(body)
    assert status == 400 and data["error"]["code"] == "invalid_events"
    assert data["accepted"] == 2
    assert [r["index"] for r in data["error"]["details"]] == [1, 3, 4, 5]
    assert data["error"]["details"][0]["errors"] == [
        {"path": "batch[1].event", "message": "is required for track and must be a non-empty string"}
    ]
    assert {e["messageId"] for e in stored()} == {"m-1", "m-3"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"batch": "x"}', "invalid_batch"),
        (b'{"batch": []}', "invalid_batch"),
        (b'{"userId": "\xff\xfe", "event": "x"}', "invalid_utf8"),
    ],
)
def test_malformed_bodies_are_refused_clearly(write_key, body, code):
    path = "/v1/batch" if b"batch" in body else "/v1/track"
    status, _, data = call("POST", path, body, basic(write_key.key))
    assert status == 400
    assert orjson.loads(data)["error"]["code"] == code
    assert IncomingEvent.objects.count() == 0


def test_wrong_types_are_reported_with_paths(write_key):
    msg = {"type": "track", "event": 5, "userId": {"a": 1}, "properties": [1], "context": "x"}
    status, _, data = call("POST", "/v1/track", msg, basic(write_key.key))
    paths = {d["path"] for d in orjson.loads(data)["error"]["details"]}
    assert status == 400
    assert {"event", "userId", "properties", "context"} <= paths


def test_missing_ids_and_unknown_key(write_key):
    status, _, data = call("POST", "/v1/track", {"event": "x"}, basic(write_key.key))
    assert status == 400 and "either userId or anonymousId" in data.decode()
    assert call("POST", "/v1/track", track(), basic("nope"))[0] == 401
    assert call("POST", "/v1/track", track())[0] == 401
    write_key.enabled = False
    write_key.save()
    tracking_http.cache.clear()
    assert call("POST", "/v1/track", track(), basic(write_key.key))[0] == 401


def test_size_limits(write_key):
    big = track(1, properties={"blob": "x" * (33 * 1024)})
    status, _, data = call("POST", "/v1/track", big, basic(write_key.key))
    assert status == 400 and "32 KB" in data.decode()
    too_many = {"batch": [track(i) for i in range(2501)]}
    status, _, data = call("POST", "/v1/batch", too_many, basic(write_key.key))
    assert status == 413 and orjson.loads(data)["error"]["code"] in ("batch_too_large", "payload_too_large")
    huge = {"batch": [track(i, properties={"p": "y" * 30_000}) for i in range(20)]}
    status, _, data = call("POST", "/v1/batch", huge, basic(write_key.key))
    assert status == 413 and orjson.loads(data)["error"]["code"] == "payload_too_large"
    assert IncomingEvent.objects.count() == 0


def test_gzip_body_and_gzip_bomb(write_key):
    body = gzip.compress(orjson.dumps({"batch": [track(i) for i in range(50)]}))
    status, _, _ = call("POST", "/v1/batch", body, {**basic(write_key.key), "Content-Encoding": "gzip"})
    assert status == 200 and IncomingEvent.objects.count() == 50
    bomb = gzip.compress(b'{"batch": [' + b" " * 5_000_000 + b"]}")
    status, _, data = call("POST", "/v1/batch", bomb, {**basic(write_key.key), "Content-Encoding": "gzip"})
    assert status == 413
    status, _, _ = call("POST", "/v1/batch", b"not gzip", {**basic(write_key.key), "Content-Encoding": "gzip"})
    assert status == 400


def test_clock_skew_is_corrected_and_far_timestamps_refused(write_key):
    now = timezone.now()
    skewed_sent = now + timedelta(hours=3)  # the device clock runs 3 hours fast
    msg = track(1, timestamp=(skewed_sent - timedelta(minutes=5)).isoformat(), sentAt=skewed_sent.isoformat())
    assert call("POST", "/v1/track", msg, basic(write_key.key))[0] == 200
    occurred = ingest.datetime.fromisoformat(stored()[0]["occurredAt"])
    assert abs((now - timedelta(minutes=5)) - occurred) < timedelta(seconds=30)
    future = track(2, timestamp=(now + timedelta(days=3)).isoformat())
    status, _, data = call("POST", "/v1/track", future, basic(write_key.key))
    assert status == 400 and "in the future" in data.decode()
    ancient = track(3, timestamp="1999-01-01T00:00:00Z")
    status, _, data = call("POST", "/v1/track", ancient, basic(write_key.key))
    assert status == 400 and "older than" in data.decode()


def test_nul_characters_are_refused_not_truncated(write_key):
    status, _, data = call("POST", "/v1/track", track(1, properties={"x": "a\u0000b"}), basic(write_key.key))
    assert status == 400 and "NUL" in data.decode()


def test_cors_preflight_and_allowed_domains(write_key):
    status, headers, _ = call("OPTIONS", "/v1/batch", headers={"Origin": "https://www.example.co.jp"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "https://www.example.co.jp"
    write_key.allowed_domains = "*.example.co.jp"
    write_key.save()
    tracking_http.cache.clear()
    ok = call("POST", "/v1/track", {**track(1), "writeKey": write_key.key},
              {"Origin": "https://www.example.co.jp", "Content-Type": "text/plain"})
    assert ok[0] == 200 and ok[1]["Access-Control-Allow-Origin"] == "https://www.example.co.jp"
    refused = call("POST", "/v1/track", {**track(2), "writeKey": write_key.key}, {"Origin": "https://evil.test"})
    assert refused[0] == 403


def test_unknown_endpoint_and_method(write_key):
    assert call("POST", "/v1/nope", track(), basic(write_key.key))[0] == 404
    assert call("GET", "/v1/track", headers=basic(write_key.key))[0] == 405
    assert call("GET", "/v1/_noop")[0] == 204


def test_pixel_records_a_page_view(write_key):
    query = f"k={write_key.key}&url=https%3A%2F%2Fexample.co.jp%2Fa&title=A"
    status, headers, body = call("GET", "/t.gif", query=query, headers={"Referer": "https://example.co.jp/a"})
    assert status == 200 and headers["Content-Type"] == "image/gif" and body.startswith(b"GIF89a")
    [event] = stored()
    assert event["type"] == "page" and event["url"] == "https://example.co.jp/a"
    assert event["anonymousId"].startswith("px-")
    assert call("GET", "/t.gif", query="k=wrong")[0] == 401


def test_tracker_script_carries_settings(write_key):
    status, headers, body = call("GET", "/kz.js", query=f"k={write_key.key}")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    first_line = body.split(b"\n", 1)[0].decode()
    config = json.loads(first_line.removeprefix("window.kizuna_config=").rstrip(";"))
    assert config["writeKey"] == write_key.key and config["consent"] == "none"
    assert call("GET", "/kz.js", query="k=unknown")[0] == 404


def test_other_paths_still_reach_django(write_key):
    status, _, _ = call("GET", "/login/")
    assert status == 200
