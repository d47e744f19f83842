"""Open311 GeoReport v2 (JSON) over the incidents, so existing Open311 clients work.

- ``GET /open311/v2/services.json``: services = incident categories (minor
  classes), grouped by major class.
- ``GET /open311/v2/services/{service_code}.json``: a service definition (no
  extra attributes).
- ``POST /open311/v2/requests.json``: form-encoded (as the spec says) or JSON:
  ``service_code``, ``lat``/``long`` (WGS-84, as in the spec; converted to
  CGCS2000 for storage) or ``address_string`` (geocoded against the stored door
  plates), ``description``, optional ``first_name``/``last_name``/``phone`` (kept
  only when given, operator-only, like every reporter). Answers
  ``[{service_request_id, service_notice, account_id}]``.
- ``GET /open311/v2/requests.json`` (``service_request_id``, ``service_code``,
  ``start_date``, ``end_date``, ``status``; default the last 90 days, at most
  1000) and ``GET /open311/v2/requests/{id}.json``: ``status`` open/closed,
  ``status_notes`` (the stage), ``expected_datetime`` (from the time limits),
  WGS-84 ``lat``/``long``. No personal data, ever.

The key travels as the spec's ``api_key`` parameter, or as ``X-API-Key`` /
``Authorization: Bearer``. Reporting needs :attr:`Permission.REPORT_INCIDENTS`
(worker, consumer, operator), reading :attr:`Permission.READ_REQUESTS`.
Errors are Open311 errors: ``[{"code": <status>, "description": "..."}]`` with
that HTTP status.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import Permission, SessionDep, get_api_key, has_permission
from api.errors import status_for
from api.routes.incidents import (
    LocationIn,
    categories_of,
    settings_of,
    submit_incident,
    summarize_ids,
)
from spatialgrid.coords import from_storage
from spatialgrid.db import incidents as inc_repo
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.errors import AuthError, NotFoundError, SpatialgridError
from spatialgrid.incidents import STATES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

router = APIRouter(prefix="/open311/v2", tags=["open311"])

#: Most requests one GET returns, and the default window (GeoReport v2).
MAX_REQUESTS = 1000
DEFAULT_WINDOW = timedelta(days=90)


class Open311Error(Exception):
    """An error answered in Open311 form (internal to this module)."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _error(status: int, description: str) -> JSONResponse:
    return JSONResponse(
        [{"code": status, "description": description}], status_code=status
    )


def _guard(session: Session, call: Any) -> Any:
    """Run ``call()`` in a savepoint; turn failures into Open311 error responses.

    The error response is a normal return (the request's transaction commits),
    so the savepoint undoes whatever the failed call had written.
    """
    try:
        with session.begin_nested():
            return call()
    except Open311Error as err:
        return _error(err.status, err.description)
    except SpatialgridError as err:
        status = status_for(err) or 500
        if status >= 500:
            log.error("open311 failed: %s", err, exc_info=err)
            return _error(status, "the service failed; try again later")
        return _error(status, str(err))


async def _params(request: Request) -> dict[str, str]:
    """Query, form or JSON parameters as one flat dict of strings."""
    params = dict(request.query_params.items())
    if request.method != "POST":
        return params
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise Open311Error(400, f"the JSON body is malformed: {err}") from err
        if not isinstance(body, dict):
            raise Open311Error(400, "the JSON body must be an object of parameters")
        params.update({str(k): "" if v is None else str(v) for k, v in body.items()})
    elif kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    elif kind:
        raise Open311Error(
            415,
            f"content type {kind!r} is not supported; post "
            "application/x-www-form-urlencoded (as GeoReport v2 says) or JSON",
        )
    return params


def _key(
    request: Request, session: Session, params: dict[str, str], permission: Permission
) -> ApiKeyInfo:
    header = request.headers.get("x-api-key") or params.get("api_key")
    bearer = request.headers.get("authorization", "")
    if not header and bearer.lower().startswith("bearer "):
        header = bearer[7:]
    try:
        key = get_api_key(request, session, header, None)
    except AuthError as err:
        raise Open311Error(401, f"{err} (or pass the api_key parameter)") from err
    if not has_permission(key.role, permission) and key.role != "planner":
        raise Open311Error(
            403, f"API key {key.name!r} has role {key.role!r}, which may not do this"
        )
    return key


def _services(request: Request) -> list[dict[str, Any]]:
    table = categories_of(settings_of(request))
    return [
        {
            "service_code": row["category_code"],
            "service_name": row["minor_name"],
            "description": f"{row.get('kind_name') or row['kind']} · "
            f"{row['major_name']} · {row['minor_name']}",
            "metadata": False,
            "type": "realtime",
            "keywords": ",".join(
                str(v) for v in (row["kind"], row["major_name"], row["minor_name"])
            ),
            "group": row["major_name"],
        }
        for row in table.to_dict("records")
    ]


def _iso(value: Any) -> str | None:
    if (
        value is None
        or value is pd.NaT
        or (isinstance(value, float) and value != value)
    ):
        return None
    ts = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    return ts.isoformat(timespec="seconds")


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        ts = pd.Timestamp(value.strip())
    except ValueError as err:
        raise Open311Error(
            400,
            f"{name}={value!r} is not a W3C date-time (e.g. 2026-10-01T00:00:00+08:00)",
        ) from err
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.to_pydatetime()


def _requests_json(
    frame: pd.DataFrame, *, session: Session, request: Request
) -> list[dict[str, Any]]:
    """GeoReport v2 request records of incidents (never reporter details)."""
    if len(frame) == 0:
        return []
    settings = settings_of(request)
    names = categories_of(settings).set_index("category_code")["minor_name"]
    derived = summarize_ids(
        frame["incident_id"].tolist(), session=session, settings=settings
    )
    lon, lat = from_storage(
        frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy(), "wgs84"
    )
    out = []
    for k, row in enumerate(frame.itertuples(index=False)):
        d = derived.loc[row.incident_id]
        notes = f"{d['status_notes']}（{row.stage}）"
        if d["overdue"]:
            notes += "，已超时"
        if row.duplicate_of is not None and not pd.isna(row.duplicate_of):
            notes += f"，与 {int(row.duplicate_of)} 号重复"
        out.append(
            {
                "service_request_id": str(row.incident_id),
                "status": d["open311_status"],
                "status_notes": notes,
                "service_name": names.get(row.category_code),
                "service_code": row.category_code,
                "description": row.description,
                "agency_responsible": (
                    f"网格 {row.grid_code}" if row.grid_code else "指挥中心"
                ),
                "service_notice": None,
                "requested_datetime": _iso(row.reported_at),
                "updated_datetime": _iso(row.stage_entered_at),
                "expected_datetime": _iso(d["expected_datetime"]),
                "address": row.address,
                "address_id": None,
                "zipcode": None,
                "lat": round(float(lat[k]), 7),
                "long": round(float(lon[k]), 7),
                "media_url": None,
            }
        )
    return out


# --------------------------------------------------------------------- routes


@router.get("/services.json", summary="Open311: list services (incident categories)")
def list_services(request: Request, session: SessionDep) -> Any:
    """Every incident category as an Open311 service."""

    def run() -> Any:
        _key(request, session, dict(request.query_params), Permission.READ_REQUESTS)
        return _services(request)

    return _guard(session, run)


@router.get("/services/{service_code}.json", summary="Open311: a service definition")
def service_definition(request: Request, session: SessionDep, service_code: str) -> Any:
    """The service definition: no extra attributes are asked for."""

    def run() -> Any:
        _key(request, session, dict(request.query_params), Permission.READ_REQUESTS)
        known = {s["service_code"] for s in _services(request)}
        if service_code not in known:
            raise Open311Error(404, f"service_code {service_code!r} does not exist")
        return {"service_code": service_code, "attributes": []}

    return _guard(session, run)


@router.post("/requests.json", summary="Open311: submit a service request")
async def post_request(request: Request, session: SessionDep) -> Any:
    """Create a service request (form-encoded or JSON)."""
    try:
        params = await _params(request)
    except Open311Error as err:
        return _error(err.status, err.description)

    def run() -> Any:
        key = _key(request, session, params, Permission.REPORT_INCIDENTS)
        code = params.get("service_code", "").strip()
        if not code:
            raise Open311Error(400, "service_code is required (GET services.json)")
        lat, lon = params.get("lat", "").strip(), params.get("long", "").strip()
        address = params.get("address_string", "").strip() or None
        if (lat or lon) and not (lat and lon):
            raise Open311Error(400, "give both lat and long (WGS-84)")
        if not (lat and lon) and not address:
            raise Open311Error(
                400, "a location is required: lat and long, or address_string"
            )
        try:
            location = LocationIn(
                lon=float(lon) if lon else None,
                lat=float(lat) if lat else None,
                crs="wgs84" if lat else None,
                address=address,
            )
        except (ValueError, ValidationError) as err:
            detail = (
                err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            )
            raise Open311Error(400, f"invalid location: {detail}") from err
        known = {s["service_code"] for s in _services(request)}
        if code not in known:
            raise Open311Error(404, f"service_code {code!r} does not exist")
        name = (
            " ".join(
                p
                for p in (
                    params.get("last_name", "").strip(),
                    params.get("first_name", "").strip(),
                )
                if p
            )
            or None
        )
        created, _ = submit_incident(
            session=session,
            settings=settings_of(request),
            key=key,
            category_code=code,
            location=location,
            description=params.get("description"),
            reporter_name=name,
            reporter_phone=params.get("phone", "").strip() or None,
            reported_at=None,
            source="open311",
        )
        place = created.placement
        notice = (
            f"已受理，编号 {created.incident_id}"
            + (
                f"，由网格 {place.grid_code} 负责"
                if place.grid_code
                else "，由指挥中心分派"
            )
            + (
                f"；与 {created.duplicate_of} 号事件可能重复"
                if created.duplicate_of
                else ""
            )
        )
        return JSONResponse(
            [
                {
                    "service_request_id": str(created.incident_id),
                    "service_notice": notice,
                    "account_id": None,
                }
            ],
            status_code=201,
        )

    # DB work off the event loop (routes are plain def elsewhere for this reason)
    return await run_in_threadpool(_guard, session, run)


@router.get("/requests.json", summary="Open311: query service requests")
def get_requests(request: Request, session: SessionDep) -> Any:
    """Requests by ids, or by service codes, dates and status (newest first)."""
    params = dict(request.query_params)

    def run() -> Any:
        _key(request, session, params, Permission.READ_REQUESTS)
        ids_text = params.get("service_request_id", "").strip()
        if ids_text:
            try:
                ids = [int(v) for v in ids_text.split(",") if v.strip()]
            except ValueError as err:
                raise Open311Error(
                    400, f"service_request_id={ids_text!r}: ids are whole numbers"
                ) from err
            rows = []
            for i in ids[:MAX_REQUESTS]:
                try:
                    frame, _, _ = inc_repo.get_incident(
                        i,
                        session=session,
                        timezone=settings_of(request).incident_timezone,
                    )
                except NotFoundError:
                    continue
                rows.append(frame)
            frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
            return _requests_json(frame, session=session, request=request)
        start = _parse_time(params.get("start_date"), "start_date")
        end = _parse_time(params.get("end_date"), "end_date")
        if start is None and end is None:
            start = datetime.now(UTC) - DEFAULT_WINDOW
        status = params.get("status", "").strip().lower()
        wanted = {s.strip() for s in status.split(",") if s.strip()}
        if wanted - {"open", "closed"}:
            raise Open311Error(400, f"status={status!r}: use open, closed or both")
        closed = set(inc_repo.CLOSED_STATES)
        stages = None
        if wanted == {"open"}:
            stages = [s for s in STATES if s not in closed]
        elif wanted == {"closed"}:
            stages = sorted(closed)
        codes = [
            c.strip() for c in params.get("service_code", "").split(",") if c.strip()
        ]
        frame, _ = inc_repo.list_incidents(
            session=session,
            stages=stages,
            categories=codes or None,
            start=start,
            end=end,
            limit=MAX_REQUESTS,
            timezone=settings_of(request).incident_timezone,
        )
        return _requests_json(frame, session=session, request=request)

    return _guard(session, run)


@router.get("/requests/{request_id}.json", summary="Open311: one service request")
def get_request(request: Request, session: SessionDep, request_id: str) -> Any:
    """One request, as a one-element list (GeoReport v2)."""
    params = dict(request.query_params)

    def run() -> Any:
        _key(request, session, params, Permission.READ_REQUESTS)
        if not request_id.isdigit() or not 1 <= int(request_id) < 2**63:
            raise Open311Error(404, f"service request {request_id!r} does not exist")
        try:
            frame, _, _ = inc_repo.get_incident(
                int(request_id),
                session=session,
                timezone=settings_of(request).incident_timezone,
            )
        except NotFoundError as err:
            raise Open311Error(
                404, f"service request {request_id} does not exist"
            ) from err
        return _requests_json(frame, session=session, request=request)

    return _guard(session, run)
