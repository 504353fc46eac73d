"""Sending an asset by email, and the asset variables of email templates.

`deliver(asset, contact, key=…)` queues the asset's delivery mail through the outbox: the mail
the asset names (any email template that uses `{{ download_url }}`), or the built-in one in the
contact's language. It is transactional (the contact asked for it), its outbox key is
`asset:<key>`, so the same key never queues a second mail, and the link in it is made when the
mail is composed: it expires `link_days` after sending, not after queueing.

Every template can also link an asset itself: `{{ asset_url('whitepaper-2026') }}` renders a
personal link for the recipient, which the outbox click-tracks like any link built from a
variable (docs/decisions/0016-assets.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from kizuna.assets import links
from kizuna.assets.models import Asset
from kizuna.contacts.models import Contact
from kizuna.messaging import outbox
from kizuna.messaging.models import EmailTemplate, Message, MessageKind, Sender, TemplateVersion

KEY_PREFIX = "asset:"
MAX_KEY = 190  # the outbox key is at most 200 characters


class DeliveryError(ValueError):
    """The mail cannot be queued; the message says what to fix."""


_STYLE = """<style>
  body { font-family: sans-serif; color: #222; line-height: 1.7; }
  .button { display: inline-block; background: #1f6feb; color: #ffffff; padding: 10px 20px; border-radius: 4px;
            text-decoration: none; }
  .small { color: #666; font-size: 13px; }
</style>"""

BUILTIN: dict[str, dict[str, str]] = {
    "ja": {
        "name": "資料送付メール（標準・日本語）",
        "subject": "「{{ asset.name }}」ダウンロードのご案内",
        "html": f"""<html><head>{_STYLE}</head><body>
<p>{{% if contact.company_name %}}{{{{ contact.company_name }}}}<br>{{% endif %}}
{{{{ contact.family_name | default("ご担当者") }}}} 様</p>
<p>このたびは「{{{{ asset.name }}}}」をご請求いただき、誠にありがとうございます。<br>
下記のボタンから資料をダウンロードいただけます。</p>
<p><a class="button" href="{{{{ download_url }}}}">資料をダウンロードする</a></p>
<p class="small">ファイル：{{{{ asset.file_name }}}}（{{{{ asset.size }}}}）<br>
リンクの有効期限：{{{{ expires_at | date("%Y年%m月%d日（%J）%H:%M") }}}}<br>
有効期限が切れた場合は、リンク先のページから新しいリンクをお申し込みいただけます。</p>
<p class="small">本メールは、資料をご請求いただいたメールアドレスにお送りしています。<br>
お心当たりのない場合は、お手数ですが本メールを破棄してください。</p>
</body></html>""",
    },
    "en": {
        "name": "Asset delivery mail (built-in, English)",
        "subject": "Your download: {{ asset.name }}",
        "html": f"""<html><head>{_STYLE}</head><body>
<p>{{% if contact.given_name or contact.family_name %}}Dear {{{{ contact.given_name }}}} {{{{ contact.family_name }}}},
{{% else %}}Hello,{{% endif %}}</p>
<p>Thank you for requesting “{{{{ asset.name }}}}”. You can download it with the button below.</p>
<p><a class="button" href="{{{{ download_url }}}}">Download</a></p>
<p class="small">File: {{{{ asset.file_name }}}} ({{{{ asset.size }}}})<br>
The link is valid until {{{{ expires_at | date("%Y-%m-%d %H:%M") }}}} (Japan time). If it has expired, the page
it opens lets you ask for a new one.</p>
<p class="small">You receive this email because this document was requested with your address. If that was
not you, please ignore it.</p>
</body></html>""",
    },
}


def human_size(size: int) -> str:
    """1234567 → "1.2 MB": the same in Japanese and English mail."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def asset_variables(asset: Asset) -> dict[str, Any]:
    from kizuna.assets.sniffing import KINDS

    kind = KINDS.get(asset.file_type)
    return {"name": asset.name, "description": asset.description, "file_name": asset.file_name,
            "file_type": kind.extension.lstrip(".").upper() if kind else "", "size": human_size(asset.size)}


def default_sender() -> Sender | None:
    return Sender.objects.filter(is_default=True).first() or Sender.objects.order_by("pk").first()


def builtin_template(language: str = "ja") -> EmailTemplate:
    """The built-in delivery mail for a language, made on first use. It is an ordinary template:
    a marketer may edit it under Email templates, and the edited version is what is sent."""
    from kizuna.messaging.templates_service import save_version

    source = BUILTIN["en" if language == "en" else "ja"]
    template, created = EmailTemplate.objects.get_or_create(
        name=source["name"], defaults={"kind": MessageKind.TRANSACTIONAL, "sender": default_sender()})
    if template.current_id is None:
        save_version(template, subject=source["subject"], html=source["html"])
    return template


def uses_download_link(version: TemplateVersion) -> bool:
    return "download_url" in version.subject + version.html + version.text


def delivery_mail(asset: Asset, contact: Contact) -> tuple[TemplateVersion, Sender]:
    """The version and sender of the mail that sends `asset` to `contact`."""
    template = asset.delivery_template
    if template is None or template.current_id is None:
        template = builtin_template(contact.language)
    sender = template.sender or default_sender()
    if sender is None:
        raise DeliveryError(_("No email sender is set up: add one under Settings → Email senders."))
    return template.current, sender


def queue(asset: Asset, contact: Contact, *, key: str) -> tuple[Message, bool]:
    """deliver(), also saying whether this call queued the mail (False: the key was used before)."""
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY:
        raise DeliveryError(_("The delivery key must be 1 to %(n)s characters.") % {"n": MAX_KEY})
    full_key = KEY_PREFIX + key
    existing = Message.objects.filter(idempotency_key=full_key).first()
    if existing is not None:
        delivered = (existing.extra or {}).get("asset_delivery") or {}
        if existing.contact_id != contact.pk or delivered.get("asset") != asset.pk:
            raise DeliveryError(_("The key “%(key)s” was already used to send another asset or to another contact.")
                                % {"key": key})
        return existing, False
    if not contact.email:
        raise DeliveryError(_("The contact has no email address."))
    version, sender = delivery_mail(asset, contact)
    try:
        return outbox.enqueue(contact, version, key=full_key, kind=MessageKind.TRANSACTIONAL, sender=sender,
                              extra={"asset_delivery": {"asset": asset.pk}})
    except ValueError as exc:
        raise DeliveryError(str(exc)) from exc


def deliver(asset: Asset, contact: Contact, *, key: str) -> Message:
    """Queues the delivery mail of `asset` to `contact`, with a personal, expiring download link.

    Idempotent by `key`: the same key returns the mail queued the first time and never sends a
    second one (the outbox row's key is "asset:" + key). Raises DeliveryError when the mail
    cannot be queued (no email address, no sender, a key already used for something else)."""
    message, _created = queue(asset, contact, key=key)
    return message


# --- template variables --------------------------------------------------------------------------------

def find_asset(ref: Any) -> Asset:
    """An asset by merge-tag name or id, for `asset_url(…)`; LookupError names what is missing."""
    found = None
    if isinstance(ref, int) and not isinstance(ref, bool):
        found = Asset.objects.filter(pk=ref).first()
    elif isinstance(ref, str) and ref.strip():
        found = Asset.objects.filter(slug=ref.strip().lower()).first()
    if found is None:
        raise LookupError(f"asset_url: no asset is named {ref!r} (the names are on the Assets page)")
    return found


def _sample_context() -> dict[str, Any]:
    base = links.base_url()

    def asset_url(ref: Any) -> str:
        return f"{base}/d/preview-{find_asset(ref).slug}"

    return {
        "asset_url": asset_url, "download_url": f"{base}/d/preview",
        "asset": {"name": "製品カタログ 2026", "description": "", "file_name": "catalog-2026.pdf", "file_type": "PDF",
                  "size": "2.4 MB"},
        "expires_at": timezone.now() + timedelta(days=7),
    }


def template_context(message: Message | None) -> dict[str, Any]:
    """The asset variables of a message being composed (registered with rendering)."""
    if message is None or message.pk is None:
        return _sample_context()  # previews, and the check when a template is saved
    contact_id = message.contact_id

    def asset_url(ref: Any) -> str:
        if contact_id is None:
            raise LookupError("asset_url: the message has no contact")
        return links.download_url(find_asset(ref), contact_id, message_id=message.pk)

    context: dict[str, Any] = {"asset_url": asset_url}
    delivery = (message.extra or {}).get("asset_delivery") if isinstance(message.extra, dict) else None
    if delivery:
        asset = Asset.objects.filter(pk=delivery.get("asset")).first()
        if asset is None:
            raise LookupError("the asset this mail delivers was deleted")
        if contact_id is None:
            raise LookupError("the contact of this delivery mail was deleted")
        expires = links.expiry_for(asset)
        context.update({
            "download_url": links.download_url(asset, contact_id, message_id=message.pk, expires_at=expires),
            "asset": asset_variables(asset), "expires_at": expires,
        })
    return context
