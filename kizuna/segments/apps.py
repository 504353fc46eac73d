from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SegmentsConfig(AppConfig):
    name = "kizuna.segments"
    label = "segments"
    verbose_name = _("Segments")

    def ready(self) -> None:
        from kizuna.contacts.signals import contact_saved
        from kizuna.segments import membership

        contact_saved.connect(membership.on_contact_saved, dispatch_uid="segments")
