"""Email: senders, templates with versions, the outbox, tracking and suppression.

The outbox (`Message`) is the heart: a row exists before anything is sent, its idempotency key
is unique, so a second copy of the same mail cannot even be queued. See
docs/decisions/0007-email-outbox.md for the delivery guarantee.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from kizuna.contacts.models import Contact, ContactList, SubscriptionTopic


class MessageKind(models.TextChoices):
    MARKETING = "marketing", _("Marketing")
    TRANSACTIONAL = "transactional", _("Transactional")


class Sender(models.Model):
    """Who a message is from. Name and postal address go into every marketing message
    (特定電子メール法 requires the sender's name and address)."""

    name = models.CharField(_("label"), max_length=100, unique=True)
    from_name = models.CharField(_("from name"), max_length=150)
    from_email = models.EmailField(_("from address"))
    reply_to = models.EmailField(_("reply-to"), blank=True)
    organisation = models.CharField(_("sender's organisation name"), max_length=200)
    postal_address = models.CharField(_("postal address"), max_length=300)
    contact_info = models.CharField(
        _("enquiries"), max_length=200, blank=True,
        help_text=_("An address or phone number for enquiries, shown in the footer."),
    )
    dkim_selector = models.CharField(_("DKIM selector"), max_length=63, blank=True)
    dkim_private_key = models.TextField(
        _("DKIM private key (PEM)"), blank=True,
        help_text=_("Messages sent over SMTP are signed with it for the domain of the from address."),
    )
    is_default = models.BooleanField(_("default sender"), default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("sender")

    def __str__(self) -> str:
        return f"{self.from_name} <{self.from_email}>"

    @property
    def domain(self) -> str:
        return self.from_email.rpartition("@")[2].lower()


class EmailTemplate(models.Model):
    name = models.CharField(_("name"), max_length=150, unique=True)
    kind = models.CharField(_("kind"), max_length=16, choices=MessageKind.choices, default=MessageKind.MARKETING)
    topic = models.ForeignKey(
        SubscriptionTopic, verbose_name=_("subscription topic"), null=True, blank=True, on_delete=models.PROTECT,
        help_text=_("Marketing mail goes only to contacts whose consent allows this topic."),
    )
    sender = models.ForeignKey(Sender, verbose_name=_("sender"), null=True, blank=True, on_delete=models.PROTECT)
    current = models.ForeignKey(
        "TemplateVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("email template")

    def __str__(self) -> str:
        return self.name


class TemplateVersion(models.Model):
    """An immutable version. `compiled_html` is the MJML/CSS-inlined source, made once on save
    so that sending never inlines CSS per message."""

    template = models.ForeignKey(EmailTemplate, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    subject = models.CharField(_("subject"), max_length=300)
    preheader = models.CharField(_("preheader"), max_length=200, blank=True)
    html = models.TextField(_("HTML"))
    text = models.TextField(_("plain text"), blank=True, help_text=_("Empty: made from the HTML."))
    is_mjml = models.BooleanField(_("MJML"), default=False)
    compiled_html = models.TextField(editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["template", "-number"]
        constraints = [models.UniqueConstraint(fields=["template", "number"], name="template_version_number")]

    def __str__(self) -> str:
        return f"{self.template.name} v{self.number}"


class TemplateLink(models.Model):
    """The links of a version, in document order: a click token names (message, position),
    and only these URLs can be redirected to."""

    version = models.ForeignKey(TemplateVersion, on_delete=models.CASCADE, related_name="links")
    position = models.PositiveIntegerField()
    url = models.TextField()

    class Meta:
        ordering = ["version", "position"]
        constraints = [models.UniqueConstraint(fields=["version", "position"], name="template_link_position")]


class BulkStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SCHEDULED = "scheduled", _("Scheduled")
    PREPARING = "preparing", _("Preparing recipients")
    SENDING = "sending", _("Sending")
    TESTING = "testing", _("A/B test running")
    PAUSED = "paused", _("Paused")
    CANCELLED = "cancelled", _("Cancelled")
    DONE = "done", _("Done")


class BulkSend(models.Model):
    """一斉配信: one template to a list or a segment, scheduled, throttled, pausable, with an optional A/B test."""

    name = models.CharField(_("name"), max_length=200)
    template = models.ForeignKey(EmailTemplate, verbose_name=_("template"), on_delete=models.PROTECT)
    version = models.ForeignKey(TemplateVersion, on_delete=models.PROTECT, related_name="+")
    variant_b = models.ForeignKey(
        TemplateVersion, verbose_name=_("variant B"), null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    contact_list = models.ForeignKey(ContactList, verbose_name=_("list"), null=True, blank=True,
                                     on_delete=models.PROTECT)
    # The audience is a list or a segment (its membership when the send is prepared), never both.
    segment = models.ForeignKey("segments.Segment", verbose_name=_("segment"), null=True, blank=True,
                                on_delete=models.PROTECT, related_name="bulk_sends")
    status = models.CharField(_("status"), max_length=16, choices=BulkStatus.choices, default=BulkStatus.DRAFT)
    scheduled_at = models.DateTimeField(_("send at"), null=True, blank=True)
    rate_per_minute = models.PositiveIntegerField(_("at most per minute"), null=True, blank=True)
    ab_sample_percent = models.PositiveSmallIntegerField(_("A/B sample (%)"), default=0)
    ab_metric = models.CharField(_("winner by"), max_length=8, default="clicks",
                                 choices=[("clicks", _("human clicks")), ("opens", _("human opens"))])
    ab_wait_minutes = models.PositiveIntegerField(_("decide after (minutes)"), default=240)
    ab_decide_at = models.DateTimeField(null=True, blank=True)
    ab_winner = models.CharField(max_length=1, blank=True)
    total = models.PositiveIntegerField(default=0)
    prepared = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("bulk send")
        constraints = [models.CheckConstraint(condition=~models.Q(contact_list__isnull=False, segment__isnull=False),
                                              name="bulk_list_or_segment")]

    def __str__(self) -> str:
        return self.name


class MessageStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    HELD = "held", _("Held (A/B remainder)")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    UNKNOWN = "unknown", _("Unknown (worker stopped mid-send)")
    FAILED = "failed", _("Failed")
    SKIPPED = "skipped", _("Not sent (rules)")
    CANCELLED = "cancelled", _("Cancelled")


class Message(models.Model):
    """One email to one recipient: the outbox row and, after sending, its record."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    contact = models.ForeignKey(Contact, null=True, on_delete=models.SET_NULL, related_name="messages")
    to_email = models.CharField(max_length=254)
    version = models.ForeignKey(TemplateVersion, on_delete=models.PROTECT, related_name="messages")
    sender = models.ForeignKey(Sender, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=MessageKind.choices, default=MessageKind.MARKETING)
    topic = models.ForeignKey(SubscriptionTopic, null=True, blank=True, on_delete=models.SET_NULL)
    bulk = models.ForeignKey(BulkSend, null=True, blank=True, on_delete=models.CASCADE, related_name="messages")
    variant = models.CharField(max_length=1, blank=True)
    extra = models.JSONField(default=dict, blank=True)  # context from the caller (journey, form, ...)
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.QUEUED)
    priority = models.SmallIntegerField(default=0)  # transactional mail before bulk
    due_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    provider_id = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)
    # What came back, denormalised for reports (human and machine counted apart).
    bounce = models.CharField(max_length=10, blank=True)  # hard / soft
    bounced_at = models.DateTimeField(null=True, blank=True)
    complained_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)  # first human open
    clicked_at = models.DateTimeField(null=True, blank=True)  # first human click
    machine_opened_at = models.DateTimeField(null=True, blank=True)
    machine_clicked_at = models.DateTimeField(null=True, blank=True)
    opens = models.PositiveIntegerField(default=0)
    clicks = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "priority", "due_at"], name="outbox_due"),
            models.Index(fields=["to_email", "sent_at"], name="message_recipient"),
            models.Index(fields=["contact", "sent_at"], name="message_contact"),
            models.Index(fields=["bulk", "status"], name="message_bulk"),
        ]

    def __str__(self) -> str:
        return f"{self.to_email}: {self.version}"


class Activity(models.Model):
    """One open or click as it arrived, with the machine verdict."""

    class Kind(models.TextChoices):
        OPEN = "open", _("Open")
        CLICK = "click", _("Click")

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="activities")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    position = models.PositiveIntegerField(null=True, blank=True)  # link position for clicks
    url = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    machine = models.BooleanField(default=False)
    reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["at"]
        indexes = [models.Index(fields=["message", "kind"], name="activity_message")]


class SuppressionReason(models.TextChoices):
    HARD_BOUNCE = "hard_bounce", _("Hard bounce")
    SOFT_BOUNCE = "soft_bounce", _("Repeated soft bounces")
    COMPLAINT = "complaint", _("Spam complaint")
    UNSUBSCRIBE = "unsubscribe", _("Unsubscribed from everything")
    MANUAL = "manual", _("Added by hand")


class Suppression(models.Model):
    """Addresses never mailed (marketing or not: a bouncing address bounces transactional mail
    too). Checked at send time, whatever the contact record says."""

    email = models.CharField(_("email"), max_length=254, unique=True)
    reason = models.CharField(_("reason"), max_length=16, choices=SuppressionReason.choices)
    detail = models.CharField(_("detail"), max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("suppressed address")


class BounceRecord(models.Model):
    """Every bounce, complaint or auto reply that came back, kept for the report and audit."""

    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="bounces")
    email = models.CharField(max_length=254)
    kind = models.CharField(max_length=12)
    status = models.CharField(max_length=16, blank=True)
    diagnostic = models.TextField(blank=True)
    source = models.CharField(max_length=32)  # dsn, webhook:sendgrid, ...
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]


class CapturedMail(models.Model):
    """What the capture transport "sent": the demo shows these instead of delivering them."""

    message = models.OneToOneField(Message, null=True, on_delete=models.CASCADE, related_name="captured")
    envelope_to = models.CharField(max_length=254)
    raw = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]


class TokenBucket(models.Model):
    """Persisted throttle per transport: survives restarts and is shared by all workers."""

    name = models.CharField(max_length=64, unique=True)
    tokens = models.FloatField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)


class SendingSettings(models.Model):
    """Singleton: the rules every marketing message passes at send time."""

    frequency_cap = models.PositiveSmallIntegerField(
        _("at most this many marketing mails per contact"), default=3,
        help_text=_("0 turns the cap off. Transactional mail is never capped."),
    )
    frequency_days = models.PositiveSmallIntegerField(_("within days"), default=7)
    quiet_start = models.TimeField(_("quiet hours start"), null=True, blank=True)
    quiet_end = models.TimeField(_("quiet hours end"), null=True, blank=True)
    default_time_zone = models.CharField(_("time zone for contacts without one"), max_length=64,
                                         default="Asia/Tokyo")
    rate_per_second = models.FloatField(_("transport rate (messages per second)"), default=0,
                                        help_text=_("0: as fast as the transport takes them."))

    class Meta:
        verbose_name = _("sending settings")

    @classmethod
    def get(cls) -> SendingSettings:
        obj, _created = cls.objects.get_or_create(pk=1)
        return obj
