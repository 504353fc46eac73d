"""Default settings every installation starts with (idempotent)."""

from .models import SubscriptionTopic

DEFAULT_TOPICS = [
    ("newsletter", "メールマガジン / Newsletter", "Monthly news, case studies and trends."),
    ("seminars", "セミナー・イベント案内 / Seminars and events", "Invitations to seminars, webinars and trade shows."),
    ("product", "製品情報 / Product news", "New features, releases and offers."),
]


def ensure_defaults() -> int:
    created = 0
    for key, name, description in DEFAULT_TOPICS:
        _, was_created = SubscriptionTopic.objects.get_or_create(
            key=key, defaults={"name": name, "description": description}
        )
        created += was_created
    return created
