"""Event retention: old events go in batches, with their page views; what refers to them keeps
its own rows; nothing goes when no retention is set; one worker at a time runs the pass."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.events import processing, retention
from kizuna.events.models import Event, PageView, Session
from kizuna.scoring.models import ScoreEntry, ScoringModel
from tests.test_partitions import pages_at
from tests.test_scaleout import OtherProcess


def _visit(anonymous_id: str, days_ago: int, pages: int) -> None:
    pages_at(anonymous_id, timezone.now() - timedelta(days=days_ago), pages)


@pytest.mark.django_db
def test_old_events_are_deleted_in_batches_with_their_page_views(settings):
    _visit("old-browser", 100, 7)
    _visit("new-browser", 5, 3)
    processing.drain()
    old = list(Event.objects.filter(anonymous_id="old-browser").order_by("occurred_at"))
    model = ScoringModel.objects.create(name="Retention")
    entry = ScoreEntry.objects.create(model=model, contact=Contact.objects.create(email="r@example.jp"),
                                      kind=ScoreEntry.Kind.ENGAGEMENT, points=5, rule_name="visit",
                                      at=old[0].occurred_at, event=old[0])
    settings.KIZUNA_EVENT_RETENTION_DAYS = 0
    assert retention.purge() == {}  # no retention set: everything is kept
    settings.KIZUNA_EVENT_RETENTION_DAYS = 30
    assert retention.purge(batch=3, max_batches=1) == {"events.Event": 3, "events.PageView": 3}
    assert Event.objects.filter(anonymous_id="old-browser").count() == 4  # the oldest went first
    assert not Event.objects.filter(pk__in=[e.pk for e in old[:3]]).exists()
    counts = retention.purge(batch=3)
    assert counts == {"events.Event": 4, "events.PageView": 4}
    assert list(Event.objects.values_list("anonymous_id", flat=True).distinct()) == ["new-browser"]
    assert PageView.objects.count() == 3 and Session.objects.count() == 2  # visits stay, as summaries
    entry.refresh_from_db()
    assert entry.event_id is None and entry.points == 5  # the ledger keeps its points, without the event


@pytest.mark.django_db(transaction=True)
def test_the_retention_pass_runs_in_one_worker_at_a_time(settings):
    settings.KIZUNA_EVENT_RETENTION_DAYS = 30
    _visit("old-browser", 100, 2)
    processing.drain()
    with OtherProcess("event-retention"):
        assert not retention.maintain()  # another worker is purging: this one leaves it
        assert Event.objects.count() == 2
    assert retention.maintain()
    assert not Event.objects.exists()
