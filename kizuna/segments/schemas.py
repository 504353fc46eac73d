"""Request and response shapes of the segments API. The filter is taken as any JSON value and
checked by filters.check, whose error names the path at fault (`filter.all[1].where[0].op`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Schema
from pydantic import Field

from kizuna.contacts.schemas import ContactOut, StrictIn

FILTER_HELP = ("the filter tree: {\"all\": [...]}, {\"any\": [...]}, {\"not\": node}, field, event, email and "
               "segment conditions (see the segment builder, or kizuna/segments/filters.py)")


class SegmentIn(StrictIn):
    name: str = Field(description="unique")
    description: str = ""
    filter: Any = Field(description=FILTER_HELP)


class SegmentPatch(StrictIn):
    """Only the fields sent change; a new filter makes the worker recompute the members."""

    name: str | None = None
    description: str | None = None
    filter: Any = Field(None, description=FILTER_HELP)


class SegmentOut(Schema):
    id: int
    name: str
    description: str
    filter: dict[str, Any]
    member_count: int = Field(description="members at the last computation or incremental update")
    computed_at: datetime | None = Field(description="when the members were last computed in full")
    compute_ms: int | None = Field(description="how long that computation took")
    computing: bool = Field(description="true until the worker has computed the members of the current filter")
    created_at: datetime
    updated_at: datetime


class SegmentList(Schema):
    items: list[SegmentOut]


class MemberOut(ContactOut):
    since: datetime = Field(description="when the contact entered the segment")


class MemberPage(Schema):
    items: list[MemberOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")
    prev_cursor: str | None = Field(description="pass as `cursor` for the previous page; null on the first")
    count: int = Field(description="members now")


class MembershipOut(Schema):
    segment_id: int
    contact_id: int
    member: bool
    since: datetime | None = Field(description="when the contact entered the segment; null when not a member")


class CountIn(StrictIn):
    filter: Any = Field(description=FILTER_HELP)
    segment: int | None = Field(None, description="the segment being edited, so a filter that refers back to "
                                                  "it is reported")


class CountOut(Schema):
    count: int = Field(description="contacts the filter matches now")
    ms: int = Field(description="milliseconds the count took")
