"""The `kizuna` command: Kizuna's own commands (demo, serve, worker, init, createuser, import)
and every Django management command, through one entry point."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kizuna.settings")
    from django.core.management import execute_from_command_line

    argv = sys.argv[:]
    argv[0] = "kizuna"
    if len(argv) == 1:
        argv.append("help")
    execute_from_command_line(argv)


if __name__ == "__main__":
    main()
