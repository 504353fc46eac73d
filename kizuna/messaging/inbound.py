"""Receiving what comes back: Kizuna's own SMTP listener for bounce+…@ and unsubscribe+…@
addresses (point the bounce domain's MX at it), or polling a mailbox over IMAP or POP3."""

from __future__ import annotations

import imaplib
import logging
import poplib
from urllib.parse import unquote, urlsplit

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from kizuna.messaging import feedback

log = logging.getLogger(__name__)


def _handle(raw: bytes, rcpt: str, source: str) -> list[str]:
    close_old_connections()
    try:
        return feedback.handle_raw(raw, envelope_to=rcpt, source=source)
    finally:
        close_old_connections()


class InboundHandler:
    """aiosmtpd handler: accepts only Kizuna's own return addresses, so it is no open relay."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not feedback._LOCAL_TOKEN.match(address):  # noqa: SLF001 - the module's own address rule
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        for rcpt in envelope.rcpt_tos:
            try:
                for line in await sync_to_async(_handle, thread_sensitive=False)(raw, rcpt, "smtp"):
                    log.info("inbound: %s", line)
            except Exception:  # noqa: BLE001 - accepted mail must not be lost to a parsing bug
                log.exception("inbound message to %s could not be handled", rcpt)
                return "451 4.3.0 Could not process the message now, try again later"
        return "250 Message accepted"


def serve(host: str, port: int):
    from aiosmtpd.controller import Controller

    controller = Controller(InboundHandler(), hostname=host, port=port, data_size_limit=10 * 1024 * 1024)
    controller.start()
    return controller


def poll_mailbox(url: str, *, delete: bool = True) -> list[str]:
    """imaps://user:pass@host/INBOX or pop3s://user:pass@host: handles every message, then
    deletes it (or marks it seen on IMAP when delete is False)."""
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    scheme = parts.scheme.lower()
    results: list[str] = []
    if scheme in ("imap", "imaps"):
        client = (imaplib.IMAP4_SSL if scheme == "imaps" else imaplib.IMAP4)(parts.hostname, parts.port or (
            993 if scheme == "imaps" else 143))
        client.login(user, password)
        client.select(unquote(parts.path.strip("/")) or "INBOX")
        _typ, data = client.search(None, "UNSEEN")
        for number in data[0].split():
            _typ, fetched = client.fetch(number, "(RFC822)")
            raw = fetched[0][1]
            results += _handle(raw, _envelope_to(raw), "imap")
            client.store(number, "+FLAGS", "\\Deleted" if delete else "\\Seen")
        if delete:
            client.expunge()
        client.logout()
    elif scheme in ("pop3", "pop3s"):
        client = (poplib.POP3_SSL if scheme == "pop3s" else poplib.POP3)(parts.hostname, parts.port or (
            995 if scheme == "pop3s" else 110))
        client.user(user)
        client.pass_(password)
        count, _size = client.stat()
        for number in range(1, count + 1):
            _resp, lines, _octets = client.retr(number)
            raw = b"\r\n".join(lines)
            results += _handle(raw, _envelope_to(raw), "pop3")
            if delete:
                client.dele(number)
        client.quit()
    else:
        raise ValueError(f"unsupported mailbox URL scheme {scheme!r}: use imap(s):// or pop3(s)://")
    return results


def _envelope_to(raw: bytes) -> str:
    """A mailbox keeps the envelope recipient in Delivered-To / X-Original-To / To."""
    from email.parser import BytesHeaderParser

    headers = BytesHeaderParser().parsebytes(raw)
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To"):
        for value in headers.get_all(name) or []:
            address = value.strip().strip("<>")
            if feedback._LOCAL_TOKEN.match(address):  # noqa: SLF001
                return address
    return ""
