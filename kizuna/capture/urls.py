from django.urls import include, path

from . import public_views, views

app_name = "capture"

# Public: the hosted page, the JS embed's endpoint, submit (from any site), thanks, confirmation.
public = [
    path("<slug:slug>", public_views.hosted, name="hosted"),
    path("<slug:slug>/embed", public_views.embed_json, name="embed"),
    path("<slug:slug>/submit", public_views.submit, name="submit"),
    path("<slug:slug>/thanks", public_views.thanks, name="thanks"),
    path("<slug:slug>/confirm/<str:token>", public_views.confirm, name="confirm"),
]
# The form pages.
pages = [
    path("", views.form_list, name="list"),
    path("new/", views.form_create, name="create"),
    path("confirmation-template", views.confirmation_template, name="confirmation_template"),
    path("<int:pk>/", views.form_detail, name="detail"),
    path("<int:pk>/edit/", views.form_edit, name="edit"),
    path("<int:pk>/submissions.csv", views.form_export, name="export"),
    path("<int:pk>/plain-html/replace", views.plain_html_replace, name="plain_html_replace"),
    path("<int:pk>/submissions/<int:sid>/retry", views.submission_retry, name="retry"),
]
# Under two prefixes, so every other address passes by after two checks; first in the project's
# list, so a visitor's post is routed without walking every other app's patterns.
urlpatterns = [path("f/", include(public)), path("forms/", include(pages))]
