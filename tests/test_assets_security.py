"""Assets under attack: path traversal in names, content-type tricks and polyglots, oversized
uploads (stopped while streaming), expired, forged and foreign tokens, the re-send rate limit,
XSS in names and titles (pages and mail), CSRF on the admin forms, and the viewer role."""

from __future__ import annotations

import io
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import signing
from django.test import Client, override_settings
from django.urls import reverse

from kizuna.assets import delivery, links, public_views, services, storage
from kizuna.assets.models import Asset, Download
from kizuna.assets.uploads import AssetUploadHandler
from kizuna.messaging import outbox, transports
from kizuna.messaging.models import CapturedMail, Message
from tests.assethelp import BROWSER, asset, contact, html_part, login, multipart, path_of, pdf_bytes, png_bytes, sender

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client):
    return login(client, "admin")
START = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


def upload(client, file_name: str, data: bytes, content_type: str = "application/pdf", **fields):
    body, header = multipart({"name": "", "link_days": "7", **fields}, "file", file_name, data, content_type)
    return client.generic("POST", reverse("assets:create"), body, content_type=header)


@pytest.mark.parametrize("raw_name,shown", [
    ("../../etc/passwd", "passwd.pdf"),
    ("..\\\\x.pdf", "x.pdf"),
    ("/etc/passwd.pdf", "passwd.pdf"),
    ("C:\\\\Windows\\\\system32\\\\資料.pdf", "資料.pdf"),
    ("&#46;&#46;&#47;&#46;&#46;&#47;x.pdf", "x.pdf"),
    ("%2e%2e%2f%2e%2e%2fpasswd.pdf", "%2e%2e%2f%2e%2e%2fpasswd.pdf"),
    ("\u202efdp.exe", "fdp.exe.pdf"),
])
def test_path_traversal_names_never_reach_the_file_system(admin, raw_name, shown):
    response = upload(admin, raw_name, pdf_bytes())
    assert response.status_code == 302, response.content.decode()[-3000:]
    created = Asset.objects.get()
    assert created.file_name == shown
    stored = storage.path_of(created.storage_name)
    assert stored.parent.parent == storage.root() and stored.exists()
    stored_files = [p.relative_to(storage.root()).as_posix() for p in storage.root().rglob("*") if p.is_file()]
    assert stored_files and all(re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{32}", f) for f in stored_files), stored_files


def test_nul_bytes_and_absolute_names_through_the_service(db):
    for raw in ("a\x00b.pdf", "/etc/cron.d/x.pdf", "..\\..\\boot.ini", "\x00"):
        accepted = services.accept(io.BytesIO(pdf_bytes()), raw)
        assert "\x00" not in accepted.file_name and "/" not in accepted.file_name and "\\" not in accepted.file_name
        assert not accepted.file_name.startswith(".")
        storage.discard(accepted.incoming)
    with pytest.raises(ValueError):
        storage.path_of("../../etc/passwd")


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'


@pytest.mark.parametrize("name,data,expected", [
    ("whitepaper.pdf", b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "is an HTML page"),
    ("whitepaper.pdf", b"\n\n  <script>fetch('/api/v1/contacts')</script>", "is an HTML page"),
    ("logo.pdf", SVG, "is an SVG image"),
    ("polyglot.pdf", b"%PDF-1.4\n<html><script>alert(1)</script>\n" + pdf_bytes(), "polyglot"),
    ("polyglot.gif", b"GIF89a/*<svg onload=alert(1)>*/=1;" + os.urandom(64), "polyglot"),
    ("setup.pdf", b"MZ\x90\x00\x03" + os.urandom(200), "a Windows program"),
    ("photo.jpg", png_bytes(), "content is a PNG image"),
    ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(200), "Office 97–2003"),
    ("blob.pdf", b"\x13\x37\xbe\xef" * 8 + b"\x00\x01", "binary data of an unknown type"),
])
def test_content_decides_and_tricks_are_refused_with_what_was_found(admin, name, data, expected):
    response = upload(admin, name, data, content_type="application/pdf")
    page = response.content.decode()
    assert response.status_code == 200 and expected in page.replace("&#x27;", "'").replace("&quot;", '"')
    assert not Asset.objects.exists() and not list(storage.incoming_dir().iterdir())


def test_the_browsers_content_type_is_ignored(admin):
    assert upload(admin, "report.pdf", pdf_bytes(), content_type="text/html").status_code == 302
    created = Asset.objects.get()
    response = admin.get(reverse("assets:file", args=[created.pk]))
    assert response["Content-Type"] == "application/pdf" and response["X-Content-Type-Options"] == "nosniff"


@override_settings(ASSET_MAX_BYTES=64 * 1024)
def test_oversized_upload_is_stopped_while_streaming_and_says_why(admin):
    response = upload(admin, "huge.pdf", pdf_bytes(300 * 1024), name="大きな資料")
    page = response.content.decode()
    assert response.status_code == 200
    assert "The file is too large: the limit is 64.0 KB and this file is 300." in page
    assert 'value="大きな資料"' in page  # the other fields survive
    assert not Asset.objects.exists() and not list(storage.incoming_dir().iterdir())


def test_the_upload_handler_stops_storing_at_the_limit():
    handler = AssetUploadHandler(request=type("R", (), {})(), limit=100_000)
    handler.handle_raw_input(None, {}, 10_000_000, b"x")
    handler.new_file("file", "big.pdf", "application/pdf", None)
    chunk = b"x" * 65536
    handler.receive_data_chunk(chunk, 0)
    from django.core.files.uploadhandler import SkipFile

    with pytest.raises(SkipFile):
        handler.receive_data_chunk(chunk, 65536)
    refused = handler.request.too_large_uploads[0]
    assert (refused.limit, refused.size, refused.file_name) == (100_000, 10_000_000, "big.pdf")
    assert not list(storage.incoming_dir().iterdir())  # the partial file is gone, nothing in memory


def _expired_link(whitepaper, person) -> str:
    with time_machine.travel(START, tick=False):
        return path_of(links.download_url(whitepaper, person))


def test_expired_link_offers_a_fresh_one_once_an_hour(client):
    sender()
    person = contact()
    whitepaper = asset()
    url = _expired_link(whitepaper, person)
    csrf_client = Client(enforce_csrf_checks=True)
    with time_machine.travel(START + timedelta(days=8), tick=False):
        page = csrf_client.get(url, HTTP_USER_AGENT=BROWSER)
        assert page.status_code == 410 and b"data-resend" in page.content and "y•••@example.co.jp" in page.text
        assert not Download.objects.exists()
        token = page.cookies["csrftoken"].value
        assert csrf_client.post(url, {}).status_code == 403  # no CSRF token
        sent = csrf_client.post(url, {"csrfmiddlewaretoken": token})
        assert sent.status_code == 200 and 'data-link-state="resent"' in sent.text
        again = csrf_client.post(url, {"csrfmiddlewaretoken": token})
        assert again.status_code == 429 and 'data-link-state="already_sent"' in again.text
        assert Message.objects.filter(idempotency_key__startswith="asset:resend:").count() == 1
        outbox.drain(transport=transports.CaptureTransport())
    fresh = [u for u in html_part(bytes(CapturedMail.objects.get().raw)).split('"') if "/e/c/" in u]
    assert fresh, "the new mail carries a link"


def test_resend_requests_are_limited_per_ip(client):
    sender()
    whitepaper = asset()
    people = [contact(f"p{i}@example.co.jp") for i in range(public_views.RESENDS_PER_IP_HOUR + 1)]
    with time_machine.travel(START + timedelta(days=8), tick=False):
        statuses = [client.post(_expired_link(whitepaper, p), REMOTE_ADDR="203.0.113.9").status_code for p in people]
    assert statuses[:-1] == [200] * public_views.RESENDS_PER_IP_HOUR and statuses[-1] == 429


def test_forged_tampered_and_foreign_tokens_are_refused(client):
    sender()
    person = contact()
    whitepaper = asset()
    good = path_of(links.download_url(whitepaper, person))
    token = good.rsplit("/", 1)[1]
    payload, signature = token.rsplit(":", 1)
    other_asset = signing.Signer(salt=links.SALT).sign_object([1, whitepaper.pk + 1, person.pk, 0, 4102444800])
    forged = {
        "tampered payload": f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}:{signature}",
        "tampered signature": f"{payload}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        "other salt": signing.Signer(salt="kizuna.messaging").sign_object([1, whitepaper.pk, person.pk, 0, 4102444800]),
        "garbage": "not-a-token",
        "unsigned json": payload,
    }
    for label, bad in forged.items():
        response = client.get(reverse("assets:download", args=[bad]), HTTP_USER_AGENT=BROWSER)
        assert response.status_code == 400, label
        assert 'data-link-state="invalid"' in response.text and response["Cache-Control"] == "no-store, private"
    assert client.get(reverse("assets:download", args=[other_asset])).status_code == 404
    assert not Download.objects.exists()
    assert client.get("/d/").status_code == 404 and client.get("/d/p/").status_code == 404  # no listing
    services.delete(whitepaper)
    assert client.get(good, HTTP_USER_AGENT=BROWSER).status_code == 404


def test_head_answers_headers_and_records_nothing(client):
    person = contact()
    whitepaper = asset()
    response = client.head(path_of(links.download_url(whitepaper, person)), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 200 and response.content == b""
    assert response["Content-Type"] == "application/pdf" and response["Content-Disposition"].startswith("attachment;")
    assert not Download.objects.exists()


XSS = '<script>alert("x")</script>'


def test_names_titles_and_agents_are_escaped_in_pages_and_mail(client):
    sender()
    person = contact(family_name=XSS)
    bad = asset(name=f'<img src=x onerror=alert(1)>{XSS}.pdf', title=XSS, description=XSS)
    with time_machine.travel(START, tick=False):
        client.get(path_of(links.download_url(bad, person)), HTTP_USER_AGENT=f"Mozilla/5.0 {XSS}")
        message = delivery.deliver(bad, person, key="xss")
        outbox.drain(transport=transports.CaptureTransport())
    login(client, "viewer")
    for url in (reverse("assets:list"), reverse("assets:detail", args=[bad.pk])):
        page = client.get(url).text
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert" in page
    mail = html_part(bytes(CapturedMail.objects.get(message=message).raw))
    assert "<script>alert" not in mail and "&lt;script&gt;alert" in mail
    expired = Client()
    with time_machine.travel(START + timedelta(days=30), tick=False):
        page = expired.get(path_of(links.download_url(bad, person, expires_at=START))).text
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_admin_forms_need_a_csrf_token_and_the_right_role(db):
    whitepaper = asset()
    marketer = Client(enforce_csrf_checks=True)
    login(marketer, "marketer")
    assert upload(marketer, "a.pdf", pdf_bytes()).status_code == 403  # no token
    assert marketer.post(reverse("assets:delete", args=[whitepaper.pk])).status_code == 403
    body, header = multipart({"name": "x", "link_days": "7"}, "file", "b.pdf", pdf_bytes())
    assert marketer.generic("POST", reverse("assets:edit", args=[whitepaper.pk]), body,
                            content_type=header).status_code == 403
    assert Asset.objects.count() == 1 and not list(storage.incoming_dir().iterdir())
    viewer = Client()
    login(viewer, "viewer")
    assert viewer.get(reverse("assets:list")).status_code == 200
    assert viewer.get(reverse("assets:create")).status_code == 403
    assert upload(viewer, "a.pdf", pdf_bytes()).status_code == 403
    assert viewer.post(reverse("assets:delete", args=[whitepaper.pk])).status_code == 403
    assert Asset.objects.count() == 1
    anonymous = Client()
    assert anonymous.get(reverse("assets:list")).status_code == 302
    assert anonymous.get(reverse("assets:file", args=[whitepaper.pk])).status_code == 302
