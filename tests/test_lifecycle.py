"""Lifecycle stages: rule transitions (forward only, bounded when stage changes feed scoring),
transitions by hand and by API recorded as events, the funnel and AIDMA report, the pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from kizuna.contacts.models import Contact
from kizuna.events import processing
from kizuna.events.models import Event
from kizuna.insights import reports, rollups
from kizuna.insights.periods import Period
from kizuna.lifecycle import transitions
from kizuna.lifecycle.models import StageChange, StageRule
from kizuna.scoring.models import EngagementRule, ScoringModel
from kizuna.scoring.setup import ensure_defaults
from tests.test_scoring import START, page, send

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(db):
    transitions.ensure_defaults()
    model = ensure_defaults()
    ScoringModel.objects.filter(pk=model.pk).update(hot_threshold=1000)
    model.refresh_from_db()
    return model


def _lead(aid: str, email: str) -> Contact:
    send([{"type": "identify", "anonymousId": aid, "traits": {"email": email}}])
    contact = Contact.objects.get(email=email)
    Contact.objects.filter(pk=contact.pk).update(industry="manufacturing", company_size="300-999", region="kanto",
                                                 job_title="部長")
    return contact


def test_rule_moves_a_lead_forward_once_and_records_the_event(model):
    StageRule.objects.create(name="MQL", scoring_model=model, min_engagement=30, min_grade="B", to_stage="mql")
    with time_machine.travel(START, tick=False):
        contact = _lead("a1", "a1@example.co.jp")
        send([page("a1", "/pricing"), page("a1", "/pricing?x")])
        contact.refresh_from_db()
        assert contact.lifecycle_stage == "lead"  # 22 points: not yet
        send([{"type": "track", "anonymousId": "a1", "event": "Form Submitted", "properties": {}}])
        contact.refresh_from_db()
        assert contact.lifecycle_stage == "mql"
        send([page("a1", "/pricing?y")])
    changes = list(StageChange.objects.filter(contact=contact).order_by("id"))
    # Created by the identify (entering the funnel), then moved once by the rule.
    assert [(c.from_stage, c.to_stage, c.via) for c in changes] == [("", "lead", "event"), ("lead", "mql", "rule")]
    processing.drain()
    event = Event.objects.get(name=transitions.EVENT_NAME, properties__to="mql")
    assert event.contact_id == contact.pk and event.properties["from"] == "lead"


def test_stage_changes_that_feed_scores_cannot_loop(model):
    """A scoring rule rewards every stage change; stage rules at rising bars. The chain climbs to
    the last rule's stage and stops there: rules only move forward."""
    EngagementRule.objects.create(model=model, name="Stage up", event=transitions.EVENT_NAME, points=50)
    for stage, bar in (("mql", 30), ("sql", 60), ("opportunity", 90)):
        StageRule.objects.create(name=stage, scoring_model=model, min_engagement=bar, min_grade="D", to_stage=stage)
    with time_machine.travel(START, tick=False):
        contact = _lead("a2", "a2@example.co.jp")
        send([{"type": "track", "anonymousId": "a2", "event": "Form Submitted", "properties": {}}])
        for _ in range(10):
            if not processing.drain():
                break
        else:
            pytest.fail("the event inbox never emptied")
    contact.refresh_from_db()
    assert contact.lifecycle_stage == "opportunity"
    moved = [c.to_stage for c in StageChange.objects.filter(contact=contact, via="rule").order_by("id")]
    ranks = [transitions.RANK[s] for s in moved]
    assert ranks == sorted(set(ranks)) and moved[-1] == "opportunity"  # forward only, each stage once
    assert len(moved) <= 3


def test_by_hand_and_by_api_transitions_are_recorded(model, logged_in, api_token, admin_user):
    contact = Contact.objects.create(email="h@example.co.jp", lifecycle_stage="lead")
    logged_in.post(reverse("lifecycle:contact_stage", args=[contact.pk]), {"stage": "sql"})
    token = api_token(admin_user)
    response = logged_in.patch(f"/api/v1/contacts/{contact.pk}", {"lifecycle_stage": "customer"},
                               content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    got = [(c.from_stage, c.to_stage, c.via) for c in StageChange.objects.filter(contact=contact).order_by("id")]
    assert got == [("lead", "sql", "manual"), ("sql", "customer", "api")]
    response = logged_in.post(reverse("lifecycle:contact_stage", args=[contact.pk]), {"stage": "boss"}, follow=True)
    assert "Not a lifecycle stage: boss" in response.content.decode()
    page_html = logged_in.get(reverse("contacts:detail", args=[contact.pk])).content.decode()
    assert "data-stage-panel" in page_html and "By hand" in page_html and 'name="stage"' in page_html


def test_funnel_counts_entries_and_conversions_and_aidma(model):
    a, b, c = (Contact.objects.create(email=f"{n}@f.example", lifecycle_stage="lead") for n in "abc")
    with time_machine.travel(START, tick=False):
        transitions.move([a, b, c], "mql", via="manual")
    with time_machine.travel(START + timedelta(days=5), tick=False):
        transitions.move([a], "sql", via="manual")
    with time_machine.travel(START + timedelta(days=10), tick=False):
        rollups.rebuild()
        data = reports.funnel(Period((START - timedelta(days=19)).date(), (START + timedelta(days=10)).date()))
    rows = {r["key"]: r for r in data["rows"]}
    assert rows["mql"]["entered"] == 3 and rows["mql"]["moved_on"] == 1 and rows["mql"]["rate"] == pytest.approx(33.3)
    assert rows["mql"]["current"] == 2 and rows["sql"]["current"] == 1
    phases = {p["label"]: p for p in data["phases"]}
    assert phases["Desire"]["current"] == 3  # MQL and SQL are Desire by default


def test_settings_page_validates_rules_and_saves_aidma(model, logged_in):
    url = reverse("lifecycle:settings")
    assert logged_in.get(url).status_code == 200
    response = logged_in.post(url, {"action": "rule", "name": "back", "scoring_model": model.pk,
                                    "min_engagement": "50", "min_grade": "B", "to_stage": "subscriber"})
    assert "Rules move contacts forward" in response.content.decode()
    response = logged_in.post(url, {"action": "rule", "name": "neg", "scoring_model": model.pk,
                                    "min_engagement": "-5", "min_grade": "B", "to_stage": "mql"})
    assert "positive engagement" in response.content.decode()
    assert not StageRule.objects.exists()
    logged_in.post(url, {"action": "rule", "name": "MQL", "scoring_model": model.pk, "min_engagement": "100",
                         "min_grade": "B", "to_stage": "mql"})
    assert StageRule.objects.get().to_stage == "mql"
    logged_in.post(url, {"action": "stages", "aidma-lead": "attention", "funnel-lead": "on"})
    from kizuna.lifecycle.models import StageSetting

    assert StageSetting.objects.get(key="lead").aidma == "attention"
    assert not StageSetting.objects.get(key="mql").in_funnel
    old = logged_in.get(reverse("lifecycle:funnel") + "?days=30")
    assert old.status_code == 301 and old["Location"].endswith("/insights/funnel/?days=30")
    assert logged_in.get(reverse("lifecycle:funnel"), follow=True).status_code == 200
