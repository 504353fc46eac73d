import getpass

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from kizuna.accounts import audit
from kizuna.accounts.models import User
from kizuna.accounts.roles import Role


class Command(BaseCommand):
    help = "Create a Kizuna user with a role (admin, marketer, sales, viewer)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=Role.values, default=Role.VIEWER)
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="omit to be asked (not echoed)")

    def handle(self, *args, username, role, email, password, **options):
        if User.objects.filter(username=username).exists():
            raise CommandError(f"user {username!r} already exists")
        if password is None:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("the passwords differ")
        user = User(username=username, email=email, role=role, is_staff=role == Role.ADMIN)
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        user.set_password(password)
        user.save()
        audit.record(None, "create", user, changes={"role": [None, role]})
        self.stdout.write(self.style.SUCCESS(f"Created {role} {username}"))
