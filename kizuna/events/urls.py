from django.urls import path

from . import views

app_name = "events"
urlpatterns = [
    path("visitors/", views.visitor_list, name="visitor_list"),
    path("visitors/companies/", views.visiting_companies, name="companies"),
    # path: a browser id is the visitor's to choose and may hold "/" (reverse() must not fail on it).
    path("visitors/<path:anonymous_id>/", views.visitor_detail, name="visitor_detail"),
    path("events/live/", views.live_events, name="live"),
    path("events/live/rows", views.live_events_fragment, name="live_rows"),
    path("events/retry-failed", views.retry_failed, name="retry_failed"),
    path("settings/tracking/", views.tracking_settings, name="settings"),
    path("settings/tracking/keys/new", views.write_key_save, name="key_create"),
    path("settings/tracking/keys/<int:pk>", views.write_key_save, name="key_update"),
    path("settings/tracking/keys/<int:pk>/delete", views.write_key_delete, name="key_delete"),
    path("settings/tracking/ip-ranges/new", views.ip_range_add, name="range_create"),
    path("settings/tracking/ip-ranges/import", views.ip_range_import, name="range_import"),
    path("settings/tracking/ip-ranges/<int:pk>/delete", views.ip_range_delete, name="range_delete"),
]
