"""Sessions, page flow and visitors, derived from processed events.

A session is one visit of one browser: it ends after the inactivity timeout, or when a new
campaign arrives (another ad click, utm campaign or external source). Page views keep their
order in the session (`seq`), the visible time the tracker measured (`dwell_ms`), and which
one was the exit. The rollups here are what the visitor list and web reports read, so they are
written as events are processed rather than computed at report time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Max

from kizuna.events import enrichment, referrers
from kizuna.events.bulk import insert_rows, update_rows
from kizuna.events.models import Event, IpRange, PageView, Session, TrackingSettings, Visitor, WriteKey

ENGAGEMENT_EVENT = "Page Engaged"
MAX_DWELL = timedelta(hours=4)


@dataclass
class Config:
    timeout: timedelta
    anonymize_ip: bool
    bot_rules: enrichment.BotRules
    companies: enrichment.IpCompanyTable
    own_hosts: tuple[str, ...]


_config_lock = threading.Lock()
_config: tuple[float, tuple, Config] | None = None


def load_config() -> Config:
    """Settings, bot rules and the IP-range table, rebuilt only when they change."""
    global _config
    ts = TrackingSettings.load()
    ranges = IpRange.objects.aggregate(n=Max("id"), at=Max("created_at"))
    version = (ts.updated_at, ranges["n"], ranges["at"], IpRange.objects.count())
    with _config_lock:
        if _config is not None and _config[1] == version and time.monotonic() - _config[0] < 60:
            return _config[2]
    rules, _errors = enrichment.compile_bot_rules(ts.bot_user_agents, ts.bot_networks)
    table = enrichment.IpCompanyTable(IpRange.objects.values_list("network", "company_id", "company_name"))
    hosts = tuple(sorted({d.lstrip("*.") for k in WriteKey.objects.all() for d in k.domain_list()}))
    config = Config(timedelta(minutes=ts.session_timeout_minutes or 30), ts.anonymize_ip, rules, table, hosts)
    with _config_lock:
        _config = (time.monotonic(), version, config)
    return config


def campaign_of(ev: Event, own_hosts: tuple[str, ...] = ()) -> referrers.TrafficSource:
    return referrers.classify(
        ev.referrer, ev.url, own_hosts=own_hosts,
        utm={k: v for k, v in (("utm_source", ev.utm_source), ("utm_medium", ev.utm_medium),
                               ("utm_campaign", ev.utm_campaign), ("utm_term", ev.utm_term),
                               ("utm_content", ev.utm_content)) if v},
    )


class SessionBuilder:
    """Assigns events to sessions in order and prepares page views and visitor rollups."""

    def __init__(self, events: Sequence[Event], config: Config) -> None:
        self.config = config
        self.events = events
        self.new_sessions: list[Session] = []
        self.changed_sessions: dict[int, Session] = {}
        self.page_views: list[tuple[PageView, Event]] = []
        self.by_page_view_id: dict[str, PageView] = {}
        self.changed_page_views: dict[int, PageView] = {}
        self.current: dict[str, Session] = {}
        self.last_page: dict[int, PageView] = {}  # id(session) -> its latest page view
        self.visitors: dict[str, Visitor] = {}
        self.new_visitor_ids: set[str] = set()
        self._prefetch()

    def _prefetch(self) -> None:
        anon = {e.anonymous_id for e in self.events if e.anonymous_id}
        if not anon:
            return
        earliest = min(e.occurred_at for e in self.events) - self.config.timeout
        for session in Session.objects.filter(anonymous_id__in=anon, last_activity_at__gte=earliest).order_by(
            "last_activity_at"
        ):
            self.current[session.anonymous_id] = session  # the latest wins
        by_id = {s.id: s for s in self.current.values()}
        if by_id:
            for pv in PageView.objects.filter(session_id__in=list(by_id), is_exit=True):
                self.last_page[id(by_id[pv.session_id])] = pv
        wanted = {
            e.properties.get("page_view_id") for e in self.events
            if e.type == "track" and e.name == ENGAGEMENT_EVENT and isinstance(e.properties.get("page_view_id"), str)
        }
        if wanted:
            for pv in PageView.objects.filter(page_view_id__in=wanted):
                self.by_page_view_id[pv.page_view_id] = pv
        for visitor in Visitor.objects.filter(anonymous_id__in=anon):
            self.visitors[visitor.anonymous_id] = visitor

    # --- per event --------------------------------------------------------------------------
    def apply_all(self) -> None:
        for ev in self.events:
            self.apply(ev)

    def apply(self, ev: Event) -> None:
        cfg = self.config
        company = cfg.companies.lookup(ev.ip) if ev.ip else None
        # Only browser traffic can be a bot; server-side events carry no user agent.
        ev.bot = enrichment.is_bot(ev.user_agent, ev.ip or None, cfg.bot_rules)[:100] if ev.user_agent else ""
        if not ev.anonymous_id:
            if cfg.anonymize_ip and ev.ip:
                ev.ip = enrichment.anonymize_ip(ev.ip) or None
            return
        session = self.current.get(ev.anonymous_id)
        if ev.type in ("page", "screen"):
            source = campaign_of(ev, cfg.own_hosts)
            if session is None or self._starts_new(session, ev, source):
                session = self._start(ev, source, company)
            self._page(session, ev)
        elif ev.type == "track" and ev.name == ENGAGEMENT_EVENT:
            self._engagement(ev)
        if session is not None and ev.occurred_at - session.last_activity_at <= cfg.timeout:
            ev.session = session
            if ev.occurred_at > session.last_activity_at:
                session.last_activity_at = ev.occurred_at
            if ev.contact_id and not session.contact_id:
                session.contact_id = ev.contact_id
            self._touch(session)
        self._visitor(ev, session, company)
        if cfg.anonymize_ip and ev.ip:
            ev.ip = enrichment.anonymize_ip(ev.ip) or None

    def _starts_new(self, session: Session, ev: Event, source: referrers.TrafficSource) -> bool:
        if ev.occurred_at - session.last_activity_at > self.config.timeout:
            return True
        if source.kind in ("internal", "direct"):
            return False
        return (source.kind, source.host, source.click_id, ev.utm_campaign, ev.utm_source, ev.utm_medium) != (
            session.source_kind, session.source_host, session.click_id, session.utm_campaign,
            session.utm_source, session.utm_medium,
        )

    def _start(self, ev: Event, source: referrers.TrafficSource, company) -> Session:
        ua = enrichment.parse_user_agent(ev.user_agent)
        ip_info = enrichment.lookup_ip(ev.ip)
        company_id, company_name = company if company else (None, ip_info.org)
        session = Session(
            anonymous_id=ev.anonymous_id, contact_id=ev.contact_id, started_at=ev.occurred_at,
            last_activity_at=ev.occurred_at, entry_url=ev.url, entry_path=ev.path, referrer=ev.referrer,
            source_kind=source.kind, source_host=source.host[:255], source_engine=source.engine[:100],
            keyword=source.keyword[:500], click_id=source.click_id, utm_source=ev.utm_source,
            utm_medium=ev.utm_medium, utm_campaign=ev.utm_campaign, utm_term=ev.utm_term,
            utm_content=ev.utm_content,
            ip=(enrichment.anonymize_ip(ev.ip) or None) if self.config.anonymize_ip and ev.ip else ev.ip,
            country=ip_info.country, network_org=ip_info.org[:255], company_id=company_id,
            company_name=(company_name or "")[:255], browser=ua.browser[:100], os=ua.os[:100], device=ua.device,
            bot=ev.bot,
        )
        self.new_sessions.append(session)
        self.current[ev.anonymous_id] = session
        return session

    def _page(self, session: Session, ev: Event) -> None:
        previous = self.last_page.get(id(session))
        if previous is not None:
            previous.is_exit = False
            if not previous.measured:
                gap = ev.occurred_at - previous.occurred_at
                previous.dwell_ms = int(min(gap, MAX_DWELL).total_seconds() * 1000) if gap.total_seconds() > 0 else 0
            self._changed(previous)
        session.page_views += 1
        session.exit_url, session.exit_path = ev.url, ev.path
        page_view_id = ev.properties.get("page_view_id")
        pv = PageView(
            page_view_id=page_view_id if isinstance(page_view_id, str) and page_view_id else ev.message_id,
            session=session, contact_id=ev.contact_id, anonymous_id=ev.anonymous_id, seq=session.page_views,
            occurred_at=ev.occurred_at, url=ev.url[:2000], path=(ev.path or "/")[:1000], title=ev.title[:500],
        )
        self.page_views.append((pv, ev))
        self.by_page_view_id[pv.page_view_id] = pv
        self.last_page[id(session)] = pv

    def _engagement(self, ev: Event) -> None:
        pv = self.by_page_view_id.get(ev.properties.get("page_view_id"))
        visible = ev.properties.get("visible_ms")
        if pv is None or isinstance(visible, bool) or not isinstance(visible, int | float) or visible < 0:
            return
        visible = int(min(visible, MAX_DWELL.total_seconds() * 1000))
        before = pv.dwell_ms if pv.measured else 0
        pv.dwell_ms = max(before, visible)
        pv.measured = True
        depth = ev.properties.get("scroll_depth")
        if isinstance(depth, int | float) and not isinstance(depth, bool):
            pv.scroll_depth = max(pv.scroll_depth, int(min(max(depth, 0), 100)))
        session = pv.session
        session.engaged_ms += pv.dwell_ms - before
        self._touch(session)
        self._changed(pv)

    def _visitor(self, ev: Event, session: Session | None, company) -> None:
        visitor = self.visitors.get(ev.anonymous_id)
        if visitor is None:
            visitor = Visitor(anonymous_id=ev.anonymous_id, first_seen=ev.occurred_at, last_seen=ev.occurred_at)
            self.visitors[ev.anonymous_id] = visitor
            self.new_visitor_ids.add(ev.anonymous_id)
        visitor.last_seen = max(visitor.last_seen, ev.occurred_at)
        if ev.contact_id:
            visitor.contact_id = ev.contact_id
        if ev.type in ("page", "screen"):
            visitor.page_views += 1
            visitor.last_url = ev.url[:2000]
        if session is not None and session.pk is None and session.page_views == 1 and ev.type in ("page", "screen"):
            visitor.sessions += 1
        if session is not None:
            if session.company_name:
                visitor.company_id, visitor.company_name = session.company_id, session.company_name
            visitor.country = session.country or visitor.country
        visitor.bot = ev.bot or visitor.bot

    def _touch(self, session: Session) -> None:
        if session.pk is not None:
            self.changed_sessions[session.pk] = session

    def _changed(self, pv: PageView) -> None:
        if pv.pk is not None:
            self.changed_page_views[pv.pk] = pv

    # --- writes -----------------------------------------------------------------------------
    def save_sessions(self) -> None:
        """Before events are inserted, so events can point at their sessions."""
        if self.new_sessions:
            Session.objects.bulk_create(self.new_sessions)
        if self.changed_sessions:
            update_rows(
                Session, self.changed_sessions.values(),
                ["last_activity_at", "page_views", "engaged_ms", "exit_url", "exit_path", "contact"],
            )

    def save_pages(self) -> None:
        """After events are inserted (page views point at their events)."""
        for pv, ev in self.page_views:
            pv.event = ev
        if self.page_views:
            insert_rows(PageView, [pv for pv, _ in self.page_views])
        if self.changed_page_views:
            update_rows(PageView, self.changed_page_views.values(), ["dwell_ms", "measured", "scroll_depth", "is_exit"])
        # Engagement for pages inserted just now was applied before their insert; for older
        # sessions the rollups were touched above and saved with save_sessions().
        new = [v for a, v in self.visitors.items() if a in self.new_visitor_ids]
        old = [v for a, v in self.visitors.items() if a not in self.new_visitor_ids]
        if new:
            Visitor.objects.bulk_create(new)
        if old:
            update_rows(Visitor, old, [
                "contact", "last_seen", "sessions", "page_views", "company", "company_name", "country",
                "last_url", "bot",
            ])
