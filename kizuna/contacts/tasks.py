"""Background work of the contacts app, run by `kizuna worker`."""

from __future__ import annotations

from django.tasks import task


@task
def run_import(job_id: int) -> dict:
    """Runs one import job; the outcome (counts or the failure) is kept on the job itself."""
    from .imports import run_job

    job = run_job(job_id)
    return {"status": job.status, "created": job.created_count, "updated": job.updated_count,
            "skipped": job.skipped_count, "errors": job.error_count}


def import_parser_main() -> None:
    """Entry point of the child process that parses a large import file (imports._ProcessParser):
    the plan comes as one JSON line on stdin, checked rows go back pickled on stdout. Django is set
    up for translations and field types; the database is never opened."""
    import json
    import os
    import sys

    import django

    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the stream
    django.setup()
    from .imports import parse_to_stream

    parse_to_stream(json.loads(sys.stdin.readline()), out)
    out.close()
