"""Segments: the filter language checked with paths, SQL agreeing with the Python reference on
random data and random filters (hypothesis), incremental membership equal to a full recompute
after a random stream of changes, windows that let contacts go on day 31, cycles refused."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kizuna.contacts import services
from kizuna.contacts.models import (
    Company,
    Consent,
    Contact,
    ContactList,
    CustomField,
    ListMembership,
    SubscriptionTopic,
    Tag,
)
from kizuna.events import ingest, processing
from kizuna.events.models import Event
from kizuna.messaging.models import EmailTemplate, Message, Sender, TemplateVersion
from kizuna.scoring.models import ContactScore, ScoringModel
from kizuna.segments import filters, membership
from kizuna.segments.filters import Context, Facts, FilterError
from kizuna.segments.models import Membership, Segment, SegmentChange

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 10, 15, 3, 0, tzinfo=UTC)
TEXTS = ["", "営業部", "Sales", "sales manager", "部長", "MANAGER", "東京", "a_b%c"]
PATHS = ["/", "/pricing", "/pricing/enterprise", "/case-studies/maruyama", "/careers", "/Blog/MA"]
EVENTS = ["Form Submitted", "Demo Booked", "Webinar Joined"]


@pytest.fixture
def world(db):
    """~40 contacts with varied profiles, companies, tags, lists, consents, custom fields,
    scores, web events and email activity (a fixed seed: the filters are what varies)."""
    rng = random.Random(20261015)
    model = ScoringModel.objects.create(name="Default", half_life_days=30)
    topics = [SubscriptionTopic.objects.create(key=k, name=k) for k in ("news", "seminars")]
    CustomField.objects.create(key="budget", label="Budget", field_type="number")
    CustomField.objects.create(key="plan", label="Plan", field_type="choice", choices=["basic", "pro"])
    CustomField.objects.create(key="tools", label="Tools", field_type="multi_choice", choices=["sfa", "ma", "crm"])
    CustomField.objects.create(key="renewal", label="Renewal", field_type="date")
    CustomField.objects.create(key="note", label="Note", field_type="text")
    tags = [Tag.objects.create(name=n) for n in ("vip", "展示会2026", "partner")]
    lists = [ContactList.objects.create(name=n) for n in ("Seminar", "名刺交換")]
    companies = [Company.objects.create(name=f"会社{i}", domain=f"c{i}.co.jp", industry=rng.choice(["manufacturing",
                 "it", ""]), company_size=rng.choice(["100-299", "1000-4999", ""]), prefecture=rng.choice(["13", "27",
                 ""]), employees=rng.choice([None, 50, 300, 5000])) for i in range(5)]
    sender = Sender.objects.create(name="M", from_name="M", from_email="m@k.example", organisation="K",
                                   postal_address="東京都")
    templates = [EmailTemplate.objects.create(name=f"T{i}", sender=sender) for i in range(2)]
    versions = [TemplateVersion.objects.create(template=t, number=1, subject="s", html="<p>x</p>", text="x")
                for t in templates]
    for i in range(40):
        contact = Contact.objects.create(
            email=None if i % 13 == 0 else f"c{i}@example.jp", family_name=rng.choice(TEXTS),
            job_title=rng.choice(TEXTS), department=rng.choice(TEXTS), company=rng.choice([None, *companies]),
            prefecture=rng.choice(["", "13", "14", "27"]), region=rng.choice(["", "kanto", "kinki"]),
            industry=rng.choice(["", "manufacturing", "it", "retail"]),
            company_size=rng.choice(["", "1-9", "100-299", "1000-4999"]),
            lifecycle_stage=rng.choice(["subscriber", "lead", "mql", "customer"]),
            do_not_contact=rng.random() < 0.2,
            created_at=NOW - timedelta(days=rng.randint(0, 400)),
            last_activity_at=rng.choice([None, NOW - timedelta(days=rng.randint(0, 90))]),
            custom={k: v for k, v in {
                "budget": rng.choice([None, 0, 100, 250.5, 1000]), "plan": rng.choice([None, "basic", "pro"]),
                "tools": rng.choice([None, ["sfa"], ["ma", "crm"], ["sfa", "ma", "crm"]]),
                "renewal": rng.choice([None, "2026-09-01", "2026-10-10", "2027-01-31"]),
                "note": rng.choice([None, "要フォロー", "VIP client"])}.items() if v is not None})
        contact.tags.set(rng.sample(tags, rng.randint(0, 2)))
        for lst in rng.sample(lists, rng.randint(0, 2)):
            ListMembership.objects.create(contact_list=lst, contact=contact)
        for topic in topics:
            state = rng.choice([None, "opted_in", "opted_out", "unknown"])
            if state:
                Consent.objects.create(contact=contact, topic=topic, status=state)
        if rng.random() < 0.7:
            engagement = rng.choice([0.5, 5, 30, 80, 150])
            at = NOW - timedelta(days=rng.randint(0, 60))
            ContactScore.objects.create(model=model, contact=contact, fit=rng.choice([-10, 0, 15, 40]),
                                        grade=rng.choice("ABCD"), engagement=engagement, engagement_at=at,
                                        rank_key=filters.math.log2(engagement) + at.timestamp() / (30 * 86400))
        for n in range(rng.randint(0, 8)):
            page = rng.random() < 0.6
            path = rng.choice(PATHS)
            Event.objects.create(
                message_id=f"e-{i}-{n}", type="page" if page else "track", name="" if page else rng.choice(EVENTS),
                contact=contact, occurred_at=NOW - timedelta(days=rng.randint(0, 60), hours=rng.randint(0, 23)),
                received_at=NOW, processed_at=NOW, path=path, url="https://x.jp" + path, title=rng.choice(TEXTS),
                properties={} if page else {"form": rng.choice(["資料請求", "demo", "Seminar"])},
                bot="crawler" if rng.random() < 0.1 else "")
        for n in range(rng.randint(0, 3)):
            sent = NOW - timedelta(days=rng.randint(0, 50))
            opened = rng.choice([None, sent + timedelta(hours=2)])
            Message.objects.create(idempotency_key=f"m-{i}-{n}", contact=contact, to_email="x@example.jp",
                                   version=rng.choice(versions), sender=sender, status="sent", sent_at=sent,
                                   opened_at=opened, clicked_at=rng.choice([None, opened]) if opened else None)
    return {"model": model, "tags": tags, "lists": lists, "templates": templates, "users": []}


def facts_of(contact: Contact, segments: set[int] | None = None) -> Facts:
    company = contact.company
    return Facts(
        contact={f.attname.removesuffix("_id") if f.attname == "owner_id" else f.attname: getattr(contact, f.attname)
                 for f in Contact._meta.concrete_fields},
        company=None if company is None else {"name": company.name, "domain": company.domain,
                                              "industry": company.industry, "company_size": company.company_size,
                                              "prefecture": company.prefecture, "employees": company.employees},
        tags=set(contact.tags.values_list("name", flat=True)),
        lists=set(contact.list_memberships.values_list("contact_list_id", flat=True)),
        custom=dict(contact.custom or {}),
        scores={s.model_id: {"fit": s.fit, "grade": s.grade, "rank_key": s.rank_key}
                for s in ContactScore.objects.filter(contact=contact)},
        consents=dict(Consent.objects.filter(contact=contact).values_list("topic__key", "status")),
        events=list(Event.objects.filter(contact=contact).values("type", "name", "path", "url", "title", "referrer",
                                                                 "properties", "occurred_at", "bot")),
        messages=[{"template": m.version.template_id, "sent_at": m.sent_at, "opened_at": m.opened_at,
                   "clicked_at": m.clicked_at} for m in Message.objects.filter(contact=contact).select_related(
                       "version")],
        segments=segments or set(Membership.objects.filter(contact=contact).values_list("segment_id", flat=True)),
    )


# --- random filters -------------------------------------------------------------------------

def _leaf(world_ids: dict) -> st.SearchStrategy:
    text_ops = st.sampled_from(["equals", "not_equals", "contains", "not_contains", "starts_with", "ends_with",
                                "is_set", "is_not_set"])
    words = st.sampled_from(["営業", "sales", "SALES", "部長", "manager", "東京", "%", "_", "a_b%c", "Blog"])
    text = st.builds(lambda f, op, v: {"field": f, "op": op, **({} if op.startswith("is_") else {"value": v})},
                     st.sampled_from(["job_title", "department", "family_name", "email", "company.name",
                                      "custom.note"]), text_ops, words)
    choice = st.builds(lambda fv, op: {"field": fv[0], "op": op, **({} if op.startswith("is_") else {"value": fv[1]})},
                       st.sampled_from([("industry", ["manufacturing", "it"]), ("region", ["kanto"]),
                                        ("company_size", ["1-9", "100-299"]), ("lifecycle_stage", ["lead", "mql"]),
                                        ("company.industry", ["it"]), ("company.prefecture", ["13", "27"])]),
                       st.sampled_from(["in", "not_in", "is_set", "is_not_set"]))
    dates = st.builds(lambda f, op, v: {"field": f, "op": op, **({} if op.startswith("is_") else {"value": v})},
                      st.sampled_from(["created_at", "last_activity_at"]),
                      st.sampled_from(["in_last_days", "not_in_last_days", "is_set", "is_not_set"]),
                      st.integers(1, 120))
    exact_dates = st.builds(lambda op, v: {"field": "created_at", "op": op, "value": v},
                            st.sampled_from(["before", "after"]), st.sampled_from(["2026-01-01", "2026-10-01"]))
    flags = st.builds(lambda op: {"field": "do_not_contact", "op": op}, st.sampled_from(["is_true", "is_false"]))
    number = st.builds(lambda f, op, v: {"field": f, "op": op, "value": v},
                       st.sampled_from(["company.employees", "custom.budget"]), st.sampled_from(["eq", "gte", "lte"]),
                       st.sampled_from([0, 100, 250.5, 300, 1000]))
    custom = st.one_of(
        st.builds(lambda op, v: {"field": "custom.plan", "op": op, "value": v}, st.sampled_from(["in", "not_in"]),
                  st.sampled_from([["basic"], ["pro"], ["basic", "pro"]])),
        st.builds(lambda op, v: {"field": "custom.tools", "op": op, "value": v},
                  st.sampled_from(["has_any", "has_all"]), st.sampled_from([["sfa"], ["ma", "crm"], ["crm"]])),
        st.builds(lambda op, v: {"field": "custom.renewal", "op": op, "value": v},
                  st.sampled_from(["before", "after"]), st.sampled_from(["2026-10-10", "2026-12-31"])),
        st.builds(lambda op, v: {"field": "custom.renewal", "op": op, "value": v},
                  st.sampled_from(["in_last_days", "not_in_last_days"]), st.sampled_from([10, 60])),
        st.builds(lambda f, op: {"field": f, "op": op}, st.sampled_from(["custom.plan", "custom.tools"]),
                  st.sampled_from(["is_set", "is_not_set"])),
    )
    membership_like = st.one_of(
        st.builds(lambda op, v: {"field": "tag", "op": op, "value": v}, st.sampled_from(["has", "has_not"]),
                  st.sampled_from(["vip", "展示会2026", "nobody"])),
        st.builds(lambda op, v: {"field": "list", "op": op, "value": v}, st.sampled_from(["in", "not_in"]),
                  st.sampled_from(world_ids["lists"])),
        st.builds(lambda op, v: {"field": "consent.news", "op": op, "value": v}, st.sampled_from(["in", "not_in"]),
                  st.sampled_from([["opted_in"], ["unknown"], ["opted_out", "unknown"]])),
    )
    score = st.one_of(
        st.builds(lambda op, v: {"field": "score.engagement", "model": world_ids["model"], "op": op, "value": v},
                  st.sampled_from(["gte", "lte"]), st.sampled_from([1, 10, 50, 100])),
        st.builds(lambda op, v: {"field": "score.fit", "model": world_ids["model"], "op": op, "value": v},
                  st.sampled_from(["gte", "lte"]), st.sampled_from([-10, 0, 15, 20])),
        st.builds(lambda v: {"field": "score.grade", "model": world_ids["model"], "op": "at_least", "value": v},
                  st.sampled_from("ABCD")),
    )
    where = st.lists(st.builds(lambda f, op, v: {"field": f, "op": op, "value": v},
                               st.sampled_from(["path", "title", "properties.form"]),
                               st.sampled_from(["equals", "contains", "starts_with", "ends_with"]),
                               st.sampled_from(["/pricing", "/case", "blog", "demo", "資料請求", "sales"])),
                     max_size=2)
    count = st.builds(lambda op, v: {"op": op, "value": v}, st.sampled_from(["gte", "lte", "eq"]), st.integers(0, 3))
    event = st.builds(lambda e, w, c, d: {"event": e, "where": w, "count": c, "within_days": d},
                      st.sampled_from(["page", *EVENTS]), where, count, st.sampled_from([None, 7, 30]))
    email = st.builds(lambda a, t, c, d: {"email": a, "template": t, "count": c, "within_days": d},
                      st.sampled_from(["sent", "opened", "clicked"]),
                      st.sampled_from([None, *world_ids["templates"]]), count, st.sampled_from([None, 14]))
    return st.one_of(text, choice, dates, exact_dates, flags, number, custom, membership_like, score, event, email)


def trees(world_ids: dict) -> st.SearchStrategy:
    return st.recursive(
        _leaf(world_ids),
        lambda children: st.one_of(
            st.builds(lambda xs: {"all": xs}, st.lists(children, max_size=3)),
            st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
            st.builds(lambda x: {"not": x}, children)),
        max_leaves=6)


def _ids(world) -> dict:
    return {"model": world["model"].pk, "lists": [lst.pk for lst in world["lists"]],
            "templates": [t.pk for t in world["templates"]]}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_sql_agrees_with_the_reference_evaluator(world, data):
    tree = filters.check(data.draw(trees(_ids(world))), Context.load())
    models = {world["model"].pk: 30.0}
    got = set(filters.compile_queryset(tree, NOW, models).values_list("pk", flat=True))
    contacts = Contact.objects.select_related("company").all()
    want = {c.pk for c in contacts if filters.evaluate(tree, facts_of(c, set()), NOW, models)}
    assert got == want, tree


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_several_filters_evaluated_in_one_query_agree_with_each_alone(world, data):
    """The incremental path evaluates every segment an event touches in one query."""
    ctx = Context.load()
    several = [filters.check(data.draw(trees(_ids(world))), ctx) for _ in range(3)]
    models = {world["model"].pk: 30.0}
    everyone = sorted(Contact.objects.values_list("pk", flat=True))
    some = data.draw(st.lists(st.sampled_from(everyone), min_size=1, max_size=12, unique=True))
    base = Contact.objects.filter(pk__in=some)
    got = filters.evaluate_many(dict(enumerate(several)), NOW, models, base=base)
    reused, _members_now = filters.match_segments(dict(enumerate(several)), some, NOW, models)  # SQL kept, reused
    for n, tree in enumerate(several):
        want = set(filters.compile_queryset(tree, NOW, models, base=base).values_list("pk", flat=True))
        assert got[n] == want, tree
        assert reused[n] == want, tree


# --- checking -------------------------------------------------------------------------------

@pytest.mark.parametrize("tree,path", [
    ([], "filter"),
    ({"all": [{"field": "industry", "op": "in", "value": ["steel-mills"]}]}, "all[0].value"),
    ({"all": [{"field": "nope", "op": "in", "value": ["x"]}]}, "all[0].field"),
    ({"any": [{"all": [{"field": "job_title", "op": "resembles", "value": "x"}]}]}, "any[0].all[0].op"),
    ({"event": "page", "where": [{"field": "cookie", "op": "equals", "value": "x"}]}, "where[0].field"),
    ({"event": "page", "count": {"op": "gte", "value": -1}}, "count.value"),
    ({"event": "page", "within_days": 0}, "within_days"),
    ({"email": "forwarded"}, "email"),
    ({"field": "score.engagement", "op": "gte", "value": 10}, "model"),
    ({"field": "job_title", "op": "contains", "value": "x", "color": "red"}, "color"),
    ({"not": {"segment": 99999}}, "not.segment"),
    ({"field": "created_at", "op": "in_last_days", "value": "thirty"}, "value"),
])
def test_invalid_filters_name_the_path_at_fault(db, tree, path):
    with pytest.raises(FilterError) as info:
        filters.check(tree, Context.load())
    assert info.value.path == path


def test_a_segment_that_refers_to_itself_is_refused_directly_or_not(db):
    a = Segment.objects.create(name="A", filter={"all": []})
    b = membership.save_segment(Segment.objects.create(name="B"), {"segment": a.pk})
    c = membership.save_segment(Segment.objects.create(name="C"), {"any": [{"segment": b.pk}]})
    with pytest.raises(FilterError, match="refers to itself"):
        membership.save_segment(a, {"not": {"segment": c.pk}})
    with pytest.raises(FilterError, match="refers to itself"):
        membership.save_segment(a, {"segment": a.pk})


# --- membership -----------------------------------------------------------------------------

def _full(segment: Segment) -> set[int]:
    return set(filters.compile_queryset(segment.filter, datetime.now(UTC), membership.scoring_models())
               .values_list("pk", flat=True))


def _members(segment: Segment) -> set[int]:
    return set(Membership.objects.filter(segment=segment).values_list("contact_id", flat=True))


def _send(messages: list[dict]) -> None:
    result = ingest.ingest(messages, ingest.RequestInfo(ip="126.1.1.1", user_agent="Mozilla/5.0 Chrome/131"))
    assert not result.rejected, result.rejected
    processing.drain()


def test_incremental_membership_equals_a_full_recompute_after_random_changes(db):
    rng = random.Random(7)
    contacts = [Contact.objects.create(email=f"p{i}@example.jp", industry=rng.choice(["it", "manufacturing"]),
                                       job_title=rng.choice(["部長", "担当"])) for i in range(12)]
    pricing = membership.save_segment(Segment.objects.create(name="Pricing twice"), {"all": [
        {"field": "industry", "op": "in", "value": ["manufacturing"]},
        {"event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}],
         "count": {"op": "gte", "value": 2}, "within_days": 30}]})
    managers = membership.save_segment(Segment.objects.create(name="Managers"),
                                       {"field": "job_title", "op": "contains", "value": "部長"})
    no_demo = membership.save_segment(Segment.objects.create(name="Keen, no demo"), {"all": [
        {"segment": pricing.pk}, {"not": {"event": "Demo Booked"}}]})
    for segment in (pricing, managers, no_demo):
        membership.recompute(segment)
    for _step in range(40):
        contact = rng.choice(contacts)
        roll = rng.random()
        if roll < 0.4:
            _send([{"type": "identify", "userId": f"u{contact.pk}", "traits": {"email": contact.email}},
                   {"type": "page", "userId": f"u{contact.pk}", "properties": {"path": rng.choice(PATHS)}}])
        elif roll < 0.55:
            _send([{"type": "track", "userId": f"u{contact.pk}", "event": "Demo Booked",
                    "context": {"traits": {"email": contact.email}}}])
        else:
            change = ({"industry": rng.choice(["it", "manufacturing"])} if roll < 0.8
                      else {"job_title": rng.choice(["部長", "担当", "営業部長"])})
            services.update_contact(None, contact, change)
            contact.refresh_from_db()
        for segment in (pricing, managers, no_demo):
            segment.refresh_from_db()
            assert _members(segment) == _full(segment), segment.name
    assert SegmentChange.objects.exists()


def test_a_contact_leaves_a_windowed_segment_on_day_31_and_each_change_is_recorded_once(db):
    contact = Contact.objects.create(email="w@example.jp")
    segment = membership.save_segment(Segment.objects.create(name="Recent pricing"), {
        "event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}], "within_days": 30})
    with time_machine.travel(NOW, tick=False):
        membership.recompute(segment)
        _send([{"type": "identify", "userId": "w", "traits": {"email": "w@example.jp"}},
               {"type": "page", "userId": "w", "properties": {"path": "/pricing"}}])
        assert _members(segment) == {contact.pk}
    with time_machine.travel(NOW + timedelta(days=29), tick=False):
        membership.refresh_due()
        assert _members(segment) == {contact.pk}
    with time_machine.travel(NOW + timedelta(days=31), tick=False):
        membership.refresh_due()
        assert _members(segment) == set()
        membership.refresh_due()  # nothing moves twice
    kinds = list(SegmentChange.objects.filter(segment=segment, contact=contact).order_by("id").values_list(
        "kind", flat=True))
    assert kinds == ["entered", "exited"]


def test_recompute_writes_only_the_difference_once_and_dependents_follow(db):
    contacts = [Contact.objects.create(email=f"r{i}@example.jp", industry="manufacturing" if i % 2 else "it")
                for i in range(10)]
    makers = membership.save_segment(Segment.objects.create(name="Makers"),
                                     {"field": "industry", "op": "in", "value": ["manufacturing"]})
    others = membership.save_segment(Segment.objects.create(name="Others"), {"not": {"segment": makers.pk}})
    assert membership.recompute(makers) == (5, 0)
    assert membership.recompute(others) == (5, 0)
    # A change no signal announces (a bulk update): only the next recompute sees it.
    Contact.objects.filter(pk=contacts[0].pk).update(industry="manufacturing")
    Contact.objects.filter(pk=contacts[1].pk).update(industry="it")
    assert membership.recompute(makers) == (1, 1)
    assert membership.recompute(makers) == (0, 0)
    expected = {c.pk for c in Contact.objects.filter(industry="manufacturing")}
    assert _members(makers) == expected
    assert _members(others) == {c.pk for c in contacts} - expected  # followed through the cascade
    makers.refresh_from_db()
    others.refresh_from_db()
    assert (makers.member_count, others.member_count) == (5, 5)
    for segment, contact, kinds in [(makers, contacts[0], ["entered"]), (makers, contacts[1], ["entered", "exited"]),
                                    (others, contacts[0], ["entered", "exited"]), (others, contacts[1], ["entered"])]:
        assert list(SegmentChange.objects.filter(segment=segment, contact=contact).order_by("id").values_list(
            "kind", flat=True)) == kinds, (segment.name, contact.email)
