"""Lead scoring: rules, engagement through the event pipeline, caps, negative rules, decay and
its reconstruction, the one alert per turn to hot, and the pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from kizuna.contacts.models import Contact
from kizuna.events import ingest, processing
from kizuna.scoring import engine
from kizuna.scoring.models import ContactScore, EngagementRule, FitRule, LeadAlert, ScoreEntry, ScoringModel
from kizuna.scoring.rules import RuleError, check_engagement_rule, check_fit_rule
from kizuna.scoring.setup import ensure_defaults

pytestmark = pytest.mark.django_db
START = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo


@pytest.fixture
def model(db):
    return ensure_defaults()


def send(messages: list[dict]) -> None:
    result = ingest.ingest(messages, ingest.RequestInfo(ip="126.33.10.20", user_agent="Mozilla/5.0 Chrome/131"))
    assert not result.rejected, result.rejected
    processing.drain()


def page(aid: str, path: str, **extra) -> dict:
    return {"type": "page", "anonymousId": aid,
            "properties": {"url": f"https://www.example.co.jp{path}", "path": path, "title": path, **extra}}


def score_of(model, email: str, now: datetime | None = None) -> tuple[float, ContactScore]:
    contact = Contact.objects.get(email=email)
    score = ContactScore.objects.get(model=model, contact=contact)
    return engine.current_of(model, score, now), score


@pytest.mark.parametrize("args,path", [
    (("nonsense", "equals", "x", 5), "field"),
    (("industry", "resembles", "x", 5), "operator"),
    (("industry", "in", "", 5), "value"),
    (("company.employees", "gte", "many", 5), "value"),
    (("industry", "in", "it", "ten"), "points"),
    (("industry", "in", "it", 5000), "points"),
])
def test_invalid_fit_rules_name_the_part_at_fault(args, path):
    with pytest.raises(RuleError) as info:
        check_fit_rule(*args)
    assert info.value.path == path


@pytest.mark.parametrize("conditions,path", [
    ("not a list", "conditions"),
    ([{"field": "path", "op": "contains"}], "conditions[0].value"),
    ([{"field": "path", "op": "contains", "value": "/a"}, {"field": "cookie", "op": "equals", "value": "x"}],
     "conditions[1].field"),
    ([{"field": "url", "op": "matches", "value": "(unclosed"}], "conditions[0].value"),
    ([{"field": "properties.n", "op": "gte", "value": "lots"}], "conditions[0].value"),
    ([{"field": "path", "op": "near", "value": "/a"}], "conditions[0].op"),
])
def test_invalid_engagement_rules_name_the_part_at_fault(conditions, path):
    with pytest.raises(RuleError) as info:
        check_engagement_rule("page", conditions, 5)
    assert info.value.path == path


def test_a_period_needs_a_limit():
    with pytest.raises(RuleError) as info:
        check_engagement_rule("page", [], 5, None, 7)
    assert info.value.path == "per_days"


def test_example_1_interest_rises_step_by_step_and_alerts_once(model):
    """Mr A: anonymous visits from a search, a form, an email click, more visits → one alert."""
    ScoringModel.objects.filter(pk=model.pk).update(hot_threshold=60, hot_min_grade="C")
    model.refresh_from_db()
    aid = "browser-mr-a"
    observed = []
    with time_machine.travel(START, tick=False):
        send([page(aid, "/"), page(aid, "/products/erp"), page(aid, "/cases/maruyama-seiki")])
    with time_machine.travel(START + timedelta(minutes=10), tick=False):
        send([{"type": "identify", "anonymousId": aid, "traits": {
                  "email": "a@b-corp.co.jp", "lastName": "青木", "company": "B株式会社", "title": "製造部 部長"}},
              {"type": "track", "anonymousId": aid, "event": "Form Submitted", "properties": {"form": "資料請求"}}])
    contact = Contact.objects.get(email="a@b-corp.co.jp")
    Contact.objects.filter(pk=contact.pk).update(industry="manufacturing", company_size="300-999", region="kanto",
                                                 job_title="製造部 部長")
    value, score = score_of(model, "a@b-corp.co.jp", START + timedelta(minutes=10))
    observed.append((START + timedelta(minutes=10), value))
    assert 33 <= value < 60  # 3 pages (+1 each, the case study +5 more) and the form (+30), no alert yet
    assert not LeadAlert.objects.exists()
    with time_machine.travel(START + timedelta(days=3), tick=False):
        send([{"type": "track", "userId": "", "anonymousId": aid, "event": "Email Clicked",
               "properties": {"machine": True}, "context": {"traits": {"email": "a@b-corp.co.jp"}}}])
        machine_only, _ = score_of(model, "a@b-corp.co.jp")
        send([{"type": "track", "anonymousId": aid, "event": "Email Clicked", "properties": {"machine": False},
               "context": {"traits": {"email": "a@b-corp.co.jp"}}},
              page(aid, "/cases/maruyama-seiki")])
        value, _ = score_of(model, "a@b-corp.co.jp")
        observed.append((START + timedelta(days=3), value))
    assert value > machine_only  # the scanner's click gave nothing, the person's click and visit did
    assert not LeadAlert.objects.exists()
    with time_machine.travel(START + timedelta(days=4), tick=False):
        send([page(aid, "/pricing"), page(aid, "/pricing?plan=enterprise")])
        value, score = score_of(model, "a@b-corp.co.jp")
        observed.append((START + timedelta(days=4), value))
    assert value >= 60 and score.hot
    alerts = list(LeadAlert.objects.filter(contact=contact))
    assert len(alerts) == 1
    assert any("Pricing page viewed" in r for r in alerts[0].reasons)
    assert any("Form submitted" in r for r in alerts[0].reasons)
    with time_machine.travel(START + timedelta(days=4, hours=1), tick=False):
        send([page(aid, "/pricing"), page(aid, "/cases")])  # still hot: no second alert
    assert LeadAlert.objects.filter(contact=contact).count() == 1
    # The reconstructed history matches what was observed along the way.
    for moment, value in observed:
        assert engine.engagement_at(model, contact, moment) == pytest.approx(value, rel=1e-6)


def test_decay_halves_engagement_and_a_cooled_lead_can_alert_again(model):
    ScoringModel.objects.filter(pk=model.pk).update(hot_threshold=30, hot_min_grade="D", half_life_days=10)
    model.refresh_from_db()
    with time_machine.travel(START, tick=False):
        send([{"type": "identify", "anonymousId": "d", "traits": {"email": "decay@example.co.jp"}},
              {"type": "track", "anonymousId": "d", "event": "Form Submitted"}])
    contact = Contact.objects.get(email="decay@example.co.jp")
    score = ContactScore.objects.get(model=model, contact=contact)
    assert score.hot and LeadAlert.objects.filter(contact=contact).count() == 1
    assert engine.current_of(model, score, START + timedelta(days=10)) == pytest.approx(15, rel=1e-3)
    assert engine.current_of(model, score, START + timedelta(days=20)) == pytest.approx(7.5, rel=1e-3)
    with time_machine.travel(START + timedelta(days=20), tick=False):
        send([{"type": "track", "anonymousId": "d", "event": "Form Submitted"}])  # 7.5 + 30: hot again
    score.refresh_from_db()
    assert engine.current_of(model, score, START + timedelta(days=20)) == pytest.approx(37.5, rel=1e-3)
    assert LeadAlert.objects.filter(contact=contact).count() == 2
    points = engine.history(model, contact, days=30, points=31, now=START + timedelta(days=30))
    by_day = {round((t - START).total_seconds() / 86400): v for t, v in points}
    assert by_day[10] == pytest.approx(15, rel=1e-3)
    assert by_day[20] == pytest.approx(37.5, rel=1e-3)
    assert by_day[30] == pytest.approx(18.75, rel=1e-3)


def test_caps_per_period_and_negative_rules(model):
    with time_machine.travel(START, tick=False):
        send([{"type": "identify", "anonymousId": "c", "traits": {"email": "cap@example.co.jp"}}] +
             [page("c", "/pricing") for _ in range(5)])
    contact = Contact.objects.get(email="cap@example.co.jp")
    pricing = EngagementRule.objects.get(model=model, name="Pricing page viewed")
    assert ScoreEntry.objects.filter(contact=contact, engagement_rule=pricing).count() == 3  # at most 3 a week
    # For sales, the same reason is one line with its count; the contact's own panel keeps each entry.
    lines = [r for r in engine.reasons_for(model, contact.pk, now=START, grouped=True) if r["rule"] == pricing.name]
    assert len(lines) == 1 and lines[0]["times"] == 3 and lines[0]["points"] == 3 * pricing.points
    assert engine.reason_line(lines[0]) == f"{lines[0]['reason']} ×3"
    assert len([r for r in engine.reasons_for(model, contact.pk, now=START) if r["rule"] == pricing.name]) == 3
    with time_machine.travel(START + timedelta(days=8), tick=False):
        send([page("c", "/pricing")])  # a new week
        before, _ = score_of(model, "cap@example.co.jp")
        send([page("c", "/careers/engineers")])
        after, _ = score_of(model, "cap@example.co.jp")
    assert ScoreEntry.objects.filter(contact=contact, engagement_rule=pricing).count() == 4
    assert after == pytest.approx(before - 20 + 1)  # careers −20, any page +1


def test_fit_and_grade(model):
    contact = Contact.objects.create(email="boss@maker.co.jp", industry="manufacturing", job_title="生産本部 本部長",
                                     company_size="1000-4999", region="kanto")
    fit, reasons = engine.fit_of(model, contact)
    assert fit == 50 and model.grade(fit) == "A" and len(reasons) == 4
    free = Contact.objects.create(email="someone@gmail.com", industry="finance")
    assert engine.fit_of(model, free)[0] == -10 and model.grade(-10) == "D"


def test_rescore_fit_for_every_contact(model):
    for i in range(30):
        Contact.objects.create(email=f"r{i}@example.co.jp", industry="manufacturing" if i % 2 else "finance")
    FitRule.objects.filter(model=model).delete()
    FitRule.objects.create(model=model, field="industry", operator="equals", value="manufacturing", points=40)
    from kizuna.scoring.rescoring import rescore_fit

    assert rescore_fit(model) == 30
    grades = dict(ContactScore.objects.filter(model=model).values_list("contact__email", "grade"))
    assert grades["r1@example.co.jp"] == "A" and grades["r2@example.co.jp"] == "D"
    assert ContactScore.objects.filter(model=model).count() == 30


def test_pages(client, make_user, model):
    with time_machine.travel(START, tick=False):
        send([{"type": "identify", "anonymousId": "p", "traits": {"email": "page@example.co.jp",
                                                                   "lastName": "<script>alert(1)</script>"}},
              {"type": "track", "anonymousId": "p", "event": "Form Submitted"}, page("p", "/pricing")])
    contact = Contact.objects.get(email="page@example.co.jp")
    client.force_login(make_user("admin"))
    detail = client.get(reverse("contacts:detail", args=[contact.pk])).content.decode()
    assert "data-score-panel" in detail and "Form submitted" in detail and "<polyline" in detail
    hot = client.get(reverse("scoring:hot_leads"), {"band": "warm"}).content.decode()
    assert "<script>alert(1)</script>" not in hot
    settings_page = client.get(reverse("scoring:model", args=[model.pk]), {"try": contact.pk}).content.decode()
    assert "Pricing page viewed" in settings_page
    response = client.post(reverse("scoring:model", args=[model.pk]), {
        "action": "engagement", "event": "page", "points": "5",
        "conditions": '[{"field": "path", "op": "matches", "value": "(bad"}]'})
    assert "conditions[0].value" in response.content.decode()
    response = client.post(reverse("scoring:model", args=[model.pk]), {
        "action": "fit", "field": "industry", "operator": "in", "value": "it", "points": "7"})
    assert response.status_code == 302 and FitRule.objects.filter(model=model, points=7).exists()
    viewer = make_user("viewer")
    client.force_login(viewer)
    assert client.get(reverse("scoring:model", args=[model.pk])).status_code == 403
    assert client.get(reverse("scoring:hot_leads")).status_code == 200
