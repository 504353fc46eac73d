from django.urls import path

from . import views

app_name = "segments"
urlpatterns = [
    path("segments/", views.segment_list, name="list"),
    path("segments/new/", views.segment_create, name="create"),
    path("segments/<int:pk>/", views.segment_detail, name="detail"),
    path("segments/<int:pk>/edit/", views.segment_edit, name="edit"),
    path("segments/<int:pk>/delete/", views.segment_delete, name="delete"),
    path("segments/<int:pk>/recompute/", views.segment_recompute, name="recompute"),
    path("segments/<int:pk>/progress/", views.segment_progress, name="progress"),
    path("segments/<int:pk>/members.csv", views.segment_export, name="export"),
]
