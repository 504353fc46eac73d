"""`kizuna journeys export|import|simulate`: journeys as YAML files, and a dry run against the
events of the last days, from the command line."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from kizuna.journeys import as_code
from kizuna.journeys.models import Journey


class Command(BaseCommand):
    help = "Export a journey as YAML, import one (or only check it), or simulate one against recent events."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="write a journey as YAML")
        export.add_argument("name", help="the journey's name")
        export.add_argument("-o", "--output", default="", help="file to write (default: standard output)")
        load = sub.add_parser("import", help="create or update a journey from a YAML file")
        load.add_argument("file", help="a YAML file, as `export` writes it")
        load.add_argument("--dry-run", action="store_true", help="only check the file; change nothing")
        simulate = sub.add_parser("simulate", help="who would have entered in the last days, and what they got")
        simulate.add_argument("name", help="the journey's name")
        simulate.add_argument("--days", type=int, default=30, help="how many days back (default 30)")
        simulate.add_argument("--paths", type=int, default=10, help="sample paths to print (default 10)")

    def handle(self, *args, action, **options):
        return getattr(self, f"_{action}")(**options)

    def _journey(self, name: str) -> Journey:
        journey = Journey.objects.filter(name=name).select_related("current").first()
        if journey is None:
            raise CommandError(f"no journey named {name!r}")
        return journey

    def _export(self, name, output, **options):
        try:
            text = as_code.dump(self._journey(name))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"wrote {output}")
        else:
            self.stdout.write(text, ending="")

    def _import(self, file, dry_run, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        result = as_code.load(path.read_bytes(), apply=not dry_run)
        if not result.ok:
            for error in result.errors:
                place = ":".join(str(p) for p in (path, error.line, error.column) if p)
                self.stderr.write(f"{place}: {error.path + ': ' if error.path else ''}{error.message}")
            raise CommandError(f"{path}: {len(result.errors)} error(s); nothing was changed")
        journey = result.journey
        if result.action == "checked":
            what = "would update" if journey else "would create"
            self.stdout.write(self.style.SUCCESS(f"{path}: valid; {what} the journey {result.name!r}"))
        elif result.action == "unchanged":
            self.stdout.write(f"{journey.name}: unchanged (version {result.version.number}, {journey.status})")
        else:
            self.stdout.write(self.style.SUCCESS(
                f"{journey.name}: {result.action}, version {result.version.number} ({journey.status})"))

    def _simulate(self, name, days, paths, **options):
        from kizuna.journeys import simulation

        journey = self._journey(name)
        try:
            result = simulation.simulate(journey, days=days, limit=max(paths, 0))
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(simulation.summary(result, paths=paths))
