from django.urls import path

from . import views

app_name = "privacy"
urlpatterns = [
    path("settings/privacy/", views.settings_page, name="settings"),
    path("contacts/<int:pk>/export.json", views.contact_export, name="export"),
    path("contacts/<int:pk>/erase/", views.contact_erase, name="erase"),
    path("privacy/tracking", views.tracking_disclosure, name="tracking"),
]
