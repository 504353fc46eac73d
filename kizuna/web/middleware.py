"""Refusing, with a clear answer, request parameters the database cannot store or compare.

PostgreSQL text cannot hold NUL (U+0000): a `?q=%00` that reached a filter made psycopg raise
and the page answer 500 (the audit log, visitors, suppressions, the contacts API). Forms already
refuse NUL field by field; query strings are checked here, once, for every page.
"""

from __future__ import annotations

from django.http import HttpResponseBadRequest, JsonResponse


class NulParameterMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        bad = next((key for key, values in request.GET.lists()
                    if "\x00" in key or any("\x00" in v for v in values)), None)
        if bad is not None:
            name = bad.replace("\x00", "\\0")[:50]
            message = f"the query parameter {name!r} contains a NUL character (%00), which is not allowed"
            if request.path.startswith("/api/"):
                # The API's own answer for a value it cannot take: a 422 in its error shape.
                return JsonResponse({"error": {"code": "invalid", "message": message,
                                               "details": [{"path": name, "message": "contains a NUL character"}]}},
                                    status=422)
            return HttpResponseBadRequest(message + "\n", content_type="text/plain; charset=utf-8")
        return self.get_response(request)
