"""Shared set-up for journey tests: a sender, a topic with consent, templates, contacts, and one
call that does what the worker does (journeys, outbox, notices) at the travelled time."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from email import message_from_bytes, policy

import time_machine

from kizuna.contacts.consent import set_consent
from kizuna.contacts.models import ConsentStatus, Contact, SubscriptionTopic
from kizuna.events import ingest, processing
from kizuna.handoff import delivery
from kizuna.journeys import engine
from kizuna.journeys.models import Journey
from kizuna.messaging import outbox
from kizuna.messaging.models import EmailTemplate, Sender, SendingSettings
from kizuna.messaging.templates_service import save_version


def make_world() -> dict:
    sender = Sender.objects.create(
        name="Marketing", from_name="株式会社キズナ", from_email="news@kizuna.example", organisation="株式会社キズナ",
        postal_address="東京都千代田区丸の内1-1-1", is_default=True)
    topic = SubscriptionTopic.objects.create(key="news", name="お知らせ", requires_opt_in=True)
    SendingSettings.objects.update_or_create(pk=1, defaults={"frequency_cap": 0})
    return {"sender": sender, "topic": topic}


def template(world: dict, name: str) -> EmailTemplate:
    tpl = EmailTemplate.objects.create(name=name, kind="marketing", topic=world["topic"], sender=world["sender"])
    save_version(tpl, subject=name, html=f"<p>{{{{ contact.family_name }}}} 様</p><p>{name}</p>")
    tpl.refresh_from_db()
    return tpl


def contact(world: dict, email: str, **fields) -> Contact:
    c = Contact.objects.create(email=email, family_name=email.split("@")[0], **fields)
    set_consent(c, world["topic"], ConsentStatus.OPTED_IN, method="test")
    return c


# Journeys in tests went live before anything they react to (what happens before that starts nothing).
LIVE_SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def journey(name: str, graph: dict, *, live: bool = True, **fields) -> Journey:
    j = Journey(name=name, **fields)
    engine.save_journey(j, graph)
    if live:
        with time_machine.travel(LIVE_SINCE, tick=False):
            engine.set_status(j, Journey.Status.LIVE)
    return j


def send_events(messages: list[dict]) -> None:
    result = ingest.ingest(messages, ingest.RequestInfo(ip="126.33.10.20", user_agent="Mozilla/5.0 Chrome/131"))
    assert not result.rejected, result.rejected
    processing.drain()


def work() -> None:
    """One pass of the worker at the current (travelled) time."""
    processing.drain()
    engine.tick()
    outbox.drain()
    delivery.deliver_due()


def received(server) -> Counter:
    """(recipient, subject) → how many times the SMTP server accepted it."""
    out: Counter = Counter()
    with server.handler.lock:
        for _from, rcpts, data in server.handler.messages:
            subject = str(message_from_bytes(data, policy=policy.default)["Subject"])
            for r in rcpts:
                out[(r, subject)] += 1
    return out
