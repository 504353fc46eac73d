"""`kizuna insights rebuild`: every rollup from the raw data; `kizuna insights update`: one incremental pass."""

from django.core.management.base import BaseCommand, CommandError

from kizuna.insights import rollups


class Command(BaseCommand):
    help = "Rebuild the insights rollups from the raw data (rebuild), or bring them up to date (update)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["rebuild", "update"])

    def handle(self, *args, action: str, **options):
        try:
            done = rollups.rebuild() if action == "rebuild" else rollups.update()
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        if action == "update" and not done:
            self.stdout.write("Nothing new (or another worker is updating the rollups).")
        for name, n in done.items():
            unit = "contacts" if name == "contact_pages" else "days"
            self.stdout.write(f"{name}: {n} {unit}")
