from django.core.management.base import BaseCommand

from kizuna.events import processing


class Command(BaseCommand):
    help = "Process waiting events now (the worker does this continuously)."

    def add_arguments(self, parser):
        parser.add_argument("--retry-failed", action="store_true", help="put events that failed back in line first")

    def handle(self, *args, retry_failed=False, **options):
        if retry_failed:
            self.stdout.write(f"{processing.retry_failed()} failed events put back in line.")
        done = processing.drain()
        status = processing.lag()
        self.stdout.write(f"Processed {done} events; {status['pending']} waiting, {status['failed']} failed.")
