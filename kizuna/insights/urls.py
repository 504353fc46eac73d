from django.urls import path

from . import views

app_name = "insights"
urlpatterns = [
    path("insights/", views.dashboard, name="dashboard"),
    path("insights/funnel/", views.funnel, name="funnel"),
    path("insights/web/", views.web, name="web"),
    path("insights/email/", views.email, name="email"),
    path("insights/conversion/", views.conversion, name="conversion"),
    path("insights/attribution/", views.attribution, name="attribution"),
    path("insights/retention/", views.retention, name="retention"),
]
