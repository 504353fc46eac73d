"""一斉配信 (bulk sends): recipients become outbox rows, then the outbox sends them.

The recipients are a contact list's members, or a segment's members at the moment the send is
prepared (once the worker has computed the segment's current filter).

Every recipient's row has the key `bulk:<send>:<contact>`, so preparing twice (a crash, a second
click) adds nobody twice, and pausing only stops claiming: rows already claimed finish, the rest
wait. An A/B test sends variants A and B to a sample, holds the rest, and after the set time
gives the rest the variant with more human clicks (or opens).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from kizuna.contacts.models import Contact
from kizuna.db.locks import exclusive
from kizuna.db.writelock import sqlite_writer
from kizuna.messaging.models import BulkSend, BulkStatus, Message, MessageKind, MessageStatus

log = logging.getLogger(__name__)
CHUNK = 2000


class BulkError(ValueError):
    pass


def audience(bulk: BulkSend):
    """The contacts with an address in the send's list, or in its segment's current membership."""
    if bulk.contact_list_id is None and bulk.segment_id is None:
        raise BulkError("choose a list or a segment to send to")
    if bulk.contact_list_id is not None and bulk.segment_id is not None:
        raise BulkError("choose a list or a segment, not both")
    if bulk.segment_id is not None:
        contacts = Contact.objects.filter(segment_memberships__segment_id=bulk.segment_id)
    else:
        contacts = Contact.objects.filter(list_memberships__contact_list_id=bulk.contact_list_id)
    return contacts.exclude(email__isnull=True).exclude(email="")


def segment_pending(bulk: BulkSend) -> bool:
    """True while the send's segment waits for the worker to compute the members of its filter:
    preparing then would address whoever matched before (or no one, for a new segment)."""
    from kizuna.segments.models import Segment

    return bulk.segment_id is not None and Segment.objects.filter(pk=bulk.segment_id, needs_full=True).exists()


def start(bulk: BulkSend, *, at=None) -> None:
    """Schedules (or starts now) a draft; the worker prepares it when it is due."""
    if bulk.status not in (BulkStatus.DRAFT, BulkStatus.SCHEDULED):
        raise BulkError(f"a send that is {bulk.get_status_display()} cannot be started")
    if bulk.version.template.sender_id is None:
        raise BulkError("the template has no sender")
    audience(bulk)
    bulk.scheduled_at = at or timezone.now()
    bulk.status = BulkStatus.SCHEDULED
    bulk.save(update_fields=["scheduled_at", "status"])


def prepare(bulk: BulkSend) -> int:
    """Creates the outbox rows (idempotent, chunked); returns how many were added. A send to a
    segment whose members are being recomputed stays scheduled until they are."""
    if bulk.status == BulkStatus.SCHEDULED and segment_pending(bulk):
        return 0
    with sqlite_writer(), transaction.atomic():
        taken = BulkSend.objects.filter(pk=bulk.pk, status=BulkStatus.SCHEDULED).update(
            status=BulkStatus.PREPARING, started_at=timezone.now())
    bulk.refresh_from_db()
    if not taken and bulk.status != BulkStatus.PREPARING:
        return 0  # another worker prepared it, or it was paused or cancelled meanwhile
    template = bulk.version.template
    ids = list(audience(bulk).order_by("id").values_list("id", "email"))
    BulkSend.objects.filter(pk=bulk.pk).update(total=len(ids))
    testing = bool(bulk.ab_sample_percent and bulk.variant_b_id)
    sample: set[int] = set()
    variant_of: dict[int, str] = {}
    if testing:
        rng = random.Random(bulk.pk)  # the same split if preparation runs again
        chosen = rng.sample(range(len(ids)), k=max(2, len(ids) * bulk.ab_sample_percent // 100))
        for n, index in enumerate(chosen):
            sample.add(ids[index][0])
            variant_of[ids[index][0]] = "A" if n % 2 == 0 else "B"
    added = 0
    now = timezone.now()
    for start_at in range(0, len(ids), CHUNK):
        rows = []
        for contact_id, email in ids[start_at:start_at + CHUNK]:
            variant = variant_of.get(contact_id, "")
            version_id = bulk.variant_b_id if variant == "B" else bulk.version_id
            rows.append(Message(
                idempotency_key=f"bulk:{bulk.pk}:{contact_id}", contact_id=contact_id, to_email=email,
                version_id=version_id, sender_id=template.sender_id, kind=template.kind, topic_id=template.topic_id,
                bulk_id=bulk.pk, variant=variant, due_at=now,
                status=MessageStatus.HELD if testing and contact_id not in sample else MessageStatus.QUEUED,
                priority=0 if template.kind == MessageKind.MARKETING else 10,
            ))
        with sqlite_writer(), transaction.atomic():
            before = Message.objects.filter(bulk=bulk).count()
            Message.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
            after = Message.objects.filter(bulk=bulk).count()
            added += after - before
            # started_at doubles as a heartbeat: tick() takes over a preparation with none for 2 minutes.
            BulkSend.objects.filter(pk=bulk.pk).update(prepared=after, started_at=timezone.now())
    status = BulkStatus.TESTING if testing else BulkStatus.SENDING
    decide = timezone.now() + timedelta(minutes=bulk.ab_wait_minutes) if testing else None
    with sqlite_writer(), transaction.atomic():
        BulkSend.objects.filter(pk=bulk.pk, status=BulkStatus.PREPARING).update(status=status, ab_decide_at=decide)
    return added


def pause(bulk: BulkSend) -> None:
    if bulk.status not in (BulkStatus.SENDING, BulkStatus.TESTING, BulkStatus.SCHEDULED):
        raise BulkError(f"a send that is {bulk.get_status_display()} cannot be paused")
    BulkSend.objects.filter(pk=bulk.pk).update(status=BulkStatus.PAUSED)


def resume(bulk: BulkSend) -> None:
    if bulk.status != BulkStatus.PAUSED:
        raise BulkError("only a paused send can be resumed")
    held = Message.objects.filter(bulk=bulk, status=MessageStatus.HELD).exists()
    if not bulk.prepared:
        status = BulkStatus.SCHEDULED
    else:
        status = BulkStatus.TESTING if held and not bulk.ab_winner else BulkStatus.SENDING
    BulkSend.objects.filter(pk=bulk.pk).update(status=status)


def cancel(bulk: BulkSend) -> int:
    """Stops a send for good; rows not yet claimed are cancelled, the ones in flight finish."""
    if bulk.status in (BulkStatus.DONE, BulkStatus.CANCELLED):
        raise BulkError("this send is already over")
    with sqlite_writer(), transaction.atomic():
        BulkSend.objects.filter(pk=bulk.pk).update(status=BulkStatus.CANCELLED, finished_at=timezone.now())
        return Message.objects.filter(bulk=bulk, status__in=[MessageStatus.QUEUED, MessageStatus.HELD]).update(
            status=MessageStatus.CANCELLED)


def ab_results(bulk: BulkSend) -> dict[str, dict[str, int]]:
    rows = (Message.objects.filter(bulk=bulk, variant__in=["A", "B"]).values("variant").annotate(
        sent=Count("id", filter=Q(status=MessageStatus.SENT)),
        opens=Count("id", filter=Q(opened_at__isnull=False)),
        clicks=Count("id", filter=Q(clicked_at__isnull=False))))
    return {r["variant"]: r for r in rows}


def decide(bulk: BulkSend) -> str:
    """Picks the winner by human clicks (or opens) rate; ties go to A. Releases the rest."""
    results = ab_results(bulk)

    def rate(variant: str) -> float:
        r = results.get(variant) or {}
        return (r.get(bulk.ab_metric, 0) / r["sent"]) if r.get("sent") else 0.0

    winner = "B" if rate("B") > rate("A") else "A"
    version_id = bulk.variant_b_id if winner == "B" else bulk.version_id
    with sqlite_writer(), transaction.atomic():
        # Only a send still testing is decided: one paused or cancelled meanwhile stays so, and
        # a second decision (another process) finds nothing to release and changes no winner.
        if not BulkSend.objects.filter(pk=bulk.pk, status=BulkStatus.TESTING).update(
                ab_winner=winner, status=BulkStatus.SENDING):
            return BulkSend.objects.filter(pk=bulk.pk).values_list("ab_winner", flat=True).first() or ""
        Message.objects.filter(bulk=bulk, status=MessageStatus.HELD).update(
            status=MessageStatus.QUEUED, version_id=version_id, variant=winner, due_at=timezone.now())
    return winner


def progress(bulk: BulkSend) -> dict[str, int]:
    counts = dict(Message.objects.filter(bulk=bulk).values_list("status").annotate(n=Count("id")))
    done = sum(counts.get(s, 0) for s in (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.SKIPPED,
                                          MessageStatus.CANCELLED, MessageStatus.UNKNOWN))
    return {"total": bulk.total, "prepared": bulk.prepared, "done": done, **counts}


def tick() -> None:
    """Run by every worker every few seconds: starts due sends, decides A/B tests, closes
    finished ones. One worker at a time does it (the others skip the pass)."""
    with exclusive("bulk-tick") as mine:
        if mine:
            _tick()


def _tick() -> None:
    now = timezone.now()
    stalled = BulkSend.objects.filter(status=BulkStatus.PREPARING, started_at__lt=now - timedelta(minutes=2))
    for bulk in stalled:  # a worker died while preparing: rows are keyed, so preparing again is safe
        # Taking over moves the heartbeat first, so only one worker takes over a stalled send.
        if BulkSend.objects.filter(pk=bulk.pk, status=BulkStatus.PREPARING, started_at=bulk.started_at).update(
                started_at=now):
            prepare(bulk)
    for bulk in BulkSend.objects.filter(status=BulkStatus.SCHEDULED, scheduled_at__lte=now):
        try:
            prepare(bulk)
        except BulkError as exc:
            log.warning("bulk send %s: %s", bulk.pk, exc)
    for bulk in BulkSend.objects.filter(status=BulkStatus.TESTING, ab_decide_at__lte=now):
        decide(bulk)
    for bulk in BulkSend.objects.filter(status=BulkStatus.SENDING):
        waiting = Message.objects.filter(bulk=bulk, status__in=[
            MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.HELD]).exists()
        if not waiting:
            BulkSend.objects.filter(pk=bulk.pk, status=BulkStatus.SENDING).update(
                status=BulkStatus.DONE, finished_at=now)
