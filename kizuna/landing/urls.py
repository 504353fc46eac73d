from django.urls import path

from . import views

app_name = "landing"
urlpatterns = [
    path("landing-pages/", views.page_list, name="list"),
    path("landing-pages/new/", views.page_create, name="create"),
    path("landing-pages/<int:pk>/", views.page_detail, name="detail"),
    path("landing-pages/<int:pk>/edit/", views.page_edit, name="edit"),
    path("landing-pages/<int:pk>/publish/", views.page_publish, name="publish"),
    path("landing-pages/<int:pk>/delete/", views.page_delete, name="delete"),
    path("p/<slug:slug>", views.public_page, name="public"),
]
