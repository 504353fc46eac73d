from django.core.management import call_command
from django.core.management.base import BaseCommand

from kizuna.contacts.setup import ensure_defaults
from kizuna.events.setup import ensure_tracking_defaults
from kizuna.lifecycle.transitions import ensure_defaults as ensure_lifecycle_defaults
from kizuna.scoring.setup import ensure_defaults as ensure_scoring_defaults


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
        model = ensure_scoring_defaults()
        ensure_lifecycle_defaults(model)
        if model is not None:
            self.stdout.write("Default lead-scoring model and MQL stage rule added (Settings → Lead scoring).")
