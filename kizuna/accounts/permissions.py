"""View-side access checks: a decorator that turns a missing capability into a clear 403."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _

from .roles import can


def capability_required(capability: str):
    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not can(request.user, capability):
                raise PermissionDenied(_("Your role does not allow this (%(cap)s).") % {"cap": capability})
            return view(request, *args, **kwargs)

        # Read by the authorisation tests, which walk the URLconf: every page states what it needs.
        wrapped.capability = capability
        return wrapped

    return decorator
