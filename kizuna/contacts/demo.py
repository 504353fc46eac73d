"""A realistic Japanese B2B sample dataset for `kizuna demo`: companies across industries and
sizes, contacts with titles, departments, prefectures and furigana, sales owners, tags, a
seminar list and newsletter consent. Deterministic for a given seed."""

from __future__ import annotations

import random
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from faker import Faker

from kizuna.accounts.models import User
from kizuna.accounts.roles import Role

from .models import (
    Company,
    Consent,
    ConsentRecord,
    ConsentStatus,
    Contact,
    ContactList,
    LifecycleStage,
    ListMembership,
    Source,
    SubscriptionTopic,
    Tag,
)
from .reference import PREFECTURE_REGION, PREFECTURES, Industry, size_for_employees

TITLES = [
    ("代表取締役", 3), ("取締役", 3), ("執行役員", 3), ("本部長", 4), ("部長", 10), ("次長", 4),
    ("課長", 12), ("係長", 6), ("主任", 8), ("マネージャー", 8), ("リーダー", 6), ("担当", 20),
    ("", 7),
]
DEPARTMENTS = ["営業部", "マーケティング部", "情報システム部", "経営企画部", "総務部", "人事部",
               "製造部", "品質管理部", "購買部", "DX推進室", "カスタマーサクセス部", "開発部"]
STAGES = [
    (LifecycleStage.SUBSCRIBER, 30), (LifecycleStage.LEAD, 35), (LifecycleStage.MQL, 12),
    (LifecycleStage.SQL, 8), (LifecycleStage.OPPORTUNITY, 6), (LifecycleStage.CUSTOMER, 8),
    (LifecycleStage.EVANGELIST, 1),
]
SOURCES = [(Source.IMPORT, 45), (Source.FORM, 35), (Source.MANUAL, 10), (Source.API, 10)]
TAGS = ["展示会2026", "DX推進セミナー", "資料ダウンロード", "導入事例閲覧", "価格ページ閲覧", "既存顧客", "競合利用中"]
# Weighted towards the industrial prefectures, as a Japanese B2B list is.
PREFECTURE_WEIGHTS = {"13": 30, "27": 10, "14": 8, "23": 8, "11": 5, "12": 4, "40": 4, "28": 3, "26": 2}
SALES_REPS = [("sato", "佐藤", "健一"), ("suzuki", "鈴木", "美咲"), ("takahashi", "高橋", "大輔")]
FREE_MAIL = ["gmail.com", "yahoo.co.jp", "outlook.jp"]
DOMAIN_SUFFIXES = ["kogyo", "shoji", "tech", "systems", "seisakusho", "denki", "kensetsu", "soft", "butsuryu"]
EMPLOYEE_CHOICES = [5, 20, 35, 60, 80, 120, 250, 400, 800, 1500, 3000, 8000, 20000]


def _weighted(rng: random.Random, pairs):
    values, weights = zip(*pairs, strict=True)
    return rng.choices(values, weights=weights)[0]


def _sales_owners() -> list[User]:
    owners = []
    for username, family, given in SALES_REPS:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={"role": Role.SALES, "last_name": family, "first_name": given,
                      "email": f"{username}@kizuna.example"},
        )
        if created:
            user.set_unusable_password()
            user.save()
        owners.append(user)
    return owners


@transaction.atomic
def generate_demo_data(*, contacts: int = 2000, seed: int = 7) -> str:
    """Fills the database with `contacts` sample contacts; returns a one-line summary."""
    rng = random.Random(seed)
    fake = Faker("ja_JP")
    fake.seed_instance(seed)
    now = timezone.now()
    owners = _sales_owners()
    prefectures = [code for code, *_ in PREFECTURES]
    pref_weights = [PREFECTURE_WEIGHTS.get(code, 1) for code in prefectures]

    companies: list[Company] = []
    used_domains: set[str] = set()
    for i in range(max(1, contacts // 8)):
        employees = rng.choice(EMPLOYEE_CHOICES)
        stem = f"{fake.last_romanized_name().lower()}-{rng.choice(DOMAIN_SUFFIXES)}"
        domain = f"{stem}{i}.co.jp" if f"{stem}.co.jp" in used_domains else f"{stem}.co.jp"
        used_domains.add(domain)
        companies.append(Company(
            name=fake.company(), domain=domain, industry=rng.choice(Industry.values[:-1]),
            employees=employees, company_size=size_for_employees(employees),
            prefecture=rng.choices(prefectures, weights=pref_weights)[0],
            address=fake.address(), phone=fake.phone_number(), website=f"https://www.{domain}/",
            owner=rng.choice(owners) if rng.random() < 0.5 else None,
            created_at=now - timedelta(days=rng.randint(30, 900)),
        ))
    Company.objects.bulk_create(companies, batch_size=1000)
    companies = list(Company.objects.order_by("id"))

    rows: list[Contact] = []
    seen: set[str] = set()
    for n in range(contacts):
        family, family_kana, family_roman = fake.last_name_pair()
        given, given_kana, given_roman = fake.first_name_pair()
        company = rng.choice(companies)
        free = rng.random() < 0.08
        local = f"{given_roman}.{family_roman}".lower()
        domain = rng.choice(FREE_MAIL) if free else company.domain
        email = f"{local}@{domain}"
        if email in seen:
            email = f"{local}{n}@{domain}"
        seen.add(email)
        created = now - timedelta(days=rng.randint(0, 720), minutes=rng.randint(0, 1440))
        rows.append(Contact(
            email=email, family_name=family, given_name=given, family_name_kana=family_kana,
            given_name_kana=given_kana, phone=fake.phone_number(),
            company=None if free else company, company_name=company.name,
            job_title=_weighted(rng, TITLES), department=rng.choice(DEPARTMENTS),
            prefecture=company.prefecture, region=PREFECTURE_REGION[company.prefecture],
            industry=company.industry, company_size=company.company_size,
            lifecycle_stage=_weighted(rng, STAGES), source=_weighted(rng, SOURCES),
            owner=company.owner or (rng.choice(owners) if rng.random() < 0.3 else None),
            language="ja", created_at=created, updated_at=created,
            last_activity_at=created + timedelta(days=rng.randint(0, 60)) if rng.random() < 0.7 else None,
        ))
    Contact.objects.bulk_create(rows, batch_size=1000)
    ids = list(Contact.objects.order_by("id").values_list("id", flat=True))

    tags = [Tag.objects.get_or_create(name=name)[0] for name in TAGS]
    through = Contact.tags.through
    links = [through(contact_id=cid, tag_id=tag.id) for cid in ids for tag in rng.sample(tags, rng.randint(0, 2))]
    through.objects.bulk_create(links, batch_size=2000, ignore_conflicts=True)

    seminar, _ = ContactList.objects.get_or_create(
        name="2026年10月 DX推進セミナー参加者", defaults={"description": "東京会場・オンライン同時開催"}
    )
    ListMembership.objects.bulk_create(
        [ListMembership(contact_list=seminar, contact_id=cid, source=Source.IMPORT)
         for cid in rng.sample(ids, min(len(ids), max(1, contacts // 10)))],
        ignore_conflicts=True,
    )

    newsletter = SubscriptionTopic.objects.filter(key="newsletter").first()
    if newsletter:
        opted = [cid for cid in ids if rng.random() < 0.7]
        Consent.objects.bulk_create(
            [Consent(contact_id=cid, topic=newsletter, status=ConsentStatus.OPTED_IN) for cid in opted],
            batch_size=2000, ignore_conflicts=True,
        )
        ConsentRecord.objects.bulk_create(
            [ConsentRecord(contact_id=cid, topic=newsletter, status=ConsentStatus.OPTED_IN,
                           method=ConsentRecord.Method.FORM, source="資料ダウンロードフォーム",
                           text_shown="メールマガジンの配信に同意します。") for cid in opted],
            batch_size=2000,
        )
    return f"{len(companies)} companies, {len(ids)} contacts, {len(owners)} sales owners"
