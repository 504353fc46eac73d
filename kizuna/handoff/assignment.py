"""Choosing the owner of a lead that turned hot: existing owner, company owner, then the first
sales route whose territory holds the contact, round robin among its active members."""

from __future__ import annotations

from django.db.models import F

from kizuna.contacts.models import Contact
from kizuna.handoff.models import Handoff, HandoffSettings, SalesRoute


def route_matches(route: SalesRoute, contact: Contact) -> bool:
    if not route.field:
        return True
    value = getattr(contact, route.field, "") or ""
    if not value and route.field == "prefecture" and contact.company_id:
        value = contact.company.prefecture or ""  # the company's address stands in for the person's
    if not value and route.field == "industry" and contact.company_id:
        value = getattr(contact.company, "industry", "") or ""
    return value in route.value_list()


def choose_owner(contact: Contact, config: HandoffSettings) -> tuple[object | None, str, SalesRoute | None]:
    """(user or None, Handoff.How, route). Takes a round-robin turn when a route is used, so call
    it once per hand-off, inside the transaction that records it."""
    if config.keep_existing_owner and contact.owner_id and contact.owner.is_active:
        return contact.owner, Handoff.How.EXISTING, None
    company = contact.company if contact.company_id else None
    if config.use_company_owner and company is not None and company.owner_id and company.owner.is_active:
        return company.owner, Handoff.How.COMPANY, None
    for route in SalesRoute.objects.select_for_update().prefetch_related("members"):
        if not route_matches(route, contact):
            continue
        members = sorted((u for u in route.members.all() if u.is_active), key=lambda u: u.pk)
        if not members:
            continue
        SalesRoute.objects.filter(pk=route.pk).update(turn=F("turn") + 1)
        return members[route.turn % len(members)], Handoff.How.ROUTE, route
    return None, Handoff.How.NONE, None


def territory_codes(field: str) -> dict[str, str]:
    """Every accepted spelling of a territory value (code, Japanese or English name) → its code."""
    from django.utils import translation

    from kizuna.contacts.reference import PREFECTURES, Industry, Region

    spellings: dict[str, str] = {}
    if field == "prefecture":
        for code, ja, en, _region in PREFECTURES:
            short = ja[:-1] if ja[-1] in "都府県" else ja  # 東京, 大阪, 京都; 北海道 stays whole
            for word in (code, ja, short, en):
                spellings[word.lower()] = code
    elif field in {"region", "industry"}:
        choices = Region if field == "region" else Industry
        for language in ("ja", "en"):
            with translation.override(language):
                for code, label in choices.choices:
                    spellings[code.lower()] = code
                    spellings[str(label).lower()] = code
    return spellings


def parse_territory(field: str, raw: str) -> tuple[str, list[str]]:
    """("13,14", []) for "東京, Kanagawa"; unknown words come back in the second list."""
    if not field:
        return "", []
    spellings = territory_codes(field)
    codes, unknown = [], []
    for word in (w.strip() for w in raw.replace("、", ",").split(",")):
        if not word:
            continue
        code = spellings.get(word.lower())
        if code is None:
            unknown.append(word)
        elif code not in codes:
            codes.append(code)
    return ",".join(codes), unknown
