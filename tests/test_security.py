"""Security review, part 1: who may reach what, CSRF, security headers, open redirects,
injection through sort and filter parameters, template injection and path traversal.

The authorisation matrix walks the URLconf: every page states its capability through
`capability_required`, and its expected answer for each role is computed from
kizuna/accounts/roles.py, so a page added later is covered without touching this file — and a
page without a capability fails here until it is gated or listed as public below.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from kizuna.accounts.roles import Role, role_can

pytestmark = pytest.mark.django_db

ROLES = [r.value for r in Role]

# Pages anyone may reach, on purpose (name → why).
PUBLIC = {
    "accounts:login": "the login form",
    "accounts:login_verify": "the second step of a login (needs the first step's session)",
    "accounts:logout": "logging out",
    "accounts:language": "switching the language of the login page",
    "web:health": "load balancers", "web:healthz": "liveness probe", "web:readyz": "readiness probe",
    "web:metrics": "Prometheus, by token or address",
    "messaging:open": "open pixel (signed token)", "messaging:click": "click redirect (signed token)",
    "messaging:unsubscribe": "unsubscribe page (signed token)",
    "landing:public": "published landing pages",
    "privacy:tracking": "the public page about the tracker",
    "assets:download": "a personal download link (signed, expiring token)",
    "assets:public_download": "a public asset's link (its random key; answers only while the asset is public)",
    "capture:hosted": "hosted form pages", "capture:embed": "the JS embed's form, for the sites allowed (CORS)",
    "capture:submit": "form posts from any site (signed form token, allowed sites)",
    "capture:thanks": "a form's thank-you page", "capture:confirm": "double opt-in confirmation (signed link)",
    "playbooks:site_home": "the demo website: a stand-in for a customer's public, tracked site (fixed copy only)",
    "playbooks:site_page": "the demo website's pages (fixed copy; unknown paths are 404)",
}
# Views whose check is inside the view, not on the URL's callback (name → capability).
INNER = {"contacts:import_new": "contacts.import", "segments:export": "contacts.export"}
# csrf_exempt on purpose (prefix → why): everything else must refuse a POST without a token.
CSRF_EXEMPT = {
    "messaging:unsubscribe": "RFC 8058 one-click unsubscribe; the signed token is the credential",
    "messaging:anymail:": "ESP webhooks, authenticated by KIZUNA_WEBHOOK_SECRET",
    "api:": "the API: bearer keys, or the session with ninja's own CSRF check (tested below)",
    "contacts:import_new": "wraps a csrf_protect view, so the upload size limit runs first (tested below)",
    "assets:create": "wraps a csrf_protect view, so uploads stream to disk under the size limit first"
                     " (tested in test_assets_security)",
    "assets:edit": "the same, for replacing an asset's file (tested in test_assets_security)",
    "capture:submit": "posted from other sites: a signed form token and the allowed-sites check instead",
    "capture:confirm": "double opt-in confirmation; the signed link is the credential",
}


def _walk(patterns, prefix="", namespace=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}:{p.namespace}".strip(":") if p.namespace else namespace
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            name = f"{namespace}:{p.name}" if namespace else (p.name or "")
            yield prefix + str(p.pattern), name, p.callback


def _path(route: str) -> str | None:
    """A concrete path for a route: ids that do not exist (a 404 still shows the gate was passed)."""
    if route.startswith("^") or "(" in route:
        return None
    path = re.sub(r"<int:\w+>", "999999", route)
    path = re.sub(r"<(?:str|slug|path):(\w+)>", lambda m: "x" + m.group(1), path)
    path = path.replace("<token>", "x")
    return "/" + path


def _capability(view) -> str | None:
    while view is not None:
        capability = getattr(view, "capability", None)
        if capability:
            return capability
        view = getattr(view, "__wrapped__", None)
    return None


def _ui_pages():
    for route, name, view in _walk(get_resolver().url_patterns):
        if name.startswith(("api:", "messaging:anymail:")):
            continue
        path = _path(route)
        if path is None:
            continue
        yield name, path, INNER.get(name) or _capability(view)


def test_every_page_is_gated_or_declared_public():
    ungated = [name for name, _path, capability in _ui_pages() if capability is None and name not in PUBLIC]
    assert ungated == [], f"pages without capability_required and not listed as public: {ungated}"


def _client_for(role: str | None, make_user) -> Client:
    client = Client(raise_request_exception=False)
    if role:
        client.force_login(make_user(role, username=f"m-{role}"))
    return client


def _get_or_post(client: Client, path: str):
    response = client.get(path)
    if response.status_code == 405:
        response = client.post(path, {})
    return response


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Argon2's deliberate cost is not what these tests are about."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_authorisation_matrix_every_page_every_role(make_user, fast_passwords):
    """Anonymous → the login page; every role without the capability → 403; the least privileged
    role with it → through the gate (200, a redirect elsewhere than login, or 404 for the made-up
    id; the roles above it pass the same `can` check, so rendering the page again for each of
    them would only cost time)."""
    pages = [(n, p, c) for n, p, c in _ui_pages() if c is not None]
    assert len(pages) > 60
    clients = {role: _client_for(role, make_user) for role in [None, *ROLES]}
    least_first = [Role.VIEWER, Role.SALES, Role.MARKETER, Role.ADMIN]
    wrong = []
    for name, path, capability in pages:
        allowed = [r.value for r in least_first if role_can(r, capability)]
        for role, client in clients.items():
            if role in allowed[1:]:
                continue
            response = _get_or_post(client, path)
            status, location = response.status_code, response.get("Location", "")
            if role is None:
                ok = status == 302 and location.startswith("/login/")
            elif role_can(role, capability):
                ok = status not in (401, 403) and not location.startswith("/login/")
            else:
                ok = status == 403
            if not ok:
                wrong.append(f"{name} {path} as {role or 'anonymous'} (needs {capability}): {status} {location}")
    assert wrong == []


def test_public_pages_need_no_login():
    client = Client()
    for path in ["/login/", "/healthz", "/privacy/tracking", "/e/o/x-y.gif"]:
        assert client.get(path).status_code in (200, 404), path


class _Forms(HTMLParser):
    def __init__(self):
        super().__init__()
        self.posts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "").lower() == "post":
            self.posts.append(a.get("action") or "")


def test_every_state_changing_view_refuses_a_post_without_csrf_token(make_user, fast_passwords):
    """An admin's browser, with a real session, tricked into posting from another site."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("admin", username="csrf-admin"))
    refused, checked = [], 0
    for route, name, _view in _walk(get_resolver().url_patterns):
        if any(name == p or (p.endswith(":") and name.startswith(p)) for p in CSRF_EXEMPT):
            continue
        path = _path(route)
        if path is None:
            continue
        response = client.post(path, {"name": "csrf", "action": "delete"})
        checked += 1
        if response.status_code != 403 or b"CSRF" not in response.content:
            refused.append(f"{name} {path}: {response.status_code}")
    assert checked > 80
    assert refused == []


def test_upload_and_api_check_csrf_themselves(make_user, fast_passwords):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("admin", username="csrf-admin2"))
    upload = client.post("/imports/new/", {"kind": "other"})
    assert upload.status_code == 403 and b"CSRF" in upload.content
    api = client.post("/api/v1/contacts", {"email": "csrf@example.jp"}, content_type="application/json")
    assert api.status_code == 403 and api.json()["error"]["code"] == "csrf_failed"
    from kizuna.contacts.models import Contact

    assert not Contact.objects.filter(email="csrf@example.jp").exists()


SECURITY_HEADERS = {
    "X-Frame-Options": {"DENY"},
    "X-Content-Type-Options": {"nosniff"},
    "Referrer-Policy": {"same-origin", "no-referrer"},  # no-referrer: the pages reached from sent mail
    "Cross-Origin-Opener-Policy": {"same-origin"},
}


def test_security_headers_and_csp_on_every_page(make_user, fast_passwords):
    client = _client_for("admin", make_user)
    anonymous = Client()
    seen = 0
    for name, path, capability in _ui_pages():
        response = (client if capability else anonymous).get(path)
        if response.status_code in (302, 404, 405):
            continue
        seen += 1
        for header, value in SECURITY_HEADERS.items():
            assert response.get(header) in value, f"{name}: {header}={response.get(header)}"
        csp = response.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp, name
        script = re.search(r"script-src ([^;]*)", csp).group(1)
        assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, name
        assert response.get("X-Request-ID"), name
    assert seen > 40


def test_session_and_csrf_cookies_are_httponly_and_samesite(admin_user, client):
    from tests.conftest import PASSWORD

    response = client.post("/login/", {"username": "admin", "password": PASSWORD})
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


# --- open redirects ------------------------------------------------------------------------

REDIRECTS = ["https://evil.example/", "//evil.example/", "/\\evil.example/", "\\\\evil.example",
             "javascript:alert(1)", "https:evil.example", " //evil.example", "http://127.0.0.1.evil.example/"]


@pytest.mark.parametrize("target", REDIRECTS)
def test_login_and_language_never_redirect_off_site(client, admin_user, target):
    from tests.conftest import PASSWORD

    response = client.post("/login/", {"username": "admin", "password": PASSWORD, "next": target})
    assert response.status_code == 302
    assert response["Location"] in ("/", "/accounts/profile/") or response["Location"].startswith("/") \
        and not response["Location"].startswith(("//", "/\\")), response["Location"]
    response = client.post("/language/", {"language": "ja", "next": target})
    assert response["Location"] == "/"


def test_click_redirects_only_to_the_links_of_the_message(db):
    """A click token names a message and a link position: only URLs of that sent version, or a
    URL signed for that very token, are ever redirected to."""
    from kizuna.messaging import tokens
    from tests.test_security_xss import sent_message

    message, version = sent_message("https://example.co.jp/pricing")
    token = tokens.make(message.pk)
    client = Client()
    assert client.get(f"/e/c/{token}/0")["Location"] == "https://example.co.jp/pricing"
    for forged in [f"/e/c/{token}/1", f"/e/c/{token}/-1", f"/e/c/{token}/99999999999999999999",
                   f"/e/c/{token[:-1]}A/0", f"/e/c/{tokens.make(message.pk + 1)}/0", f"/e/c/{token}/0x1"]:
        assert client.get(forged).status_code == 404, forged
    good = f"https://example.co.jp/case?{message.pk}"
    mac = tokens.sign_url(token, good)
    assert client.get(f"/e/c/{token}/x", {"u": good, "h": mac})["Location"] == good
    for url, h in [("https://evil.example/", mac), (good + "&x=1", mac), ("javascript:alert(1)",
                   tokens.sign_url(token, "javascript:alert(1)")), (good, ""), (good, mac[:-1] + "A")]:
        assert client.get(f"/e/c/{token}/x", {"u": url, "h": h}).status_code == 404, url
    other = tokens.make(message.pk + 1)
    assert client.get(f"/e/c/{other}/x", {"u": good, "h": mac}).status_code == 404


# --- injection through parameters ----------------------------------------------------------

INJECTIONS = ["' OR '1'='1", "1 UNION SELECT password FROM accounts_user--", "9" * 30, "-1 pk__gt=0\x00"]
PARAMS = ["sort", "order", "o", "page", "cursor", "q", "model", "band", "try", "contact", "version", "segment",
          "status", "days", "type", "known", "company", "source", "bots", "activity_before", "preset", "tag",
          "stage", "part", "limit", "edit_fit", "edit_engagement", "variant", "lang"]


def test_sort_and_filter_parameters_never_reach_sql(make_user, fast_passwords):
    """Every GET page with hostile values in every parameter Kizuna reads: an answer, never a 500,
    and the users table intact (a UNION or stacked query would show or break it)."""
    from kizuna.accounts.models import User
    from kizuna.contacts import services

    services.create_contact(None, {"email": "a@example.jp", "family_name": "山田"})
    client = _client_for("admin", make_user)
    errors = []
    for name, path, capability in _ui_pages():
        if capability is None or name in ("accounts:logout",):
            continue
        if client.get(path).status_code != 200:
            continue
        for value in INJECTIONS:
            response = client.get(path, {p: value for p in PARAMS})
            if response.status_code >= 500:
                errors.append(f"{name} {value!r}: {response.status_code}")
            elif b"pbkdf2_sha256$" in response.content or b"argon2$" in response.content:
                errors.append(f"{name} {value!r}: password hashes in the page")
    assert errors == []
    assert User.objects.count() == 1


def test_api_sort_and_filters_are_allow_listed(make_user, api_token):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(make_user('admin'), ['read'])}"}
    client = Client(raise_request_exception=False)
    for value in INJECTIONS:
        response = client.get("/api/v1/contacts", {"sort": value}, **headers)
        assert response.status_code in (400, 422), value
        for param in ("q", "email", "company", "owner", "list", "tag"):
            assert client.get("/api/v1/contacts", {param: value}, **headers).status_code in (200, 400, 422), \
                (param, value)
    assert client.get("/api/v1/contacts", {"sort": "email); DELETE"}, **headers).json()["error"]["details"][0][
        "path"] == "sort"


SEGMENT_PAYLOADS = [
    {"field": "email", "op": "contains", "value": "' OR 1=1 --"},
    {"field": "family_name", "op": "equals", "value": "x'); DROP TABLE contacts_contact; --"},
    {"field": "custom.x__contains", "op": "equals", "value": "1"},
    {"field": "custom.\"); DROP", "op": "equals", "value": "1"},
    {"field": "email) OR (1=1", "op": "equals", "value": "1"},
    {"field": "email", "op": "regex", "value": ".*"},
    {"field": "email", "op": "equals", "value": {"$gt": ""}},
    {"field": "email", "op": "contains", "value": "a\x00b"},  # PostgreSQL text cannot hold NUL
    {"event": "Page\x00", "where": [{"field": "path", "op": "contains", "value": "/x\x00"}]},
]


def test_segment_filters_refuse_or_parameterise_hostile_input(make_user, api_token):
    from kizuna.contacts import services
    from kizuna.contacts.models import Contact

    services.create_contact(None, {"email": "seg@example.jp"})
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_token(make_user('admin'), ['read', 'write'])}"}
    for condition in SEGMENT_PAYLOADS:
        response = Client(raise_request_exception=False).post(
            "/api/v1/segments/count", {"filter": {"all": [condition]}}, content_type="application/json", **headers)
        assert response.status_code in (200, 400, 422), (condition, response.content)
        if response.status_code == 200:
            assert response.json()["count"] == 0, condition  # a literal, compared as text: it matches nobody
        else:
            assert response.json()["error"]["details"], response.content
    assert Contact.objects.count() == 1


# --- template injection ---------------------------------------------------------------------

SSTI = [
    "{{ settings.SECRET_KEY }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ contact.__class__.__init__.__globals__ }}",
    "{{ contact|attr('__class__') }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{% import 'os' as os %}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{{ request.environ }}",
    "{{ config.items() }}",
    "{{ (contact.items|list)[0].__self__ }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ contact['__class__'] }}",
    "{{ ('a'|map(attribute='__class__')|list) }}",
    "{% set x = namespace() %}{{ x.__init__.__globals__ }}",
    "{{ 'x' * 100000000 }}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ '%99999999d'|format(1) }}",
    "{% load log %}{% get_admin_log 10 as log %}",
    "{% debug %}",
]


@pytest.mark.parametrize("payload", SSTI)
def test_email_templates_cannot_reach_python_internals(payload, settings):
    """A marketer-authored template is untrusted code: refused when saved, or rendered harmlessly
    (never the secret key, a class, a module, or a worker-stalling computation)."""
    from jinja2.exceptions import SecurityError

    from kizuna.messaging import rendering

    html = f"<p>{payload}</p>"
    try:
        rendering.validate("Subject", html, "", known_variables=rendering.sample_context())
    except rendering.TemplateProblem:
        return  # refused when saved, with the reason shown to the marketer
    try:
        out = rendering.render(rendering.compile_template("Subject", html, ""), rendering.sample_context())
    except SecurityError:
        return  # refused when sent: the message fails with the reason, nothing leaks
    text = f"{out.subject}{out.html}{out.text}"
    assert settings.SECRET_KEY not in text
    for leak in ("<class", "module", "function", "subprocess", "uid=", "environ", "<built-in"):
        assert leak not in text, (payload, text[:300])
    assert len(text) < 50_000


def test_template_preview_refuses_injection_from_the_editor(logged_in, settings):
    response = logged_in.post("/email/templates/preview", {
        "subject": "{{ settings.SECRET_KEY }}", "html": "<p>{{ ''.__class__.__mro__ }}</p>", "text": "",
        "kind": "marketing"})
    assert response.status_code < 500
    assert settings.SECRET_KEY.encode() not in response.content
    assert b"<class" not in response.content


# --- path traversal ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../../../etc/passwd.csv", "..\\..\\windows\\win.ini.csv", "/etc/cron.d/x.csv",
                                  "a/../../b.csv", "名簿\x00.csv.php", "....//....//x.csv"])
def test_uploaded_file_names_never_choose_the_storage_path(logged_in, name, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from kizuna.contacts.models import ImportJob

    upload = SimpleUploadedFile(name, b"email\nx@example.jp\n")
    response = logged_in.post("/imports/new/", {"kind": "other", "file": upload})
    assert response.status_code in (302, 400)
    for job in ImportJob.objects.all():
        stored = job.file.path
        assert stored.startswith(str(settings.MEDIA_ROOT) + "/imports/"), stored
        assert ".." not in job.file.name and "/" not in job.original_name and "\\" not in job.original_name \
            or job.original_name == name.rsplit("/", 1)[-1]
        job.file.delete(save=False)


def test_export_file_names_cannot_split_headers(logged_in):
    from kizuna.contacts import services

    contact = services.create_contact(None, {"email": "h@example.jp", "family_name": 'x"\r\nSet-Cookie: a=b'})
    response = logged_in.get(f"/contacts/{contact.pk}/export.json")
    assert response.status_code == 200
    assert "Set-Cookie" not in response["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="kizuna-contact-\d+-\d{8}\.json"', response["Content-Disposition"])
