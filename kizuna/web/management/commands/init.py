from django.core.management import call_command
from django.core.management.base import BaseCommand

from kizuna.contacts.setup import ensure_defaults
from kizuna.events.setup import ensure_tracking_defaults


class Command(BaseCommand):
    help = "Create or upgrade the database and the default settings (idempotent)."

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=max(0, options["verbosity"] - 1))
        created = ensure_defaults()
        self.stdout.write(self.style.SUCCESS(
            f"Database ready. Default subscription topics added: {created or 'none (already there)'}"
        ))
        key = ensure_tracking_defaults()
        if key is not None:
            self.stdout.write(f"Tracking write key for your website: {key.key} (Settings → Tracking has the snippet)")
