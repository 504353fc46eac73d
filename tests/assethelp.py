"""Shared set-up for asset tests: small real files, a sender and a contact, stored assets, and raw
multipart bodies (the test client would clean a file name before the server ever saw it)."""

from __future__ import annotations

import io
import os
import re
import zipfile
from email import message_from_bytes, policy

from kizuna.assets import services
from kizuna.contacts.models import Contact
from kizuna.messaging.models import Sender

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def pdf_bytes(size: int = 3000) -> bytes:
    """A small PDF whose body is random (so each one has its own hash)."""
    body = os.urandom(size)
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nstream\n" + body + b"\nendstream\n%%EOF\n"


def png_bytes() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(200)


def office_bytes(main_part: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(main_part, "<document/>")
    return buffer.getvalue()


def sender() -> Sender:
    return Sender.objects.create(
        name="Marketing", from_name="株式会社キズナ", from_email="news@kizuna.example", organisation="株式会社キズナ",
        postal_address="東京都千代田区丸の内1-1-1", is_default=True)


def contact(email: str = "yamada@example.co.jp", **fields) -> Contact:
    return Contact.objects.create(email=email, family_name=fields.pop("family_name", "山田"),
                                  company_name=fields.pop("company_name", "丸山精機株式会社"), **fields)


def asset(data: bytes | None = None, name: str = "製品カタログ 2026.pdf", title: str = "製品カタログ 2026", **fields):
    accepted = services.accept(io.BytesIO(pdf_bytes() if data is None else data), name)
    return services.create(accepted, name=title, **fields)


def multipart(fields: dict[str, str], file_field: str, file_name: str, data: bytes,
              content_type: str = "application/pdf") -> tuple[bytes, str]:
    """A multipart/form-data body with the file name exactly as given."""
    boundary = "----kizunatest" + os.urandom(6).hex()
    parts = []
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{file_name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n")
    parts.append(head.encode("utf-8") + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def html_part(raw: bytes) -> str:
    mail = message_from_bytes(raw, policy=policy.default)
    return mail.get_body(("html",)).get_content()


def links_in(html: str) -> list[str]:
    return [m.replace("&amp;", "&") for m in re.findall(r'href="([^"]+)"', html)]


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def login(client, role: str = "admin"):
    """Logs a user of `role` in; no password (hashing one costs a third of a second)."""
    from kizuna.accounts.models import User

    user = User(username=f"{role}-{os.urandom(3).hex()}", role=role)
    user.set_unusable_password()
    user.save()
    client.force_login(user)
    return client
