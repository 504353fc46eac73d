from django.urls import path

from . import public_views, views

app_name = "assets"
urlpatterns = [
    # Recipients and visitors: no login, the signed token or the public key is the credential.
    path("d/p/<str:key>", public_views.public_download, name="public_download"),
    path("d/<str:token>", public_views.download, name="download"),
    path("assets/", views.asset_list, name="list"),
    path("assets/new", views.asset_create, name="create"),
    path("assets/<int:pk>/", views.asset_detail, name="detail"),
    path("assets/<int:pk>/edit", views.asset_edit, name="edit"),
    path("assets/<int:pk>/file", views.asset_file, name="file"),
    path("assets/<int:pk>/delete", views.asset_delete, name="delete"),
]
