"""Email in the browser: a sender and a template made through the pages, the live preview as a
chosen contact at desktop and mobile width, a bulk send with its progress bar, the report, and the
one-click-safe preference page a recipient sees."""

from __future__ import annotations

import os
import re

import pytest

from .conftest import login
from .conftest import shot as _shot

pytestmark = pytest.mark.browser




def test_sender_template_preview_bulk_send_and_report(page, kizuna_server):
    run = os.urandom(3).hex()
    login(page)
    # A list with three contacts, made through the shell (the import has its own browser test).
    import subprocess
    import sys

    code = (
        "from kizuna.contacts.models import *\n"
        f"t, _ = SubscriptionTopic.objects.get_or_create(key='news-{run}', defaults={{'name': 'ニュース {run}', "
        "'requires_opt_in': False})\n"
        f"l = ContactList.objects.create(name='Seminar {run}')\n"
        "for i, n in enumerate(['山田', '佐藤', '<b>鈴木</b>']):\n"
        f"    c = Contact.objects.create(email=f'b{{i}}-{run}@example.jp', family_name=n, company_name='丸山精機')\n"
        "    ListMembership.objects.create(contact_list=l, contact=c)\n"
    )
    subprocess.run([sys.executable, "-m", "kizuna.cli", "shell", "-c", code], env=kizuna_server.env, check=True,
                   capture_output=True)

    page.goto("/email/senders/new")
    page.fill("#id_name", f"Marketing {run}")
    page.fill("#id_from_name", "キズナ マーケティング")
    page.fill("#id_from_email", "news@kizuna.example")
    page.fill("#id_organisation", "株式会社キズナ")
    page.fill("#id_postal_address", "東京都千代田区丸の内1-1-1")
    page.click("[data-sender-form] button[type=submit]")
    page.wait_for_url("**/email/senders/")
    _shot(page, "email-senders")

    page.goto("/email/templates/new")
    page.fill("#id_name", f"Seminar invitation {run}")
    page.select_option("#id_topic", label=f"ニュース {run}")
    page.select_option("#id_sender", label="キズナ マーケティング <news@kizuna.example>")
    page.fill("#id_subject", "{{ contact.family_name }}様: セミナーのご案内")
    page.fill("#id_html", "<html><head><style>.cta { color: #ffffff; background: #1f6feb; padding: 8px; }</style>"
                          "</head><body><p>{{ contact.company_name }} {{ contact.family_name }}様</p>"
                          "<p><a class='cta' href='https://example.co.jp/seminar'>申し込む</a></p></body></html>")
    frame = page.frame_locator("[data-preview-frame]")
    # The preview follows the typing, before anything is saved (sample contact).
    frame.locator("text=株式会社サンプル製作所 山田様").wait_for(timeout=10_000)
    page.fill("#id_subject", "{{ contact.family_name }}様: 12月のセミナー")
    page.locator("#id_html").press("End")
    page.locator("#id_html").type("<p>{{ ''.__class__ }}</p>")
    frame.locator("text=not allowed").wait_for(timeout=10_000)  # refused live, not only on save
    page.fill("#id_html", page.input_value("#id_html").replace("<p>{{ ''.__class__ }}</p>", ""))
    page.click("[data-template-form] button[type=submit]")
    page.wait_for_url(re.compile(r"/email/templates/\d+/$"))
    frame.locator("text=株式会社サンプル製作所 山田様").wait_for()
    page.select_option("[data-preview-contact]", label=f"<b>鈴木</b> <b2-{run}@example.jp>")
    frame.locator("text=丸山精機 <b>鈴木</b>様").wait_for(timeout=10_000)  # escaped: shown, not bold
    _shot(page, "email-template-desktop")
    page.select_option("[data-preview-width]", "375px")
    page.wait_for_timeout(400)
    width = page.eval_on_selector("[data-preview-frame]", "f => f.getBoundingClientRect().width")
    assert 370 <= width <= 380
    _shot(page, "email-template-mobile")

    page.goto("/email/bulk/new")
    page.fill("#id_name", f"Seminar {run}")
    page.select_option("#id_template", label=f"Seminar invitation {run}")
    page.select_option("#id_contact_list", label=f"Seminar {run}")
    _shot(page, "email-bulk-form")
    page.click("[data-bulk-form] button[type=submit]")
    page.wait_for_url(re.compile(r"/email/bulk/\d+/$"))
    page.wait_for_function("() => document.querySelector('[data-progress-text]') && "
                           "document.querySelector('[data-progress-text]').textContent.includes('3 of 3')",
                           timeout=60_000)
    # The bar reloads the page once the worker has closed the send.
    page.wait_for_selector(".toolbar .badge:text-is('Done')", timeout=30_000)
    _shot(page, "email-bulk-done")

    page.goto("/email/outbox/")
    assert page.locator("text=<b>鈴木</b>").count() == 0  # escaped, not rendered as bold
    page.locator("table a", has_text=f"b2-{run}@example.jp").count()
    _shot(page, "email-outbox")
    href = page.locator("tbody tr td a").first.get_attribute("href")
    page.goto(href)
    _shot(page, "email-message")
    raw = page.locator("details pre").last.text_content()
    token = re.search(r"/e/u/([0-9a-z]+-[A-Za-z0-9_-]+)", raw).group(1)

    recipient = page.context.browser.new_context(base_url=kizuna_server, locale="ja-JP").new_page()
    recipient.goto(f"/e/u/{token}")
    assert recipient.locator(f"input[value='news-{run}']").is_checked()
    _shot(recipient, "email-preferences")
    recipient.locator(f"input[value='news-{run}']").uncheck()
    recipient.click("button[value=save]")
    assert not recipient.locator(f"input[value='news-{run}']").is_checked()
    recipient.context.close()
