"""Identity: anonymous ids, user ids and emails resolve to one contact.

Rules (docs/decisions/0005-event-pipeline.md):
- A user id or an email names a person; the first one seen creates the contact (or finds the
  contact already imported with that email).
- A browser's anonymous id joins the contact the first time it identifies; its anonymous
  history is then attached to the contact and replayed to later stages.
- When one event names two different known contacts (user id of one, email of the other, or an
  alias), they are merged: the user id's contact is kept.
- A known browser that identifies as someone else (a shared computer) is re-linked for what
  follows; its past stays with the first person. Nothing is ever merged on IP address.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from kizuna.contacts import merge
from kizuna.contacts.emails import InvalidEmail, normalise_email
from kizuna.contacts.models import Contact, Source
from kizuna.contacts.services import ContactConflict, ContactError, create_contact
from kizuna.events.models import Event, Identity, IdentityKind, PageView, Session, Visitor

ANON, USER, EMAIL = IdentityKind.ANONYMOUS, IdentityKind.USER, IdentityKind.EMAIL
Key = tuple[str, str]


def email_of(event: Event) -> str:
    """The address an event identifies with: identify traits, or traits in the context."""
    candidates: list[Any] = []
    if event.type == "identify":
        candidates.append(event.traits.get("email"))
    ctx_traits = event.context.get("traits")
    if isinstance(ctx_traits, dict):
        candidates.append(ctx_traits.get("email"))
    for value in candidates:
        if isinstance(value, str) and value.strip():
            try:
                return normalise_email(value)
            except InvalidEmail:
                continue
    return ""


def contact_data_from_traits(traits: dict[str, Any], email: str) -> dict[str, Any]:
    """Maps Segment-style traits (and common Japanese form names) to contact fields."""

    def pick(*names: str) -> str:
        for name in names:
            value = traits.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return ""

    data: dict[str, Any] = {"email": email} if email else {}
    family = pick("lastName", "last_name", "family_name", "familyName", "sei")
    given = pick("firstName", "first_name", "given_name", "givenName", "mei")
    if not family and not given:
        full = pick("name", "full_name", "fullName")
        family, _, given = full.replace("\u3000", " ").partition(" ")
    company = traits.get("company")
    company_name = company.get("name") if isinstance(company, dict) else company
    values = {
        "family_name": family, "given_name": given,
        "company_name": company_name if isinstance(company_name, str) else pick("company_name", "companyName"),
        "job_title": pick("title", "job_title", "jobTitle"),
        "phone": pick("phone", "tel"),
    }
    data.update({k: v for k, v in values.items() if v})
    return data


class Resolver:
    """Resolves a batch of events in order; caches identities for the batch."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.now = timezone.now()
        self.ids: dict[Key, int] = {}
        self.replay_ids: list[int] = []
        self.unlinked_emails: dict[str, int] = {}  # contacts whose address has no identity row yet
        self._dirty: set[Key] = set()  # links made in this batch, written together at the end
        self._prefetch()

    def _prefetch(self) -> None:
        wanted: dict[str, set[str]] = {ANON: set(), USER: set(), EMAIL: set()}
        for ev in self.events:
            if ev.anonymous_id:
                wanted[ANON].add(ev.anonymous_id)
            if ev.user_id:
                wanted[USER].add(ev.user_id)
            if ev.type == "alias":
                previous = ev.properties.get("previousId", "")
                wanted[USER].add(previous)
                wanted[ANON].add(previous)
            email = email_of(ev)
            if email:
                wanted[EMAIL].add(email)
        for kind, values in wanted.items():
            values.discard("")
            if values:
                for value, contact_id in Identity.objects.filter(kind=kind, value__in=values).values_list(
                    "value", "contact_id"
                ):
                    self.ids[(kind, value)] = contact_id
        missing = [email for email in wanted[EMAIL] if (EMAIL, email) not in self.ids]
        if missing:
            self.unlinked_emails = dict(Contact.objects.filter(email__in=missing).values_list("email", "id"))

    # --- per event --------------------------------------------------------------------------
    def resolve_all(self) -> list[int]:
        for index, ev in enumerate(self.events):
            self.resolve(index, ev)
        self._write_links()
        return self.replay_ids

    def resolve(self, index: int, ev: Event) -> None:
        if ev.type == "alias":
            self._alias(ev)
        keys: list[Key] = []
        if ev.user_id:
            keys.append((USER, ev.user_id))
        email = email_of(ev)
        if email:
            keys.append((EMAIL, email))
        known = [self.ids[k] for k in keys if k in self.ids]
        contact_id: int | None = known[0] if known else None
        for other in known[1:]:
            if other != contact_id:
                contact_id = self._merge(contact_id, other)
        if contact_id is None and keys:
            contact_id = self._new_contact(ev, email)
        if contact_id is not None:
            for key in keys:
                if self.ids.get(key) != contact_id:
                    self._link(key, contact_id)
        if ev.anonymous_id:
            browser = self.ids.get((ANON, ev.anonymous_id))
            if contact_id is None:
                contact_id = browser
            elif browser is None:
                self._link((ANON, ev.anonymous_id), contact_id)
                self._backfill(index, ev.anonymous_id, contact_id)
            elif browser != contact_id:
                self._link((ANON, ev.anonymous_id), contact_id)  # shared computer: from now on
        ev.contact_id = contact_id

    def _alias(self, ev: Event) -> None:
        previous = ev.properties.get("previousId", "")
        if not previous or not ev.user_id:
            return
        old = self.ids.get((USER, previous)) or self.ids.get((ANON, previous))
        new = self.ids.get((USER, ev.user_id))
        if old and new and old != new:
            self._merge(new, old)
        elif old and not new:
            self._link((USER, ev.user_id), old)
        elif not old:
            # The previous id may not have been processed yet (another lane): record the link
            # now, so whatever arrives under it later joins the same person.
            contact_id = new or self._new_contact(ev, "")
            kind = ANON if previous == ev.anonymous_id else USER
            self._link((kind, previous), contact_id)
            if not new:
                self._link((USER, ev.user_id), contact_id)

    # --- effects ----------------------------------------------------------------------------
    def _link(self, key: Key, contact_id: int) -> None:
        self.ids[key] = contact_id
        self._dirty.add(key)

    def _write_links(self) -> None:
        """One upsert for the batch's new links (one row per link was most of the time spent
        on mail events). Read from `ids` now, so links follow any merge made since."""
        if not self._dirty:
            return
        rows = [Identity(kind=kind, value=value, contact_id=self.ids[(kind, value)], created_at=self.now)
                for kind, value in sorted(self._dirty)]
        Identity.objects.bulk_create(rows, update_conflicts=True, unique_fields=["kind", "value"],
                                     update_fields=["contact_id"])
        self._dirty.clear()

    def _new_contact(self, ev: Event, email: str) -> int:
        if email:
            existing = self.unlinked_emails.get(email)
            if existing is None:
                existing = Contact.objects.filter(email=email).values_list("id", flat=True).first()
            if existing:
                return existing
        traits = ev.traits if ev.type == "identify" else (ev.context.get("traits") or {})
        data = contact_data_from_traits(traits if isinstance(traits, dict) else {}, email)
        try:
            return create_contact(None, data, source=Source.EVENT).id
        except ContactConflict:
            return Contact.objects.get(email=email).id
        except ContactError:
            # A bad name or phone must not lose the person: keep what is certain.
            return create_contact(None, {"email": email} if email else {}, source=Source.EVENT).id

    def _backfill(self, index: int, anonymous_id: str, contact_id: int) -> None:
        """The browser's anonymous past joins the contact, and is replayed as known."""
        for earlier in self.events[:index]:
            if earlier.anonymous_id == anonymous_id and earlier.contact_id is None:
                earlier.contact_id = contact_id
        past = list(
            Event.objects.filter(anonymous_id=anonymous_id, contact__isnull=True).values_list("id", flat=True)
        )
        if past:
            Event.objects.filter(id__in=past).update(contact_id=contact_id)
            self.replay_ids.extend(past)
        Session.objects.filter(anonymous_id=anonymous_id, contact__isnull=True).update(contact_id=contact_id)
        PageView.objects.filter(anonymous_id=anonymous_id, contact__isnull=True).update(contact_id=contact_id)
        Visitor.objects.filter(anonymous_id=anonymous_id).update(contact_id=contact_id)

    def _merge(self, keep_id: int, drop_id: int) -> int:
        keep = Contact.objects.get(pk=keep_id)
        drop = Contact.objects.get(pk=drop_id)
        merge.merge_contacts(keep, drop, reason="identity")
        for key, value in list(self.ids.items()):
            if value == drop_id:
                self.ids[key] = keep_id
        for email, value in list(self.unlinked_emails.items()):
            if value == drop_id:
                self.unlinked_emails[email] = keep_id
        for ev in self.events:
            if ev.contact_id == drop_id:
                ev.contact_id = keep_id
        return keep_id


@merge.register_merge_hook
def move_tracking_rows(keep: Contact, drop: Contact) -> None:
    """Everything tracked for the dropped contact follows it to the kept one."""
    Identity.objects.filter(contact=drop).update(contact=keep)
    Event.objects.filter(contact=drop).update(contact=keep)
    Session.objects.filter(contact=drop).update(contact=keep)
    PageView.objects.filter(contact=drop).update(contact=keep)
    Visitor.objects.filter(contact=drop).update(contact=keep)
