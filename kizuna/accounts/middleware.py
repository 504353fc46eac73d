"""Applies a user's chosen language after authentication (the browser decides otherwise)."""

from django.utils import translation


class UserLanguageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        lang = getattr(user, "language", "") if user is not None and user.is_authenticated else ""
        if lang:
            translation.activate(lang)
            request.LANGUAGE_CODE = lang
        response = self.get_response(request)
        if lang:
            response.headers.setdefault("Content-Language", lang)
        return response


class TwoFactorRequiredMiddleware:
    """A user who must use two-factor login (marked by an admin, or every admin with
    KIZUNA_2FA_REQUIRED_FOR_ADMINS) and has not set it up sees only the setup page until they do."""

    ALLOWED = ("/account/two-factor/", "/logout/", "/language/", "/static/", "/login/")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (user is not None and user.is_authenticated and not request.path.startswith(self.ALLOWED)
                and "authorization" not in request.headers):
            from kizuna.accounts import twofactor

            if twofactor.required_for(user) and not twofactor.enabled_for(user):
                if request.path.startswith("/api/"):
                    from django.http import JsonResponse

                    return JsonResponse({"error": {
                        "code": "two_factor_required", "details": [],
                        "message": "set up two-factor login in the browser first, or use an API key"}}, status=403)
                from django.shortcuts import redirect

                return redirect("accounts:two_factor")
        return self.get_response(request)
