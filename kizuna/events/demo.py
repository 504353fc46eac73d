"""Demo web traffic: visits to a sample corporate site over the last 30 days, sent through the
real ingestion and processing path, so the visitor list, visiting companies, timelines and
sessions of the demo show what the product records."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from urllib.parse import quote

from django.utils import timezone

from kizuna.contacts.models import Company, Contact
from kizuna.events import ingest, processing
from kizuna.events.models import IpRange

SITE = "https://www.kizuna-demo.co.jp"
PAGES = [
    ("/", "トップ | 株式会社きずなデモ"), ("/features/", "機能一覧"), ("/features/scoring/", "リードスコアリング"),
    ("/features/email/", "メール配信"), ("/pricing/", "料金プラン"), ("/case-studies/", "導入事例"),
    ("/case-studies/manufacturing/", "導入事例: 製造業"), ("/seminars/", "セミナー・イベント"),
    ("/whitepaper/ma-guide/", "資料: はじめてのMA導入ガイド"), ("/contact/", "お問い合わせ"),
    ("/blog/lead-nurturing/", "リードナーチャリングとは"), ("/blog/bant/", "BANT条件で見極める商談化"),
]
KEYWORDS = ["マーケティングオートメーション 比較", "MA ツール 中小企業", "リードナーチャリング 方法",
            "名刺管理 MA 連携", "メール配信 システム 法人", "スコアリング 営業"]
UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 Edg/131.0.0.0",
]


def _referrer(rng: random.Random) -> tuple[str, str]:
    """(referrer, landing query string)."""
    roll = rng.random()
    if roll < 0.35:
        word = quote(rng.choice(KEYWORDS).replace(" ", "+"), safe="+")
        return rng.choice([f"https://search.yahoo.co.jp/search?p={word}", f"https://www.bing.com/search?q={word}",
                           "https://www.google.co.jp/"]), ""
    if roll < 0.5:
        return "https://www.google.co.jp/", f"?gclid={uuid.uuid4().hex[:12]}&utm_source=google&utm_medium=cpc"
    if roll < 0.65:
        return "", "?utm_source=newsletter&utm_medium=email&utm_campaign=2026-11-seminar"
    if roll < 0.75:
        return rng.choice(["https://x.com/", "https://www.facebook.com/", "https://note.com/kizuna"]), ""
    if roll < 0.85:
        return "https://www.itmedia.co.jp/enterprise/articles/ma.html", ""
    return "", ""


def generate_demo_traffic(*, visitors: int = 300, seed: int = 11) -> str:
    rng = random.Random(seed)
    now = timezone.now()
    companies = list(Company.objects.order_by("id")[:40])
    for i, company in enumerate(companies[:25]):
        IpRange.objects.get_or_create(network=f"203.0.{i}.0/24",
                                      defaults={"company": company, "company_name": company.name})
    contacts = list(Contact.objects.exclude(email=None).order_by("?")[: visitors // 3])
    messages = []
    for v in range(visitors):
        aid = str(uuid.UUID(int=rng.getrandbits(128)))
        ip = f"203.0.{rng.randrange(25)}.{rng.randrange(1, 250)}" if rng.random() < 0.6 else \
            f"198.51.100.{rng.randrange(1, 250)}"
        ua = rng.choice(UAS)
        at = now - timedelta(days=rng.uniform(0.5, 30))
        for _session in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
            referrer, query = _referrer(rng)
            path, title = rng.choice(PAGES[:8])
            for step in range(rng.choice([1, 2, 3, 3, 4, 5, 7])):
                page_id = str(uuid.UUID(int=rng.getrandbits(128)))
                url = SITE + path + (query if step == 0 else "")
                messages.append({
                    "type": "page", "messageId": page_id, "anonymousId": aid, "timestamp": at.isoformat(),
                    "properties": {"url": url, "path": path, "title": title, "referrer": referrer,
                                   "page_view_id": page_id},
                    "context": {"ip": ip, "userAgent": ua, "library": {"name": "kizuna.js", "version": "1"}},
                })
                dwell = int(rng.lognormvariate(10.2, 0.9))  # median ~27 s
                messages.append({
                    "type": "track", "event": "Page Engaged", "anonymousId": aid,
                    "timestamp": (at + timedelta(milliseconds=dwell)).isoformat(),
                    "properties": {"page_view_id": page_id, "visible_ms": dwell,
                                   "scroll_depth": rng.randint(20, 100), "final": True},
                    "context": {"ip": ip, "userAgent": ua},
                })
                referrer = url
                at += timedelta(milliseconds=dwell + rng.randint(2_000, 20_000))
                path, title = rng.choice(PAGES)
            at += timedelta(days=rng.uniform(1, 6))
            if at > now:
                break
        if v < len(contacts) and at < now:
            contact = contacts[v]
            messages.append({
                "type": "identify", "anonymousId": aid, "timestamp": min(at, now).isoformat(),
                "traits": {"email": contact.email}, "context": {"ip": ip, "userAgent": ua},
            })
    hot = _hot_prospects(rng, now, messages)
    info = ingest.RequestInfo(source="Demo site")
    for start in range(0, len(messages), 1000):
        ingest.ingest(messages[start:start + 1000], info)
    processed = processing.drain()
    return f"{visitors} visitors ({hot} keen prospects), {processed} events, {len(companies[:25])} IP ranges"


HOT_PATH = [("/case-studies/manufacturing/", "導入事例: 製造業"), ("/pricing/", "料金プラン"),
            ("/features/scoring/", "リードスコアリング"), ("/pricing/", "料金プラン"),
            ("/case-studies/", "導入事例"), ("/pricing/", "料金プラン")]
FORMS = ["資料請求: はじめてのMA導入ガイド", "セミナー申込: 11月 MA活用セミナー", "お問い合わせ: デモ依頼"]


def _hot_prospects(rng: random.Random, now, messages: list[dict], count: int = 6) -> int:
    """A few well-fitting managers who read case studies and prices and filled in forms in the
    last days: the demo's hot leads, handed to sales and moved to MQL by the default rules."""
    keen = list(Contact.objects.exclude(email=None).filter(job_title__contains="部長").order_by("id")[:count])
    for contact in keen:
        aid = str(uuid.UUID(int=rng.getrandbits(128)))
        at = now - timedelta(days=rng.uniform(1, 3), hours=rng.uniform(0, 6))
        context = {"ip": f"203.0.{rng.randrange(25)}.{rng.randrange(1, 250)}", "userAgent": UAS[0]}
        for path, title in HOT_PATH:
            messages.append({"type": "page", "anonymousId": aid, "timestamp": at.isoformat(), "context": context,
                             "properties": {"url": SITE + path, "path": path, "title": title}})
            at += timedelta(seconds=rng.randint(30, 240))
        messages.append({"type": "identify", "anonymousId": aid, "timestamp": at.isoformat(), "context": context,
                         "traits": {"email": contact.email}})
        for form in FORMS:
            at += timedelta(minutes=rng.randint(5, 600))
            messages.append({"type": "track", "event": "Form Submitted", "anonymousId": aid, "context": context,
                             "timestamp": min(at, now).isoformat(), "properties": {"form": form}})
    return len(keen)
