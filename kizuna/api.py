"""The REST API at /api/v1: authentication, the error format, and the routers of each app.

Authentication: `Authorization: Bearer <api key>` (scopes read/write/ingest, never more than the
key's user may do), or the browser session of a logged-in user (CSRF-checked) for the UI.

Every error is JSON shaped as
    {"error": {"code": "...", "message": "...", "details": [{"path": "...", "message": "..."}]}}
where `path` names the field at fault (`email`, `custom.budget`, `tags.2`, `limit`, `body`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.signals import got_request_exception
from django.db import DataError, connections, transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import re_path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from kizuna.accounts.models import ApiKey
from kizuna.accounts.roles import can

logger = logging.getLogger("kizuna.api")

# Where ninja says a parameter came from; the first element of a pydantic error location.
_SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}
# Body parameters are named `payload` in every router, so errors point at the field, not at it.
_BODY_PARAM = "payload"
_MESSAGES = {"missing": "is required", "extra_forbidden": "is not a known field"}


class ApiError(Exception):
    """Raised by handlers for a 4xx with a code, a message and optional per-field details."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, str] | None = None):
        self.status, self.code, self.message = status, code, message
        self.details = [{"path": p, "message": m} for p, m in (details or {}).items()]
        super().__init__(message)


class ErrorDetail(Schema):
    path: str
    message: str


class ErrorBody(Schema):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorOut(Schema):
    """The body of every error response."""

    error: ErrorBody


class MalformedBody(ValueError):
    """The request body could not be read as JSON; keeps the content type for a precise answer."""

    def __init__(self, content_type: str, reason: str):
        self.content_type, self.reason = content_type, reason
        super().__init__(reason)


NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"


def nul_path(value: Any, path: tuple = ()) -> tuple | None:
    """Where a NUL character hides in a JSON value (keys included), or None. PostgreSQL refuses
    NUL in text, so without this check such a value would reach the database as a server error."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = (*path, key) if "\x00" in key else nul_path(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, (*path, index))
            if found is not None:
                return found
    return None


class NulCharacter(ValueError):
    """A string of the request holds a NUL character; `loc` says where (as pydantic's errors do)."""

    def __init__(self, loc: tuple):
        self.loc = loc
        super().__init__(NUL_MESSAGE)


class JsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        try:
            data = json.loads(request.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise MalformedBody(request.content_type or "", str(exc)) from exc
        found = nul_path(data)
        if found is not None:
            raise NulCharacter(("body", _BODY_PARAM, *found))
        return data

    def parse_querydict(self, data, list_fields, request: HttpRequest) -> Any:
        for key, values in data.lists():
            if "\x00" in key or any("\x00" in v for v in values if isinstance(v, str)):
                raise ValidationError([{"loc": ("query", key), "msg": NUL_MESSAGE, "type": "nul"}])
        return super().parse_querydict(data, list_fields, request)


def _admit(request, user, capabilities: tuple[str, ...]):
    """The authenticated user, once it has one of the capabilities (none asked: any user)."""
    request.auth = user
    if capabilities and not any(can(user, c) for c in capabilities):
        require(request, capabilities[0])
    return user


class KeyAuth(HttpBearer):
    def __init__(self, capabilities: tuple[str, ...] = ()):
        self.capabilities = capabilities
        super().__init__()

    def authenticate(self, request, token: str):
        key = ApiKey.authenticate(token)
        if key is None:
            return None
        now = timezone.now()
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        user = key.user
        user.api_key_scopes = frozenset(key.scopes)
        user.api_key_name = key.name
        request.user = user
        request.api_key = key
        return _admit(request, user, self.capabilities)


class SessionAuth(APIKeyCookie):
    """The logged-in browser session, with Django's CSRF check for unsafe methods.

    A request that carries an Authorization header is judged by it alone, so a bad or revoked
    key is always a 401, even from a browser that also has a session."""

    param_name = "sessionid"

    def __init__(self, csrf: bool = True, capabilities: tuple[str, ...] = ()):
        self.capabilities = capabilities
        super().__init__(csrf=csrf)

    def _get_key(self, request):
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request, key):
        if "authorization" in request.headers:
            return None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if self.csrf and not getattr(request, "_ninja_csrf_exempt", False) and check_csrf(request):
            raise ApiError(403, "csrf_failed", "the CSRF check failed: send the X-CSRFToken header with the "
                                               "csrftoken cookie's value, or use an API key")
        return _admit(request, user, self.capabilities)


def requires(*capabilities: str) -> list:
    """An operation's `auth`: a key or a session with one of these capabilities. Checked before
    ninja reads the path, query and body, so a forbidden call is a 403 whatever else is wrong."""
    return [KeyAuth(capabilities), SessionAuth(csrf=True, capabilities=capabilities)]


class KizunaAPI(NinjaAPI):
    """NinjaAPI whose every answer is in the error shape, including the ones ninja makes outside
    any operation: a method the path does not have (405) and a path that does not exist (404)."""

    @property
    def urls(self):
        patterns, app_name, namespace = super().urls
        for pattern in patterns:
            pattern.callback = _json_405(pattern.callback)
        patterns.append(re_path(r"", csrf_exempt(_unknown_path), name="unknown-path"))
        return patterns, app_name, namespace

    @property
    def root_path(self) -> str:
        return self.get_root_path({})

    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: dict | None = None):
        return document_errors(super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params))


# The errors the API itself answers, whatever the operation does: documented on every operation
# they can come from (an undocumented status is a broken contract for generated clients).
FRAMEWORK_ERRORS = {
    "400": "The body is not valid JSON, or a value is refused; the details name the field.",
    "401": "Missing, invalid or revoked credentials.",
    "403": "The key's scopes or the user's role do not allow this, or the CSRF check failed.",
    "404": "There is no such object.",
    "415": "The body is not in the media type the operation takes.",
    "422": "A parameter or a field of the body is not valid; the details name it.",
}


def document_errors(schema: dict) -> dict:
    """Adds to each operation the framework's errors it can answer: 401 and 403 when it needs
    credentials, 404 when its path names an object, 422 when it reads parameters or a body, 400
    and 415 when it reads a body. Responses an operation documents itself are kept."""
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            parameters = operation.get("parameters") or []
            codes = set()
            if operation.get("security"):
                codes |= {"401", "403"}
            if any(p.get("in") == "path" for p in parameters):
                codes.add("404")
            if parameters or operation.get("requestBody"):
                codes.add("422")
            if operation.get("requestBody"):
                codes |= {"400", "415"}
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(code, {"description": FRAMEWORK_ERRORS[code],
                                            "content": {"application/json": {"schema": error}}})
    return schema


api = KizunaAPI(
    title="Kizuna API",
    version="1",
    description=__doc__,
    auth=[KeyAuth(), SessionAuth(csrf=True)],
    urls_namespace="api",
    parser=JsonParser(),
)


def _rollback_if_atomic_request() -> None:
    """An answered error must not commit half a change when the request runs in a transaction."""
    for conn in connections.all(initialized_only=True):
        if conn.settings_dict.get("ATOMIC_REQUESTS") and conn.in_atomic_block:
            transaction.set_rollback(True, using=conn.alias)


def error_response(request, status: int, code: str, message: str, details: list | None = None) -> HttpResponse:
    if status >= 400:
        _rollback_if_atomic_request()
    return api.create_response(
        request, {"error": {"code": code, "message": message, "details": details or []}}, status=status
    )


def _not_allowed_response(request, response: HttpResponseNotAllowed) -> HttpResponse:
    allowed = response.get("Allow", "")
    shaped = error_response(
        request, 405, "method_not_allowed", f"{request.method} is not allowed on this path; use {allowed}"
    )
    shaped["Allow"] = allowed
    return shaped


def _json_405(view):
    """Wraps a URL's view so ninja's plain-text 405 and its root's 404 come out in the error shape."""
    if inspect.iscoroutinefunction(view):
        @functools.wraps(view)
        async def async_wrapper(request, *args, **kwargs):
            response = await view(request, *args, **kwargs)
            if isinstance(response, HttpResponseNotAllowed):
                return _not_allowed_response(request, response)
            return response

        return async_wrapper

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            response = view(request, *args, **kwargs)
        except Http404:  # ninja's root view, which exists only to be reversed
            return _unknown_path(request)
        if isinstance(response, HttpResponseNotAllowed):
            return _not_allowed_response(request, response)
        return response

    return wrapper


def _unknown_path(request, *args, **kwargs):
    return error_response(
        request, 404, "not_found",
        f"there is no API endpoint at {request.path}; the endpoints are listed in {api.root_path}openapi.json",
    )


def require(request, capability: str) -> None:
    """Raises a 403 ApiError unless the caller (user or key) has the capability."""
    if not can(request.auth, capability):
        key = getattr(request, "api_key", None)
        if key is not None:
            message = (
                f"this API key may not do this: it needs the capability {capability}, which its "
                f"scopes ({', '.join(key.scopes) or 'none'}) or its user's role ({key.user.role}) do not give"
            )
        else:
            message = f"your role ({request.auth.role}) may not do this: it needs {capability}"
        raise ApiError(403, "forbidden", message)


def _error_path(loc: tuple | list) -> str:
    parts = list(loc)
    if parts and parts[0] in _SOURCES:
        source = parts.pop(0)
        if source == "body" and parts and parts[0] == _BODY_PARAM:
            parts.pop(0)
    return ".".join(str(p) for p in parts) or "body"


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return error_response(request, exc.status, exc.code, exc.message, exc.details)


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    details = [
        {"path": _error_path(err.get("loc", ())),
         "message": _MESSAGES.get(err.get("type", ""), err.get("msg", "invalid"))}
        for err in exc.errors
    ]
    return error_response(request, 422, "invalid", "the request is not valid", details)


@api.exception_handler(AuthenticationError)
def _auth_error(request, exc):
    return error_response(
        request, 401, "unauthenticated",
        "missing, invalid or revoked credentials: send 'Authorization: Bearer <API key>' with an active key",
    )


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return error_response(request, 403, "forbidden", str(exc) or "forbidden")


@api.exception_handler(Http404)
def _not_found(request, exc):
    return error_response(request, 404, "not_found", str(exc) or "not found")


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    cause = exc.__cause__
    if isinstance(cause, NulCharacter):
        return error_response(request, 422, "invalid", "the request is not valid",
                              [{"path": _error_path(cause.loc), "message": NUL_MESSAGE}])
    if isinstance(cause, MalformedBody):
        if cause.content_type and "json" not in cause.content_type:
            return error_response(
                request, 415, "unsupported_media_type",
                f"the body must be JSON sent as 'Content-Type: application/json', not {cause.content_type}",
                [{"path": "body", "message": "is not JSON"}],
            )
        return error_response(request, 400, "malformed_json", "the request body is not valid JSON",
                              [{"path": "body", "message": cause.reason}])
    code = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 413: "too_large", 429: "rate_limited"}
    return error_response(request, exc.status_code, code.get(exc.status_code, "error"), str(exc))


@api.exception_handler(DataError)
def _data_error(request, exc: DataError):
    """A value the database cannot store or compare (a NUL character in a path, a number out of
    range): the request's fault, not the server's."""
    logger.info("API %s %s: value refused by the database: %s", request.method, request.path, exc)
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return error_response(request, 422, "invalid", f"a value of the request cannot be stored or compared: {reason}")


@api.exception_handler(Exception)
def _server_error(request, exc: Exception):
    """A bug: logged with its traceback (and signalled, as Django does), answered in the shape."""
    logger.exception("API error on %s %s", request.method, request.path)
    got_request_exception.send(sender=None, request=request)
    return error_response(request, 500, "server_error", "the server failed to handle this request; it has been logged")


def _register_routers() -> None:
    from kizuna.contacts.api import router as contacts_router
    from kizuna.contacts.api_imports import router as imports_router
    from kizuna.journeys.api import router as journeys_router
    from kizuna.privacy.api import router as privacy_router
    from kizuna.segments.api import router as segments_router

    api.add_router("/", contacts_router)
    api.add_router("/", imports_router)
    api.add_router("/", segments_router)
    api.add_router("/", journeys_router)
    api.add_router("/", privacy_router)


_register_routers()
