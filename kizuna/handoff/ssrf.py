"""Webhook targets that cannot be turned against the machine Kizuna runs on (SSRF).

A webhook URL is typed by a user, and Kizuna's worker POSTs to it from inside the network: to
127.0.0.1:5432, to the cloud metadata service at 169.254.169.254, to an intranet admin page.
So a target must be a public address:

- checked when the webhook is saved (`check_url`), and again when each notice is sent, after
  resolving the name (`post`): a name that resolved to a public address at save time may
  resolve to 127.0.0.1 later (DNS rebinding);
- the connection goes to the very address that was checked (the name is not resolved twice),
  with the Host header and TLS server name of the URL;
- redirects are not followed (a public receiver could redirect to a private one);
- refused: private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local (169.254/16
  with the metadata service, fe80::/10), multicast, shared (100.64/10), reserved and unspecified
  addresses, and IPv6 forms that carry an IPv4 one (::ffff:a.b.c.d, 64:ff9b::/96, 2002::/16).

KIZUNA_WEBHOOK_ALLOW_PRIVATE=1 lifts the rule, for receivers on one's own network (and tests).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeTarget(ValueError):
    """The URL may not be called; the message says why, in words an admin can act on."""


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return None


def refusal(address: Address) -> str | None:
    """Why this address may not be a webhook target, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_v4(address)
        if inner is not None:
            reason = refusal(inner)
            return f"{reason} (inside the IPv6 address {address})" if reason else None
    if address.is_loopback:
        return f"{address} is a loopback address (this machine)"
    if address.is_link_local:
        return f"{address} is a link-local address (cloud metadata services live here)"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_private or not address.is_global:
        return f"{address} is a private or reserved address (an internal network)"
    return None


def allow_private() -> bool:
    return bool(getattr(settings, "KIZUNA_WEBHOOK_ALLOW_PRIVATE", False))


def _parts(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"the URL is not valid: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeTarget("only http:// and https:// addresses can receive webhooks")
    host = parts.hostname or ""
    if not host:
        raise UnsafeTarget("the URL has no host name")
    return scheme, host, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[Address]:
    """Every address the name resolves to, each one checked: one private answer among public
    ones is enough to refuse, since the connection could go to any of them."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UnsafeTarget(f"the host name {host} could not be resolved ({exc})") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not allow_private():
        for address in addresses:
            reason = refusal(address)
            if reason:
                where = reason if literal is not None else f"{host} resolves to {reason}"
                raise UnsafeTarget(f"{where}; webhooks may only go to public addresses (an administrator can "
                                   f"allow internal ones with KIZUNA_WEBHOOK_ALLOW_PRIVATE=1)")
    if not addresses:
        raise UnsafeTarget(f"the host name {host} has no address")
    return addresses


def check_url(url: str) -> None:
    """For forms: raises UnsafeTarget when the URL may not receive webhooks now."""
    _scheme, host, port = _parts(url)
    resolve(host, port)


class _Pinned:
    """Connects to the checked address, not to whatever the name resolves to by then."""

    def _pin(self, address: Address, port: int) -> None:
        def connect(_address, timeout=None, source_address=None):
            return socket.create_connection((str(address), port), timeout, source_address)

        self._create_connection = connect


class PinnedHTTPConnection(_Pinned, http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: Address, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._pin(address, port)


class PinnedHTTPSConnection(_Pinned, http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: Address, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._pin(address, port)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """POSTs to a checked, pinned address; (status, reason). Raises UnsafeTarget or OSError."""
    scheme, host, port = _parts(url)
    address = resolve(host, port)[0]
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    cls = PinnedHTTPSConnection if scheme == "https" else PinnedHTTPConnection
    conn = cls(host, port, address, timeout)
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)  # the receiver's answer is not used; read a little so it is not reset
        return response.status, response.reason
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from exc
    finally:
        conn.close()
