"""Login, throttling, language choice, API keys, settings pages and the CLI commands."""

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from kizuna.accounts.models import ApiKey, AuditLog, User
from kizuna.accounts.roles import can, can_change_contact
from kizuna.contacts.models import Contact
from tests.conftest import PASSWORD


def _login(client, username, password=PASSWORD):
    return client.post(reverse("accounts:login"), {"username": username, "password": password})


@pytest.mark.django_db
def test_login_and_logout(client, admin_user):
    response = _login(client, "admin")
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    client.post(reverse("accounts:logout"))
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_passwords_are_hashed_with_argon2(admin_user):
    assert admin_user.password.startswith("argon2")


@pytest.mark.django_db
@override_settings(LOGIN_MAX_FAILURES=3)
def test_login_is_throttled_after_failures(client, admin_user):
    for _ in range(3):
        assert _login(client, "admin", "wrong").status_code == 200
    locked = _login(client, "admin")  # even the right password is refused while locked
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.content.decode()
    other = _login(client, "someone-else", "wrong")
    assert other.status_code == 200  # the lock is per username (and per IP at 4x the limit)


@pytest.mark.django_db
def test_language_follows_browser_then_user_choice(client, admin_user):
    client.force_login(admin_user)
    ja = client.get("/", HTTP_ACCEPT_LANGUAGE="ja")
    assert ja.headers["Content-Language"] == "ja"
    client.post(reverse("accounts:language"), {"language": "en", "next": "/"})
    admin_user.refresh_from_db()
    assert admin_user.language == "en"
    en = client.get("/", HTTP_ACCEPT_LANGUAGE="ja")
    assert en.headers["Content-Language"] == "en"


@pytest.mark.django_db
def test_language_switch_refuses_open_redirect(client):
    response = client.post(reverse("accounts:language"), {"language": "ja", "next": "https://evil.example/"})
    assert response["Location"] == "/"


@pytest.mark.django_db
def test_roles_table(users):
    contact = Contact.objects.create(email="x@example.jp", owner=users["sales"])
    other = Contact.objects.create(email="y@example.jp")
    assert can(users["admin"], "users.manage") and not can(users["marketer"], "users.manage")
    assert can(users["marketer"], "contacts.import") and not can(users["sales"], "contacts.import")
    assert can_change_contact(users["sales"], contact) and not can_change_contact(users["sales"], other)
    assert not can_change_contact(users["viewer"], contact)
    assert can(users["viewer"], "contacts.view")


@pytest.mark.django_db
def test_api_key_is_hashed_and_shown_once(users):
    key, token = ApiKey.issue(user=users["admin"], name="CRM sync", scopes=["read"])
    assert token.startswith("kz_") and token not in key.secret_hash
    assert ApiKey.authenticate(token) == key
    assert ApiKey.authenticate(token + "x") is None
    assert ApiKey.authenticate("kz_nope_nope") is None
    users["admin"].is_active = False
    users["admin"].save()
    assert ApiKey.authenticate(token) is None


@pytest.mark.parametrize("role, status", [("admin", 200), ("marketer", 403), ("sales", 403), ("viewer", 403)])
def test_settings_pages_are_for_admins(client, make_user, role, status):
    client.force_login(make_user(role))
    for name in ("accounts:user_list", "accounts:apikey_list", "accounts:audit_log"):
        assert client.get(reverse(name)).status_code == status


def test_admin_creates_user_and_key_with_audit(logged_in):
    response = logged_in.post(reverse("accounts:user_create"), {
        "username": "mika", "last_name": "山本", "first_name": "美香", "email": "mika@example.jp",
        "role": "marketer", "language": "ja", "password": "a-long-passphrase-42",
    })
    assert response.status_code == 302
    mika = User.objects.get(username="mika")
    assert mika.role == "marketer" and mika.check_password("a-long-passphrase-42")
    page = logged_in.post(reverse("accounts:apikey_list"), {"name": "MA sync", "user": mika.pk, "scopes": ["read"]})
    token = page.context["token"]
    assert token.startswith("kz_") and token in page.content.decode()
    assert token not in logged_in.get(reverse("accounts:apikey_list")).content.decode()  # shown once
    key = ApiKey.objects.get(name="MA sync")
    logged_in.post(reverse("accounts:apikey_revoke", args=[key.pk]))
    assert ApiKey.authenticate(token) is None
    actions = set(AuditLog.objects.values_list("object_type", "action"))
    assert {("accounts.user", "create"), ("accounts.apikey", "create"), ("accounts.apikey", "revoke")} <= actions


def test_admin_cannot_demote_self(logged_in, admin_user):
    response = logged_in.post(reverse("accounts:user_edit", args=[admin_user.pk]), {
        "last_name": "", "first_name": "", "email": "", "role": "viewer", "language": "", "is_active": "on"})
    assert response.status_code == 200
    admin_user.refresh_from_db()
    assert admin_user.role == "admin"


@pytest.mark.django_db
def test_createuser_command():
    call_command("createuser", "kenji", role="sales", password="a-long-passphrase-42")
    user = User.objects.get(username="kenji")
    assert user.role == "sales" and user.check_password("a-long-passphrase-42")
    with pytest.raises(Exception, match="already exists"):
        call_command("createuser", "kenji", role="sales", password="a-long-passphrase-42")
    with pytest.raises(Exception, match="too short|too common"):
        call_command("createuser", "weak", password="abc")


@pytest.mark.django_db
def test_demo_prepares_data_and_login(capsys):
    # The simulated visitors (playbooks) have tests of their own: tests/test_simulator.py.
    call_command("demo", contacts=120, no_serve=True, no_simulate=True)
    out = capsys.readouterr().out
    assert "admin / " in out
    password = out.split("admin / ")[1].split()[0]
    assert User.objects.get(username="admin").check_password(password)
    assert Contact.objects.count() == 120
    assert Contact.objects.exclude(company=None).filter(company__domain__isnull=False).exists()
    assert Contact.objects.filter(owner__role="sales").exists()
    from kizuna.segments.models import Segment

    assert Segment.objects.count() == 4 and all(s.computed_at for s in Segment.objects.all())
    call_command("demo", contacts=120, no_serve=True, no_simulate=True)  # a second run keeps data and password
    assert Contact.objects.count() == 120
    assert f"admin / {password}" in capsys.readouterr().out
