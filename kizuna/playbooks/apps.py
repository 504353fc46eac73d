from django.apps import AppConfig


class PlaybooksConfig(AppConfig):
    name = "kizuna.playbooks"
    label = "playbooks"
    verbose_name = "Playbooks"
