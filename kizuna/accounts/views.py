"""Login, language, users, API keys and the audit log."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone, translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from kizuna.events.http import client_ip as _client_ip

from . import audit, ratelimit, twofactor
from .forms import ROLE_HELP, ApiKeyForm, LoginForm, SecondFactorForm, UserCreateForm, UserEditForm
from .models import ApiKey, AuditLog, User
from .permissions import capability_required

PENDING = "kizuna_2fa_pending"  # session key: who passed the password step, waiting for a code
PENDING_SECONDS = 300


def client_ip(request) -> str:
    """The visitor's address, through KIZUNA_PROXY_COUNT trusted proxies: behind a proxy,
    REMOTE_ADDR is the proxy's, and one lockout would shut every user out."""
    return _client_ip(request.META)


def _locked_message() -> str:
    minutes = max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)
    return LoginForm.error_messages["locked"] % {"minutes": minutes}


def _failed(username: str, ip: str, step: str) -> None:
    """Counts a failure and audits it; the attempt that locks the account or address is audited too."""
    locks = ratelimit.record_failure(username, ip)
    user = User.objects.filter(username=username).only("pk").first()
    ids = {"object_type": "accounts.user", "object_id": str(user.pk) if user else "", "label": username[:150]}
    audit.record(None, "login_failed", changes={"ip": ip, "step": step}, **ids)
    if locks:
        audit.record(None, "login_locked", changes={"ip": ip, "minutes": settings.LOGIN_LOCKOUT_SECONDS // 60},
                     **ids)


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        if ratelimit.is_locked(username, client_ip(request)):
            form = self.get_form()
            form.add_error(None, _locked_message())
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        _failed(self.request.POST.get("username", "")[:150], client_ip(self.request), "password")
        return super().form_invalid(form)

    def form_valid(self, form):
        user = form.get_user()
        if twofactor.enabled_for(user):
            # Not logged in yet: the session only remembers who passed the password step.
            self.request.session[PENDING] = {
                "user": user.pk, "backend": user.backend, "next": self.get_success_url(),
                "at": int(timezone.now().timestamp()),
            }
            return redirect("accounts:login_verify")
        ratelimit.reset(user.get_username())
        audit.record(user, "login", user, changes={"ip": client_ip(self.request), "second_factor": ""})
        return super().form_valid(form)


def login_verify(request):
    """The second step of a two-factor login: a code from the app, or a recovery code."""
    pending = request.session.get(PENDING) or {}
    user = User.objects.filter(pk=pending.get("user"), is_active=True).first()
    fresh = timezone.now().timestamp() - pending.get("at", 0) <= PENDING_SECONDS
    device = twofactor.device_of(user) if user is not None else None
    if user is None or not fresh or device is None or not device.confirmed:
        request.session.pop(PENDING, None)
        messages.error(request, _("Your sign-in has expired. Enter your username and password again."))
        return redirect("accounts:login")
    form = SecondFactorForm(request.POST or None)
    ip = client_ip(request)
    status = 200
    if request.method == "POST":
        if ratelimit.is_locked(user.get_username(), ip):
            form.add_error(None, _locked_message())
            status = 429
        elif form.is_valid() and (how := twofactor.check_second_factor(device, form.cleaned_data["code"])):
            request.session.pop(PENDING, None)
            auth_login(request, user, backend=pending["backend"])
            ratelimit.reset(user.get_username())
            audit.record(user, "login", user, changes={"ip": ip, "second_factor": how})
            if how == "recovery":
                messages.warning(request, _("You used a recovery code; %(n)s are left. Make new ones under "
                                            "Two-factor login if you are running out.")
                                 % {"n": twofactor.recovery_codes_left(device)})
            nxt = pending.get("next") or settings.LOGIN_REDIRECT_URL
            if not url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()},
                                                   require_https=request.is_secure()):
                nxt = "/"
            return redirect(nxt)
        else:
            _failed(user.get_username(), ip, "two-factor")
            if not form.has_error("code"):
                form.add_error("code", _("That code is not right. Use the 6-digit code your app shows now, "
                                         "or one of your recovery codes."))
            status = 400
    return render(request, "accounts/login_verify.html", {"form": form}, status=status)


@require_POST
def set_language(request):
    """Switches the UI language; a logged-in user's choice is remembered on their account."""
    lang = request.POST.get("language", "")
    if lang not in dict(translation.trans_real.get_languages()):
        lang = ""
    nxt = request.POST.get("next", "/")
    if not url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}):
        nxt = "/"
    response = HttpResponseRedirect(nxt)
    if request.user.is_authenticated:
        request.user.language = lang
        request.user.save(update_fields=["language"])
    if lang:
        response.set_cookie(settings.LANGUAGE_COOKIE_NAME, lang, max_age=365 * 86400, samesite="Lax")
    else:
        response.delete_cookie(settings.LANGUAGE_COOKIE_NAME)
    return response


@capability_required("users.manage")
def user_list(request):
    users = User.objects.order_by("username")
    return render(request, "accounts/user_list.html", {"users": users, "role_help": ROLE_HELP})


@capability_required("users.manage")
def user_create(request):
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        audit.record(request.user, "create", user, changes={"role": [None, user.role]})
        messages.success(request, _("User %(name)s created.") % {"name": user.username})
        return redirect("accounts:user_list")
    return render(request, "accounts/user_form.html", {"form": form, "role_help": ROLE_HELP})


@capability_required("users.manage")
def user_edit(request, pk: int):
    user = get_object_or_404(User, pk=pk)
    before = {f: getattr(user, f) for f in UserEditForm.Meta.fields}
    form = UserEditForm(request.POST or None, instance=user)
    if request.method == "POST" and form.is_valid():
        if user == request.user and (form.cleaned_data["role"] != "admin" or not form.cleaned_data["is_active"]):
            form.add_error("role", _("You cannot remove your own admin role or deactivate yourself."))
        else:
            user = form.save()
            changes = audit.diff(before, {f: getattr(user, f) for f in UserEditForm.Meta.fields})
            if changes:
                audit.record(request.user, "update", user, changes=changes)
            messages.success(request, _("Saved."))
            return redirect("accounts:user_list")
    return render(request, "accounts/user_form.html", {"form": form, "edited": user, "role_help": ROLE_HELP})


@capability_required("apikeys.manage")
def apikey_list(request):
    form = ApiKeyForm(request.POST or None, initial={"user": request.user, "scopes": ["read"]})
    token = None
    if request.method == "POST" and form.is_valid():
        key, token = ApiKey.issue(
            user=form.cleaned_data["user"], name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"]
        )
        audit.record(request.user, "create", key, changes={"scopes": [None, key.scopes]})
        form = ApiKeyForm(initial={"user": request.user, "scopes": ["read"]})
    keys = ApiKey.objects.select_related("user")
    return render(request, "accounts/apikey_list.html", {"form": form, "keys": keys, "token": token})


@require_POST
@capability_required("apikeys.manage")
def apikey_revoke(request, pk: int):
    key = get_object_or_404(ApiKey, pk=pk, revoked_at__isnull=True)
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit.record(request.user, "revoke", key)
    messages.success(request, _("Key %(name)s revoked.") % {"name": key.name})
    return redirect("accounts:apikey_list")


@capability_required("audit.view")
def audit_log(request):
    entries = AuditLog.objects.select_related("actor")
    object_type = request.GET.get("type", "")
    if object_type:
        entries = entries.filter(object_type=object_type)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    types = AuditLog.objects.order_by().values_list("object_type", flat=True).distinct()
    return render(request, "accounts/audit_log.html", {"page": page, "types": sorted(types), "type": object_type})


@capability_required("account.manage")
def two_factor(request):
    """Setting up, renewing and turning off one's own two-factor login."""
    user = request.user
    device = twofactor.device_of(user)
    form = SecondFactorForm(request.POST or None)
    action = request.POST.get("action", "")
    codes: list[str] | None = None
    if request.method == "POST":
        if action == "start":
            device = twofactor.start_enrolment(user)
            form = SecondFactorForm()
        elif device is None:
            return redirect("accounts:two_factor")
        elif action == "confirm" and not device.confirmed:
            if form.is_valid():
                codes = twofactor.confirm(device, form.cleaned_data["code"])
            if codes is None:
                form.add_error("code", _("That code is not right. Check the time on your phone and type the "
                                         "6-digit code the app shows now."))
            else:
                audit.record(user, "two_factor_on", user)
                messages.success(request, _("Two-factor login is on."))
                form = SecondFactorForm()
        elif action in ("codes", "disable") and device.confirmed:
            if action == "disable" and twofactor.required_for(user):
                form.add_error(None, _("Two-factor login is required for your account; it cannot be turned off."))
            elif form.is_valid() and twofactor.verify_code(device, form.cleaned_data["code"]):
                if action == "codes":
                    codes = twofactor.issue_recovery_codes(device)
                    audit.record(user, "two_factor_codes", user)
                    messages.success(request, _("New recovery codes made; the old ones no longer work."))
                else:
                    twofactor.disable(user)
                    audit.record(user, "two_factor_off", user)
                    messages.success(request, _("Two-factor login is off."))
                    return redirect("accounts:two_factor")
                form = SecondFactorForm()
            else:
                form.add_error("code", _("That code is not right: type the 6-digit code your app shows now."))
    context = {"device": device, "form": form, "codes": codes, "required": twofactor.required_for(user)}
    if device is not None and not device.confirmed:
        uri = twofactor.provisioning_uri(device)
        context.update({"uri": uri, "qr": twofactor.qr_data_uri(uri), "secret": twofactor.secret_for_display(device)})
    elif device is not None:
        context["codes_left"] = twofactor.recovery_codes_left(device)
    return render(request, "accounts/two_factor.html", context, status=400 if form.errors else 200)


@require_POST
@capability_required("users.manage")
def two_factor_reset(request, pk: int):
    """For a user who lost both phone and recovery codes: they enrol again at their next login."""
    user = get_object_or_404(User, pk=pk)
    twofactor.disable(user)
    audit.record(request.user, "two_factor_reset", user)
    messages.success(request, _("Two-factor login of %(name)s was reset.") % {"name": user.username})
    return redirect("accounts:user_edit", pk=user.pk)
