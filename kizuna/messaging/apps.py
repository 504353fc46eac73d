from django.apps import AppConfig
from django.utils.translation import pgettext_lazy


class MessagingConfig(AppConfig):
    name = "kizuna.messaging"
    label = "messaging"
    verbose_name = pgettext_lazy("channel", "Email")

    def ready(self) -> None:
        from anymail.signals import tracking

        from kizuna.messaging import feedback
        from kizuna.messaging.panels import register_panels

        register_panels()
        tracking.connect(feedback.on_anymail_tracking, dispatch_uid="kizuna-anymail-tracking")
