"""From an outbox row to the bytes of a MIME message.

Rendering runs once per message, so everything per version (MJML, CSS inlining, Jinja
compilation, the link table) is cached per process; the MIME text is written directly rather
than through `email.message`, which costs more than the rest of a send.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.utils import timezone
from django.utils.html import escape

from kizuna.messaging import rendering, tokens
from kizuna.messaging.models import Message, MessageKind, Sender, TemplateVersion

_cache: dict[tuple[int, float], tuple[rendering.CompiledTemplate, dict[str, int]]] = {}
_cache_lock = threading.Lock()


def compiled(version: TemplateVersion) -> tuple[rendering.CompiledTemplate, dict[str, int]]:
    """The compiled template and its fixed links (url → position), once per process."""
    # Versions are immutable; the creation time guards against an id reused after a database reset.
    key = (version.pk, version.created_at.timestamp())
    found = _cache.get(key)
    if found is None:
        from kizuna.messaging.models import TemplateLink

        # The stored source is already MJML-converted and CSS-inlined (done once, on save).
        template = rendering.compile_template(version.subject, version.compiled_html, version.text, inline=False)
        links = {url: pos for pos, url in TemplateLink.objects.filter(version=version).values_list("position", "url")}
        found = (template, links)
        with _cache_lock:
            if len(_cache) > 500:
                _cache.clear()
            _cache[key] = found
    return found


def click_url(base: str, token: str, url: str, links: dict[str, int]) -> str:
    """A fixed link is named by its position; one built from variables carries its URL, signed."""
    position = links.get(url)
    if position is not None:
        return f"{base}/e/c/{token}/{position}"
    return f"{base}/e/c/{token}/x?u={quote(url, safe='')}&h={tokens.sign_url(token, url)}"


def tracking_base() -> str:
    return getattr(settings, "KIZUNA_TRACKING_URL", "") or settings.BASE_URL


def bounce_domain(sender: Sender) -> str:
    return getattr(settings, "KIZUNA_BOUNCE_DOMAIN", "") or sender.domain


def unsubscribe_url(token: str) -> str:
    return f"{tracking_base()}/e/u/{token}"


def contact_context(message: Message, token: str) -> dict[str, Any]:
    """What a template can use. Only plain values: the sandbox never sees a model instance."""
    contact = message.contact
    company: dict[str, Any] = {}
    owner: dict[str, Any] = {}
    data: dict[str, Any] = {"email": message.to_email}
    if contact is not None:
        data.update({
            "email": contact.email or message.to_email,
            "family_name": contact.family_name, "given_name": contact.given_name,
            "family_name_kana": contact.family_name_kana, "given_name_kana": contact.given_name_kana,
            "full_name": f"{contact.family_name} {contact.given_name}".strip(),
            "company_name": contact.company_name, "job_title": contact.job_title,
            "department": contact.department, "phone": contact.phone,
            "prefecture": contact.get_prefecture_display() if contact.prefecture else "",
            "lifecycle_stage": contact.lifecycle_stage, "language": contact.language,
            "custom": dict(contact.custom or {}),
        })
        if contact.company_id:
            c = contact.company
            company = {"name": c.name, "domain": c.domain or "", "industry": c.get_industry_display(),
                       "website": c.website, "custom": dict(c.custom or {})}
        elif contact.company_name:
            company = {"name": contact.company_name}
        if contact.owner_id:
            o = contact.owner
            owner = {"name": o.get_full_name() or o.get_username(), "email": o.email}
    return {
        **rendering.provided_context(message),  # what other apps add (assets: asset_url, download_url)
        "contact": data, "company": company, "owner": owner,
        "unsubscribe_url": unsubscribe_url(token), "preferences_url": unsubscribe_url(token),
        **(message.extra.get("context", {}) if isinstance(message.extra, dict) else {}),
    }


def footer(sender: Sender, kind: str, token: str) -> tuple[str, str]:
    """Sender's name and postal address (特定電子メール法) and the unsubscribe link."""
    if kind != MessageKind.MARKETING:
        return "", ""
    url = unsubscribe_url(token)
    lines = [sender.organisation, sender.postal_address]
    if sender.contact_info:
        lines.append(sender.contact_info)
    html = (
        '<div style="margin-top:24px;padding-top:12px;border-top:1px solid #ddd;font-size:12px;color:#666">'
        + "<br>".join(escape(line) for line in lines)
        + f'<br><a href="{escape(url)}" data-kizuna-notrack>配信停止・配信設定 / Unsubscribe</a></div>'
    )
    text = "\n\n--\n" + "\n".join(lines) + f"\n配信停止・配信設定 / Unsubscribe: {url}\n"
    return html, text


@dataclass(slots=True)
class Composed:
    envelope_from: str
    recipient: str
    message_id: str
    data: bytes
    subject: str
    links: list[str]


def _b64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))


def _header(value: str) -> str:
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name="Subject").encode(linesep="\r\n")


def _from(sender: Sender) -> str:
    return formataddr((sender.from_name, sender.from_email), charset="utf-8")


def compose(message: Message, *, sign: bool = True) -> Composed:
    """The full message: headers (List-Unsubscribe, Message-ID …), text and HTML parts,
    tracked links and the open pixel; DKIM-signed when the sender has a key."""
    version = message.version
    sender = message.sender
    token = tokens.make(message.pk)
    base = tracking_base()
    ctx = contact_context(message, token)
    footer_html, footer_text = footer(sender, message.kind, token)
    template, links = compiled(version)
    rendered = rendering.render(
        template, ctx, link_rewriter=lambda url, _index: click_url(base, token, url, links),
        footer_html=footer_html, footer_text=footer_text,
    )
    html = rendered.html
    pixel = f'<img src="{base}/e/o/{token}.gif" width="1" height="1" alt="" style="display:block;border:0">'
    position = html.rfind("</body>")
    html = html[:position] + pixel + html[position:] if position >= 0 else html + pixel
    domain = bounce_domain(sender)
    message_id = f"<{token}@{domain}>"
    envelope_from = f"bounce+{token}@{domain}"
    boundary = f"=_kz_{token}"
    headers = [
        f"From: {_from(sender)}",
        f"To: {message.to_email}",
        f"Subject: {_header(rendered.subject)}",
        f"Date: {format_datetime(timezone.now())}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
    ]
    if sender.reply_to:
        headers.append(f"Reply-To: {sender.reply_to}")
    if message.kind == MessageKind.MARKETING:
        headers += [
            f"List-Unsubscribe: <{unsubscribe_url(token)}>, <mailto:unsubscribe+{token}@{domain}>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "Precedence: bulk",
        ]
        if message.bulk_id:
            headers.append(f"Feedback-ID: {message.bulk_id}:bulk:{domain}")
    headers += [f"X-Kizuna-Message: {token}",
                f'Content-Type: multipart/alternative; boundary="{boundary}"']
    body = (
        "\r\n".join(headers) + "\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + _b64_lines(rendered.text.encode()) + "\r\n"
        f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + _b64_lines(html.encode()) + f"\r\n--{boundary}--\r\n"
    ).encode()
    if sign and sender.dkim_selector and sender.dkim_private_key:
        from kizuna.messaging.dkim import sign as dkim_sign

        body = dkim_sign(body, sender) + body
    return Composed(envelope_from, message.to_email, message_id, body, rendered.subject, rendered.links)
