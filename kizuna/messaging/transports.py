"""Transports: how composed bytes leave Kizuna.

- `SmtpTransport`: Kizuna's own SMTP client on pooled connections (one per sending thread),
  STARTTLS or implicit TLS. It writes the message body, notes in the worker's journal that the
  final dot is about to go, sends it, and notes the server's answer: the journal is what lets a
  restarted worker tell a delivered message from one that was never completed (see outbox).
- `CaptureTransport`: keeps the message in the database for the demo's mail viewer.
- `DjangoTransport`: any Django email backend, notably django-anymail's ESP backends; the
  outbox's token goes with the message as metadata so webhooks map back to it.

Failures are `TemporaryFailure` (retry with backoff) or `PermanentFailure` (recorded).
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from django.conf import settings

from kizuna.messaging.compose import Composed

TRUE_WORDS = {"1", "true", "yes", "on"}


class TemporaryFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


Journal = Callable[[str], None]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str = ""
    password: str = ""
    implicit_tls: bool = False
    starttls: bool = False
    verify: bool = True
    timeout: float = 30.0
    connections: int = 4

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        implicit = parts.scheme.lower() == "smtps"
        return cls(
            host=parts.hostname or "localhost", port=parts.port or (465 if implicit else 25),
            username=unquote(parts.username or ""), password=unquote(parts.password or ""),
            implicit_tls=implicit, starttls=query.get("starttls", "").lower() in TRUE_WORDS,
            verify=query.get("verify", "1").lower() in TRUE_WORDS,
            timeout=float(query.get("timeout", 30)), connections=int(query.get("connections", 4)),
        )


def _classify(code: int, text: str) -> Exception:
    message = f"{code} {text}".strip()
    return TemporaryFailure(message) if 400 <= code < 500 or code < 200 else PermanentFailure(message)


class SmtpConnection:
    """One SMTP session reused for many messages (RSET between them)."""

    def __init__(self, config: SmtpConfig):
        self.config = config
        self.smtp: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.config.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def open(self) -> smtplib.SMTP:
        if self.smtp is not None:
            return self.smtp
        c = self.config
        try:
            if c.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self._context())
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            # The body and the final dot go out as two writes (see send): without NODELAY, Nagle's
            # algorithm and the server's delayed ACK hold every message ~40 ms.
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if c.starttls:
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if c.username:
                smtp.login(c.username, c.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise TemporaryFailure(f"SMTP login refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryFailure(f"cannot connect to {c.host}:{c.port}: {exc}") from exc
        self.smtp = smtp
        return smtp

    def close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (OSError, smtplib.SMTPException):
                self.smtp.close()
            self.smtp = None

    def _drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def send(self, mail: Composed, journal: Journal, key: str) -> str:
        """Sends one message; returns the server's acceptance text as the provider id."""
        smtp = self.open()
        try:
            code, text = smtp.mail(mail.envelope_from)
            if code != 250:
                smtp.rset()
                raise _classify(code, text.decode(errors="replace"))
            code, text = smtp.rcpt(mail.recipient)
            if code not in (250, 251):
                smtp.rset()
                raise _classify(code, text.decode(errors="replace"))
            code, text = smtp.docmd("DATA")
            if code != 354:
                smtp.rset()
                raise _classify(code, text.decode(errors="replace"))
            body = smtplib._quote_periods(mail.data)  # noqa: SLF001 - the dot-stuffing smtplib uses
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            smtp.send(body)
            # From here the server holds the whole message; it is delivered once the dot
            # leaves this process, so say so first.
            journal(f"F {key}\n")
            smtp.send(b".\r\n")
            code, text = smtp.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise TemporaryFailure(f"connection lost: {exc}") from exc
        reply = text.decode(errors="replace")
        journal(f"{'S' if code == 250 else 'R'} {key}\n")
        if code != 250:
            raise _classify(code, reply)
        return reply[:255]


class SmtpTransport:
    name = "smtp"
    journaled = True

    def __init__(self, config: SmtpConfig):
        self.config = config

    def connection(self) -> SmtpConnection:
        return SmtpConnection(self.config)


class CaptureConnection:
    """Stores the message; runs inside the outbox's transaction, so it is exactly once."""

    def send(self, mail: Composed, journal: Journal, key: str) -> str:
        from kizuna.messaging.models import CapturedMail

        CapturedMail.objects.create(message_id=int(key), envelope_to=mail.recipient, raw=mail.data)
        return "captured"

    def close(self) -> None:
        pass


class CaptureTransport:
    name = "capture"
    journaled = False
    in_transaction = True

    def connection(self) -> CaptureConnection:
        return CaptureConnection()


class DjangoConnection:
    def __init__(self, backend: str, options: dict):
        from django.utils.module_loading import import_string

        self.connection = import_string(backend)(**options)

    def send(self, mail: Composed, journal: Journal, key: str) -> str:
        from email import message_from_bytes, policy

        from django.core.mail import EmailMultiAlternatives

        parsed = message_from_bytes(mail.data, policy=policy.default)
        text = parsed.get_body(("plain",))
        html = parsed.get_body(("html",))
        email = EmailMultiAlternatives(
            subject=mail.subject, body=text.get_content() if text else "", from_email=str(parsed["From"]),
            to=[mail.recipient], connection=self.connection,
            headers={k: str(v) for k, v in parsed.items()
                     if k.lower() in {"list-unsubscribe", "list-unsubscribe-post", "message-id", "reply-to",
                                      "x-kizuna-message", "feedback-id"}},
        )
        if html is not None:
            email.attach_alternative(html.get_content(), "text/html")
        email.metadata = {"kizuna_message": key}  # read by anymail ESPs, ignored by others
        email.track_clicks = False  # Kizuna tracks; an ESP's own tracking would double count
        email.track_opens = False
        try:
            sent = email.send()
        except Exception as exc:  # an ESP's API error; its class depends on the backend
            status = getattr(exc, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500 and status != 429:
                raise PermanentFailure(str(exc)[:500]) from exc
            raise TemporaryFailure(str(exc)[:500]) from exc
        if not sent:
            raise TemporaryFailure("the backend sent nothing")
        status = getattr(email, "anymail_status", None)
        return (getattr(status, "message_id", None) or "") if status else ""

    def close(self) -> None:
        pass


class DjangoTransport:
    journaled = False

    def __init__(self, backend: str, options: dict):
        self.name = backend.rsplit(".", 2)[-2] if "." in backend else backend
        self.backend, self.options = backend, options

    def connection(self) -> DjangoConnection:
        return DjangoConnection(self.backend, self.options)


def from_settings():
    """The transport KIZUNA_EMAIL_URL names (capture:// when unset)."""
    url = getattr(settings, "KIZUNA_EMAIL_URL", "") or os.environ.get("KIZUNA_EMAIL_URL", "") or "capture://"
    scheme = urlsplit(url).scheme.lower()
    if scheme in {"smtp", "smtps"}:
        return SmtpTransport(SmtpConfig.from_url(url))
    if scheme == "capture":
        return CaptureTransport()
    mailer = settings.MAILERS["default"]
    return DjangoTransport(mailer["BACKEND"], dict(mailer.get("OPTIONS", {})))
