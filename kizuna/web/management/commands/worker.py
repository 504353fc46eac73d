import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

log = logging.getLogger("kizuna.worker")
LOOPS = ("events", "mail", "handoff", "segments", "journeys", "predictive", "retention", "forms", "insights")


class Command(BaseCommand):
    help = ("Run background work: event processing, email sending, hot-lead notices, segment refresh, journeys,"
            " scheduled retraining of predictive scores, retention rules and the event age limit, form submissions,"
            " the insights rollups,"
            " and the task queue (imports, training).")

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between task-queue polls")
        parser.add_argument(
            "--only", choices=[*LOOPS, "tasks"],
            help="run only one loop: event processing, email sending, hot-lead notices, segment refresh,"
                 " journeys, predictive retraining, retention rules and the event age limit, form submissions,"
                 " insights rollups,"
                 " or the task queue",
        )

    def handle(self, *args, interval, only=None, **options):
        from kizuna.capture import processing as forms
        from kizuna.db import writelock
        from kizuna.events import processing
        from kizuna.handoff import delivery
        from kizuna.insights import rollups
        from kizuna.journeys import engine as journeys
        from kizuna.messaging import outbox
        from kizuna.privacy import retention
        from kizuna.scoring import predictive_service
        from kizuna.segments import membership

        writelock.set_background()  # a backlog never keeps a page's save waiting

        targets = {"events": processing.run, "mail": outbox.run, "handoff": delivery.run,
                   "segments": membership.run, "journeys": journeys.run,
                   "predictive": predictive_service.run, "retention": retention.loop, "forms": forms.run,
                   "insights": rollups.run}
        stop = threading.Event()
        if only in LOOPS:
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                targets[only](stop)
            except KeyboardInterrupt:
                stop.set()
            return
        threads = []
        if only is None:
            for name in LOOPS:
                thread = threading.Thread(target=targets[name], args=(stop,), name=f"kizuna-{name}", daemon=True)
                thread.start()
                threads.append(thread)
        try:
            self.run_tasks(interval, options.get("verbosity", 1))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    def run_tasks(self, interval: float, verbosity: int) -> None:
        """The task queue, in this (the main) thread. Both task workers stop cleanly on SIGINT or
        SIGTERM after the task in hand. db_worker gives up when the database goes away (a
        PostgreSQL restart): the queue is started again, as the other loops carry on, rather than
        ending the whole worker process."""
        while True:
            try:
                if settings.TASKS["default"]["BACKEND"].startswith("django_tasks_redis."):
                    call_command("run_redis_tasks", continuous=True, interval=interval, verbosity=verbosity)
                else:
                    call_command("db_worker", interval=interval, verbosity=verbosity)
                return
            except DatabaseError:
                log.exception("the task queue lost its database; starting it again")
                close_old_connections()
                time.sleep(1.0)
