from django.urls import include, path

from kizuna.api import api

urlpatterns = [
    path("", include("kizuna.web.urls")),
    path("", include("kizuna.accounts.urls")),
    path("", include("kizuna.contacts.urls")),
    path("", include("kizuna.events.urls")),
    path("api/v1/", api.urls),
]
