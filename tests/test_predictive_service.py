"""The predictive score from the database: contacts, events, the score ledger and the audit log
make the examples; a planted signal is found and scored, pure noise is judged not useful (even
with activity that only comes after the stage, bots and proxy opens laid as traps), too little
data is refused with the reason, and the page, the command and the schedule work."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import AuditLog
from kizuna.contacts.models import Company, Contact
from kizuna.contacts.reference import normalise_company_size, normalise_industry, normalise_prefecture
from kizuna.events.bulk import insert_rows
from kizuna.events.models import Event, Session
from kizuna.scoring import engine
from kizuna.scoring import predictive_service as service
from kizuna.scoring.models import ContactScore, PredictiveModel, ScoreEntry, ScoringModel
from kizuna.scoring.predictive import make_synthetic
from kizuna.scoring.setup import ensure_defaults

pytestmark = pytest.mark.django_db
IMMEDIATE_TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]}}
PLANTED = {"pricing_views (log)", "email_clicks_human (log)", "seniority = executive", "industry = manufacturing"}
LOWER = ["subscriber", "lead", "mql", "sql", "opportunity"]


@pytest.fixture
def model(db) -> ScoringModel:
    return ensure_defaults()


def _event(contact_id: int, n: int, at: datetime, kind: str, **extra) -> Event:
    fields = {"type": "page", "name": "", "path": "/products/erp", "properties": {}}
    if kind == "pricing":
        fields["path"] = "/pricing"
    elif kind == "support":
        fields["path"] = "/support/faq"
    elif kind in ("Form Submitted", "Email Opened", "Email Clicked"):
        fields = {"type": "track", "name": kind, "path": "", "properties": {"machine": extra.pop("machine", False)}}
    return Event(message_id=f"m-{contact_id}-{n}", contact_id=contact_id, occurred_at=at, received_at=at,
                 processed_at=at, **fields, **extra)


def make_database(n: int, *, signal: bool, seed: int, model: ScoringModel, traps: bool = False) -> datetime:
    """Contacts from predictive.make_synthetic with their behaviour laid down as events, sessions
    and ledger entries before their cut-off; the ones that reached the stage got there (by the
    audit log) after it. With `traps`, contacts at the stage also have lots of activity after
    getting there, bot page views and machine email clicks: none of it may count."""
    now = timezone.now()
    rng = random.Random(seed)
    examples = make_synthetic(n, signal=signal, seed=seed)
    company = Company.objects.create(name="見込み株式会社", domain="mikomi.example.co.jp")
    contacts = []
    for i, e in enumerate(examples):
        p = e.profile
        contacts.append(Contact(
            email=f"lead{i}@{'gmail.com' if i % 7 == 0 else 'mikomi.example.co.jp'}", company=company,
            job_title=p["job_title"] or "", industry=normalise_industry(p["industry"] or "") or "",
            prefecture=normalise_prefecture(p["prefecture"]) or "",
            company_size=normalise_company_size(p["company_size"]) or "",
            lifecycle_stage=rng.choice(["customer", "customer", "evangelist"]) if e.label else rng.choice(LOWER),
            created_at=now - timedelta(days=400)))
    Contact.objects.bulk_create(contacts)
    events, sessions, ledger, audit = [], [], [], []
    # Tracking began long ago: every cut-off's window is covered.
    events.append(Event(message_id="first", type="page", path="/", occurred_at=now - timedelta(days=500),
                        received_at=now, processed_at=now))
    for contact, e in zip(contacts, examples, strict=True):
        cutoff = now - timedelta(days=rng.uniform(5, 200)) if e.label else now
        if e.label:
            audit.append(AuditLog(at=cutoff, action="update", object_type="contacts.contact",
                                  object_id=str(contact.pk), changes={"lifecycle_stage": ["opportunity", "customer"]}))
        b = e.behaviour

        def when() -> datetime:
            return cutoff - timedelta(days=rng.uniform(0.01, 80))  # noqa: B023 - used inside the loop only

        kinds = (["pricing"] * int(b["pricing_views"]) + ["page"] * int(b["page_views"] - b["pricing_views"])
                 + ["Form Submitted"] * int(b["form_submits"]) + ["Email Opened"] * int(b["email_opens_human"])
                 + ["Email Clicked"] * int(b["email_clicks_human"]))
        extra: list[tuple[str, datetime, dict]] = [(k, when(), {}) for k in kinds]
        if traps and e.label:
            extra += [("support", cutoff + timedelta(days=rng.uniform(0.01, 4)), {}) for _ in range(12)]
            extra += [("pricing", when(), {"bot": "crawler"}) for _ in range(4)]
            extra += [("Email Clicked", when(), {"machine": True}) for _ in range(4)]
        for number, (kind, at, more) in enumerate(extra):
            event = _event(contact.pk, number, at, kind, **more)
            events.append(event)
            if kind in ("pricing", "Form Submitted") and not more:
                ledger.append(ScoreEntry(model=model, contact=contact, kind="engagement", at=at,
                                         points=10 if kind == "pricing" else 30, rule_name=kind))
        for _ in range(int(b["sessions"])):
            start = when()
            sessions.append(Session(anonymous_id=f"a{contact.pk}", contact=contact, started_at=start,
                                    last_activity_at=start))
    for rows in (events, sessions, ledger):
        insert_rows(type(rows[0]), rows)
    AuditLog.objects.bulk_create(audit, batch_size=5000)
    return now


def predictive_for(model: ScoringModel, **settings) -> PredictiveModel:
    pm = service.settings_for(model)
    service.update_settings(pm, **{"target_stage": "customer", "retrain_days": 0, "window_days": 90, **settings})
    return pm


def test_a_planted_signal_is_found_judged_useful_and_scored(model, client, users, capsys):
    make_database(1000, signal=True, seed=1, model=model)
    predictive_for(model)
    call_command("train_predictive", "--model", str(model.pk), "--strict")
    out = capsys.readouterr().out
    pm = PredictiveModel.objects.get(model=model)
    print(f"signal: holdout AUC {pm.auc:.3f}, cv {pm.cv_auc_mean:.3f} ± {pm.cv_auc_std:.3f}")
    assert pm.status == "trained" and pm.useful and pm.verdict in ("strong", "moderate")
    assert pm.auc >= 0.8
    assert f"holdout AUC {pm.auc:.3f}" in out and "useful" in out
    assert pm.n_examples == 1000 and pm.n_left_out == 0
    top = {f["name"] for f in pm.factors[:6]}
    assert len(PLANTED & top) >= 3, pm.factors
    assert not {f["name"] for f in pm.factors} & {"lifecycle_stage", "stage"}

    # The third score: written for every contact before the stage, none for those already there.
    below = Contact.objects.filter(lifecycle_stage__in=LOWER)
    scores = ContactScore.objects.filter(model=model)
    assert scores.filter(predicted__isnull=False).count() == below.count() == pm.n_scored
    assert not scores.filter(predicted__isnull=False, contact__lifecycle_stage__in=["customer", "evangelist"]).exists()
    assert all(0 <= p <= 1 for p in scores.values_list("predicted", flat=True) if p is not None)
    with_pricing = set(Event.objects.filter(path="/pricing").values_list("contact_id", flat=True))
    chances = dict(scores.filter(predicted__isnull=False).values_list("contact_id", "predicted"))
    mean = lambda ids: sum(chances[i] for i in ids) / len(ids)  # noqa: E731
    assert mean([i for i in chances if i in with_pricing]) > 1.5 * mean([i for i in chances if i not in with_pricing])
    inserted = scores.filter(predicted__isnull=False).first()
    assert inserted.grade == model.grade(inserted.fit)  # rows created for the score carry a real fit

    client.force_login(users["marketer"])
    page = client.get(reverse("scoring:predictive", args=[model.pk])).content.decode()
    assert 'data-useful="yes"' in page and f"{pm.auc:.2f}" in page
    assert "Pricing page views" in page and "raises the chance" in page
    assert "1000 contacts" in page
    detail = client.get(reverse("scoring:model", args=[model.pk])).content.decode()
    assert reverse("scoring:predictive", args=[model.pk]) in detail  # reachable from the scoring model page
    contact = max(chances, key=chances.get)
    hot, at = model.hot_threshold * 2, timezone.now()
    ContactScore.objects.filter(model=model, contact_id=contact).update(
        hot=True, engagement=hot, engagement_at=at, rank_key=engine.rank_key(hot, at, model.half_life_days))
    leads = client.get(reverse("scoring:hot_leads") + f"?model={model.pk}").content.decode()
    assert "Predicted" in leads and f"{round(100 * chances[contact])} %" in leads
    panel = client.get(reverse("contacts:detail", args=[contact])).content.decode()
    assert f"<strong>{round(100 * chances[contact])} %</strong> chance to reach Customer" in panel
    customer = Contact.objects.filter(lifecycle_stage="customer").first()
    assert "already at Customer" in client.get(reverse("contacts:detail", args=[customer.pk])).content.decode()


def test_noise_is_not_useful_even_with_activity_after_the_stage(model, client, users):
    make_database(1000, signal=False, seed=2, model=model, traps=True)
    pm = service.train(predictive_for(model))
    print(f"noise: holdout AUC {pm.auc:.3f}, cv {pm.cv_auc_mean:.3f} ± {pm.cv_auc_std:.3f}")
    assert pm.status == "trained"
    assert 0.35 <= pm.auc <= 0.65
    assert not pm.useful and pm.verdict in ("chance", "weak", "unstable")
    assert not ContactScore.objects.filter(model=model, predicted__isnull=False).exists()
    # What came after the stage, bots and scanners would each add 4–12 to the positives' counts.
    examples = service.build_examples(model, "customer").examples

    def gap(name: str) -> float:
        values = {label: [e.behaviour[name] for e in examples if e.label == label] for label in (True, False)}
        return sum(values[True]) / len(values[True]) - sum(values[False]) / len(values[False])

    assert abs(gap("page_views")) < 6 and abs(gap("pricing_views")) < 1.5 and abs(gap("email_clicks_human")) < 1.5
    client.force_login(users["admin"])
    page = client.get(reverse("scoring:predictive", args=[model.pk])).content.decode()
    assert 'data-useful="no"' in page and "not useful" in page and "its score is not used" in page
    assert "its factors are most likely noise" in page
    leads = client.get(reverse("scoring:hot_leads") + f"?model={model.pk}").content.decode()
    assert "Predicted" not in leads


def test_too_little_data_is_refused_with_the_reason(model, client, users, capsys):
    make_database(60, signal=True, seed=3, model=model)
    predictive_for(model)
    call_command("train_predictive")  # not strict: a refusal is an answer, not an error
    out = capsys.readouterr().out
    assert "refused" in out and "Not enough data to train: 60 contacts" in out and "At least 200" in out
    with pytest.raises(CommandError, match="not enough data"):
        call_command("train_predictive", "--strict")
    pm = PredictiveModel.objects.get(model=model)
    assert pm.status == "refused" and pm.trained_model is None and pm.auc is None
    assert pm.detail["n_positive"] + pm.detail["n_negative"] == 60
    client.force_login(users["marketer"])
    page = client.get(reverse("scoring:predictive", args=[model.pk])).content.decode()
    assert "data-refusal" in page and "Not enough data to train: 60 contacts" in page
    assert "data-useful" not in page


def test_contacts_at_the_stage_without_a_date_are_left_out(model):
    now = timezone.now()
    imported = Contact.objects.create(email="imported@example.co.jp", lifecycle_stage="customer")
    born = Contact.objects.create(email="born@example.co.jp", lifecycle_stage="customer")
    AuditLog.objects.create(at=now - timedelta(days=30), action="create", object_type="contacts.contact",
                            object_id=str(born.pk), changes={"lifecycle_stage": [None, "customer"]})
    early = Contact.objects.create(email="early@example.co.jp", lifecycle_stage="customer")
    AuditLog.objects.create(at=now - timedelta(days=20), action="update", object_type="contacts.contact",
                            object_id=str(early.pk), changes={"lifecycle_stage": ["sql", "customer"]})
    Contact.objects.create(email="lead@example.co.jp", lifecycle_stage="lead")
    Event.objects.create(message_id="x", type="page", path="/", occurred_at=now - timedelta(days=50),
                         received_at=now, processed_at=now)
    data = service.build_examples(model, "customer", now=now)
    assert (data.n_undated, data.n_untracked) == (2, 1)  # early: its window starts before tracking did
    assert [e.label for e in data.examples] == [False]
    assert imported.pk not in service.reached([imported.pk, born.pk, early.pk], "customer")


def test_the_profile_is_taken_as_it_was_when_the_stage_was_reached(model):
    now = timezone.now()
    Event.objects.create(message_id="x", type="page", path="/", occurred_at=now - timedelta(days=400),
                         received_at=now, processed_at=now)
    company = Company.objects.create(name="後で埋めた株式会社", domain="later.example.co.jp", employees=5000,
                                     company_size="5000+")
    contact = Contact.objects.create(email="won@later.example.co.jp", company=company, lifecycle_stage="customer",
                                     job_title="代表取締役", industry="manufacturing")
    reached_at = now - timedelta(days=10)
    AuditLog.objects.bulk_create([
        AuditLog(at=reached_at, action="update", object_type="contacts.contact", object_id=str(contact.pk),
                 changes={"lifecycle_stage": ["opportunity", "customer"], "job_title": ["担当", "代表取締役"]}),
        AuditLog(at=now - timedelta(days=5), action="update", object_type="contacts.contact",
                 object_id=str(contact.pk), changes={"industry": ["", "manufacturing"]}),
        AuditLog(at=now - timedelta(days=4), action="update", object_type="contacts.company",
                 object_id=str(company.pk), changes={"employees": [None, 5000], "company_size": ["", "5000+"]}),
        AuditLog(at=now - timedelta(days=40), action="update", object_type="contacts.company",
                 object_id=str(company.pk), changes={"industry": ["", "it"]}),
    ])
    Event.objects.bulk_create([
        _event(contact.pk, 1, reached_at - timedelta(days=3), "pricing"),
        _event(contact.pk, 2, reached_at + timedelta(days=1), "pricing"),  # after: not counted
        _event(contact.pk, 3, reached_at - timedelta(days=1), "Email Clicked", machine=True),  # a scanner
        _event(contact.pk, 4, reached_at - timedelta(days=2), "Email Clicked"),
        _event(contact.pk, 5, reached_at - timedelta(days=2), "page", bot="crawler"),
    ])
    pricing = model.engagement_rules.get(name="Pricing page viewed")
    staged = model.engagement_rules.create(name="Stage reached", event=service.STAGE_EVENT, points=50)
    ScoreEntry.objects.bulk_create([
        ScoreEntry(model=model, contact=contact, kind="engagement", at=reached_at - timedelta(days=3), points=10,
                   engagement_rule=pricing, rule_name=pricing.name),
        ScoreEntry(model=model, contact=contact, kind="engagement", at=reached_at - timedelta(days=1), points=50,
                   engagement_rule=staged, rule_name=staged.name),  # the stage in disguise: not counted
        ScoreEntry(model=model, contact=contact, kind="engagement", at=reached_at + timedelta(days=1), points=10,
                   engagement_rule=pricing, rule_name=pricing.name),  # after: not counted
    ])
    [example] = service.build_examples(model, "customer", now=now).examples
    assert example.label
    assert example.profile["job_title"] == "担当" and example.profile["industry"] is None
    assert example.profile["company_size"] is None and example.profile["employees"] is None
    assert "lifecycle_stage" not in example.profile
    b = example.behaviour
    assert (b["page_views"], b["pricing_views"], b["email_clicks_human"]) == (1, 1, 1)
    assert b["days_since_last_activity"] == pytest.approx(2, abs=0.01)
    assert b["engagement"] == pytest.approx(10 * 0.5 ** (3 / model.half_life_days))


def test_fit_rules_on_the_stage_do_not_reach_the_model(model):
    now = timezone.now()
    model.fit_rules.create(field="lifecycle_stage", operator="equals", value="customer", points=50, position=99)
    Contact.objects.create(email="lead@example.co.jp", lifecycle_stage="lead", industry="manufacturing")
    Contact.objects.create(email="cust@example.co.jp", lifecycle_stage="customer", industry="manufacturing")
    fits = {e.label: e.profile["fit"] for e in service.build_examples(model, "mql", now=now).examples}
    assert fits == {False: 20}  # the customer has no dated history; the lead's fit ignores the stage rule


def test_the_page_needs_scoring_manage(model, client, users):
    url = reverse("scoring:predictive", args=[model.pk])
    for role, status in (("viewer", 403), ("sales", 403), ("marketer", 200), ("admin", 200)):
        client.force_login(users[role])
        assert client.get(url).status_code == status, role
        if status == 403:
            assert client.post(url, {"action": "train"}).status_code == 403, role
            assert client.get(reverse("scoring:predictive_progress", args=[model.pk])).status_code == 403
    assert not PredictiveModel.objects.exists()
    assert client.post(url, {"action": "train"}).status_code == 302
    assert PredictiveModel.objects.get(model=model).status == "queued"
    client.logout()
    assert client.get(url).status_code == 302


def test_train_button_runs_in_the_background_once(model, client, users, settings,
                                                   django_capture_on_commit_callbacks):
    settings.TASKS = IMMEDIATE_TASKS
    make_database(40, signal=False, seed=4, model=model)
    client.force_login(users["marketer"])
    url = reverse("scoring:predictive", args=[model.pk])
    assert not PredictiveModel.objects.exists()  # looking does not create (or schedule) anything
    client.post(url, {"action": "settings", "target_stage": "sql", "retrain_days": "3", "window_days": "60"})
    pm = PredictiveModel.objects.get(model=model)
    assert (pm.target_stage, pm.retrain_days, pm.window_days, pm.status) == ("sql", 3, 60, "new")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"action": "train"})
    assert response.status_code == 302
    pm.refresh_from_db()
    assert pm.status == "refused" and pm.detail["stage"] == "sql"
    assert client.get(reverse("scoring:predictive_progress", args=[model.pk])).json()["done"] is True
    PredictiveModel.objects.filter(pk=pm.pk).update(status="queued", queued_at=timezone.now())
    page = client.post(url, {"action": "train"}).content.decode()
    assert "already waiting or running" in page
    progress = client.get(reverse("scoring:predictive_progress", args=[model.pk])).json()
    assert progress["done"] is False and "waiting for a worker" in progress["text"]
    bad = client.post(url, {"action": "settings", "target_stage": "other", "retrain_days": "3", "window_days": "60"})
    assert "The target stage must be one of: Lead," in bad.content.decode()


def test_a_new_target_stage_discards_the_old_model_and_its_scores(model):
    pm = predictive_for(model)
    contact = Contact.objects.create(email="a@example.co.jp", lifecycle_stage="lead")
    ContactScore.objects.create(model=model, contact=contact, predicted=0.4)
    PredictiveModel.objects.filter(pk=pm.pk).update(status="trained", useful=True, auc=0.9, trained_stage="customer")
    pm.refresh_from_db()
    assert not service.update_settings(pm, target_stage="customer", retrain_days=3, window_days=90)
    assert ContactScore.objects.get(contact=contact).predicted == 0.4
    assert service.update_settings(pm, target_stage="opportunity", retrain_days=3, window_days=90)
    pm.refresh_from_db()
    assert pm.status == "new" and pm.auc is None and not pm.useful
    assert ContactScore.objects.get(contact=contact).predicted is None


def test_retrain_due_follows_each_models_interval(model):
    other = ScoringModel.objects.create(name="Upsell")
    by_hand = ScoringModel.objects.create(name="By hand")
    now = timezone.now()
    due = predictive_for(model, retrain_days=7)
    fresh = predictive_for(other, retrain_days=7)
    manual = predictive_for(by_hand, retrain_days=0)
    PredictiveModel.objects.filter(pk=due.pk).update(attempted_at=now - timedelta(days=8))
    PredictiveModel.objects.filter(pk=fresh.pk).update(attempted_at=now - timedelta(days=1))
    done = service.retrain_due(now)
    assert [pm.pk for pm in done] == [due.pk]
    due.refresh_from_db()
    assert due.status == "refused" and due.attempted_at > now - timedelta(minutes=5)
    assert service.retrain_due(now) == []  # just attempted: not due again for a week
    manual.refresh_from_db()
    assert manual.status == "new" and manual.attempted_at is None


def test_the_worker_loop_retrains_what_is_due(monkeypatch):
    stop = threading.Event()
    calls = []

    def due(now=None):
        calls.append(now)
        stop.set()
        return []

    monkeypatch.setattr(service, "retrain_due", due)
    service.run(stop, every_seconds=0)
    assert len(calls) == 1


def test_a_stage_changed_during_training_discards_its_outcome(model, monkeypatch):
    pm = predictive_for(model)
    build = service.build_examples

    def build_while_someone_edits(*args, **kwargs):
        service.update_settings(PredictiveModel.objects.get(pk=pm.pk), target_stage="sql", retrain_days=5,
                                window_days=90)
        return build(*args, **kwargs)

    monkeypatch.setattr(service, "build_examples", build_while_someone_edits)
    service.train(pm)
    pm.refresh_from_db()
    assert (pm.target_stage, pm.retrain_days, pm.status, pm.detail) == ("sql", 5, "new", {})
    assert pm.attempted_at is None
