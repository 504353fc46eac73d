"""Landing pages: saving, choosing a variant for a browser, greeting known visitors, counting.

Views and conversions are counted by `on_events`, an event-processing handler: the page view a
landing page's tracker sends carries `landing_page` and `variant` properties, and a later form
submission by the same browser converts the visit. Bots are not counted.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from kizuna.accounts import audit
from kizuna.capture.processing import EVENT_NAME as FORM_SUBMITTED
from kizuna.contacts.models import Contact
from kizuna.landing.blocks import check_variants
from kizuna.landing.models import LandingPage, LandingVariant, LandingVisit

# Track events that turn a landing visit into a conversion (a form submitted on or after it).
CONVERSION_EVENTS = frozenset({FORM_SUBMITTED})
LANDING_KEY_NAME = "Landing pages"


def save(page: LandingPage, variants: list, *, actor=None) -> LandingPage:
    """Checks the variants (BlocksError lists every fault) and saves the page with them."""
    checked = check_variants(variants)
    created = page.pk is None
    with transaction.atomic():
        page.updated_at = timezone.now()
        if created and actor is not None and getattr(actor, "is_authenticated", False):
            page.created_by = actor
        page.save()
        keep = {v["key"] for v in checked}
        LandingVariant.objects.filter(page=page).exclude(key__in=keep).delete()
        for v in checked:
            LandingVariant.objects.update_or_create(page=page, key=v["key"],
                                                    defaults={"weight": v["weight"], "blocks": v["blocks"]})
        audit.record(actor, "landing_page.create" if created else "landing_page.change", page)
    return page


def set_published(page: LandingPage, published: bool, *, actor=None) -> None:
    page.status = LandingPage.Status.PUBLISHED if published else LandingPage.Status.DRAFT
    if published and page.published_at is None:
        page.published_at = timezone.now()
    page.updated_at = timezone.now()
    page.save(update_fields=["status", "published_at", "updated_at"])
    audit.record(actor, "landing_page.publish" if published else "landing_page.unpublish", page)


def bucket(page_id: int, anonymous_id: str) -> int:
    """0–99, fixed per browser and page: a returning visitor sees the variant they saw before
    (as long as the weights stay the same)."""
    return int(hashlib.sha256(f"{page_id}:{anonymous_id}".encode()).hexdigest()[:8], 16) % 100


def choose_variant(page: LandingPage, variants: Sequence[LandingVariant], anonymous_id: str) -> LandingVariant:
    b, upto = bucket(page.pk, anonymous_id), 0
    live = [v for v in variants if v.weight > 0] or list(variants)
    for variant in live:
        upto += variant.weight
        if b < upto:
            return variant
    return live[-1]


def known_contact(anonymous_id: str) -> Contact | None:
    """The contact behind a browser the tracker has already linked (form, email link, identify)."""
    from kizuna.events.models import Visitor

    if not anonymous_id:
        return None
    visitor = Visitor.objects.filter(anonymous_id=anonymous_id).select_related("contact").first()
    return visitor.contact if visitor else None


def greeting_name(contact: Contact | None, language: str) -> str:
    if contact is None:
        return ""
    if language == "ja":
        return contact.family_name or contact.given_name or ""
    return contact.given_name or contact.family_name or ""


def write_key():
    """The write key landing pages send their page views with (made on first use), limited to
    this installation's own host."""
    from urllib.parse import urlsplit

    from kizuna.events.models import WriteKey

    key = WriteKey.objects.filter(name=LANDING_KEY_NAME).first()
    if key is None:
        key = WriteKey.objects.create(name=LANDING_KEY_NAME, allowed_domains=urlsplit(settings.BASE_URL).hostname or "")
    return key


# --- counting ---------------------------------------------------------------------------------

def on_events(events: Sequence, *, replay: bool = False) -> None:
    """Event-processing handler: counts landing page views and the conversions that follow them."""
    if replay:
        return  # history replayed for a newly identified contact was counted when it happened
    views: dict[tuple[str, str], dict] = {}
    conversions: list = []
    for e in events:
        if e.bot or not e.anonymous_id:
            continue
        if e.type == "page" and isinstance(e.properties, dict) and e.properties.get("landing_page"):
            slug, variant = str(e.properties["landing_page"])[:80], str(e.properties.get("variant", ""))[:8]
            seen = views.setdefault((slug, e.anonymous_id), {"variant": variant, "views": 0, "first": e.occurred_at,
                                                             "last": e.occurred_at, "contact": e.contact_id})
            seen["views"] += 1
            seen["first"], seen["last"] = min(seen["first"], e.occurred_at), max(seen["last"], e.occurred_at)
            seen["contact"] = e.contact_id or seen["contact"]
        elif e.type == "track" and e.name in CONVERSION_EVENTS:
            conversions.append(e)
    if views:
        _count_views(views)
    if conversions:
        _convert(conversions)


def _count_views(views: dict[tuple[str, str], dict]) -> None:
    pages = dict(LandingPage.objects.filter(slug__in={s for s, _a in views}).values_list("slug", "id"))
    rows = [(pages[slug], v["variant"], aid, v["contact"], v["views"], v["first"], v["last"])
            for (slug, aid), v in views.items() if slug in pages]
    if not rows:
        return
    table = LandingVisit._meta.db_table
    # One statement for the batch; the browser's first variant stays its variant.
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (page_id, variant, anonymous_id, contact_id, views, first_viewed_at,"
            " last_viewed_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (page_id, anonymous_id) DO UPDATE SET"
            f" views = {table}.views + excluded.views,"
            f" contact_id = COALESCE(excluded.contact_id, {table}.contact_id),"
            f" first_viewed_at = CASE WHEN excluded.first_viewed_at < {table}.first_viewed_at"
            f"   THEN excluded.first_viewed_at ELSE {table}.first_viewed_at END,"
            f" last_viewed_at = CASE WHEN excluded.last_viewed_at > {table}.last_viewed_at"
            f"   THEN excluded.last_viewed_at ELSE {table}.last_viewed_at END",
            rows)


def _convert(events: Sequence) -> None:
    for e in events:
        (LandingVisit.objects
         .filter(anonymous_id=e.anonymous_id, converted_at__isnull=True, first_viewed_at__lte=e.occurred_at)
         .update(converted_at=e.occurred_at, contact_id=e.contact_id))


# --- reporting --------------------------------------------------------------------------------

@dataclass
class VariantStats:
    key: str
    weight: int
    visitors: int = 0
    views: int = 0
    conversions: int = 0

    @property
    def rate(self) -> float | None:
        return round(100 * self.conversions / self.visitors, 1) if self.visitors else None


def stats(page_ids: Sequence[int]) -> dict[int, list[VariantStats]]:
    """Visitors, views and conversions per variant, for each page (one grouped query)."""
    from django.db.models import Count, Sum

    out: dict[int, list[VariantStats]] = {}
    by_key: dict[tuple[int, str], VariantStats] = {}
    for v in LandingVariant.objects.filter(page_id__in=page_ids).order_by("page_id", "key"):
        s = VariantStats(v.key, v.weight)
        out.setdefault(v.page_id, []).append(s)
        by_key[(v.page_id, v.key)] = s
    rows = (LandingVisit.objects.filter(page_id__in=page_ids).values("page_id", "variant")
            .annotate(visitors=Count("id"), views=Sum("views"), conversions=Count("converted_at")).order_by())
    for row in rows:
        s = by_key.get((row["page_id"], row["variant"]))
        if s is None:  # a variant deleted since: still counted on the page
            s = by_key[(row["page_id"], row["variant"])] = VariantStats(row["variant"], 0)
            out.setdefault(row["page_id"], []).append(s)
        s.visitors, s.views, s.conversions = row["visitors"], row["views"] or 0, row["conversions"]
    return out


def total(variants: Sequence[VariantStats]) -> VariantStats:
    t = VariantStats("", 100)
    for v in variants:
        t.visitors, t.views, t.conversions = t.visitors + v.visitors, t.views + v.views, t.conversions + v.conversions
    return t


def compare(control: VariantStats, other: VariantStats) -> dict | None:
    """The difference in conversion rate and a two-sided p-value (two-proportion z-test), so a
    marketer does not crown a variant on noise. None until both have visitors."""
    if not control.visitors or not other.visitors:
        return None
    p1, p2 = control.conversions / control.visitors, other.conversions / other.visitors
    pooled = (control.conversions + other.conversions) / (control.visitors + other.visitors)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.visitors + 1 / other.visitors))
    p_value = 1.0 if se == 0 else math.erfc(abs(p2 - p1) / se / math.sqrt(2))
    verdict = (_("significant at 95%") if p_value < 0.05 else _("not significant yet"))
    return {"lift": round(100 * (p2 - p1), 1), "p_value": round(p_value, 4), "significant": p_value < 0.05,
            "verdict": verdict}
