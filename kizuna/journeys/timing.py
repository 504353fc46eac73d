"""When a wait ends: durations, fixed moments, a time of day in the contact's time zone, and
business days that skip weekends and Japan's public holidays (jpholiday)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import jpholiday

DEFAULT_TIME_ZONE = "Asia/Tokyo"


def zone(name: str | None, fallback: str = DEFAULT_TIME_ZONE) -> zoneinfo.ZoneInfo:
    for candidate in (name, fallback, DEFAULT_TIME_ZONE):
        if candidate:
            try:
                return zoneinfo.ZoneInfo(candidate)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    return zoneinfo.ZoneInfo(DEFAULT_TIME_ZONE)


def duration(spec: dict) -> dt.timedelta:
    return dt.timedelta(days=spec.get("days", 0), hours=spec.get("hours", 0), minutes=spec.get("minutes", 0))


def _at(day: dt.date, hhmm: str, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    hour, minute = (int(p) for p in hhmm.split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)


def is_business_day(day: dt.date) -> bool:
    """Monday to Friday and not a Japanese public holiday (振替休日 and 国民の休日 included)."""
    return day.weekday() < 5 and not jpholiday.is_holiday(day)


def next_time_of_day(now: dt.datetime, hhmm: str, tz: zoneinfo.ZoneInfo, days: int = 0) -> dt.datetime:
    """hh:mm local time `days` days after today; with days=0 the next such moment after now."""
    local = now.astimezone(tz)
    moment = _at(local.date() + dt.timedelta(days=days), hhmm, tz)
    if moment <= now:
        moment = _at(local.date() + dt.timedelta(days=days + 1), hhmm, tz)
    return moment


def add_business_days(now: dt.datetime, count: int, tz: zoneinfo.ZoneInfo, hhmm: str | None = None) -> dt.datetime:
    """`count` business days later, at the same local time (or at hh:mm)."""
    local = now.astimezone(tz)
    day = local.date()
    left = count
    while left > 0:
        day += dt.timedelta(days=1)
        if is_business_day(day):
            left -= 1
    if hhmm:
        return _at(day, hhmm, tz)
    return dt.datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=tz)


def wait_until(node: dict, now: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The end of a wait node's wait, starting now."""
    if node.get("duration"):
        return now + duration(node["duration"])
    if node.get("until"):
        return dt.datetime.fromisoformat(node["until"])
    if node.get("business_days"):
        return add_business_days(now, node["business_days"], tz, node.get("time_of_day"))
    return next_time_of_day(now, node["time_of_day"], tz, node.get("days", 0))
