"""What the tracker sends where, for the public page Japan's external-transmission rule asks for
(電気通信事業法 第27条の12, 外部送信規律): the information sent, where it goes, what for, and for
how long it is kept. Built from the tracker itself (its cookie names are read from tracker.js)
and from the live settings, so the page cannot drift from what the script does."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from kizuna.events.http import TRACKER_FILE
from kizuna.events.models import TrackingSettings, WriteKey
from kizuna.privacy.models import PrivacySettings

_NAMES = re.compile(r"const AID = '(\w+)', UID = '(\w+)', CONSENT = '(\w+)', AGE = (\d+)")


@dataclass(frozen=True)
class Item:
    name: str
    detail: str


def tracker_constants() -> dict[str, str | int]:
    match = _NAMES.search(TRACKER_FILE.read_text(encoding="utf-8"))
    if match is None:  # a renamed constant must be noticed, not shown wrong
        raise RuntimeError("tracker.js no longer declares AID, UID, CONSENT and AGE as expected")
    aid, uid, consent, age = match.groups()
    return {"aid": aid, "uid": uid, "consent": consent, "days": int(age) // 86400}


def describe() -> dict:
    ts = TrackingSettings.load()
    privacy = PrivacySettings.current()
    names = tracker_constants()
    base = settings.BASE_URL
    storage = [
        Item(str(names["aid"]), _("A random id for this browser (cookie and localStorage), kept %(days)s days, so "
                                  "visits can be counted as one visitor's.") % {"days": names["days"]}),
        Item(str(names["uid"]), _("The id the site gives a signed-in user (localStorage), when the site sets one.")),
    ]
    if ts.consent_required:
        storage.append(Item(str(names["consent"]), _("Remembers that you agreed to tracking (cookie), kept %(days)s "
                                                     "days.") % {"days": names["days"]}))
    sent = [
        Item(_("Page views"), _("The address, path, title and query string of the page, the previous page "
                                "(referrer) and the campaign parameters in the address (utm_source and the like).")),
        Item(_("Browser"), _("User agent (browser and operating system), language, time zone and screen size.")),
        Item(_("Time on page"), _("How long the page was visible and how far it was scrolled.")),
        Item(_("Clicks"), _("Links to other sites (address and link text) and downloaded files (address and type).")),
        Item(_("IP address"), _("Received with every request; stored shortened to its network (the last part "
                                "removed).") if ts.anonymize_ip else _("Received with every request and stored, to "
                                                                       "find the country and company network.")),
    ]
    if ts.identify_forms:
        sent.append(Item(_("Forms"), _("When you submit a form with an email address on a page with the tag: the "
                                       "email address and, if present, name, company, phone number and job title. "
                                       "Passwords, card numbers and similar fields are never read.")))
    purposes = [
        _("Understanding which pages and campaigns interest visitors, and improving the site."),
        _("Sending information that matches the interests of people who gave their email address, and telling "
          "sales who is interested."),
        _("Counting visits without counting bots, and keeping the service secure."),
    ]
    if privacy.event_months:
        retention = _("Tracked events are kept for %(months)s months, then deleted or anonymised.") % {
            "months": privacy.event_months}
    else:
        retention = _("Tracked events are kept as long as the contact or visitor record is kept.")
    if privacy.inactive_months:
        retention += " " + _("People with no activity for %(months)s months are erased.") % {
            "months": privacy.inactive_months}
    domains = sorted({d for key in WriteKey.objects.filter(enabled=True) for d in key.domain_list()})
    return {
        "operator": privacy.operator_name or (base.split("://", 1)[-1]),
        "contact": privacy.contact_info,
        "endpoints": [f"{base}/kz.js", f"{base}/v1/batch", f"{base}/t.gif"],
        "storage": storage, "sent": sent, "purposes": purposes, "retention": retention, "domains": domains,
        "consent_required": ts.consent_required, "respect_dnt": ts.respect_dnt,
    }
