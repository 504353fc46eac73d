"""The outbox: every email is a row before it is sent, and is sent at most once.

Queue: `enqueue` creates the row under a unique idempotency key (journey step + contact, bulk
send + contact, …): a second request for the same mail finds the first row.

Send: a worker thread claims due rows (SKIP LOCKED on PostgreSQL, the writer lock on SQLite),
checks the rules of the moment (suppression, consent, frequency cap, quiet hours, throttle),
composes and hands each to the transport, then records the results of the batch in one
transaction. Temporary failures come back later with backoff; permanent ones are kept with the
server's reason.

Crash between hand-over and record (docs/decisions/0007-email-outbox.md): the SMTP transport
writes "F <id>" to this worker's journal just before the final dot of DATA (after which the server
has the message) and "S/R <id>" with the reply. A restarted worker on the same host reads the
journal of a dead one: F or S → sent; no line → the server never got the whole message, so the
row is queued again. Rows claimed by a worker whose journal is not on this host, or sent through
a transport without a journal (ESP APIs), become `unknown` when their lease ends and are settled
by delivery evidence (ESP webhooks, bounces, opens, clicks) or by a person — never resent blindly.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import threading
import zoneinfo
from collections.abc import Iterable, Sequence
from datetime import datetime, time, timedelta
from pathlib import Path
from time import sleep
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from kizuna.contacts.models import Consent, ConsentStatus, Contact
from kizuna.db import copy
from kizuna.db.writelock import sqlite_writer
from kizuna.messaging import compose as composer
from kizuna.messaging import transports
from kizuna.messaging.models import (
    BulkSend,
    BulkStatus,
    Message,
    MessageKind,
    MessageStatus,
    SendingSettings,
    Suppression,
    TemplateVersion,
    TokenBucket,
)
from kizuna.web import metrics

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
BACKOFF = [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
           timedelta(hours=6)]
MAX_ATTEMPTS = len(BACKOFF) + 1
RECORD_ATTEMPTS = 12  # about 40 s of waiting for the database before giving the batch to settle()
ACTIVE_BULK = (BulkStatus.SENDING, BulkStatus.TESTING)


def backoff() -> list[timedelta]:
    """Waits before the retries of a temporary failure (KIZUNA_OUTBOX_BACKOFF, seconds)."""
    seconds = getattr(settings, "KIZUNA_OUTBOX_BACKOFF", None)
    return [timedelta(seconds=s) for s in seconds] if seconds else BACKOFF


def batch_size() -> int:
    return getattr(settings, "KIZUNA_OUTBOX_BATCH", 50)


# --- queueing --------------------------------------------------------------------------------


def enqueue(
    contact: Contact, version: TemplateVersion, *, key: str, kind: str | None = None, topic=None,
    sender=None, bulk: BulkSend | None = None, variant: str = "", extra: dict | None = None,
    due_at: datetime | None = None, priority: int | None = None,
) -> tuple[Message, bool]:
    """Queues one mail; returns (row, created). The same key twice returns the first row."""
    template = version.template
    kind = kind or template.kind
    sender = sender or template.sender
    if sender is None:
        raise ValueError("the template has no sender: choose one before sending")
    if not contact.email:
        raise ValueError("the contact has no email address")
    existing = Message.objects.filter(idempotency_key=key).first()
    if existing is not None:
        return existing, False
    row = Message(
        idempotency_key=key, contact=contact, to_email=contact.email, version=version, sender=sender,
        kind=kind, topic=topic if topic is not None else template.topic, bulk=bulk, variant=variant,
        extra=extra or {}, due_at=due_at or timezone.now(),
        priority=priority if priority is not None else (10 if kind == MessageKind.TRANSACTIONAL else 0),
    )
    try:
        with sqlite_writer(), transaction.atomic():
            row.save()
    except IntegrityError:
        return Message.objects.get(idempotency_key=key), False
    return row, True


def enqueue_many(
    rows: Sequence[tuple[Contact, str, dict]], version: TemplateVersion, *, kind: str | None = None,
    due_at: datetime | None = None,
) -> list[tuple[Message | None, bool, str]]:
    """`enqueue` for many (contact, key, extra) at once, for callers that hold a transaction
    (the journey engine): one query for keys queued already, one INSERT for the rest. Returns
    (row, created, "") per input, or (None, False, why) where enqueue would raise ValueError.
    A key inserted meanwhile by someone else raises IntegrityError: the caller's transaction
    decides (the engine goes back to one mail at a time)."""
    template = version.template
    kind = kind or template.kind
    sender = template.sender
    if sender is None:
        return [(None, False, "the template has no sender: choose one before sending")] * len(rows)
    existing = Message.objects.in_bulk([key for _c, key, _x in rows], field_name="idempotency_key")
    when = due_at or timezone.now()
    priority = 10 if kind == MessageKind.TRANSACTIONAL else 0
    new: list[Message] = []
    out: list[tuple[Message | None, bool, str]] = []
    for contact, key, extra in rows:
        if not contact.email:
            out.append((None, False, "the contact has no email address"))
        elif key in existing:
            out.append((existing[key], False, ""))
        else:
            row = Message(idempotency_key=key, contact=contact, to_email=contact.email, version=version,
                          sender=sender, kind=kind, topic=template.topic, extra=extra or {}, due_at=when,
                          priority=priority)
            existing[key] = row
            new.append(row)
            out.append((row, True, ""))
    if new:
        with sqlite_writer():
            copy.insert(new)
        if new[0].pk is None:  # COPY returns no ids: read them back by key
            ids = dict(Message.objects.filter(idempotency_key__in=[m.idempotency_key for m in new])
                       .values_list("idempotency_key", "pk"))
            for m in new:
                m.pk = ids[m.idempotency_key]
    return out


# --- the journal -----------------------------------------------------------------------------


def journal_dir() -> Path:
    path = Path(settings.DATA_DIR) / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Journal:
    """An append-only file this worker holds an exclusive lock on while it lives; a write()
    survives the process being killed (the kernel has it), which is all the guarantee needs."""

    def __init__(self, worker_id: str):
        self.path = journal_dir() / f"{worker_id}.journal"
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another worker's recover() may have locked the new, empty file first, taken it for
            # a dead worker's and unlinked it: a journal nobody can find would not protect a
            # crash. Keep the lock only on the file that is still at the path.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.fd = fd

    def __call__(self, line: str) -> None:
        os.write(self.fd, line.encode())

    def reset(self) -> None:
        """Called once a batch's results are committed: its lines are no longer needed."""
        os.ftruncate(self.fd, 0)

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:30]}-{os.getpid()}-{secrets.token_hex(3)}"


def _read_journal(path: Path) -> dict[int, str]:
    seen: dict[int, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        mark, _, key = line.partition(" ")
        if key.isdigit():
            # S (accepted) or R (refused) supersedes F for the same message.
            if mark in ("S", "R") or key not in seen:
                seen[int(key)] = mark
    return seen


def recover() -> dict[str, int]:
    """Settles rows left `sending` by workers that died. Safe to run at any time."""
    counts = {"sent": 0, "requeued": 0, "unknown": 0}
    now = timezone.now()
    for path in sorted(journal_dir().glob("*.journal")):
        fd = os.open(path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its worker is alive
            worker = path.name.removesuffix(".journal")
            sent, again = settle_from_journal(worker, _read_journal(path), now,
                                              "recovered from the journal of a stopped worker")
            counts["sent"] += sent
            counts["requeued"] += again
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    local = {p.name.removesuffix(".journal") for p in journal_dir().glob("*.journal")}
    expired = Message.objects.filter(status=MessageStatus.SENDING, claimed_until__lt=now).exclude(
        claimed_by__in=local)
    for message in expired.only("id", "claimed_by"):
        counts["unknown"] += _settle_unjournaled(message, now)
    if any(counts.values()):
        log.warning("outbox recovery: %s", counts)
    return counts


def settle_from_journal(worker: str, marks: dict[int, str], now: datetime, note: str) -> tuple[int, int]:
    """The rows a worker left `sending`, by what its journal says: the server has the whole
    message (F or S) → sent; refused or never complete → queued again. Returns (sent, requeued)."""
    with sqlite_writer(), transaction.atomic():
        rows = list(Message.objects.filter(status=MessageStatus.SENDING, claimed_by=worker)
                    .values_list("id", flat=True))
        sent = [i for i in rows if marks.get(i) in ("F", "S")]
        again = [i for i in rows if marks.get(i) not in ("F", "S")]
        done = Message.objects.filter(id__in=sent).update(
            status=MessageStatus.SENT, sent_at=now, claimed_by="", claimed_until=None, error=note) if sent else 0
        requeued = Message.objects.filter(id__in=again).update(
            status=MessageStatus.QUEUED, claimed_by="", claimed_until=None) if again else 0
    return done, requeued


def _settle_unjournaled(message: Message, now: datetime) -> int:
    from kizuna.messaging.models import CapturedMail

    with sqlite_writer(), transaction.atomic():
        if CapturedMail.objects.filter(message_id=message.pk).exists():
            Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENT, sent_at=now, claimed_by="")
            return 0
        if transports.from_settings().name == "capture":
            Message.objects.filter(pk=message.pk).update(status=MessageStatus.QUEUED, claimed_by="")
            return 0
        Message.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
            status=MessageStatus.UNKNOWN, claimed_by="",
            error="the worker stopped after handing this message to the transport; delivery unknown")
    return 1


# --- claiming --------------------------------------------------------------------------------

_CLAIM_PG = """
UPDATE messaging_message SET status = 'sending', claimed_by = %s, claimed_until = %s, attempts = attempts + 1
WHERE id IN (
  SELECT id FROM messaging_message
  WHERE status = 'queued' AND due_at <= %s
    AND (bulk_id IS NULL OR bulk_id IN (SELECT id FROM messaging_bulksend WHERE status IN ('sending', 'testing')))
  ORDER BY priority DESC, due_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id
"""


def claim(worker: str, limit: int) -> list[int]:
    now = timezone.now()
    until = now + LEASE
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_CLAIM_PG, [worker, until, now, limit])
            return sorted(r[0] for r in cursor.fetchall())
    with sqlite_writer(), transaction.atomic():
        active = BulkSend.objects.filter(status__in=ACTIVE_BULK).values("id")
        ids = list(
            Message.objects.filter(status=MessageStatus.QUEUED, due_at__lte=now)
            .filter(Q(bulk__isnull=True) | Q(bulk__in=active))
            .order_by("-priority", "due_at", "id").values_list("id", flat=True)[:limit]
        )
        if ids:
            with connection.cursor() as cursor:
                marks = ",".join("%s" for _ in ids)
                cursor.execute(
                    f"UPDATE messaging_message SET status = 'sending', claimed_by = %s, claimed_until = %s, "
                    f"attempts = attempts + 1 WHERE id IN ({marks}) AND status = 'queued'",
                    [worker, connection.ops.adapt_datetimefield_value(until), *ids],
                )
        return ids


# --- rules at send time ----------------------------------------------------------------------


def _in_quiet_hours(moment: datetime, start: time, end: time) -> bool:
    now = moment.time()
    return start <= now < end if start < end else (now >= start or now < end)


def quiet_until(now: datetime, zone: str, rules: SendingSettings) -> datetime | None:
    if rules.quiet_start is None or rules.quiet_end is None or rules.quiet_start == rules.quiet_end:
        return None
    try:
        tz = zoneinfo.ZoneInfo(zone or rules.default_time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = zoneinfo.ZoneInfo(rules.default_time_zone)
    local = now.astimezone(tz)
    if not _in_quiet_hours(local, rules.quiet_start, rules.quiet_end):
        return None
    end = local.replace(hour=rules.quiet_end.hour, minute=rules.quiet_end.minute, second=0, microsecond=0)
    if end <= local:
        end += timedelta(days=1)
    return end


def rule_facts(messages: Sequence[Message]) -> tuple[dict[str, str], dict[tuple[int, int], str]]:
    """What the send rules read about these messages, in two queries: suppressed addresses (with
    the reason) and consent by (contact, topic) for the marketing ones."""
    emails = {m.to_email.lower() for m in messages}
    suppressed = dict(Suppression.objects.filter(email__in=emails).values_list("email", "reason"))
    marketing = [m for m in messages if m.kind == MessageKind.MARKETING]
    consent: dict[tuple[int, int], str] = {}
    if marketing:
        pairs = Consent.objects.filter(contact_id__in={m.contact_id for m in marketing},
                                       topic_id__in={m.topic_id for m in marketing if m.topic_id})
        consent = {(c.contact_id, c.topic_id): c.status for c in pairs}
    return suppressed, consent


def skip_reason(m: Message, suppressed: dict[str, str], consent: dict[tuple[int, int], str],
                rules: SendingSettings, sent_recently: int) -> str:
    """Why this message may not be sent ("" when it may): suppression, do-not-contact, consent
    and the frequency cap (`sent_recently`: the contact's marketing mails in the cap's window).
    Pure, so a journey simulation asks exactly what the sender asks."""
    contact = m.contact
    if m.to_email.lower() in suppressed:
        return f"suppressed ({suppressed[m.to_email.lower()]})"
    if contact is None:
        return "the contact was deleted"
    if contact.email and contact.email.lower() != m.to_email.lower():
        return "the contact's address changed after queueing"
    if contact.do_not_contact and not (m.kind == MessageKind.TRANSACTIONAL and contact.dnc_reason == "unsubscribed"):
        return f"do not contact ({contact.dnc_reason or 'manual'})"
    if m.kind == MessageKind.MARKETING:
        topic = m.topic
        status = consent.get((m.contact_id, m.topic_id), ConsentStatus.UNKNOWN) if topic else None
        if topic is None:
            return "marketing mail needs a subscription topic"
        if status == ConsentStatus.OPTED_OUT:
            return f"opted out of {topic.key}"
        if status != ConsentStatus.OPTED_IN and topic.requires_opt_in:
            return f"no opt-in for {topic.key}"
        if rules.frequency_cap and sent_recently >= rules.frequency_cap:
            return f"frequency cap: {rules.frequency_cap} marketing mails in {rules.frequency_days} days"
    return ""


def apply_rules(messages: Sequence[Message], now: datetime) -> tuple[list[Message], dict[int, str],
                                                                     dict[int, datetime]]:
    """Splits claimed messages into (send now, skipped with reason, deferred until)."""
    rules = SendingSettings.get()
    suppressed, consent = rule_facts(messages)
    marketing = [m for m in messages if m.kind == MessageKind.MARKETING]
    recent: dict[int, int] = {}
    if marketing and rules.frequency_cap:
        since = now - timedelta(days=rules.frequency_days)
        recent = dict(
            Message.objects.filter(contact_id__in={m.contact_id for m in marketing}, kind=MessageKind.MARKETING,
                                   status=MessageStatus.SENT, sent_at__gte=since)
            .values("contact_id").annotate(n=Count("id")).values_list("contact_id", "n")
        )
    send: list[Message] = []
    skipped: dict[int, str] = {}
    deferred: dict[int, datetime] = {}
    for m in messages:
        reason = skip_reason(m, suppressed, consent, rules, recent.get(m.contact_id, 0))
        if reason:
            skipped[m.pk] = reason
            continue
        if m.kind == MessageKind.MARKETING:
            until = quiet_until(now, m.contact.time_zone if m.contact else "", rules)
            if until is not None:
                deferred[m.pk] = until
                continue
            recent[m.contact_id] = recent.get(m.contact_id, 0) + 1
        send.append(m)
    return send, skipped, deferred


def take_tokens(name: str, rate: float, want: int, burst: float | None = None) -> int:
    """A token bucket kept in the database so the rate holds across workers and restarts."""
    return take_tokens_many([(name, rate, want, burst)])[0]


def take_tokens_many(wants: Sequence[tuple[str, float, int, float | None]]) -> list[int]:
    """Several takes (name, rate per second, wanted, burst) in one transaction and three
    statements, whatever their number: the form endpoints take one per post, a group at a time.
    Takes from the same bucket are served in order. Returns what each was granted."""
    now = timezone.now()
    live = [(name, rate, want, burst or max(rate, 1.0)) for name, rate, want, burst in wants if rate > 0]
    if not live:
        return [want for _name, _rate, want, _burst in wants]
    with sqlite_writer(), transaction.atomic():
        # New buckets start full; existing rows are then locked in name order (no deadlock).
        TokenBucket.objects.bulk_create([TokenBucket(name=name, tokens=burst, updated_at=now)
                                         for name, _rate, _want, burst in live], ignore_conflicts=True)
        buckets = {b.name: b for b in TokenBucket.objects.select_for_update().filter(
            name__in={name for name, *_ in live}).order_by("name")}
        tokens: dict[str, float] = {}
        granted: list[int] = []
        for name, rate, want, burst in wants:
            if rate <= 0:
                granted.append(want)
                continue
            burst = burst or max(rate, 1.0)
            if name not in tokens:
                bucket = buckets[name]
                elapsed = max(0.0, (now - bucket.updated_at).total_seconds())
                tokens[name] = min(burst, bucket.tokens + elapsed * rate)
            granted.append(min(want, int(tokens[name])))
            tokens[name] -= granted[-1]
        # An upsert of the locked rows: cheaper to build than bulk_update's CASE per row.
        TokenBucket.objects.bulk_create([TokenBucket(name=name, tokens=left, updated_at=now)
                                         for name, left in tokens.items()],
                                        update_conflicts=True, unique_fields=["name"],
                                        update_fields=["tokens", "updated_at"])
    return granted


# --- sending ---------------------------------------------------------------------------------


def _load(ids: Iterable[int]) -> list[Message]:
    return list(
        Message.objects.filter(id__in=list(ids)).select_related(
            "contact", "contact__company", "contact__owner", "version", "sender", "topic", "bulk")
        .order_by("id")
    )


def _event(message: Message, name: str, now: datetime, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "track", "event": name, "messageId": f"email-{name.lower().replace(' ', '-')}-{message.pk}",
        "timestamp": now.isoformat(), "context": {"traits": {"email": message.to_email}},
        "properties": {"message": message.pk, "template": message.version.template_id,
                       "templateVersion": message.version_id, "bulkSend": message.bulk_id,
                       "subject": properties.pop("subject", ""), **properties},
    }


def _emit(events: list[dict[str, Any]]) -> None:
    if not events:
        return
    from kizuna.events import ingest

    result = ingest.prepare(events, ingest.RequestInfo(source="email", internal=True), path_prefix="")
    if result.rejected:  # a bug, never the recipient's doing: say so loudly
        log.error("email events refused by the event log: %s", result.rejected)
    ingest.store(result.rows)


class Sender:
    """One sending thread: its own transport connection, claiming batches until stopped."""

    def __init__(self, transport, worker: str, journal: Journal | None):
        self.transport = transport
        self.worker = worker
        self.journal_file = journal
        self.journal = journal or (lambda _line: None)
        self.connection = transport.connection()
        # True from a claim until its batch is recorded: a pass that fails in between (the
        # database went away) leaves rows `sending` under this worker's name, which the next
        # pass settles before claiming more.
        self.unsettled = False

    def close(self) -> None:
        self.connection.close()

    def run_once(self, limit: int | None = None) -> int:
        if self.unsettled:
            self.settle()
        self.unsettled = True  # a claim whose answer is lost still claimed its rows
        ids = claim(self.worker, limit or batch_size())
        if ids:
            self.send_claimed(_load(ids))
        self.unsettled = False
        return len(ids)

    def settle(self) -> None:
        """After a failed pass, settles this worker's own `sending` rows as recovery settles a
        dead worker's: by the journal (F/S sent, else queued again). Without a journal, the
        capture transport rolled its mail back with the pass; an ESP's API may have taken it,
        so such rows become `unknown`, never sent blindly a second time."""
        now = timezone.now()
        if self.journal_file is not None:
            counts = settle_from_journal(self.worker, _read_journal(self.journal_file.path), now,
                                         "recorded from the journal after a failed pass")
            self.journal_file.reset()
        elif getattr(self.transport, "in_transaction", False):
            counts = settle_from_journal(self.worker, {}, now, "")
        else:
            counts = (Message.objects.filter(status=MessageStatus.SENDING, claimed_by=self.worker).update(
                status=MessageStatus.UNKNOWN, claimed_by="",
                error="a pass failed after handing this message to the transport; delivery unknown"), 0)
        if any(counts):
            log.warning("outbox: settled after a failed pass (sent or unknown %s, requeued %s)", *counts)
        self.unsettled = False

    def send_claimed(self, messages: list[Message]) -> None:
        now = timezone.now()
        ready, skipped, deferred = apply_rules(messages, now)
        rules = SendingSettings.get()
        granted = take_tokens(f"transport:{self.transport.name}", rules.rate_per_second, len(ready))
        by_bulk: dict[int, int] = {}
        throttled: list[Message] = []
        sendable: list[Message] = []
        for m in ready[:granted]:
            bulk = m.bulk
            if bulk is not None and bulk.rate_per_minute:
                if m.bulk_id not in by_bulk:
                    wanted = sum(1 for x in ready[:granted] if x.bulk_id == m.bulk_id)
                    by_bulk[m.bulk_id] = take_tokens(f"bulk:{m.bulk_id}", bulk.rate_per_minute / 60, wanted,
                                                     burst=max(1.0, bulk.rate_per_minute / 60))
                if by_bulk[m.bulk_id] <= 0:
                    throttled.append(m)
                    continue
                by_bulk[m.bulk_id] -= 1
            sendable.append(m)
        throttled += ready[granted:]
        results: dict[int, tuple[str, str]] = {}
        in_transaction = getattr(self.transport, "in_transaction", False)
        if in_transaction:
            with sqlite_writer(), transaction.atomic():
                for m in sendable:
                    results[m.pk] = self._send_one(m)
                self._record(messages, results, skipped, deferred, throttled, now)
            return
        for m in sendable:
            results[m.pk] = self._send_one(m)
        # The mail has left: record it even through a database restart. Should the database stay
        # away longer, the journal keeps what happened and settle() or recover() records it.
        for attempt in range(RECORD_ATTEMPTS):
            try:
                with sqlite_writer(), transaction.atomic():
                    self._record(messages, results, skipped, deferred, throttled, now)
                break
            except DatabaseError:
                if attempt == RECORD_ATTEMPTS - 1:
                    raise
                log.warning("outbox: could not record a sent batch; trying again", exc_info=True)
                close_old_connections()
                sleep(min(0.5 * 2 ** attempt, 5.0))
        if self.journal_file is not None:
            self.journal_file.reset()

    def _send_one(self, message: Message) -> tuple[str, str]:
        try:
            mail = composer.compose(message, sign=isinstance(self.transport, transports.SmtpTransport))
        except Exception as exc:  # noqa: BLE001 - a template that fails for this contact
            return "failed", f"could not render: {exc}"[:1000]
        try:
            return "sent", self.connection.send(mail, self.journal, str(message.pk))
        except transports.PermanentFailure as exc:
            return "failed", str(exc)
        except transports.TemporaryFailure as exc:
            return "retry", str(exc)

    def _record(self, messages, results, skipped, deferred, throttled, now) -> None:
        sent: list[Message] = []
        for m in messages:
            outcome = results.get(m.pk)
            base = Message.objects.filter(pk=m.pk, status=MessageStatus.SENDING, claimed_by=self.worker)
            if m.pk in skipped:
                base.update(status=MessageStatus.SKIPPED, error=skipped[m.pk], claimed_by="", claimed_until=None)
            elif m.pk in deferred:
                base.update(status=MessageStatus.QUEUED, due_at=deferred[m.pk], attempts=m.attempts - 1,
                            claimed_by="", claimed_until=None)
            elif outcome is None:  # throttled: back in line, attempt not counted
                base.update(status=MessageStatus.QUEUED, attempts=m.attempts - 1, claimed_by="",
                            claimed_until=None, due_at=now + timedelta(seconds=1))
            elif outcome[0] == "sent":
                sent.append(m)
                m.provider_id = outcome[1]
            elif outcome[0] == "retry" and m.attempts <= len(waits := backoff()):
                base.update(status=MessageStatus.QUEUED, error=outcome[1], claimed_by="", claimed_until=None,
                            due_at=now + waits[min(m.attempts, len(waits)) - 1])
            else:
                if base.update(status=MessageStatus.FAILED, error=outcome[1], claimed_by="", claimed_until=None):
                    metrics.MESSAGES_FAILED.inc()
        if sent:
            metrics.MESSAGES_SENT.inc(len(sent))
            same_provider: dict[str, list[int]] = {}
            for m in sent:
                same_provider.setdefault(m.provider_id, []).append(m.pk)
            for provider_id, ids in same_provider.items():
                Message.objects.filter(pk__in=ids).update(
                    status=MessageStatus.SENT, sent_at=now, provider_id=provider_id, error="", claimed_by="",
                    claimed_until=None)
            _emit([_event(m, "Email Sent", now, {"subject": m.version.subject}) for m in sent if m.contact_id])


def drain(limit: int | None = None, transport=None) -> int:
    """Sends everything due now in this thread (tests, `kizuna send_queued`)."""
    transport = transport or transports.from_settings()
    worker = new_worker_id()
    journal = Journal(worker) if transport.journaled else None
    sender = Sender(transport, worker, journal)
    total = 0
    try:
        while True:
            done = sender.run_once()
            total += done
            if not done or (limit and total >= limit):
                return total
    finally:
        sender.close()
        if journal is not None:
            journal.close()


def run(stop: threading.Event, threads: int | None = None, idle_seconds: float = 0.5) -> None:
    """The worker's email loop: recovery, then `threads` senders (one connection each)."""
    transport = transports.from_settings()
    threads = threads or getattr(getattr(transport, "config", None), "connections", 2)
    recover()
    workers: list[threading.Thread] = []

    def loop() -> None:
        worker = new_worker_id()
        journal = Journal(worker) if transport.journaled else None
        sender = Sender(transport, worker, journal)
        try:
            while not stop.is_set():
                try:
                    done = sender.run_once()
                except Exception:  # noqa: BLE001 - the loop must survive a lost connection
                    log.exception("sending failed")
                    close_old_connections()
                    done = 0
                if not done:
                    sender.close()
                    close_old_connections()
                    stop.wait(idle_seconds)
        finally:
            sender.close()
            if journal is not None:
                journal.close()
            close_old_connections()

    for number in range(threads):
        thread = threading.Thread(target=loop, name=f"kizuna-mail-{number}", daemon=True)
        thread.start()
        workers.append(thread)
    from kizuna.messaging import bulk

    while not stop.is_set():
        try:
            bulk.tick()
            recover()
        except Exception:  # noqa: BLE001
            log.exception("bulk scheduling failed")
            close_old_connections()
        stop.wait(2.0)
    for thread in workers:
        thread.join(timeout=30)
