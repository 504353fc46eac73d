"""The demo website: a small corporate site of a fictional MA vendor, served by Kizuna under
/demo-site/ with the real tracker snippet, so the simulator's visitors (and anyone trying the demo)
produce page views, dwell times and form fills exactly as a customer's own site would.

Public on purpose (tests/test_security.py PUBLIC): it is a stand-in for a customer's website. It
shows fixed marketing copy only; nothing a visitor sends is shown back.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

KEY_NAME = "Demo site"

# path (without /demo-site/) → (title, lead paragraph, links to other pages or forms)
PAGES: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "": ("株式会社きずなデモ | マーケティングオートメーション",
         "見込み客を見つけ、育て、営業に渡す。中堅・中小企業のためのMAツールです。",
         [("features/", "機能一覧"), ("pricing/", "料金プラン"), ("case-studies/", "導入事例"),
          ("whitepaper/", "資料ダウンロード"), ("seminars/", "セミナー")]),
    "features/": ("機能一覧", "フォーム、ステップメール、スコアリング、営業への通知までひとつに。",
                  [("features/scoring/", "リードスコアリング"), ("features/email/", "メール配信"),
                   ("features/reports/", "レポート作成"), ("pricing/", "料金プラン")]),
    "features/scoring/": ("リードスコアリング", "属性と行動で点数を付け、ホットリードを営業に知らせます。",
                          [("case-studies/manufacturing/", "製造業の導入事例"), ("pricing/", "料金プラン")]),
    "features/email/": ("メール配信", "ステップメール、一斉配信、トリガーメール。", [("pricing/", "料金プラン")]),
    "features/reports/": ("レポート作成", "ファネルやキャンペーンの成果を、ドラッグ操作でレポートに。",
                          [("features/", "機能一覧")]),
    "pricing/": ("料金プラン", "スタンダード 月額5万円〜。お見積りは最短即日。",
                 [("contact/", "お見積り・お問い合わせ"), ("case-studies/", "導入事例")]),
    "case-studies/": ("導入事例", "製造業・IT・商社など120社以上の事例。",
                      [("case-studies/manufacturing/", "製造業：商談数が半年で2倍"), ("pricing/", "料金プラン")]),
    "case-studies/manufacturing/": ("導入事例：製造業", "展示会の名刺をMAで育成し、商談数が半年で2倍になりました。",
                                    [("pricing/", "料金プラン"), ("contact/", "お問い合わせ")]),
    "whitepaper/": ("資料：はじめてのMA導入ガイド", "MA導入の手順と事例をまとめたPDFを無料でお送りします。",
                    [("/f/ma-guide", "資料を無料でダウンロード")]),
    "seminars/": ("セミナー・イベント", "毎月オンラインセミナーを開催しています。",
                  [("/f/seminar-signup", "セミナーに申し込む")]),
    "blog/lead-nurturing/": ("リードナーチャリングとは", "すぐには買わない見込み客を、適切な情報で育てる方法。",
                             [("whitepaper/", "資料ダウンロード")]),
    "products/analytics/": ("製品：アナリティクス", "既存データをそのまま分析。既存のお客様は特別価格。",
                            [("contact/", "お問い合わせ"), ("pricing/", "料金プラン")]),
    "contact/": ("お問い合わせ", "お見積り・デモのご依頼はこちらから。", [("pricing/", "料金プラン")]),
    "careers/": ("採用情報", "一緒に働く仲間を募集しています。", [("", "トップ")]),
}


def write_key():
    """The write key the demo site's tracker uses, limited to this installation's host."""
    from urllib.parse import urlsplit

    from kizuna.events.models import WriteKey

    key = WriteKey.objects.filter(name=KEY_NAME).first()
    if key is None:
        key = WriteKey.objects.create(name=KEY_NAME, allowed_domains=urlsplit(settings.BASE_URL).hostname or "")
    return key


def url(path: str) -> str:
    return f"{settings.BASE_URL.rstrip('/')}/demo-site/{path}"


@require_GET
def page(request: HttpRequest, path: str) -> HttpResponse:
    if path not in PAGES:
        raise Http404("no such page on the demo site")
    title, lead, links = PAGES[path]
    return render(request, "playbooks/site.html", {
        "title": title, "lead": lead, "nav": [(f"/demo-site/{p}", PAGES[p][0]) for p in
                                              ("", "features/", "pricing/", "case-studies/", "whitepaper/",
                                               "seminars/", "products/analytics/")],
        "links": [(target if target.startswith("/") else f"/demo-site/{target}", label) for target, label in links],
        "tracker_src": f"/kz.js?k={write_key().key}",
    })
