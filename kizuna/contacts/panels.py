"""Sections other apps add to the contact page (web activity, later emails and scores).

The contacts app knows nothing about them: an app registers a template and a function that
builds its context in its AppConfig.ready(), and the contact page renders them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .models import Contact


@dataclass(frozen=True)
class ContactPanel:
    order: int
    template_name: str
    context: Callable[[Any, Contact], dict[str, Any]]  # (request, contact) -> template context


CONTACT_PANELS: list[ContactPanel] = []


def register_contact_panel(order: int, template_name: str, context: Callable[[Any, Contact], dict[str, Any]]) -> None:
    if any(p.template_name == template_name for p in CONTACT_PANELS):
        return
    CONTACT_PANELS.append(ContactPanel(order, template_name, context))
    CONTACT_PANELS.sort(key=lambda p: p.order)


def rendered_panels(request, contact: Contact) -> list[dict[str, Any]]:
    return [{"template": p.template_name, "context": p.context(request, contact)} for p in CONTACT_PANELS]
