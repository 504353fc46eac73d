"""Assets: upload and download round trip, the delivery mail through a real SMTP server and its
link, the download as an event on the contact's timeline and in a score, the merge tag in any
template (click-tracked), replacing a file under the same links, public links, the figures."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import time_machine
from django.conf import settings
from django.urls import reverse

from kizuna.assets import delivery, links, services, storage
from kizuna.assets.models import Asset, Download
from kizuna.events import processing
from kizuna.events.models import Event
from kizuna.messaging import outbox, rendering, transports
from kizuna.messaging.models import Activity, EmailTemplate
from kizuna.messaging.templates_service import save_version
from kizuna.scoring import engine
from kizuna.scoring.models import ContactScore, ScoringModel
from tests.assethelp import (
    BROWSER,
    asset,
    contact,
    html_part,
    links_in,
    login,
    office_bytes,
    path_of,
    pdf_bytes,
    sender,
)
from tests.mailtest import SmtpServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client):
    return login(client, "admin")
START = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


def smtp(server) -> transports.SmtpTransport:
    return transports.SmtpTransport(transports.SmtpConfig.from_url(server.url))


def test_upload_and_download_round_trip_with_exact_headers(admin):
    data = pdf_bytes(5000)
    response = admin.post(reverse("assets:create"), {
        "name": "", "description": "導入事例集", "link_days": "7",
        "file": _named(data, "製品カタログ 2026.pdf")})
    created = Asset.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("assets:detail", args=[created.pk])
    assert (created.name, created.file_name, created.file_type, created.size) == (
        "製品カタログ 2026", "製品カタログ 2026.pdf", "pdf", len(data))
    import hashlib

    assert created.sha256 == hashlib.sha256(data).hexdigest()
    stored = storage.path_of(created.storage_name)
    assert stored.read_bytes() == data and stored.is_relative_to(settings.DATA_DIR / "assets")
    assert "カタログ" not in str(stored) and not list(storage.incoming_dir().iterdir())

    response = admin.get(reverse("assets:file", args=[created.pk]))
    assert b"".join(response.streaming_content) == data
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == (
        "attachment; filename=\"2026.pdf\"; filename*=UTF-8''" + quote("製品カタログ 2026.pdf", safe=""))
    assert response["Content-Length"] == str(len(data))
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; sandbox; frame-ancestors 'none'; form-action 'none'; base-uri 'none'")
    assert response["Cache-Control"] == "no-store, private"
    head = admin.head(reverse("assets:file", args=[created.pk]))
    assert head.status_code == 200 and head["Content-Length"] == str(len(data)) and head.content == b""
    assert not Download.objects.exists()  # staff looking at the file is not a download


def _named(data: bytes, name: str) -> io.BytesIO:
    f = io.BytesIO(data)
    f.name = name
    return f


def test_office_and_text_files_are_typed_by_content(db):
    sender()
    docx = asset(office_bytes("word/document.xml"), "提案書", title="提案書")
    assert (docx.file_type, docx.file_name) == ("docx", "提案書.docx")
    assert asset(office_bytes("xl/workbook.xml"), "price.xlsx", title="価格表").file_type == "xlsx"
    as_zip = asset(office_bytes("ppt/presentation.xml"), "deck.zip", title="deck")
    assert (as_zip.file_type, as_zip.file_name) == ("zip", "deck.zip")
    sjis = asset("会社名,担当者\n丸山精機,山田\n".encode("cp932"), "名簿.csv", title="名簿")
    assert (sjis.file_type, sjis.charset) == ("csv", "shift_jis")
    from kizuna.assets import downloads

    assert downloads.file_response(sjis)["Content-Type"] == "text/csv; charset=shift_jis"


def test_deliver_sends_one_mail_per_key_and_its_link_downloads_the_file(client):
    sender()
    person = contact()
    data = pdf_bytes()
    whitepaper = asset(data)
    with time_machine.travel(START, tick=False):
        first = delivery.deliver(whitepaper, person, key="form:7:submission:1")
        again = delivery.deliver(whitepaper, person, key="form:7:submission:1")
        assert first.pk == again.pk and first.idempotency_key == "asset:form:7:submission:1"
        assert first.kind == "transactional"
        with pytest.raises(delivery.DeliveryError, match="already used"):
            delivery.deliver(asset(title="other"), person, key="form:7:submission:1")
        with SmtpServer() as server:
            assert outbox.drain(transport=smtp(server)) == 1
            delivery.deliver(whitepaper, person, key="form:7:submission:1")
            assert outbox.drain(transport=smtp(server)) == 0
            assert len(server.handler.messages) == 1
            mail = server.handler.parsed()
            raw = server.handler.messages[0][2]
    assert str(mail["Subject"]) == "「製品カタログ 2026」ダウンロードのご案内"
    html = html_part(raw)
    assert "山田 様" in html and "丸山精機株式会社" in html and "2026年11月09日" in html  # expires in 7 days
    tracked = [u for u in links_in(html) if "/e/c/" in u]
    assert len(tracked) == 1  # the download link, click-tracked like any link built from a variable
    with time_machine.travel(START + timedelta(minutes=30), tick=False):
        redirect = client.get(path_of(tracked[0]), HTTP_USER_AGENT=BROWSER)
        assert redirect.status_code == 302 and "/d/" in redirect["Location"]
        response = client.get(path_of(redirect["Location"]), HTTP_USER_AGENT=BROWSER, REMOTE_ADDR="126.33.10.20")
    assert response.status_code == 200 and b"".join(response.streaming_content) == data
    assert (response["Content-Type"], response["Content-Length"], response["X-Content-Type-Options"]) == (
        "application/pdf", str(len(data)), "nosniff")
    assert response["Content-Disposition"] == (
        "attachment; filename=\"2026.pdf\"; filename*=UTF-8''" + quote("製品カタログ 2026.pdf", safe=""))
    assert response["Content-Security-Policy"].startswith("default-src 'none'; sandbox")
    row = Download.objects.get()
    assert (row.contact, row.message_id, row.via, row.machine, row.ip) == (person, first.pk, "link", False,
                                                                          "126.33.10.20")
    assert Activity.objects.filter(message=first, kind="click", machine=False).exists()


def test_english_contact_gets_the_built_in_english_mail(db):
    sender()
    message = delivery.deliver(asset(), contact("smith@example.com", family_name="Smith", language="en"), key="en")
    assert message.version.template.name == delivery.BUILTIN["en"]["name"]
    assert message.version.subject == "Your download: {{ asset.name }}"


def test_the_asset_chooses_its_delivery_template(db):
    sender()
    template = EmailTemplate.objects.create(name="WP delivery", kind="transactional")
    save_version(template, subject="{{ asset.name }} をお送りします",
                 html='<p><a href="{{ download_url }}">{{ asset.file_name }}</a> ({{ asset.size }})</p>')
    chosen = asset(delivery_template=template)
    message = delivery.deliver(chosen, contact(), key="k")
    with SmtpServer() as server:
        outbox.drain(transport=smtp(server))
        mail = server.handler.parsed()
    assert str(mail["Subject"]) == "製品カタログ 2026 をお送りします"
    assert message.version.template == template


def test_download_is_an_event_on_the_timeline_and_a_scoring_rule_scores_it(client):
    sender()
    person = contact()
    whitepaper = asset(title="<b>Whitepaper</b>")
    model = ScoringModel.objects.create(name="Interest")
    login(client, "marketer")
    response = client.post(reverse("scoring:model", args=[model.pk]), {
        "action": "engagement", "name": "Downloaded the whitepaper", "event": "Asset Downloaded", "points": "20",
        "conditions": f'[{{"field": "properties.slug", "op": "equals", "value": "{whitepaper.slug}"}}]'})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert 'value="Asset Downloaded"' in client.get(reverse("scoring:model", args=[model.pk])).content.decode()
    client.logout()
    with time_machine.travel(START, tick=False):
        url = links.download_url(whitepaper, person)
        assert client.get(path_of(url), HTTP_USER_AGENT=BROWSER).status_code == 200
        processing.drain()
        event = Event.objects.get(name="Asset Downloaded")
        assert event.contact == person
        assert event.properties["slug"] == whitepaper.slug and event.properties["fileType"] == "pdf"
        score = ContactScore.objects.get(model=model, contact=person)
        assert engine.current_of(model, score) == pytest.approx(20)
    login(client, "viewer")
    page = client.get(reverse("contacts:detail", args=[person.pk])).content.decode()
    assert "Asset Downloaded" in page and "&lt;b&gt;Whitepaper&lt;/b&gt;" in page


def test_merge_tag_in_any_template_is_a_personal_tracked_link(client):
    world_sender = sender()
    person = contact()
    data = pdf_bytes()
    brochure = asset(data, slug="brochure-2026")
    template = EmailTemplate.objects.create(name="Newsletter", kind="transactional", sender=world_sender)
    with pytest.raises(rendering.TemplateProblem, match="no asset is named 'nope'"):
        save_version(template, subject="x", html="<a href=\"{{ asset_url('nope') }}\">x</a>")
    version, warnings = save_version(template, subject="ご案内",
                                     html="<p><a href=\"{{ asset_url('brochure-2026') }}\">カタログ</a></p>")
    assert warnings == []
    with time_machine.travel(START, tick=False):
        message, _ = outbox.enqueue(person, version, key="newsletter:1")
        with SmtpServer() as server:
            outbox.drain(transport=smtp(server))
            raw = server.handler.messages[0][2]
    tracked = links_in(html_part(raw))[0]
    assert "/e/c/" in tracked and quote("/d/", safe="") in tracked
    with time_machine.travel(START + timedelta(hours=2), tick=False):
        target = client.get(path_of(tracked), HTTP_USER_AGENT=BROWSER)["Location"]
        assert b"".join(client.get(path_of(target), HTTP_USER_AGENT=BROWSER).streaming_content) == data
    row = Download.objects.get()
    assert (row.asset, row.contact, row.message_id) == (brochure, person, message.pk)
    message.refresh_from_db()
    assert message.clicked_at is not None
    # a delivery mail whose asset was deleted fails with its reason instead of sending a dead link
    services.delete(brochure)
    orphan = delivery.deliver(asset(), person, key="gone")
    Asset.objects.filter(pk=orphan.extra["asset_delivery"]["asset"]).delete()
    outbox.drain(transport=transports.CaptureTransport())
    orphan.refresh_from_db()
    assert orphan.status == "failed" and "was deleted" in orphan.error


def test_replacing_the_file_keeps_every_link(client, admin, django_capture_on_commit_callbacks):
    sender()
    person = contact()
    whitepaper = asset()
    old_file = storage.path_of(whitepaper.storage_name)
    url = links.download_url(whitepaper, person)
    public_before = whitepaper.public_key
    new = pdf_bytes(4000)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("assets:edit", args=[whitepaper.pk]), {
            "name": whitepaper.name, "link_days": "7", "public": "on", "file": _named(new, "catalog-v2.pdf")})
    assert response.status_code == 302
    whitepaper.refresh_from_db()
    assert (whitepaper.file_name, whitepaper.size, whitepaper.public_key) == ("catalog-v2.pdf", len(new), public_before)
    assert not old_file.exists()
    admin.logout()
    assert b"".join(client.get(path_of(url), HTTP_USER_AGENT=BROWSER).streaming_content) == new
    public = client.get(path_of(links.public_url(whitepaper)), HTTP_USER_AGENT=BROWSER)
    assert b"".join(public.streaming_content) == new


def test_public_link_records_the_trackers_anonymous_id(client):
    brochure = asset(public=True)
    client.cookies["_kz_aid"] = "9f1c2d3e-aaaa-4bbb-8ccc-1234567890ab"
    assert client.get(path_of(links.public_url(brochure)), HTTP_USER_AGENT=BROWSER).status_code == 200
    row = Download.objects.get()
    assert (row.contact, row.anonymous_id, row.via) == (None, "9f1c2d3e-aaaa-4bbb-8ccc-1234567890ab", "public")
    processing.drain()
    assert Event.objects.get(name="Asset Downloaded").anonymous_id == row.anonymous_id
    gated = asset(title="gated")
    assert client.get(path_of(links.public_url(gated))).status_code == 404


def test_list_and_detail_show_downloads_people_and_machines_apart(client):
    sender()
    a, b = contact(), contact("sato@example.co.jp", family_name="佐藤")
    whitepaper = asset()
    with time_machine.travel(START, tick=False):
        for person, agent in ((a, BROWSER), (a, BROWSER), (b, BROWSER), (b, "Mozilla/5.0 (compatible; Barracuda)")):
            client.get(path_of(links.download_url(whitepaper, person)), HTTP_USER_AGENT=agent)
    with time_machine.travel(START + timedelta(days=40), tick=False):
        client.get(path_of(links.download_url(whitepaper, a)), HTTP_USER_AGENT=BROWSER)
        figures = services.stats([whitepaper.pk])[whitepaper.pk]
        assert (figures["total"], figures["contacts"], figures["recent"], figures["machine"]) == (4, 2, 1, 1)
        login(client, "viewer")
        listing = client.get(reverse("assets:list")).content.decode()
        assert 'data-total>4<' in listing and 'data-contacts>2<' in listing and 'data-recent>1<' in listing
        detail = client.get(reverse("assets:detail", args=[whitepaper.pk])).content.decode()
    assert "asset_url(&#x27;" + whitepaper.slug in detail and "machine" in detail
    assert detail.count("data-download=") == 5
