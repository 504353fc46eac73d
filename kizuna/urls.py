from django.urls import include, path

from kizuna.api import api

urlpatterns = [
    path("", include("kizuna.capture.urls")),  # first: public form posts are the hottest Django route
    path("", include("kizuna.web.urls")),
    path("", include("kizuna.accounts.urls")),
    path("", include("kizuna.contacts.urls")),
    path("", include("kizuna.events.urls")),
    path("", include("kizuna.messaging.urls")),
    path("", include("kizuna.scoring.urls")),
    path("", include("kizuna.handoff.urls")),
    path("", include("kizuna.lifecycle.urls")),
    path("", include("kizuna.segments.urls")),
    path("", include("kizuna.landing.urls")),
    path("", include("kizuna.journeys.urls")),
    path("", include("kizuna.assets.urls")),
    path("", include("kizuna.privacy.urls")),
    path("", include("kizuna.playbooks.urls")),
    path("", include("kizuna.insights.urls")),
    path("api/v1/", api.urls),
]
