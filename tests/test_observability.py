"""Operations: /healthz, /readyz (and /health), /metrics and the structured request log."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.test import Client
from django.utils import timezone

from kizuna.events import ingest
from kizuna.events.models import IncomingEvent

pytestmark = pytest.mark.django_db


def test_liveness_answers_without_the_database(db, monkeypatch):
    from django.db import connection

    def down(*args, **kwargs):
        raise RuntimeError("no database")

    monkeypatch.setattr(connection, "ensure_connection", down)
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readiness_reports_lag_and_outbox_with_reasons(db, settings):
    client = Client()
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    body = ready.json()
    assert body["status"] == "ok" and body["migrations"] == "ok" and body["reasons"] == []
    assert client.get("/health").json()["status"] == "ok"
    old = timezone.now() - timezone.timedelta(minutes=10)
    IncomingEvent.objects.create(message_id="late", received_at=old, payload="{}")
    settings.KIZUNA_HEALTH_MAX_LAG = 60
    late = client.get("/readyz")
    assert late.status_code == 503
    assert late.json()["status"] == "lagging" and "behind (limit 60 s)" in late.json()["reasons"][0]
    settings.KIZUNA_HEALTH_MAX_LAG, settings.KIZUNA_READY_MAX_OUTBOX = 3600, -1
    full = client.get("/readyz").json()
    assert "messages are due in the outbox" in full["reasons"][0]


def test_readiness_says_when_the_database_is_unreachable(db, monkeypatch):
    from kizuna.events import processing

    def broken():
        raise ConnectionError("refused")

    monkeypatch.setattr(processing, "lag", broken)
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["reasons"] == ["database unreachable (ConnectionError)"]


def _metrics(client: Client, **extra) -> dict[str, float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    values = {}
    for line in response.content.decode().splitlines():
        if line and not line.startswith("#"):
            name, _sep, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_are_protected_by_token_or_address(db, settings):
    settings.KIZUNA_METRICS_TOKEN = "scrape-me-0123456789"
    settings.KIZUNA_METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    client = Client()
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.1", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    _metrics(client, REMOTE_ADDR="198.51.100.1", HTTP_AUTHORIZATION="Bearer scrape-me-0123456789")
    _metrics(client, REMOTE_ADDR="10.1.2.3")


def test_metrics_count_ingestion_requests_mail_and_backlogs(db, settings):
    from kizuna.events.http import IngestionApp, cache
    from kizuna.events.models import WriteKey
    from kizuna.handoff.models import Delivery

    settings.KIZUNA_INGEST_GROUP_COMMIT = False
    client = Client()
    before = _metrics(client)
    key = WriteKey.objects.create(name="corporate-site")
    cache.clear()
    body = json.dumps({"writeKey": key.key, "batch": [{"type": "page", "anonymousId": "m1"},
                                                       {"type": "track", "anonymousId": "m1", "event": "x"}]}).encode()
    environ = {"PATH_INFO": "/v1/batch", "REQUEST_METHOD": "POST", "REMOTE_ADDR": "203.0.113.1",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    IngestionApp(None)(environ, lambda *a: None)
    Delivery.objects.create(event="journey.step", email="a@example.jp")
    client.get("/no-such-page/")
    after = _metrics(client)
    received = 'kizuna_events_received_total{source="corporate-site"}'
    assert after[received] - before.get(received, 0) == 2
    assert after["kizuna_events_backlog"] == 2 and after["kizuna_events_processing_lag_seconds"] >= 0
    assert after["kizuna_handoff_deliveries_pending"] == 1
    assert after['kizuna_outbox_messages{status="queued"}'] == 0
    assert after["kizuna_database_up"] == 1 and "kizuna_journey_enrollments_due" in after
    not_found = 'kizuna_http_requests_total{status_class="4xx"}'
    assert after[not_found] - before.get(not_found, 0) == 1
    assert "kizuna_messages_sent_total" in after and "kizuna_events_processed_total" in after


def test_request_log_as_json_with_request_id_user_and_duration(make_user, settings):
    from kizuna.web.logs import JsonFormatter

    handler = next(h for h in logging.getLogger().handlers if any(
        type(f).__name__ == "RedactSecrets" for f in h.filters))
    stream, formatter = io.StringIO(), handler.formatter
    old = handler.setStream(stream)
    handler.setFormatter(JsonFormatter())
    try:
        client = Client()
        client.force_login(make_user("viewer", username="reader"))
        response = client.get("/contacts/?q=secret@example.jp", HTTP_X_REQUEST_ID="req-42")
        client.get("/contacts/", HTTP_X_REQUEST_ID="bad id\nforged")
    finally:
        handler.setStream(old)
        handler.setFormatter(formatter)
    assert response["X-Request-ID"] == "req-42"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "kizuna.request"]
    first = access[0]
    assert first["request_id"] == "req-42" and first["user"] == "reader" and first["status"] == 200
    assert first["path"] == "/contacts/" and first["method"] == "GET" and first["duration_ms"] >= 0
    assert "secret@example.jp" not in stream.getvalue()  # query strings are not logged
    assert access[1]["request_id"] != "bad id\nforged" and len(access[1]["request_id"]) == 32


def test_log_format_setting_is_checked(monkeypatch):
    from kizuna import config

    monkeypatch.setenv("KIZUNA_LOG_FORMAT", "JSON")
    assert config.choice("KIZUNA_LOG_FORMAT", "plain", ("plain", "json")) == "json"
    monkeypatch.setenv("KIZUNA_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit, match="KIZUNA_LOG_FORMAT must be plain or json, not 'xml'"):
        config.choice("KIZUNA_LOG_FORMAT", "plain", ("plain", "json"))


def test_ingest_counter_counts_internal_inputs_too(db):
    name = 'kizuna_events_received_total{source="forms"}'
    before = _metrics(Client()).get(name, 0)
    result = ingest.ingest([{"type": "track", "anonymousId": "i1", "event": "Form Submitted"}],
                           ingest.RequestInfo(source="forms"))
    assert not result.rejected
    assert _metrics(Client())[name] - before == 1
