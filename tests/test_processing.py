"""Processing: identity, sessions, page flow, enrichment, handlers, exactly-once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.events import ingest, processing, registry
from kizuna.events.models import (
    Event,
    Identity,
    IncomingEvent,
    IpRange,
    PageView,
    Session,
    TrackingSettings,
    Visitor,
)

pytestmark = pytest.mark.django_db

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
SEEN: list[tuple[str, bool, int | None]] = []


def recording_handler(events, *, replay):
    SEEN.extend((e.message_id, replay, e.contact_id) for e in events)


@pytest.fixture(autouse=True)
def _handlers():
    SEEN.clear()
    with override_settings(KIZUNA_EVENT_HANDLERS=["tests.test_processing.recording_handler"]):
        registry.reset()
        yield
    registry.reset()


class Clock:
    """Sends events at controlled times, as a browser would."""

    def __init__(self) -> None:
        self.at = timezone.now() - timedelta(hours=3)
        self.n = 0

    def send(self, msg: dict, *, after: float = 0, ip: str = "198.51.100.7", ua: str = CHROME) -> str:
        self.at += timedelta(seconds=after)
        self.n += 1
        msg = {"messageId": f"msg-{self.n}", "timestamp": self.at.isoformat(), **msg}
        result = ingest.ingest([msg], ingest.RequestInfo(ip=ip, user_agent=ua, source="Website"))
        assert not result.rejected, result.rejected
        return msg["messageId"]


def page(aid: str, path: str, *, referrer: str = "", query: str = "", title: str = "") -> dict:
    url = f"https://www.example.co.jp{path}{query}"
    return {"type": "page", "anonymousId": aid, "name": title or path,
            "properties": {"url": url, "path": path, "title": title or path, "referrer": referrer}}


def engaged(aid: str, page_view_id: str, ms: int, depth: int = 50) -> dict:
    return {"type": "track", "anonymousId": aid, "event": "Page Engaged",
            "properties": {"page_view_id": page_view_id, "visible_ms": ms, "scroll_depth": depth, "final": True}}


def test_anonymous_visit_then_identify_links_history_and_replays():
    c = Clock()
    p1 = c.send(page("a1", "/", referrer="https://search.yahoo.co.jp/search?p=MA%E3%83%84%E3%83%BC%E3%83%AB"))
    c.send(page("a1", "/pricing"), after=20)
    processing.drain()
    assert Event.objects.filter(anonymous_id="a1", contact__isnull=True).count() == 2
    assert all(not replay and contact is None for _, replay, contact in SEEN)

    c.send({"type": "identify", "anonymousId": "a1", "traits": {"email": "Taro.Yamada@Example.co.jp",
                                                                   "name": "山田 太郎", "company": "丸商事"}},
           after=5)
    processing.drain()
    contact = Contact.objects.get(email="taro.yamada@example.co.jp")
    assert (contact.family_name, contact.given_name, contact.company_name) == ("山田", "太郎", "丸商事")
    assert contact.source == "event"
    assert Event.objects.filter(contact=contact).count() == 3
    assert Session.objects.get(anonymous_id="a1").contact == contact
    assert set(PageView.objects.values_list("contact_id", flat=True)) == {contact.id}
    assert Visitor.objects.get(anonymous_id="a1").contact == contact
    replayed = [(m, cid) for m, replay, cid in SEEN if replay]
    assert sorted(replayed) == sorted([(p1, contact.id), ("msg-2", contact.id)])
    assert set(Identity.objects.values_list("kind", "value")) == {
        ("anonymous", "a1"), ("email", "taro.yamada@example.co.jp")}

    c.send(page("a1", "/contact"), after=10)
    processing.drain()
    assert Event.objects.get(message_id="msg-4").contact == contact


def test_identify_finds_an_imported_contact_instead_of_creating_one():
    existing = Contact.objects.create(email="hanako@example.co.jp", family_name="佐藤")
    Clock().send({"type": "identify", "anonymousId": "b1", "traits": {"email": "hanako@example.co.jp"}})
    processing.drain()
    assert Contact.objects.count() == 1
    assert Identity.objects.get(kind="anonymous", value="b1").contact == existing


def test_user_id_and_email_of_two_contacts_merge_keeping_everything():
    c = Clock()
    c.send({"type": "identify", "userId": "crm-42", "anonymousId": "x1", "traits": {"firstName": "健一"}})
    c.send({"type": "identify", "anonymousId": "x2", "traits": {"email": "kenichi@example.co.jp"}}, after=1)
    c.send(page("x2", "/docs"), after=1)
    processing.drain()
    assert Contact.objects.count() == 2
    c.send({"type": "identify", "userId": "crm-42", "traits": {"email": "kenichi@example.co.jp"}}, after=1)
    processing.drain()
    [merged] = Contact.objects.all()
    assert merged.given_name == "健一" and merged.email == "kenichi@example.co.jp"
    assert Event.objects.exclude(contact=merged).count() == 0
    assert Identity.objects.filter(contact=merged).count() == 4  # user, 2 browsers, email
    assert PageView.objects.get().contact == merged


def test_alias_merges_previous_id_into_user():
    c = Clock()
    c.send({"type": "identify", "userId": "old-1", "traits": {"email": "a@example.co.jp"}})
    c.send({"type": "identify", "userId": "new-1", "traits": {"email": "b@example.co.jp"}}, after=1)
    c.send({"type": "alias", "previousId": "old-1", "userId": "new-1"}, after=1)
    processing.drain()
    assert Contact.objects.count() == 1
    assert Identity.objects.get(kind="user", value="old-1").contact == Contact.objects.get()


def test_shared_computer_relinks_without_merging():
    c = Clock()
    c.send({"type": "identify", "anonymousId": "pc", "traits": {"email": "first@example.co.jp"}})
    c.send(page("pc", "/a"), after=5)
    c.send({"type": "identify", "anonymousId": "pc", "traits": {"email": "second@example.co.jp"}}, after=60)
    c.send(page("pc", "/b"), after=5)
    processing.drain()
    first, second = (Contact.objects.get(email=f"{n}@example.co.jp") for n in ("first", "second"))
    assert Event.objects.get(path="/a").contact == first
    assert Event.objects.get(path="/b").contact == second
    assert Contact.objects.count() == 2


def test_never_linked_by_ip_alone():
    c = Clock()
    c.send({"type": "identify", "anonymousId": "p1", "traits": {"email": "p1@example.co.jp"}}, ip="203.0.113.5")
    c.send(page("p2", "/"), ip="203.0.113.5")
    processing.drain()
    assert Event.objects.get(anonymous_id="p2").contact is None


def test_sessions_entry_exit_and_dwell_from_visible_time():
    c = Clock()
    first = c.send(page("s1", "/", referrer="https://www.bing.com/search?q=%E5%90%8D%E5%88%BA%E7%AE%A1%E7%90%86"))
    c.send(engaged("s1", first, 4200, 80), after=5)
    second = c.send(page("s1", "/features", referrer="https://www.example.co.jp/"), after=1)
    c.send(engaged("s1", second, 9000), after=10)
    c.send(page("s1", "/pricing", referrer="https://www.example.co.jp/features"), after=1)
    processing.drain()
    session = Session.objects.get()
    assert (session.entry_path, session.exit_path, session.page_views) == ("/", "/pricing", 3)
    assert (session.source_kind, session.source_engine, session.keyword) == ("search", "Bing", "名刺管理")
    pages = list(PageView.objects.order_by("seq").values_list("path", "seq", "dwell_ms", "measured", "is_exit"))
    assert pages == [("/", 1, 4200, True, False), ("/features", 2, 9000, True, False),
                     ("/pricing", 3, 0, False, True)]
    assert session.engaged_ms == 13_200
    assert PageView.objects.get(seq=1).scroll_depth == 80
    visitor = Visitor.objects.get()
    assert (visitor.sessions, visitor.page_views, visitor.last_url) == (1, 3, "https://www.example.co.jp/pricing")


def test_dwell_estimated_from_next_page_without_tracker_data():
    c = Clock()
    c.send(page("n1", "/a"))
    c.send(page("n1", "/b"), after=42)
    processing.drain()
    assert PageView.objects.get(path="/a").dwell_ms == 42_000


def test_inactivity_and_new_campaign_start_new_sessions():
    c = Clock()
    c.send(page("t1", "/"))
    c.send(page("t1", "/a", referrer="https://www.example.co.jp/"), after=60)
    c.send(page("t1", "/b", referrer="https://www.example.co.jp/a"), after=31 * 60)  # timeout
    c.send(page("t1", "/lp", query="?utm_source=newsletter&utm_medium=email&utm_campaign=nov"), after=30)
    c.send(page("t1", "/lp2", query="?gclid=abc123"), after=30)
    processing.drain()
    sessions = list(Session.objects.order_by("started_at").values_list("entry_path", "page_views", "source_kind"))
    assert sessions == [("/", 2, "direct"), ("/b", 1, "internal"), ("/lp", 1, "email"), ("/lp2", 1, "paid")]
    assert Session.objects.get(entry_path="/lp").utm_campaign == "nov"
    assert Session.objects.get(entry_path="/lp2").click_id == "gclid"
    assert Visitor.objects.get().sessions == 4


def test_ip_range_table_names_the_company_and_bots_are_flagged():
    IpRange.objects.create(network="198.51.100.0/24", company_name="丸商事株式会社")
    c = Clock()
    c.send(page("c1", "/"))
    c.send(page("bot1", "/"), ua="Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
    processing.drain()
    assert Session.objects.get(anonymous_id="c1").company_name == "丸商事株式会社"
    assert Visitor.objects.get(anonymous_id="c1").company_name == "丸商事株式会社"
    assert Event.objects.get(anonymous_id="bot1").bot
    assert not Event.objects.get(anonymous_id="c1").bot
    assert Session.objects.get(anonymous_id="bot1").bot


def test_ip_anonymisation():
    settings_row = TrackingSettings.load()
    settings_row.anonymize_ip = True
    settings_row.save()
    Clock().send(page("ip1", "/"), ip="198.51.100.77")
    processing.drain()
    assert Event.objects.get().ip == "198.51.100.0"
    assert Session.objects.get().ip == "198.51.100.0"


def test_a_message_processed_twice_is_skipped():
    c = Clock()
    c.send(page("d1", "/"))
    processing.drain()
    # The same message arriving again after its inbox row is gone (a late client retry).
    c.n -= 1
    c.send(page("d1", "/"))
    assert IncomingEvent.objects.count() == 1
    processing.drain()
    assert Event.objects.count() == 1 and PageView.objects.count() == 1
    assert len(SEEN) == 1


def test_a_message_that_cannot_be_processed_waits_with_its_error_and_others_go_on():
    c = Clock()
    c.send(page("e1", "/"))
    IncomingEvent.objects.create(message_id="broken", lane=0, received_at=timezone.now(), payload="{}")
    IncomingEvent.objects.create(message_id="broken2", lane=1, received_at=timezone.now(), payload="{}")
    c.send(page("e1", "/b"), after=2)
    processing.drain()
    assert Event.objects.count() == 2
    failed = IncomingEvent.objects.order_by("message_id")
    assert [f.message_id for f in failed] == ["broken", "broken2"]
    assert all("KeyError" in f.error for f in failed)
    status = processing.lag()
    assert status["failed"] == 2 and status["pending"] == 0
    assert processing.retry_failed() == 2


def test_lag_reports_waiting_events():
    Clock().send(page("l1", "/"))
    status = processing.lag()
    assert status["pending"] == 1 and status["lag_seconds"] >= 0
