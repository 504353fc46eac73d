"""Insights: report numbers on small hand-built datasets (funnel, dwell time, page flow,
attribution shares, lift, retention), the rollups' idempotence and lock, and the pages with
their CSV and image downloads and date-range errors."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from django.urls import reverse

from kizuna.contacts.models import Contact
from kizuna.events.models import Event, PageView, Session
from kizuna.insights import reports, rollups
from kizuna.insights.models import ContactPage, DailyFlow, DailyPage, DailySource, DailyStage, PathReach
from kizuna.insights.periods import Period, parse
from kizuna.lifecycle.models import StageChange

pytestmark = pytest.mark.django_db
DAY = datetime(2026, 10, 5, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
PERIOD = Period(date(2026, 9, 1), date(2026, 10, 31))
_ids = itertools.count(1)


def contact(name: str, **fields) -> Contact:
    return Contact.objects.create(email=f"{name}@insights.example", **fields)


def stage(c: Contact, before: str, after: str, at: datetime) -> None:
    StageChange.objects.create(contact=c, from_stage=before, to_stage=after, at=at, via="manual")


def event(name: str, c: Contact | None, at: datetime, **fields) -> Event:
    n = next(_ids)
    kind = fields.pop("type", "track")
    return Event.objects.create(message_id=f"ins-{n}", type=kind, name=name, contact=c, occurred_at=at,
                                received_at=at, processed_at=at, **fields)


def visit(c: Contact | None, at: datetime, pages: list[tuple[str, int, bool]], *, bot: str = "",
          source_kind: str = "direct", campaign: str = "", keyword: str = "", host: str = "") -> Session:
    """A session with its page views: (path, dwell ms, measured); the last page is the exit."""
    s = Session.objects.create(anonymous_id=f"anon-{c.pk if c else next(_ids)}", contact=c, started_at=at,
                               last_activity_at=at, page_views=len(pages), source_kind=source_kind,
                               utm_campaign=campaign, keyword=keyword, source_host=host, bot=bot,
                               engaged_ms=sum(p[1] for p in pages))
    for seq, (path, dwell, measured) in enumerate(pages, start=1):
        when = at + timedelta(minutes=seq)
        ev = event("", c, when, type="page", path=path, session=s, bot=bot)
        PageView.objects.create(event=ev, page_view_id=ev.message_id, session=s, contact=c,
                                anonymous_id=s.anonymous_id, seq=seq, occurred_at=when, url=f"https://x.example{path}",
                                path=path, dwell_ms=dwell, measured=measured, is_exit=seq == len(pages))
    return s


# --- funnel -----------------------------------------------------------------------------------------

def test_funnel_counts_entries_moves_and_stage_to_stage_conversion():
    a, b, c, d = (contact(n, lifecycle_stage="lead", source="form") for n in "abcd")
    for x in (a, b, c, d):
        stage(x, "", "lead", DAY - timedelta(days=3))
    for x in (a, b, c):
        stage(x, "lead", "mql", DAY)
    stage(a, "mql", "sql", DAY + timedelta(days=2))
    stage(b, "mql", "customer", DAY + timedelta(days=3))  # skipping stages is moving on too
    Contact.objects.filter(pk__in=[a.pk]).update(lifecycle_stage="sql")
    Contact.objects.filter(pk__in=[c.pk]).update(lifecycle_stage="mql")
    Contact.objects.filter(pk__in=[b.pk]).update(lifecycle_stage="customer")
    rollups.rebuild()
    rows = {r["key"]: r for r in reports.funnel(PERIOD)["rows"]}
    assert rows["lead"]["entered"] == 4 and rows["lead"]["moved_on"] == 3 and rows["lead"]["rate"] == 75.0
    assert rows["lead"]["next_rate"] == 75.0  # 3 entered MQL per 4 that entered Lead
    assert rows["mql"]["entered"] == 3 and rows["mql"]["moved_on"] == 2 and rows["mql"]["rate"] == pytest.approx(66.7)
    assert rows["mql"]["next_rate"] == pytest.approx(33.3)
    assert rows["lead"]["current"] == 1 and rows["sql"]["current"] == 1
    assert rows["lead"]["at_start"] == 0 and rows["mql"]["at_start"] == 0  # nobody was there on 1 September
    # Only what happened in the period counts; the previous period is compared when asked.
    later = reports.funnel(Period(date(2026, 10, 6), date(2026, 10, 31)), compare=True)
    rows = {r["key"]: r for r in later["rows"]}
    assert rows["mql"]["entered"] == 0 and rows["sql"]["entered"] == 1 and rows["customer"]["entered"] == 1
    assert rows["mql"]["previous"] == 3
    # Three were MQL when the period began (none entered in it); two of them moved on: 66.7%, not
    # "2 of 0". The share is of the contacts in the stage during the period, so never above 100%.
    assert rows["mql"]["at_start"] == 3 and rows["mql"]["moved_on"] == 2 and rows["mql"]["rate"] == pytest.approx(66.7)
    assert rows["lead"]["at_start"] == 1 and rows["lead"]["moved_on"] == 0 and rows["lead"]["rate"] == 0.0
    assert rows["sql"]["at_start"] == 0 and rows["sql"]["entered"] == 1 and rows["sql"]["rate"] == 0.0
    cols, by_source = reports.funnel_by(PERIOD, "source")
    assert by_source[0][0] == "Form" and by_source[0][cols.index("Lead")] == 4


# --- web analytics -----------------------------------------------------------------------------------

def test_pages_entries_exits_dwell_and_flow_are_exact_and_ignore_bots():
    visit(None, DAY, [("/a", 10_000, True), ("/b", 4_000, False), ("/c", 0, False)], source_kind="search",
          keyword="マーケティング 自動化", host="www.google.co.jp")
    visit(None, DAY + timedelta(hours=1), [("/a", 20_000, True)], campaign="spring", source_kind="email")
    visit(None, DAY + timedelta(hours=2), [("/a", 99_000, True), ("/b", 1, True)], bot="crawler")
    rollups.rebuild()
    pages = {r["path"]: r for r in reports.pages(PERIOD)}
    assert pages["/a"]["views"] == 2 and pages["/a"]["entries"] == 2 and pages["/a"]["exits"] == 1
    assert pages["/a"]["avg_dwell"] == 15.0  # (10 s + 20 s) / 2, the bot's 99 s left out
    assert pages["/b"]["avg_dwell"] == 4.0  # not measured, but timed until the next page
    assert pages["/c"]["avg_dwell"] is None and pages["/c"]["exit_rate"] == 100.0  # an exit nobody timed
    flow = reports.flow(PERIOD, "/a")
    assert {r["to_path"]: r["n"] for r in flow["next"]} == {"/b": 1, "": 1}
    assert {r["from_path"]: r["n"] for r in reports.flow(PERIOD, "/b")["previous"]} == {"/a": 1}
    assert [r["keyword"] for r in reports.sessions_by(PERIOD, "keyword")] == ["マーケティング 自動化"]
    assert [(r["utm_campaign"], r["sessions"]) for r in reports.campaigns(PERIOD)] == [("spring", 1)]
    assert reports.sessions_total(PERIOD) == 2


def test_rollups_are_incremental_idempotent_and_equal_to_a_rebuild():
    visit(None, DAY, [("/a", 1000, True), ("/b", 0, False)])
    rollups.update()
    first = sorted(DailyPage.objects.values_list("day", "path", "views", "timed", "dwell_ms"))
    rollups.update()  # nothing new: nothing changes
    assert sorted(DailyPage.objects.values_list("day", "path", "views", "timed", "dwell_ms")) == first
    visit(contact("inc"), DAY + timedelta(days=1), [("/a", 3000, True)])
    # A later engagement measures the exit page of the first visit: the day is recomputed.
    PageView.objects.filter(path="/b").update(dwell_ms=5000, measured=True)
    event("Page Engaged", None, DAY + timedelta(minutes=5))
    rollups.update()
    incremental = sorted(DailyPage.objects.values_list("day", "path", "views", "timed", "dwell_ms"))
    assert (DAY.date(), "/b", 1, 1, 5000) in incremental
    assert list(ContactPage.objects.values_list("path", "views")) == [("/a", 1)]  # per contact, incrementally
    assert dict(PathReach.objects.values_list("path", "contacts")) == {"": 1, "/a": 1}
    flows = sorted(DailyFlow.objects.values_list("day", "from_path", "to_path", "n"))
    rollups.rebuild()
    assert sorted(DailyPage.objects.values_list("day", "path", "views", "timed", "dwell_ms")) == incremental
    assert sorted(DailyFlow.objects.values_list("day", "from_path", "to_path", "n")) == flows


def test_a_pass_is_skipped_while_another_process_holds_the_lock(monkeypatch):
    @contextmanager
    def held_elsewhere(name):
        assert name == rollups.LOCK
        yield False

    visit(None, DAY, [("/a", 1000, True)])
    monkeypatch.setattr(rollups, "exclusive", held_elsewhere)
    assert rollups.update() == {}
    assert not DailyPage.objects.exists() and not DailySource.objects.exists()
    with pytest.raises(RuntimeError, match="another process"):
        rollups.rebuild()


# --- path to conversion ------------------------------------------------------------------------------

def test_lift_is_the_share_of_converters_over_the_base_rate():
    assert reports.lift_rows({"/p": 3, "/q": 1}, 4, {"/p": 4, "/q": 6}, 10) == [
        {"path": "/p", "converters": 3, "p_converted": 75.0, "p_base": 40.0, "lift": 1.88},
        {"path": "/q", "converters": 1, "p_converted": 25.0, "p_base": 60.0, "lift": 0.42},
    ]
    assert reports.lift_rows({"/q": 1}, 4, {"/q": 6}, 10, min_contacts=2) == []


def test_path_to_conversion_counts_pages_in_the_days_before_conversion():
    converters = [contact(f"w{i}") for i in range(4)]
    others = [contact(f"o{i}") for i in range(6)]
    for i, c in enumerate(converters):
        stage(c, "sql", "customer", DAY)
        pages = [("/pricing", 1000, True)] if i < 3 else [("/blog", 1000, True)]
        visit(c, DAY - timedelta(days=5), pages)
    visit(converters[3], DAY - timedelta(days=40), [("/pricing", 1000, True)])  # too early to count
    visit(converters[0], DAY + timedelta(days=1), [("/blog", 1000, True)])  # after converting: not before it
    visit(others[0], DAY, [("/pricing", 1000, True)])
    for c in others[1:]:
        visit(c, DAY, [("/blog", 1000, True)])
    rollups.rebuild()
    assert PathReach.objects.get(path="").contacts == 10 and PathReach.objects.get(path="/pricing").contacts == 5
    data = reports.path_to_conversion(PERIOD, stage="customer", days=30, min_contacts=1)
    assert data["converters"] == 4 and data["with_views"] == 4 and data["base"] == 10
    rows = {r["path"]: r for r in data["rows"]}
    assert rows["/pricing"]["converters"] == 3 and rows["/pricing"]["p_base"] == 50.0
    assert rows["/pricing"]["lift"] == 1.5  # 75 % of converters against 50 % of everyone
    assert rows["/blog"]["converters"] == 1 and rows["/blog"]["lift"] == pytest.approx(0.36, abs=0.01)
    assert data["rows"][0]["path"] == "/pricing"
    # A tracked event as the conversion.
    event("Quote Requested", converters[1], DAY + timedelta(days=2))
    assert reports.path_to_conversion(PERIOD, event="Quote Requested", days=30, min_contacts=1)["converters"] == 1


# --- attribution ----------------------------------------------------------------------------------------

def test_credit_models():
    assert reports.credit(1, "position") == [1.0]
    assert reports.credit(2, "position") == [0.5, 0.5]
    assert reports.credit(4, "position") == pytest.approx([0.4, 0.1, 0.1, 0.4])
    assert reports.credit(3, "linear") == pytest.approx([1 / 3] * 3)
    assert reports.credit(3, "first") == [1.0, 0.0, 0.0] and reports.credit(3, "last") == [0.0, 0.0, 1.0]


def test_attribution_shares_per_model():
    c1, c2, c3 = contact("t1"), contact("t2"), contact("t3")
    for c in (c1, c2, c3):
        stage(c, "sql", "customer", DAY)
    visit(c1, DAY - timedelta(days=9), [("/", 0, False)], source_kind="search")
    visit(c1, DAY - timedelta(days=6), [("/", 0, False)], source_kind="email", campaign="spring")
    visit(c1, DAY - timedelta(days=3), [("/", 0, False)], source_kind="paid", campaign="spring")
    visit(c1, DAY - timedelta(days=1), [("/", 0, False)], source_kind="")  # direct
    visit(c2, DAY - timedelta(days=2), [("/", 0, False)], source_kind="email", campaign="spring")
    visit(c2, DAY - timedelta(days=1), [("/", 0, False)], source_kind="paid", bot="crawler")  # not a touch
    visit(c2, DAY + timedelta(days=1), [("/", 0, False)], source_kind="social")  # after: not a touch
    # c3 converted with no visit at all.
    data = reports.attribution(PERIOD, stage="customer", days=90)
    assert data["converters"] == 3 and data["conversions"] == 2 and data["without_touches"] == 1
    shares = {r["key"]: r for r in data["channel"]}
    assert {k: shares[k]["first"] for k in shares} == {"search": 50.0, "email": 50.0, "paid": 0.0, "direct": 0.0}
    assert {k: shares[k]["last"] for k in shares} == {"search": 0.0, "email": 50.0, "paid": 0.0, "direct": 50.0}
    assert {k: shares[k]["linear"] for k in shares} == {"search": 12.5, "email": 62.5, "paid": 12.5, "direct": 12.5}
    assert {k: shares[k]["position"] for k in shares} == {"search": 20.0, "email": 55.0, "paid": 5.0, "direct": 20.0}
    campaigns = {r["key"]: r for r in data["campaign"]}
    assert campaigns["spring"]["linear"] == 75.0 and campaigns[""]["linear"] == 25.0


# --- retention --------------------------------------------------------------------------------------------

def test_retention_cohorts_and_early_behaviours():
    people = {n: contact(n) for n in "ABCDE"}
    for n, c in people.items():
        stage(c, "opportunity", "customer", DAY if n != "E" else DAY + timedelta(days=30))
    for n in "ABC":
        event("Feature D Used", people[n], DAY + timedelta(days=3))
    event("Feature D Used", people["D"], DAY + timedelta(days=200))  # not early: after the first 30 days
    for n in "ABE":
        event("Renewed", people[n], DAY + timedelta(days=360))
    event("Churned", people["C"], DAY + timedelta(days=300))
    period = Period(date(2026, 9, 1), date(2026, 11, 30))
    rollups.update()
    data = reports.retention(period, min_contacts=2)
    assert data["customers"] == 5 and data["renewed"] == 3 and data["churned"] == 1
    assert data["cohorts"] == [
        {"month": "2026-10", "customers": 4, "renewed": 2, "churned": 1, "renewal_rate": 50.0, "churn_rate": 25.0},
        {"month": "2026-11", "customers": 1, "renewed": 1, "churned": 0, "renewal_rate": 100.0, "churn_rate": 0.0},
    ]
    assert data["behaviours"] == [{"name": "Feature D Used", "contacts": 3, "renewal_rate": 66.7,
                                   "others_rate": 50.0, "lift": 1.33}]
    # Later: D leaves (Customer → Other) and E's usage arrives; the next pass updates both.
    stage(people["D"], "customer", "other", DAY + timedelta(days=100))
    event("Feature D Used", people["E"], DAY + timedelta(days=35))
    rollups.update()
    data = reports.retention(period, min_contacts=2)
    assert data["churned"] == 2 and data["behaviours"][0]["contacts"] == 4
    before = data
    rollups.rebuild()
    assert reports.retention(period, min_contacts=2) == before


# --- periods and pages --------------------------------------------------------------------------------------

def test_period_parsing_and_errors():
    period, compare, errors = parse({"start": "2026-10-01", "end": "2026-10-10", "compare": "1"})
    assert period == Period(date(2026, 10, 1), date(2026, 10, 10)) and compare and not errors
    assert period.previous() == Period(date(2026, 9, 21), date(2026, 9, 30))
    assert "YYYY-MM-DD" in parse({"start": "10/01/2026"})[2][0]
    assert parse({"start": "2026-10-10", "end": "2026-10-01"})[2] == ["The start date is after the end date."]
    assert "at most" in parse({"start": "2020-01-01", "end": "2026-01-01"})[2][0]


URLS = ["insights:dashboard", "insights:funnel", "insights:web", "insights:email", "insights:conversion",
        "insights:attribution", "insights:retention"]


@pytest.mark.parametrize("name", URLS)
def test_pages_render_with_charts_and_downloads(logged_in, name):
    c = contact("page", source="form")
    stage(c, "", "lead", DAY)
    stage(c, "lead", "customer", DAY + timedelta(days=1))
    visit(c, DAY, [("/pricing", 5000, True), ("/<script>", 1000, True)], source_kind="search", keyword="<b>kw</b>")
    event("Feature D Used", c, DAY + timedelta(days=2))
    rollups.rebuild()
    url = reverse(name)
    response = logged_in.get(url, {"start": "2026-09-01", "end": "2026-10-31", "compare": "1", "min": "1"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>" not in html.split("</nav>", 2)[-1].replace('<script src=', "")  # visitor text is escaped
    assert "Download CSV" in html and "<svg" in html
    assert "Download image (SVG)" in html and "Download image (PNG)" in html
    key = html.split('data-chart="', 1)[1].split('"', 1)[0]
    csv = logged_in.get(url, {"start": "2026-09-01", "end": "2026-10-31", "format": "csv", "chart": key, "min": "1"})
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    assert csv.content.decode("utf-8-sig").splitlines()[0]
    svg = logged_in.get(url, {"start": "2026-09-01", "end": "2026-10-31", "format": "svg", "chart": key, "min": "1"})
    assert svg.status_code == 200 and svg["Content-Type"].startswith("image/svg+xml")
    assert b"xmlns=\"http://www.w3.org/2000/svg\"" in svg.content
    missing = logged_in.get(url, {"format": "csv", "chart": "nope"})
    assert missing.status_code == 404


def test_page_errors_are_specific(logged_in):
    html = logged_in.get(reverse("insights:web"), {"start": "yesterday"}).content.decode()
    assert "Start must be a date written as YYYY-MM-DD, not “yesterday”." in html
    html = logged_in.get(reverse("insights:conversion"), {"goal": "stage:boss", "days": "0"}).content.decode()
    assert "Choose a conversion" in html and "days must be a whole number from 1 to 365" in html


def test_csv_download_is_safe_from_formulas(logged_in):
    visit(None, DAY, [("=cmd|' /C calc'!A0", 1000, True)])
    rollups.rebuild()
    csv = logged_in.get(reverse("insights:web"), {"start": "2026-09-01", "end": "2026-10-31", "format": "csv",
                                                  "chart": "pages"}).content.decode("utf-8-sig")
    assert "'=cmd" in csv


def test_old_funnel_address_redirects(logged_in):
    response = logged_in.get(reverse("lifecycle:funnel"), {"days": "30"}, follow=True)
    assert response.status_code == 200 and response.request["PATH_INFO"] == reverse("insights:funnel")
    assert "data-funnel" in response.content.decode()


def test_contact_pages_are_personal_data():
    c = contact("pd")
    visit(c, DAY, [("/pricing", 1000, True)])
    rollups.rebuild()
    from kizuna.insights import personal_data

    assert personal_data.export(c)["pages_viewed"][0]["path"] == "/pricing"
    c.delete()
    assert not ContactPage.objects.exists()
    assert DailyStage.objects.count() == 0


def test_email_reports_per_email_bulk_send_and_journey_step_keep_machines_apart():
    from kizuna.messaging.models import BulkSend, EmailTemplate, Message, Sender, TemplateVersion

    sender = Sender.objects.create(name="M", from_name="M", from_email="m@k.example", organisation="K",
                                   postal_address="東京都")
    template = EmailTemplate.objects.create(name="12月号", sender=sender)
    version = TemplateVersion.objects.create(template=template, number=1, subject="s", html="<p>x</p>", text="x")
    bulk = BulkSend.objects.create(name="12月号 配信", template=template, version=version, status="done",
                                   created_at=DAY)

    def message(n: int, **fields) -> Message:
        return Message.objects.create(idempotency_key=f"m{n}", to_email=f"m{n}@x.example", version=version,
                                      sender=sender, status="sent", sent_at=DAY, **fields)

    message(1, bulk=bulk, opened_at=DAY, clicked_at=DAY)  # a person opened and clicked
    message(2, bulk=bulk, machine_opened_at=DAY, machine_clicked_at=DAY)  # a scanner only
    message(3, bulk=bulk, bounce="hard")
    message(4, bulk=bulk, opened_at=DAY, machine_opened_at=DAY)  # both: a person's open
    message(5, extra={"journey": 7, "step": "welcome"}, opened_at=DAY)
    message(6, extra={"journey": 7, "step": "welcome"})
    [per_email] = reports.template_reports(PERIOD)
    assert per_email["template"] == template and per_email["sent"] == 6 and per_email["delivered"] == 5
    assert per_email["human_opens"] == 3 and per_email["machine_only_opens"] == 1
    assert per_email["human_clicks"] == 1 and per_email["machine_only_clicks"] == 1
    assert per_email["open_rate"] == pytest.approx(3 / 5)
    [per_send] = reports.bulk_reports(PERIOD)
    assert per_send["send"] == bulk and per_send["sent"] == 4 and per_send["human_opens"] == 2
    assert per_send["machine_only_opens"] == 1 and per_send["machine_open_percent"] == 33
    [step] = reports.journey_step_reports(PERIOD)
    assert (step["journey"], step["step"], step["sent"], step["human_opens"]) == ("#7", "welcome", 2, 1)
    cols, rows = reports.email_trend(PERIOD)
    assert rows[PERIOD.each_day().index(DAY.date())][1:] == [6, 3, 1, 1]
