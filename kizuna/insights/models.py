"""Daily rollups the reports read instead of the raw event log.

Each table is a pure function of the raw data for a day (or, for `ContactPage`, of one
contact's page views): the worker recomputes the days and contacts that new events touched,
so running a pass twice, or rebuilding everything, gives the same rows (kizuna/insights/rollups.py).
"""

from __future__ import annotations

from django.db import models

from kizuna.contacts.models import Contact


class RollupState(models.Model):
    """How far a rollup has read its source table (by id), for incremental passes."""

    name = models.CharField(max_length=40, primary_key=True)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(null=True)


class DailyPage(models.Model):
    """Human page views of one path on one day: views, entries, exits and visible dwell time.
    `timed` counts the views whose dwell is known (measured by the tracker, or up to the next page)."""

    day = models.DateField()
    path = models.CharField(max_length=1000)
    views = models.PositiveIntegerField(default=0)
    entries = models.PositiveIntegerField(default=0)
    exits = models.PositiveIntegerField(default=0)
    timed = models.PositiveIntegerField(default=0)
    dwell_ms = models.BigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day", "path"], name="dailypage_day_path")]


class DailyFlow(models.Model):
    """Page → next page in the same session, per day; `to_path` empty when the visit ended there."""

    day = models.DateField()
    from_path = models.CharField(max_length=1000)
    to_path = models.CharField(max_length=1000, blank=True)
    n = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day", "from_path"], name="dailyflow_day_from")]


class DailySource(models.Model):
    """Human sessions per day by traffic source, referrer host, search keyword and UTM campaign."""

    day = models.DateField()
    source_kind = models.CharField(max_length=10, blank=True)
    source_host = models.CharField(max_length=255, blank=True)
    keyword = models.CharField(max_length=500, blank=True)
    utm_source = models.CharField(max_length=200, blank=True)
    utm_medium = models.CharField(max_length=200, blank=True)
    utm_campaign = models.CharField(max_length=200, blank=True)
    sessions = models.PositiveIntegerField(default=0)
    page_views = models.PositiveIntegerField(default=0)
    engaged_ms = models.BigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day"], name="dailysource_day")]


class DailyStage(models.Model):
    """Lifecycle transitions per day, by the contact's source and first-touch campaign."""

    day = models.DateField()
    from_stage = models.CharField(max_length=16, blank=True)
    to_stage = models.CharField(max_length=16)
    source = models.CharField(max_length=16, blank=True)
    campaign = models.CharField(max_length=200, blank=True)
    n = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day", "to_stage"], name="dailystage_day_stage")]


class DailyContacts(models.Model):
    """New contacts per day by how they came in."""

    day = models.DateField()
    source = models.CharField(max_length=16, blank=True)
    n = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day"], name="dailycontacts_day")]


class DailyEvent(models.Model):
    """Human tracked events (product usage and the like) per day and name."""

    day = models.DateField()
    name = models.CharField(max_length=200)
    n = models.PositiveIntegerField(default=0)
    contacts = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day", "name"], name="dailyevent_day_name")]


class ContactPage(models.Model):
    """Which paths a known contact has ever viewed: the base rate of the path-to-conversion report."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+", db_index=False)
    path = models.CharField(max_length=1000)
    first_at = models.DateTimeField()
    views = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contact", "path"], name="contactpage_unique")]


class PathReach(models.Model):
    """How many known contacts have viewed a path, kept from `ContactPage` for the paths a pass touched."""

    path = models.CharField(max_length=1000, unique=True)
    contacts = models.PositiveIntegerField(default=0)


class CustomerFact(models.Model):
    """A contact that became a customer: when first, and when it first left (Customer → Other) after."""

    contact = models.OneToOneField(Contact, on_delete=models.CASCADE, related_name="customer_fact")
    became_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [models.Index(fields=["became_at"], name="customerfact_became")]


class CustomerEvent(models.Model):
    """The first time a customer did each tracked event (by name) since becoming a customer:
    renewals, churn and early product usage for the retention report."""

    fact = models.ForeignKey(CustomerFact, on_delete=models.CASCADE, related_name="events")
    name = models.CharField(max_length=200)
    first_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["fact", "name"], name="customerevent_unique")]
        indexes = [models.Index(fields=["name", "fact"], name="customerevent_name")]
