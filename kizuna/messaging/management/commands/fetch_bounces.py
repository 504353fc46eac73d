import os

from django.core.management.base import BaseCommand, CommandError

from kizuna.messaging import inbound


class Command(BaseCommand):
    help = "Read bounces and complaints from a mailbox: imaps://user:pass@host/INBOX or pop3s://user:pass@host."

    def add_arguments(self, parser):
        parser.add_argument("url", nargs="?", default=os.environ.get("KIZUNA_BOUNCE_MAILBOX", ""))
        parser.add_argument("--keep", action="store_true", help="mark messages seen instead of deleting them")

    def handle(self, *args, url, keep, **options):
        if not url:
            raise CommandError("give the mailbox URL or set KIZUNA_BOUNCE_MAILBOX")
        for line in inbound.poll_mailbox(url, delete=not keep):
            self.stdout.write(line)
