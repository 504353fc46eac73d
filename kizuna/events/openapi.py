"""The OpenAPI description of the ingestion API (`/v1/…`), served at `/v1/openapi.json`.

The endpoints are plain WSGI (kizuna/events/http.py), outside django-ninja, so their description
is written here, next to the code it describes; tests/test_api_fuzz.py checks every answer of
the server against it.
"""

from __future__ import annotations

from typing import Any

from kizuna.events import ingest

_ID = {"oneOf": [{"type": "string", "maxLength": ingest.MAX_ID_LENGTH}, {"type": "integer"}]}
_TIME = {"type": "string", "format": "date-time", "maxLength": 40,
         "description": "ISO 8601 date-time; without a zone, UTC."}
_OBJECT = {"type": "object", "additionalProperties": True}

_COMMON: dict[str, Any] = {
    "messageId": {"oneOf": [{"type": "string", "maxLength": ingest.MAX_MESSAGE_ID_LENGTH}, {"type": "integer"}],
                  "description": "Idempotency key: a message id already received is ignored."},
    "anonymousId": {**_ID, "description": "The browser or device (userId or anonymousId is required)."},
    "userId": {**_ID, "description": "Your id for the person."},
    "timestamp": _TIME,
    "originalTimestamp": _TIME,
    "sentAt": _TIME,
    "context": {**_OBJECT, "description": "Segment's context: page, traits, ip, userAgent, campaign, …"},
    "properties": _OBJECT,
    "traits": _OBJECT,
    "integrations": _OBJECT,
    "writeKey": {"type": "string", "description": "The write key, when it is not sent as the Basic username."},
}

_TYPE_FIELDS: dict[str, dict[str, Any]] = {
    "identify": {},
    "track": {"event": {"type": "string", "minLength": 1, "maxLength": 200}},
    "page": {"name": {"type": "string"}},
    "screen": {"name": {"type": "string"}},
    "group": {"groupId": _ID},
    "alias": {"previousId": _ID},
}
_REQUIRED = {"track": ["event"], "group": ["groupId"], "alias": ["previousId", "userId"]}


def _message(kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": [kind]}, **_COMMON, **_TYPE_FIELDS[kind]},
        "required": _REQUIRED.get(kind, []),
        "additionalProperties": True,
    }


_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
            },
        },
        "accepted": {"type": "integer", "description": "Events of the request that were stored."},
    },
}
_ERROR_DETAIL = {
    "type": "object",
    "description": "A field at fault ({path, message}), or a rejected message of a batch ({index, messageId, "
                   "errors}).",
    "properties": {
        "path": {"type": "string"},
        "message": {"type": "string"},
        "index": {"type": "integer"},
        "messageId": {"type": ["string", "null"]},
        "errors": {"type": "array", "items": {"type": "object", "required": ["path", "message"],
                                              "properties": {"path": {"type": "string"},
                                                             "message": {"type": "string"}}}},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"writeKey": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "Stored: every message is durably in the inbox.",
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["success"],
                        "properties": {"success": {"type": "boolean", "enum": [True]}}}}}},
            "400": _error("The body or some messages are invalid; the valid messages of a batch are stored "
                          "(`accepted`), the others listed by index."),
            "401": _error("No write key, or an unknown or disabled one."),
            "403": _error("The page's origin is not one of the write key's allowed domains."),
            "405": _error("Only POST is accepted."),
            "413": _error("The body is larger than 500 KB, or the batch has more than 2,500 messages."),
            "415": _error("A Content-Encoding other than gzip or deflate."),
            "503": _error("The event store is unavailable for a moment: nothing was stored; send again."),
        },
    }


def schema() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for kind in ingest.TYPES:
        paths[f"/v1/{kind}"] = {"post": _operation(f"One {kind} message", _message(kind))}
    batch = {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "minItems": 1, "maxItems": ingest.MAX_BATCH_EVENTS,
                      "items": {"oneOf": [_message(kind) | {"required": ["type", *_REQUIRED.get(kind, [])]}
                                          for kind in ingest.TYPES]}},
            "context": {**_OBJECT, "description": "Merged into every message's context."},
            "sentAt": _TIME,
            "writeKey": _COMMON["writeKey"],
        },
        "additionalProperties": True,
    }
    paths["/v1/batch"] = {"post": _operation("Several messages of any type", batch)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kizuna ingestion API", "version": "1",
                 "description": "Segment-compatible: the Segment and RudderStack SDKs send here unchanged."},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR, "ErrorDetail": _ERROR_DETAIL},
            "securitySchemes": {"writeKey": {"type": "http", "scheme": "basic",
                                             "description": "The write key as the username, no password."}},
        },
    }
