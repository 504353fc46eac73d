from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LandingConfig(AppConfig):
    name = "kizuna.landing"
    label = "landing"
    verbose_name = _("Landing pages")
