from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PrivacyConfig(AppConfig):
    name = "kizuna.privacy"
    label = "privacy"
    verbose_name = _("Privacy and personal data")

    def ready(self) -> None:
        from kizuna.privacy.views import register_panels

        register_panels()
