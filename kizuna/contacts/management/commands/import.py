"""`kizuna import FILE`: the import wizard on the command line, through the same engine."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from kizuna.accounts.models import User
from kizuna.contacts import imports
from kizuna.contacts.models import ImportJob, ImportPreset


class Command(BaseCommand):
    help = ("Import contacts from a CSV or XLSX file. Columns are mapped automatically from their names "
            "(氏名, 会社名, メールアドレス, Email, Company, …) unless --preset names a saved mapping.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV (UTF-8 or Shift_JIS) or XLSX file")
        parser.add_argument("--kind", default=ImportJob.Kind.OTHER, choices=ImportJob.Kind.values)
        parser.add_argument("--policy", default=ImportJob.DuplicatePolicy.UPDATE,
                            choices=ImportJob.DuplicatePolicy.values,
                            help="what to do with contacts that already exist (same email)")
        parser.add_argument("--tags", default="", help="comma-separated tags to add")
        parser.add_argument("--list", dest="list_name", default="", help="list to add the contacts to")
        parser.add_argument("--preset", default="", help="name of a saved column mapping")
        parser.add_argument("--consent-topic", default="", help="subscription topic key")
        parser.add_argument("--consent-status", default="", choices=["", "opted_in", "opted_out"])
        parser.add_argument("--consent-source", default="", help="where the consent was given")
        parser.add_argument("--user", default="", help="username the import is recorded as (default: system)")

    def handle(self, *args, file, kind, policy, tags, list_name, preset, consent_topic, consent_status,
               consent_source, user, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        actor = None
        if user:
            actor = User.objects.filter(username=user, is_active=True).first()
            if actor is None:
                raise CommandError(f"no active user {user!r}")
        with path.open("rb") as fh:
            try:
                job = imports.create_job(actor, File(fh, name=path.name), kind=kind)
            except imports.ImportFileError as exc:
                raise CommandError(f"{path.name}: {exc.message}") from exc
        mapping = job.mapping
        if preset:
            saved = ImportPreset.objects.filter(name=preset).first()
            if saved is None:
                raise CommandError(f"no mapping preset named {preset!r}")
            mapping = imports.preset_mapping(job, saved)
        for header in job.headers:
            self.stdout.write(f"  {header} → {mapping.get(header) or '(ignored)'}")
        try:
            imports.configure_job(actor, job, mapping=mapping, duplicate_policy=policy, tags=tags,
                                  list_name=list_name, consent_topic_key=consent_topic,
                                  consent_status=consent_status, consent_source=consent_source)
        except imports.ImportConfigError as exc:
            raise CommandError("the import settings are not valid:\n" + "\n".join(
                f"  {k}: {v}" for k, v in exc.errors.items())) from exc

        interactive = sys.stderr.isatty()

        def show(live: dict) -> None:
            text = f"{live.get('read', 0):,} rows checked, {live.get('written', 0):,} written ({live['percent']:.0f}%)"
            if interactive:
                self.stderr.write(f"\r{text}", ending="")
            elif options.get("verbosity", 1) > 1:
                self.stderr.write(text)

        job = imports.run_now(job, on_progress=show)
        if interactive:
            self.stderr.write("")
        if job.status != ImportJob.Status.DONE:
            raise CommandError(f"import #{job.pk} failed: {job.failure}")
        self.stdout.write(self.style.SUCCESS(f"import #{job.pk}: {imports.summary(job)}"))
        if job.error_report and job.error_count:
            items, count = imports.error_rows(job, limit=10)
            for item in items:
                self.stdout.write(f"  row {item['row']}: {item['column'] or '-'}: {item['message']}")
            if count > len(items):
                self.stdout.write(f"  … {count - len(items)} more")
            self.stdout.write(f"error report: {job.error_report.path}")
