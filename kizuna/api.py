"""The REST API at /api/v1: authentication, the error format, and the routers of each app.

Authentication: `Authorization: Bearer <api key>` (scopes read/write/ingest, never more than the
key's user may do), or the browser session of a logged-in user (CSRF-checked) for the UI.

Every error is JSON shaped as
    {"error": {"code": "...", "message": "...", "details": [{"path": "...", "message": "..."}]}}
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyCookie, HttpBearer

from kizuna.accounts.models import ApiKey
from kizuna.accounts.roles import can


class ApiError(Exception):
    """Raised by handlers for a 4xx with a code, a message and optional per-field details."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, str] | None = None):
        self.status, self.code, self.message = status, code, message
        self.details = [{"path": p, "message": m} for p, m in (details or {}).items()]
        super().__init__(message)


class KeyAuth(HttpBearer):
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
        return user


class SessionAuth(APIKeyCookie):
    """The logged-in browser session, with Django's CSRF check for unsafe methods."""

    param_name = "sessionid"

    def _get_key(self, request):
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request, key):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return user
        return None


api = NinjaAPI(
    title="Kizuna API",
    version="1",
    description=__doc__,
    auth=[KeyAuth(), SessionAuth(csrf=True)],
    urls_namespace="api",
)


def error_response(request, status: int, code: str, message: str, details: list | None = None):
    return api.create_response(
        request, {"error": {"code": code, "message": message, "details": details or []}}, status=status
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


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return error_response(request, exc.status, exc.code, exc.message, exc.details)


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    details = []
    for err in exc.errors:
        loc = [str(p) for p in err.get("loc", []) if p not in ("body", "payload", "query", "path")]
        details.append({"path": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    return error_response(request, 422, "invalid", "the request is not valid", details)


@api.exception_handler(AuthenticationError)
def _auth_error(request, exc):
    return error_response(
        request, 401, "unauthenticated",
        "missing or invalid credentials: send 'Authorization: Bearer <API key>'",
    )


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return error_response(request, 403, "forbidden", str(exc) or "forbidden")


@api.exception_handler(Http404)
def _not_found(request, exc):
    return error_response(request, 404, "not_found", str(exc) or "not found")


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    code = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 413: "too_large", 429: "rate_limited"}
    return error_response(request, exc.status_code, code.get(exc.status_code, "error"), str(exc))


def _register_routers() -> None:
    from kizuna.contacts.api import router as contacts_router
    from kizuna.contacts.api_imports import router as imports_router

    api.add_router("/", contacts_router)
    api.add_router("/", imports_router)


_register_routers()
