from django.urls import path

from . import code_views, views

app_name = "journeys"
urlpatterns = [
    path("journeys/", views.journey_list, name="list"),
    path("journeys/new/", views.journey_create, name="create"),
    path("journeys/import/", code_views.import_journey, name="import"),
    path("journeys/<int:pk>/", views.journey_detail, name="detail"),
    path("journeys/<int:pk>/status/", views.journey_status, name="status"),
    path("journeys/<int:pk>/stats/", views.journey_stats, name="stats"),
    path("journeys/<int:pk>/enrollments/", views.enrollment_list, name="enrollments"),
    path("journeys/<int:pk>/simulate/", code_views.simulate, name="simulate"),
    path("journeys/<int:pk>/export.yaml", code_views.export, name="export"),
    path("journeys/contacts/<int:contact_id>/", views.contact_inspector, name="inspector"),
    path("journeys/contacts/<int:contact_id>/enroll/", views.contact_enroll, name="enroll"),
]
