import secrets
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from kizuna.accounts.models import User
from kizuna.contacts.demo import generate_demo_data
from kizuna.contacts.models import Contact
from kizuna.contacts.setup import ensure_defaults
from kizuna.events.demo import generate_demo_traffic
from kizuna.events.setup import ensure_tracking_defaults
from kizuna.handoff.demo import ensure_demo_routes
from kizuna.journeys.models import Journey
from kizuna.lifecycle.transitions import ensure_defaults as ensure_lifecycle_defaults
from kizuna.messaging.demo import generate_demo_email
from kizuna.playbooks.simulator import Simulation, prepare_demo
from kizuna.scoring.setup import ensure_defaults as ensure_scoring_defaults
from kizuna.segments.demo import ensure_demo_segments
from kizuna.web.processes import default_bind, run_together, serve_command, worker_command

# A journey of the example-1 playbook: once it exists, the demo's simulation has run.
FIRST_PLAYBOOK_JOURNEY = "資料請求後のナーチャリング / White paper nurturing"


class Command(BaseCommand):
    help = "Set up a demo (database, Japanese B2B sample data, an admin login) and run it."

    def add_arguments(self, parser):
        parser.add_argument("--contacts", type=int, default=2000, help="sample contacts when empty")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--no-serve", action="store_true", help="prepare only; do not start")
        parser.add_argument("--no-simulate", action="store_true",
                            help="do not run the simulated visitors (playbooks and their stories) on first start")
        parser.add_argument("--days", type=float, default=14, help="days of visitors to simulate on first start")
        parser.add_argument("--visitors", type=int, default=40, help="simulated visitors on first start")
        host, port = default_bind()
        parser.add_argument("--host", default=host)
        parser.add_argument("--port", type=int, default=port)

    def handle(self, *args, contacts, seed, no_serve, host, port, no_simulate, days, visitors, **options):
        started = time.monotonic()
        call_command("migrate", interactive=False, verbosity=0)
        ensure_defaults()
        ensure_tracking_defaults()
        ensure_lifecycle_defaults(ensure_scoring_defaults())
        password = self._admin_password()
        if not Contact.objects.exists():
            self.stdout.write(f"Creating demo data: {contacts} contacts…")
            summary = generate_demo_data(contacts=contacts, seed=seed)
            self.stdout.write(f"  {summary}")
            self.stdout.write(f"  {ensure_demo_routes()}")
            self.stdout.write("Recording demo web traffic…")
            self.stdout.write(f"  {generate_demo_traffic()}")
            self.stdout.write("Sending the demo newsletter (captured, not delivered)…")
            self.stdout.write(f"  {generate_demo_email()}")
            self.stdout.write(f"  {ensure_demo_segments()}")
            from kizuna.insights.demo import generate_demo_insights

            self.stdout.write("Writing a year of history for the insights reports…")
            self.stdout.write(f"  {generate_demo_insights()}")
        if not no_simulate and not Journey.objects.filter(name=FIRST_PLAYBOOK_JOURNEY).exists():
            self.stdout.write(f"Installing the playbooks and simulating {days:g} days of visitors"
                              " (accelerated time, real pipeline, mail captured)…")
            simulation = Simulation(seed=seed, visitors=visitors, days=days, keen=2)
            summary = simulation.run(prepare=lambda: [self.stdout.write(f"  {line}") for line in prepare_demo()])
            self.stdout.write(f"  {summary}")
        self.stdout.write(self.style.SUCCESS(f"Ready in {time.monotonic() - started:.1f} s."))
        banner = (
            f"\n  Kizuna demo:  http://{host}:{port}/\n"
            f"  Log in as:    admin / {password}\n"
            f"  Demo website: http://{host}:{port}/demo-site/  (tracked; its forms feed the playbooks)\n"
            + ("" if no_simulate else "  Simulated visitors keep arriving on the demo website (Live events).\n")
            + "  Ctrl-C stops the web server and the worker.\n"
        )
        if no_serve:
            self.stdout.write(banner)
            return
        processes = {"web": serve_command(host, port, 2), "worker": worker_command()}
        if not no_simulate:  # visitors keep coming while the demo runs
            processes["visitors"] = [sys.executable, "-m", "kizuna.cli", "simulate", "--live", "--seed", str(seed + 1),
                                     "--visitors", str(visitors), "--days", f"{days:g}"]
        code = run_together(
            processes,
            on_ready=lambda: self.stdout.write(banner),
        )
        raise SystemExit(code)

    def _admin_password(self) -> str:
        """The demo admin's password: made once, kept in the data dir, shown at every start."""
        path = settings.DATA_DIR / "demo-admin-password"
        if path.exists() and User.objects.filter(username="admin").exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(9)
        user, _ = User.objects.get_or_create(username="admin", defaults={"role": "admin"})
        user.role, user.is_staff, user.is_superuser = "admin", True, True
        user.last_name, user.first_name = user.last_name or "管理", user.first_name or "太郎"
        user.set_password(password)
        user.save()
        path.write_text(password)
        path.chmod(0o600)
        return password
