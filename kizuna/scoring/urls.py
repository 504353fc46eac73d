from django.urls import path

from . import predictive_views, views

app_name = "scoring"
urlpatterns = [
    path("leads/hot/", views.hot_leads, name="hot_leads"),
    path("settings/scoring/", views.model_list, name="models"),
    path("settings/scoring/<int:pk>/", views.model_detail, name="model"),
    path("settings/scoring/<int:pk>/rescore", views.rescore, name="rescore"),
    path("settings/scoring/<int:pk>/rescore/progress", views.rescore_progress, name="rescore_progress"),
    path("settings/scoring/<int:pk>/predictive/", predictive_views.predictive_page, name="predictive"),
    path("settings/scoring/<int:pk>/predictive/progress", predictive_views.predictive_progress,
         name="predictive_progress"),
]
