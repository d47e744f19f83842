"""Incidents: intake, reading, lifecycle transitions, duplicates, reporters, categories.

- ``GET /v1/categories``: the incident categories (components 部件 and events 事件,
  major and minor classes) and their time limits per stage, from the configured
  table (``SPATIALGRID_CATEGORIES_PATH``, default ``data/categories.csv``).
- ``POST /v1/incidents`` (worker, consumer, operator): a category, a description
  and a location — coordinates with their coordinate system (``wgs84``,
  ``gcj02``, ``bd09``, ``cgcs2000`` or ``EPSG:n``; required, never guessed) or a
  Chinese address geocoded against the stored door plates. The grid, community,
  subdistrict and worker are taken from the plan in force and kept. A reporter's
  name and phone are stored only when given, apart from the incident.
- ``GET /v1/incidents`` (GeoJSON, filters and paging), ``GET /v1/incidents/{id}``
  (with the transition history, overdue and expected close).
- ``POST /v1/incidents/{id}/transitions``: the operator makes any allowed step;
  a grid worker the field steps (accept a dispatched case, report back). An
  illegal step is a 409 that lists the allowed ones.
- ``POST /v1/incidents/{id}/merge-into/{other}`` (operator): end a duplicate.
- ``POST /v1/incidents/recompute-grids`` (planner, operator): re-place incidents
  after boundaries change.
- ``GET /v1/incidents/{id}/reporter`` (operator only): the reporter's name and
  phone; every read is logged, ``GET /v1/reporter-access-log`` shows the log.

Who may do what is decided by :data:`api.deps.ROLE_PERMISSIONS`.
"""

from __future__ import annotations

import functools
import math
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, select

from api.config import Settings
from api.deps import (
    AnyKey,
    Permission,
    SessionDep,
    has_permission,
    require_permission,
)
from api.errors import error_body
from api.geojson import GEOJSON_MEDIA_TYPE, GeoJSONResponse, feature_collection
from api.routes.layers import LimitQuery, OffsetQuery, page_links
from api.schemas import ErrorPublic, ValidationErrorPublic
from spatialgrid.coords import to_storage
from spatialgrid.db import incidents as inc_repo
from spatialgrid.db.models import Address, CityInfo
from spatialgrid.db.repository import ApiKeyInfo, load_layer
from spatialgrid.errors import InputError, NotFoundError, TransitionError
from spatialgrid.incidents import (
    STAGE_LABELS_ZH,
    STATES,
    TIMED_STAGES,
    WorkingCalendar,
    allowed_transitions,
    load_categories,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from spatialgrid.geocode import Gazetteer

router = APIRouter(prefix="/v1", tags=["incidents"])

Reporter = Annotated[
    ApiKeyInfo, Depends(require_permission(Permission.REPORT_INCIDENTS))
]
IncidentReader = Annotated[
    ApiKeyInfo, Depends(require_permission(Permission.READ_INCIDENTS))
]
Manager = Annotated[
    ApiKeyInfo, Depends(require_permission(Permission.MANAGE_INCIDENTS))
]
Stepper = Annotated[
    ApiKeyInfo,
    Depends(
        # operators (manage) and grid workers (handle): checked per step below
        require_permission(Permission.HANDLE_INCIDENTS)
    ),
]
ReporterReader = Annotated[
    ApiKeyInfo, Depends(require_permission(Permission.READ_REPORTERS))
]

#: Steps a grid worker may make in the field (accept the dispatched case,
#: report back); everything else is the command centre's (operator).
FIELD_STEPS: frozenset[tuple[str, str]] = frozenset(
    {("dispatch", "handle"), ("handle", "report_back")}
)
#: Geocoding levels precise enough to place an incident (a road or a whole
#: community is a reference, not a location).
PLACEABLE_LEVELS = ("door", "building", "compound")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing, unknown or revoked API key."},
    403: {"model": ErrorPublic, "description": "The key's role may not do this."},
    422: {"model": ValidationErrorPublic, "description": "Invalid request."},
    503: {"model": ErrorPublic, "description": "The database is unreachable."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No incident has that id."}
}
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Incident id.")]


# ---------------------------------------------------------------- configuration


@functools.lru_cache(maxsize=8)
def _categories_at(path: str | None) -> pd.DataFrame:
    return load_categories(path)


def categories_of(settings: Settings) -> pd.DataFrame:
    """The category table configured for this service (read once per path)."""
    return _categories_at(settings.categories_path)


def calendar_of(settings: Settings) -> WorkingCalendar | None:
    """Working calendar for time limits (None = calendar minutes)."""
    if not settings.incident_working_hours:
        return None
    return WorkingCalendar(timezone=settings.incident_timezone)


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


# --------------------------------------------------------------------- geocoding

_GAZETTEER_LOCK = threading.Lock()
_GAZETTEER: dict[str, Any] = {}


def _gazetteer(session: Session) -> Gazetteer:
    """The door-plate gazetteer of the stored city (rebuilt when the city changes)."""
    from spatialgrid.geocode import Gazetteer

    info = session.get(CityInfo, 1)
    if info is None:
        msg = "no city is stored; an address cannot be geocoded (send coordinates)"
        raise NotFoundError(msg)
    count = session.execute(
        select(func.count()).select_from(Address).where(Address.geom.is_not(None))
    ).scalar_one()
    stamp = f"{info.saved_at.isoformat()}|{count}"
    with _GAZETTEER_LOCK:
        if _GAZETTEER.get("stamp") == stamp:
            return _GAZETTEER["gazetteer"]  # type: ignore[no-any-return]
    addresses = load_layer("addresses", session=session)
    addresses = addresses[addresses.geometry.notna() & ~addresses.geometry.is_empty]
    if len(addresses) == 0:
        msg = "the stored city has no located door plates; send coordinates instead"
        raise InputError(msg)
    communities = load_layer("communities", session=session)
    gazetteer = Gazetteer(addresses, communities=communities)
    with _GAZETTEER_LOCK:
        _GAZETTEER.update(stamp=stamp, gazetteer=gazetteer)
    return gazetteer


def geocode_one(address: str, *, session: Session) -> dict[str, Any]:
    """Geocode ``address`` to a placeable point or raise InputError saying why."""
    found = _gazetteer(session).geocode(address)
    status, level = found["status"], found["level"]
    if status == "ambiguous":
        names = [c.get("address") for c in found["candidates"]][:5]
        msg = (
            f"address {address!r} is ambiguous: it fits {names}; add the road and "
            "door number, or send coordinates"
        )
        raise InputError(msg)
    if status not in ("matched", "partial") or level not in PLACEABLE_LEVELS:
        where = found.get("matched_address")
        msg = (
            f"address {address!r} could not be placed ({status}"
            + (f", only the {level} {where!r}" if level else "")
            + "); give a road and door number of the city, or send coordinates"
        )
        raise InputError(msg)
    return found


# ------------------------------------------------------------------------- models


class LocationIn(BaseModel):
    """Where: coordinates with their system, or an address (one of the two)."""

    model_config = ConfigDict(extra="forbid")

    lon: float | None = Field(
        None, description="Longitude (or easting in metres for a projected EPSG)."
    )
    lat: float | None = Field(
        None, description="Latitude (or northing in metres for a projected EPSG)."
    )
    crs: str | None = Field(
        None,
        max_length=40,
        description=(
            "Coordinate system of lon/lat, required with them: wgs84 (GPS), gcj02 "
            "(Amap/Tencent), bd09 (Baidu), cgcs2000 or EPSG:n."
        ),
        examples=["wgs84"],
    )
    address: str | None = Field(
        None,
        min_length=2,
        max_length=500,
        description="A Chinese address with road and door number, geocoded instead.",
        examples=["中山路3号"],
    )

    @model_validator(mode="after")
    def _one_way(self) -> LocationIn:
        has_xy = self.lon is not None or self.lat is not None
        if has_xy:
            if self.lon is None or self.lat is None:
                msg = "give both lon and lat"
                raise ValueError(msg)
            if not (math.isfinite(self.lon) and math.isfinite(self.lat)):
                msg = "lon and lat must be finite numbers"
                raise ValueError(msg)
            if not self.crs:
                msg = (
                    "crs is required with coordinates (wgs84, gcj02, bd09, cgcs2000 "
                    "or EPSG:n): phone apps differ by hundreds of metres"
                )
                raise ValueError(msg)
        elif not self.address:
            msg = "give lon, lat and crs, or an address"
            raise ValueError(msg)
        return self


class ReporterIn(BaseModel):
    """The reporter's contact, only if they want a call back (stored apart)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=100)
    phone: str | None = Field(None, max_length=30, pattern=r"^[0-9+\- ()]*$")


class IncidentCreate(BaseModel):
    """A new incident report."""

    model_config = ConfigDict(extra="forbid")

    category_code: str = Field(
        min_length=1, max_length=40, description="See GET /v1/categories."
    )
    description: str | None = Field(None, max_length=4000)
    location: LocationIn
    reporter: ReporterIn | None = None
    reported_at: datetime | None = Field(
        None,
        description=(
            "When it was observed, for reports synchronised later (default now; "
            "naive times are UTC; not in the future)."
        ),
    )


class TransitionPublic(BaseModel):
    """One step of the lifecycle."""

    from_stage: str
    to_stage: str
    at: datetime
    actor: str
    note: str


class IncidentPublic(BaseModel):
    """An incident with its placement and lifecycle state (no reporter details)."""

    id: int
    category_code: str
    category_name: str | None
    description: str | None
    address: str | None
    reported_at: datetime
    source: str
    stage: str
    stage_label: str
    stage_entered_at: datetime
    allowed_next: list[str]
    plan_id: int | None
    grid_code: str | None
    community_code: str | None
    subdistrict_code: str | None
    worker_id: int | None
    location_status: str
    boundary_distance_m: float | None
    duplicate_of: int | None
    lon: float = Field(description="CGCS2000 longitude (EPSG:4490).")
    lat: float = Field(description="CGCS2000 latitude (EPSG:4490).")
    open311_status: Literal["open", "closed"]
    overdue: bool
    stage_limit_min: float | None
    stage_elapsed_min: float | None
    due_at: datetime | None
    expected_datetime: datetime | None
    has_reporter: bool | None = Field(
        None, description="A reporter left contact details (operators only)."
    )
    history: list[TransitionPublic] | None = None
    geocoded: dict[str, Any] | None = Field(
        None, description="How the address was matched (address intake only)."
    )


class TransitionCreate(BaseModel):
    """A lifecycle step."""

    model_config = ConfigDict(extra="forbid")

    to_stage: str = Field(description=f"One of {', '.join(STATES)}.")
    note: str = Field("", max_length=4000)
    at: datetime | None = Field(
        None,
        description=(
            "When it happened, for steps recorded offline (default now; not before "
            "the previous step, not in the future)."
        ),
    )


class MergeCreate(BaseModel):
    """Why the incidents are the same."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=4000)


class CategoryPublic(BaseModel):
    """An incident category (minor class) and its time limits."""

    model_config = ConfigDict(extra="allow")

    category_code: str
    kind: str
    major_code: str
    major_name: str
    minor_code: str
    minor_name: str
    limits_min: dict[str, float | None]


class RecomputePublic(BaseModel):
    """Incidents re-placed on a plan."""

    plan_id: int
    incidents: int
    changed: int


class ReporterPublic(BaseModel):
    """A reporter's contact (operator only; the read is logged)."""

    incident_id: int
    name: str | None
    phone: str | None


class ReporterAccessPublic(BaseModel):
    """One read of a reporter's details."""

    id: int
    incident_id: int
    accessed_at: datetime
    key_id: int | None
    key_name: str
    role: str
    purpose: str
    found: bool


# ------------------------------------------------------------------------ helpers


def _none(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        # working-time arithmetic leaves sub-microsecond residues
        return value.round("us").to_pydatetime()
    return value


def summarize_ids(
    ids: list[int], *, session: Session, settings: Settings
) -> pd.DataFrame:
    """Lifecycle summary rows of ``ids`` (index = incident id)."""
    if not ids:
        return pd.DataFrame()
    summary = inc_repo.summarize_stored_incidents(
        session=session,
        categories=categories_of(settings),
        calendar=calendar_of(settings),
        timezone=settings.incident_timezone,
        ids=ids,
    )
    return summary.set_index("incident_id")


def incident_public(
    row: pd.Series,
    derived: pd.Series,
    *,
    settings: Settings,
    history: pd.DataFrame | None = None,
    has_reporter: bool | None = None,
    geocoded: dict[str, Any] | None = None,
) -> IncidentPublic:
    """One incident row (from :func:`spatialgrid.db.incidents.list_incidents`)."""
    names = categories_of(settings).set_index("category_code")["minor_name"]
    geom = row["geometry"]
    return IncidentPublic(
        id=int(row["incident_id"]),
        category_code=str(row["category_code"]),
        category_name=_none(names.get(row["category_code"])),
        description=_none(row["description"]),
        address=_none(row["address"]),
        reported_at=_none(row["reported_at"]),
        source=str(row["source"]),
        stage=str(row["stage"]),
        stage_label=STAGE_LABELS_ZH[str(row["stage"])],
        stage_entered_at=_none(row["stage_entered_at"]),
        allowed_next=list(allowed_transitions(str(row["stage"]))),
        plan_id=_none(row["plan_id"]),
        grid_code=_none(row["grid_code"]),
        community_code=_none(row["community_code"]),
        subdistrict_code=_none(row["subdistrict_code"]),
        worker_id=_none(row["worker_id"]),
        location_status=str(row["location_status"]),
        boundary_distance_m=_none(row["boundary_distance_m"]),
        duplicate_of=_none(row["duplicate_of"]),
        lon=round(float(geom.x), 7),
        lat=round(float(geom.y), 7),
        open311_status=str(derived["open311_status"]),  # type: ignore[arg-type]
        overdue=bool(derived["overdue"]),
        stage_limit_min=_none(derived["stage_limit_min"]),
        stage_elapsed_min=_none(
            None
            if pd.isna(derived["stage_elapsed_min"])
            else round(float(derived["stage_elapsed_min"]), 1)
        ),
        due_at=_none(derived["due_at"]),
        expected_datetime=_none(derived["expected_datetime"]),
        has_reporter=has_reporter,
        history=(
            None
            if history is None
            else [
                TransitionPublic(
                    from_stage=h.from_stage,
                    to_stage=h.to_stage,
                    at=_none(h.at),
                    actor=h.actor,
                    note=h.note,
                )
                for h in history.itertuples(index=False)
            ]
        ),
        geocoded=geocoded,
    )


def read_incident(
    incident_id: int,
    *,
    session: Session,
    settings: Settings,
    key: ApiKeyInfo,
    geocoded: dict[str, Any] | None = None,
) -> IncidentPublic:
    """The full public view of one incident (history included)."""
    frame, history, has_reporter = inc_repo.get_incident(
        incident_id, session=session, timezone=settings.incident_timezone
    )
    derived = summarize_ids([incident_id], session=session, settings=settings)
    return incident_public(
        frame.iloc[0],
        derived.loc[incident_id],
        settings=settings,
        history=history,
        has_reporter=has_reporter
        if has_permission(key.role, Permission.READ_REPORTERS)
        else None,
        geocoded=geocoded,
    )


def locate_report(
    location: LocationIn, *, session: Session
) -> tuple[float, float, dict[str, Any] | None]:
    """CGCS2000 lon/lat of a report's location (converting or geocoding)."""
    if location.lon is not None and location.lat is not None and location.crs:
        lon, lat = to_storage([location.lon], [location.lat], location.crs)
        return float(lon[0]), float(lat[0]), None
    assert location.address is not None
    found = geocode_one(location.address, session=session)
    info = {
        k: _none(found[k])
        for k in ("status", "level", "confidence", "address_id", "matched_address")
    }
    return float(found["lon"]), float(found["lat"]), info


def submit_incident(
    *,
    session: Session,
    settings: Settings,
    key: ApiKeyInfo,
    category_code: str,
    location: LocationIn,
    description: str | None,
    reporter_name: str | None,
    reporter_phone: str | None,
    reported_at: datetime | None,
    source: str,
) -> tuple[inc_repo.CreatedIncident, dict[str, Any] | None]:
    """Locate and store a report (native API and Open311 share this)."""
    lon, lat, geocoded = locate_report(location, session=session)
    created = inc_repo.create_incident(
        session=session,
        category_code=category_code,
        lon=lon,
        lat=lat,
        categories=categories_of(settings),
        description=description,
        address=location.address,
        reported_at=reported_at,
        reporter_name=reporter_name,
        reporter_phone=reporter_phone,
        source=source,
        reported_by=key.id,
        duplicate_radius_m=settings.duplicate_radius_m,
        duplicate_window=timedelta(hours=settings.duplicate_window_hours),
    )
    return created, geocoded


def split_list(value: str | None) -> list[str] | None:
    """``a,b`` → ``["a", "b"]``; None/blank → None."""
    if value is None or not value.strip():
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


# ------------------------------------------------------------------------- routes


@router.get(
    "/categories",
    response_model=list[CategoryPublic],
    summary="Incident categories and their time limits",
    operation_id="list_categories",
    responses=_ERRORS,
)
def list_categories(request: Request, key: AnyKey) -> list[CategoryPublic]:
    """Components (部件) and events (事件) with major/minor classes and the time
    limit of each stage in minutes (null = none), from the configured table."""
    table = categories_of(settings_of(request))
    out = []
    for row in table.to_dict("records"):
        limits = {
            s: (None if pd.isna(row[f"{s}_min"]) else float(row[f"{s}_min"]))
            for s in TIMED_STAGES
        }
        extra = {
            k: _none(v)
            for k, v in row.items()
            if k not in CategoryPublic.model_fields and not str(k).endswith("_min")
        }
        out.append(
            CategoryPublic(
                category_code=row["category_code"],
                kind=row["kind"],
                major_code=row["major_code"],
                major_name=row["major_name"],
                minor_code=row["minor_code"],
                minor_name=row["minor_name"],
                limits_min=limits,
                **extra,
            )
        )
    return out


@router.post(
    "/incidents",
    response_model=IncidentPublic,
    status_code=201,
    summary="Report an incident",
    operation_id="create_incident",
    responses=_ERRORS,
)
def create_incident(
    request: Request, session: SessionDep, key: Reporter, body: IncidentCreate
) -> JSONResponse:
    """Report an incident by coordinates (with their system) or by address.

    Answers 201 with the incident: its grid, community and worker from the plan in
    force (kept even if boundaries change later), and `duplicate_of` when an open
    incident of the same category was reported nearby shortly before.
    """
    settings = settings_of(request)
    created, geocoded = submit_incident(
        session=session,
        settings=settings,
        key=key,
        category_code=body.category_code,
        location=body.location,
        description=body.description,
        reporter_name=body.reporter.name if body.reporter else None,
        reporter_phone=body.reporter.phone if body.reporter else None,
        reported_at=body.reported_at,
        source="api",
    )
    out = read_incident(
        created.incident_id,
        session=session,
        settings=settings,
        key=key,
        geocoded=geocoded,
    )
    location = str(request.url_for("get_incident", incident_id=created.incident_id))
    return JSONResponse(
        out.model_dump(mode="json"), status_code=201, headers={"Location": location}
    )


@router.get(
    "/incidents",
    response_class=GeoJSONResponse,
    summary="List incidents (GeoJSON)",
    operation_id="list_incidents",
    responses={200: {"content": {GEOJSON_MEDIA_TYPE: {}}}, **_ERRORS},
)
def list_incidents(
    request: Request,
    session: SessionDep,
    key: IncidentReader,
    stage: Annotated[
        str | None,
        Query(
            max_length=300, description="States, comma-separated (e.g. handle,check)."
        ),
    ] = None,
    category: Annotated[
        str | None,
        Query(max_length=1000, description="Category codes, comma-separated."),
    ] = None,
    grid: Annotated[
        str | None, Query(max_length=2000, description="Grid codes, comma-separated.")
    ] = None,
    community: Annotated[
        str | None,
        Query(max_length=2000, description="Community codes, comma-separated."),
    ] = None,
    start: Annotated[
        datetime | None, Query(description="Reported at or after (ISO 8601).")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="Reported before (ISO 8601).")
    ] = None,
    limit: LimitQuery = 100,
    offset: OffsetQuery = 0,
) -> GeoJSONResponse:
    """Incidents newest first as a GeoJSON FeatureCollection (EPSG:4490), with their
    current stage, overdue flag and Open311 status. No reporter details."""
    settings = settings_of(request)
    frame, matched = inc_repo.list_incidents(
        session=session,
        stages=split_list(stage),
        categories=split_list(category),
        grids=split_list(grid),
        communities=split_list(community),
        start=start,
        end=end,
        limit=limit,
        offset=offset,
        timezone=settings.incident_timezone,
    )
    if len(frame):
        derived = summarize_ids(
            frame["incident_id"].tolist(), session=session, settings=settings
        )
        pick = derived.loc[frame["incident_id"]]
        frame["overdue"] = pick["overdue"].to_numpy(dtype=bool)
        frame["open311_status"] = pick["open311_status"].to_numpy()
        frame["expected_datetime"] = pick["expected_datetime"].to_numpy()
        frame["stage_label"] = frame["stage"].map(STAGE_LABELS_ZH)
    links = page_links(
        request, offset=offset, limit=limit, returned=len(frame), matched=matched
    )
    body = feature_collection(
        frame, id_col="incident_id", number_matched=matched, links=links
    )
    return GeoJSONResponse(body)


@router.post(
    "/incidents/recompute-grids",
    response_model=RecomputePublic,
    summary="Re-place incidents on the plan in force (after boundaries change)",
    operation_id="recompute_incident_grids",
    responses=_ERRORS,
)
def recompute_grids(
    session: SessionDep,
    key: Annotated[
        ApiKeyInfo, Depends(require_permission(Permission.MANAGE_INCIDENTS))
    ],
    only_open: Annotated[
        bool, Query(description="Only incidents not yet closed or ended.")
    ] = False,
) -> RecomputePublic:
    """Recompute grid, community, subdistrict and worker of stored incidents from
    the plan in force now. Incidents keep their report-time placement until this
    is called on purpose."""
    result = inc_repo.recompute_incident_grids(session=session, only_open=only_open)
    return RecomputePublic(**result)


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentPublic,
    summary="One incident with its transition history",
    operation_id="get_incident",
    responses={**_ERRORS, **_NOT_FOUND},
)
def get_incident(
    request: Request, session: SessionDep, key: IncidentReader, incident_id: IncidentId
) -> IncidentPublic:
    """The incident, who moved it when (history), whether it is overdue in its
    current stage and when it is expected to close."""
    return read_incident(
        incident_id, session=session, settings=settings_of(request), key=key
    )


@router.post(
    "/incidents/{incident_id}/transitions",
    response_model=IncidentPublic,
    summary="Move an incident to its next stage",
    operation_id="transition_incident",
    responses={
        **_ERRORS,
        **_NOT_FOUND,
        409: {
            "model": ErrorPublic,
            "description": "Not allowed from the current stage (see `allowed`).",
        },
    },
)
def transition_incident(
    request: Request,
    session: SessionDep,
    key: Stepper,
    incident_id: IncidentId,
    body: TransitionCreate,
) -> Any:
    """Record a step (who = the API key's name). Operators make any allowed step;
    grid workers accept a dispatched case (dispatch → handle) and report back
    (handle → report_back). An illegal step answers 409 with `allowed`."""
    current, allowed = inc_repo.allowed_next(incident_id, session=session)
    if body.to_stage not in STATES:
        msg = f"to_stage={body.to_stage!r} is not a stage; use one of {list(STATES)}"
        raise InputError(msg)
    manager = has_permission(key.role, Permission.MANAGE_INCIDENTS)
    if not manager and (current, body.to_stage) not in FIELD_STEPS:
        steps = ", ".join(f"{a} → {b}" for a, b in sorted(FIELD_STEPS))
        msg = (
            f"a {key.role} key may only make the field steps ({steps}); "
            f"{current} → {body.to_stage} is for the command centre (operator)"
        )
        raise HTTPException(status_code=403, detail=msg)
    try:
        inc_repo.record_transition(
            incident_id,
            body.to_stage,
            session=session,
            actor=key.name,
            actor_key_id=key.id,
            note=body.note,
            at=body.at,
        )
    except TransitionError as err:
        return JSONResponse(
            error_body(
                str(err),
                "TransitionError",
                stage=current,
                allowed=list(allowed),
            ),
            status_code=409,
        )
    return read_incident(
        incident_id, session=session, settings=settings_of(request), key=key
    )


@router.post(
    "/incidents/{incident_id}/merge-into/{other_id}",
    response_model=IncidentPublic,
    summary="Merge a duplicate into the incident it repeats",
    operation_id="merge_incident",
    responses={
        **_ERRORS,
        **_NOT_FOUND,
        409: {"model": ErrorPublic, "description": "Cannot merge these two."},
    },
)
def merge_incident(
    request: Request,
    session: SessionDep,
    key: Manager,
    incident_id: IncidentId,
    other_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: MergeCreate | None = None,
) -> IncidentPublic:
    """End `incident_id` as a duplicate (stage `duplicate`) linked to `other_id`."""
    inc_repo.merge_incident(
        incident_id,
        other_id,
        session=session,
        actor=key.name,
        actor_key_id=key.id,
        note=body.note if body else "",
    )
    return read_incident(
        incident_id, session=session, settings=settings_of(request), key=key
    )


@router.get(
    "/incidents/{incident_id}/reporter",
    response_model=ReporterPublic,
    summary="The reporter's contact (operators; every read is logged)",
    operation_id="get_incident_reporter",
    responses={**_ERRORS, 404: {"model": ErrorPublic, "description": "None stored."}},
)
def get_reporter(
    session: SessionDep,
    key: ReporterReader,
    incident_id: IncidentId,
    purpose: Annotated[
        str, Query(max_length=500, description="Why you need it (kept in the log).")
    ] = "",
) -> Any:
    """Name and phone the reporter left, for a call back. Only the operator role
    may read them, and each read (who, when, which incident) is logged — even when
    nothing is stored."""
    if not has_permission(key.role, Permission.READ_REPORTERS):
        # require_role admits the planner; personal data is the operator's only.
        msg = "reporters' contact details are shown to the operator role only"
        raise HTTPException(status_code=403, detail=msg)
    inc_repo.allowed_next(incident_id, session=session)  # 404 for unknown ids
    found = inc_repo.read_reporter(
        incident_id,
        session=session,
        key_id=key.id,
        key_name=key.name,
        role=key.role,
        purpose=purpose,
    )
    if found is None:
        # The audit row must survive: answer normally (no exception = commit).
        return JSONResponse(
            error_body(
                f"incident {incident_id} has no reporter details (none were given)",
                "NotFoundError",
            ),
            status_code=404,
        )
    return ReporterPublic(incident_id=incident_id, **found)


@router.get(
    "/reporter-access-log",
    response_model=list[ReporterAccessPublic],
    summary="Who read reporters' details, when",
    operation_id="reporter_access_log",
    responses=_ERRORS,
)
def reporter_access(
    session: SessionDep,
    key: ReporterReader,
    incident_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[ReporterAccessPublic]:
    """The audit log of reporter reads, newest first."""
    if not has_permission(key.role, Permission.READ_REPORTERS):
        msg = "the reporter access log is for the operator role"
        raise HTTPException(status_code=403, detail=msg)
    frame = inc_repo.reporter_access_log(
        session=session, incident_id=incident_id, limit=limit
    )
    return [
        ReporterAccessPublic(**{k: _none(v) for k, v in row.items()})
        for row in frame.to_dict("records")
    ]
