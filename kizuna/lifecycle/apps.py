from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LifecycleConfig(AppConfig):
    name = "kizuna.lifecycle"
    label = "lifecycle"
    verbose_name = _("Lifecycle stages")

    def ready(self) -> None:
        from kizuna.contacts.signals import contact_saved
        from kizuna.lifecycle import transitions
        from kizuna.lifecycle.views import register_panels
        from kizuna.scoring.signals import scores_changed

        contact_saved.connect(transitions.on_contact_saved, dispatch_uid="lifecycle")
        scores_changed.connect(transitions.on_scores_changed, dispatch_uid="lifecycle")
        register_panels()
