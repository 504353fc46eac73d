from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CaptureConfig(AppConfig):
    name = "kizuna.capture"
    label = "capture"
    verbose_name = _("Lead capture")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from kizuna.capture.models import Form
        from kizuna.capture.public_views import recent
        from kizuna.capture.views import register_panels
        from kizuna.events.models import WriteKey

        register_panels()
        for model in (Form, WriteKey):  # the submit endpoint's few-second memory forgets at once here
            post_save.connect(recent.clear, sender=model, dispatch_uid=f"capture-recent-{model.__name__}")
            post_delete.connect(recent.clear, sender=model, dispatch_uid=f"capture-recent-del-{model.__name__}")
