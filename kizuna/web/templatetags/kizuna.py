"""Small template helpers shared by every app's pages."""

from django import template
from django.utils.http import urlencode

from kizuna.accounts.roles import can as role_can

register = template.Library()


@register.filter
def can(user, capability: str) -> bool:
    return role_can(user, capability)


@register.simple_tag(takes_context=True)
def query(context, **changes) -> str:
    """The current query string with some parameters changed (None removes one)."""
    params = context["request"].GET.copy()
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = value
    params.pop("cursor", None) if "cursor" not in changes else None
    return "?" + urlencode(sorted(params.lists()), doseq=True)
