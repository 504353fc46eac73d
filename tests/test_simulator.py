"""The simulator, for a fixed seed: example 1 of MISSION.md happens for a simulated person through
the real pipeline — anonymous visits, the form, the PDF mail, step mails, clicks, the score over
the threshold and exactly one alert to sales."""

from __future__ import annotations

import pytest

from kizuna.assets.models import Download
from kizuna.capture.models import Submission
from kizuna.contacts.models import Contact
from kizuna.events.models import Event
from kizuna.handoff.models import Delivery, Handoff
from kizuna.journeys.models import Enrollment, Journey
from kizuna.messaging.models import CapturedMail, Message
from kizuna.playbooks.simulator import Simulation, prepare_demo
from kizuna.scoring.models import ContactScore, LeadAlert, ScoringModel

pytestmark = pytest.mark.django_db(transaction=True)

NURTURE = "資料請求後のナーチャリング / White paper nurturing"


def test_example_one_happens_for_a_simulated_prospect():
    summary = Simulation(seed=11, visitors=4, days=8, keen=1).run(prepare=prepare_demo)
    keen = next(p for p in summary.personas if p.kind == "keen")
    contact = Contact.objects.get(email=keen.email)

    # Anonymous visits from a search, before anyone knew who it was; joined to the person by the form.
    submission = Submission.objects.get(form__slug="ma-guide", email=keen.email)
    assert submission.anonymous_id == keen.aid
    form_event = Event.objects.get(contact=contact, name="Form Submitted")
    before = Event.objects.filter(contact=contact, type="page", occurred_at__lt=form_event.occurred_at)
    assert before.count() >= 4
    first = before.order_by("occurred_at").first()
    assert "google.co.jp/search" in first.referrer
    assert Event.objects.filter(contact=contact, name="Page Engaged").exists()  # dwell times

    # The PDF arrives automatically: a transactional mail, captured, and the PDF downloaded.
    delivery_mail = Message.objects.get(contact=contact, kind="transactional")
    assert delivery_mail.status == "sent" and CapturedMail.objects.filter(message=delivery_mail).exists()
    assert Download.objects.filter(contact=contact, asset__slug="ma-guide", machine=False).exists()

    # Nurturing step mails from the live journey, days later, opened and clicked.
    journey = Journey.objects.get(name=NURTURE)
    assert Enrollment.objects.filter(journey=journey, contact=contact).count() == 1
    steps = list(Message.objects.filter(contact=contact, extra__journey=journey.pk).order_by("sent_at")
                 .select_related("version__template"))
    names = [m.version.template.name for m in steps]
    assert names[:2] == ["ナーチャリング1 導入事例 / Nurture 1 case study",
                         "ナーチャリング2 最新トレンド / Nurture 2 latest trends"], names
    assert (steps[0].sent_at - form_event.occurred_at).days >= 1
    assert all(m.status == "sent" for m in steps)
    assert any(m.clicked_at for m in steps)
    assert Event.objects.filter(contact=contact, name="Email Clicked").exists()

    # The score crossed the threshold; sales was alerted exactly once, with the reasons.
    model = ScoringModel.objects.get(name="Default")
    score = ContactScore.objects.get(model=model, contact=contact)
    assert score.hot and score.engagement >= model.hot_threshold
    alerts = LeadAlert.objects.filter(contact=contact)
    assert alerts.count() == 1
    alert = alerts.get()
    assert alert.reasons and alert.created_at > form_event.occurred_at
    assert Handoff.objects.get(alert=alert).owner is not None
    assert Delivery.objects.filter(alert=alert, email__gt="").count() == 1


def test_the_same_seed_casts_the_same_people():
    def cast(seed):
        simulation = Simulation(seed=seed, visitors=12, days=3)
        simulation.cast()
        return [(p.kind, p.email, p.aid, p.ip) for p in simulation.summary.personas]

    assert cast(5) == cast(5)
    assert cast(5) != cast(6)


def test_live_visitors_arrive_at_real_time_and_stop_when_told():
    import threading

    from kizuna.events.models import IncomingEvent

    prepare_demo()
    stop = threading.Event()
    timer = threading.Timer(8, stop.set)
    timer.start()
    try:
        Simulation(seed=3, visitors=3, days=1).run_live(speed=100_000, stop=stop, log=lambda _line: None)
    finally:
        timer.cancel()
    # No worker here: the tracker's batches wait in the inbox, stamped with the real time.
    assert IncomingEvent.objects.filter(payload__contains="/demo-site/").exists()
