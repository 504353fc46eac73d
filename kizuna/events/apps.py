from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EventsConfig(AppConfig):
    name = "kizuna.events"
    label = "events"
    verbose_name = _("Events and tracking")

    def ready(self) -> None:
        from kizuna.events import identity  # noqa: F401 - registers the contact-merge hook
        from kizuna.events.views import register_panels

        register_panels()
