"""The foundation's browser acceptance test: log in, import a 1,000-row CP932 CSV containing
three bad rows through the wizard (the real worker does the import), see 997 contacts and an
error report naming the three rows and why; switch the UI to Japanese and back."""

from __future__ import annotations

import csv
import io
import re

import pytest

from .conftest import login, switch_language

pytestmark = pytest.mark.browser

FAMILY = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("田中", "タナカ")]
GIVEN = [("太郎", "タロウ"), ("花子", "ハナコ"), ("健一", "ケンイチ"), ("美咲", "ミサキ")]
PREFS = ["東京都", "大阪府", "愛知県", "福岡県", "神奈川県"]
TITLES = ["部長", "課長", "主任", "担当"]
BAD_ROWS = {  # spreadsheet row number (header is row 1) -> what is wrong
    102: "email",
    503: "prefecture",
    904: "duplicate",
}


def cp932_business_cards() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["氏名", "フリガナ", "会社名", "部署", "役職", "メールアドレス", "電話番号", "都道府県"])
    for i in range(1000):
        row_number = i + 2
        family, family_kana = FAMILY[i % len(FAMILY)]
        given, given_kana = GIVEN[i % len(GIVEN)]
        email = f"card{i:04d}@example{i % 37}.co.jp"
        pref = PREFS[i % len(PREFS)]
        if BAD_ROWS.get(row_number) == "email":
            email = "card-no-at-sign.example.co.jp"
        elif BAD_ROWS.get(row_number) == "prefecture":
            pref = "火星"
        elif BAD_ROWS.get(row_number) == "duplicate":
            email = "card0010@example10.co.jp"  # the same as row 12
        writer.writerow([f"{family}　{given}", f"{family_kana} {given_kana}", f"株式会社テスト{i % 37}",
                         "営業部", TITLES[i % len(TITLES)], email, f"03-1234-{i:04d}", pref])
    return out.getvalue().encode("cp932")


def test_import_business_cards_and_switch_language(page, kizuna_server, tmp_path):
    path = tmp_path / "名刺一覧.csv"
    path.write_bytes(cp932_business_cards())
    # The server is shared by the session's browser tests: earlier ones may have made contacts.
    before = kizuna_server.query("SELECT COUNT(*) FROM contacts_contact")[0][0]
    login(page)

    page.get_by_role("link", name="Import", exact=True).click()
    page.goto("/imports/new/")
    page.set_input_files("input[name=file]", str(path))
    page.locator("form button[type=submit]").last.click()
    # The mapping step shows the guesses for the Japanese headers; start with them.
    page.wait_for_url(re.compile(r"/imports/\d+/"))
    assert page.locator("select").count() >= 8
    page.locator("form button[type=submit]").last.click()
    # The worker imports in the background; the job page reloads itself when it is done.
    page.wait_for_selector("[data-import-status=done]", timeout=90_000)
    summary = page.locator("main").inner_text()
    assert re.search(r"\b997\b", summary), summary
    errors = page.locator("[data-import-errors]").inner_text()
    for row in BAD_ROWS:
        assert re.search(rf"\b{row}\b", errors), (row, errors)
    assert "email" in errors.lower() and "prefecture" in errors.lower() and "duplicate" in errors.lower()
    report_link = page.locator("a[href$='errors.csv']")
    with page.expect_download() as download:
        report_link.click()
    report = download.value.path().read_bytes().decode("utf-8-sig")
    report_rows = list(csv.reader(io.StringIO(report)))[1:]
    assert sorted({int(r[0]) for r in report_rows}) == sorted(BAD_ROWS)

    page.goto("/contacts/")
    assert re.search(rf"\b{before + 997}\b", page.locator("main").inner_text())
    page.screenshot(path=str(tmp_path / "contacts-en.png"))

    switch_language(page, "ja")
    nav = page.locator("nav.sidebar").inner_text()
    assert "コンタクト" in nav and "インポート" in nav, nav
    assert page.locator("html").get_attribute("lang") == "ja"
    page.screenshot(path=str(tmp_path / "contacts-ja.png"))

    switch_language(page, "en")
    assert "Contacts" in page.locator("nav.sidebar").inner_text()
    assert page.locator("html").get_attribute("lang") == "en"
