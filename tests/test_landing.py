"""Landing pages: the blocks and their check, the editor, the public page (variants, greeting,
tracking, CSP, escaping) and the views and conversions counted from real processed events."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from kizuna.contacts.models import Contact
from kizuna.events import ingest, processing
from kizuna.events.models import Visitor
from kizuna.landing import services
from kizuna.landing.blocks import BlocksError, check, check_variants, safe_url
from kizuna.landing.models import LandingPage, LandingVisit

pytestmark = pytest.mark.django_db
XSS = '<script>alert("x")</script>'
NOW = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)


def make_page(slug="guide", *, variants=None, published=True, **fields) -> LandingPage:
    page = LandingPage(name=fields.pop("name", slug), slug=slug, title=fields.pop("title", "製造業のMA入門"), **fields)
    services.save(page, variants or [{"key": "A", "weight": 100, "blocks": [
        {"type": "heading", "text": "製造業のMA入門", "level": 1},
        {"type": "greeting", "known": "{name}様、いつもありがとうございます。", "anonymous": "ようこそ。"},
        {"type": "text", "text": "一段落目。\n\n二段落目。"},
        {"type": "cta", "text": "資料を見る", "url": "/p/other"}]}])
    if published:
        services.set_published(page, True)
    return page


def send(messages: list[dict]) -> None:
    result = ingest.ingest(messages, ingest.RequestInfo(ip="126.33.10.20", user_agent="Mozilla/5.0 Chrome/131"))
    assert not result.rejected, result.rejected
    processing.drain()


def view(aid: str, slug: str, variant: str, at: datetime, n: int) -> dict:
    return {"type": "page", "anonymousId": aid, "messageId": f"v-{aid}-{n}", "timestamp": at.isoformat(),
            "properties": {"url": f"http://127.0.0.1:8000/p/{slug}", "path": f"/p/{slug}",
                           "landing_page": slug, "variant": variant}}


# --- blocks -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("blocks", "path"), [
    ([{"type": "video"}], "blocks[0].type"),
    ([{"type": "heading", "text": ""}], "blocks[0].text"),
    ([{"type": "heading", "text": "x", "level": 7}], "blocks[0].level"),
    ([{"type": "cta", "text": "Go", "url": "javascript:alert(1)"}], "blocks[0].url"),
    ([{"type": "cta", "text": "Go", "url": "//evil.example/x"}], "blocks[0].url"),
    ([{"type": "image", "src": "data:text/html,<b>x</b>"}], "blocks[0].src"),
    ([{"type": "greeting", "known": "Hello"}], "blocks[0].known"),
    ([{"type": "text", "text": "x", "onclick": "y"}], "blocks[0].onclick"),
    ([{"type": "form", "form": 99}], "blocks[0].form"),
])
def test_a_bad_block_is_refused_with_its_path(blocks, path):
    with pytest.raises(BlocksError) as caught:
        check(blocks, forms=set())
    assert path in [p for p, _m in caught.value.errors]


def test_every_fault_of_every_variant_is_reported_and_weights_must_add_up():
    with pytest.raises(BlocksError) as caught:
        check_variants([{"key": "A", "weight": 60, "blocks": [{"type": "cta", "text": "", "url": "ftp://x"}]},
                        {"key": "A", "weight": 30, "blocks": []}], forms=set())
    paths = [p for p, _m in caught.value.errors]
    assert paths == ["variants[0].blocks[0].text", "variants[0].blocks[0].url", "variants[1].key"]
    with pytest.raises(BlocksError) as caught:
        check_variants([{"key": "A", "weight": 60, "blocks": []}, {"key": "B", "weight": 30, "blocks": []}],
                       forms=set())
    assert caught.value.errors == [("variants", "the weights must add up to 100, not 90")]
    with pytest.raises(BlocksError) as caught:
        check([{"type": "form", "form": 1}], forms=None)
    assert caught.value.errors == [("blocks[0].form", "forms are not available on this installation")]


def test_safe_urls():
    assert safe_url("https://example.co.jp/a?b=1") == "https://example.co.jp/a?b=1"
    assert safe_url("/p/guide") == "/p/guide"
    for bad in ("javascript:alert(1)", "JaVaScRiPt:x", "//evil.example", "/\\evil", "data:x", "https://a/\nb", ""):
        assert safe_url(bad) is None, bad


# --- the public page ----------------------------------------------------------------------------

def test_a_draft_answers_404_to_visitors_and_staff_may_preview_it(client, admin_user):
    make_page(published=False)
    assert client.get("/p/guide").status_code == 404
    client.force_login(admin_user)
    page = client.get("/p/guide")
    assert page.status_code == 200
    body = page.content.decode()
    assert "kz.js" not in body and "noindex" in body  # a preview sends no page view
    assert "_kz_aid" not in page.cookies


def test_the_published_page_tracks_itself_and_keeps_the_browser_id(client):
    make_page()
    first = client.get("/p/guide")
    assert first.status_code == 200
    body = first.content.decode()
    aid = first.cookies["_kz_aid"].value
    assert re.fullmatch(r"[0-9a-f-]{36}", aid)
    track = json.loads(re.search(r'<script id="kz-landing" type="application/json">(.*?)</script>', body).group(1))
    assert track == {"landing_page": "guide", "variant": "A"}
    key = services.write_key()
    assert f"/kz.js?k={key.key}" in body and key.allowed_domains == "127.0.0.1"
    csp = first.headers["Content-Security-Policy"]
    assert "img-src 'self' data: https:" in csp and "'nonce-" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert body.count(f'nonce="{nonce}"') == 2  # the accent colour and the tracker's queue
    assert "<p>一段落目。</p><p>二段落目。</p>" in body
    again = client.get("/p/guide")  # the cookie is sent back: no new id
    assert "_kz_aid" not in again.cookies


def test_variants_are_sticky_per_browser_and_split_by_weight():
    page = make_page(variants=[{"key": "A", "weight": 70, "blocks": [{"type": "heading", "text": "A"}]},
                               {"key": "B", "weight": 30, "blocks": [{"type": "heading", "text": "B"}]}])
    variants = list(page.variants.all())
    picks = [services.choose_variant(page, variants, f"browser-{i:04d}").key for i in range(2000)]
    assert 0.66 < picks.count("A") / 2000 < 0.74
    assert all(services.choose_variant(page, variants, f"browser-{i:04d}").key == picks[i] for i in range(50))


def test_a_known_visitor_is_greeted_by_name_escaped(client):
    make_page()
    contact = Contact.objects.create(email="sato@example.co.jp", family_name=XSS)
    Visitor.objects.create(anonymous_id="aaaaaaaa-1111", contact=contact, first_seen=NOW, last_seen=NOW)
    client.cookies["_kz_aid"] = "aaaaaaaa-1111"
    body = client.get("/p/guide").content.decode()
    assert "<strong>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</strong>様" in body
    assert XSS not in body
    client.cookies["_kz_aid"] = "bbbbbbbb-2222"
    assert "ようこそ。" in client.get("/p/guide").content.decode()


def test_visitor_text_is_escaped_on_the_page_and_in_the_admin(client, admin_user):
    make_page("xss", name=XSS, title=XSS, variants=[{"key": "A", "weight": 100, "blocks": [
        {"type": "heading", "text": XSS}, {"type": "text", "text": XSS}, {"type": "cta", "text": XSS, "url": "/x"}]}])
    assert XSS not in client.get("/p/xss").content.decode()
    client.force_login(admin_user)
    for url in ("/landing-pages/", f"/landing-pages/{LandingPage.objects.get().pk}/"):
        assert XSS not in client.get(url).content.decode()


# --- the editor ---------------------------------------------------------------------------------

def _post(client, **overrides):
    data = {"name": "Whitepaper", "slug": "whitepaper", "title": "ホワイトペーパー", "description": "",
            "language": "ja", "accent_color": "#0a7d5a",
            "variants": json.dumps([{"key": "A", "weight": 100, "blocks": [{"type": "heading", "text": "見出し"}]}])}
    data.update(overrides)
    return client.post("/landing-pages/new/", data)


def test_the_editor_saves_and_shows_faults_at_their_path_keeping_what_was_typed(client, users):
    client.force_login(users["marketer"])
    cta = {"type": "cta", "text": "無料相談", "url": "javascript:x"}
    bad = json.dumps([{"key": "A", "weight": 100, "blocks": [cta]}], ensure_ascii=False)
    response = _post(client, variants=bad)
    assert response.status_code == 400
    body = response.content.decode()
    assert "variants[0].blocks[0].url" in body and "無料相談" in body and LandingPage.objects.count() == 0
    response = _post(client, variants="[{")
    assert response.status_code == 400 and "not valid JSON (line 1" in response.content.decode()
    assert _post(client, accent_color="red").status_code == 400
    response = _post(client)
    page = LandingPage.objects.get()
    assert response.status_code == 302 and response.url == f"/landing-pages/{page.pk}/"
    assert page.status == "draft" and page.variants.get().blocks == [{"type": "heading", "text": "見出し", "level": 2}]
    client.post(f"/landing-pages/{page.pk}/publish/", {"publish": "1"})
    page.refresh_from_db()
    assert page.status == "published" and page.published_at is not None


def test_viewers_cannot_change_pages_and_admin_posts_need_csrf(client, users):
    client.force_login(users["viewer"])
    assert client.get("/landing-pages/").status_code == 200
    assert _post(client).status_code == 403
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(users["admin"])
    assert _post(strict).status_code == 403
    assert LandingPage.objects.count() == 0


# --- counting -----------------------------------------------------------------------------------

def test_views_and_conversions_come_from_processed_events(client, admin_user):
    page = make_page(variants=[{"key": "A", "weight": 50, "blocks": [{"type": "heading", "text": "A"}]},
                               {"key": "B", "weight": 50, "blocks": [{"type": "heading", "text": "B"}]}])
    with time_machine.travel(NOW, tick=False):
        send([view("aid-one-0001", "guide", "A", NOW - timedelta(minutes=9), 1),
              view("aid-one-0001", "guide", "A", NOW - timedelta(minutes=8), 2),
              view("aid-two-0002", "guide", "B", NOW - timedelta(minutes=7), 1),
              view("aid-three-03", "guide", "B", NOW - timedelta(minutes=6), 1),
              # a bot's view counts for nothing
              {**view("aid-bot-0004", "guide", "A", NOW - timedelta(minutes=6), 1),
               "context": {"userAgent": "Googlebot/2.1"}}])
        send([{"type": "track", "event": "Form Submitted", "anonymousId": "aid-two-0002", "messageId": "f-1",
               "timestamp": (NOW - timedelta(minutes=5)).isoformat(), "properties": {"form": 1}},
              # converting twice counts once; a submission before any view converts nothing
              {"type": "track", "event": "Form Submitted", "anonymousId": "aid-two-0002", "messageId": "f-2",
               "timestamp": (NOW - timedelta(minutes=4)).isoformat(), "properties": {"form": 1}},
              {"type": "track", "event": "Form Submitted", "anonymousId": "aid-three-03", "messageId": "f-3",
               "timestamp": (NOW - timedelta(minutes=30)).isoformat(), "properties": {"form": 1}}])
    visits = {v.anonymous_id: v for v in LandingVisit.objects.all()}
    assert set(visits) == {"aid-one-0001", "aid-two-0002", "aid-three-03"}
    assert visits["aid-one-0001"].views == 2 and visits["aid-one-0001"].variant == "A"
    assert visits["aid-two-0002"].converted_at == NOW - timedelta(minutes=5)
    assert visits["aid-three-03"].converted_at is None
    a, b = services.stats([page.pk])[page.pk]
    assert (a.key, a.visitors, a.views, a.conversions, a.rate) == ("A", 1, 2, 0, 0.0)
    assert (b.key, b.visitors, b.views, b.conversions, b.rate) == ("B", 2, 2, 1, 50.0)
    client.force_login(admin_user)
    body = client.get(f"/landing-pages/{page.pk}/").content.decode()
    assert 'data-variant="B"' in body and "50.0%" in body
    listing = client.get("/landing-pages/").content.decode()
    assert "33.3%" in listing  # 1 conversion of 3 visitors


def test_the_comparison_is_a_two_proportion_z_test():
    control, other = services.VariantStats("A", 50, 100, 100, 10), services.VariantStats("B", 50, 100, 100, 20)
    result = services.compare(control, other)
    se = math.sqrt(0.15 * 0.85 * (1 / 100 + 1 / 100))
    assert result["lift"] == 10.0
    assert result["p_value"] == round(math.erfc(0.1 / se / math.sqrt(2)), 4) == 0.0477
    assert result["significant"] is True
    assert services.compare(control, services.VariantStats("C", 0, 0, 0, 0)) is None
