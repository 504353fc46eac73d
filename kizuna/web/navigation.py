"""The navigation menu: one list, filtered by what the user may see.

Every page of the product is reachable from here; apps add their entries to MENU.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from kizuna.accounts.roles import can


@dataclass(frozen=True)
class MenuItem:
    label: str
    url_name: str
    capability: str
    section: str  # the first path segment it owns, for highlighting


MENU: list[tuple[str, list[MenuItem]]] = [
    (_("Overview"), [
        MenuItem(_("Insights"), "insights:dashboard", "contacts.view", "insights"),
        MenuItem(_("Dashboard"), "web:home", "contacts.view", ""),
        MenuItem(_("Live events"), "events:live", "tracking.view", "events"),
    ]),
    (_("Audience"), [
        MenuItem(_("Contacts"), "contacts:list", "contacts.view", "contacts"),
        MenuItem(_("Companies"), "contacts:company_list", "companies.view", "companies"),
        MenuItem(_("Lists"), "contacts:list_index", "contacts.view", "lists"),
        MenuItem(_("Segments"), "segments:list", "segments.view", "segments"),
        MenuItem(_("Import"), "contacts:import_list", "contacts.import", "imports"),
        MenuItem(_("Visitors"), "events:visitor_list", "tracking.view", "visitors"),
        MenuItem(_("Visiting companies"), "events:companies", "tracking.view", "visitors/companies"),
        MenuItem(_("Hot leads"), "scoring:hot_leads", "contacts.view", "leads"),
    ]),
    (_("Capture"), [
        MenuItem(_("Forms"), "capture:list", "capture.view", "forms"),
        MenuItem(_("Landing pages"), "landing:list", "capture.view", "landing-pages"),
        MenuItem(_("Assets"), "assets:list", "capture.view", "assets"),
    ]),
    (pgettext_lazy("channel", "Email"), [
        MenuItem(_("Bulk sends"), "messaging:bulk_list", "email.view", "email/bulk"),
        MenuItem(_("Email templates"), "messaging:template_list", "email.view", "email/templates"),
        MenuItem(_("Outbox"), "messaging:outbox", "email.view", "email/outbox"),
        MenuItem(_("Suppressions"), "messaging:suppressions", "email.view", "email/suppressions"),
    ]),
    (_("Automation"), [
        MenuItem(_("Journeys"), "journeys:list", "journeys.view", "journeys"),
        MenuItem(_("Playbooks"), "playbooks:list", "journeys.view", "playbooks"),
    ]),
    (_("Settings"), [
        MenuItem(_("Users"), "accounts:user_list", "users.manage", "settings/users"),
        MenuItem(_("API keys"), "accounts:apikey_list", "apikeys.manage", "settings/api-keys"),
        MenuItem(_("Custom fields"), "contacts:field_list", "fields.manage", "settings/fields"),
        MenuItem(_("Subscription topics"), "contacts:topic_list", "topics.manage", "settings/topics"),
        MenuItem(_("Tracking"), "events:settings", "tracking.manage", "settings/tracking"),
        MenuItem(_("Lead scoring"), "scoring:models", "scoring.manage", "settings/scoring"),
        MenuItem(_("Hand-off to sales"), "handoff:settings", "scoring.manage", "settings/handoff"),
        MenuItem(_("Lifecycle stages"), "lifecycle:settings", "scoring.manage", "settings/stages"),
        MenuItem(_("Email senders"), "messaging:sender_list", "email.manage", "email/senders"),
        MenuItem(_("Sending rules"), "messaging:settings", "email.manage", "email/settings"),
        MenuItem(_("Audit log"), "accounts:audit_log", "audit.view", "settings/audit"),
        MenuItem(_("Privacy and personal data"), "privacy:settings", "privacy.manage", "settings/privacy"),
        MenuItem(_("Two-factor login"), "accounts:two_factor", "account.manage", "account/two-factor"),
    ]),
]


def menu_for(user, path: str) -> list[dict]:
    here = path.strip("/")
    # The most specific section owning the path is the active one (visitors/companies over visitors).
    owners = [i.section for _t, items in MENU for i in items if i.section and here.startswith(i.section)]
    current = max(owners, key=len) if owners else ""
    sections = []
    for title, items in MENU:
        entries = []
        for item in items:
            if not can(user, item.capability):
                continue
            url = reverse(item.url_name)
            active = item.section == current if item.section else path == "/"
            entries.append({"label": item.label, "url": url, "active": active})
        if entries:
            sections.append({"title": title, "items": entries})
    return sections
