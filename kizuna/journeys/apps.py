from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JourneysConfig(AppConfig):
    name = "kizuna.journeys"
    label = "journeys"
    verbose_name = _("Journeys")

    def ready(self) -> None:
        from kizuna.contacts.signals import contact_saved
        from kizuna.journeys import triggers
        from kizuna.journeys.views import register_panels

        contact_saved.connect(triggers.on_contact_saved, dispatch_uid="journeys")
        register_panels()
