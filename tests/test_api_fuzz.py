"""Schemathesis against both APIs, in-process through the WSGI application granian serves: the
REST API (its own `/api/v1/openapi.json`) and the ingestion API (`/v1/openapi.json`). Every
operation gets generated valid and invalid requests; no answer may be a server error, and every
answer must be one the schema declares, with the declared content type and body.

Bounded for CI: a fixed number of examples per operation, derandomized (the same cases every
run), no shrinking.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kizuna.api import NUL_MESSAGE
from kizuna.events import openapi
from kizuna.events.models import WriteKey

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# KIZUNA_FUZZ_EXAMPLES=200 hunts longer (locally); CI keeps the run to about a minute a database.
BOUNDED = settings(max_examples=int(os.environ.get("KIZUNA_FUZZ_EXAMPLES", 12)), derandomize=True, deadline=None,
                   database=None, phases=[Phase.explicit, Phase.generate],
                   suppress_health_check=list(HealthCheck))


def _schema(raw: dict):
    from kizuna.wsgi import application

    loaded = schemathesis.openapi.from_dict(raw)
    loaded.app = application  # calls go through the WSGI application, in this process
    return loaded


def _rest() -> dict:
    from kizuna.api import api

    return api.get_openapi_schema()


REST = _schema(_rest())
INGESTION = _schema(openapi.schema())


def _operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def _run(operation, headers: dict[str, str]) -> None:
    """Valid and invalid requests for one operation; each answer checked against the schema."""
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE))

    @BOUNDED
    @given(case=strategy)
    def check(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Calls go straight to the WSGI application, whose request signals would close the
    connection holding the test's transaction; Django's own test client disconnects them too."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(make_user, api_token):
    return {"Authorization": f"Bearer {api_token(make_user('admin'), scopes=('read', 'write'))}"}


@pytest.fixture
def basic(db, settings):
    from kizuna.events import http

    settings.KIZUNA_INGEST_GROUP_COMMIT = False  # stored in the test's own transaction
    http.cache.clear()
    key = WriteKey.objects.create(name="Fuzz").key
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_the_served_descriptions_are_the_ones_fuzzed(client):
    assert client.get("/api/v1/openapi.json").json() == json.loads(json.dumps(_rest()))
    from kizuna.wsgi import application

    served = {}
    body = application({"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/openapi.json", "wsgi.input": None},
                       lambda status, headers: served.update(status=status, headers=dict(headers)))
    assert served["status"].startswith("200") and served["headers"]["Content-Type"] == "application/json"
    assert json.loads(b"".join(body)) == openapi.schema()


@pytest.mark.parametrize("operation", _operations(REST), ids=lambda o: o.label)
def test_rest_api(operation, bearer):
    _run(operation, bearer)


@pytest.mark.parametrize("operation", _operations(INGESTION), ids=lambda o: o.label)
def test_ingestion_api(operation, basic):
    _run(operation, basic)


# --- what the fuzzing found, kept as plain regression tests ------------------------------------


@pytest.mark.parametrize("times", [
    {"timestamp": "0001-01-01T00:00:00+01:00"},  # year 0 in UTC
    {"sentAt": "0001-01-01T00:00:00+05:00"},
    {"timestamp": "0001-01-01T00:00:00", "sentAt": "9999-12-31T00:00:00"},  # the clock correction overflows
    {"timestamp": "9999-12-31T23:00:00", "sentAt": "0001-01-01T00:00:00"},
])
def test_dates_at_the_ends_of_the_calendar_are_refused_with_their_field(basic, times):
    from tests.test_ingest import call

    status, _headers, body = call("POST", "/v1/track", {"event": "x", "userId": "u", **times}, basic)
    assert status == 400, body
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_event" and {d["path"] for d in error["details"]} <= {"timestamp", "sentAt"}


def test_a_nul_character_in_a_body_or_a_query_is_refused_with_its_place(client, bearer):
    """PostgreSQL cannot store NUL in text: it reached the database as a 500 (POST /api/v1/segments)."""
    response = client.post("/api/v1/segments", {"name": "展示会\u0000", "filter": {"all": []}},
                           content_type="application/json", headers=bearer)
    assert response.status_code == 422, response.content
    assert response.json()["error"]["details"] == [{"path": "name", "message": NUL_MESSAGE}]
    response = client.post("/api/v1/contacts", {"email": "a@example.jp", "custom": {"memo\u0000": "x"}},
                           content_type="application/json", headers=bearer)
    assert response.status_code == 422 and response.json()["error"]["details"][0]["path"] == "custom.memo\u0000"
    response = client.get("/api/v1/contacts", {"q": "田中\u0000"}, headers=bearer)
    assert response.status_code == 422 and response.json()["error"]["details"][0]["path"] == "q"


def test_a_value_the_database_refuses_is_the_requests_fault_not_a_server_error(client, bearer):
    from kizuna.contacts.models import Contact

    contact = Contact.objects.create(email="n@example.jp")
    response = client.put(f"/api/v1/contacts/{contact.pk}/consents/news%00", {"status": "opted_in"},
                          content_type="application/json", headers=bearer)
    assert response.status_code in (404, 422), response.content  # 422 on PostgreSQL, not found on SQLite
    assert response.json()["error"]["code"] in ("not_found", "invalid")
