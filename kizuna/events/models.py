"""The event log and what processing derives from it.

Flow: ingestion writes `IncomingEvent` rows (the inbox) and acknowledges only after they are
committed. The processor moves them, in order and in one transaction per batch, into `Event`
(the append-only, enriched log) and derives identities, visitors, sessions and page views.
See docs/decisions/0005-event-pipeline.md.
"""

from __future__ import annotations

import secrets

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Company, Contact


def new_write_key() -> str:
    return secrets.token_urlsafe(18)


class WriteKey(models.Model):
    """A source of events. Write keys are public (they ship in web pages); they only allow
    sending events, and `allowed_domains` limits which sites may use a browser key."""

    name = models.CharField(_("name"), max_length=100)
    key = models.CharField(_("write key"), max_length=64, unique=True, default=new_write_key)
    allowed_domains = models.TextField(
        _("allowed domains"), blank=True,
        help_text=_("One per line, e.g. example.co.jp or *.example.co.jp. Empty: any site may send."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("write key")

    def __str__(self) -> str:
        return self.name

    def domain_list(self) -> list[str]:
        return [d.strip().lower() for d in self.allowed_domains.splitlines() if d.strip()]


class TrackingSettings(models.Model):
    """One row of site-wide tracking options (pk=1)."""

    consent_required = models.BooleanField(
        _("require consent before tracking"), default=False,
        help_text=_("The tracker sets no cookie and sends nothing until the site calls kizuna('consent', 'granted')."),
    )
    respect_dnt = models.BooleanField(_("respect Do Not Track / Global Privacy Control"), default=False)
    identify_forms = models.BooleanField(
        _("identify visitors when they submit a form with an email address"), default=True
    )
    anonymize_ip = models.BooleanField(_("anonymise IP addresses"), default=False)
    session_timeout_minutes = models.PositiveSmallIntegerField(_("session timeout (minutes)"), default=30)
    bot_user_agents = models.TextField(
        _("bot user agents"), blank=True, help_text=_("One regular expression per line; matches are flagged as bots.")
    )
    bot_networks = models.TextField(
        _("bot IP addresses"), blank=True, help_text=_("One IP address or CIDR range per line.")
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("tracking settings")

    @classmethod
    def load(cls) -> TrackingSettings:
        obj, _created = cls.objects.get_or_create(pk=1)
        return obj


class IpRange(models.Model):
    """Admin-maintained IP range → company, the 'visiting companies' table; wins over network owner."""

    network = models.CharField(_("network"), max_length=100, unique=True)
    company = models.ForeignKey(Company, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("company"))
    company_name = models.CharField(_("company name"), max_length=255)
    note = models.CharField(_("note"), max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["network"]
        verbose_name = _("IP range")


class IncomingEvent(models.Model):
    """The inbox: accepted, validated, not yet processed. Rows leave in the same transaction
    that writes their `Event`, which makes processing exactly-once and crash-safe."""

    message_id = models.CharField(max_length=100, unique=True)
    lane = models.PositiveSmallIntegerField(default=0)
    received_at = models.DateTimeField()
    payload = models.TextField()  # normalised message as JSON
    error = models.TextField(blank=True)  # why processing failed; such rows wait for a retry

    class Meta:
        indexes = [models.Index(fields=["lane", "id"], name="incoming_lane_id")]


class ProcessingLane(models.Model):
    """A worker holds a lane's row lock while processing it, so two workers never process
    one visitor's events at once (lanes split the inbox by anonymous id / user id)."""

    number = models.PositiveSmallIntegerField(primary_key=True)
    processed = models.BigIntegerField(default=0)
    last_processed_at = models.DateTimeField(null=True)


class EventType(models.TextChoices):
    IDENTIFY = "identify", _("Identify")
    TRACK = "track", _("Track")
    PAGE = "page", _("Page view")
    SCREEN = "screen", _("Screen view")
    GROUP = "group", _("Group")
    ALIAS = "alias", _("Alias")


class Event(models.Model):
    """One processed event: the append-only log every later stage reads."""

    # Not a unique column: on PostgreSQL the log is partitioned by month, and a unique index there
    # would have to include the month. Processing keeps each message once (a retry is looked up
    # before insert, and one message's retries share a lane, so one worker at a time sees them).
    message_id = models.CharField(max_length=100)
    type = models.CharField(max_length=10, choices=EventType.choices)
    name = models.CharField(max_length=200, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    # FK indexes that a composite index below already covers are left out: every index costs
    # each inserted event (see docs/benchmarks.md).
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.CASCADE, related_name="events",
                                db_index=False)
    anonymous_id = models.CharField(max_length=100, blank=True)
    user_id = models.CharField(max_length=200, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField()
    source = models.CharField(max_length=64, blank=True)  # write key name, or "system"
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    url = models.CharField(max_length=2000, blank=True)
    path = models.CharField(max_length=1000, blank=True)
    title = models.CharField(max_length=500, blank=True)
    referrer = models.CharField(max_length=2000, blank=True)
    utm_source = models.CharField(max_length=200, blank=True)
    utm_medium = models.CharField(max_length=200, blank=True)
    utm_campaign = models.CharField(max_length=200, blank=True)
    utm_term = models.CharField(max_length=200, blank=True)
    utm_content = models.CharField(max_length=200, blank=True)
    session = models.ForeignKey("Session", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                db_index=False)  # sessions are never deleted on their own
    bot = models.CharField(max_length=100, blank=True, help_text="Why it is a bot; empty for humans.")

    class Meta:
        indexes = [
            models.Index(fields=["contact", "-occurred_at"], name="event_contact_time"),
            models.Index(fields=["anonymous_id", "-occurred_at"], name="event_anon_time"),
            models.Index(fields=["-occurred_at"], name="event_time"),
            models.Index(fields=["message_id"], name="event_message_id"),
            models.Index(fields=["type", "name", "-occurred_at"], name="event_type_time"),
            # A contact's human page views and tracked events by name, for segment conditions
            # ("visited /pricing twice in 30 days", "no Demo Booked"): without them a busy
            # contact's whole history is read to find one kind of event.
            # The path is in it so that a filter on pages alone reads this index, not the log.
            models.Index(fields=["contact", "-occurred_at", "path"], condition=Q(type="page", bot=""),
                         name="event_contact_page"),
            models.Index(fields=["contact", "name", "-occurred_at"],
                         condition=Q(type__in=["track", "screen"], bot=""), name="event_contact_track"),
        ]

    @property
    def is_bot(self) -> bool:
        return bool(self.bot)


class IdentityKind(models.TextChoices):
    ANONYMOUS = "anonymous", _("Anonymous id")
    USER = "user", _("User id")
    EMAIL = "email", _("Email")  # the address


class Identity(models.Model):
    """Anonymous ids, user ids and emails that resolve to one contact."""

    kind = models.CharField(max_length=10, choices=IdentityKind.choices)
    value = models.CharField(max_length=254)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="identities")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "value"], name="identity_unique")]
        verbose_name_plural = "identities"


class Visitor(models.Model):
    """A browser (anonymous id) as the visitor list shows it, known or not yet."""

    anonymous_id = models.CharField(max_length=100, unique=True)
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="visitors")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    sessions = models.PositiveIntegerField(default=0)
    page_views = models.PositiveIntegerField(default=0)
    company = models.ForeignKey(Company, null=True, blank=True, on_delete=models.SET_NULL, related_name="visitors")
    company_name = models.CharField(max_length=255, blank=True)  # from the IP-range table or network owner
    country = models.CharField(max_length=2, blank=True)
    last_url = models.CharField(max_length=2000, blank=True)
    bot = models.CharField(max_length=100, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["-last_seen"], name="visitor_last_seen"),
            models.Index(fields=["company_name", "-last_seen"], name="visitor_company"),
        ]


class Session(models.Model):
    """A visit: ends after the inactivity timeout or when a new campaign arrives."""

    anonymous_id = models.CharField(max_length=100)
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions",
                                db_index=False)  # session_contact covers it
    started_at = models.DateTimeField()
    last_activity_at = models.DateTimeField()
    page_views = models.PositiveIntegerField(default=0)
    engaged_ms = models.BigIntegerField(default=0)
    entry_url = models.CharField(max_length=2000, blank=True)
    entry_path = models.CharField(max_length=1000, blank=True)
    exit_url = models.CharField(max_length=2000, blank=True)
    exit_path = models.CharField(max_length=1000, blank=True)
    referrer = models.CharField(max_length=2000, blank=True)
    source_kind = models.CharField(max_length=10, blank=True)  # search, paid, social, email, referral, internal, direct
    source_host = models.CharField(max_length=255, blank=True)
    source_engine = models.CharField(max_length=100, blank=True)
    keyword = models.CharField(max_length=500, blank=True)
    click_id = models.CharField(max_length=20, blank=True)
    utm_source = models.CharField(max_length=200, blank=True)
    utm_medium = models.CharField(max_length=200, blank=True)
    utm_campaign = models.CharField(max_length=200, blank=True)
    utm_term = models.CharField(max_length=200, blank=True)
    utm_content = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    country = models.CharField(max_length=2, blank=True)
    network_org = models.CharField(max_length=255, blank=True)
    company = models.ForeignKey(Company, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    company_name = models.CharField(max_length=255, blank=True)
    browser = models.CharField(max_length=100, blank=True)
    os = models.CharField(max_length=100, blank=True)
    device = models.CharField(max_length=10, blank=True)
    bot = models.CharField(max_length=100, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["anonymous_id", "-last_activity_at"], name="session_anon_last"),
            models.Index(fields=["contact", "-started_at"], name="session_contact"),
            models.Index(fields=["-started_at"], name="session_started"),
            models.Index(fields=["source_kind", "-started_at"], name="session_source"),
        ]


class PageView(models.Model):
    """One page in a session's ordered path, with the visible time spent on it."""

    # No database constraint: PostgreSQL cannot point a foreign key at the monthly-partitioned log
    # by id alone. Deleting events through the ORM still takes their page views along, and
    # dropping a month's partition deletes them first (kizuna.events.partitions).
    event = models.OneToOneField(Event, on_delete=models.CASCADE, related_name="page_view", db_constraint=False)
    page_view_id = models.CharField(max_length=100, unique=True)  # the page message's id
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="pages")
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="page_views",
                                db_index=False)  # pageview_contact covers it
    anonymous_id = models.CharField(max_length=100)
    seq = models.PositiveIntegerField()
    occurred_at = models.DateTimeField()
    url = models.CharField(max_length=2000)
    path = models.CharField(max_length=1000)
    title = models.CharField(max_length=500, blank=True)
    dwell_ms = models.BigIntegerField(default=0)
    measured = models.BooleanField(default=False)  # dwell from the tracker's visible time, not estimated
    scroll_depth = models.PositiveSmallIntegerField(default=0)
    is_exit = models.BooleanField(default=True)

    class Meta:
        ordering = ["session_id", "seq"]
        indexes = [
            models.Index(fields=["contact", "-occurred_at"], name="pageview_contact"),
            models.Index(fields=["path", "-occurred_at"], name="pageview_path"),
        ]
