"""Segments benchmark: full recompute, incremental update and live count at 1,000,000 contacts and
10,000,000 events, on PostgreSQL.

    .venv/bin/python bench/segments.py                     # generate, measure, update docs, drop the database
    .venv/bin/python bench/segments.py --keep               # keep the generated database for --reuse
    .venv/bin/python bench/segments.py --reuse --no-doc     # measure again on the kept database
    .venv/bin/python bench/segments.py --contacts 20000 --events 200000 --samples 50 --no-doc   # smoke run

The database `kizuna_segbench` is dropped, created and set up with `kizuna init`; then a child
process fills it with SQL only (INSERT … SELECT over generate_series: a Python loop would take an
hour): Japanese B2B companies and contacts (industries, prefectures and regions, company sizes and
employees, titles, departments, stages, sources, owners, do-not-contact), consent per topic, lead
scores, fifteen newsletter bulk sends over 90 days with human and machine (Apple MPP, scanner)
opens and clicks as `Message` and `Activity` store them, and the event log: the email events those
sends produce (Email Sent, Email Opened, Email Clicked, with the machine flag) plus web page views and
tracked events, 10,000,000 in all, over 90 days, in time order. Web activity is skewed: a contact's
share of events falls with its activity rank (rank k gets ∝ 1/√k), 30% of events are anonymous, and
email opens and clicks are likelier for active contacts. Indexes are dropped during the load and
made again afterwards (as a restore would), then VACUUM ANALYZE.

A second child process measures with Kizuna's own code, after django.setup():

- full: `membership.recompute` of a new segment (saved with `membership.save_segment`) with three
  conditions: industry manufacturing and size 100–999, visited /pricing at least twice in 30 days,
  a human email click in 30 days. Each run is a new segment; median of the runs after a warm-up;
- incremental: several segments are defined and computed; then, for each sample, one event of one
  contact (chosen as events arrive: weighted by activity) is stored and `membership.on_events` — what
  the event worker runs after storing it — is timed; p50/p95/p99;
- live count: `filters.compile_queryset(tree).count()`, what a builder's live count runs, for that
  segment and, for comparison, for a filter on behaviour alone (page /pricing in 30 days);
- baselines in the same run: a plain `count(*)` of the events of the last 30 days, a hand-written
  SQL count of the same segment, and before each incremental sample a primary-key read of the same
  contact (the floor any per-event work stands on, under the same load).

The machine is shared: how busy it was (all processes) and its load average are reported with
the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Segments (bench/segments.py)"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/kizuna_segbench"
TARGETS = {"full_s": 5.0, "incremental_p95_ms": 10.0, "live_s": 2.0}
DAYS = 90
SENDS = 15  # one newsletter every 6 days
PERM = 48271  # rank(contact) = (id - 1) * PERM mod N: activity is not tied to id order

THREE_CONDITIONS = {"all": [
    {"field": "industry", "op": "in", "value": ["manufacturing"]},
    {"field": "company_size", "op": "in", "value": ["100-299", "300-999"]},
    {"event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}],
     "count": {"op": "gte", "value": 2}, "within_days": 30},
    {"email": "clicked", "within_days": 30},
]}
BEHAVIOUR_ONLY = {"event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}],
                  "within_days": 30}

# --- Pools (value, weight) ------------------------------------------------------------------------

FAMILY = [("佐藤", "サトウ", "sato"), ("鈴木", "スズキ", "suzuki"), ("高橋", "タカハシ", "takahashi"),
          ("田中", "タナカ", "tanaka"), ("伊藤", "イトウ", "ito"), ("渡辺", "ワタナベ", "watanabe"),
          ("山本", "ヤマモト", "yamamoto"), ("中村", "ナカムラ", "nakamura"), ("小林", "コバヤシ", "kobayashi"),
          ("加藤", "カトウ", "kato"), ("吉田", "ヨシダ", "yoshida"), ("山田", "ヤマダ", "yamada"),
          ("佐々木", "ササキ", "sasaki"), ("山口", "ヤマグチ", "yamaguchi"), ("松本", "マツモト", "matsumoto"),
          ("井上", "イノウエ", "inoue"), ("木村", "キムラ", "kimura"), ("林", "ハヤシ", "hayashi"),
          ("斎藤", "サイトウ", "saito"), ("清水", "シミズ", "shimizu"), ("山崎", "ヤマザキ", "yamazaki"),
          ("森", "モリ", "mori"), ("池田", "イケダ", "ikeda"), ("橋本", "ハシモト", "hashimoto"),
          ("阿部", "アベ", "abe"), ("石川", "イシカワ", "ishikawa"), ("前田", "マエダ", "maeda")]
GIVEN = [("太郎", "タロウ", "taro"), ("花子", "ハナコ", "hanako"), ("健一", "ケンイチ", "kenichi"),
         ("美咲", "ミサキ", "misaki"), ("大輔", "ダイスケ", "daisuke"), ("陽子", "ヨウコ", "yoko"),
         ("翔太", "ショウタ", "shota"), ("愛", "アイ", "ai"), ("誠", "マコト", "makoto"),
         ("由美", "ユミ", "yumi"), ("拓也", "タクヤ", "takuya"), ("恵", "メグミ", "megumi"),
         ("直樹", "ナオキ", "naoki"), ("さくら", "サクラ", "sakura"), ("亮", "リョウ", "ryo"),
         ("優子", "ユウコ", "yuko"), ("健太", "ケンタ", "kenta"), ("真理", "マリ", "mari")]
COMPANY_WORDS = ["日本", "東京", "大阪", "中央", "第一", "丸山", "富士", "昭和", "大和", "三和", "東亜", "北斗", "朝日",
                 "光", "桜", "緑", "青葉", "平和", "新星", "未来", "東北", "九州", "中部", "関西", "北陸"]
COMPANY_KINDS = [("工業", "kogyo"), ("商事", "shoji"), ("テック", "tech"), ("システムズ", "systems"),
                 ("製作所", "seisakusho"), ("電機", "denki"), ("建設", "kensetsu"), ("ソフト", "soft"),
                 ("物流", "butsuryu"), ("化学", "kagaku"), ("精機", "seiki"), ("食品", "shokuhin"),
                 ("不動産", "fudosan"), ("銀行", "bank"), ("ホールディングス", "hd")]
FREE_MAIL = ["gmail.com", "yahoo.co.jp", "outlook.jp", "docomo.ne.jp"]
INDUSTRIES = [("manufacturing", 22), ("it", 15), ("wholesale_retail", 12), ("services", 10), ("construction", 8),
              ("professional", 6), ("finance", 5), ("transport", 4), ("healthcare", 4), ("real_estate", 3),
              ("education", 2), ("hospitality", 2), ("energy", 1), ("public", 1), ("agriculture", 1), ("other", 2),
              ("", 2)]
# Company size follows the company's id: low ids are the big companies, and contacts pick low ids more.
SIZES = [(0.005, "5000+", 5000, 40000), (0.02, "1000-4999", 1000, 4999), (0.08, "300-999", 300, 999),
         (0.20, "100-299", 100, 299), (0.40, "50-99", 50, 99), (0.70, "10-49", 10, 49), (1.0, "1-9", 1, 9)]
PREFECTURE_WEIGHTS = {"13": 30, "27": 9, "14": 7, "23": 7, "11": 4, "40": 4, "12": 3, "28": 3, "01": 3, "26": 2,
                      "04": 2, "34": 2, "22": 2}
TITLES = [("担当", 28), ("主任", 10), ("係長", 8), ("課長", 15), ("部長", 11), ("マネージャー", 8), ("本部長", 3),
          ("取締役", 3), ("代表取締役", 2), ("", 12)]
DEPARTMENTS = [("営業部", 20), ("マーケティング部", 14), ("情報システム部", 12), ("経営企画部", 8), ("総務部", 8),
               ("人事部", 6), ("製造部", 8), ("購買部", 6), ("DX推進室", 6), ("開発部", 8), ("", 4)]
STAGES = [("subscriber", 15), ("lead", 55), ("mql", 12), ("sql", 6), ("opportunity", 4), ("customer", 7),
          ("evangelist", 1)]
SOURCES = [("import", 60), ("form", 25), ("manual", 8), ("api", 5), ("event", 2)]
PAGES = [("/", "BtoBマーケティングを、もっと確かに。| 株式会社サンプル", 14), ("/pricing", "料金プラン", 5),
         ("/pricing/enterprise", "エンタープライズプラン", 1.5), ("/product", "製品概要", 7),
         ("/product/ma", "マーケティングオートメーション", 5), ("/product/scoring", "リードスコアリング", 3),
         ("/product/email", "メール配信", 3), ("/case-studies", "導入事例", 4),
         ("/case-studies/maruyama-seisakusho", "導入事例: 丸山製作所様", 2),
         ("/case-studies/tohoku-denki", "導入事例: 東北電機様", 1.5),
         ("/case-studies/nihon-shoji", "導入事例: 日本商事様", 1.5), ("/blog", "ブログ", 5),
         ("/blog/ma-tool-hikaku", "MAツール比較 2026年版", 3), ("/blog/lead-nurturing", "リードナーチャリング入門", 2),
         ("/blog/scoring-design", "スコアリング設計の基本", 2), ("/blog/tokutei-denshi-mail", "特定電子メール法の要点", 2),
         ("/blog/seminar-followup", "セミナー後のフォロー術", 2), ("/blog/abm", "ABM 実践ガイド", 2),
         ("/blog/email-open-rate", "開封率を上げる件名", 2), ("/blog/apple-mpp", "Apple MPP と開封率", 1),
         ("/seminar", "セミナー・イベント", 3), ("/seminar/2026-12-webinar", "12月ウェビナー: MA活用事例", 2),
         ("/download/whitepaper-ma", "資料ダウンロード: MA導入ガイド", 3), ("/contact", "お問い合わせ", 2),
         ("/demo", "デモのお申し込み", 1), ("/company", "会社概要", 2), ("/careers", "採用情報", 2),
         ("/news/2026-11-release", "新機能リリースのお知らせ", 2), ("/support/faq", "よくあるご質問", 2)]
TRACKS = [("Page Engaged", {"seconds": 45}, 40), ("CTA Clicked", {"label": "資料請求"}, 18),
          ("File Downloaded", {"file": "whitepaper-ma.pdf"}, 10), ("Form Submitted", {"form": "資料請求"}, 8),
          ("Video Played", {"video": "product-tour"}, 10), ("Webinar Joined", {"webinar": "2026-12"}, 4),
          ("Demo Booked", {"form": "demo"}, 1.5), ("Scroll Depth", {"depth": 75}, 8.5)]
REFERRERS = [("", 45), ("https://www.google.com/", 25), ("https://search.yahoo.co.jp/", 10),
             ("https://www.linkedin.com/", 3), ("https://www.facebook.com/", 2), ("https://www.example.co.jp/", 15)]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Edg/131.0",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1",
          "Mozilla/5.0 (Linux; Android 14; SO-51D) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"]
BOTS = ["user agent: Googlebot", "user agent: bingbot", "network: cloud provider", "user agent: HeadlessChrome"]


def pool(pairs: list[tuple], size: int = 200) -> list:
    """A list where each value appears in proportion to its weight: a uniform pick is a weighted pick."""
    total = sum(p[-1] for p in pairs)
    out = []
    for pair in pairs:
        out += [pair[0]] * max(1, round(pair[-1] / total * size))
    return out


def prefecture_pool() -> list[str]:
    codes = [f"{n:02d}" for n in range(1, 48)]
    return pool([(c, PREFECTURE_WEIGHTS.get(c, 0.6)) for c in codes], 400)


# --- Database and child processes ---------------------------------------------------------------------

def child_env(pg_url: str, data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIZUNA_")}
    env.update({"KIZUNA_DATA_DIR": data_dir, "DJANGO_SETTINGS_MODULE": "kizuna.settings",
                "KIZUNA_SECRET_KEY": "bench-secret-key-0123456789-0123456789-0123456789",
                "KIZUNA_EMAIL_URL": "console://", "KIZUNA_LOG_LEVEL": "WARNING", "KIZUNA_DATABASE_URL": pg_url,
                "PYTHONPATH": str(ROOT)})
    return env


def admin_connect(pg_url: str):
    import psycopg

    return psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True)


def fresh_database(pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    if not name.startswith("kizuna_segbench"):
        raise SystemExit("the benchmark only drops databases named kizuna_segbench…")
    with admin_connect(pg_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    if name.startswith("kizuna_segbench"):
        with admin_connect(pg_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_child(mode: str, env: dict[str, str], options: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(options)], env=env,
                         stdout=subprocess.PIPE, text=True, check=False, cwd=ROOT)  # progress goes to stderr
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stdout}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Generation (child) ---------------------------------------------------------------------------

class Loader:
    """Raw SQL on Django's connection; each step is one INSERT … SELECT."""

    def __init__(self, contacts: int, events: int, now: dt.datetime, seed: float = 0.42):
        from django.db import connection

        self.cursor = connection.cursor()
        self.n, self.events, self.now = contacts, events, now
        self.companies = max(50, contacts // 20)
        self.active = max(10, contacts // 2)  # contacts with any web activity
        self.start = now - dt.timedelta(days=DAYS)
        self.inverse = pow(PERM, -1, contacts)
        self.sql("SELECT setseed(%s)", [seed])

    def sql(self, statement: str, params=None) -> int:
        started = time.perf_counter()
        self.cursor.execute(statement, params)
        first = " ".join(statement.split())[:60]
        log(f"  {time.perf_counter() - started:6.1f}s  {first}… ({self.cursor.rowcount:,} rows)")
        return self.cursor.rowcount

    def scalar(self, statement: str, params=None):
        self.cursor.execute(statement, params)
        return self.cursor.fetchone()[0]

    # The contact behind activity rank k (0 = the most active).
    def contact_of_rank(self, k: str) -> str:
        return f"(mod(({k})::bigint * {self.inverse}, {self.n}) + 1)"

    def rank_of(self, contact_id: str) -> str:
        return f"mod((({contact_id}) - 1) * {PERM}, {self.n})"

    def drop_indexes(self, tables: list[str]) -> list[str]:
        """Drops the indexes no constraint owns; returns their definitions to make them again."""
        self.cursor.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", [tables])
        rows = self.cursor.fetchall()
        for name, _definition in rows:
            self.cursor.execute(f'DROP INDEX "{name}"')
        return [definition for _name, definition in rows]

    def reference_rows(self) -> dict:
        """Users, sender, templates and bulk sends through the ORM: a handful of rows."""
        from kizuna.accounts.models import User
        from kizuna.contacts.models import SubscriptionTopic
        from kizuna.messaging.models import BulkSend, EmailTemplate, Sender, TemplateVersion

        owners = [User.objects.create(username=f"sales{i}", role="sales", email=f"sales{i}@example.co.jp").pk
                  for i in range(12)]
        newsletter = SubscriptionTopic.objects.get(key="newsletter")
        sender = Sender.objects.create(name="マーケティング部", from_name="株式会社サンプル マーケティング部",
                                       from_email="news@example.co.jp", organisation="株式会社サンプル",
                                       postal_address="東京都千代田区丸の内1-1-1")
        sends = []
        for b in range(SENDS):
            template = EmailTemplate.objects.create(name=f"メールマガジン {b + 1}号", topic=newsletter, sender=sender)
            version = TemplateVersion.objects.create(
                template=template, number=1, subject=f"【サンプル通信 {b + 1}号】MA活用の最新事例",
                html="<p>{{ contact.family_name }} 様</p><p><a href='https://www.example.co.jp/pricing'>料金</a></p>",
                text="", compiled_html="<p>x</p>")
            template.current = version
            template.save(update_fields=["current"])
            at = self.start + dt.timedelta(days=6 * b, hours=1)
            bulk = BulkSend.objects.create(name=template.name, template=template, version=version, status="done",
                                           scheduled_at=at, started_at=at, finished_at=at + dt.timedelta(hours=2))
            sends.append({"bulk": bulk.pk, "version": version.pk, "template": template.pk, "at": at})
        return {"owners": owners, "newsletter": newsletter.pk, "sender": sender.pk, "sends": sends,
                "topics": dict(SubscriptionTopic.objects.values_list("key", "id"))}

    def companies_(self, ref: dict) -> None:
        bounds = " ".join(f"WHEN i <= {cut * self.companies:.0f} THEN {n}" for n, (cut, *_r) in enumerate(SIZES, 1))
        self.sql(f"""
            INSERT INTO contacts_company (id, name, domain, industry, company_size, employees, prefecture, address,
                phone, website, custom, created_at, updated_at, owner_id)
            SELECT s.i,
                CASE WHEN s.r1 < 0.7 THEN '株式会社' || (%(words)s::text[])[s.w] || (%(kinds)s::text[])[s.k]
                     ELSE (%(words)s::text[])[s.w] || (%(kinds)s::text[])[s.k] || '株式会社' END,
                (%(kinds_en)s::text[])[s.k] || s.i || '.co.jp',
                (%(industries)s::text[])[s.ind], (%(sizes)s::text[])[s.sz],
                (%(lows)s::int[])[s.sz] + floor(s.r2 * ((%(highs)s::int[])[s.sz] - (%(lows)s::int[])[s.sz]))::int,
                s.pref, '', '03-' || lpad((s.i %% 10000)::text, 4, '0') || '-0000', 'https://www.' ||
                (%(kinds_en)s::text[])[s.k] || s.i || '.co.jp/', '{{}}', s.created, s.created,
                CASE WHEN s.r3 < 0.3 THEN (%(owners)s::bigint[])[1 + s.i %% %(n_owners)s] END
            FROM (SELECT i, random() r1, random() r2, random() r3,
                         1 + floor(random() * %(n_words)s)::int w, 1 + floor(random() * %(n_kinds)s)::int k,
                         1 + floor(random() * %(n_ind)s)::int ind,
                         CASE {bounds} ELSE {len(SIZES)} END sz,
                         (%(prefs)s::text[])[1 + floor(random() * %(n_prefs)s)::int] pref,
                         %(now)s - random() * interval '5 years' created
                  FROM generate_series(1, %(count)s) i OFFSET 0) s""",
                 {"words": COMPANY_WORDS, "kinds": [k for k, _ in COMPANY_KINDS],
                  "kinds_en": [e for _, e in COMPANY_KINDS], "industries": pool(INDUSTRIES),
                  "sizes": [s[1] for s in SIZES], "lows": [s[2] for s in SIZES], "highs": [s[3] for s in SIZES],
                  "owners": ref["owners"], "n_owners": len(ref["owners"]), "n_words": len(COMPANY_WORDS),
                  "n_kinds": len(COMPANY_KINDS), "n_ind": len(pool(INDUSTRIES)), "prefs": prefecture_pool(),
                  "n_prefs": len(prefecture_pool()), "now": self.now, "count": self.companies})

    def contacts_(self, ref: dict) -> None:
        from kizuna.contacts.reference import PREFECTURE_REGION

        regions = [PREFECTURE_REGION[f"{n:02d}"] for n in range(1, 48)]
        p = {"fam": [f[0] for f in FAMILY], "fam_kana": [f[1] for f in FAMILY], "fam_en": [f[2] for f in FAMILY],
             "giv": [g[0] for g in GIVEN], "giv_kana": [g[1] for g in GIVEN], "giv_en": [g[2] for g in GIVEN],
             "free": FREE_MAIL, "titles": pool(TITLES), "depts": pool(DEPARTMENTS), "stages": pool(STAGES),
             "sources": pool(SOURCES), "industries": pool(INDUSTRIES), "prefs": prefecture_pool(),
             "regions": regions, "owners": ref["owners"], "now": self.now, "count": self.n,
             "companies": self.companies}
        self.sql("""
            INSERT INTO contacts_contact (id, email, family_name, given_name, family_name_kana, given_name_kana, phone,
                company_name, job_title, department, prefecture, region, industry, company_size, lifecycle_stage,
                source, language, time_zone, custom, do_not_contact, dnc_reason, dnc_at, created_at, updated_at,
                last_activity_at, company_id, owner_id)
            SELECT s.i,
                (%(giv_en)s::text[])[s.g] || '.' || (%(fam_en)s::text[])[s.f] || s.i || '@' ||
                    coalesce(co.domain, (%(free)s::text[])[1 + s.i %% 4]),
                (%(fam)s::text[])[s.f], (%(giv)s::text[])[s.g], (%(fam_kana)s::text[])[s.f],
                (%(giv_kana)s::text[])[s.g],
                '0' || (3 + s.i %% 97) || '-' || lpad(((s.i * 7) %% 10000)::text, 4, '0') || '-' ||
                    lpad((s.i %% 10000)::text, 4, '0'),
                coalesce(co.name, ''), (%(titles)s::text[])[1 + floor(s.r1 * cardinality(%(titles)s::text[]))::int],
                (%(depts)s::text[])[1 + floor(s.r2 * cardinality(%(depts)s::text[]))::int],
                CASE WHEN co.id IS NOT NULL AND s.r3 < 0.8 THEN co.prefecture ELSE s.pref END,
                (%(regions)s::text[])[(CASE WHEN co.id IS NOT NULL AND s.r3 < 0.8 THEN co.prefecture
                                           ELSE s.pref END)::int],
                CASE WHEN co.id IS NOT NULL AND s.r4 < 0.9 THEN co.industry WHEN s.r4 < 0.95 THEN ''
                     ELSE (%(industries)s::text[])[1 + floor(s.r5 * cardinality(%(industries)s::text[]))::int] END,
                CASE WHEN co.id IS NOT NULL AND s.r4 < 0.95 THEN co.company_size ELSE '' END,
                (%(stages)s::text[])[1 + floor(s.r6 * cardinality(%(stages)s::text[]))::int],
                (%(sources)s::text[])[1 + floor(s.r7 * cardinality(%(sources)s::text[]))::int],
                CASE WHEN s.r8 < 0.97 THEN 'ja' ELSE 'en' END, '', '{}',
                s.r9 < 0.03, CASE WHEN s.r9 < 0.02 THEN 'unsubscribed' WHEN s.r9 < 0.03 THEN 'bounced' ELSE '' END,
                CASE WHEN s.r9 < 0.03 THEN s.created + (%(now)s - s.created) * s.r5 END,
                s.created, s.created, NULL, co.id,
                CASE WHEN s.r8 < 0.25 THEN (%(owners)s::bigint[])[1 + s.i %% cardinality(%(owners)s::bigint[])] END
            FROM (SELECT i, 1 + floor(random() * cardinality(%(fam)s::text[]))::int f,
                         1 + floor(random() * cardinality(%(giv)s::text[]))::int g,
                         CASE WHEN random() < 0.85 THEN 1 + floor(%(companies)s * power(random(), 1.6))::int END cid,
                         random() r1, random() r2, random() r3, random() r4, random() r5, random() r6, random() r7,
                         random() r8, random() r9,
                         (%(prefs)s::text[])[1 + floor(random() * cardinality(%(prefs)s::text[]))::int] pref,
                         %(now)s - random() * interval '3 years' created
                  FROM generate_series(1, %(count)s) i OFFSET 0) s
            LEFT JOIN contacts_company co ON co.id = s.cid""", p)

    def consent_and_scores(self, ref: dict, model_id: int) -> None:
        topics = ref["topics"]
        self.sql("""
            INSERT INTO contacts_consent (status, updated_at, contact_id, topic_id)
            SELECT CASE WHEN s.r < s.yes THEN 'opted_in' WHEN s.r < s.yes + 0.08 THEN 'opted_out' ELSE 'unknown' END,
                   s.created, s.id, s.topic
            FROM (SELECT c.id, c.created_at created, t.topic, t.yes, random() r
                  FROM contacts_contact c
                  CROSS JOIN (VALUES (%(newsletter)s::bigint, 0.55), (%(seminars)s::bigint, 0.35)) t(topic, yes)
                  WHERE NOT c.do_not_contact OFFSET 0) s
            WHERE s.r < s.yes + 0.18""", {"newsletter": topics["newsletter"], "seminars": topics["seminars"]})
        # One score row per contact with any activity, engagement higher for the more active ones.
        self.sql(f"""
            INSERT INTO scoring_contactscore (fit, grade, engagement, engagement_at, rank_key, hot, hot_at, updated_at,
                contact_id, model_id, predicted)
            SELECT s.fit, CASE WHEN s.fit >= 40 THEN 'A' WHEN s.fit >= 25 THEN 'B' WHEN s.fit >= 10 THEN 'C' ELSE 'D' END,
                   s.eng, s.at, log(2, s.eng::numeric)::float8 + extract(epoch FROM s.at) / (30 * 86400),
                   s.eng >= 100 AND s.fit >= 10, CASE WHEN s.eng >= 100 AND s.fit >= 10 THEN s.at END, s.at,
                   s.id, %(model)s, NULL
            FROM (SELECT c.id,
                         (CASE WHEN c.industry IN ('manufacturing', 'it') THEN 20 ELSE 0 END
                          + CASE WHEN c.job_title IN ('部長', '本部長', '取締役', '代表取締役', 'マネージャー') THEN 15 ELSE 0 END
                          + CASE WHEN c.company_size IN ('100-299', '300-999', '1000-4999', '5000+') THEN 10 ELSE 0 END
                          + CASE WHEN c.region = 'kanto' THEN 5 ELSE 0 END
                          - CASE WHEN c.company_id IS NULL THEN 10 ELSE 0 END) fit,
                         greatest(0.5, 400 * power(1 - {self.rank_of('c.id')}::float8 / {self.active}, 8)
                                  * random()) eng,
                         %(now)s - random() * interval '30 days' AS at
                  FROM contacts_contact c WHERE {self.rank_of('c.id')} < {self.active} OFFSET 0) s""",
                 {"model": model_id, "now": self.now})

    def messages(self, ref: dict) -> int:
        """Fifteen bulk sends of the newsletter to about 100,000 consenting contacts each (1.5 M messages)."""
        eligible = self.scalar("SELECT count(*) FROM contacts_consent WHERE topic_id = %s AND status = 'opted_in'",
                               [ref["newsletter"]])
        share = min(1.0, max(1, self.n // 10) / max(1, eligible))
        rank = self.rank_of("c.id")
        total = 0
        for send in ref["sends"]:
            total += self.sql(f"""
                INSERT INTO messaging_message (idempotency_key, to_email, kind, variant, extra, status, priority, due_at,
                    attempts, claimed_by, claimed_until, created_at, sent_at, provider_id, error, bounce, bounced_at,
                    complained_at, unsubscribed_at, opened_at, clicked_at, machine_opened_at, machine_clicked_at,
                    opens, clicks, bulk_id, contact_id, topic_id, sender_id, version_id)
                SELECT 'bulk-' || %(bulk)s || '-' || s.id, s.email, 'marketing', '', '{{}}', 'sent', 0, %(at)s, 1, '',
                       NULL, %(at)s - interval '1 hour', s.sent, '<' || s.id || '.' || %(bulk)s || '@mail.example.co.jp>',
                       '', CASE WHEN s.bounced THEN 'soft' ELSE '' END, CASE WHEN s.bounced THEN s.sent END,
                       NULL, NULL, s.opened, s.clicked, s.mpp, s.scanned,
                       (s.opened IS NOT NULL)::int + (s.mpp IS NOT NULL)::int,
                       (s.clicked IS NOT NULL)::int + (s.scanned IS NOT NULL)::int,
                       %(bulk)s, s.id, %(topic)s, %(sender)s, %(version)s
                FROM (SELECT s.*,
                             CASE WHEN NOT s.bounced AND s.ro < s.p_open
                                  THEN s.sent + power(s.rd, 3) * interval '72 hours' END opened,
                             CASE WHEN NOT s.bounced AND s.ro < s.p_click
                                  THEN s.sent + power(s.rd, 3) * interval '72 hours' + s.rc * interval '10 minutes'
                             END clicked,
                             CASE WHEN NOT s.bounced AND s.rm < 0.25 THEN s.sent + s.rc * interval '5 minutes' END mpp,
                             CASE WHEN NOT s.bounced AND s.rm > 0.985 THEN s.sent + s.rc * interval '30 seconds' END
                                 scanned
                      FROM (SELECT c.id, c.email, %(at)s + random() * interval '2 hours' sent, random() < 0.007 bounced,
                                   random() ro, random() rd, random() rc, random() rm,
                                   CASE WHEN {rank} < {self.active // 10} THEN 0.35
                                        WHEN {rank} < {self.active} THEN 0.22 ELSE 0.10 END p_open,
                                   CASE WHEN {rank} < {self.active // 10} THEN 0.08
                                        WHEN {rank} < {self.active} THEN 0.03 ELSE 0.005 END p_click
                            FROM contacts_contact c
                            JOIN contacts_consent cs ON cs.contact_id = c.id AND cs.topic_id = %(topic)s
                                                    AND cs.status = 'opted_in'
                            WHERE NOT c.do_not_contact AND random() < %(share)s OFFSET 0) s) s""",
                {**send, "topic": ref["newsletter"], "sender": ref["sender"], "share": share})
            self.sql("UPDATE messaging_bulksend SET total = %s, prepared = %s WHERE id = %s",
                     [self.scalar("SELECT count(*) FROM messaging_message WHERE bulk_id = %s", [send["bulk"]])] * 2
                     + [send["bulk"]])
        # What came back: one Activity per first open/click, human and machine, as tracking.py records them.
        self.sql("""
            INSERT INTO messaging_activity (kind, position, url, at, ip, user_agent, machine, reason, message_id)
            SELECT a.kind, a.position, a.url, a.at, a.ip::inet, a.agent, a.machine, a.reason, m.id
            FROM messaging_message m
            CROSS JOIN LATERAL (VALUES
                ('open', NULL::int, '', m.opened_at, '126.10.' || (m.id %% 250) || '.' || (m.id %% 199), %(ua)s, false,
                 ''),
                ('open', NULL, '', m.machine_opened_at, '17.58.' || (m.id %% 250) || '.1', 'Mozilla/5.0', true,
                 'apple_mpp'),
                ('click', 1, 'https://www.example.co.jp/pricing?utm_source=newsletter&utm_medium=email', m.clicked_at,
                 '126.10.' || (m.id %% 250) || '.' || (m.id %% 199), %(ua)s, false, ''),
                ('click', 1, 'https://www.example.co.jp/pricing?utm_source=newsletter&utm_medium=email',
                 m.machine_clicked_at, '40.94.' || (m.id %% 250) || '.3', 'Mozilla/5.0', true, 'too_fast')
            ) a(kind, position, url, at, ip, agent, machine, reason)
            WHERE a.at IS NOT NULL
            ORDER BY a.at""", {"ua": AGENTS[0]})
        return total

    def email_events(self, send: dict, ref: dict) -> int:
        """The events the sends produce (Email Sent / Opened / Clicked) and the landing page views of
        human clicks, in time order."""
        return self.sql("""
            INSERT INTO events_event (message_id, type, name, properties, traits, context, anonymous_id, user_id,
                occurred_at, received_at, processed_at, source, ip, user_agent, url, path, title, referrer,
                utm_source, utm_medium, utm_campaign, utm_term, utm_content, bot, contact_id, session_id)
            SELECT e.message_id, e.type, e.name, e.properties, '{}', e.context, e.anonymous_id, '', e.at, e.at,
                   e.at + interval '2 seconds', e.source, e.ip::inet, e.agent, e.url, e.path, e.title, '',
                   e.utm_source, e.utm_medium, e.utm_campaign, '', '', '', e.contact_id, NULL
            FROM (
                SELECT 'email-email-sent-' || m.id message_id, 'track' type, 'Email Sent' name,
                       jsonb_build_object('message', m.id, 'template', %(template)s, 'templateVersion', m.version_id,
                                          'bulkSend', m.bulk_id, 'subject', '') properties,
                       jsonb_build_object('traits', jsonb_build_object('email', m.to_email)) context, '' anonymous_id,
                       m.sent_at AS at, 'email' source, NULL ip, '' agent, '' url, '' path, '' title, '' utm_source,
                       '' utm_medium, '' utm_campaign, m.contact_id
                FROM messaging_message m WHERE m.bulk_id = %(bulk)s
                UNION ALL
                SELECT 'email-' || a.kind || '-' || m.id || '-' || a.id,
                       'track', CASE a.kind WHEN 'open' THEN 'Email Opened' ELSE 'Email Clicked' END,
                       jsonb_build_object('message', m.id, 'template', %(template)s, 'templateVersion', m.version_id,
                                          'bulkSend', m.bulk_id, 'subject', '', 'machine', a.machine,
                                          'machineReason', a.reason, 'url', a.url, 'link', a.position),
                       jsonb_build_object('traits', jsonb_build_object('email', m.to_email), 'ip', host(a.ip),
                                          'userAgent', a.user_agent),
                       '', a.at, 'email', host(a.ip), a.user_agent, '', '', '', '', '', '', m.contact_id
                FROM messaging_activity a JOIN messaging_message m ON m.id = a.message_id
                WHERE m.bulk_id = %(bulk)s
                UNION ALL
                SELECT 'land-' || a.id, 'page', '', jsonb_build_object('path', '/pricing', 'title', '料金プラン'),
                       '{"library": {"name": "kizuna.js"}, "locale": "ja-JP"}', 'c' || m.contact_id,
                       a.at + interval '3 seconds', 'Website', host(a.ip), a.user_agent, a.url, '/pricing', '料金プラン',
                       'newsletter', 'email', 'nl-' || m.bulk_id, m.contact_id
                FROM messaging_activity a JOIN messaging_message m ON m.id = a.message_id
                WHERE m.bulk_id = %(bulk)s AND a.kind = 'click' AND NOT a.machine
            ) e ORDER BY e.at""", {"bulk": send["bulk"], "template": send["template"]})

    def count_email_events(self) -> int:
        return self.scalar("""SELECT (SELECT count(*) FROM messaging_message)
                                   + (SELECT count(*) FROM messaging_activity)
                                   + (SELECT count(*) FROM messaging_activity WHERE kind = 'click' AND NOT machine)""")

    def web_events(self, first: int, count: int, start: dt.datetime, span: dt.timedelta) -> int:
        """`count` page views, tracked events and identifies from `start` over `span`, in time order."""
        if count <= 0:
            return 0
        pages, tracks = pool([(i, w) for i, (_p, _t, w) in enumerate(PAGES, 1)]), pool(
            [(i, w) for i, (_n, _p, w) in enumerate(TRACKS, 1)])
        return self.sql(f"""
            INSERT INTO events_event (message_id, type, name, properties, traits, context, anonymous_id, user_id,
                occurred_at, received_at, processed_at, source, ip, user_agent, url, path, title, referrer,
                utm_source, utm_medium, utm_campaign, utm_term, utm_content, bot, contact_id, session_id)
            SELECT 'web-' || s.i, s.type, CASE WHEN s.type = 'track' THEN (%(track_names)s::text[])[s.ti] ELSE '' END,
                   CASE s.type WHEN 'page' THEN jsonb_build_object('path', (%(paths)s::text[])[s.pi],
                                                                   'title', (%(titles)s::text[])[s.pi])
                               WHEN 'track' THEN (%(track_props)s::jsonb[])[s.ti] ELSE '{{}}' END,
                   CASE WHEN s.type = 'identify' THEN '{{"source": "form"}}'::jsonb ELSE '{{}}' END,
                   '{{"library": {{"name": "kizuna.js"}}, "locale": "ja-JP"}}',
                   CASE WHEN s.cid IS NULL THEN 'anon-' || s.anon
                        ELSE 'c' || s.cid || CASE WHEN s.rb < 0.2 THEN '-m' ELSE '' END END,
                   '', s.at, s.at + interval '1 second', s.at + interval '3 seconds', 'Website',
                   ('126.' || (10 + coalesce(s.cid, s.anon) %% 200) || '.' || (coalesce(s.cid, s.anon) / 200 %% 250)
                    || '.' || (coalesce(s.cid, s.anon) / 50000 %% 250))::inet,
                   (%(agents)s::text[])[1 + coalesce(s.cid, s.anon) %% cardinality(%(agents)s::text[])],
                   CASE WHEN s.type = 'page' THEN 'https://www.example.co.jp' || (%(paths)s::text[])[s.pi] ELSE '' END,
                   CASE WHEN s.type = 'page' THEN (%(paths)s::text[])[s.pi] ELSE '' END,
                   CASE WHEN s.type = 'page' THEN (%(titles)s::text[])[s.pi] ELSE '' END,
                   CASE WHEN s.type = 'page' THEN (%(refs)s::text[])[1 + floor(s.rr * cardinality(%(refs)s::text[]))::int]
                        ELSE '' END,
                   CASE WHEN s.ru < 0.1 THEN 'google' ELSE '' END, CASE WHEN s.ru < 0.1 THEN 'cpc' ELSE '' END,
                   CASE WHEN s.ru < 0.1 THEN 'ma-2026' ELSE '' END, '', '',
                   CASE WHEN s.rb < CASE WHEN s.cid IS NULL THEN 0.05 ELSE 0.003 END
                        THEN (%(bots)s::text[])[1 + floor(s.ru * cardinality(%(bots)s::text[]))::int] ELSE '' END,
                   s.cid, NULL
            FROM (SELECT r.*,
                         CASE WHEN r.ra < 0.7 THEN {self.contact_of_rank(f"floor({self.active} * r.rk * r.rk)")} END cid,
                         CASE WHEN r.rt < 0.78 THEN 'page' WHEN r.rt < 0.98 THEN 'track' ELSE 'identify' END type,
                         (%(pages)s::int[])[1 + floor(r.rp * cardinality(%(pages)s::int[]))::int] pi,
                         (%(tracks)s::int[])[1 + floor(r.rp * cardinality(%(tracks)s::int[]))::int] ti
                  FROM (SELECT i, %(start)s + (i - %(first)s) * %(step)s + random() * interval '20 seconds' AS at,
                               random() ra, random() rk, random() rt, random() rp, random() rr, random() ru,
                               random() rb, floor(random() * 2000000)::bigint anon
                        FROM generate_series(%(first)s, %(last)s) i OFFSET 0) r) s""",
                        {"first": first, "last": first + count - 1, "start": start, "step": span / count,
                         "pages": pages, "tracks": tracks, "paths": [p for p, _t, _w in PAGES],
                         "titles": [t for _p, t, _w in PAGES], "track_names": [n for n, _p, _w in TRACKS],
                         "track_props": [json.dumps(p, ensure_ascii=False) for _n, p, _w in TRACKS],
                         "refs": pool(REFERRERS), "agents": AGENTS, "bots": BOTS})


def child_generate(options: dict) -> dict:
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from kizuna.scoring.models import ScoringModel

    started = time.perf_counter()
    now = timezone.now()
    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("SET work_mem = '256MB'")
    loader = Loader(options["contacts"], options["events"], now)
    tables = ["contacts_company", "contacts_contact", "contacts_consent", "scoring_contactscore",
              "messaging_message", "messaging_activity", "events_event"]
    with transaction.atomic():
        ref = loader.reference_rows()
    # Rows are made consistent here, so foreign keys are not checked row by row during the load
    # (session_replication_role = replica), and indexes are made once at the end.
    with connection.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
    definitions = loader.drop_indexes(tables)
    log("companies and contacts")
    loader.companies_(ref)
    loader.contacts_(ref)
    loader.consent_and_scores(ref, ScoringModel.objects.get().pk)
    log("messages")
    messages = loader.messages(ref)
    email_events = loader.count_email_events()
    web_total = max(0, options["events"] - email_events)
    log(f"events: {email_events:,} from email, {web_total:,} web")
    window = dt.timedelta(days=DAYS / SENDS)
    done = 0
    for b, send in enumerate(ref["sends"]):
        count = web_total // SENDS + (web_total % SENDS if b == SENDS - 1 else 0)
        loader.web_events(done + 1, count, loader.start + window * b, window)
        done += count
        loader.email_events(send, ref)
    log("last activity, indexes, sequences, vacuum")
    loader.sql("""UPDATE contacts_contact c SET last_activity_at = e.last
                  FROM (SELECT contact_id, max(occurred_at) last FROM events_event
                        WHERE contact_id IS NOT NULL AND bot = '' GROUP BY contact_id) e
                  WHERE e.contact_id = c.id""")
    with connection.cursor() as cur:
        cur.execute("SET session_replication_role = origin")
    for definition in definitions:
        loader.sql(definition)
    for table in ["contacts_company", "contacts_contact"]:
        loader.sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    connection.cursor().execute("VACUUM ANALYZE")
    counts = {}
    with connection.cursor() as cur:
        for key, table in [("companies", "contacts_company"), ("contacts", "contacts_contact"),
                           ("consents", "contacts_consent"), ("scores", "scoring_contactscore"),
                           ("messages", "messaging_message"), ("activities", "messaging_activity"),
                           ("events", "events_event")]:
            cur.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")  # noqa: S608
            n, size = cur.fetchone()
            counts[key] = {"rows": n, "mb": size / 1e6}
        cur.execute("SELECT count(*) FILTER (WHERE contact_id IS NULL), count(DISTINCT contact_id), "
                    "count(*) FILTER (WHERE type = 'page'), count(*) FILTER (WHERE bot <> '') FROM events_event")
        anonymous, known_contacts, pages, bots = cur.fetchone()
        cur.execute("SELECT count(*) FILTER (WHERE opened_at IS NOT NULL), count(*) FILTER (WHERE clicked_at IS NOT "
                    "NULL), count(*) FILTER (WHERE machine_opened_at IS NOT NULL), count(*) FILTER (WHERE "
                    "machine_clicked_at IS NOT NULL) FROM messaging_message")
        opened, clicked, machine_opened, machine_clicked = cur.fetchone()
        cur.execute("SELECT pg_database_size(current_database())")
        db_size = cur.fetchone()[0]
    return {"seconds": time.perf_counter() - started, "counts": counts, "email_events": email_events,
            "web_events": web_total, "messages": messages, "anonymous_events": anonymous,
            "contacts_with_events": known_contacts, "page_views": pages, "bot_events": bots, "opened": opened,
            "clicked": clicked, "machine_opened": machine_opened, "machine_clicked": machine_clicked,
            "db_gb": db_size / 1e9, "generated_at": now.isoformat()}


# --- Measurement (child) --------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def hand_written_sql() -> str:
    """The same segment as a person would write it for PostgreSQL: the baseline for the full run."""
    return """
        SELECT count(*) FROM contacts_contact c
        WHERE c.industry = 'manufacturing' AND c.company_size IN ('100-299', '300-999')
          AND c.id IN (SELECT e.contact_id FROM events_event e
                       WHERE e.type = 'page' AND e.bot = '' AND e.occurred_at >= %(since)s
                         AND e.path ILIKE '%%/pricing%%' AND e.contact_id IS NOT NULL
                       GROUP BY e.contact_id HAVING count(*) >= 2)
          AND EXISTS (SELECT 1 FROM messaging_message m WHERE m.contact_id = c.id AND m.clicked_at >= %(since)s)"""


def other_segments(model_id: int) -> list[tuple[str, dict]]:
    """What a marketing team keeps besides the measured segment: the incremental run re-evaluates
    those an event can affect."""
    return [
        ("Pricing visitors (30 days)", {"event": "page", "where": [{"field": "path", "op": "contains",
                                                                    "value": "/pricing"}], "within_days": 30}),
        ("Webinar attendees", {"event": "Webinar Joined", "within_days": 90}),
        ("Read the newsletter (14 days)", {"email": "opened", "within_days": 14}),
        ("Hot leads", {"all": [{"field": "score.engagement", "model": model_id, "op": "gte", "value": 50},
                               {"field": "score.grade", "model": model_id, "op": "at_least", "value": "B"}]}),
        ("Kanto managers", {"all": [{"field": "region", "op": "in", "value": ["kanto"]},
                                    {"field": "job_title", "op": "contains", "value": "部長"}]}),
        ("Manufacturing, active, no demo", {"all": [
            {"field": "industry", "op": "in", "value": ["manufacturing"]},
            {"field": "last_activity_at", "op": "in_last_days", "value": 30},
            {"not": {"event": "Demo Booked"}}]}),
    ]


class CpuWatch:
    """How busy the machine was (cores, from /proc/stat) and the load average over a phase: other
    work shares these two cores, and the figures mean little without it."""

    def __init__(self) -> None:
        self.busy, self.total, self.load = self._read(), time.monotonic(), os.getloadavg()[0]

    @staticmethod
    def _read() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")

    def done(self) -> dict:
        seconds = time.monotonic() - self.total
        return {"busy_cores": (self._read() - self.busy) / max(seconds, 1e-9), "load_start": self.load,
                "load_end": os.getloadavg()[0]}


def child_measure(options: dict) -> dict:
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from kizuna.events.models import Event
    from kizuna.messaging.models import Message
    from kizuna.scoring.models import ScoringModel
    from kizuna.segments import filters, membership
    from kizuna.segments.models import Segment

    runs, samples = options["runs"], options["samples"]
    out: dict = {"runs": runs, "samples": samples, "cpu": {}}
    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0].split()[0]
        settings = {}
        for name in ["shared_buffers", "work_mem", "effective_cache_size", "max_parallel_workers_per_gather", "jit"]:
            cur.execute(f"SHOW {name}")
            settings[name] = cur.fetchone()[0]
    out["server"] = {"version": version, **settings}
    Segment.objects.filter(name__startswith="bench ").delete()
    models = membership.scoring_models()
    now = timezone.now()
    since = now - dt.timedelta(days=30)

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    def sql_count(sql: str, params) -> int:
        with connection.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]

    # Baselines.
    watch = CpuWatch()
    count_30 = "SELECT count(*) FROM events_event WHERE occurred_at >= %s"
    out["events_30d"] = sql_count(count_30, [since])
    out["baseline_count_s"] = [timed(lambda: sql_count(count_30, [since])) for _ in range(runs)]
    out["hand_members"] = sql_count(hand_written_sql(), {"since": since})
    out["baseline_hand_s"] = [timed(lambda: sql_count(hand_written_sql(), {"since": since})) for _ in range(runs)]
    out["cpu"]["baselines"] = watch.done()
    log(f"baselines: count(*) 30 days {statistics.median(out['baseline_count_s']):.3f}s, "
        f"hand-written {statistics.median(out['baseline_hand_s']):.3f}s ({out['hand_members']} members)")

    # Live count: the measured tree, and a tree on behaviour alone for comparison.
    watch = CpuWatch()
    for key, raw in [("live", THREE_CONDITIONS), ("live_behaviour", BEHAVIOUR_ONLY)]:
        tree = filters.check(raw, filters.Context.load())
        times = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            out[f"{key}_members"] = filters.compile_queryset(tree, timezone.now(), models).count()
            times.append(time.perf_counter() - started)
        out[f"{key}_warmup_s"], out[f"{key}_s"] = times[0], times[1:]
        log(f"{key} count: {statistics.median(out[f'{key}_s']):.3f}s ({out[f'{key}_members']} members)")
        if options.get("explain"):
            log(filters.compile_queryset(tree, timezone.now(), models).explain(analyze=True, buffers=True))
    out["cpu"]["live"] = watch.done()

    # Full recompute of a new segment.
    watch = CpuWatch()
    full = []
    for run in range(runs + 1):
        segment = membership.save_segment(Segment(name=f"bench three conditions {run}"), THREE_CONDITIONS)
        full.append(timed(lambda segment=segment: membership.recompute(segment)))
        segment.refresh_from_db()
        out["full_members"] = segment.member_count
        segment.delete()
    out["full_warmup_s"], out["full_s"] = full[0], full[1:]
    out["cpu"]["full"] = watch.done()
    log(f"full recompute: {statistics.median(out['full_s']):.3f}s ({out['full_members']} members)")

    # Segments for the incremental run; their first computation shows recompute at larger sizes.
    model_id = ScoringModel.objects.get().pk
    defined = [("bench three conditions", THREE_CONDITIONS)] + [(f"bench {n}", t) for n, t in other_segments(model_id)]
    out["segments"] = []
    for name, segment_tree in defined:
        segment = membership.save_segment(Segment(name=name), segment_tree)
        seconds = timed(lambda segment=segment: membership.recompute(segment))
        segment.refresh_from_db()
        out["segments"].append({"name": name.removeprefix("bench "), "members": segment.member_count,
                                "recompute_s": seconds, "triggers": segment.triggers})
        log(f"  {name}: {segment.member_count:,} members in {seconds:.2f}s")

    # Incremental: one event of one contact, as the worker processes it.
    rng = random.Random(20261122)
    with connection.cursor() as cur:
        cur.execute("SELECT max(id) FROM events_event")
        top = cur.fetchone()[0]
        picks = rng.sample(range(1, top + 1), min(top, samples * 6))
        cur.execute("SELECT contact_id FROM events_event WHERE id = ANY(%s) AND contact_id IS NOT NULL AND bot = '' "
                    "AND source = 'Website'", [picks])
        contacts = [r[0] for r in cur.fetchall()]
    rng.shuffle(contacts)
    timings, floor, kinds, first = [], [], {}, {}
    clicked: list[tuple] = []  # messages marked clicked here, put back afterwards
    before = membership_changes()
    watch = CpuWatch()
    for n in range(samples):
        contact_id = contacts[n % len(contacts)]
        roll = rng.random()
        at = timezone.now()
        with transaction.atomic():
            if roll < 0.3:
                kind, event = "page /pricing", _event(Event, n, contact_id, at, "page", "", "/pricing")
            elif roll < 0.75:
                kind, event = "page", _event(Event, n, contact_id, at, "page", "", rng.choice(PAGES[3:])[0])
            elif roll < 0.9:
                kind, event = "track", _event(Event, n, contact_id, at, "track", rng.choice(TRACKS)[0], "")
            else:
                message = Message.objects.filter(contact_id=contact_id, clicked_at__isnull=True).order_by(
                    "-sent_at").first()
                if message is not None:
                    clicked.append((message.pk, message.opened_at, message.clicks))
                    Message.objects.filter(pk=message.pk).update(clicked_at=at, opened_at=message.opened_at or at,
                                                                 clicks=message.clicks + 1)
                kind, event = "Email Clicked", _event(Event, n, contact_id, at, "track", "Email Clicked", "")
            # The floor under the same conditions: one primary-key read of the same contact.
            floor.append(timed(lambda contact_id=contact_id: sql_count(
                "SELECT count(*) FROM contacts_contact WHERE id = %s", [contact_id])) * 1000)
            elapsed = timed(lambda event=event: membership.on_events([event])) * 1000
        if kind not in first:  # the first event of a kind compiles that set of segments' SQL
            first[kind] = elapsed
            continue
        timings.append(elapsed)
        kinds.setdefault(kind, []).append(elapsed)
    out["cpu"]["incremental"] = watch.done()
    out["incremental_first_ms"] = first
    # Leave the data as generated, so that a --reuse run measures the same thing again.
    Event.objects.filter(message_id__startswith="bench-incremental-").delete()
    for pk, opened_at, clicks in clicked:
        Message.objects.filter(pk=pk).update(clicked_at=None, opened_at=opened_at, clicks=clicks)
    out["incremental_ms"], out["incremental_floor_ms"] = timings, floor
    out["incremental_by_kind"] = {k: {"n": len(v), "p50": statistics.median(v), "p95": quantile(v, 0.95)}
                                  for k, v in kinds.items()}
    out["incremental_changes"] = membership_changes() - before
    out["incremental_contacts"] = len(set(contacts[:samples]))
    log(f"incremental: p50 {statistics.median(timings):.2f} ms, p95 {quantile(timings, 0.95):.2f} ms "
        f"(pk read p50 {statistics.median(floor):.2f}, p95 {quantile(floor, 0.95):.2f}), "
        f"{out['incremental_changes']} membership changes")
    Segment.objects.filter(name__startswith="bench ").delete()
    return out


def membership_changes() -> int:
    from kizuna.segments.models import SegmentChange

    return SegmentChange.objects.count()


def _event(model, n: int, contact_id: int, at: dt.datetime, type_: str, name: str, path: str):
    """One processed event as the processor stores it before the handlers run."""
    return model.objects.create(
        message_id=f"bench-incremental-{at.timestamp():.6f}-{n}", type=type_, name=name, contact_id=contact_id,
        anonymous_id=f"c{contact_id}", occurred_at=at, received_at=at, processed_at=at, source="Website",
        path=path, url=f"https://www.example.co.jp{path}" if path else "", properties={"path": path} if path else {})


# --- Report ---------------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    from results import machine as described

    return described()


def render(gen: dict, m: dict, info: dict) -> str:
    med = statistics.median
    full, live, live_b = med(m["full_s"]), med(m["live_s"]), med(m["live_behaviour_s"])
    inc, floor = m["incremental_ms"], m["incremental_floor_ms"]
    p50, p95, p99 = med(inc), quantile(inc, 0.95), quantile(inc, 0.99)
    f50, f95 = med(floor), quantile(floor, 0.95)
    count_b, hand_b = med(m["baseline_count_s"]), med(m["baseline_hand_s"])
    c = gen["counts"]
    server = m["server"]
    ok = {"full": full <= TARGETS["full_s"], "incremental": p95 <= TARGETS["incremental_p95_ms"],
          "live count": live <= TARGETS["live_s"]}
    yes = {True: "met", False: "**not met**"}
    cpu = m["cpu"]
    lines = [
        SECTION, "",
        f"- Date: {dt.datetime.now(dt.UTC).date().isoformat()}; machine: {info['cores']} cores ({info['cpu']}), "
        f"{info['ram']} RAM, Linux {info['kernel']}, Python {info['python']}; the machine was shared with other work "
        "(load below)",
        f"- PostgreSQL {server['version']} (shared_buffers {server['shared_buffers']}, work_mem {server['work_mem']}, "
        f"effective_cache_size {server['effective_cache_size']}, max_parallel_workers_per_gather "
        f"{server['max_parallel_workers_per_gather']}, jit {server['jit']}); the data fits in the OS cache, and each "
        "figure comes after a warm-up run",
        f"- Dataset (generated with SQL in {gen['seconds'] / 60:.1f} min, {gen['db_gb']:.1f} GB): "
        f"{c['contacts']['rows']:,} contacts in {c['companies']['rows']:,} companies (Japanese names, titles, "
        "departments, prefectures and regions, 17 industries, 7 company sizes, stages, owners, 3% do-not-contact); "
        f"{c['consents']['rows']:,} consents; {c['scores']['rows']:,} lead scores; "
        f"{c['events']['rows']:,} events over {DAYS} days ({gen['page_views']:,} page views, "
        f"{gen['email_events']:,} email events, {gen['anonymous_events']:,} anonymous, {gen['bot_events']:,} bots; "
        f"{gen['contacts_with_events']:,} contacts with events, the k-th most active with a share ∝ 1/√k); "
        f"{c['messages']['rows']:,} messages from {SENDS} bulk sends ({gen['opened']:,} opened and "
        f"{gen['clicked']:,} clicked by people, {gen['machine_opened']:,} machine opens, "
        f"{gen['machine_clicked']:,} machine clicks; {c['activities']['rows']:,} activity rows)",
        "- Segment: industry in manufacturing AND company size in 100–299, 300–999 AND page /pricing ≥ 2 times in "
        "30 days AND a human email click in 30 days",
        "",
        "| measurement | result | target | baseline (same run) | ratio |",
        "|---|---|---|---|---|",
        f"| full: `membership.recompute` of a new segment ({m['full_members']:,} members) | **{full:.2f} s** median of "
        f"{len(m['full_s'])} (first run {m['full_warmup_s']:.2f} s) | ≤ {TARGETS['full_s']:.0f} s: {yes[ok['full']]} | "
        f"`count(*)` of the {m['events_30d']:,} events of 30 days: {count_b:.2f} s | {full / count_b:.1f}× |",
        f"| live count: `compile_queryset(tree).count()` | **{live:.2f} s** median of {len(m['live_s'])} "
        f"(first {m['live_warmup_s']:.2f} s) | ≤ {TARGETS['live_s']:.0f} s: {yes[ok['live count']]} | "
        f"hand-written SQL count of the same segment (GROUP BY … HAVING): {hand_b:.2f} s ({m['hand_members']:,}) | "
        f"{live / hand_b:.2f}× |",
        f"| incremental: `membership.on_events` for one event of one contact, {len(m['segments'])} segments defined | "
        f"**p95 {p95:.1f} ms** (p50 {p50:.1f}, p99 {p99:.1f}) over {len(inc)} events | p95 ≤ "
        f"{TARGETS['incremental_p95_ms']:.0f} ms: {yes[ok['incremental']]} | a primary-key read of the same contact, "
        f"just before: p50 {f50:.2f} ms, p95 {f95:.2f} ms | {p95 / f95:.1f}× at p95 |",
        f"| (for comparison) live count of a filter on behaviour alone: page /pricing in 30 days "
        f"({m['live_behaviour_members']:,}) | {live_b:.2f} s median of {len(m['live_behaviour_s'])} | | "
        f"`count(*)` of the events of 30 days: {count_b:.2f} s | {live_b / count_b:.1f}× |",
        "",
        "Machine while measuring (2 cores; busy = all processes, this benchmark and PostgreSQL included): "
        + "; ".join(f"{phase}: {v['busy_cores']:.2f} cores busy, load {v['load_start']:.1f} → {v['load_end']:.1f}"
                    for phase, v in cpu.items()) + ".",
        "",
        "Incremental by kind of event (the contacts are those of randomly drawn stored events, so active contacts "
        f"come up as often as they do in the log; {m['incremental_contacts']} distinct contacts, "
        f"{m['incremental_changes']} memberships changed). The first event of each kind is left out of the figures: "
        "it compiles the SQL for the segments that kind of event touches, once per process and set of segments ("
        + ", ".join(f"{k}: {v:.0f} ms" for k, v in sorted(m["incremental_first_ms"].items())) + "):",
        "",
        "| event | samples | p50 | p95 |",
        "|---|---|---|---|",
    ]
    for kind, v in sorted(m["incremental_by_kind"].items()):
        lines.append(f"| {kind} | {v['n']} | {v['p50']:.1f} ms | {v['p95']:.1f} ms |")
    lines += ["", "The segments defined during the incremental run, each computed in full first (a new segment: "
              "every member and its entry written):", "", "| segment | members | recompute | re-evaluated on |",
              "|---|---|---|---|"]
    for seg in m["segments"]:
        t = seg["triggers"]
        on = ", ".join([*t.get("fields", []), *t.get("events", []), *(["email"] if t.get("email") else []),
                        *[f"segment {x}" for x in t.get("segments", [])]])
        lines.append(f"| {seg['name']} | {seg['members']:,} | {seg['recompute_s']:.2f} s | {on} |")
    lines += ["", f"Targets: full ≤ {TARGETS['full_s']:.0f} s, incremental p95 ≤ {TARGETS['incremental_p95_ms']:.0f} ms, "
              f"live count ≤ {TARGETS['live_s']:.0f} s. "
              f"Met: {', '.join(k for k, v in ok.items() if v) or 'none'}; "
              f"not met: {', '.join(k for k, v in ok.items() if not v) or 'none'}.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--pg-url", default=os.environ.get("KIZUNA_BENCH_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--reuse", action="store_true", help="measure on the database a --keep run left")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--explain", action="store_true", help="print the live count's EXPLAIN ANALYZE")
    parser.add_argument("--save", help="also write the raw figures to this JSON file")
    parser.add_argument("--code", help="measure the kizuna package of another checkout (before/after on the same "
                                       "data; migrate the database to its schema first)")
    parser.add_argument("--doc", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/benchmarks.md (default: for the full size only)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_options", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        options = json.loads(args.child_options)
        result = child_generate(options) if args.child == "generate" else child_measure(options)
        print(json.dumps(result, default=str))
        return

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kizuna-segbench-") as data_dir:
        env = child_env(args.pg_url, data_dir)
        state = Path(tempfile.gettempdir()) / f"{args.pg_url.rsplit('/', 1)[1]}.json"
        if args.reuse and state.exists():
            gen = json.loads(state.read_text())
            log(f"reusing the database generated at {gen['generated_at']}")
        else:
            fresh_database(args.pg_url)
            subprocess.run([sys.executable, "-m", "kizuna.cli", "init", "-v0"], env=env, check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
            log(f"generating {args.contacts:,} contacts and {args.events:,} events")
            gen = run_child("generate", env, {"contacts": args.contacts, "events": args.events})
            state.write_text(json.dumps(gen))
            log(f"generated in {gen['seconds']:.0f}s, {gen['db_gb']:.1f} GB")
        try:
            if args.code:
                env["PYTHONPATH"] = str(Path(args.code).resolve())
            m = run_child("measure", env, {"runs": args.runs, "samples": args.samples, "explain": args.explain})
        finally:
            if not args.keep:
                drop_database(args.pg_url)
                state.unlink(missing_ok=True)
    report = render(gen, m, machine())
    print(report)
    if args.save:
        Path(args.save).write_text(json.dumps({"generation": gen, "measurement": m}, default=str))
    log(f"total {time.perf_counter() - started:.0f}s")
    write = args.doc if args.doc is not None else args.contacts >= 1_000_000 and not args.code
    if write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import write_section

        write_section(SECTION, report)
        log("figures written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
