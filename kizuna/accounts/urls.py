from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("login/verify/", views.login_verify, name="login_verify"),
    path("account/two-factor/", views.two_factor, name="two_factor"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("language/", views.set_language, name="language"),
    path("settings/users/", views.user_list, name="user_list"),
    path("settings/users/new/", views.user_create, name="user_create"),
    path("settings/users/<int:pk>/", views.user_edit, name="user_edit"),
    path("settings/users/<int:pk>/two-factor/reset/", views.two_factor_reset, name="two_factor_reset"),
    path("settings/api-keys/", views.apikey_list, name="apikey_list"),
    path("settings/api-keys/<int:pk>/revoke/", views.apikey_revoke, name="apikey_revoke"),
    path("settings/audit/", views.audit_log, name="audit_log"),
]
