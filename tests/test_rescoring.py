"""Re-scoring after rule changes: the fast fit pass agrees with the one-contact scorer, the
engagement pass rebuilds scores from the event log with the new rules and alerts nobody, and
rule edits queue one background job whose progress the page shows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from kizuna.contacts.models import Company, Contact
from kizuna.scoring import engine, rescoring
from kizuna.scoring.models import (
    ContactScore,
    EngagementRule,
    FitRule,
    LeadAlert,
    RescoreRun,
    ScoreEntry,
    ScoringModel,
)
from kizuna.scoring.setup import ensure_defaults

from .test_scoring import page, send

pytestmark = pytest.mark.django_db
START = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
def model(db):
    return ensure_defaults()


def test_fast_fit_pass_agrees_with_the_one_contact_scorer():
    rng = random.Random(7)
    model = ScoringModel.objects.create(name="Agreement")
    rules = [("industry", "in", "manufacturing, it", 20), ("job_title", "contains", "部長", 15),
             ("job_title", "contains", "Manager", 7), ("company_size", "in", "100-299, 300-999", 10),
             ("prefecture", "in", "13, 14, 11, 12", 5), ("email_domain", "in", "gmail.com", -10),
             ("custom.budget", "gte", "100", 12), ("custom.plan", "equals", "pro", 3),
             ("company.employees", "gte", "100", 8), ("department", "empty", "", -2),
             ("region", "not_in", "kanto", 1)]
    for position, (field, op, value, points) in enumerate(rules):
        FitRule.objects.create(model=model, field=field, operator=op, value=value, points=points, position=position)
    companies = [Company.objects.create(name=f"社{i}", employees=rng.choice([None, 20, 150, 5000]))
                 for i in range(5)]
    for i in range(120):
        Contact.objects.create(
            email=f"f{i}@{rng.choice(['example.co.jp', 'gmail.com', 'GMAIL.com'])}",
            industry=rng.choice(["manufacturing", "it", "finance", ""]),
            job_title=rng.choice(["営業部長", "Sales manager", "担当", ""]),
            company_size=rng.choice(["1-9", "100-299", "300-999", ""]),
            prefecture=rng.choice(["13", "27", "14", ""]), region=rng.choice(["kanto", "kansai", ""]),
            department=rng.choice(["", "営業部"]),
            custom=rng.choice([{}, {"budget": 150}, {"budget": "80"}, {"plan": "Pro"}, {"plan": ["pro"]}]),
            company=rng.choice([None, *companies]))
    assert rescoring.rescore_fit(model) == 120
    stored = dict(ContactScore.objects.filter(model=model).values_list("contact_id", "fit"))
    for contact in Contact.objects.select_related("company"):
        assert stored[contact.pk] == engine.fit_of(model, contact)[0], contact.email
    assert rescoring.rescore_fit(model) == 0  # nothing changed, nothing written


def test_fit_pass_writes_only_what_changed(model):
    for i in range(10):
        Contact.objects.create(email=f"c{i}@example.co.jp", industry="manufacturing" if i < 4 else "finance")
    rescoring.rescore_fit(model)
    stamp = dict(ContactScore.objects.filter(model=model).values_list("contact_id", "updated_at"))
    rule = FitRule.objects.get(model=model, field="industry")
    rule.value = "finance"
    rule.save()
    assert rescoring.rescore_fit(model) == 10  # every contact moved: 4 lost the points, 6 gained them
    model.grade_c = 100
    model.save()
    FitRule.objects.create(model=model, field="industry", operator="equals", value="nothing", points=1)
    assert rescoring.rescore_fit(model) == 6  # only the grades of the 6 with points changed (C → D)
    after = dict(ContactScore.objects.filter(model=model).values_list("contact_id", "updated_at"))
    assert after != stamp


def _pricing_rule(model) -> EngagementRule:
    return EngagementRule.objects.get(model=model, name="Pricing page viewed")


def test_engagement_pass_applies_new_rules_to_past_events_and_alerts_nobody(model):
    with time_machine.travel(START, tick=False):
        send([{"type": "identify", "anonymousId": "a", "traits": {"email": "k@example.co.jp"}},
              page("a", "/pricing"), page("a", "/pricing")])
    contact = Contact.objects.get(email="k@example.co.jp")
    Contact.objects.filter(pk=contact.pk).update(industry="manufacturing", job_title="営業部長")
    rescoring.rescore_fit(model)  # grade B: hot is within reach
    rule = _pricing_rule(model)
    old_points = rule.points
    before = ContactScore.objects.get(model=model, contact=contact)
    alerts = LeadAlert.objects.count()
    rule.points = 80
    rule.max_times = None
    rule.save()
    later = START + timedelta(days=3)
    with time_machine.travel(later, tick=False):
        changed = rescoring.rescore_engagement(model)
        score = ContactScore.objects.get(model=model, contact=contact)
        now_value = engine.current_of(model, score, later)
    assert changed == 1
    entries = ScoreEntry.objects.filter(model=model, contact=contact, engagement_rule=rule)
    assert entries.count() == 2 and set(entries.values_list("points", flat=True)) == {80}
    expected = sum(engine.decay(80, START, later, model.half_life_days) for _ in range(2))
    other = [e for e in ScoreEntry.objects.filter(model=model, contact=contact, kind="engagement")
             if e.engagement_rule_id != rule.pk]
    expected += sum(engine.decay(e.points, e.at, later, model.half_life_days) for e in other)
    assert now_value == pytest.approx(expected, rel=1e-6)
    assert engine.engagement_at(model, contact, later) == pytest.approx(expected, rel=1e-6)  # ledger agrees
    assert score.hot and LeadAlert.objects.count() == alerts  # flagged for sales, nobody paged
    assert before.engagement < score.engagement and old_points != 80


def test_engagement_pass_drops_points_of_a_deleted_rule(model):
    with time_machine.travel(START, tick=False):
        send([{"type": "identify", "anonymousId": "b", "traits": {"email": "d@example.co.jp"}},
              page("b", "/pricing")])
    contact = Contact.objects.get(email="d@example.co.jp")
    _pricing_rule(model).delete()
    with time_machine.travel(START + timedelta(hours=1), tick=False):
        rescoring.rescore_engagement(model)
        left = engine.current_of(model, ContactScore.objects.get(model=model, contact=contact))
    assert not ScoreEntry.objects.filter(model=model, contact=contact, rule_name="Pricing page viewed").exists()
    assert left == pytest.approx(sum(engine.decay(e.points, e.at, START + timedelta(hours=1), model.half_life_days)
                                     for e in ScoreEntry.objects.filter(model=model, contact=contact)))


def test_entries_older_than_the_horizon_are_kept(model):
    contact = Contact.objects.create(email="old@example.co.jp")
    long_ago = START - timedelta(days=model.half_life_days * (rescoring.HORIZON_HALF_LIVES + 2))
    ScoreEntry.objects.create(model=model, contact=contact, kind="engagement", at=long_ago, points=50,
                              rule_name="Webinar attended")
    ContactScore.objects.create(model=model, contact=contact, engagement=50, engagement_at=long_ago)
    with time_machine.travel(START, tick=False):
        rescoring.rescore_engagement(model)
        score = ContactScore.objects.get(model=model, contact=contact)
        assert engine.current_of(model, score) == pytest.approx(
            engine.decay(50, long_ago, START, model.half_life_days), rel=1e-6)
    assert ScoreEntry.objects.filter(contact=contact).count() == 1


def test_rule_edits_queue_one_job_and_the_page_shows_its_progress(client, make_user, model):
    for i in range(5):
        Contact.objects.create(email=f"p{i}@example.co.jp", industry="it")
    client.force_login(make_user("admin"))
    url = reverse("scoring:model", args=[model.pk])
    response = client.post(url, {"action": "fit", "field": "industry", "operator": "equals", "value": "it",
                                 "points": "30"}, follow=True)
    assert "re-scored in the background" in response.content.decode()
    client.post(url, {"action": "delete_engagement", "rule": _pricing_rule(model).pk})
    jobs = list(RescoreRun.objects.filter(model=model))
    assert len(jobs) == 1 and jobs[0].what == RescoreRun.What.ALL and jobs[0].status == "queued"
    page_html = client.get(url).content.decode()
    assert "data-progress-url" in page_html
    progress = client.get(reverse("scoring:rescore_progress", args=[model.pk])).json()
    assert progress["done"] is False and "Waiting" in progress["text"]

    job = rescoring.run(jobs[0].pk)
    assert job.status == "done" and job.done == job.total >= 5 and job.changed >= 5
    assert rescoring.run(jobs[0].pk) is None  # taken once only
    assert set(ContactScore.objects.filter(model=model).values_list("fit", flat=True)) == {50}  # 20 + 30
    progress = client.get(reverse("scoring:rescore_progress", args=[model.pk])).json()
    assert progress["done"] is True and "changed" in progress["text"]
    assert "data-rescore-result" in client.get(url).content.decode()

    client.post(url, {"action": "settings", "half_life_days": "10", "hot_threshold": model.hot_threshold,
                      "grade_a": model.grade_a, "grade_b": model.grade_b, "grade_c": model.grade_c,
                      "hot_min_grade": "C"})
    assert RescoreRun.objects.filter(model=model, status="queued").get().what == "engagement"
    response = client.post(reverse("scoring:rescore", args=[model.pk]), {"what": "everything"}, follow=True)
    assert "Choose what to re-score" in response.content.decode()


def test_a_failed_job_says_why_and_a_stalled_one_is_noticed(model, monkeypatch):
    job = rescoring.request(model, RescoreRun.What.FIT)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rescoring, "rescore_fit", broken)
    job = rescoring.run(job.pk)
    assert job.status == "failed" and "disk full" in job.error
    assert "disk full" in rescoring.progress(job)["text"]
    stuck = RescoreRun.objects.create(model=model, what="fit", status="running",
                                      started_at=START, heartbeat_at=START)
    with time_machine.travel(START + timedelta(minutes=11), tick=False):
        assert rescoring.stalled(stuck) and "worker" in rescoring.progress(stuck)["text"]


def test_viewers_cannot_rescore(client, make_user, model):
    client.force_login(make_user("viewer", username="v"))
    response = client.post(reverse("scoring:rescore", args=[model.pk]), {"what": "fit"})
    assert response.status_code == 403 and not RescoreRun.objects.exists()


def test_rules_are_edited_in_place_and_a_rule_of_another_model_is_refused(client, make_user, model):
    client.force_login(make_user("admin"))
    url = reverse("scoring:model", args=[model.pk])
    rule = FitRule.objects.get(model=model, field="industry")
    form = client.get(url, {"edit_fit": rule.pk}).content.decode()
    assert f'name="rule" value="{rule.pk}"' in form and "manufacturing, it" in form and "Save rule" in form
    client.post(url, {"action": "fit", "rule": rule.pk, "field": "industry", "operator": "in",
                      "value": "manufacturing", "points": "25"})
    rule.refresh_from_db()
    assert (rule.value, rule.points) == ("manufacturing", 25)
    assert FitRule.objects.filter(model=model).count() == 5  # edited, not added
    pricing = _pricing_rule(model)
    form = client.get(url, {"edit_engagement": pricing.pk}).content.decode()
    assert "/pricing" in form and 'name="max_times" size="3" value="3"' in form
    client.post(url, {"action": "engagement", "rule": pricing.pk, "name": "Pricing", "event": "page",
                      "conditions": '[{"field": "path", "op": "starts_with", "value": "/pricing"}]',
                      "points": "12", "max_times": "", "per_days": ""})
    pricing.refresh_from_db()
    assert (pricing.name, pricing.points, pricing.max_times, pricing.conditions[0]["op"]) == (
        "Pricing", 12, None, "starts_with")
    other = ScoringModel.objects.create(name="Other")
    foreign = FitRule.objects.create(model=other, field="region", operator="equals", value="kanto", points=1)
    response = client.post(url, {"action": "fit", "rule": foreign.pk, "field": "industry", "operator": "in",
                                 "value": "it", "points": "5"})
    assert "no longer exists" in response.content.decode()
    foreign.refresh_from_db()
    assert foreign.points == 1 and FitRule.objects.filter(model=model).count() == 5


def test_hot_flags_follow_grades_after_a_fit_pass(model):
    hot = Contact.objects.create(email="hot@example.co.jp", industry="manufacturing")
    warm = Contact.objects.create(email="warm@example.co.jp")
    with time_machine.travel(START, tick=False):
        for contact, flag in ((hot, True), (warm, False)):
            ContactScore.objects.create(model=model, contact=contact, fit=20, grade="C", engagement=150,
                                        engagement_at=START, hot=flag, hot_at=START if flag else None,
                                        rank_key=engine.rank_key(150, START, model.half_life_days))
        FitRule.objects.filter(model=model).delete()  # everyone falls to grade D
        rescoring.rescore_fit(model)
        assert not ContactScore.objects.filter(model=model, hot=True).exists()
        FitRule.objects.create(model=model, field="industry", operator="equals", value="manufacturing", points=40)
        rescoring.rescore_fit(model)  # grade A again: hot, without an alert
        assert list(ContactScore.objects.filter(model=model, hot=True).values_list("contact__email", flat=True)) == [
            "hot@example.co.jp"]
    assert not LeadAlert.objects.exists()
