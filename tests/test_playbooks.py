"""Playbooks: every bundle installs on an empty database and again without duplicates; a changed
bundle says what it updated; faults are named with their place; the page and the CLI work."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from kizuna.capture.models import Form
from kizuna.contacts.models import ContactList
from kizuna.journeys.models import Journey, JourneyVersion
from kizuna.lifecycle.models import StageRule
from kizuna.messaging.models import EmailTemplate, TemplateVersion
from kizuna.playbooks import services
from kizuna.scoring.models import EngagementRule, ScoringModel
from kizuna.segments.models import Segment

BUNDLES = [b.key for b in services.available()]
MODELS = [ScoringModel, EngagementRule, StageRule, ContactList, EmailTemplate, TemplateVersion, Segment, Journey,
          JourneyVersion, Form]


def counts() -> dict[str, int]:
    from kizuna.assets.models import Asset

    return {m.__name__: m.objects.count() for m in [*MODELS, Asset]}


def test_the_catalogue_covers_the_stories():
    assert set(BUNDLES) == {"whitepaper-nurture", "customer-onboarding", "seminar-followup", "monthly-reengagement",
                            "pricing-next-morning", "low-score-stop", "upsell-crosssell"}
    for bundle in services.available():
        assert bundle.text("title", "ja") and bundle.text("title", "en") != bundle.text("title", "ja")
        assert bundle.contents()


@pytest.mark.django_db
@pytest.mark.parametrize("key", BUNDLES)
def test_installs_on_an_empty_database_then_again_without_duplicates(key):
    first = services.install(key)
    assert first.count("created") > 0 and first.count("updated") == 0
    after_first = counts()
    second = services.install(key)
    assert second.count("created") == 0 and second.count("updated") == 0
    assert counts() == after_first
    bundle = services.get(key)
    assert services.status(bundle) == "installed"
    for raw in bundle.data.get("journeys", []):
        journey = Journey.objects.get(name=raw["name"])
        assert journey.status == (Journey.Status.LIVE if raw.get("live") else Journey.Status.DRAFT)


@pytest.mark.django_db
def test_all_together_twice_and_mails_in_both_languages():
    services.install_all()
    once = counts()
    services.install_all()
    assert counts() == once
    for template in EmailTemplate.objects.exclude(kind="transactional").select_related("current"):
        assert '{% if contact.language == "en" %}' in template.current.html, template.name
        assert "$SITE" not in template.current.html


@pytest.mark.django_db
def test_a_changed_bundle_updates_what_differs_and_keeps_what_someone_paused():
    services.install("pricing-next-morning")
    journey = Journey.objects.get(name="料金ページ閲覧の翌朝メール / Pricing page next morning")
    from kizuna.journeys import engine

    engine.set_status(journey, Journey.Status.PAUSED)
    bundle = services.get("pricing-next-morning")
    bundle.data["templates"][0]["subject"]["en"] = "A new subject"
    bundle.data["journeys"][0]["nodes"][0]["time_of_day"] = "08:30"
    result = services.install(bundle)
    actions = {(s.kind, s.action) for s in result.steps}
    assert actions == {("email", "updated"), ("journey", "updated")}
    template = EmailTemplate.objects.get(name="料金ページ翌朝 / Pricing next morning")
    assert template.versions.count() == 2 and "A new subject" in template.current.subject
    journey.refresh_from_db()
    assert journey.status == Journey.Status.PAUSED and journey.versions.count() == 2


@pytest.mark.django_db
def test_faults_are_named_with_their_place_and_nothing_is_written():
    before = counts()
    bundle = services.get("whitepaper-nurture")
    bundle.data["journeys"][0]["nodes"][1]["template"] = "No such mail"
    with pytest.raises(services.PlaybookError) as caught:
        services.install(bundle)
    assert any(p == "journeys[0].nodes[1].template" and "No such mail" in m for p, m in caught.value.errors)
    assert counts() == before
    with pytest.raises(services.PlaybookError, match="en"):
        services.parse("name: x\ntemplates:\n  - {name: a, subject: {ja: 件名}, html: {ja: 本文, en: body}}\n")
        services.install(services.parse(
            "name: x\ntemplates:\n  - {name: a, subject: {ja: 件名}, html: {ja: 本文, en: body}}\n"))
    with pytest.raises(services.PlaybookError, match="is not allowed here"):
        services.parse("name: x\nwebhooks: []\n")
    with pytest.raises(services.PlaybookError, match="no playbook named"):
        services.get("../settings")


@pytest.mark.django_db
def test_command_lists_and_installs(capsys):
    call_command("playbooks", "install", "low-score-stop")
    call_command("playbooks", "install", "--all", "-q")
    call_command("playbooks", "list")
    out = capsys.readouterr().out
    assert "low-score-stop: 0 created, 0 updated" in out and "[installed]" in out
    with pytest.raises(CommandError, match="no playbook named"):
        call_command("playbooks", "install", "nothing")
    with pytest.raises(CommandError, match="--all"):
        call_command("playbooks", "install")


@pytest.mark.django_db
def test_page_lists_and_installs(client, make_user):
    client.force_login(make_user("viewer", username="v"))
    page = client.get("/playbooks/")
    assert page.status_code == 200 and "whitepaper-nurture" in page.content.decode()
    assert 'data-install="' not in page.content.decode()  # viewers see, marketers install
    assert client.post("/playbooks/whitepaper-nurture/install").status_code == 403
    client.force_login(make_user("marketer", username="m"))
    response = client.post("/playbooks/whitepaper-nurture/install", follow=True)
    assert response.status_code == 200
    assert Journey.objects.filter(name="資料請求後のナーチャリング / White paper nurturing").exists()
    assert 'data-state="installed"' in response.content.decode()
    assert client.post("/playbooks/nothing/install").status_code == 404


@pytest.mark.django_db
def test_demo_site_serves_tracked_pages(client):
    page = client.get("/demo-site/pricing/", HTTP_HOST="127.0.0.1:8000")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/kz.js?k=" in html and "料金プラン" in html
    assert client.get("/demo-site/../admin", HTTP_HOST="127.0.0.1:8000").status_code == 404
    assert client.get("/demo-site/nothing/", HTTP_HOST="127.0.0.1:8000").status_code == 404
