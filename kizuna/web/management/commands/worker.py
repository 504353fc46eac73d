import threading

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run background work: event processing, and the task queue (imports, later sends and journeys)."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between task-queue polls")
        parser.add_argument(
            "--only", choices=["events", "tasks"], help="run only event processing or only the task queue"
        )

    def handle(self, *args, interval, only=None, **options):
        from kizuna.events import processing

        stop = threading.Event()
        if only == "events":
            import signal

            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                processing.run(stop)
            except KeyboardInterrupt:
                stop.set()
            return
        events = None
        if only is None:
            events = threading.Thread(target=processing.run, args=(stop,), name="kizuna-events", daemon=True)
            events.start()
        try:
            # db_worker stops cleanly on SIGINT/SIGTERM after the task in hand.
            call_command("db_worker", interval=interval, verbosity=options.get("verbosity", 1))
        finally:
            stop.set()
            if events is not None:
                events.join(timeout=30)
