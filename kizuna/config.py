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
    else:
        raise SystemExit(
            f"KIZUNA_EMAIL_URL scheme {scheme!r} is not supported; "
            "use smtp://, smtps://, console:// or capture://"
        )
    return {"MAILERS": {"default": mailer}}
