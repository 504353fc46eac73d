"""Django settings for Kizuna, all read from the environment (see kizuna/config.py)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.utils.csp import CSP
from django.utils.translation import gettext_lazy as _

from kizuna import config

config.load_env_file()

BASE_DIR = Path(__file__).resolve().parent
DATA_DIR = config.data_dir()
SECRET_KEY = config.secret_key(DATA_DIR)
DEBUG = config.env_bool("KIZUNA_DEBUG")

BASE_URL = config.env("KIZUNA_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
_base = urlsplit(BASE_URL)
HTTPS = _base.scheme == "https"
ALLOWED_HOSTS = [h for h in config.env("KIZUNA_ALLOWED_HOSTS").split(",") if h] or [
    _base.hostname or "localhost",
    "localhost",
    "127.0.0.1",
    "[::1]",
]
CSRF_TRUSTED_ORIGINS = [f"{_base.scheme}://{_base.netloc}"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_tasks_db",
    "kizuna.accounts",
    "kizuna.contacts",
    "kizuna.events",
    "kizuna.messaging",
    "kizuna.scoring",
    "kizuna.handoff",
    "kizuna.lifecycle",
    "kizuna.segments",
    "kizuna.journeys",
    "kizuna.capture",
    "kizuna.landing",
    "kizuna.assets",
    "kizuna.privacy",
    "kizuna.playbooks",
    "kizuna.insights",
    "kizuna.web",
]

MIDDLEWARE = [
    "kizuna.web.observability.RequestMiddleware",  # first: request id, duration, access log, metrics
    "kizuna.web.middleware.NulParameterMiddleware",  # ?q=%00 is a clear 400, not a database error
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "kizuna.accounts.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "kizuna.accounts.middleware.TwoFactorRequiredMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "kizuna.urls"
WSGI_APPLICATION = "kizuna.wsgi.application"
ASGI_APPLICATION = "kizuna.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "kizuna.web.context_processors.navigation",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = config.env("KIZUNA_DATABASE_URL") or f"sqlite:///{DATA_DIR / 'kizuna.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["ENGINE"] = "kizuna.db.sqlite3"  # Django's, writes queued on one lock
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers proceed while one writer works; IMMEDIATE avoids upgrade deadlocks.
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            "PRAGMA foreign_keys=ON; PRAGMA cache_size=-65536;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 60,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (login rate limits, import progress) ---------------------------------------------
# With several hosts the cache must be shared (a login lockout counted on one web server holds on
# all of them): set KIZUNA_REDIS_URL. Without it, the file cache is shared by the processes of one host.
REDIS_URL = config.env("KIZUNA_REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                    "KEY_PREFIX": config.env("KIZUNA_REDIS_PREFIX", "kizuna")}
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

# --- Background work ------------------------------------------------------------------------
# The database queue by default; `redis` (django-tasks-redis) moves the queue to KIZUNA_REDIS_URL.
# Either way a task runs at least once, and every Kizuna task claims its job row before working.
TASKS_BACKEND = config.env("KIZUNA_TASKS_BACKEND", "django_tasks_db.DatabaseBackend")
if TASKS_BACKEND == "redis":
    TASKS_BACKEND = "django_tasks_redis.RedisTaskBackend"
TASKS = {"default": {"BACKEND": TASKS_BACKEND, "QUEUES": ["default"]}}
if TASKS_BACKEND.startswith("django_tasks_redis."):
    if not REDIS_URL:
        raise SystemExit("KIZUNA_TASKS_BACKEND=redis needs KIZUNA_REDIS_URL (redis://host:6379/0)")
    INSTALLED_APPS.append("django_tasks_redis")
    TASKS["default"]["OPTIONS"] = {
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": config.env("KIZUNA_REDIS_PREFIX", "kizuna") + ":tasks",
        # A task still running after this long is taken for a dead worker's and run again:
        # longer than the longest import or training.
        "REDIS_CLAIM_TIMEOUT": config.env_int("KIZUNA_TASK_CLAIM_TIMEOUT", 3600),
    }

# --- Events -------------------------------------------------------------------------------
# Stages after identity and enrichment, in order (see kizuna/events/registry.py).
KIZUNA_EVENT_HANDLERS: list[str] = [
    "kizuna.scoring.engine.on_events",  # first: segments read the scores it changes
    "kizuna.segments.membership.on_events",
    "kizuna.landing.services.on_events",  # landing page views and their conversions
    "kizuna.journeys.triggers.on_events",  # last: sees the scores, stages and segments just changed
]
KIZUNA_EVENT_LANES = config.env_int("KIZUNA_EVENT_LANES", 4)
# Enrollments a journey worker claims at once. Set-based steps get cheaper per step with bigger
# batches; on SQLite a batch holds the one writer lock, so it stays small there.
KIZUNA_JOURNEY_BATCH = config.env_int(
    "KIZUNA_JOURNEY_BATCH", 200 if DATABASES["default"]["ENGINE"] == "kizuna.db.sqlite3" else 1000)
KIZUNA_EVENT_MAX_AGE_DAYS = config.env_int("KIZUNA_EVENT_MAX_AGE_DAYS", 730)
KIZUNA_EVENT_RETENTION_DAYS = config.env_int("KIZUNA_EVENT_RETENTION_DAYS", 0)  # 0: kept for ever
KIZUNA_INGEST_GROUP_COMMIT = config.env_bool("KIZUNA_INGEST_GROUP_COMMIT", True)
KIZUNA_PROXY_COUNT = config.env_int("KIZUNA_PROXY_COUNT", 0)
# Form submissions allowed per IP address (per /64 for IPv6) and minute, in bursts of as many.
KIZUNA_FORM_RATE_PER_MINUTE = config.env_int("KIZUNA_FORM_RATE_PER_MINUTE", 10)

# --- Auth -----------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "web:home"
LOGOUT_REDIRECT_URL = "accounts:login"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_MAX_FAILURES = config.env_int("KIZUNA_LOGIN_MAX_FAILURES", 5)
LOGIN_LOCKOUT_SECONDS = config.env_int("KIZUNA_LOGIN_LOCKOUT_SECONDS", 900)
# Two-factor login (TOTP) for every admin; users can also be marked one by one on their page.
KIZUNA_2FA_REQUIRED_FOR_ADMINS = config.env_bool("KIZUNA_2FA_REQUIRED_FOR_ADMINS")

# --- Security -------------------------------------------------------------------------------
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if HTTPS:
    SECURE_HSTS_SECONDS = 31536000
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Webhooks may not reach private, loopback, link-local or metadata addresses (SSRF), checked when
# saved and again, after resolving, when sent; allow them only for receivers on your own network.
KIZUNA_WEBHOOK_ALLOW_PRIVATE = config.env_bool("KIZUNA_WEBHOOK_ALLOW_PRIVATE")
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

# --- i18n -----------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("ja", _("Japanese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = config.env("KIZUNA_TIME_ZONE", "Asia/Tokyo")
USE_I18N = True
USE_TZ = True

# --- Files ----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = DATA_DIR / "media"
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
IMPORT_MAX_BYTES = config.env_int("KIZUNA_IMPORT_MAX_BYTES", 200 * 1024 * 1024)
# Downloadable assets (whitepapers, catalogues): the largest file an upload may be.
ASSET_MAX_BYTES = config.env_int("KIZUNA_ASSET_MAX_BYTES", 50 * 1024 * 1024)

# --- Email ----------------------------------------------------------------------------------
globals().update(config.email_settings(config.env("KIZUNA_EMAIL_URL"), DATA_DIR))
KIZUNA_EMAIL_URL = config.env("KIZUNA_EMAIL_URL") or "capture://"
# Where bounces and mailto unsubscribes are addressed (bounce+<token>@…); default: the sender's domain.
KIZUNA_OUTBOX_BATCH = config.env_int("KIZUNA_OUTBOX_BATCH", 50)
# Waits before each retry of a temporarily refused message, in seconds (default 1 min … 6 h).
KIZUNA_OUTBOX_BACKOFF = [int(s) for s in config.env("KIZUNA_OUTBOX_BACKOFF").split(",") if s.strip()] or None
KIZUNA_BOUNCE_DOMAIN = config.env("KIZUNA_BOUNCE_DOMAIN", "")
# The DNS server the sender check asks (host[:port]); empty: the system's resolver.
KIZUNA_DNS_NAMESERVER = config.env("KIZUNA_DNS_NAMESERVER", "")
DEFAULT_FROM_EMAIL = config.env("KIZUNA_FROM_EMAIL", "kizuna@localhost")

# --- Personal data ----------------------------------------------------------------------------
# Each module lists the models holding a contact's personal data and can export and erase them
# (see kizuna/privacy/registry.py and docs/decisions/0019-personal-data-and-security.md).
KIZUNA_PERSONAL_DATA: list[str] = [
    "kizuna.contacts.personal_data",
    "kizuna.events.personal_data",
    "kizuna.messaging.personal_data",
    "kizuna.scoring.personal_data",
    "kizuna.lifecycle.personal_data",
    "kizuna.segments.personal_data",
    "kizuna.journeys.personal_data",
    "kizuna.handoff.personal_data",
    "kizuna.landing.personal_data",
    "kizuna.assets.personal_data",
    "kizuna.capture.personal_data",
    "kizuna.insights.personal_data",
    "kizuna.accounts.personal_data",  # last: the audit entries about the contact
]

# --- Observability -----------------------------------------------------------------------------
# /metrics answers a bearer token (KIZUNA_METRICS_TOKEN) or these addresses / networks.
KIZUNA_METRICS_TOKEN = config.env("KIZUNA_METRICS_TOKEN")
KIZUNA_METRICS_ALLOWED_IPS = [a.strip() for a in config.env("KIZUNA_METRICS_ALLOWED_IPS", "127.0.0.1,::1").split(",")
                              if a.strip()]
# /readyz answers 503 past these: event processing lag (seconds), messages due in the outbox.
KIZUNA_HEALTH_MAX_LAG = config.env_int("KIZUNA_HEALTH_MAX_LAG", 300)
KIZUNA_READY_MAX_OUTBOX = config.env_int("KIZUNA_READY_MAX_OUTBOX", 100_000)
# Counters of every process on this machine (web workers, the worker) are summed from one
# directory, which prometheus_client reads from its variable before it is first imported.
KIZUNA_METRICS_DIR = Path(config.env("KIZUNA_METRICS_DIR") or DATA_DIR / "metrics")
KIZUNA_METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(KIZUNA_METRICS_DIR)
KIZUNA_LOG_FORMAT = config.choice("KIZUNA_LOG_FORMAT", "plain", ("plain", "json"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "kizuna.web.logs.RequestContext"},  # request id and user on every line
        "redact": {"()": "kizuna.web.logs.RedactSecrets"},  # keys, passwords, tokens never written
        "count_errors": {"()": "kizuna.web.logs.CountErrors"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {"()": "kizuna.web.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": KIZUNA_LOG_FORMAT,
                             "filters": ["context", "redact", "count_errors"]}},
    "root": {"handlers": ["console"], "level": config.env("KIZUNA_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
