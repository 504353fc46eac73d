from django.urls import path

from . import public_views, views

app_name = "capture"
urlpatterns = [
    # Public: the hosted page, the JS embed's endpoint, submit (from any site), thanks, confirmation.
    path("f/<slug:slug>", public_views.hosted, name="hosted"),
    path("f/<slug:slug>/embed", public_views.embed_json, name="embed"),
    path("f/<slug:slug>/submit", public_views.submit, name="submit"),
    path("f/<slug:slug>/thanks", public_views.thanks, name="thanks"),
    path("f/<slug:slug>/confirm/<str:token>", public_views.confirm, name="confirm"),
    # The form pages.
    path("forms/", views.form_list, name="list"),
    path("forms/new/", views.form_create, name="create"),
    path("forms/<int:pk>/", views.form_detail, name="detail"),
    path("forms/<int:pk>/edit/", views.form_edit, name="edit"),
    path("forms/<int:pk>/submissions.csv", views.form_export, name="export"),
    path("forms/<int:pk>/plain-html/replace", views.plain_html_replace, name="plain_html_replace"),
    path("forms/<int:pk>/submissions/<int:sid>/retry", views.submission_retry, name="retry"),
    path("forms/confirmation-template", views.confirmation_template, name="confirmation_template"),
]
