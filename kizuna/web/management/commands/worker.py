from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run background work (imports, and later sends and journeys) from the task queue."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")

    def handle(self, *args, interval, **options):
        # db_worker stops cleanly on SIGINT/SIGTERM after the task in hand.
        call_command("db_worker", interval=interval, verbosity=options.get("verbosity", 1))
