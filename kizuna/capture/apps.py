from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CaptureConfig(AppConfig):
    name = "kizuna.capture"
    label = "capture"
    verbose_name = _("Lead capture")

    def ready(self) -> None:
        from kizuna.capture.views import register_panels

        register_panels()
