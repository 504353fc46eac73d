"""Login, language, users, API keys and the audit log."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone, translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import audit, ratelimit
from .forms import ROLE_HELP, ApiKeyForm, LoginForm, UserCreateForm, UserEditForm
from .models import ApiKey, AuditLog, User
from .permissions import capability_required


def client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "")


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")
        if ratelimit.is_locked(username, client_ip(request)):
            form = self.get_form()
            minutes = max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)
            form.add_error(None, LoginForm.error_messages["locked"] % {"minutes": minutes})
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        ratelimit.record_failure(self.request.POST.get("username", ""), client_ip(self.request))
        return super().form_invalid(form)

    def form_valid(self, form):
        ratelimit.reset(form.get_user().get_username(), client_ip(self.request))
        return super().form_valid(form)


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
