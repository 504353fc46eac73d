"""Test helpers for email: a real SMTP server (aiosmtpd) that keeps what it receives, and the
objects a send needs (sender with a DKIM key, topic with consent, template)."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """aiosmtpd handler: every accepted message, with its envelope."""

    def __init__(self, refuse: dict[str, str] | None = None):
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse = refuse or {}
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or
                                  envelope.content))
        return "250 Message accepted for delivery"

    def per_recipient(self) -> Counter:
        with self.lock:
            return Counter(r for _f, rcpts, _d in self.messages for r in rcpts)

    def parsed(self, index: int = -1):
        return message_from_bytes(self.messages[index][2], policy=policy.default)


class SmtpServer:
    def __init__(self, handler: Inbox | None = None, port: int | None = None):
        self.handler = handler or Inbox()
        self.port = port or free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     data_size_limit=10 * 1024 * 1024)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"
