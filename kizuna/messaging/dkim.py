"""DKIM signing for mail Kizuna hands to an SMTP server itself (ESPs sign their own)."""

from __future__ import annotations

import dkim

from kizuna.messaging.models import Sender

SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"reply-to",
                  b"list-unsubscribe", b"list-unsubscribe-post", b"content-type", b"feedback-id"]


def sign(data: bytes, sender: Sender) -> bytes:
    """The DKIM-Signature header line(s) for `data`, for the domain of the from address.
    List-Unsubscribe-Post is signed as RFC 8058 asks for one-click to be trusted."""
    return dkim.sign(
        data, sender.dkim_selector.encode(), sender.domain.encode(), sender.dkim_private_key.encode(),
        include_headers=SIGNED_HEADERS, linesep=b"\r\n",
    )


def generate_key() -> tuple[str, str]:
    """A new 2048-bit key: (private key PEM, the DNS TXT value to publish)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
