"""The date range every report takes from the query string, and the period before it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.utils import timezone
from django.utils.translation import gettext as _

MAX_DAYS = 3 * 366


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Period:
        return Period(self.start - timedelta(days=self.days), self.start - timedelta(days=1))

    def each_day(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def query(self) -> str:
        return f"start={self.start.isoformat()}&end={self.end.isoformat()}"


def _date(text: str, label: str, errors: list[str]) -> date | None:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()  # noqa: DTZ007 - a calendar date, no time
    except ValueError:
        errors.append(_("%(field)s must be a date written as YYYY-MM-DD, not “%(value)s”.")
                      % {"field": label, "value": text[:40]})
        return None


def parse(params, default_days: int = 30) -> tuple[Period, bool, list[str]]:
    """(period, compare with the previous period?, errors). On an error the default period is used."""
    today = timezone.localdate()
    default = Period(today - timedelta(days=default_days - 1), today)
    errors: list[str] = []
    start_text, end_text = params.get("start", "").strip(), params.get("end", "").strip()
    start = _date(start_text, _("Start"), errors) if start_text else default.start
    end = _date(end_text, _("End"), errors) if end_text else today
    compare = params.get("compare", "") in ("1", "on", "true")
    if errors or start is None or end is None:
        return default, compare, errors
    if start > end:
        return default, compare, [_("The start date is after the end date.")]
    if (end - start).days + 1 > MAX_DAYS:
        return default, compare, [_("Choose at most %(days)d days.") % {"days": MAX_DAYS}]
    return Period(start, end), compare, []


def change(now: float | None, before: float | None) -> float | None:
    """Percent change from the previous period, None when there is nothing to compare with."""
    if now is None or not before:
        return None
    return round(100 * (now - before) / before, 1)
