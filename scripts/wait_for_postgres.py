"""Waits up to 20 s for the PostgreSQL server named by a URL to accept connections."""

import sys
import time

import psycopg

url = sys.argv[1]
admin_url = url.rsplit("/", 1)[0] + "/postgres"
deadline = time.monotonic() + 20
while True:
    try:
        with psycopg.connect(admin_url, connect_timeout=3):
            sys.exit(0)
    except psycopg.OperationalError as exc:
        if time.monotonic() > deadline:
            print(exc, file=sys.stderr)
            sys.exit(1)
        time.sleep(0.5)
