import signal
import threading

from django.core.management.base import BaseCommand

from kizuna.messaging import inbound


class Command(BaseCommand):
    help = "Receive bounces, complaints and mailto unsubscribes over SMTP (bounce+…@ / unsubscribe+…@)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - it is a mail server
        parser.add_argument("--port", type=int, default=2525)

    def handle(self, *args, host, port, **options):
        controller = inbound.serve(host, port)
        self.stdout.write(f"listening for bounces on {host}:{port}")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            controller.stop()
