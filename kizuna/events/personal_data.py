"""A contact's web activity and events, for export and erasure (see kizuna/privacy/registry.py).

Erasure either deletes the events, sessions, page views and visitor rows of the contact and of
its browsers, or anonymises them: the contact link, browser id (replaced by an `erased-…` alias),
user id, IP address, user agent, traits, identifying properties and query strings go; what was
viewed, when, from which campaign and with which kind of device stays, so page and campaign
counts remain right.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from kizuna.events.models import Event, Identity, IdentityKind, PageView, Session, Visitor
from kizuna.privacy.erasure import strip_query
from kizuna.privacy.registry import rows

LABEL = _("Web activity and events")
MODELS = ["events.Event", "events.Identity", "events.Visitor", "events.Session", "events.PageView"]

# Property keys that describe the page or the message, never the person; others go on anonymising.
KEPT_PROPERTIES = frozenset({
    "url", "path", "title", "referrer", "page_view_id", "visible_ms", "scroll_depth", "category", "label",
    "value", "revenue", "currency", "link", "machine", "machineReason", "message", "template",
    "templateVersion", "bulkSend", "subject", "from", "to", "stage", "model", "method", "everything", "variant",
    "form", "page",
})
URL_PROPERTIES = frozenset({"url", "referrer"})
KEPT_CONTEXT = ("page", "campaign", "library")
EVENT_FIELDS = ("message_id", "type", "name", "occurred_at", "received_at", "source", "anonymous_id", "user_id",
                "url", "path", "title", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_term",
                "utm_content", "ip", "user_agent", "bot", "properties", "traits", "context")
SESSION_FIELDS = ("id", "anonymous_id", "started_at", "last_activity_at", "page_views", "engaged_ms", "entry_url",
                  "exit_url", "referrer", "source_kind", "source_host", "source_engine", "keyword", "utm_source",
                  "utm_medium", "utm_campaign", "utm_term", "utm_content", "ip", "country", "network_org",
                  "company_name", "browser", "os", "device", "bot")


def browser_ids(contact) -> list[str]:
    return list(Identity.objects.filter(contact=contact, kind=IdentityKind.ANONYMOUS).values_list("value", flat=True))


def _theirs(model, contact, anon: list[str]):
    return model.objects.filter(Q(contact=contact) | Q(anonymous_id__in=anon)) if anon else \
        model.objects.filter(contact=contact)


def export(contact) -> dict[str, Any]:
    anon = browser_ids(contact)
    return {
        "identities": rows(Identity.objects.filter(contact=contact).order_by("created_at"), "kind", "value",
                           "created_at"),
        "visitors": rows(_theirs(Visitor, contact, anon).order_by("first_seen"), "anonymous_id", "first_seen",
                         "last_seen", "sessions", "page_views", "company_name", "country", "last_url"),
        "sessions": rows(_theirs(Session, contact, anon).order_by("started_at"), *SESSION_FIELDS),
        "page_views": rows(_theirs(PageView, contact, anon).order_by("occurred_at"), "session_id", "seq",
                           "occurred_at", "url", "path", "title", "dwell_ms", "scroll_depth"),
        "events": rows(_theirs(Event, contact, anon).order_by("occurred_at", "id"), *EVENT_FIELDS),
    }


def _clean_properties(properties: Any) -> dict:
    if not isinstance(properties, dict):
        return {}
    out = {}
    for key, value in properties.items():
        if key not in KEPT_PROPERTIES:
            continue
        if key in URL_PROPERTIES and isinstance(value, str):
            value = strip_query(value)
        if isinstance(value, str) and "@" in value:  # an address where none was expected
            continue
        out[key] = value
    return out


def _clean_context(context: Any) -> dict:
    if not isinstance(context, dict):
        return {}
    out = {key: context[key] for key in KEPT_CONTEXT if isinstance(context.get(key), dict)}
    if "page" in out:
        page = {k: v for k, v in out["page"].items() if k in ("path", "title", "url", "referrer")}
        for key in URL_PROPERTIES & page.keys():
            page[key] = strip_query(page[key]) if isinstance(page[key], str) else ""
        out["page"] = page
    return out


def anonymise_events(ids: list[int], aliases: dict[str, str] | None = None) -> int:
    """Anonymises these events and their page views. Each browser id becomes an alias, the same
    for all its events (so its sessions still hang together): taken from `aliases` and added to it."""
    aliases = {} if aliases is None else aliases

    def alias_of(anonymous_id: str) -> str:
        if anonymous_id.startswith("erased-"):
            return anonymous_id
        if anonymous_id not in aliases:
            aliases[anonymous_id] = "erased-" + secrets.token_hex(8)
        return aliases[anonymous_id]

    events = list(Event.objects.filter(id__in=ids).only(
        "id", "anonymous_id", "properties", "context", "url", "referrer"))
    for ev in events:
        ev.contact_id, ev.anonymous_id, ev.user_id = None, alias_of(ev.anonymous_id), ""
        ev.ip, ev.user_agent, ev.traits = None, "", {}
        ev.properties, ev.context = _clean_properties(ev.properties), _clean_context(ev.context)
        ev.url, ev.referrer = strip_query(ev.url), strip_query(ev.referrer)
    Event.objects.bulk_update(events, ["contact", "anonymous_id", "user_id", "ip", "user_agent", "traits",
                                       "properties", "context", "url", "referrer"], batch_size=500)
    views = list(PageView.objects.filter(event_id__in=ids).only("id", "anonymous_id", "url"))
    for pv in views:
        pv.contact_id, pv.anonymous_id, pv.url = None, alias_of(pv.anonymous_id), strip_query(pv.url)
    PageView.objects.bulk_update(views, ["contact", "anonymous_id", "url"], batch_size=500)
    return len(events)


def delete_events(ids: list[int], counts: dict[str, int] | None = None) -> int:
    """Deletes these events with their page views; score entries keep their points, not the event.
    The one way events are deleted (erasure, retention rules, the age limit); `counts` gathers
    the rows deleted per model label."""
    from kizuna.scoring.models import ScoreEntry

    if not ids:
        return 0
    ScoreEntry.objects.filter(event_id__in=ids).update(event=None)
    views = PageView.objects.filter(event_id__in=ids).delete()[1].get("events.PageView", 0)
    events = Event.objects.filter(id__in=ids).delete()[1].get("events.Event", 0)
    if counts is not None:
        for label, n in (("events.Event", events), ("events.PageView", views)):
            if n:
                counts[label] = counts.get(label, 0) + n
    return events


def erase(contact, plan) -> dict[str, int]:
    anon = browser_ids(contact)
    event_ids = list(_theirs(Event, contact, anon).values_list("id", flat=True))
    sessions = _theirs(Session, contact, anon)
    visitors = _theirs(Visitor, contact, anon)
    if not plan.anonymise:
        counts = {"events_deleted": delete_events(event_ids),
                  "sessions_deleted": sessions.delete()[1].get("events.Session", 0),
                  "visitors_deleted": visitors.delete()[0]}
        return {k: v for k, v in counts.items() if v}
    mapping: dict[str, str] = {}
    n = anonymise_events(event_ids, mapping)
    session_rows = list(sessions)
    for s in session_rows:
        s.contact_id, s.ip = None, None
        s.anonymous_id = mapping.setdefault(s.anonymous_id, "erased-" + secrets.token_hex(8))
        s.entry_url, s.exit_url, s.referrer = strip_query(s.entry_url), strip_query(s.exit_url), strip_query(s.referrer)
    Session.objects.bulk_update(session_rows, ["contact", "ip", "anonymous_id", "entry_url", "exit_url", "referrer"],
                                batch_size=500)
    visitor_rows = list(visitors)
    for v in visitor_rows:
        v.contact_id, v.last_url = None, strip_query(v.last_url)
        v.anonymous_id = mapping.setdefault(v.anonymous_id, "erased-" + secrets.token_hex(8))
    Visitor.objects.bulk_update(visitor_rows, ["contact", "anonymous_id", "last_url"], batch_size=500)
    return {"events_anonymised": n, "sessions_anonymised": len(session_rows), "visitors_anonymised": len(visitor_rows)}
