"""What happens when a lead turns hot: an owner is chosen and the notices are queued.

Runs inside the transaction that records the alert (during event processing), so the owner, the
hand-off and its deliveries are stored together with the alert or not at all. Sending happens
later, in the worker (`kizuna.handoff.delivery`), never inside that transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from kizuna.contacts.models import Contact
from kizuna.handoff.assignment import choose_owner
from kizuna.handoff.models import Delivery, Handoff, HandoffSettings, Webhook
from kizuna.scoring.models import LeadAlert


def on_lead_turned_hot(sender, alerts: Sequence[LeadAlert], **kwargs) -> None:
    if not alerts:
        return
    config = HandoffSettings.current()
    webhooks = list(Webhook.objects.filter(active=True))
    contacts = Contact.objects.select_related("owner", "company", "company__owner").in_bulk(
        [a.contact_id for a in alerts])
    deliveries: list[Delivery] = []
    for alert in alerts:
        contact = contacts.get(alert.contact_id)
        if contact is None:
            continue
        owner, how, route = choose_owner(contact, config)
        if owner is not None and contact.owner_id != owner.pk:
            Contact.objects.filter(pk=contact.pk).update(owner=owner)
        Handoff.objects.create(alert=alert, owner=owner, how=how, route=route)
        address = owner.email if owner is not None and owner.email else config.fallback_email
        if config.email_owner and address:
            deliveries.append(Delivery(alert=alert, email=address))
        deliveries.extend(Delivery(alert=alert, webhook=hook) for hook in webhooks)
    Delivery.objects.bulk_create(deliveries)
