from django.urls import path

from . import views

app_name = "handoff"
urlpatterns = [
    path("settings/handoff/", views.settings_page, name="settings"),
    path("settings/handoff/routes/<int:pk>/delete", views.route_delete, name="route_delete"),
    path("settings/handoff/webhooks/<int:pk>/toggle", views.webhook_toggle, name="webhook_toggle"),
    path("settings/handoff/webhooks/<int:pk>/test", views.webhook_test, name="webhook_test"),
    path("settings/handoff/deliveries/<int:pk>/retry", views.delivery_retry, name="delivery_retry"),
]
