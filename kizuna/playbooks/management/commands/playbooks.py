"""`kizuna playbooks list | install NAME | install --all`: the ready-made bundles in kizuna/playbooks/bundles."""

from django.core.management.base import BaseCommand, CommandError

from kizuna.playbooks import services


class Command(BaseCommand):
    help = "List the ready-made playbooks, or install one (or all): installing again creates no duplicates."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="the playbooks, what they contain and whether they are installed")
        install = sub.add_parser("install", help="install a playbook by name, or every playbook with --all")
        install.add_argument("name", nargs="?")
        install.add_argument("--all", action="store_true")
        install.add_argument("-q", "--quiet", action="store_true", help="only the summary line")

    def handle(self, *args, action, **options):
        if action == "list":
            for bundle in services.available():
                self.stdout.write(f"{bundle.key:24} [{services.status(bundle)}] {bundle.text('title', 'en')}")
                for kind, names in bundle.contents():
                    self.stdout.write(f"{'':26}{kind}: {', '.join(names)}")
            return
        name, everything = options.get("name"), options.get("all")
        if bool(name) == bool(everything):
            raise CommandError("name one playbook, or give --all (see `kizuna playbooks list`)")
        try:
            bundles = services.available() if everything else [services.get(name)]
            for bundle in bundles:
                result = services.install(bundle)
                self.stdout.write(self.style.SUCCESS(result.summary()))
                if not options.get("quiet"):
                    for step in result.steps:
                        self.stdout.write(f"  {step}")
        except services.PlaybookError as exc:
            raise CommandError("\n".join(exc.messages())) from None
