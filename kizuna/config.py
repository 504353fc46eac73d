"""Reading Kizuna's configuration from the environment (and an optional `.env` file).

Kept apart from settings.py so the CLI can resolve the data directory and secret key
before Django starts, and so each rule is testable on its own.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dotenv import load_dotenv

TRUE_WORDS = {"1", "true", "yes", "on"}


def load_env_file() -> None:
    """Loads `.env` from the working directory; real environment variables win."""
    load_dotenv(Path.cwd() / ".env", override=False)


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    return default if not value else value.lower() in TRUE_WORDS


def env_int(name: str, default: int) -> int:
    value = env(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a whole number, not {value!r}") from exc


def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env(name, default).lower()
    if value not in allowed:
        raise SystemExit(f"{name} must be {' or '.join(allowed)}, not {value!r}")
    return value


def data_dir() -> Path:
    path = Path(env("KIZUNA_DATA_DIR", "./var")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def secret_key(directory: Path) -> str:
    """The configured key, or one generated on first run and kept (mode 0600) in the data dir."""
    configured = env("KIZUNA_SECRET_KEY")
    if configured:
        return configured
    path = directory / "secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def email_settings(url: str, directory: Path) -> dict[str, object]:
    """Maps KIZUNA_EMAIL_URL to Django's MAILERS setting.

    smtp://user:pass@host:port (STARTTLS with ?starttls=1), smtps://… (implicit TLS),
    console://, capture:// (messages kept as files under the data dir for the demo).
    """
    if not url:
        url = "capture://"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme in {"smtp", "smtps"}:
        mailer = {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": parts.hostname or "localhost",
                "port": parts.port or (465 if scheme == "smtps" else 25),
                "username": unquote(parts.username or ""),
                "password": unquote(parts.password or ""),
                "use_ssl": scheme == "smtps",
                "use_tls": scheme == "smtp" and query.get("starttls", "") in TRUE_WORDS,
                "timeout": 30,
            },
        }
    elif scheme == "console":
        mailer = {"BACKEND": "django.core.mail.backends.console.EmailBackend"}
    elif scheme == "capture":
        mail_dir = directory / "mail"
        mail_dir.mkdir(exist_ok=True)
        mailer = {
            "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "OPTIONS": {"file_path": str(mail_dir)},
        }
    elif scheme in ESP_BACKENDS:
        mailer = {"BACKEND": f"anymail.backends.{ESP_BACKENDS[scheme]}.EmailBackend"}
        return {"MAILERS": {"default": mailer}, "ANYMAIL": esp_settings(scheme, parts, query)}
    else:
        raise SystemExit(
            f"KIZUNA_EMAIL_URL scheme {scheme!r} is not supported; use smtp://, smtps://, console://, "
            f"capture:// or an ESP: {', '.join(f'{name}://' for name in ESP_BACKENDS)}"
        )
    return {"MAILERS": {"default": mailer}}


# ESPs through django-anymail: the URL's user part is the API key (or access key id for SES).
ESP_BACKENDS = {
    "ses": "amazon_ses", "sendgrid": "sendgrid", "mailgun": "mailgun", "postmark": "postmark",
    "brevo": "brevo", "sparkpost": "sparkpost", "resend": "resend", "mailersend": "mailersend",
    "mailjet": "mailjet",
}


def esp_settings(scheme: str, parts, query: dict[str, str]) -> dict[str, object]:
    """sendgrid://KEY@, postmark://TOKEN@, mailgun://KEY@mg.example.com, mailjet://KEY:SECRET@,
    ses://ACCESS_KEY:SECRET@ap-northeast-1 (or ses:// with AWS credentials from the environment)."""
    user, password, host = unquote(parts.username or ""), unquote(parts.password or ""), parts.hostname or ""
    settings: dict[str, object] = {"WEBHOOK_SECRET": env("KIZUNA_WEBHOOK_SECRET")} if env("KIZUNA_WEBHOOK_SECRET") \
        else {}
    if scheme == "ses":
        client: dict[str, object] = {"region_name": host or query.get("region", "ap-northeast-1")}
        if user:
            client.update({"aws_access_key_id": user, "aws_secret_access_key": password})
        settings["AMAZON_SES_CLIENT_PARAMS"] = client
    elif scheme == "postmark":
        settings["POSTMARK_SERVER_TOKEN"] = user
    elif scheme == "mailjet":
        settings.update({"MAILJET_API_KEY": user, "MAILJET_SECRET_KEY": password})
    else:
        settings[f"{scheme.upper()}_API_KEY"] = user
        if scheme == "mailgun" and host:
            settings["MAILGUN_SENDER_DOMAIN"] = host
    return settings
