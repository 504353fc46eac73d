"""REST API for segments.

    GET    /segments                              every segment
    POST   /segments                              → 201; a name in use is 409, a bad filter 422
    GET    /segments/{id}    PATCH    DELETE      DELETE is 409 while a segment or bulk send uses it
    GET    /segments/{id}/members                 cursor pages of the members (contacts)
    GET    /segments/{id}/members/{contact_id}    is this contact a member, and since when
    POST   /segments/{id}/recompute               → 202; the worker recomputes the members
    POST   /segments/count                        how many contacts a filter matches now (the live count)

A filter that is not valid is a 422 whose detail names the path at fault, prefixed with
`filter` (`filter.all[1].where[0].op`). Same auth and error shape as the rest of the API.
"""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Subquery
from ninja import Query, Router, Schema, Status
from pydantic import Field

from kizuna.api import ApiError, ErrorOut, requires
from kizuna.contacts import queries
from kizuna.contacts.api import _contact_out, _contacts
from kizuna.contacts.models import Contact

from . import services
from .filters import FilterError
from .models import Membership, Segment
from .schemas import (
    CountIn,
    CountOut,
    MemberPage,
    MembershipOut,
    SegmentIn,
    SegmentList,
    SegmentOut,
    SegmentPatch,
)

router = Router(tags=["segments"])

READ_ERRORS = {frozenset({401, 403, 404}): ErrorOut}
WRITE_ERRORS = {frozenset({400, 401, 403, 404, 409, 415, 422}): ErrorOut}


class MemberParams(Schema):
    sort: str = Field(queries.DEFAULT_SORT, description=f"one of: {', '.join(queries.SORTS)}")
    cursor: str = ""
    limit: int = Field(50, ge=1, le=200)


def _out(segment: Segment) -> dict[str, Any]:
    return {**{f: getattr(segment, f) for f in ("id", "name", "description", "filter", "member_count",
                                                "computed_at", "compute_ms", "created_at", "updated_at")},
            "computing": segment.needs_full}


def _get(segment_id: int) -> Segment:
    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is None:
        raise ApiError(404, "not_found", f"there is no segment with id {segment_id}")
    return segment


def _filter_error(exc: FilterError) -> ApiError:
    path = "filter" if exc.path == "filter" else f"filter.{exc.path}"
    return ApiError(422, "invalid", "the filter is not valid", {path: exc.message})


def _save(request, segment: Segment | None, data: dict[str, Any]) -> Segment:
    if "filter" in data and data["filter"] is None:
        raise ApiError(422, "invalid", "the filter is not valid", {"filter": "must be an object"})
    try:
        return services.save(request.auth, segment, name=data.get("name"), description=data.get("description"),
                             tree=data.get("filter"))
    except FilterError as exc:
        raise _filter_error(exc) from exc
    except services.SegmentError as exc:
        if exc.conflict:
            raise ApiError(409, "conflict", "the segment clashes with an existing one", exc.errors) from exc
        raise ApiError(422, "invalid", "the segment is not valid", exc.errors) from exc


@router.get("/segments", auth=requires("segments.view"), response={200: SegmentList, **READ_ERRORS},
            summary="List segments")
def list_segments(request):
    return {"items": [_out(s) for s in Segment.objects.order_by("name")]}


@router.post("/segments", auth=requires("segments.manage"), response={201: SegmentOut, **WRITE_ERRORS},
             summary="Create a segment")
def create_segment(request, payload: SegmentIn):
    return Status(201, _out(_save(request, None, payload.model_dump())))


@router.post("/segments/count", auth=requires("segments.view"), response={200: CountOut, **WRITE_ERRORS},
             summary="Count the contacts a filter matches now", url_name="segment_count")
def count_filter(request, payload: CountIn):
    """What the segment builder shows while you edit: nothing is saved."""
    if payload.segment is not None:
        _get(payload.segment)
    try:
        result = services.count(payload.filter, segment_id=payload.segment)
    except FilterError as exc:
        raise _filter_error(exc) from exc
    return {"count": result["count"], "ms": result["ms"]}


@router.get("/segments/{segment_id}", auth=requires("segments.view"), response={200: SegmentOut, **READ_ERRORS},
            summary="A segment")
def get_segment(request, segment_id: int):
    return _out(_get(segment_id))


@router.patch("/segments/{segment_id}", auth=requires("segments.manage"),
              response={200: SegmentOut, **WRITE_ERRORS}, summary="Change a segment")
def update_segment(request, segment_id: int, payload: SegmentPatch):
    segment = _get(segment_id)
    return _out(_save(request, segment, payload.model_dump(exclude_unset=True)))


@router.delete("/segments/{segment_id}", auth=requires("segments.manage"),
               response={204: None, **READ_ERRORS, 409: ErrorOut}, summary="Delete a segment")
def delete_segment(request, segment_id: int):
    segment = _get(segment_id)
    try:
        services.delete(request.auth, segment)
    except services.SegmentInUse as exc:
        raise ApiError(409, "conflict", "the segment is in use and cannot be deleted", {"id": exc.errors["segment"]}
                       ) from exc
    return Status(204, None)


@router.post("/segments/{segment_id}/recompute", auth=requires("segments.manage"),
             response={202: SegmentOut, **READ_ERRORS}, summary="Recompute the members")
def recompute_segment(request, segment_id: int):
    """Accepted: the worker recomputes the members; `computing` turns false when it is done."""
    segment = _get(segment_id)
    services.request_recompute(request.auth, segment)
    return Status(202, _out(segment))


@router.get("/segments/{segment_id}/members", auth=requires("segments.view"),
            response={200: MemberPage, **READ_ERRORS, 400: ErrorOut, 422: ErrorOut},
            summary="The members of a segment")
def list_members(request, segment_id: int, params: Query[MemberParams]):
    unknown = {key: "is not a known parameter" for key in request.GET if key not in MemberParams.model_fields}
    if unknown:
        raise ApiError(400, "bad_request", "the query has unknown parameters", unknown)
    segment = _get(segment_id)
    since = Membership.objects.filter(segment=segment, contact=OuterRef("pk")).values("since")[:1]
    qs = services.members(segment)
    try:
        page = queries.paginate(_contacts(qs.annotate(since=Subquery(since))), sort=params.sort,
                                cursor=params.cursor, limit=params.limit)
    except queries.QueryError as exc:
        raise ApiError(400, "bad_request", "the query is not valid", exc.errors) from exc
    return {"items": [{**_contact_out(c), "since": c.since} for c in page.items],
            "next_cursor": page.next_cursor, "prev_cursor": page.prev_cursor,
            "count": Membership.objects.filter(segment=segment).count()}


@router.get("/segments/{segment_id}/members/{contact_id}", auth=requires("segments.view"),
            response={200: MembershipOut, **READ_ERRORS}, summary="Is a contact a member of a segment")
def check_member(request, segment_id: int, contact_id: int):
    segment = _get(segment_id)
    if not Contact.objects.filter(pk=contact_id).exists():
        raise ApiError(404, "not_found", f"there is no contact with id {contact_id}")
    row = Membership.objects.filter(segment=segment, contact_id=contact_id).first()
    return {"segment_id": segment.pk, "contact_id": contact_id, "member": row is not None,
            "since": row.since if row else None}
