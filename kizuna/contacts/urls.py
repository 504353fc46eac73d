"""Contacts-area pages. Views live in `views.py` (contacts, companies, lists, settings)
and `import_views.py` (the import wizard and exports)."""

from django.urls import path

from . import import_views, views

app_name = "contacts"
urlpatterns = [
    # contacts
    path("contacts/", views.contact_list, name="list"),
    path("contacts/new/", views.contact_create, name="create"),
    path("contacts/<int:pk>/", views.contact_detail, name="detail"),
    path("contacts/<int:pk>/edit/", views.contact_edit, name="edit"),
    path("contacts/<int:pk>/delete/", views.contact_delete, name="delete"),
    path("contacts/<int:pk>/consent/", views.contact_consent, name="consent"),
    path("contacts/export.csv", import_views.contact_export, name="export"),
    # companies
    path("companies/", views.company_list, name="company_list"),
    path("companies/new/", views.company_create, name="company_create"),
    path("companies/<int:pk>/", views.company_detail, name="company_detail"),
    path("companies/<int:pk>/edit/", views.company_edit, name="company_edit"),
    # static lists
    path("lists/", views.list_index, name="list_index"),
    path("lists/<int:pk>/", views.list_detail, name="list_detail"),
    # imports
    path("imports/", import_views.import_list, name="import_list"),
    path("imports/new/", import_views.import_upload, name="import_new"),
    path("imports/<int:pk>/", import_views.import_detail, name="import_detail"),
    path("imports/<int:pk>/progress/", import_views.import_progress, name="import_progress"),
    path("imports/<int:pk>/errors.csv", import_views.import_errors, name="import_errors"),
    # settings
    path("settings/fields/", views.field_list, name="field_list"),
    path("settings/fields/new/", views.field_create, name="field_create"),
    path("settings/fields/<int:pk>/", views.field_edit, name="field_edit"),
    path("settings/topics/", views.topic_list, name="topic_list"),
    path("settings/topics/<int:pk>/", views.topic_edit, name="topic_edit"),
]
