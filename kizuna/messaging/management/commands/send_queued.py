from django.core.management.base import BaseCommand

from kizuna.messaging import bulk, outbox


class Command(BaseCommand):
    help = "Send every queued email that is due now, then stop (the worker does this continuously)."

    def add_arguments(self, parser):
        parser.add_argument("--recover", action="store_true", help="first settle rows left by a stopped worker")

    def handle(self, *args, recover=False, **options):
        if recover:
            self.stdout.write(f"recovery: {outbox.recover()}")
        bulk.tick()
        sent = outbox.drain()
        self.stdout.write(f"handled {sent} messages")
