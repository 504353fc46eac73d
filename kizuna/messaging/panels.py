"""The contact page's Email section: what was sent to this person and what they did with it."""

from __future__ import annotations

from kizuna.contacts.panels import register_contact_panel
from kizuna.messaging.models import Message, Suppression


def email_panel(request, contact) -> dict:
    messages = (Message.objects.filter(contact=contact).select_related("version__template", "bulk")
                .order_by("-created_at")[:30])
    suppressed = Suppression.objects.filter(email=(contact.email or "").lower()).first() if contact.email else None
    return {"messages": messages, "suppressed": suppressed}


def register_panels() -> None:
    register_contact_panel(40, "messaging/_contact_panel.html", email_panel)
