"""Shared set-up for the form tests: a form saved through the service, and posting to it as a
browser would (a token issued some seconds earlier, so the minimum fill time has passed)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from kizuna.capture import services, tokens
from kizuna.capture.models import Form

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
PAGE = "https://www.example.co.jp/whitepaper?utm_source=newsletter&utm_medium=email&utm_campaign=dx2026"


def definition(**changes) -> dict:
    base = {
        "language": "ja",
        "title": "資料ダウンロード",
        "fields": [
            {"name": "email", "type": "email", "label": "メールアドレス", "required": True, "maps_to": "email"},
            {"name": "sei", "type": "text", "label": "姓", "required": True, "maps_to": "family_name"},
            {"name": "mei", "type": "text", "label": "名", "maps_to": "given_name"},
            {"name": "company", "type": "text", "label": "会社名", "maps_to": "company_name", "progressive": True},
            {"name": "tel", "type": "phone", "label": "電話番号", "maps_to": "phone"},
            {"name": "employees", "type": "number", "label": "従業員数", "min": 1, "max": 1000000,
             "maps_to": "company.employees"},
            {"name": "interest", "type": "select", "label": "ご関心", "options": ["生産管理", "在庫管理"]},
            {"name": "message", "type": "textarea", "label": "ご質問"},
            {"name": "campaign", "type": "hidden", "from": "utm_campaign"},
            {"name": "ref_code", "type": "hidden", "from": "query:ref"},
            {"name": "agree", "type": "consent", "text": "メールマガジンの配信に同意します。", "version": "2026-12",
             "topics": ["newsletter"], "policy_url": "https://www.example.co.jp/privacy"},
        ],
        "pool": [
            {"name": "pref", "type": "prefecture", "label": "都道府県", "maps_to": "prefecture"},
            {"name": "dept", "type": "text", "label": "部署", "maps_to": "department"},
        ],
        "thank_you": {"message": "ありがとうございました。資料をメールでお送りします。"},
        "spam": {"min_seconds": 3, "block_disposable": True},
    }
    base.update(changes)
    return base


def make_form(slug: str = "whitepaper", name: str = "ホワイトペーパー", actor=None, **changes) -> Form:
    return services.save_form(actor, Form(name=name, slug=slug), definition(**changes))


def good(**changes) -> dict:
    data = {"email": "taro.yamada@maruyama-seiki.co.jp", "sei": "山田", "mei": "太郎", "company": "丸山精機株式会社",
            "tel": "03-1234-5678", "employees": "250", "interest": "生産管理", "message": "導入事例を知りたい",
            "agree": "on", "kz_page": PAGE, "kz_ref": "https://www.google.com/", "kz_aid": "aid-1"}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def post(client, form: Form, data: dict, *, seconds: float = 10, json: bool = False, ip: str = "203.0.113.7",
         token: str | None = None, shown: list[str] | None = None, **headers):
    """Posts like a visitor who opened the form `seconds` ago."""
    if token is None:
        token = tokens.issue(form, shown=shown, now=timezone.now() - timedelta(seconds=seconds))
    extra = {"HTTP_USER_AGENT": CHROME, "REMOTE_ADDR": ip, **headers}
    if json:
        extra["HTTP_ACCEPT"] = "application/json"
    return client.post(f"/f/{form.slug}/submit", {**data, "kz_token": token}, **extra)
