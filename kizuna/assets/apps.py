from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AssetsConfig(AppConfig):
    name = "kizuna.assets"
    label = "assets"
    verbose_name = _("Assets")

    def ready(self) -> None:
        from kizuna.assets import delivery
        from kizuna.messaging import rendering

        # `asset_url('slug')` in any email template; `download_url` and `asset` in delivery mails.
        rendering.register_context(delivery.template_context)
