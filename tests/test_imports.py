"""Contact imports: files, encodings, mapping, duplicate policies, tags/lists/consent, bad input,
the all-or-nothing guarantee, the wizard pages and the `kizuna import` command."""

from __future__ import annotations

import csv
import io
import re
import zipfile

import openpyxl
import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from kizuna.accounts.models import AuditLog
from kizuna.contacts import imports
from kizuna.contacts.models import (
    Company,
    Consent,
    ConsentRecord,
    Contact,
    ContactList,
    CustomField,
    ImportJob,
    ImportPreset,
    ListMembership,
    SubscriptionTopic,
    Tag,
)

pytestmark = pytest.mark.django_db

HEADER = ["氏名", "フリガナ", "会社名", "部署", "役職", "メールアドレス", "電話番号", "都道府県"]
FAMILY = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("田中", "タナカ")]
GIVEN = [("太郎", "タロウ"), ("花子", "ハナコ"), ("健一", "ケンイチ"), ("美咲", "ミサキ")]
PREFS = ["東京都", "大阪府", "愛知県", "福岡県", "神奈川県"]
IMMEDIATE_TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]}}


def to_csv(rows: list[list], *, encoding: str = "utf-8", bom: bool = False, delimiter: str = ",") -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n", delimiter=delimiter).writerows(rows)
    data = out.getvalue().encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def business_cards(n: int = 1000, bad: dict[int, str] | None = None) -> list[list[str]]:
    """n business cards; `bad` maps a spreadsheet row number (header = 1) to what is wrong."""
    bad = bad or {}
    rows = [list(HEADER)]
    for i in range(n):
        number = i + 2
        family, family_kana = FAMILY[i % len(FAMILY)]
        given, given_kana = GIVEN[i % len(GIVEN)]
        email, pref = f"card{i:04d}@example{i % 37}.co.jp", PREFS[i % len(PREFS)]
        if bad.get(number) == "email":
            email = "card-no-at-sign.example.co.jp"
        elif bad.get(number) == "prefecture":
            pref = "火星"
        elif bad.get(number) == "duplicate":
            email = "card0010@example10.co.jp"  # the same as row 12
        rows.append([f"{family}\u3000{given}", f"{family_kana} {given_kana}", f"株式会社テスト{i % 37}", "営業部",
                     "部長", email, f"03-1234-{i:04d}", pref])
    return rows


def upload(data: bytes, name: str = "list.csv", kind: str = "other", actor=None) -> ImportJob:
    return imports.create_job(actor, SimpleUploadedFile(name, data), kind=kind)


def run(job: ImportJob, actor=None, mapping: dict | None = None, **options) -> ImportJob:
    imports.configure_job(actor, job, mapping=job.mapping if mapping is None else mapping, **options)
    return imports.run_now(job)


def import_rows(rows: list[list], actor=None, kind: str = "other", **options) -> ImportJob:
    return run(upload(to_csv(rows), kind=kind, actor=actor), actor, **options)


def errors_of(job: ImportJob) -> list[dict]:
    return imports.error_rows(job, limit=10_000)[0]


# --- Mapping guesses ------------------------------------------------------------------------------


def test_guesses_japanese_and_english_headers():
    CustomField.objects.create(key="seminar_date", label="参加日", field_type="date")
    guessed = imports.guess_mapping(
        ["氏名", "フリガナ", "会社名", "メールアドレス", "役職", "部署", "電話番号", "都道府県", "業種", "従業員数",
         "参加日", "備考"])
    assert guessed == {
        "氏名": "full_name", "フリガナ": "full_name_kana", "会社名": "company_name", "メールアドレス": "email",
        "役職": "job_title", "部署": "department", "電話番号": "phone", "都道府県": "prefecture",
        "業種": "industry", "従業員数": "company_size", "参加日": "custom.seminar_date",
    }
    english = imports.guess_mapping(["First Name", "Last Name", "E-mail", "Company", "Title", "Phone Number"])
    assert english == {"First Name": "given_name", "Last Name": "family_name", "E-mail": "email",
                       "Company": "company_name", "Title": "job_title", "Phone Number": "phone"}


def test_separate_name_columns_beat_the_combined_one():
    guessed = imports.guess_mapping(["氏名", "姓", "名", "セイ", "メイ", "Email", "メール"])
    assert guessed == {"姓": "family_name", "名": "given_name", "セイ": "family_name_kana",
                       "メイ": "given_name_kana", "Email": "email"}


# --- Whole files ---------------------------------------------------------------------------------


def test_cp932_business_cards_with_three_bad_rows(admin_user):
    data = to_csv(business_cards(1000, {102: "email", 503: "prefecture", 904: "duplicate"}), encoding="cp932")
    job = upload(data, name="名刺一覧.csv", kind="business_cards", actor=admin_user)
    assert job.encoding == "cp932"
    assert job.headers == HEADER
    assert job.samples[0][0] == "山田\u3000太郎"
    job = run(job, admin_user)
    assert job.status == ImportJob.Status.DONE, job.failure
    assert (job.created_count, job.updated_count, job.error_count, job.total_rows) == (997, 0, 3, 1000)
    assert Contact.objects.count() == 997
    assert "997 imported" in imports.summary(job) and "3 errors" in imports.summary(job)
    errors = {e["row"]: e for e in errors_of(job)}
    assert sorted(errors) == [102, 503, 904]
    assert errors[102]["column"] == "メールアドレス" and "invalid email" in errors[102]["message"]
    assert errors[503]["column"] == "都道府県" and errors[503]["value"] == "火星"
    assert "prefecture" in errors[503]["message"]
    assert errors[904]["message"].startswith("duplicate of row 12")
    c = Contact.objects.get(email="card0000@example0.co.jp")
    assert (c.family_name, c.given_name, c.family_name_kana, c.given_name_kana) == ("山田", "太郎", "ヤマダ", "タロウ")
    assert (c.prefecture, c.region, c.source, c.company_name) == ("13", "kanto", "import", "株式会社テスト0")
    assert c.company.domain == "example0.co.jp" and c.company.name == "株式会社テスト0"
    assert Company.objects.count() == 37
    entry = AuditLog.objects.get(action="import")
    assert entry.actor == admin_user and entry.changes["created"] == 997 and entry.changes["errors"] == 3


def test_error_report_is_excel_ready_csv():
    job = import_rows([["Email", "Name"], ["=HYPERLINK(\"http://evil\")", "x"], ["ok@example.jp", "y"]])
    raw = job.error_report.open("rb").read()
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert lines[0] == ["row", "column", "value", "message"]
    assert lines[1][0] == "2" and lines[1][1] == "Email"
    assert lines[1][2].startswith("'=")  # neutralised for spreadsheets
    assert "formula" in lines[1][3]


def test_utf8_with_and_without_bom():
    rows = [["Email", "姓", "名"], ["a@example.jp", "山田", "太郎"]]
    for bom, expected in ((True, "utf-8-sig"), (False, "utf-8")):
        job = upload(to_csv(rows, bom=bom))
        assert job.encoding == expected
        assert job.headers == ["Email", "姓", "名"]  # no BOM glued to the first header
        job = run(job)
        assert job.status == "done" and Contact.objects.get(email="a@example.jp").family_name == "山田"


def test_utf16_tab_separated_text_from_excel():
    data = "Email\t会社名\r\nu16@example.jp\t株式会社ユニコード\r\n".encode("utf-16")
    job = upload(data, name="unicode.txt")
    assert (job.encoding, job.delimiter) == ("utf-16", "\t")
    job = run(job)
    assert job.status == "done" and Contact.objects.get(email="u16@example.jp").company_name == "株式会社ユニコード"


def test_old_mac_line_endings():
    job = upload("Email,会社名\rmac1@example.jp,株式会社マック\rmac2@example.jp,\r".encode("cp932"))
    assert (job.encoding, job.headers) == ("cp932", ["Email", "会社名"])
    job = run(job)
    assert job.status == "done" and job.created_count == 2
    assert Contact.objects.get(email="mac1@example.jp").company_name == "株式会社マック"


def test_euc_jp_is_recognised():
    rows = [["メールアドレス", "会社名"]] + [[f"e{i}@example.jp", f"株式会社日本語テスト{i}"] for i in range(30)]
    job = upload(to_csv(rows, encoding="euc_jp"))
    assert job.encoding == "euc_jp"
    assert run(job).created_count == 30


def xlsx_bytes(rows: list[list], cached: dict[str, str] | None = None) -> bytes:
    """A workbook; `cached` gives formula cells (by reference) the value Excel would have saved."""
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    if not cached:
        return buf.getvalue()
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                xml = data.decode()
                for ref, value in cached.items():
                    xml = re.sub(rf'<c r="{ref}"><f>(.*?)</f><v\s*/>', rf'<c r="{ref}" t="str"><f>\1</f><v>{value}</v>',
                                 xml)
                data = xml.encode()
            dst.writestr(item, data)
    return out.getvalue()


def test_xlsx_reads_cached_values_and_reports_uncalculated_formulas():
    data = xlsx_bytes([
        ["Email", "Company", "Employees", "Phone"],
        ["x1@example.jp", "株式会社エクセル", 250, 312345678],
        ['="x2"&"@example.jp"', "計算済み", 12, "+81-3-1234-5678"],
        ["x3@example.jp", "=A2", 30, None],
        [None, None, None, None],
        ["x4@example.jp", "Float", 5.0, None],
    ], cached={"A3": "x2@example.jp"})
    job = upload(data, name="seminar.xlsx", kind="seminar")
    assert job.file_format == "xlsx" and job.headers == ["Email", "Company", "Employees", "Phone"]
    assert job.mapping == {"Email": "email", "Company": "company_name", "Employees": "company_size",
                           "Phone": "phone"}
    job = run(job)
    assert job.status == "done", job.failure
    assert job.created_count == 3 and job.error_count == 1
    assert Contact.objects.get(email="x1@example.jp").company_size == "100-299"
    assert Contact.objects.get(email="x1@example.jp").phone == "312345678"
    assert Contact.objects.get(email="x2@example.jp").phone == "+81-3-1234-5678"
    (error,) = errors_of(job)
    assert (error["row"], error["column"], error["value"]) == (4, "Company", "=A2")
    assert "no saved value" in error["message"]


# --- Files refused at upload ------------------------------------------------------------------


@pytest.mark.parametrize(("data", "name", "message"), [
    (b"", "empty.csv", "empty"),
    (b"\xef\xbb\xbf", "bom-only.csv", "empty"),
    (b"\r\n\r\n", "blank.csv", "empty"),
    (b"Email,Name\r\n", "header-only.csv", "header row but no data rows"),
    (b"Email,Name\r\n,\r\n\r\n", "header-and-blanks.csv", "header row but no data rows"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "old.xls", ".xls"),
    (b"PK\x03\x04garbage", "broken.xlsx", "damaged"),
    (b"%PDF-1.4\x00\x00\x01", "brochure.csv", "NUL byte"),
    (b"Email\r\n\xff\xfe\xfa\xfb\xfc\r\n", "binary.csv", "Cannot tell the text encoding"),
])
def test_unusable_files_are_refused_with_a_clear_message(data, name, message):
    with pytest.raises(imports.ImportFileError) as exc:
        upload(data, name=name)
    assert message in exc.value.message
    assert not ImportJob.objects.exists()


def test_too_big_file_is_refused_with_the_limit(settings):
    settings.IMPORT_MAX_BYTES = 100
    with pytest.raises(imports.ImportFileError) as exc:
        upload(b"Email\r\n" + b"a@example.jp\r\n" * 20)
    assert exc.value.code == "too_large"
    assert "100 B" in exc.value.message


def test_mixed_encodings_are_refused_naming_the_line():
    utf8_line = "a@example.jp,株式会社ユーティーエフ\r\n"
    sjis_line = "b@example.jp,株式会社シフトジス\r\n"
    data = ("Email,会社名\r\n" + utf8_line).encode() + sjis_line.encode("cp932")
    with pytest.raises(imports.ImportFileError) as exc:
        upload(data)
    assert "line 3" in exc.value.message and "mixes" in exc.value.message
    reverse_mix = ("Email,会社名\r\n" + sjis_line).encode("cp932") + utf8_line.encode()
    with pytest.raises(imports.ImportFileError) as exc:
        upload(reverse_mix)
    assert "line 3" in exc.value.message


# --- Row errors: a bad row never stops the good ones -----------------------------------------


def test_each_bad_row_is_reported_with_row_column_and_reason():
    CustomField.objects.create(key="budget", label="予算", field_type="number")
    CustomField.objects.create(key="plan", label="プラン", field_type="choice", choices=["A", "B"])
    rows = [
        ["Email", "会社名", "都道府県", "業種", "従業員数", "電話番号", "予算", "プラン", "備考"],
        ["good1@example.jp", "株式会社A", "東京", "製造業", "250名", "+81-3-1234-5678", "1,000", "A", "memo"],  # 2
        ["", "株式会社B", "", "", "", "", "", "", ""],  # 3: no email
        ["bad@@example.jp", "", "", "", "", "", "", "", ""],  # 4
        ["good2@example.jp", "", "火星", "", "", "", "", "", ""],  # 5
        ["good3@example.jp", "", "", "宇宙開発", "", "", "", "", ""],  # 6
        ["good4@example.jp", "", "", "", "たくさん", "", "", "", ""],  # 7
        ["good5@example.jp", "=1+1", "", "", "", "", "", "", ""],  # 8: formula
        ["good6@example.jp", "", "", "", "", "", "abc", "", ""],  # 9
        ["good7@example.jp", "", "", "", "", "", "", "C", ""],  # 10
        ["GOOD1@example.jp", "", "", "", "", "", "", "", ""],  # 11: duplicate of row 2
        ["good8@example.jp", "x", "", "", "", "", "", "", "", "extra", "cells"],  # 12
        ["good9@example.jp", "株式会社" + "長" * 300, "", "", "", "", "", "", ""],  # 13
        ["good10@example.jp", "株式会社Z", "大阪府", "IT", "10-49", "06-1234-5678", "", "B", ""],  # 14
        ["good11@example.jp", "trailing empty cells are fine", "", "", "", "", "", "", "", "", ""],  # 15
    ]
    job = import_rows(rows)
    assert job.status == "done", job.failure
    assert sorted(Contact.objects.values_list("email", flat=True)) == [
        "good10@example.jp", "good11@example.jp", "good1@example.jp"]
    good = Contact.objects.get(email="good1@example.jp")
    assert (good.prefecture, good.industry, good.company_size, good.phone) == ("13", "manufacturing", "100-299",
                                                                               "+81-3-1234-5678")
    assert good.custom == {"budget": 1000, "plan": "A"}
    by_row = {e["row"]: e for e in errors_of(job)}
    assert sorted(by_row) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert by_row[3]["message"] == "email is required to import: duplicates are found by email"
    assert by_row[4]["column"] == "Email" and "invalid email" in by_row[4]["message"]
    assert (by_row[5]["column"], by_row[5]["value"]) == ("都道府県", "火星")
    assert (by_row[6]["column"], by_row[6]["value"]) == ("業種", "宇宙開発") and "industry" in by_row[6]["message"]
    assert (by_row[7]["column"], by_row[7]["value"]) == ("従業員数", "たくさん")
    assert by_row[8]["column"] == "会社名" and "formula" in by_row[8]["message"]
    assert by_row[9]["column"] == "予算" and "not a number" in by_row[9]["message"]
    assert by_row[10]["column"] == "プラン" and "not one of" in by_row[10]["message"]
    assert by_row[11]["message"] == "duplicate of row 2 (the same email address)"
    assert "11 values but the header has 9 columns" in by_row[12]["message"]
    assert by_row[13]["column"] == "会社名" and "longer than 255" in by_row[13]["message"]
    assert job.error_count == 11 and job.total_rows == 14


def test_error_report_pages_and_counts():
    rows = [["Email", "Memo"]] + [[f"bad{i}", "multi\nline value"] for i in range(250)] + [["ok@example.jp", ""]]
    job = import_rows(rows)
    items, count = imports.error_rows(job, offset=240, limit=100)
    assert count == 250 and len(items) == 10
    assert items[0]["row"] == 242 and items[-1]["row"] == 251
    assert imports.error_rows(job, offset=0, limit=1)[0][0]["value"] == "bad0"


def test_malformed_csv_row_is_a_row_error_and_the_rest_imports():
    data = b'Email,Name\r\nok1@example.jp,"A"B\r\nok2@example.jp,"multi\r\nline"\r\n\r\nok3@example.jp,C\r\n'
    job = run(upload(data))
    assert job.status == "done"
    assert sorted(Contact.objects.values_list("email", flat=True)) == ["ok2@example.jp", "ok3@example.jp"]
    (error,) = errors_of(job)
    assert error["row"] == 2 and "malformed CSV" in error["message"]


def test_row_numbers_count_blank_rows_as_a_spreadsheet_does():
    data = b"Email\r\n\r\nfirst@example.jp\r\n\r\nnot-an-email\r\n"
    job = run(upload(data))
    assert [e["row"] for e in errors_of(job)] == [5]
    assert job.total_rows == 2


def test_rows_with_a_bad_value_are_not_imported_but_the_later_duplicate_is():
    """A row rejected for another reason does not make a later row with its email a duplicate."""
    job = import_rows([["Email", "都道府県"], ["same@example.jp", "火星"], ["same@example.jp", "東京都"]])
    assert job.created_count == 1 and Contact.objects.get().prefecture == "13"


def test_half_width_kana_and_full_width_space_names():
    job = import_rows([["メールアドレス", "氏名", "フリガナ"], ["k@example.jp", "山田　太郎", "ﾔﾏﾀﾞ ﾀﾛｳ"],
                       ["one@example.jp", "マドンナ", ""]])
    c = Contact.objects.get(email="k@example.jp")
    assert (c.family_name, c.given_name, c.family_name_kana, c.given_name_kana) == ("山田", "太郎", "ヤマダ", "タロウ")
    assert job.created_count == 2 and Contact.objects.get(email="one@example.jp").family_name == "マドンナ"


def test_free_mail_is_not_linked_to_a_company():
    import_rows([["Email", "Company"], ["taro@gmail.com", "株式会社ジーメール"], ["jiro@acme.co.jp", ""]])
    assert Contact.objects.get(email="taro@gmail.com").company is None
    acme = Contact.objects.get(email="jiro@acme.co.jp").company
    assert (acme.domain, acme.name) == ("acme.co.jp", "acme.co.jp")


# --- Mapping and options ----------------------------------------------------------------------


def test_unknown_columns_are_ignored_and_unknown_targets_refused():
    job = upload(to_csv([["Email", "好きな食べ物"], ["food@example.jp", "寿司"]]))
    assert job.mapping == {"Email": "email"}  # 好きな食べ物 left unmapped
    with pytest.raises(imports.ImportConfigError) as exc:
        imports.configure_job(None, job, mapping={"Email": "email", "好きな食べ物": "favourite_food"})
    assert exc.value.errors == {"mapping.好きな食べ物": "unknown field 'favourite_food'"}
    with pytest.raises(imports.ImportConfigError) as exc:
        imports.configure_job(None, job, mapping={"Email": "email", "Nope": "phone"})
    assert "mapping.Nope" in exc.value.errors
    with pytest.raises(imports.ImportConfigError) as exc:
        imports.configure_job(None, job, mapping={"好きな食べ物": "phone"})
    assert "email is required" in exc.value.errors["mapping"]
    with pytest.raises(imports.ImportConfigError) as exc:
        imports.configure_job(None, job, mapping={"Email": "email", "好きな食べ物": "email"})
    assert "already mapped" in exc.value.errors["mapping.好きな食べ物"]
    job = run(job, mapping={"Email": "email", "好きな食べ物": ""})
    assert job.status == "done" and Contact.objects.get().custom == {}


def test_invalid_options_are_reported_by_path():
    job = upload(to_csv([["Email"], ["x@example.jp"]]))
    with pytest.raises(imports.ImportConfigError) as exc:
        imports.configure_job(None, job, mapping=job.mapping, duplicate_policy="merge", tags=["x" * 101],
                              list_name="l" * 151, consent_topic_key="nope", consent_status="maybe")
    assert set(exc.value.errors) == {"duplicate_policy", "tags", "list_name", "consent_topic", "consent_status"}


def test_required_custom_field_must_be_mapped():
    CustomField.objects.create(key="member_no", label="会員番号", field_type="text", required=True)
    job = upload(to_csv([["Email", "会員番号"], ["m1@example.jp", "A-1"], ["m2@example.jp", ""]]))
    with pytest.raises(imports.ImportConfigError) as exc:
        imports.configure_job(None, job, mapping={"Email": "email"})
    assert "会員番号 is required" in exc.value.errors["mapping"]
    job = run(job)
    assert job.created_count == 1 and errors_of(job)[0]["message"] == "is required"


def test_presets_are_saved_and_applied():
    job = upload(to_csv([["Mail", "Org", "Memo"], ["p@example.jp", "株式会社P", "x"]]))
    run(job, mapping={"Mail": "email", "Org": "company_name"}, save_preset_as="月例セミナー")
    preset = ImportPreset.objects.get(name="月例セミナー")
    assert preset.mapping == {"Mail": "email", "Org": "company_name"}
    other = upload(to_csv([["Org", "Mail", "New column"], ["株式会社Q", "q@example.jp", "y"]]))
    assert imports.preset_mapping(other, preset) == {"Mail": "email", "Org": "company_name"}


# --- Duplicate policies ----------------------------------------------------------------------------


@pytest.fixture
def existing_contact():
    CustomField.objects.create(key="seminar", label="セミナー", field_type="text")
    CustomField.objects.create(key="score", label="点数", field_type="number")
    contact = Contact.objects.create(email="dup@example.jp", family_name="旧姓", given_name="", job_title="課長",
                                     prefecture="27", region="kinki", lifecycle_stage="customer",
                                     custom={"seminar": "春", "score": 1})
    contact.tags.add(Tag.objects.create(name="既存"))
    return contact


DUP_ROWS = [["Email", "姓", "名", "役職", "都道府県", "ステージ", "セミナー", "点数"],
            ["dup@example.jp", "新姓", "花子", "", "東京都", "", "秋", ""],
            ["new@example.jp", "新規", "一郎", "主任", "", "", "", "5"]]


def test_policy_update_overwrites_with_non_blank_values(existing_contact):
    job = import_rows(DUP_ROWS, duplicate_policy="update", tags=["秋セミナー"], list_name="秋")
    assert (job.created_count, job.updated_count, job.skipped_count) == (1, 1, 0)
    c = Contact.objects.get(pk=existing_contact.pk)
    assert (c.family_name, c.given_name, c.job_title) == ("新姓", "花子", "課長")  # blank cell keeps the value
    assert (c.prefecture, c.region, c.lifecycle_stage) == ("13", "kanto", "customer")
    assert c.custom == {"seminar": "秋", "score": 1}
    assert sorted(c.tags.values_list("name", flat=True)) == ["既存", "秋セミナー"]
    assert ListMembership.objects.filter(contact_list__name="秋").count() == 2
    new = Contact.objects.get(email="new@example.jp")
    assert (new.lifecycle_stage, new.custom, new.source) == ("lead", {"score": 5}, "import")


def test_policy_fill_only_fills_empty_fields(existing_contact):
    job = import_rows(DUP_ROWS, duplicate_policy="fill", tags=["秋セミナー"])
    assert (job.created_count, job.updated_count) == (1, 1)
    c = Contact.objects.get(pk=existing_contact.pk)
    assert (c.family_name, c.given_name, c.prefecture, c.region) == ("旧姓", "花子", "27", "kinki")
    assert c.custom == {"seminar": "春", "score": 1}
    assert "秋セミナー" in c.tags.values_list("name", flat=True)


def test_policy_skip_leaves_existing_contacts_untouched(existing_contact):
    topic = SubscriptionTopic.objects.create(key="news", name="News")
    job = import_rows(DUP_ROWS, duplicate_policy="skip", tags=["秋セミナー"], list_name="秋",
                      consent_topic_key="news", consent_status="opted_in")
    assert (job.created_count, job.updated_count, job.skipped_count) == (1, 0, 1)
    c = Contact.objects.get(pk=existing_contact.pk)
    assert (c.family_name, c.prefecture, c.custom) == ("旧姓", "27", {"seminar": "春", "score": 1})
    assert list(c.tags.values_list("name", flat=True)) == ["既存"]
    assert not c.list_memberships.exists() and not Consent.objects.filter(contact=c, topic=topic).exists()
    assert Contact.objects.get(email="new@example.jp").lists.get().name == "秋"


def test_importing_the_same_file_twice_updates_instead_of_duplicating():
    rows = business_cards(30)
    first = import_rows(rows)
    second = import_rows(rows)
    assert (first.created_count, second.created_count, second.updated_count) == (30, 0, 30)
    assert Contact.objects.count() == 30


# --- Tags, lists, consent ---------------------------------------------------------------------------


def test_tags_list_and_consent_with_ledger_rows(admin_user):
    topic = SubscriptionTopic.objects.create(key="seminars", name="セミナー案内")
    ContactList.objects.create(name="既存リスト")
    opted_out = Contact.objects.create(email="c2@example.jp")
    Consent.objects.create(contact=opted_out, topic=topic, status="opted_out")
    same = Contact.objects.create(email="c3@example.jp")
    Consent.objects.create(contact=same, topic=topic, status="opted_in")
    rows = [["Email", "タグ"], ["c1@example.jp", "VIP、展示会"], ["c2@example.jp", ""], ["c3@example.jp", "VIP"]]
    job = import_rows(rows, actor=admin_user, kind="seminar", tags=["2026秋セミナー", "展示会"], list_name="既存リスト",
                      consent_topic_key="seminars", consent_status="opted_in", consent_source="受付シート 2026-11-20")
    assert job.status == "done", job.failure
    c1 = Contact.objects.get(email="c1@example.jp")
    assert sorted(c1.tags.values_list("name", flat=True)) == ["2026秋セミナー", "VIP", "展示会"]
    assert Tag.objects.filter(name="展示会").count() == 1
    assert ContactList.objects.get(name="既存リスト").memberships.count() == 3
    assert job.contact_list.name == "既存リスト"
    assert set(Consent.objects.filter(topic=topic).values_list("status", flat=True)) == {"opted_in"}
    ledger = ConsentRecord.objects.filter(topic=topic).order_by("contact__email")
    # c3 was already opted in: no change, no ledger row.
    assert [(r.contact.email, r.status, r.method, r.source, r.actor) for r in ledger] == [
        ("c1@example.jp", "opted_in", "import", "受付シート 2026-11-20", admin_user),
        ("c2@example.jp", "opted_in", "import", "受付シート 2026-11-20", admin_user),
    ]


def test_business_card_consent_is_recorded_as_business_card_exchange():
    SubscriptionTopic.objects.create(key="news", name="News", requires_opt_in=False)
    job = import_rows(business_cards(5), kind="business_cards", consent_topic_key="news", consent_status="opted_in")
    assert set(ConsentRecord.objects.values_list("method", flat=True)) == {"business_card"}
    assert ConsentRecord.objects.count() == 5
    assert job.consent_source.startswith("Business cards")  # a default source names the file


def test_fill_policy_keeps_an_existing_consent():
    topic = SubscriptionTopic.objects.create(key="news", name="News")
    c = Contact.objects.create(email="keep@example.jp")
    Consent.objects.create(contact=c, topic=topic, status="opted_out")
    import_rows([["Email"], ["keep@example.jp"], ["fresh@example.jp"]], duplicate_policy="fill",
                consent_topic_key="news", consent_status="opted_in")
    assert Consent.objects.get(contact=c).status == "opted_out"
    assert Consent.objects.get(contact__email="fresh@example.jp").status == "opted_in"


# --- All or nothing ------------------------------------------------------------------------------


def assert_nothing_written():
    assert not Contact.objects.exists()
    assert not Company.objects.exists()
    assert not Tag.objects.exists()
    assert not ContactList.objects.exists()
    assert not Consent.objects.exists() and not ConsentRecord.objects.exists()
    assert not AuditLog.objects.filter(action="import").exists()


def test_a_fatal_error_after_chunks_were_written_leaves_nothing(monkeypatch):
    """An unclosed quote near the end is found after earlier chunks were already written."""
    monkeypatch.setattr(imports, "CHUNK_ROWS", 10)
    SubscriptionTopic.objects.create(key="news", name="News")
    body = to_csv(business_cards(200)) + b'late@example.co.jp,"never closed\r\nmore,rows\r\n'
    job = upload(body)
    job = run(job, tags=["t"], list_name="L", consent_topic_key="news", consent_status="opted_in")
    assert job.status == "failed"
    assert "Line 202" in job.failure and "never closed" in job.failure
    assert job.created_count == 0
    assert_nothing_written()
    failed = AuditLog.objects.get(action="import_failed")
    assert failed.object_id == str(job.pk) and "never closed" in failed.changes["error"]
    SubscriptionTopic.objects.all().delete()


def test_a_file_that_changes_encoding_midway_fails_naming_the_line_and_writes_nothing(monkeypatch):
    monkeypatch.setattr(imports, "CHUNK_ROWS", 10)
    job = upload(to_csv(business_cards(100)))
    assert job.encoding == "utf-8"
    # The stored file now switches to Shift_JIS after line 81 (as if it had been appended to).
    path = job.file.path
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    lines[80] = lines[80].decode().encode("cp932")
    with open(path, "wb") as fh:
        fh.write(b"\n".join(lines))
    job = run(job, tags=["t"])
    assert job.status == "failed"
    assert "Line 81" in job.failure and "UTF-8" in job.failure
    assert_nothing_written()


def test_large_files_are_parsed_in_a_separate_process(monkeypatch):
    """The parser process (used from PARSE_IN_PROCESS_FROM bytes) gives the same results, row errors
    and fatal errors included."""
    monkeypatch.setattr(imports, "PARSE_IN_PROCESS_FROM", 0)
    monkeypatch.setattr(imports, "CHUNK_ROWS", 50)
    calls = []
    original = imports._ProcessParser.__init__
    monkeypatch.setattr(imports._ProcessParser, "__init__", lambda self, *a: calls.append(1) or original(self, *a))
    CustomField.objects.create(key="budget", label="予算", field_type="number")
    rows = business_cards(300, {102: "email", 250: "duplicate"})
    rows[0].append("予算")
    for i, row in enumerate(rows[1:], 2):
        row.append("多い" if i == 77 else str(i))
    job = run(upload(to_csv(rows, encoding="cp932")), tags=["proc"])
    assert calls and job.status == "done", job.failure
    assert (job.created_count, job.error_count) == (297, 3)
    assert [e["row"] for e in errors_of(job)] == [77, 102, 250]
    assert Contact.objects.get(email="card0000@example0.co.jp").custom == {"budget": 2}
    for model in (Contact, Company, Tag, AuditLog):
        model.objects.all().delete()
    job = run(upload(to_csv(business_cards(300)) + b'"x@example.jp,never closed\r\n'), tags=["t"])
    assert job.status == "failed" and "Line 302" in job.failure
    assert_nothing_written()


def test_run_job_only_runs_a_queued_job_once():
    job = import_rows([["Email"], ["once@example.jp"]])
    again = imports.run_job(job.pk)
    assert again.status == "done" and again.created_count == 1
    assert AuditLog.objects.filter(action="import").count() == 1


# --- Progress and background work ------------------------------------------------------------------


def test_progress_states():
    job = upload(to_csv([["Email"], ["p@example.jp"]]))
    assert imports.progress(job) == {"done": False, "percent": 0, "text": "Waiting for the column mapping.",
                                     "status": "draft"}
    imports.configure_job(None, job, mapping=job.mapping)
    ImportJob.objects.filter(pk=job.pk).update(status="writing")
    job.refresh_from_db()
    cache.set(imports._progress_key(job.pk), {"read": 120000, "written": 115000, "percent": 42.4, "at": 1e12})
    live = imports.progress(job)
    assert live["done"] is False and live["percent"] == 42.4
    assert live["text"] == "120,000 rows checked, 115,000 written (42%)"
    ImportJob.objects.filter(pk=job.pk).update(status="queued")
    job.refresh_from_db()
    job = imports.run_job(job.pk)
    assert imports.progress(job)["done"] is True and "1 imported" in imports.progress(job)["text"]


def test_enqueue_runs_the_task_in_the_background_backend(settings, django_capture_on_commit_callbacks):
    settings.TASKS = IMMEDIATE_TASKS
    job = upload(to_csv([["Email"], ["bg@example.jp"]]))
    imports.configure_job(None, job, mapping=job.mapping)
    with django_capture_on_commit_callbacks(execute=True):
        imports.enqueue_job(job)
    job.refresh_from_db()
    assert job.status == "done" and Contact.objects.filter(email="bg@example.jp").exists()
    with pytest.raises(imports.ImportConfigError):
        imports.enqueue_job(job)


# --- Pages -------------------------------------------------------------------------------------------


def test_wizard_upload_map_start_and_results(client, users, settings, django_capture_on_commit_callbacks):
    settings.TASKS = IMMEDIATE_TASKS
    client.force_login(users["marketer"])
    SubscriptionTopic.objects.create(key="news", name="ニュースレター")
    data = to_csv(business_cards(1000, {102: "email", 503: "prefecture", 904: "duplicate"}), encoding="cp932")
    page = client.get(reverse("contacts:import_new"))
    assert page.status_code == 200 and b'name="file"' in page.content
    response = client.post(reverse("contacts:import_new"),
                           {"kind": "business_cards", "file": SimpleUploadedFile("名刺.csv", data)})
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("contacts:import_detail", args=[job.pk])
    page = client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count("<select id=\"map-") == 8
    assert '<option value="email" selected>' in html and "山田　太郎" in html  # guess preselected, samples
    form = {f"map-{i}": job.mapping.get(h, "") for i, h in enumerate(job.headers)}
    form.update({"duplicate_policy": "update", "tags": "展示会, 名刺", "list_name": "名刺交換会",
                 "consent_topic": "news", "consent_status": "opted_in", "consent_source": "",
                 "save_preset_as": "名刺アプリ"})
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("contacts:import_detail", args=[job.pk]), form)
    assert response.status_code == 302
    page = client.get(response["Location"])
    html = page.content.decode()
    assert 'data-import-status="done"' in html
    assert "997 imported" in html and "3 errors" in html
    errors_table = html[html.index("data-import-errors"):]
    for row in ("102", "503", "904"):
        assert f'<td class="nowrap">{row}</td>' in errors_table
    assert reverse("contacts:import_errors", args=[job.pk]) in html
    report = client.get(reverse("contacts:import_errors", args=[job.pk]))
    body = b"".join(report.streaming_content)
    assert report["Content-Disposition"].startswith("attachment")
    assert body.startswith(b"\xef\xbb\xbf")
    assert sorted(int(r[0]) for r in list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))[1:]) == [102, 503, 904]
    progress = client.get(reverse("contacts:import_progress", args=[job.pk])).json()
    assert progress["done"] is True and progress["percent"] == 100 and "997 imported" in progress["text"]
    assert Contact.objects.count() == 997
    assert ImportPreset.objects.filter(name="名刺アプリ").exists()
    listing = client.get(reverse("contacts:import_list")).content.decode()
    assert "名刺.csv" in listing and "997" in listing
    # Starting again does nothing.
    client.post(reverse("contacts:import_detail", args=[job.pk]), form)
    assert ImportJob.objects.get().created_count == 997


def test_job_page_polls_progress_while_running(logged_in):
    job = upload(to_csv([["Email"], ["p@example.jp"]]))
    imports.configure_job(None, job, mapping=job.mapping)
    ImportJob.objects.filter(pk=job.pk).update(status="writing")
    cache.set(imports._progress_key(job.pk), {"read": 5000, "written": 4000, "percent": 12.5, "at": 1e12})
    page = logged_in.get(reverse("contacts:import_detail", args=[job.pk])).content.decode()
    progress_url = reverse("contacts:import_progress", args=[job.pk])
    assert f'data-progress-url="{progress_url}"' in page and "<progress" in page
    assert 'data-import-status="writing"' in page
    assert logged_in.get(progress_url).json() == {
        "done": False, "percent": 12.5, "text": "5,000 rows checked, 4,000 written (12%)", "status": "writing"}


def test_mapping_page_shows_errors_and_keeps_the_choices(logged_in):
    job = upload(to_csv([["Email", "Memo"], ["x@example.jp", "<script>alert(1)</script>"]]))
    page = logged_in.get(reverse("contacts:import_detail", args=[job.pk]))
    assert b"<script>alert(1)</script>" not in page.content and b"&lt;script&gt;" in page.content
    response = logged_in.post(reverse("contacts:import_detail", args=[job.pk]),
                              {"map-0": "", "map-1": "phone", "duplicate_policy": "update"})
    assert response.status_code == 400
    assert b"email is required to import" in response.content
    assert b'<option value="phone" selected>' in response.content
    job.refresh_from_db()
    assert job.status == "draft"


def test_preset_can_be_loaded_on_the_mapping_page(logged_in):
    preset = ImportPreset.objects.create(name="CRM export", mapping={"Memo": "email"})
    job = upload(to_csv([["Email", "Memo"], ["x@example.jp", "y@example.jp"]]))
    page = logged_in.get(reverse("contacts:import_detail", args=[job.pk]), {"preset": preset.pk}).content.decode()
    assert "Loaded “CRM export”" in page
    select_1 = page[page.index('id="map-1"'):]
    assert select_1.index('<option value="email" selected>') < select_1.index("</select>")


def test_upload_page_refuses_a_file_over_the_limit(logged_in, settings):
    settings.IMPORT_MAX_BYTES = 1000
    response = logged_in.post(reverse("contacts:import_new"),
                              {"kind": "other", "file": SimpleUploadedFile("big.csv", b"Email\r\n" + b"x" * 5000)})
    assert response.status_code == 400
    assert "larger than 1000 B" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_upload_and_start_need_a_csrf_token(admin_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(reverse("contacts:import_new"),
                           {"kind": "other", "file": SimpleUploadedFile("a.csv", b"Email\r\na@example.jp\r\n")})
    assert response.status_code == 403 and not ImportJob.objects.exists()
    job = upload(to_csv([["Email"], ["x@example.jp"]]))
    assert client.post(reverse("contacts:import_detail", args=[job.pk]), {"map-0": "email"}).status_code == 403
    assert ImportJob.objects.get().status == "draft"


def test_upload_page_shows_why_a_file_is_refused(logged_in):
    response = logged_in.post(reverse("contacts:import_new"),
                              {"kind": "other", "file": SimpleUploadedFile("h.csv", b"Email,Name\r\n")})
    assert response.status_code == 400 and "header row but no data rows" in response.content.decode()


@pytest.mark.parametrize("role", ["viewer", "sales"])
def test_import_pages_need_the_import_capability(client, users, role):
    job = upload(to_csv([["Email"], ["x@example.jp"]]))
    client.force_login(users[role])
    for url in (reverse("contacts:import_list"), reverse("contacts:import_new"),
                reverse("contacts:import_detail", args=[job.pk]), reverse("contacts:import_progress", args=[job.pk]),
                reverse("contacts:import_errors", args=[job.pk])):
        assert client.get(url).status_code == 403, url
    response = client.post(reverse("contacts:import_new"),
                           {"kind": "other", "file": SimpleUploadedFile("a.csv", b"Email\r\na@example.jp\r\n")})
    assert response.status_code == 403
    assert client.post(reverse("contacts:import_detail", args=[job.pk]), {"map-0": "email"}).status_code == 403
    assert ImportJob.objects.get().status == "draft"


def test_import_pages_need_login(client):
    assert client.get(reverse("contacts:import_list")).status_code == 302


# --- The command ------------------------------------------------------------------------------------


def test_import_command(tmp_path, capsys):
    path = tmp_path / "cards.csv"
    path.write_bytes(to_csv(business_cards(20, {5: "email"}), encoding="cp932"))
    call_command("import", str(path), "--kind", "business_cards", "--tags", "a,b", "--list", "CLI",
                 "--policy", "fill")
    out = capsys.readouterr().out
    assert "19 imported" in out and "1 error" in out and "row 5" in out
    assert ContactList.objects.get(name="CLI").memberships.count() == 19
    assert set(Tag.objects.values_list("name", flat=True)) == {"a", "b"}


def test_import_command_with_a_preset(tmp_path, capsys):
    ImportPreset.objects.create(name="mine", mapping={"Mail": "email", "Who": "full_name"})
    path = tmp_path / "x.csv"
    path.write_bytes(to_csv([["Mail", "Who"], ["pre@example.jp", "山田 太郎"]]))
    call_command("import", str(path), "--preset", "mine")
    assert Contact.objects.get().given_name == "太郎"


def test_import_command_exits_non_zero_on_a_fatal_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'Email\r\nok@example.jp\r\n"unclosed@example.jp\r\n')
    with pytest.raises(CommandError, match="never closed"):
        call_command("import", str(path))
    assert not Contact.objects.exists()
    path.write_bytes(b"")
    with pytest.raises(CommandError, match="empty"):
        call_command("import", str(path))
