"""Contacts, companies, custom fields, consent, tags and lists, imports."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .reference import PREFECTURE_CHOICES, CompanySize, Industry, Region


class LifecycleStage(models.TextChoices):
    SUBSCRIBER = "subscriber", _("Subscriber")
    LEAD = "lead", _("Lead")
    MQL = "mql", _("Marketing qualified lead")
    SQL = "sql", _("Sales qualified lead")
    OPPORTUNITY = "opportunity", _("Opportunity")
    CUSTOMER = "customer", _("Customer")
    EVANGELIST = "evangelist", _("Evangelist")
    OTHER = "other", _("Other")


class Source(models.TextChoices):
    MANUAL = "manual", _("Entered by hand")
    FORM = "form", _("Form")
    IMPORT = "import", _("Import")
    API = "api", _("API")
    EVENT = "event", _("Tracked event")


class DoNotContactReason(models.TextChoices):
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
    BOUNCED = "bounced", _("Bounced")
    COMPLAINED = "complained", _("Complained (spam report)")
    MANUAL = "manual", _("Set by hand")


class Company(models.Model):
    name = models.CharField(_("name"), max_length=255)
    domain = models.CharField(_("domain"), max_length=255, null=True, blank=True, unique=True)
    industry = models.CharField(_("industry"), max_length=32, blank=True, choices=Industry.choices)
    company_size = models.CharField(_("company size"), max_length=16, blank=True, choices=CompanySize.choices)
    employees = models.PositiveIntegerField(_("employees"), null=True, blank=True)
    prefecture = models.CharField(_("prefecture"), max_length=2, blank=True, choices=PREFECTURE_CHOICES)
    address = models.CharField(_("address"), max_length=500, blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    website = models.CharField(_("website"), max_length=500, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="owned_companies", verbose_name=_("owner"),
    )
    custom = models.JSONField(_("custom fields"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("company")
        verbose_name_plural = _("companies")
        ordering = ["name"]
        indexes = [models.Index(fields=["name"])]

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    email = models.CharField(_("email"), max_length=254, null=True, blank=True, unique=True)
    family_name = models.CharField(_("family name"), max_length=100, blank=True)
    given_name = models.CharField(_("given name"), max_length=100, blank=True)
    family_name_kana = models.CharField(_("family name (furigana)"), max_length=100, blank=True)
    given_name_kana = models.CharField(_("given name (furigana)"), max_length=100, blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    company = models.ForeignKey(
        Company, null=True, blank=True, on_delete=models.SET_NULL, related_name="contacts",
        verbose_name=_("company"),
    )
    company_name = models.CharField(
        _("company name"), max_length=255, blank=True,
        help_text=_("As the contact gave it; the linked company is found by email domain."),
    )
    job_title = models.CharField(_("job title"), max_length=150, blank=True)
    department = models.CharField(_("department"), max_length=150, blank=True)
    prefecture = models.CharField(_("prefecture"), max_length=2, blank=True, choices=PREFECTURE_CHOICES)
    region = models.CharField(_("region"), max_length=16, blank=True, choices=Region.choices)
    industry = models.CharField(_("industry"), max_length=32, blank=True, choices=Industry.choices)
    company_size = models.CharField(_("company size"), max_length=16, blank=True, choices=CompanySize.choices)
    lifecycle_stage = models.CharField(
        _("lifecycle stage"), max_length=16, choices=LifecycleStage.choices, default=LifecycleStage.LEAD
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="owned_contacts", verbose_name=_("owner"),
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="contacts", verbose_name=_("tags"))
    source = models.CharField(_("source"), max_length=16, choices=Source.choices, default=Source.MANUAL)
    language = models.CharField(_("preferred language"), max_length=8, blank=True,
                                choices=[("ja", "日本語"), ("en", "English")])
    time_zone = models.CharField(_("time zone"), max_length=64, blank=True)
    custom = models.JSONField(_("custom fields"), default=dict, blank=True)
    do_not_contact = models.BooleanField(_("do not contact"), default=False)
    dnc_reason = models.CharField(_("do-not-contact reason"), max_length=16, blank=True,
                                  choices=DoNotContactReason.choices)
    dnc_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)
    last_activity_at = models.DateTimeField(_("last activity"), null=True, blank=True)

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        indexes = [
            models.Index(fields=["family_name", "given_name"]),
            models.Index(fields=["family_name_kana", "id"]),
            models.Index(fields=["company_name", "id"]),
            models.Index(fields=["lifecycle_stage", "id"]),
            models.Index(fields=["prefecture", "id"]),
            models.Index(fields=["industry", "id"]),
            models.Index(fields=["owner", "id"]),
            models.Index(fields=["created_at"]),
            models.Index(fields=["updated_at", "id"]),
            models.Index(fields=["last_activity_at", "id"]),
        ]

    def __str__(self) -> str:
        return self.full_name or self.email or f"#{self.pk}"

    @property
    def full_name(self) -> str:
        """Japanese order: family name first."""
        return f"{self.family_name} {self.given_name}".strip()

    @property
    def full_name_kana(self) -> str:
        return f"{self.family_name_kana} {self.given_name_kana}".strip()

    @property
    def email_domain(self) -> str:
        return self.email.rsplit("@", 1)[-1] if self.email else ""


class ContactList(models.Model):
    """A static list (seminar attendees, a newsletter list); dynamic segments live elsewhere."""

    name = models.CharField(_("name"), max_length=150, unique=True)
    description = models.TextField(_("description"), blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    members = models.ManyToManyField(Contact, through="ListMembership", related_name="lists")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ListMembership(models.Model):
    contact_list = models.ForeignKey(ContactList, on_delete=models.CASCADE, related_name="memberships")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="list_memberships")
    added_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact_list", "contact"], name="uniq_list_member")]
        indexes = [models.Index(fields=["contact"])]


class CustomField(models.Model):
    """An admin-defined field on contacts or companies, stored in their `custom` JSON."""

    class Target(models.TextChoices):
        CONTACT = "contact", _("Contact")
        COMPANY = "company", _("Company")

    class Type(models.TextChoices):
        TEXT = "text", _("Text")
        NUMBER = "number", _("Number")
        DATE = "date", _("Date")
        CHOICE = "choice", _("Choice")
        MULTI_CHOICE = "multi_choice", _("Multiple choice")
        BOOLEAN = "boolean", _("Yes / no")

    target = models.CharField(_("applies to"), max_length=16, choices=Target.choices, default=Target.CONTACT)
    key = models.SlugField(
        _("key"), max_length=64,
        help_text=_("Lower-case letters, digits and _; used in API, imports and templates."),
    )
    label = models.CharField(_("label"), max_length=150)
    field_type = models.CharField(_("type"), max_length=16, choices=Type.choices, default=Type.TEXT)
    choices = models.JSONField(_("choices"), default=list, blank=True)
    required = models.BooleanField(_("required"), default=False)
    help_text = models.CharField(_("help text"), max_length=300, blank=True)
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["target", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["target", "key"], name="uniq_custom_field_key")]

    def __str__(self) -> str:
        return self.label


class SubscriptionTopic(models.Model):
    """What a contact can opt into or out of: newsletter, seminars, product news…"""

    key = models.SlugField(_("key"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=150)
    description = models.TextField(_("description"), blank=True)
    requires_opt_in = models.BooleanField(
        _("requires opt-in"), default=True,
        help_text=_("Marketing mail on this topic goes only to contacts who opted in "
                    "(特定電子メール法). Untick only for topics the law exempts."),
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ConsentStatus(models.TextChoices):
    OPTED_IN = "opted_in", _("Opted in")
    OPTED_OUT = "opted_out", _("Opted out")
    UNKNOWN = "unknown", _("Unknown")


class Consent(models.Model):
    """The current consent of one contact for one topic (no row: unknown)."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consents")
    topic = models.ForeignKey(SubscriptionTopic, on_delete=models.CASCADE, related_name="consents")
    status = models.CharField(max_length=16, choices=ConsentStatus.choices)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "topic"], name="uniq_consent")]
        indexes = [models.Index(fields=["topic", "status"])]


class ConsentRecord(models.Model):
    """The consent ledger: every change, with how it was given and the words shown. Append-only."""

    class Method(models.TextChoices):
        FORM = "form", _("Form")
        IMPORT = "import", _("Import")
        API = "api", _("API")
        MANUAL = "manual", _("By hand")
        UNSUBSCRIBE = "unsubscribe", _("Unsubscribe link")
        BOUNCE = "bounce", _("Bounce")
        COMPLAINT = "complaint", _("Complaint")
        BUSINESS_CARD = "business_card", _("Business card exchange")

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consent_records")
    topic = models.ForeignKey(SubscriptionTopic, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+", help_text="Empty: the contact-wide do-not-contact flag")
    status = models.CharField(
        max_length=16,
        choices=ConsentStatus.choices + [("dnc", _("Do not contact")), ("contactable", _("Contactable"))],
    )
    at = models.DateTimeField(default=timezone.now)
    method = models.CharField(max_length=16, choices=Method.choices)
    source = models.CharField(_("source"), max_length=255, blank=True)
    text_shown = models.TextField(_("text shown"), blank=True)
    # The version of those words (a form's consent text is versioned: a new wording, a new version).
    text_version = models.CharField(_("text version"), max_length=50, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["contact", "-at"])]


class ImportPreset(models.Model):
    """A saved column mapping, so a recurring list (a monthly seminar export) maps in one click."""

    name = models.CharField(_("name"), max_length=150, unique=True)
    mapping = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ImportJob(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Awaiting mapping")
        QUEUED = "queued", _("Queued")
        VALIDATING = "validating", _("Checking rows")
        WRITING = "writing", _("Writing contacts")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    class DuplicatePolicy(models.TextChoices):
        UPDATE = "update", _("Update existing contacts")
        SKIP = "skip", _("Skip existing contacts")
        FILL = "fill", _("Fill only empty fields")

    class Kind(models.TextChoices):
        BUSINESS_CARDS = "business_cards", _("Business cards")
        SEMINAR = "seminar", _("Seminar attendees")
        NEWSLETTER = "newsletter", _("Newsletter list")
        OTHER = "other", _("Other list")

    class Format(models.TextChoices):
        CSV = "csv", _("CSV")
        XLSX = "xlsx", _("Excel (XLSX)")

    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255)
    file_size = models.PositiveBigIntegerField(default=0)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.OTHER)
    file_format = models.CharField(max_length=8, choices=Format.choices, default=Format.CSV)
    encoding = models.CharField(max_length=32, blank=True)
    delimiter = models.CharField(max_length=1, blank=True, default=",")
    # Column names as shown and mapped: blank headers become "Column N", repeats get " (2)".
    headers = models.JSONField(default=list, blank=True)
    # The first data rows, for the mapping page.
    samples = models.JSONField(default=list, blank=True)
    mapping = models.JSONField(default=dict, blank=True)
    duplicate_policy = models.CharField(
        max_length=8, choices=DuplicatePolicy.choices, default=DuplicatePolicy.UPDATE
    )
    tags = models.JSONField(default=list, blank=True)
    # The list to add imported contacts to, by name: created by the import itself, so a failed
    # import leaves no empty list behind.
    list_name = models.CharField(max_length=150, blank=True)
    contact_list = models.ForeignKey(ContactList, null=True, blank=True, on_delete=models.SET_NULL)
    consent_topic = models.ForeignKey(SubscriptionTopic, null=True, blank=True, on_delete=models.SET_NULL)
    consent_status = models.CharField(max_length=16, blank=True, choices=ConsentStatus.choices)
    consent_source = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    error_report = models.FileField(upload_to="imports/errors/", blank=True)
    failure = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.original_name} ({self.get_status_display()})"
