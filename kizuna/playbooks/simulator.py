"""The simulator: synthetic visitors and customers living the stories of MISSION.md on the demo
website, over accelerated time, through the real product.

Every visitor is a script (a generator) that acts like a browser or a backend would: GET the demo
site's pages, POST the tracker's batches to /v1/batch with its anonymous id and dwell times ("Page
Engaged"), open a hosted form and post it with its signed token, open mails (image proxies open
some first), follow tracked links (security scanners follow some first), download the PDF, and —
for customers — the product's backend sends "Subscription Started" and "Feature Used". Each
request goes through Kizuna's own WSGI application (the tracking front and Django, exactly what
`kizuna serve` runs), in this process; the worker's loops run here too, one pass at a time. Nothing
is written to the database by the simulator itself except the IP ranges of its fictional
companies, which an operator would enter the same way.

Accelerated time: the process runs on a simulated clock (time-machine patches the clock of the
whole process, so `timezone.now`, model defaults and tokens all agree). The clock jumps from one
due thing to the next: a visitor's next action, a journey step or a queued mail; when nothing is
due it moves in steps of at most an hour so schedules and segment refreshes still happen. Between
actions the worker does one pass (forms, events, journeys, outbox, hand-off). So 14 days take
about a minute, and what they leave behind is what the product would have recorded in 14 days.
The simulated days end at the real now: after the run, the clock is real again and the data is
ordinary history. See docs/decisions/0021-playbooks-and-simulator.md.
"""

from __future__ import annotations

import heapq
import io
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from urllib.parse import quote, urlencode, urlsplit

import orjson
import time_machine
from django.conf import settings
from django.core import signals
from django.db import close_old_connections
from django.test.utils import override_settings
from django.utils import timezone
from faker import Faker

from kizuna.events.demo import UAS as BROWSERS

WHITEPAPER_FORM, SEMINAR_FORM = "ma-guide", "seminar-signup"
KEY_FEATURE = "report-builder"
KEYWORDS = ["マーケティングオートメーション 比較", "MA ツール 中小企業", "リードナーチャリング 方法",
            "スコアリング 営業 連携", "メール配信 システム 法人", "ステップメール 作り方"]
PROXY_OPEN = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
BROWSE = ["", "features/", "features/scoring/", "features/email/", "case-studies/", "blog/lead-nurturing/",
          "seminars/", "careers/"]
# The simulated clock: actions within WORK_EVERY are processed together; with nothing due, the
# clock moves IDLE_STEP at a time; segments whose rules depend on "the last N days" every 12 hours.
WORK_EVERY = timedelta(minutes=30)
IDLE_STEP = timedelta(hours=4)
SEGMENTS_EVERY = timedelta(hours=12)
TOKEN = re.compile(r'name="kz_token" value="([^"]+)"')
HREF = re.compile(r'href="([^"]+)"')
PIXEL = re.compile(r'src="([^"]+/e/o/[^"]+)"')


@dataclass
class Persona:
    kind: str  # browser, lead, keen, seminar, customer
    aid: str
    ip: str
    agent: str
    email: str = ""
    family: str = ""
    given: str = ""
    company: str = ""
    title: str = ""
    open_rate: float = 0.5
    click_rate: float = 0.3
    language: str = "ja"


@dataclass
class Summary:
    days: float = 0
    visitors: Counter = field(default_factory=Counter)
    requests: Counter = field(default_factory=Counter)
    mails_seen: int = 0
    passes: int = 0
    personas: list[Persona] = field(default_factory=list)

    def __str__(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.visitors.items()))
        return (f"{self.days:g} simulated days: {kinds}; {self.requests['page']} page views, "
                f"{self.requests['form']} form posts, {self.mails_seen} mails received, "
                f"{self.requests['open']} opens, {self.requests['click']} clicks, {self.passes} worker passes")


class Web:
    """HTTP requests into Kizuna's own WSGI application (kizuna.wsgi: tracking front + Django)."""

    def __init__(self) -> None:
        from django.core.handlers.wsgi import WSGIHandler

        from kizuna.events.http import IngestionApp

        self.app = IngestionApp(WSGIHandler())
        base = urlsplit(settings.BASE_URL)
        self.base, self.host, self.scheme = settings.BASE_URL.rstrip("/"), base.netloc, base.scheme or "http"

    def request(self, method: str, url: str, *, ip: str, agent: str, body: bytes = b"", content_type: str = "",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": parts.path, "QUERY_STRING": parts.query, "SERVER_NAME":
            self.host.split(":")[0], "SERVER_PORT": self.host.split(":")[1] if ":" in self.host else "80",
            "HTTP_HOST": self.host, "REMOTE_ADDR": ip, "HTTP_USER_AGENT": agent, "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": self.scheme, "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
            "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type,
        }
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        answer: dict = {}

        def start_response(status, response_headers, exc_info=None):
            answer["status"] = int(status.split()[0])
            answer["headers"] = {k.lower(): v for k, v in response_headers}

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return answer["status"], answer["headers"], data


class Simulation:
    def __init__(self, *, seed: int = 7, visitors: int = 60, days: float = 14, end: datetime | None = None,
                 keen: int = 1, on_progress: Callable[[str], None] | None = None):
        self.rng = random.Random(seed)
        self.fake = Faker("ja_JP")
        self.fake.seed_instance(seed)
        self.visitors, self.days, self.keen = visitors, days, keen
        self.end = end or timezone.now()
        self.start = self.end - timedelta(days=days)
        self.summary = Summary(days=days)
        self.queue: list[tuple[datetime, int, Iterator]] = []
        self.seq = 0
        self.by_email: dict[str, Persona] = {}
        self.last_mail = 0
        self.last_work: datetime | None = None
        self.last_refresh: datetime | None = None
        self.progress = on_progress or (lambda _text: None)
        self.traveller = None

    # --- clock -----------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return timezone.now()

    def move(self, moment: datetime) -> None:
        if moment > self.now:
            self.traveller.move_to(moment)

    def spawn(self, script: Iterator, at: datetime) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, script))

    # --- the run ---------------------------------------------------------------------------

    def run(self, prepare: Callable[[], None] | None = None) -> Summary:
        """Runs the whole simulated period; `prepare` runs first, at its start (installing the
        playbooks then makes their journeys live before the first visitor arrives)."""
        from kizuna.db import writelock

        with time_machine.travel(self.start, tick=False) as traveller, \
                override_settings(KIZUNA_INGEST_GROUP_COMMIT=False):
            self.traveller = traveller
            # As Django's test client does: one process, one connection kept across requests.
            signals.request_started.disconnect(close_old_connections)
            signals.request_finished.disconnect(close_old_connections)
            writelock.set_background()
            try:
                if prepare:
                    prepare()
                self.web = Web()
                from kizuna.playbooks.site import write_key

                self.write_key = write_key().key
                self.cast()
                self.loop()
            finally:
                signals.request_started.connect(close_old_connections)
                signals.request_finished.connect(close_old_connections)
        return self.summary

    def run_live(self, *, speed: float = 1440, stop=None, log: Callable[[str], None] | None = None) -> None:
        """Visitors keep arriving while the demo runs, at the real time of the server and worker
        (which do the processing). Pauses are divided by `speed` but a human-scale pause (reading a
        page, typing a form) keeps up to 5 real seconds, so a visitor who comes back "the next day"
        comes back minutes later while journeys' waits stay real. A new cast arrives when the last
        one is done. A failing visitor is logged, never fatal to the demo."""
        import logging
        import time as real_time

        from kizuna.messaging.models import CapturedMail
        from kizuna.playbooks.site import write_key

        logger = logging.getLogger("kizuna.simulator")

        def pause(delay: timedelta) -> timedelta:
            return max(delay / speed, min(delay, timedelta(seconds=5)))

        self.web = Web()
        with override_settings(KIZUNA_INGEST_GROUP_COMMIT=False):
            self.write_key = write_key().key
            self.last_mail = CapturedMail.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            rounds = 0
            while stop is None or not stop.is_set():
                if not self.queue:
                    rounds += 1
                    self.start = self.end = timezone.now()
                    self.cast()
                    self.queue = [(self.start + (at - self.start) / speed, seq, script)
                                  for at, seq, script in self.queue]
                    heapq.heapify(self.queue)
                    (log or logger.info)(f"live visitors, round {rounds}: {dict(self.summary.visitors)}")
                at, seq, script = self.queue[0]
                wait = (at - timezone.now()).total_seconds()
                if wait > 0:
                    real_time.sleep(min(wait, 2))
                    self.read_mail()
                    continue
                heapq.heappop(self.queue)
                try:
                    delay = next(script)
                except StopIteration:
                    continue
                except Exception:  # noqa: BLE001 - one visitor's trouble must not stop the demo
                    logger.exception("a simulated visitor failed")
                    close_old_connections()
                    continue
                self.spawn(script, timezone.now() + pause(delay))

    def loop(self) -> None:
        last_report = self.start
        while self.queue and self.queue[0][0] <= self.end:
            at, seq, script = heapq.heappop(self.queue)
            if not self.advance_to(at):  # the work on the way made something to do before `at`
                heapq.heappush(self.queue, (at, seq, script))
                continue
            try:
                delay = next(script)
            except StopIteration:
                continue
            self.spawn(script, self.now + delay)
            if self.now - last_report > timedelta(days=1):
                last_report = self.now
                self.progress(f"  {self.now:%Y-%m-%d %H:%M} — {self.summary}")
        self.advance_to(self.end)
        self.work()

    def advance_to(self, moment: datetime) -> bool:
        """Moves the clock to `moment`, doing the worker's due work on the way; stops early (and
        says False) when that work gave a visitor something to do sooner (a mail arrived)."""
        while True:
            due = self.next_due()
            step = min(d for d in (due, self.now + IDLE_STEP) if d is not None)
            step = max(step, self.now + timedelta(minutes=1))
            if step >= moment:
                break
            self.move(step)
            self.work()
            if self.queue and self.queue[0][0] < moment:
                return False
        self.move(moment)
        if self.last_work is None or self.now - self.last_work >= WORK_EVERY:
            self.work()
        return True

    def next_due(self) -> datetime | None:
        from kizuna.capture.models import Submission
        from kizuna.journeys.models import Enrollment
        from kizuna.messaging.models import Message

        candidates = [
            Enrollment.objects.filter(state=Enrollment.State.ACTIVE, due_at__isnull=False)
            .order_by("due_at").values_list("due_at", flat=True).first(),
            Message.objects.filter(status="queued").order_by("due_at").values_list("due_at", flat=True).first(),
            Submission.objects.filter(processed_at__isnull=True).order_by("next_attempt_at")
            .values_list("next_attempt_at", flat=True).first(),
        ]
        found = [c for c in candidates if c is not None and c > self.now]
        return min(found) if found else None

    def work(self) -> None:
        """One pass of everything the worker does, at the simulated now."""
        from kizuna.capture import processing as forms
        from kizuna.events import processing
        from kizuna.events.models import IncomingEvent
        from kizuna.handoff import delivery
        from kizuna.journeys import engine
        from kizuna.messaging import outbox, transports
        from kizuna.segments import membership

        def events() -> int:  # the inbox is usually empty: one query instead of a pass over every lane
            return processing.drain() if IncomingEvent.objects.filter(error="").exists() else 0

        capture = transports.CaptureTransport()
        for _round in range(5):
            done = forms.process_due() + events()
            done += engine.tick() + outbox.drain(transport=capture)
            done += events() + delivery.deliver_due()
            if not done:
                break
        if self.last_refresh is None or self.now - self.last_refresh >= SEGMENTS_EVERY:
            membership.refresh_due()  # windowed segments ("in the last 30 days") move with the clock
            self.last_refresh = self.now
        self.summary.passes += 1
        self.last_work = self.now
        self.read_mail()

    # --- the people --------------------------------------------------------------------------

    def cast(self) -> None:
        """Who visits: mostly anonymous browsers, some leads who download the guide, keen
        prospects (example 1), seminar attendees and new customers (example 2)."""
        from kizuna.events.models import IpRange

        kinds = ["keen"] * self.keen
        rest = max(0, self.visitors - len(kinds))
        weights = [("browser", 55), ("lead", 25), ("seminar", 8), ("customer", 12)]
        kinds += self.rng.choices([k for k, _w in weights], weights=[w for _k, w in weights], k=rest)
        ranges = {}
        for n, kind in enumerate(kinds):
            family, _fk, family_roman = self.fake.last_name_pair()
            given, _gk, given_roman = self.fake.first_name_pair()
            stem = f"{self.fake.last_romanized_name().lower()}-{self.rng.choice(['kogyo', 'shoji', 'tech', 'seiki'])}"
            company = self.fake.company()
            block = len(ranges) % 250
            if kind != "browser" or self.rng.random() < 0.4:  # a company network that IP ranges know
                ranges.setdefault(company, (f"198.18.{block}.0/24", block))
                ip = f"198.18.{ranges[company][1]}.{self.rng.randrange(2, 250)}"
            else:
                ip = f"126.{self.rng.randrange(1, 250)}.{self.rng.randrange(1, 250)}.{self.rng.randrange(2, 250)}"
            persona = Persona(
                kind=kind, aid=str(uuid.UUID(int=self.rng.getrandbits(128))), ip=ip,
                agent=self.rng.choice(BROWSERS), family=family, given=given, company=company,
                email=f"{given_roman}.{family_roman}{n}@{stem}.co.jp".lower(),
                title=self.rng.choice(["部長", "課長", "マネージャー", "担当", "主任"]) if kind != "keen" else "部長",
                open_rate={"keen": 1.0, "lead": 0.55, "seminar": 0.6, "customer": 0.5}.get(kind, 0),
                click_rate={"keen": 1.0, "lead": 0.3, "seminar": 0.35, "customer": 0.3}.get(kind, 0),
                language="en" if self.rng.random() < 0.1 and kind in ("lead", "seminar") else "ja",
            )
            if kind != "browser":
                self.by_email[persona.email] = persona
            self.summary.visitors[kind] += 1
            self.summary.personas.append(persona)
            first = self.start + timedelta(hours=self.rng.uniform(0.5, 24 * self.days * (0.35 if kind == "keen"
                                                                                         else 0.8)))
            self.spawn(getattr(self, f"script_{kind}")(persona), first)
        for company, (network, _block) in ranges.items():
            IpRange.objects.get_or_create(network=network, defaults={"company_name": company})

    # --- scripts (generators yielding the pause before their next action) -------------------

    def entry(self) -> tuple[str, str]:
        """(referrer, query) of a first page: search keyword, ad, social, or typed in."""
        roll = self.rng.random()
        if roll < 0.4:
            word = quote(self.rng.choice(KEYWORDS).replace(" ", "+"), safe="+")
            return self.rng.choice([f"https://www.google.co.jp/search?q={word}",
                                    f"https://search.yahoo.co.jp/search?p={word}",
                                    f"https://www.bing.com/search?q={word}"]), ""
        if roll < 0.6:
            return "https://www.google.co.jp/", f"?gclid={uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}" \
                                                "&utm_source=google&utm_medium=cpc&utm_campaign=ma-2026"
        if roll < 0.75:
            return self.rng.choice(["https://x.com/", "https://www.facebook.com/", "https://www.linkedin.com/"]), \
                "?utm_source=social&utm_medium=social"
        return "", ""

    def session(self, p: Persona, paths: list[str], referrer: str = "", query: str = "") -> Iterator[timedelta]:
        """A walk through pages with realistic dwell times (log-normal, median ~30 s)."""
        previous = referrer
        for n, path in enumerate(paths):
            url = f"{self.web.base}/demo-site/{path}" + (query if n == 0 else "")
            self.page_view(p, url, previous)
            dwell = timedelta(milliseconds=min(600_000, int(self.rng.lognormvariate(10.3, 0.8))))
            yield dwell
            self.engaged(p, url, dwell)
            previous = url
            yield timedelta(seconds=self.rng.randint(1, 8))

    def script_browser(self, p: Persona) -> Iterator[timedelta]:
        for _visit in range(self.rng.choice([1, 1, 1, 2, 3])):
            referrer, query = self.entry()
            pages = self.rng.sample(BROWSE, self.rng.choice([1, 1, 2, 3, 4]))
            if self.rng.random() < 0.3:
                pages.append("pricing/")
            yield from self.session(p, pages, referrer, query)
            yield timedelta(days=self.rng.uniform(0.5, 4))

    def script_lead(self, p: Persona) -> Iterator[timedelta]:
        referrer, query = self.entry()
        yield from self.session(p, ["blog/lead-nurturing/", "features/", "whitepaper/"], referrer, query)
        yield from self.fill_form(p, WHITEPAPER_FORM)
        if self.rng.random() < 0.4:
            yield timedelta(days=self.rng.uniform(1, 5))
            yield from self.session(p, ["pricing/", "case-studies/"], "https://www.google.co.jp/")

    def script_keen(self, p: Persona) -> Iterator[timedelta]:
        """Example 1: searches, reads many pages, asks for the guide, reads the mails, comes back."""
        word = quote("マーケティングオートメーション 比較".replace(" ", "+"), safe="+")
        yield from self.session(p, ["blog/lead-nurturing/", "features/", "features/scoring/", "case-studies/",
                                    "whitepaper/"], f"https://www.google.co.jp/search?q={word}")
        yield from self.fill_form(p, WHITEPAPER_FORM)
        yield timedelta(days=1, hours=self.rng.uniform(0, 4))
        yield from self.session(p, ["case-studies/manufacturing/", "pricing/"], "https://www.google.co.jp/")
        yield timedelta(days=2, hours=self.rng.uniform(0, 4))
        yield from self.session(p, ["pricing/", "features/email/", "case-studies/"], "")

    def script_seminar(self, p: Persona) -> Iterator[timedelta]:
        referrer, query = self.entry()
        yield from self.session(p, ["", "seminars/"], referrer, query)
        yield from self.fill_form(p, SEMINAR_FORM)
        yield timedelta(days=self.rng.uniform(1, 3))
        self.backend(p, "track", {"event": "Seminar Attended", "properties": {"seminar": "MA活用セミナー"}})

    def script_customer(self, p: Persona) -> Iterator[timedelta]:
        """Example 2: signs up; uses the product; half of them never try the key feature."""
        self.backend(p, "identify", {"traits": {"email": p.email, "lastName": p.family, "firstName": p.given,
                                                "company": {"name": p.company}}})
        self.backend(p, "track", {"event": "Subscription Started", "properties": {"plan": "standard"}})
        adopts = self.rng.random() < 0.5
        for day in range(int(self.days)):
            yield timedelta(days=1, minutes=self.rng.randint(-90, 90))
            if self.rng.random() < 0.6:
                feature = KEY_FEATURE if adopts and self.rng.random() < 0.5 else self.rng.choice(
                    ["dashboard", "contacts", "email-editor"])
                self.backend(p, "track", {"event": "Feature Used", "properties": {"feature": feature}})
            if day == 3 and self.rng.random() < 0.5:
                yield from self.session(p, ["products/analytics/", "pricing/"], "")

    # --- what a browser and a backend send ------------------------------------------------------

    def _batch(self, p: Persona, messages: list[dict]) -> None:
        body = orjson.dumps({"writeKey": self.write_key, "sentAt": self.now.isoformat(), "batch": messages})
        status, _h, data = self.web.request("POST", "/v1/batch", ip=p.ip, agent=p.agent, body=body,
                                            content_type="text/plain", headers={"Origin": self.web.base})
        if status >= 300:
            raise RuntimeError(f"the ingestion endpoint refused the tracker's batch: {status} {data[:300]!r}")

    def _context(self, p: Persona, url: str, referrer: str) -> dict:
        parts = urlsplit(url)
        context = {"library": {"name": "kizuna.js", "version": "1"}, "userAgent": p.agent, "locale": "ja-JP",
                   "timezone": "Asia/Tokyo", "page": {"url": url, "path": parts.path, "referrer": referrer,
                                                      "search": f"?{parts.query}" if parts.query else ""}}
        if "utm_source=" in parts.query:
            from urllib.parse import parse_qs

            q = parse_qs(parts.query)
            context["campaign"] = {k2: q[f"utm_{k}"][0] for k, k2 in (("source", "source"), ("medium", "medium"),
                                                                     ("campaign", "name")) if f"utm_{k}" in q}
        return context

    def page_view(self, p: Persona, url: str, referrer: str) -> None:
        status, _h, _body = self.web.request("GET", url, ip=p.ip, agent=p.agent,
                                             headers={"Referer": referrer} if referrer else None)
        if status != 200:
            raise RuntimeError(f"the demo site answered {status} for {url}")
        parts = urlsplit(url)
        self._pv = str(uuid.UUID(int=self.rng.getrandbits(128)))
        self._batch(p, [{
            "type": "page", "messageId": self._pv, "anonymousId": p.aid, "timestamp": self.now.isoformat(),
            "context": self._context(p, url, referrer),
            "properties": {"url": url, "path": parts.path, "referrer": referrer, "search": parts.query,
                           "page_view_id": self._pv},
        }])
        self.summary.requests["page"] += 1

    def engaged(self, p: Persona, url: str, dwell: timedelta) -> None:
        self._batch(p, [{
            "type": "track", "event": "Page Engaged", "messageId": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "anonymousId": p.aid, "timestamp": self.now.isoformat(), "context": self._context(p, url, ""),
            "properties": {"page_view_id": self._pv, "visible_ms": int(dwell.total_seconds() * 1000),
                           "scroll_depth": self.rng.randint(25, 100), "final": True},
        }])

    def fill_form(self, p: Persona, slug: str) -> Iterator[timedelta]:
        page = f"{self.web.base}/demo-site/{'whitepaper/' if slug == WHITEPAPER_FORM else 'seminars/'}"
        status, _h, body = self.web.request("GET", f"/f/{slug}", ip=p.ip, agent=p.agent,
                                            headers={"Cookie": f"_kz_aid={p.aid}", "Referer": page})
        match = TOKEN.search(body.decode("utf-8", "replace"))
        if status != 200 or not match:
            raise RuntimeError(f"the form {slug} could not be opened: {status}")
        yield timedelta(seconds=self.rng.randint(35, 140))  # typing
        values = {"email": p.email, "sei": p.family, "mei": p.given, "company": p.company, "title": p.title,
                  "agree": "on", "kz_token": match.group(1), "kz_aid": p.aid, "kz_page": page, "kz_ref": ""}
        status, _h, body = self.web.request(
            "POST", f"/f/{slug}/submit", ip=p.ip, agent=p.agent, body=urlencode(values).encode(),
            content_type="application/x-www-form-urlencoded",
            headers={"Origin": self.web.base, "Referer": f"{self.web.base}/f/{slug}", "Cookie": f"_kz_aid={p.aid}"})
        if status >= 400:
            raise RuntimeError(f"the form {slug} refused the post: {status} {body[:300]!r}")
        self.summary.requests["form"] += 1
        yield timedelta(seconds=2)

    def backend(self, p: Persona, kind: str, message: dict) -> None:
        """What the product's own servers send through the ingestion API (a server library)."""
        import base64

        message = {"type": kind, "messageId": str(uuid.UUID(int=self.rng.getrandbits(128))),
                   "userId": f"user-{p.aid[:13]}", "timestamp": self.now.isoformat(),
                   "context": {"traits": {"email": p.email}}, **message}
        if kind == "identify":  # the product's login page joins the browser's visits to the account
            message["anonymousId"] = p.aid
        if p.language == "en" and kind == "identify":
            message["traits"]["language"] = "en"
        auth = base64.b64encode(f"{self.write_key}:".encode()).decode()
        status, _h, data = self.web.request("POST", "/v1/batch", ip="192.0.2.10", agent="analytics-python/2.3",
                                            body=orjson.dumps({"batch": [message]}), content_type="application/json",
                                            headers={"Authorization": f"Basic {auth}"})
        if status >= 300:
            raise RuntimeError(f"the ingestion API refused {kind}: {status} {data[:300]!r}")
        self.summary.requests["backend"] += 1

    # --- mail ------------------------------------------------------------------------------------

    def read_mail(self) -> None:
        """New mails in the capture inbox for the simulated people: each gets its reader."""
        from kizuna.messaging.models import CapturedMail

        for mail in CapturedMail.objects.filter(pk__gt=self.last_mail).order_by("pk"):
            self.last_mail = mail.pk
            persona = self.by_email.get(mail.envelope_to.lower())
            if persona is None:
                continue
            self.summary.mails_seen += 1
            self.spawn(self.script_mail(persona, bytes(mail.raw)), self.now + timedelta(seconds=1))

    def script_mail(self, p: Persona, raw: bytes) -> Iterator[timedelta]:
        parsed = message_from_bytes(raw, policy=policy.default)
        part = parsed.get_body(("html",))
        html = part.get_content() if part is not None else ""
        pixel = PIXEL.search(html)
        links = [u.replace("&amp;", "&") for u in HREF.findall(html) if "/e/c/" in u or "/d/" in u]
        subject = str(parsed["Subject"] or "")
        download = any("/d/" in u for u in links) or "ダウンロード" in subject or "download" in subject.lower()
        if pixel and self.rng.random() < 0.2:  # the mailbox provider's image proxy, at delivery
            self.fetch(pixel.group(1).replace("&amp;", "&"), "66.249.84.10", PROXY_OPEN)
        if links and self.rng.random() < 0.05:  # a security gateway follows every link at once
            for url in links:
                self.fetch(url, "52.100.7.9", SCANNER, follow=False)
        if not download and self.rng.random() >= p.open_rate:
            return
        yield timedelta(minutes=self.rng.randint(5, 240))
        if pixel:
            self.fetch(pixel.group(1).replace("&amp;", "&"), p.ip, p.agent)
            self.summary.requests["open"] += 1
        if links and (download or self.rng.random() < p.click_rate):
            yield timedelta(seconds=self.rng.randint(20, 120))
            targets = [u for u in links if "unsubscribe" not in u and "/e/u/" not in u]
            target = targets[0] if download or p.kind == "keen" else self.rng.choice(targets)
            landed = self.fetch(target, p.ip, p.agent)
            self.summary.requests["click"] += 1
            if landed and "/demo-site/" in landed:
                yield from self.session(p, [urlsplit(landed).path.split("/demo-site/", 1)[1]],
                                        "", f"?{urlsplit(landed).query}" if urlsplit(landed).query else "")

    def fetch(self, url: str, ip: str, agent: str, follow: bool = True) -> str | None:
        """GET a link from a mail, following redirects inside Kizuna; returns where it ended."""
        for _hop in range(4):
            if not url.startswith(self.web.base):
                return url
            status, headers, _body = self.web.request("GET", url[len(self.web.base):] or "/", ip=ip, agent=agent)
            if status in (301, 302, 303, 307) and follow:
                url = headers.get("location", "")
                if url.startswith("/"):
                    url = self.web.base + url
                continue
            return url
        return url


def prepare_demo() -> list[str]:
    """What a demo database needs before the simulated days: first-run defaults, every playbook
    installed (journeys live), a sales team for the hand-off, and a sender."""
    from kizuna.contacts.setup import ensure_defaults
    from kizuna.events.setup import ensure_tracking_defaults
    from kizuna.handoff.demo import ensure_demo_routes
    from kizuna.lifecycle.transitions import ensure_defaults as ensure_lifecycle_defaults
    from kizuna.messaging.models import SendingSettings
    from kizuna.playbooks import services
    from kizuna.scoring.setup import ensure_defaults as ensure_scoring_defaults

    ensure_defaults()
    ensure_tracking_defaults()
    ensure_lifecycle_defaults(ensure_scoring_defaults())
    SendingSettings.get()
    lines = [r.summary() for r in services.install_all()]
    from kizuna.accounts.models import User
    from kizuna.accounts.roles import Role

    if not User.objects.filter(role=Role.SALES).exists():
        user = User.objects.create(username="sales", role=Role.SALES, last_name="営業", first_name="一郎",
                                   email="sales@kizuna.example")
        user.set_unusable_password()
        user.save()
    lines.append(ensure_demo_routes())
    return lines
