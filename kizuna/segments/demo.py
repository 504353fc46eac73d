"""Demo segments: the audiences a Japanese B2B team starts from, over the demo's contacts, web
traffic and newsletter, computed at once so the pages have members to show."""

from __future__ import annotations

from kizuna.segments import filters
from kizuna.segments.membership import recompute, save_segment
from kizuna.segments.models import Segment

KANTO_MANUFACTURING = {"all": [
    {"field": "industry", "op": "in", "value": ["manufacturing"]},
    {"field": "region", "op": "in", "value": ["kanto"]},
    {"field": "company_size", "op": "in", "value": ["100-299", "300-999", "1000-4999", "5000+"]},
]}
PRICING_TWICE = {"event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}],
                 "count": {"op": "gte", "value": 2}, "within_days": 30}
DEMOS = [
    ("関東の製造業（100名以上）", "関東の従業員100名以上の製造業。", KANTO_MANUFACTURING),
    ("料金ページを30日で2回以上", "直近30日に料金ページを2回以上見た人。", PRICING_TWICE),
    ("ニュースレターをクリックした人", "直近30日にメールのリンクをクリックした人（セキュリティスキャナーは除く）。",
     {"email": "clicked", "within_days": 30}),
    ("検討が進んだリード（未商談）",
     "30日で料金ページ2回以上、かつメールクリックかフォーム送信あり。商談・顧客はまだ。",
     {"all": [PRICING_TWICE,
              {"any": [{"email": "clicked", "within_days": 30}, {"event": "Form Submitted"}]},
              {"not": {"field": "lifecycle_stage", "op": "in", "value": ["opportunity", "customer", "evangelist"]}}]}),
]


def ensure_demo_segments() -> str:
    if Segment.objects.exists():
        return "segments already set"
    ctx = filters.Context.load()
    made = []
    for name, description, tree in DEMOS:
        segment = save_segment(Segment(name=name, description=description), tree, ctx=ctx)
        recompute(segment)
        segment.refresh_from_db()
        made.append(f"{name} ({segment.member_count})")
    return "segments: " + ", ".join(made)
