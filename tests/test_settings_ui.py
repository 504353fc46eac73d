"""Settings pages for custom fields and subscription topics: admins only, validated, audited."""

import html

import pytest
from django.urls import reverse

from kizuna.accounts.models import AuditLog
from kizuna.contacts.models import CustomField, SubscriptionTopic

XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


def _field(client, **values):
    data = {"target": "contact", "label": "Budget", "key": "budget", "field_type": "number", "choices": "",
            "help_text": "", "position": "0"}
    data.update(values)
    return client.post(reverse("contacts:field_create"), data)


def _errors(response, name):
    return list(response.context["form"].errors.get(name, []))


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["marketer", "sales", "viewer"])
def test_settings_are_for_admins_only(client, users, role):
    definition = CustomField.objects.create(key="k", label="K")
    topic = SubscriptionTopic.objects.create(key="news", name="News")
    client.force_login(users[role])
    urls = [reverse("contacts:field_list"), reverse("contacts:field_create"),
            reverse("contacts:field_edit", args=[definition.pk]), reverse("contacts:topic_list"),
            reverse("contacts:topic_edit", args=[topic.pk])]
    for url in urls:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"key": "x", "label": "x", "name": "x"}).status_code == 403, url
    page = client.get(reverse("contacts:list")).content.decode()
    assert reverse("contacts:field_list") not in page and reverse("contacts:topic_list") not in page
    assert CustomField.objects.count() == 1 and SubscriptionTopic.objects.count() == 1


@pytest.mark.django_db
def test_settings_require_login(client, db):
    response = client.get(reverse("contacts:field_list"))
    assert response.status_code == 302 and reverse("accounts:login") in response["Location"]


@pytest.mark.django_db
def test_create_each_type_of_custom_field(logged_in, admin_user):
    assert logged_in.get(reverse("contacts:field_create")).status_code == 200
    cases = [
        ("note", "text", ""), ("budget", "number", ""), ("met_on", "date", ""), ("flag", "boolean", ""),
        ("plan", "choice", "Basic\n  Pro  \n\nEnterprise\n"), ("interests", "multi_choice", "MA\r\nCRM"),
    ]
    for key, kind, choices in cases:
        response = _field(logged_in, key=key, label=f"Label {key}", field_type=kind, choices=choices,
                          required="on" if kind == "date" else "", help_text="Shown under the field")
        assert response.status_code == 302, response.context["form"].errors
    plan = CustomField.objects.get(key="plan")
    assert plan.choices == ["Basic", "Pro", "Enterprise"] and plan.field_type == "choice"
    assert CustomField.objects.get(key="interests").choices == ["MA", "CRM"]
    assert CustomField.objects.get(key="met_on").required
    assert CustomField.objects.get(key="note").help_text == "Shown under the field"
    entry = AuditLog.objects.get(action="create", object_type="contacts.customfield", object_id=str(plan.pk))
    assert entry.actor == admin_user and entry.changes["choices"] == [None, ["Basic", "Pro", "Enterprise"]]
    listing = logged_in.get(reverse("contacts:field_list")).content.decode()
    for key, _kind, _c in cases:
        assert f"Label {key}" in listing and f"<code>{key}</code>" in listing
    assert "Multiple choice" in listing and "Enterprise" in listing


@pytest.mark.django_db
@pytest.mark.parametrize("values,field,message", [
    ({"field_type": "choice", "choices": ""}, "choices", "A choice field needs at least one choice."),
    ({"field_type": "multi_choice", "choices": "A\nA"}, "choices", "Choices must be different from each other."),
    ({"field_type": "text", "choices": "A\nB"}, "choices", "Only choice fields have choices."),
    ({"key": "Budget"}, "key", "Use lower-case letters"),
    ({"key": "my-budget"}, "key", "Use lower-case letters"),
    ({"key": "2026budget"}, "key", "Use lower-case letters"),
    ({"key": ""}, "key", "This field is required."),
    ({"label": ""}, "label", "This field is required."),
    ({"field_type": "colour"}, "field_type", "Select a valid choice."),
])
def test_custom_field_definitions_are_validated(logged_in, values, field, message):
    response = _field(logged_in, **values)
    assert response.status_code == 400
    assert any(e.startswith(message) for e in _errors(response, field)), _errors(response, field)
    assert not CustomField.objects.exists()


@pytest.mark.django_db
def test_custom_field_key_is_unique_per_target(logged_in):
    assert _field(logged_in, key="budget").status_code == 302
    clash = _field(logged_in, key="budget", label="Again")
    assert clash.status_code == 400
    assert _errors(clash, "key") == ["Another field on the same records already has the key budget."]
    assert _field(logged_in, key="budget", target="company").status_code == 302
    assert CustomField.objects.filter(key="budget").count() == 2


@pytest.mark.django_db
def test_edit_custom_field_is_audited_and_keeps_key_and_target(logged_in, admin_user):
    definition = CustomField.objects.create(key="plan", label="Plan", field_type="choice", choices=["A", "B"])
    page = logged_in.get(reverse("contacts:field_edit", args=[definition.pk])).content.decode()
    assert "A\nB</textarea>" in page and 'name="key"' in page and "disabled" in page
    response = logged_in.post(reverse("contacts:field_edit", args=[definition.pk]), {
        "target": "company", "key": "renamed", "label": "Plan name", "field_type": "choice", "choices": "A\nB\nC",
        "required": "on", "help_text": "Contract plan", "position": "3",
    })
    assert response.status_code == 302
    definition.refresh_from_db()
    assert (definition.key, definition.target) == ("plan", "contact")  # fixed once created
    assert definition.label == "Plan name" and definition.choices == ["A", "B", "C"] and definition.required
    entry = AuditLog.objects.get(action="update", object_type="contacts.customfield")
    assert entry.actor == admin_user
    assert entry.changes["label"] == ["Plan", "Plan name"] and entry.changes["choices"] == [["A", "B"], ["A", "B", "C"]]
    assert set(entry.changes) == {"label", "choices", "required", "help_text", "position"}
    # Saving without changes writes no audit entry.
    logged_in.post(reverse("contacts:field_edit", args=[definition.pk]), {
        "label": "Plan name", "field_type": "choice", "choices": "A\nB\nC", "required": "on",
        "help_text": "Contract plan", "position": "3",
    })
    assert AuditLog.objects.filter(action="update", object_type="contacts.customfield").count() == 1


@pytest.mark.django_db
def test_topics_list_create_edit_audited(logged_in, admin_user):
    page = logged_in.get(reverse("contacts:topic_list"))
    assert page.status_code == 200
    response = logged_in.post(reverse("contacts:topic_list"), {
        "key": "seminars", "name": "セミナー案内", "description": "Invitations", "requires_opt_in": "on",
    })
    assert response.status_code == 302
    topic = SubscriptionTopic.objects.get(key="seminars")
    assert topic.requires_opt_in and topic.name == "セミナー案内"
    assert AuditLog.objects.filter(action="create", object_type="contacts.subscriptiontopic", actor=admin_user).exists()
    listing = logged_in.get(reverse("contacts:topic_list")).content.decode()
    assert "セミナー案内" in listing and reverse("contacts:topic_edit", args=[topic.pk]) in listing

    bad_key = logged_in.post(reverse("contacts:topic_list"), {"key": "Bad Key", "name": "x"})
    assert bad_key.status_code == 400 and _errors(bad_key, "key")
    duplicate = logged_in.post(reverse("contacts:topic_list"), {"key": "seminars", "name": "again"})
    assert duplicate.status_code == 400 and _errors(duplicate, "key")
    assert SubscriptionTopic.objects.count() == 1

    assert logged_in.get(reverse("contacts:topic_edit", args=[topic.pk])).status_code == 200
    response = logged_in.post(reverse("contacts:topic_edit", args=[topic.pk]), {
        "key": "events", "name": "イベント案内", "description": "Invitations",
    })
    assert response.status_code == 302
    topic.refresh_from_db()
    assert (topic.key, topic.name, topic.requires_opt_in) == ("events", "イベント案内", False)
    entry = AuditLog.objects.get(action="update", object_type="contacts.subscriptiontopic")
    assert entry.changes == {"key": ["seminars", "events"], "name": ["セミナー案内", "イベント案内"],
                             "requires_opt_in": [True, False]}


@pytest.mark.django_db
@pytest.mark.parametrize("payload", XSS)
def test_settings_pages_escape_definitions(logged_in, payload):
    definition = CustomField.objects.create(key="k", label=payload, help_text=payload, field_type="choice",
                                            choices=[payload])
    topic = SubscriptionTopic.objects.create(key="t", name=payload, description=payload)
    for url in (reverse("contacts:field_list"), reverse("contacts:field_edit", args=[definition.pk]),
                reverse("contacts:topic_list"), reverse("contacts:topic_edit", args=[topic.pk]),
                reverse("contacts:create")):
        content = logged_in.get(url).content.decode()
        assert payload not in content, url
        assert html.escape(payload) in content or html.escape(payload, quote=False) in content, url
