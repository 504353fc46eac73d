from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.utils.translation import gettext_lazy as _

from .models import User
from .roles import SCOPE_LABELS, Role


class LoginForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "locked": _("Too many failed attempts. Try again in %(minutes)s minutes."),
    }


class SecondFactorForm(forms.Form):
    code = forms.CharField(
        label=_("Code"), max_length=40, strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
        help_text=_("The 6-digit code from your authenticator app, or a recovery code."),
    )


class UserCreateForm(forms.ModelForm):
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput, min_length=10)

    class Meta:
        model = User
        fields = ["username", "last_name", "first_name", "email", "role", "language"]

    def save(self, commit=True):
        user = super().save(commit=False)
        user.set_password(self.cleaned_data["password"])
        if commit:
            user.save()
        return user


class UserEditForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["last_name", "first_name", "email", "role", "language", "is_active", "two_factor_required"]


class PreferencesForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["language"]


class ApiKeyForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=100)
    user = forms.ModelChoiceField(label=_("Acts as"), queryset=User.objects.filter(is_active=True))
    scopes = forms.MultipleChoiceField(
        label=_("Scopes"), choices=list(SCOPE_LABELS.items()), widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].help_text = _("The key can never do more than this user's role allows.")


ROLE_HELP = {
    Role.ADMIN: _("Everything, including users, API keys and settings."),
    Role.MARKETER: _("Contacts, companies, lists and imports."),
    Role.SALES: _("Sees contacts and hot leads; edits the contacts they own."),
    Role.VIEWER: _("Reads everything, changes nothing."),
}
