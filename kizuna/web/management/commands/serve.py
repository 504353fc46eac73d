from django.core.management.base import BaseCommand

from kizuna.web.processes import default_bind, run_together, serve_command


class Command(BaseCommand):
    help = "Serve Kizuna over HTTP with granian (the production server)."

    def add_arguments(self, parser):
        host, port = default_bind()
        parser.add_argument("--host", default=host)
        parser.add_argument("--port", type=int, default=port)
        parser.add_argument("--workers", type=int, default=2, help="web processes (default 2)")

    def handle(self, *args, host, port, workers, **options):
        self.stdout.write(f"Kizuna serving on http://{host}:{port}/ (Ctrl-C stops)")
        raise SystemExit(run_together({"web": serve_command(host, port, workers)}))
