"""Journeys: the source documents' scenarios end to end, with time travel and mail counted at a
real SMTP server — seminar follow-up, the pricing-page mail the next morning, feature-D
onboarding for new customers, the monthly mail to low-score leads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from kizuna.accounts.models import User
from kizuna.contacts.consent import set_consent
from kizuna.contacts.models import ConsentStatus, ContactList
from kizuna.contacts.services import update_contact
from kizuna.handoff.models import Delivery
from kizuna.journeys.models import Enrollment, StepRun
from kizuna.scoring import engine as scoring
from kizuna.scoring.models import ScoreEntry
from kizuna.scoring.setup import ensure_defaults
from kizuna.segments import membership
from kizuna.segments.models import Segment
from tests.journeyhelp import contact, journey, make_world, received, send_events, template, work
from tests.mailtest import SmtpServer

pytestmark = pytest.mark.django_db
# A Thursday, 00:00 UTC = 09:00 in Tokyo.
START = datetime(2026, 10, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
def server(db, settings):
    with SmtpServer() as smtp:
        settings.KIZUNA_EMAIL_URL = smtp.url
        yield smtp


@pytest.fixture
def world(db):
    return make_world()


def identify(aid: str, email: str) -> dict:
    return {"type": "identify", "anonymousId": aid, "traits": {"email": email}}


def track(aid: str, event: str, **properties) -> dict:
    return {"type": "track", "anonymousId": aid, "event": event, "properties": properties}


def page(aid: str, path: str) -> dict:
    return {"type": "page", "anonymousId": aid,
            "properties": {"url": f"https://www.example.co.jp{path}", "path": path, "title": path}}


def test_a_seminar_follow_up_day_0_3_7_later_mails_only_to_those_who_have_not_booked(server, world):
    thanks, case, invite = (template(world, n) for n in ("ご参加ありがとうございました", "導入事例",
                                                         "個別相談会のご案内"))
    attendees = ContactList.objects.create(name="DXセミナー 10/1 参加者")
    segment = membership.save_segment(Segment.objects.create(name="Seminar attendees"),
                                      {"field": "list", "op": "in", "value": attendees.pk})
    journey("Seminar follow-up", {
        "trigger": {"type": "segment", "segment": segment.pk, "on": "entered"},
        "start": "thanks",
        "nodes": [
            {"id": "thanks", "type": "send_email", "template": thanks.pk, "next": "d3"},
            {"id": "d3", "type": "wait", "duration": {"days": 3}, "next": "case"},
            {"id": "case", "type": "send_email", "template": case.pk, "next": "d7"},
            {"id": "d7", "type": "wait", "duration": {"days": 4}, "next": "invite"},
            {"id": "invite", "type": "send_email", "template": invite.pk},
        ]}, goal_filter={"event": "Meeting Booked"})
    people = {name: contact(world, f"{name}@example.co.jp") for name in ("early", "late", "never")}
    with time_machine.travel(START, tick=False):
        for c in people.values():
            attendees.memberships.create(contact=c)
        membership.recompute(segment)
        send_events([identify(f"aid-{n}", c.email) for n, c in people.items()])
        work()
        work()  # a second pass changes nothing
    assert received(server) == {(c.email, "ご参加ありがとうございました"): 1 for c in people.values()}
    with time_machine.travel(START + timedelta(days=2), tick=False):
        send_events([track("aid-early", "Meeting Booked")])
    early = Enrollment.objects.get(contact=people["early"])
    assert (early.state, early.reason) == ("done", "goal")  # ended when the event came, its wait cancelled
    with time_machine.travel(START + timedelta(days=3, minutes=1), tick=False):
        work()
    with time_machine.travel(START + timedelta(days=5), tick=False):
        send_events([track("aid-late", "Meeting Booked")])
    with time_machine.travel(START + timedelta(days=6, hours=23), tick=False):
        work()
    assert not any(subject == "個別相談会のご案内" for _r, subject in received(server))
    with time_machine.travel(START + timedelta(days=7, minutes=1), tick=False):
        work()
        work()
    mails = received(server)
    assert mails == {
        ("early@example.co.jp", "ご参加ありがとうございました"): 1,
        ("late@example.co.jp", "ご参加ありがとうございました"): 1, ("late@example.co.jp", "導入事例"): 1,
        ("never@example.co.jp", "ご参加ありがとうございました"): 1, ("never@example.co.jp", "導入事例"): 1,
        ("never@example.co.jp", "個別相談会のご案内"): 1,
    }
    never = Enrollment.objects.get(contact=people["never"])
    assert never.state == "done" and never.reason == "end of the journey"
    assert list(StepRun.objects.filter(enrollment=never).values_list("node", flat=True)) == [
        "thanks", "d3", "case", "d7", "invite"]


def test_b_pricing_page_visit_mail_next_morning_at_10_in_the_contacts_zone_once_in_30_days(server, world):
    pricing = template(world, "料金とお見積りのご案内")
    journey("Pricing follow-up", {
        "trigger": {"type": "event", "event": "page", "where": [{"field": "path", "op": "starts_with",
                                                                 "value": "/pricing"}]},
        "nodes": [
            {"id": "morning", "type": "wait", "time_of_day": "10:00", "days": 1, "next": "mail"},
            {"id": "mail", "type": "send_email", "template": pricing.pk},
        ]}, entry="every_time", reentry_days=30)
    tokyo = contact(world, "tokyo@example.co.jp", time_zone="Asia/Tokyo")
    ny = contact(world, "ny@example.com", time_zone="America/New_York")
    visit = START + timedelta(hours=6)  # 15:00 in Tokyo, 02:00 in New York (Thursday)
    with time_machine.travel(visit, tick=False):
        send_events([identify("t", tokyo.email), identify("n", ny.email), page("t", "/pricing"),
                     page("n", "/pricing?plan=pro"), page("t", "/products")])
        work()
    assert Enrollment.objects.count() == 2
    tokyo_10 = datetime(2026, 10, 2, 1, 0, tzinfo=UTC)  # Friday 10:00 JST
    ny_10 = datetime(2026, 10, 2, 14, 0, tzinfo=UTC)  # Friday 10:00 EDT
    with time_machine.travel(tokyo_10 - timedelta(minutes=1), tick=False):
        work()
    assert received(server) == {}
    with time_machine.travel(tokyo_10, tick=False):
        work()
    assert received(server) == {("tokyo@example.co.jp", "料金とお見積りのご案内"): 1}
    with time_machine.travel(ny_10 - timedelta(minutes=1), tick=False):
        work()
    assert len(received(server)) == 1
    with time_machine.travel(ny_10, tick=False):
        work()
    assert received(server)[("ny@example.com", "料金とお見積りのご案内")] == 1
    # Another visit within 30 days starts nothing; after 30 days it does.
    with time_machine.travel(START + timedelta(days=10), tick=False):
        send_events([page("t", "/pricing")])
        work()
    with time_machine.travel(START + timedelta(days=12), tick=False):
        work()
    assert received(server)[("tokyo@example.co.jp", "料金とお見積りのご案内")] == 1
    with time_machine.travel(START + timedelta(days=31), tick=False):
        send_events([page("t", "/pricing")])
    with time_machine.travel(START + timedelta(days=32, hours=2), tick=False):
        work()
    assert received(server)[("tokyo@example.co.jp", "料金とお見積りのご案内")] == 2
    assert list(Enrollment.objects.filter(contact=tokyo).order_by("run").values_list("run", "state")) == [
        (1, "done"), (2, "done")]


def test_c_new_customer_without_feature_d_in_14_days_gets_help_and_the_owner_is_alerted(server, world):
    help_mail = template(world, "機能Dの使い方")
    owner = User.objects.create(username="cs-sato", email="sato@kizuna.example", role="sales")
    customers = membership.save_segment(Segment.objects.create(name="Customers"),
                                        {"field": "lifecycle_stage", "op": "in", "value": ["customer"]})
    membership.recompute(customers)
    journey("Feature D onboarding", {
        "trigger": {"type": "segment", "segment": customers.pk},
        "nodes": [
            {"id": "d14", "type": "wait_event", "event": "Feature Used",
             "where": [{"field": "properties.feature", "op": "equals", "value": "D"}],
             "timeout": {"days": 14}, "then": "adopted", "else": "help"},
            {"id": "adopted", "type": "goal", "name": "used feature D"},
            {"id": "help", "type": "send_email", "template": help_mail.pk, "next": "alert"},
            {"id": "alert", "type": "alert_owner",
             "message": "機能Dが14日間使われていません。フォローをお願いします。"},
        ]})
    users = contact(world, "uses-d@example.co.jp", owner=owner)
    idle = contact(world, "idle@example.co.jp", owner=owner)
    with time_machine.travel(START, tick=False):
        send_events([identify("u", users.email), identify("i", idle.email)])
        for c in (users, idle):
            update_contact(None, c, {"lifecycle_stage": "customer"})
        work()
    assert Enrollment.objects.filter(state="waiting", waiting_for="Feature Used").count() == 2
    with time_machine.travel(START + timedelta(days=3), tick=False):
        send_events([track("u", "Feature Used", feature="C"), track("i", "Feature Used", feature="C"),
                     track("u", "Feature Used", feature="D")])
        work()
    used = Enrollment.objects.get(contact=users)
    assert used.state == "done" and used.goal_reached_at is not None  # left the journey at once
    assert Enrollment.objects.get(contact=idle).state == "waiting"
    with time_machine.travel(START + timedelta(days=14, minutes=1), tick=False):
        work()
        work()
    assert received(server) == {("idle@example.co.jp", "機能Dの使い方"): 1,
                                ("sato@kizuna.example", "[Kizuna] Journey Feature D onboarding: idle"): 1}
    alert = Delivery.objects.get(event="journey.alert")
    assert alert.status == "sent" and "機能D" in alert.payload["text"]
    assert list(StepRun.objects.filter(enrollment__contact=idle).values_list("node", "outcome"))[1] == (
        "d14", "timeout")


def test_d_monthly_mail_to_low_score_leads_stops_for_the_unsubscribed_and_the_hot(server, world):
    model = ensure_defaults()
    monthly = template(world, "今月のセミナーと事例")
    with time_machine.travel(START, tick=False):
        journey("Monthly revival", {
            "trigger": {"type": "schedule", "every": "month", "day": 1, "at": "10:00", "audience": {"all": [
                {"field": "lifecycle_stage", "op": "in", "value": ["lead"]},
                {"not": {"field": "score.engagement", "op": "gte", "value": 50, "model": model.pk}}]}},
            "nodes": [{"id": "mail", "type": "send_email", "template": monthly.pk}]},
            entry="every_time", exit_filter={"any": [
                {"field": "consent.news", "op": "in", "value": ["opted_out"]},
                {"field": "score.engagement", "op": "gte", "value": 50, "model": model.pk}]})
        cold, leaving, warming = (contact(world, f"{n}@example.co.jp") for n in ("cold", "leaving", "warming"))
        customer = contact(world, "customer@example.co.jp", lifecycle_stage="customer")
    nov_1 = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)  # 10:00 JST
    with time_machine.travel(nov_1 - timedelta(minutes=5), tick=False):
        work()
    assert received(server) == {}
    with time_machine.travel(nov_1 + timedelta(minutes=1), tick=False):
        work()
        work()
    assert received(server) == {(c.email, "今月のセミナーと事例"): 1 for c in (cold, leaving, warming)}
    assert not Enrollment.objects.filter(contact=customer).exists()
    with time_machine.travel(nov_1 + timedelta(days=10), tick=False):
        set_consent(leaving, world["topic"], ConsentStatus.OPTED_OUT, method="unsubscribe link")
        entry = ScoreEntry.objects.create(model=model, contact=warming, kind="engagement",
                                          at=nov_1 + timedelta(days=10), points=80, rule_name="Demo requested")
        scoring.apply_entries(model, [entry])
    with time_machine.travel(nov_1 + timedelta(days=30, minutes=1), tick=False):  # 1 December 10:01 JST
        work()
        work()
    mails = received(server)
    assert mails[("cold@example.co.jp", "今月のセミナーと事例")] == 2
    assert mails[("leaving@example.co.jp", "今月のセミナーと事例")] == 1
    assert mails[("warming@example.co.jp", "今月のセミナーと事例")] == 1
    assert Enrollment.objects.filter(contact=cold).count() == 2
    # The opted-out lead was enrolled (the audience does not read consent) and left before the step.
    assert Enrollment.objects.get(contact=leaving, run=2).reason == "exit condition"
