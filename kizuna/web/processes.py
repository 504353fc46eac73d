"""Starting and stopping Kizuna's processes (web server, worker) for `serve`, `worker`, `demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

from django.conf import settings

from kizuna import config


def serve_command(host: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--host", host, "--port", str(port),
        # Threads per process: tracking hits wait for a shared commit, so more threads mean
        # bigger commit groups (docs/decisions/0005-event-pipeline.md).
        "--workers", str(workers), "--blocking-threads", str(config.env_int("KIZUNA_WEB_THREADS", 16)),
        "--no-ws", "--log-level", "warning",
        "kizuna.wsgi:application",
    ]


def worker_command() -> list[str]:
    return [sys.executable, "-m", "kizuna.cli", "worker"]


def default_bind() -> tuple[str, int]:
    base = urlsplit(settings.BASE_URL)
    return base.hostname or "127.0.0.1", base.port or (443 if base.scheme == "https" else 8000)


def run_together(commands: dict[str, list[str]], on_ready=None) -> int:
    """Runs the commands as child processes until one dies or Ctrl-C; stops all cleanly."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kizuna.settings", "PYTHONUNBUFFERED": "1"}
    children = {name: subprocess.Popen(cmd, env=env) for name, cmd in commands.items()}  # noqa: S603
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if on_ready:
        on_ready()
    exit_code = 0
    try:
        while not stopping:
            for name, proc in children.items():
                code = proc.poll()
                if code is not None:
                    print(f"kizuna: {name} exited with code {code}; stopping.", file=sys.stderr)
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.3)
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return exit_code
