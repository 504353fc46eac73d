from django.urls import include, path

from . import public_views, views

app_name = "messaging"
urlpatterns = [
    path("e/o/<str:token>.gif", public_views.open_pixel, name="open"),
    path("e/c/<str:token>/<str:position>", public_views.click, name="click"),
    path("e/u/<str:token>", public_views.unsubscribe, name="unsubscribe"),
    # ESP webhooks (bounces, complaints, deliveries), normalised by django-anymail:
    # /webhooks/anymail/<esp>/tracking/, protected by KIZUNA_WEBHOOK_SECRET as basic auth.
    path("webhooks/anymail/", include("anymail.urls")),
    path("email/templates/", views.template_list, name="template_list"),
    path("email/templates/new", views.template_edit, name="template_create"),
    path("email/templates/<int:pk>/", views.template_edit, name="template_edit"),
    path("email/templates/preview", views.template_live_preview, name="template_live_preview"),
    path("email/templates/<int:pk>/preview", views.template_preview, name="template_preview"),
    path("email/templates/<int:pk>/test", views.template_test_send, name="template_test"),
    path("email/templates/<int:pk>/report", views.template_report, name="template_report"),
    path("email/senders/", views.sender_list, name="sender_list"),
    path("email/senders/new", views.sender_edit, name="sender_create"),
    path("email/senders/<int:pk>/", views.sender_edit, name="sender_edit"),
    path("email/senders/<int:pk>/dns", views.sender_dns, name="sender_dns"),
    path("email/bulk/", views.bulk_list, name="bulk_list"),
    path("email/bulk/new", views.bulk_create, name="bulk_create"),
    path("email/bulk/<int:pk>/", views.bulk_detail, name="bulk_detail"),
    path("email/bulk/<int:pk>/progress", views.bulk_progress, name="bulk_progress"),
    path("email/bulk/<int:pk>/<str:action>", views.bulk_action, name="bulk_action"),
    path("email/outbox/", views.outbox_list, name="outbox"),
    path("email/outbox/<int:pk>/", views.message_detail, name="message_detail"),
    path("email/outbox/<int:pk>/body", views.message_body, name="message_body"),
    path("email/suppressions/", views.suppression_list, name="suppressions"),
    path("email/settings/", views.sending_settings, name="settings"),
]
