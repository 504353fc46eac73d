"""Building a segment in Chromium with the JS builder against the running product: the live
count follows every change (and names the path of a fault), the form saves the tree the builder
wrote, the worker computes the members, and the detail page shows them with the growth chart —
looked at in English and in Japanese."""

from __future__ import annotations

import json
import os

import pytest

from .conftest import kizuna_shell as _shell
from .conftest import login
from .conftest import shot as _shot

pytestmark = pytest.mark.browser

SETUP = """
from datetime import timedelta
from django.utils import timezone
from kizuna.contacts.models import Contact, Tag
from kizuna.events.models import Event

run = "{run}"
now = timezone.now()
vip, _ = Tag.objects.get_or_create(name="<b>vip</b>")
for i in range(12):
    industry = "manufacturing" if i < 8 else "retail"
    contact = Contact.objects.create(email=f"seg{{i}}-{{run}}@example.jp", family_name=f"<i>製造{{i}}</i>",
                                     given_name="太郎", industry=industry, prefecture="13")
    if i % 4 == 0:
        contact.tags.add(vip)
    for n in range(i % 3):  # 0, 1 or 2 visits of the pricing page
        Event.objects.create(message_id=f"seg-{{run}}-{{i}}-{{n}}", type="page", contact=contact, path="/pricing",
                             url="https://www.example.co.jp/pricing", title="料金", occurred_at=now - timedelta(days=n),
                             received_at=now, processed_at=now)
"""

HISTORY = """
from datetime import timedelta
from django.utils import timezone
from kizuna.segments.models import SegmentCount

today = timezone.localdate()
for days, members in ((28, 0), (21, 1), (14, 1), (7, 3)):
    SegmentCount.objects.create(segment_id={segment}, day=today - timedelta(days=days), members=members)
"""






def _count(page) -> int:
    """The live count once it has settled on a number."""
    page.wait_for_function("() => { const o = document.querySelector('[data-live-count]');"
                           " return o.classList.contains('ok') || o.classList.contains('bad'); }")
    return int(page.locator("[data-live-count]").get_attribute("data-count") or -1)


def _wait_count(page, expected: int) -> None:
    page.wait_for_function(
        "n => { const o = document.querySelector('[data-live-count]');"
        " return o.classList.contains('ok') && o.dataset.count === String(n); }", arg=expected)


def test_build_a_segment_in_the_browser_and_see_its_members(page, kizuna_server):
    run = os.urandom(3).hex()
    _shell(kizuna_server, SETUP.format(run=run))
    login(page)
    page.goto("/segments/")
    page.click("text=New segment")
    page.wait_for_url("**/segments/new/")
    page.fill("#id_name", f"製造業で料金ページ {run}")
    builder = page.locator("[data-segment-builder]")
    assert builder.is_visible()
    assert page.locator("[data-filter-json-box]").get_attribute("open") is None  # JSON folded away by the builder
    everyone = _count(page)
    assert everyone >= 12

    root = "[data-segment-builder] > div > .seg-group > .seg-group-foot"
    # The first condition offered is "Email contains": this run's contacts only
    page.click(f"{root} > button:text-is('+ Condition')")
    page.fill("[data-path='all[0]'] input[data-part=value]", run)
    _wait_count(page, 12)

    # Industry is manufacturing
    page.click(f"{root} > button:text-is('+ Condition')")
    page.select_option("[data-path='all[1]'] .seg-subject", "field:industry")
    page.select_option("[data-path='all[1]'] select[data-part=value]", ["manufacturing"])
    _wait_count(page, 8)

    # … who visited the pricing page: first with no text, which the count names as the fault
    page.click(f"{root} > button:text-is('+ Condition')")
    page.select_option("[data-path='all[2]'] .seg-subject", "page")
    page.wait_for_selector("[data-live-count].bad")
    assert "all[2].where[0].value" in page.locator("[data-live-count]").inner_text()
    assert page.locator("[data-path='all[2]'].has-error input[data-part='where[0].value'].has-error").count() == 1
    _shot(page, "segment-builder-error")
    page.fill("[data-path='all[2]'] input[data-part='where[0].value']", "/pricing")
    _wait_count(page, sum(1 for i in range(8) if i % 3))
    # … at least twice
    page.fill("[data-path='all[2]'] input[data-part='count.value']", "2")
    twice = sum(1 for i in range(8) if i % 3 == 2)
    _wait_count(page, twice)

    # NOT turns a condition into its opposite, and back
    page.click("[data-path='all[2]'] > .seg-line > button:text-is('Not')")
    _wait_count(page, 8 - twice)
    assert page.locator("[data-path='all[2]'].seg-not").count() == 1
    page.click("[data-path='all[2]'] > .seg-not-head > button:text-is('Remove NOT')")
    _wait_count(page, twice)

    # A nested "any" group: has the tag, or is in Tokyo
    page.click(f"{root} > button:text-is('+ Group')")
    group_foot = "[data-path='all[3]'] > .seg-group-foot > button:text-is('+ Condition')"
    page.click(group_foot)
    page.select_option("[data-path='all[3].any[0]'] .seg-subject", "field:tag")
    page.fill("[data-path='all[3].any[0]'] input[data-part=value]", "<b>vip</b>")
    _wait_count(page, sum(1 for i in range(8) if i % 3 == 2 and i % 4 == 0))
    page.click(group_foot)
    page.select_option("[data-path='all[3].any[1]'] .seg-subject", "field:prefecture")
    page.select_option("[data-path='all[3].any[1]'] select[data-part=value]", ["13"])
    _wait_count(page, twice)  # everyone is in Tokyo
    _shot(page, "segment-builder")

    tree = json.loads(page.locator("[data-filter-json]").input_value())
    assert tree == {"all": [
        {"field": "email", "op": "contains", "value": run},
        {"field": "industry", "op": "in", "value": ["manufacturing"]},
        {"event": "page", "where": [{"field": "path", "op": "contains", "value": "/pricing"}],
         "count": {"op": "gte", "value": 2}, "within_days": 30},
        {"any": [{"field": "tag", "op": "has", "value": "<b>vip</b>"},
                 {"field": "prefecture", "op": "in", "value": ["13"]}]},
    ]}

    # Editing the JSON by hand redraws the builder
    page.click("[data-filter-json-box] summary")
    page.fill("[data-filter-json]", json.dumps({"all": tree["all"][:3]}))
    page.wait_for_function("() => !document.querySelector(\"[data-path='all[3]']\")")
    _wait_count(page, twice)

    page.click("button:has-text('Save segment')")
    page.wait_for_url("**/segments/*/")
    # The worker computes the members; the page polls and reloads when it is done.
    page.wait_for_selector("[data-member-count]")
    page.wait_for_function("() => !document.querySelector('[data-progress-url]')", timeout=60_000)
    assert page.locator("[data-member-count]").inner_text() == str(twice)
    members = page.locator("[data-members] tbody tr")
    assert members.count() == twice
    assert "<i>製造" in members.first.inner_text()  # shown as text, never as markup
    assert page.locator("[data-growth] svg.growth-chart circle").count() >= 1
    words = page.locator("[data-description]").inner_text()
    assert "Industry is any of Manufacturing" in words and "at least 2 times in the last 30 days" in words
    assert page.locator("[data-changes] tbody tr").count() == twice
    # Counts of earlier days, as the worker records them each day, draw the growth line.
    segment_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    _shell(kizuna_server, HISTORY.format(segment=segment_id))
    page.reload()
    assert page.locator("[data-growth] svg.growth-chart circle").count() == 5
    assert page.locator("[data-growth] svg.growth-chart polyline").count() == 1
    _shot(page, "segment-detail")

    page.goto("/segments/")
    assert f"製造業で料金ページ {run}" in page.locator("[data-segments]").inner_text()
    _shot(page, "segment-list")

    try:
        page.select_option("#lang-select", "ja")
        page.wait_for_function("document.documentElement.lang === 'ja'")
        _shot(page, "segment-list-ja")
        page.click(f"text=製造業で料金ページ {run}")
        page.wait_for_selector("[data-member-count]")
        _shot(page, "segment-detail-ja")
        page.click("a[href$='/edit/']")
        page.wait_for_selector("[data-live-count].ok")
        _wait_count(page, twice)
        _shot(page, "segment-builder-ja")
        page.goto(f"/segments/{segment_id}/")
        page.click("[data-send]")  # a bulk send to this segment, chosen already
        page.wait_for_selector("[data-bulk-form]")
        assert page.locator("#id_segment").input_value() == segment_id
        _shot(page, "bulk-send-to-segment-ja")
    finally:
        page.select_option("#lang-select", "en")
        page.wait_for_function("document.documentElement.lang === 'en'")


KINDS = """
import json
from kizuna.contacts.models import ContactList, CustomField, SubscriptionTopic
from kizuna.messaging.models import EmailTemplate
from kizuna.scoring.models import ScoringModel
from kizuna.segments.models import Segment

run = "{run}"
model = ScoringModel.objects.order_by("id").first() or ScoringModel.objects.create(name="Default")
topic = SubscriptionTopic.objects.create(key=f"news{{run}}", name=f"ニュース {{run}}")
for key, kind, choices in ((f"plan{{run}}", "choice", ["basic", "pro"]), (f"tools{{run}}", "multi_choice",
                           ["sfa", "ma", "crm"]), (f"budget{{run}}", "number", []), (f"vip{{run}}", "boolean", [])):
    CustomField.objects.create(key=key, label=key, field_type=kind, choices=choices)
seminar = ContactList.objects.create(name=f"セミナー {{run}}")
template = EmailTemplate.objects.create(name=f"月刊 {{run}}")
other = Segment.objects.create(name=f"Other {{run}}", filter={{"all": []}})
print(json.dumps({{"model": model.pk, "topic": topic.key, "list": seminar.pk, "template": template.pk,
                  "segment": other.pk}}))
"""


def test_every_kind_of_condition_is_drawn_and_kept(page, kizuna_server):
    run = os.urandom(3).hex()
    ids = json.loads(_shell(kizuna_server, KINDS.format(run=run)).splitlines()[-1])
    tree = {"all": [
        {"field": "job_title", "op": "contains", "value": "部長"},
        {"field": "lifecycle_stage", "op": "in", "value": ["mql", "sql"]},
        {"field": "created_at", "op": "before", "value": "2026-01-01"},
        {"field": "last_activity_at", "op": "in_last_days", "value": 30},
        {"field": "do_not_contact", "op": "is_false"},
        {"field": "owner", "op": "is_not_set"},
        {"field": "company.employees", "op": "gte", "value": 300},
        {"field": f"custom.plan{run}", "op": "in", "value": ["pro"]},
        {"field": f"custom.tools{run}", "op": "has_all", "value": ["ma", "sfa"]},
        {"field": f"custom.budget{run}", "op": "lte", "value": 1000.5},
        {"field": f"custom.vip{run}", "op": "is_true"},
        {"field": "tag", "op": "has_not", "value": "競合"},
        {"field": "list", "op": "not_in", "value": ids["list"]},
        {"field": "score.engagement", "model": ids["model"], "op": "gte", "value": 10},
        {"field": "score.grade", "model": ids["model"], "op": "in", "value": ["A", "B"]},
        {"field": f"consent.{ids['topic']}", "op": "in", "value": ["opted_in", "unknown"]},
        {"any": [
            {"event": "Form Submitted", "where": [{"field": "properties.form", "op": "equals", "value": "資料請求"}],
             "count": {"op": "gte", "value": 1}, "within_days": None},
            {"event": "Demo Booked", "where": [], "count": {"op": "eq", "value": 0}, "within_days": 90},
            {"email": "clicked", "template": ids["template"], "count": {"op": "gte", "value": 2}, "within_days": 14},
            {"email": "sent", "template": None, "count": {"op": "lte", "value": 3}, "within_days": None},
        ]},
        {"not": {"segment": ids["segment"]}},
        {"not": {"not": {"event": "page", "where": [{"field": "url", "op": "starts_with", "value": "https://"}],
                         "count": {"op": "gte", "value": 1}, "within_days": 7}}},
    ]}
    login(page)
    page.goto("/segments/new/")
    page.click("[data-filter-json-box] summary")
    page.fill("[data-filter-json]", json.dumps(tree, ensure_ascii=False))
    page.wait_for_selector("[data-path='all[18].not.not']")
    _count(page)
    live = page.locator("[data-live-count]")
    assert "ok" in live.get_attribute("class"), live.inner_text()
    builder = page.locator("[data-segment-builder]")
    assert "can only be edited as JSON" not in builder.inner_text()
    checked = page.locator("[data-path='all[1]'] .seg-checks input:checked")
    assert sorted(checked.evaluate_all("els => els.map(e => e.value)")) == ["mql", "sql"]
    assert page.locator("[data-path='all[2]'] input[type=date]").input_value() == "2026-01-01"
    assert page.locator("[data-path='all[9]'] input[data-part=value]").input_value() == "1000.5"
    assert page.locator("[data-path='all[16].any[1]'] select[data-part=count]").input_value() == "not"
    assert page.locator("[data-path='all[16].any[2]'] select[data-part=template]").input_value() == str(ids["template"])
    assert page.locator("[data-path='all[18]'].seg-not > [data-path='all[18].not'].seg-not").count() == 1
    _shot(page, "segment-builder-every-kind")
    # Redrawn from the builder's own model (NOT on the root, then off again): the same tree.
    page.click("[data-segment-builder] > div > .seg-group > .seg-group-head > button:text-is('Not')")
    page.click("[data-path=''] > .seg-not-head > button:text-is('Remove NOT')")
    assert json.loads(page.locator("[data-filter-json]").input_value()) == tree
