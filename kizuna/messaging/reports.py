"""The numbers of a send: people by default, machines shown apart."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from kizuna.messaging.models import Activity, Message, MessageStatus

COMPLAINT_LIMIT = 0.003  # Gmail's and Yahoo's bulk-sender limit: 0.3 %


def counts() -> dict:
    """The aggregate expressions of a summary, for `aggregate()` or, per group, `annotate()`."""
    return dict(
        queued=Count("id", filter=Q(status__in=[MessageStatus.QUEUED, MessageStatus.HELD, MessageStatus.SENDING])),
        sent=Count("id", filter=Q(status=MessageStatus.SENT)),
        failed=Count("id", filter=Q(status=MessageStatus.FAILED)),
        skipped=Count("id", filter=Q(status=MessageStatus.SKIPPED)),
        unknown=Count("id", filter=Q(status=MessageStatus.UNKNOWN)),
        cancelled=Count("id", filter=Q(status=MessageStatus.CANCELLED)),
        hard=Count("id", filter=Q(bounce="hard")),
        soft=Count("id", filter=Q(bounce="soft")),
        human_opens=Count("id", filter=Q(opened_at__isnull=False)),
        machine_only_opens=Count("id", filter=Q(opened_at__isnull=True, machine_opened_at__isnull=False)),
        human_clicks=Count("id", filter=Q(clicked_at__isnull=False)),
        machine_only_clicks=Count("id", filter=Q(clicked_at__isnull=True, machine_clicked_at__isnull=False)),
        unsubscribes=Count("id", filter=Q(unsubscribed_at__isnull=False)),
        complaints=Count("id", filter=Q(complained_at__isnull=False)),
    )


def summary(messages: QuerySet[Message]) -> dict:
    return derive(messages.aggregate(**counts()))


def derive(c: dict) -> dict:
    """Rates and shares from the counts (one send's, or one group's of a grouped query)."""
    sent = c["sent"]
    delivered = max(0, sent - c["hard"] - c["soft"])
    c["delivered"] = delivered

    def rate(n: int, base: int) -> float | None:
        return n / base if base else None

    c["open_rate"] = rate(c["human_opens"], delivered)
    c["click_rate"] = rate(c["human_clicks"], delivered)
    c["bounce_rate"] = rate(c["hard"] + c["soft"], sent)
    c["complaint_rate"] = rate(c["complaints"], delivered)
    c["unsubscribe_rate"] = rate(c["unsubscribes"], delivered)
    opened_any = c["human_opens"] + c["machine_only_opens"]
    c["machine_open_share"] = rate(c["machine_only_opens"], opened_any)
    clicked_any = c["human_clicks"] + c["machine_only_clicks"]
    c["machine_click_share"] = rate(c["machine_only_clicks"], clicked_any)
    c["machine_open_percent"] = round(100 * c["machine_open_share"]) if c["machine_open_share"] is not None else None
    c["machine_click_percent"] = round(100 * c["machine_click_share"]) if c["machine_click_share"] is not None else None
    c["complaint_warning"] = bool(c["complaint_rate"] and c["complaint_rate"] > COMPLAINT_LIMIT)
    return c


def links(messages: QuerySet[Message]) -> list[dict]:
    """Clicks per link: people (distinct recipients) and machine hits."""
    rows = (Activity.objects.filter(message__in=messages, kind=Activity.Kind.CLICK).values("url")
            .annotate(human=Count("message", filter=Q(machine=False), distinct=True),
                      human_clicks=Count("id", filter=Q(machine=False)),
                      machine=Count("id", filter=Q(machine=True)))
            .order_by("-human", "url"))
    return list(rows)
