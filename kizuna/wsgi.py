"""WSGI entry point (granian serves it in `kizuna serve`).

The tracking endpoints (/v1/*, /kz.js, /t.gif) answer before Django; see kizuna/events/http.py.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kizuna.settings")
django_application = get_wsgi_application()

from kizuna.events.http import IngestionApp  # noqa: E402 - needs Django set up first

application = IngestionApp(django_application)
