"""Security review, part 2: brute force on login, two-factor login, secrets in logs, SSRF."""

from __future__ import annotations

import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyotp
import pytest
import time_machine
from django.test import Client, override_settings
from django.utils import timezone

from kizuna.accounts import twofactor
from kizuna.accounts.models import AuditLog, User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _login(client, username, password=PASSWORD, ip="198.51.100.7", **extra):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip, **extra)


# --- brute force --------------------------------------------------------------------------------

@override_settings(LOGIN_MAX_FAILURES=3)
def test_user_lockout_is_audited_and_names_no_password(make_user):
    make_user("admin", username="aoki")
    client = Client()
    for n in range(3):
        assert _login(client, "aoki", f"guess-{n}-hunter2").status_code == 200
    locked = _login(client, "aoki")  # the right password, refused while locked
    assert locked.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes." in locked.content.decode()
    entries = AuditLog.objects.filter(action__in=["login_failed", "login_locked"]).order_by("id")
    assert [e.action for e in entries] == ["login_failed"] * 3 + ["login_locked"]
    assert all(e.changes["ip"] == "198.51.100.7" and e.object_label == "aoki" for e in entries)
    assert not any("hunter2" in str(e.changes) for e in entries)
    with time_machine.travel(timezone.now() + timezone.timedelta(minutes=16)):
        from django.core.cache import cache

        cache.clear()  # the file cache's expiry follows the real clock; the window is what matters here
        assert _login(client, "aoki").status_code == 302


@override_settings(LOGIN_MAX_FAILURES=2)
def test_address_lockout_spans_usernames_and_a_good_login_does_not_reset_it(make_user):
    """Password spraying from one address: 4 × the limit across any usernames locks the address,
    and logging in to an account of one's own in between does not clear the count."""
    make_user("viewer", username="mine")
    client = Client()
    for n in range(8):
        _login(client, f"victim{n}", "Winter2026!")
        if n == 3:
            assert _login(client, "mine").status_code == 302
            client.logout()
    assert _login(client, "victim9", "Winter2026!").status_code == 429
    assert _login(Client(), "victim9", "x", ip="198.51.100.8").status_code == 200  # another address


@override_settings(LOGIN_MAX_FAILURES=2, KIZUNA_PROXY_COUNT=1)
def test_lockout_behind_a_proxy_counts_the_client_not_the_proxy(make_user):
    make_user("viewer", username="desk")
    client = Client()
    for n in range(8):
        _login(client, f"x{n}", "bad", ip="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.50")
    assert _login(client, "desk", ip="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.51").status_code == 302


# --- two-factor login ---------------------------------------------------------------------------

def _enrol(client, user) -> tuple[pyotp.TOTP, list[str]]:
    client.force_login(user)
    page = client.post("/account/two-factor/", {"action": "start"})
    assert page.status_code == 200 and b"data:image/svg+xml" in page.content
    device = twofactor.device_of(user)
    totp = pyotp.TOTP(twofactor._secret(device))
    assert client.post("/account/two-factor/", {"action": "confirm", "code": "000000"}).status_code == 400
    done = client.post("/account/two-factor/", {"action": "confirm", "code": totp.now()})
    assert done.status_code == 200 and "Two-factor login is on." in done.content.decode()
    codes = done.context["codes"]
    assert len(codes) == 10 and all(len(c) == 19 for c in codes)
    client.logout()
    return totp, codes


def test_two_factor_enrolment_login_replay_and_recovery(make_user):
    user = make_user("admin", username="kato")
    client = Client()
    totp, codes = _enrol(client, user)
    assert not any(codes[0].replace("-", "") in r.code_hash for r in twofactor.device_of(user).recovery_codes.all())
    traveller = time_machine.travel(timezone.now() + timezone.timedelta(seconds=31), tick=True)
    traveller.start()  # past the enrolment's code: each code is accepted once
    step = _login(client, "kato")
    assert step.status_code == 302 and step["Location"] == "/login/verify/"
    assert client.get("/contacts/").status_code == 302  # not logged in between the two steps
    wrong = client.post("/login/verify/", {"code": "123456"})
    assert wrong.status_code == 400 and "That code is not right" in wrong.content.decode()
    code = totp.now()
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in code[:3]) + " " + code[3:]  # typed with an IME
    assert client.post("/login/verify/", {"code": full_width})["Location"] == "/"
    assert client.get("/contacts/").status_code == 200
    login = AuditLog.objects.filter(action="login").latest("id")
    assert login.changes["second_factor"] == "totp"
    client.logout()
    _login(client, "kato")
    assert client.post("/login/verify/", {"code": code}).status_code == 400  # a code works once
    assert client.post("/login/verify/", {"code": codes[0].upper()})["Location"] == "/"
    client.logout()
    _login(client, "kato")
    assert client.post("/login/verify/", {"code": codes[0]}).status_code == 400  # so does a recovery code
    assert twofactor.recovery_codes_left(twofactor.device_of(user)) == 9
    traveller.stop()


@override_settings(LOGIN_MAX_FAILURES=3)
def test_second_factor_guessing_is_throttled_like_passwords(make_user):
    user = make_user("admin", username="sato")
    client = Client()
    totp, _codes = _enrol(client, user)
    _login(client, "sato")  # (the enrolment's code is spent: any code now is a wrong guess or refused)
    for n in range(3):
        assert client.post("/login/verify/", {"code": f"00000{n}"}).status_code == 400
    assert client.post("/login/verify/", {"code": totp.now()}).status_code == 429
    assert AuditLog.objects.filter(action="login_locked").exists()
    assert client.get("/contacts/").status_code == 302


def test_pending_second_step_expires(make_user):
    user = make_user("admin", username="ito")
    client = Client()
    totp, _codes = _enrol(client, user)
    _login(client, "ito")
    with time_machine.travel(timezone.now() + timezone.timedelta(minutes=6)):
        response = client.post("/login/verify/", {"code": totp.now()})
    assert response.status_code == 302 and response["Location"] == "/login/"


@override_settings(KIZUNA_2FA_REQUIRED_FOR_ADMINS=True)
def test_required_two_factor_allows_only_the_setup_page_until_enrolled(make_user):
    admin = make_user("admin", username="must")
    viewer = make_user("viewer", username="free")
    client = Client()
    client.force_login(admin)
    assert client.get("/contacts/")["Location"] == "/account/two-factor/"
    assert client.get("/api/v1/contacts").json()["error"]["code"] == "two_factor_required"
    assert client.get("/account/two-factor/").status_code == 200
    client.force_login(viewer)
    assert client.get("/contacts/").status_code == 200
    viewer.two_factor_required = True  # per user, set by an admin on the user's page
    viewer.save()
    assert client.get("/contacts/").status_code == 302
    client = Client()
    totp, _codes = _enrol(client, admin)
    client.force_login(admin)
    assert client.get("/contacts/").status_code == 200
    refused = client.post("/account/two-factor/", {"action": "disable", "code": totp.now()})
    assert "required for your account" in refused.content.decode() and twofactor.enabled_for(admin)


def test_admin_resets_a_lost_second_factor(make_user):
    admin = make_user("admin", username="boss")
    user = make_user("marketer", username="lost")
    _enrol(Client(), user)
    client = Client()
    client.force_login(admin)
    assert client.post(f"/settings/users/{user.pk}/two-factor/reset/").status_code == 302
    assert not twofactor.enabled_for(user)
    assert AuditLog.objects.filter(action="two_factor_reset", object_id=str(user.pk)).exists()
    assert _login(Client(), "lost").status_code == 302


def test_secret_is_encrypted_at_rest(make_user):
    user = make_user("admin", username="enc")
    device = twofactor.start_enrolment(user)
    plain = twofactor._secret(device)
    assert len(plain) == 32 and plain not in device.secret


# --- secrets never logged -----------------------------------------------------------------------

@pytest.fixture
def console():
    """What Kizuna's own console handler writes (with its filters), whatever pytest captures."""
    handler = next(h for h in logging.getLogger().handlers if any(
        type(f).__name__ == "RedactSecrets" for f in h.filters))
    stream = io.StringIO()
    old = handler.setStream(stream)
    yield stream
    handler.setStream(old)


def test_no_secret_reaches_the_logs(console, make_user, api_token, settings):
    from kizuna.accounts.models import ApiKey
    from kizuna.web.logs import redact

    user = make_user("admin", username="logged")
    token = api_token(user, ["read"])
    bad_token = token[:-4] + "XXXX"
    client = Client(raise_request_exception=False)
    client.post("/login/", {"username": "logged", "password": "my-S3cret-pass!"})
    client.get("/api/v1/contacts", HTTP_AUTHORIZATION=f"Bearer {bad_token}")
    client.get("/api/v1/contacts", HTTP_AUTHORIZATION=f"Bearer {token}")
    client.get("/e/u/1a-AbCdEfGhIjKlMnOpQr")
    log = logging.getLogger("kizuna.test")
    smtp = "smtp://mailer:Sm7p-Pa55word@mail.example.jp:587"
    log.error("cannot connect with %s", smtp)
    log.warning("webhook signing secret whsec_abcdefghijklmnop123 refused; Authorization: Bearer %s", token)
    log.info("headers {'Authorization': 'Basic dXNlcjpwYXNzd29yZA==', 'Cookie': 'sessionid=q1w2e3r4t5y6u7'}")
    log.info("key %s", settings.SECRET_KEY)
    log.info("called with %s", token)
    try:
        raise RuntimeError(f"DKIM failed -----BEGIN PRIVATE KEY-----\nMIIEv{'A' * 40}\n-----END PRIVATE KEY----- "
                           f"for password=hunter22")
    except RuntimeError:
        log.exception("sending failed")
    written = console.getvalue()
    secret = token.split("_", 2)[2]
    for leaked in ["my-S3cret-pass!", secret, bad_token[-20:], "Sm7p-Pa55word", "whsec_abcdefghijklmnop123",
                   "dXNlcjpwYXNzd29yZA==", "q1w2e3r4t5y6u7", settings.SECRET_KEY, "MIIEvAAAA", "hunter22",
                   "AbCdEfGhIjKlMnOpQr"]:
        assert leaked not in written, leaked
    assert "sending failed" in written and "mail.example.jp" in written and token.split("_")[1] in written
    assert redact(f"Bearer {token}").endswith("[redacted]")
    assert ApiKey.objects.count() == 1


@override_settings(KIZUNA_EMAIL_URL="smtp://kizuna:Wr0ng-Smtp-Secret@127.0.0.1:1?timeout=1")
def test_smtp_failures_are_logged_without_the_password(console, db):
    from kizuna.messaging import transports

    config = transports.SmtpConfig.from_url("smtp://kizuna:Wr0ng-Smtp-Secret@127.0.0.1:1?timeout=1")
    with pytest.raises(transports.TemporaryFailure) as failure:
        transports.SmtpConnection(config).open()
    logging.getLogger("kizuna.messaging.outbox").exception("sending failed: %s %s", failure.value, config)
    assert "Wr0ng-Smtp-Secret" not in console.getvalue()
    assert "sending failed" in console.getvalue()


# --- SSRF through webhooks ------------------------------------------------------------------------

BLOCKED = ["http://127.0.0.1/", "http://localhost:8000/", "http://10.1.2.3/", "http://172.16.0.1/",
           "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fe80::1]/",
           "http://[fd00::1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:169.254.169.254]/",
           "http://[64:ff9b::a00:1]/", "http://[2002:7f00:1::]/", "http://0.0.0.0/", "http://100.64.0.1/",
           "http://224.0.0.1/", "http://2130706433/", "http://0x7f.1/", "http://127.1/", "gopher://127.0.0.1/",
           "file:///etc/passwd", "http://user@127.0.0.1/"]


@pytest.mark.parametrize("url", BLOCKED)
def test_webhooks_refuse_internal_targets_when_saved(url, make_user):
    from kizuna.handoff.forms import WebhookForm
    from kizuna.handoff.models import Webhook

    form = WebhookForm({"name": "x", "kind": "json", "url": url, "language": "ja"})
    assert not form.is_valid()
    assert "url" in form.errors
    assert not Webhook.objects.exists()


class _Receiver:
    def __init__(self):
        got = self.got = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:1/internal")
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


def test_checked_again_at_send_time_against_dns_rebinding(receiver, monkeypatch, settings):
    """Saved while the name pointed at a public address; by the time a notice goes out it points
    at 127.0.0.1. The send is refused and nothing reaches the internal receiver."""
    import socket

    from kizuna.handoff import delivery, ssrf
    from kizuna.handoff.models import Webhook

    answers = {"now": "93.184.216.34"}
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host == "hooks.rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers["now"], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://hooks.rebind.example:{receiver.port}/lead"
    ssrf.check_url(url)  # public when saved
    hook = Webhook.objects.create(name="Rebind", kind="json", url=url, secret="s")
    answers["now"] = "127.0.0.1"
    with pytest.raises(delivery.DeliveryError) as refused:
        delivery.post_webhook(hook, 1, {"x": 1})
    assert refused.value.permanent and "loopback" in str(refused.value)
    assert receiver.got == []
    settings.KIZUNA_WEBHOOK_ALLOW_PRIVATE = True  # an internal receiver, allowed on purpose
    assert delivery.post_webhook(hook, 2, {"x": 2}) == 204
    assert len(receiver.got) == 1


def test_redirects_are_not_followed(receiver, settings):
    from kizuna.handoff import delivery
    from kizuna.handoff.models import Webhook

    settings.KIZUNA_WEBHOOK_ALLOW_PRIVATE = True
    hook = Webhook.objects.create(name="R", kind="json", url=f"http://127.0.0.1:{receiver.port}/redirect", secret="s")
    with pytest.raises(delivery.DeliveryError) as failure:
        delivery.post_webhook(hook, 1, {"x": 1})
    assert failure.value.status == 302 and failure.value.permanent and "redirect" in str(failure.value)


def test_public_addresses_pass():
    from kizuna.handoff import ssrf

    ssrf.check_url("https://93.184.216.34/hooks")
    ssrf.check_url("https://[2606:2800:220:1:248:1893:25c8:1946]/hooks")
    assert User.objects.count() == 0
