from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class HandoffConfig(AppConfig):
    name = "kizuna.handoff"
    label = "handoff"
    verbose_name = _("Hand-off to sales")

    def ready(self) -> None:
        from kizuna.handoff import alerts
        from kizuna.scoring.signals import lead_turned_hot

        lead_turned_hot.connect(alerts.on_lead_turned_hot, dispatch_uid="handoff")
