"""Assets in the browser: upload a PDF through the page (and see a disguised HTML file refused),
deliver it to a contact through the running worker, follow the link in the mail as the recipient
and get the same bytes, then an expired link's page. Screenshots with KIZUNA_SCREENSHOTS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from .conftest import login
from .conftest import shot as _shot

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("KIZUNA_SCREENSHOTS", "")
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"




def _python(server, code: str) -> subprocess.Popen:
    """Runs Django code against the server's database, in the background (each start costs seconds)."""
    return subprocess.Popen([sys.executable, "-c", "import django\ndjango.setup()\n" + code],  # noqa: S603
                            env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out.strip().rpartition("\n")[2]


def test_upload_deliver_download_and_expired_link(page, kizuna_server, tmp_path):
    run = os.urandom(3).hex()
    pdf = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + os.urandom(20_000) + b"\n%%EOF\n"
    setup = _python(kizuna_server, (
        "from kizuna.messaging.models import Sender\n"
        "from kizuna.contacts.models import Contact\n"
        "Sender.objects.get_or_create(name='Assets', defaults=dict(from_name='キズナ', is_default=True,"
        " from_email='news@kizuna.example', organisation='株式会社キズナ',"
        " postal_address='東京都千代田区丸の内1-1-1'))\n"
        f"print(Contact.objects.create(email='dl-{run}@example.co.jp', family_name='<b>高橋</b>').pk)\n"))
    login(page)  # while the sender and the contact are being made

    page.goto("/assets/new")
    page.set_input_files("#id_file", files=[{"name": "偽装.pdf", "mimeType": "application/pdf",
                                              "buffer": b"<html><script>alert(1)</script></html>"}])
    page.fill("#id_name", f"偽装 {run}")
    page.click("[data-asset-form] button[type=submit]")
    page.locator("#id_file_error", has_text="is an HTML page").wait_for()
    assert page.input_value("#id_name") == f"偽装 {run}"  # the rest of the form is kept
    _shot(page, "assets-refused")

    page.set_input_files("#id_file", files=[{"name": "導入事例集 2026.pdf", "mimeType": "application/pdf",
                                              "buffer": pdf}])
    page.fill("#id_name", f"導入事例集 {run}")
    page.fill("#id_slug", f"cases-{run}")
    page.check("#id_public")
    page.click("[data-asset-form] button[type=submit]")
    page.wait_for_url(re.compile(r"/assets/\d+/$"))
    assert f"asset_url('cases-{run}')" in page.locator("#merge-tag").text_content()
    assert "/d/p/" in page.locator("#public-link").text_content()
    _shot(page, "assets-detail")
    asset_id = page.url.rstrip("/").rsplit("/", 1)[1]
    contact_id = _result(setup)

    # One process for the server-side steps: deliver as a form would, send
    # (the worker may get there first), move the sending a minute back — the recipient opens it
    # later; a click seconds after sending is a gateway's — and make a link that expired yesterday.
    expired = _result(_python(kizuna_server, (
        "from datetime import timedelta\nfrom django.utils import timezone\n"
        "from kizuna.assets import links\nfrom kizuna.assets.delivery import deliver\n"
        "from kizuna.assets.models import Asset\nfrom kizuna.contacts.models import Contact\n"
        "from kizuna.messaging import outbox\nfrom kizuna.messaging.models import Message\n"
        f"asset = Asset.objects.get(pk={asset_id})\n"
        f"m = deliver(asset, Contact.objects.get(pk={contact_id}), key='e2e-{run}')\n"
        "import time\noutbox.drain()\n"
        "while not Message.objects.get(pk=m.pk).sent_at:\n    time.sleep(0.2)\n"
        "m.refresh_from_db()\n"
        "Message.objects.filter(pk=m.pk).update(sent_at=m.sent_at - timedelta(minutes=1))\n"
        f"print(links.download_url(asset, {contact_id}, expires_at=timezone.now() - timedelta(days=1)))\n")))
    rows = kizuna_server.query(
        "SELECT c.raw FROM messaging_capturedmail c JOIN messaging_message m ON m.id = c.message_id "
        "WHERE m.idempotency_key = ?", (f"asset:e2e-{run}",))
    assert rows, "the delivery mail was not sent"
    mail = message_from_bytes(bytes(rows[0][0]), policy=policy.default)
    assert str(mail["Subject"]) == f"「導入事例集 {run}」ダウンロードのご案内"
    html = mail.get_body(("html",)).get_content()
    assert "&lt;b&gt;高橋&lt;/b&gt; 様" in html
    link = next(u.replace("&amp;", "&") for u in re.findall(r'href="([^"]+)"', html) if "/e/c/" in u)

    recipient = page.context.browser.new_context(base_url=kizuna_server, locale="ja-JP", user_agent=CHROME)
    inbox = recipient.new_page()
    with inbox.expect_download() as info:
        inbox.evaluate("url => { window.location.href = url; }", link)
    download = info.value
    assert download.suggested_filename == "導入事例集 2026.pdf"
    assert Path(download.path()).read_bytes() == pdf

    inbox.goto(expired)
    inbox.locator("[data-resend]").wait_for()
    _shot(inbox, "assets-expired-ja")
    inbox.click("[data-resend]")
    inbox.locator("[data-link-state=resent]").wait_for()
    recipient.close()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the worker attaches the download event to the contact
        if kizuna_server.query("SELECT count(*) FROM events_event WHERE name = 'Asset Downloaded' AND contact_id = ?",
                               (int(contact_id),))[0][0]:
            break
        time.sleep(0.3)
    page.goto(f"/contacts/{contact_id}/")
    page.locator("[data-activity]", has_text="Asset Downloaded").wait_for()
    page.goto("/assets/")
    assert page.locator(f"[data-asset='{asset_id}'] [data-total]").text_content().strip() == "1"
    _shot(page, "assets-list")
