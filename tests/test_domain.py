"""Domain rules: addresses, reference data, custom fields, contact services, consent."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kizuna.accounts.models import AuditLog
from kizuna.contacts import consent, services
from kizuna.contacts.emails import InvalidEmail, normalise_email
from kizuna.contacts.fields import FieldError, clean_value, validate_definition
from kizuna.contacts.models import (
    Company,
    ConsentRecord,
    ConsentStatus,
    Contact,
    CustomField,
    SubscriptionTopic,
)
from kizuna.contacts.reference import (
    normalise_company_size,
    normalise_industry,
    normalise_prefecture,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Taro.Yamada@Example.CO.JP", "taro.yamada@example.co.jp"),
        ("  ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ ", "taro@example.jp"),
        ("<hanako@example.com>", "hanako@example.com"),
        ("user+tag@例え.jp", "user+tag@xn--r8jz45g.jp"),
    ],
)
def test_normalise_email(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        ("no-at-sign", "exactly one @"),
        ("a@b@c.jp", "exactly one @"),
        ("a b@example.jp", "spaces"),
        ("taro@localhost", "domain"),
        (".taro@example.jp", "before @"),
        ("taro@example.123", "domain"),
        ("taro@-bad-.jp", "domain"),
    ],
)
def test_invalid_email_says_why(raw, reason):
    with pytest.raises(InvalidEmail, match=reason):
        normalise_email(raw)


@given(st.emails())
def test_any_valid_email_normalises_idempotently(address):
    try:
        once = normalise_email(address)
    except InvalidEmail:
        return  # hypothesis may build addresses we deliberately refuse (e.g. numeric TLDs)
    assert normalise_email(once) == once


@pytest.mark.parametrize("raw, code", [("東京都", "13"), ("東京", "13"), ("Tokyo", "13"), ("13", "13"),
                                       ("北海道", "01"), ("大阪府", "27"), ("osaka", "27"), ("", "")])
def test_prefecture(raw, code):
    assert normalise_prefecture(raw) == code


def test_unknown_prefecture_is_none():
    assert normalise_prefecture("Atlantis") is None


@pytest.mark.parametrize("raw, code", [("製造業", "manufacturing"), ("情報通信業", "it"), ("IT", "it"),
                                       ("finance", "finance"), ("Manufacturing", "manufacturing")])
def test_industry(raw, code):
    assert normalise_industry(raw) == code


@pytest.mark.parametrize("raw, band", [("250", "100-299"), ("250名", "100-299"), ("１，２００人", "1000-4999"),
                                       ("100〜299名", "100-299"), ("5000名以上", "5000+"), ("1-9", "1-9")])
def test_company_size(raw, band):
    assert normalise_company_size(raw) == band


def test_company_size_rejects_words():
    assert normalise_company_size("大企業") is None


def _field(kind, choices=(), required=False):
    return CustomField(key="f", label="F", field_type=kind, choices=list(choices), required=required)


@pytest.mark.parametrize(
    "kind, choices, raw, value",
    [
        ("text", (), " hello ", "hello"),
        ("number", (), "1,200", 1200),
        ("number", (), "３.５", 3.5),
        ("date", (), "2026年4月1日", "2026-04-01"),
        ("date", (), "2026/4/1", "2026-04-01"),
        ("boolean", (), "はい", True),
        ("boolean", (), "false", False),
        ("choice", ("A", "B"), "B", "B"),
        ("multi_choice", ("A", "B", "C"), "A、C", ["A", "C"]),
        ("multi_choice", ("A", "B"), ["B", "B"], ["B"]),
    ],
)
def test_custom_field_values(kind, choices, raw, value):
    assert clean_value(_field(kind, choices), raw) == value


@pytest.mark.parametrize(
    "kind, choices, raw, message",
    [
        ("number", (), "many", "not a number"),
        ("number", (), "nan", "finite"),
        ("date", (), "yesterday", "not a date"),
        ("boolean", (), "maybe", "yes or no"),
        ("choice", ("A",), "Z", "not one of"),
        ("multi_choice", ("A",), "A,Z", "not among"),
    ],
)
def test_custom_field_errors(kind, choices, raw, message):
    with pytest.raises(FieldError, match=message):
        clean_value(_field(kind, choices), raw)


def test_required_custom_field():
    with pytest.raises(FieldError, match="required"):
        clean_value(_field("text", required=True), "  ")


def test_field_definition_rules():
    assert validate_definition("choice", []) == ["a choice field needs at least one choice"]
    assert validate_definition("text", ["x"]) == ["only choice fields have choices"]
    assert validate_definition("multi_choice", ["a", "b"]) == []


@pytest.mark.django_db
def test_create_contact_links_company_by_domain_and_audits(admin_user):
    contact = services.create_contact(
        admin_user,
        {"email": "Taro@Acme.co.jp", "family_name": "山田", "given_name": "太郎", "prefecture": "東京",
         "company_name": "アクメ株式会社", "tags": ["展示会", "展示会"]},
    )
    assert contact.email == "taro@acme.co.jp"
    assert contact.region == "kanto"
    assert contact.company.domain == "acme.co.jp"
    assert contact.company.name == "アクメ株式会社"
    assert contact.full_name == "山田 太郎"
    assert list(contact.tags.values_list("name", flat=True)) == ["展示会"]
    entry = AuditLog.objects.get(object_type="contacts.contact", object_id=str(contact.pk))
    assert entry.action == "create" and entry.actor == admin_user
    assert entry.changes["email"] == [None, "taro@acme.co.jp"]

    second = services.create_contact(admin_user, {"email": "hanako@acme.co.jp"})
    assert second.company_id == contact.company_id
    assert Company.objects.count() == 1


@pytest.mark.django_db
def test_free_mail_is_not_a_company(admin_user):
    contact = services.create_contact(admin_user, {"email": "someone@gmail.com"})
    assert contact.company is None
    assert not Company.objects.exists()


@pytest.mark.django_db
def test_update_contact_records_only_changes(admin_user):
    contact = services.create_contact(admin_user, {"email": "a@example.jp", "job_title": "課長"})
    services.update_contact(admin_user, contact, {"job_title": "部長", "family_name": ""})
    entry = AuditLog.objects.filter(action="update").get()
    assert entry.changes == {"job_title": ["課長", "部長"]}


@pytest.mark.django_db
def test_contact_errors_name_each_field(admin_user):
    CustomField.objects.create(key="budget", label="予算", field_type="number")
    with pytest.raises(services.ContactError) as exc:
        services.create_contact(
            admin_user,
            {"email": "bad", "prefecture": "Atlantis", "custom": {"budget": "lots", "nope": 1}, "colour": "red"},
        )
    assert set(exc.value.errors) == {"email", "prefecture", "custom.budget", "custom.nope", "colour"}
    assert not Contact.objects.exists()


@pytest.mark.django_db
def test_duplicate_email_is_refused(admin_user):
    services.create_contact(admin_user, {"email": "dup@example.jp"})
    with pytest.raises(services.ContactError, match="already exists"):
        services.create_contact(admin_user, {"email": "DUP@example.jp"})


@pytest.mark.django_db
def test_contacts_without_email_are_allowed(admin_user):
    services.create_contact(admin_user, {"family_name": "名刺", "phone": "03-1234-5678"})
    services.create_contact(admin_user, {"family_name": "名刺2"})
    assert Contact.objects.filter(email__isnull=True).count() == 2


@pytest.fixture
def topics(db):
    return {
        "news": SubscriptionTopic.objects.create(key="news", name="News"),
        "notice": SubscriptionTopic.objects.create(key="notice", name="Notice", requires_opt_in=False),
    }


@pytest.mark.django_db
def test_may_send_follows_consent(topics):
    c = Contact.objects.create(email="c@example.jp")
    news, notice = topics["news"], topics["notice"]
    assert not consent.may_send(c, topic=news)  # unknown on an opt-in topic
    assert consent.may_send(c, topic=notice)  # unknown on an exempt topic
    assert not consent.may_send(c)  # marketing without a topic
    assert consent.may_send(c, consent.TRANSACTIONAL)

    assert consent.set_consent(c, news, ConsentStatus.OPTED_IN, method="form", source="LP", text_shown="同意します",
                               ip="203.0.113.5")
    assert not consent.set_consent(c, news, ConsentStatus.OPTED_IN, method="form")  # no change, no ledger row
    assert consent.may_send(c, topic=news)
    consent.set_consent(c, news, ConsentStatus.OPTED_OUT, method="unsubscribe")
    decision = consent.may_send(c, topic=news)
    assert not decision and "opted out" in decision.reason
    ledger = list(ConsentRecord.objects.filter(contact=c).order_by("id"))
    assert [r.status for r in ledger] == ["opted_in", "opted_out"]
    assert ledger[0].text_shown == "同意します" and ledger[0].ip == "203.0.113.5"


@pytest.mark.django_db
def test_do_not_contact_rules(topics):
    c = Contact.objects.create(email="d@example.jp")
    consent.set_consent(c, topics["news"], ConsentStatus.OPTED_IN, method="form")
    consent.set_do_not_contact(c, "unsubscribed", method="unsubscribe")
    assert not consent.may_send(c, topic=topics["news"])
    assert consent.may_send(c, consent.TRANSACTIONAL)  # what they asked for still arrives
    consent.set_do_not_contact(c, "bounced", method="bounce")
    assert not consent.may_send(c, consent.TRANSACTIONAL)
    consent.clear_do_not_contact(c, method="manual")
    c.refresh_from_db()
    assert not c.do_not_contact and consent.may_send(c, topic=topics["news"])
    assert ConsentRecord.objects.filter(contact=c, topic=None).count() == 3
    no_address = Contact.objects.create(family_name="x")
    assert consent.may_send(no_address, consent.TRANSACTIONAL).reason == "no email address"


def test_custom_field_filters_on_the_contacts_page(logged_in):
    CustomField.objects.create(key="budget", label="予算", field_type="number")
    CustomField.objects.create(key="products", label="製品", field_type="multi_choice", choices=["A", "B"])
    Contact.objects.create(email="match@example.jp", custom={"budget": 100, "products": ["A", "B"]})
    Contact.objects.create(email="other@example.jp", custom={"budget": 5, "products": ["A"]})
    page = logged_in.get("/contacts/", {"custom.budget": "100"}).content.decode()
    assert "match@example.jp" in page and "other@example.jp" not in page
    page = logged_in.get("/contacts/", {"custom.products": "B"}).content.decode()
    assert "match@example.jp" in page and "other@example.jp" not in page
    assert logged_in.get("/contacts/", {"custom.budget": "lots"}).status_code == 400
