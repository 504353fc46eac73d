"""`kizuna simulate`: synthetic visitors live the last N days on the demo site, on an accelerated
clock, through the real ingestion, processing, journeys and mail (captured, not delivered)."""

import time

from django.core.management.base import BaseCommand

from kizuna.playbooks.simulator import Simulation, prepare_demo


class Command(BaseCommand):
    help = ("Run synthetic visitors through the demo website over the last DAYS days, in accelerated time, "
            "with every playbook installed. Run it while no `kizuna worker` is running: the simulation "
            "does the worker's passes itself, on its own clock (`kizuna demo` runs it before starting one).")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=float, default=14, help="simulated days, ending now")
        parser.add_argument("--visitors", type=int, default=40)
        parser.add_argument("--keen", type=int, default=2, help="prospects who follow example 1 to the end")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--live", action="store_true",
                            help="keep visitors coming at real time, beside a running server and worker "
                                 "(their pauses shortened by --speed); what `kizuna demo` runs")
        parser.add_argument("--speed", type=float, default=1440, help="with --live: pauses divided by this")

    def handle(self, *args, days, visitors, keen, seed, **options):
        if options.get("live"):
            Simulation(seed=seed, visitors=visitors, days=days, keen=keen).run_live(
                speed=max(1.0, options["speed"]), log=self.stdout.write)
            return
        if days <= 0 or days > 60:
            self.stderr.write("--days must be more than 0 and at most 60")
            raise SystemExit(2)
        started = time.monotonic()
        simulation = Simulation(seed=seed, visitors=visitors, days=days, keen=keen,
                                on_progress=self.stdout.write if options.get("verbosity", 1) > 1 else None)
        summary = simulation.run(prepare=lambda: [self.stdout.write(f"  {line}") for line in prepare_demo()])
        self.stdout.write(self.style.SUCCESS(f"  {summary} ({time.monotonic() - started:.0f} s)"))
