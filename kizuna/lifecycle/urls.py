from django.urls import path

from . import views

app_name = "lifecycle"
urlpatterns = [
    path("reports/funnel/", views.funnel, name="funnel"),
    path("settings/stages/", views.stage_settings, name="settings"),
    path("settings/stages/rules/<int:pk>/delete", views.rule_delete, name="rule_delete"),
    path("contacts/<int:pk>/stage", views.contact_stage, name="contact_stage"),
]
