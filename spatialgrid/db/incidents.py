"""Incidents in PostGIS: intake, transitions, reporters (audited), frames for KPIs and maps.

Functions take the caller's ``session`` keyword-only and never commit (the API
request, CLI command or script owns the transaction), like
:mod:`spatialgrid.db.repository`.

- :func:`create_incident` places the point on the plan in force at report time
  (grid, community, subdistrict, worker: kept with the incident), flags a
  duplicate of an open incident of the same category nearby, and stores the
  reporter's name and phone only when given, in their own table.
- :func:`record_transition` moves an incident through the lifecycle of
  :mod:`spatialgrid.incidents` (:func:`~spatialgrid.incidents.advance` decides
  what is allowed) and logs who, when and why; :func:`merge_incident` ends a
  duplicate and links it to the case it repeats.
- :func:`read_reporter` is the only way to read a reporter's details and writes
  an audit row (who, when, which incident) on every call, found or not.
- :func:`load_incident_frames` returns the ``(incidents, transitions)`` frames
  that :func:`spatialgrid.incidents.summarize_incidents` and
  :func:`spatialgrid.kpi.compute_kpis` take; :func:`count_incident_cells` and
  :func:`count_incidents_by_grid` aggregate in SQL, so a million incidents never
  travel to Python for a heatmap or a hot-spot map.
- :func:`recompute_incident_grids` re-places stored incidents on a plan with
  :class:`spatialgrid.locate.GridIndex` (after boundaries change);
  :func:`bulk_insert_incidents` stores many incidents and their histories with
  ``COPY`` (demo data, imports, benchmarks).

Times are stored as ``timestamptz``; frames come back in the command centre's
local zone (``timezone``, default Asia/Shanghai), which is how the lifecycle
library reads wall-clock time limits.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    LargeBinary,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)

import geopandas as gpd
import shapely

from spatialgrid.crs import STORAGE_EPSG
from spatialgrid.db.models import (
    Community,
    Grid,
    GridWorker,
    Incident,
    IncidentReporter,
    IncidentTransition,
    ReporterAccess,
)
from spatialgrid.db.repository import active_plan_id, load_plan_grids
from spatialgrid.errors import (
    ConflictError,
    DatabaseError,
    InputError,
    NotFoundError,
)
from spatialgrid.incidents import (
    STATES,
    advance,
    allowed_transitions,
    open311_status,
)
from spatialgrid.incidents import Incident as LifecycleIncident

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from spatialgrid.incidents import WorkingCalendar

log = logging.getLogger(__name__)

_STORAGE_CRS = f"EPSG:{STORAGE_EPSG}"
_MAX_ID = 2**63 - 1
#: States in which an incident no longer counts as open (Open311 "closed").
CLOSED_STATES: tuple[str, ...] = tuple(
    s for s in STATES if open311_status(s) == "closed"
)
#: Columns of :func:`list_incidents` (never reporter details).
INCIDENT_COLUMNS: tuple[str, ...] = (
    "incident_id",
    "category_code",
    "description",
    "address",
    "reported_at",
    "source",
    "stage",
    "stage_entered_at",
    "plan_id",
    "grid_code",
    "community_code",
    "subdistrict_code",
    "worker_id",
    "location_status",
    "boundary_distance_m",
    "duplicate_of",
)
_MAX_TEXT = 4000
_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


# --------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | pd.Timestamp | None, *, default_now: bool = True) -> Any:
    """``moment`` as an aware datetime (naive values are UTC)."""
    if moment is None:
        return _now() if default_now else None
    ts = pd.Timestamp(moment)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.to_pydatetime()


def _check_id(incident_id: int) -> int:
    if not 1 <= int(incident_id) <= _MAX_ID:
        msg = f"incident {incident_id} does not exist; ids are positive whole numbers"
        raise NotFoundError(msg)
    return int(incident_id)


def _get_row(incident_id: int, session: Session, *, lock: bool = False) -> Incident:
    row = session.get(Incident, _check_id(incident_id), with_for_update=lock)
    if row is None:
        msg = (
            f"incident {incident_id} does not exist; list incidents with "
            "GET /v1/incidents"
        )
        raise NotFoundError(msg)
    return row


def _clean_text(value: str | None, name: str, *, limit: int = _MAX_TEXT) -> str | None:
    if value is None:
        return None
    text_ = str(value).strip()
    if not text_:
        return None
    if len(text_) > limit:
        msg = f"{name} has {len(text_)} characters; at most {limit} are kept"
        raise InputError(msg)
    return text_


def _point(lon: float, lat: float) -> Any:
    return func.ST_SetSRID(func.ST_MakePoint(float(lon), float(lat)), STORAGE_EPSG)


def _deg(metres: float, lat: float) -> float:
    """Degrees that surely cover ``metres`` around latitude ``lat`` (bbox filter)."""
    return metres / (111_000.0 * max(math.cos(math.radians(lat)), 0.05)) * 1.2


def _check_lonlat(lon: float, lat: float) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat)):
        msg = f"lon={lon!r}, lat={lat!r} must be finite numbers"
        raise InputError(msg)
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        msg = f"lon={lon!r}, lat={lat!r} are outside longitude/latitude range"
        raise InputError(msg)


# -------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Where a point falls on the plan in force: grid, community, worker."""

    plan_id: int | None
    grid_code: str | None
    community_code: str | None
    subdistrict_code: str | None
    worker_id: int | None
    location_status: str
    boundary_distance_m: float | None


def place_point(
    lon: float,
    lat: float,
    *,
    session: Session,
    at: datetime | None = None,
    tolerance_m: float = 20.0,
    reach_m: float = 50.0,
) -> Placement:
    """Grid, community, subdistrict and worker of a CGCS2000 point at ``at``.

    Parameters
    ----------
    lon, lat
        The point in EPSG:4490 (convert first with :func:`spatialgrid.coords.to_storage`).
    session
        The caller's session.
    at
        Moment whose plan in force is used (default now).
    tolerance_m
        An inside point with another grid this close is ``near_boundary``.
    reach_m
        An outside point gets the nearest grid within this distance (status
        ``nearest``); beyond it, no grid (``outside``).

    Returns
    -------
    Placement
        ``location_status`` ``no_plan`` when no plan was in force.
    """
    _check_lonlat(lon, lat)
    try:
        plan_id = active_plan_id(session=session, at=at)
    except NotFoundError:
        return Placement(None, None, None, None, None, "no_plan", None)
    pt = _point(lon, lat)
    reach = max(float(reach_m), float(tolerance_m))
    gpt = _geog(pt)
    stmt = (
        select(
            Grid.grid_code,
            Grid.community_code,
            Grid.worker_id,
            func.ST_Covers(Grid.geom, pt).label("inside"),
            func.ST_Distance(_geog(Grid.geom), gpt).label("d"),
            func.ST_Distance(_geog(func.ST_Boundary(Grid.geom)), gpt).label("edge"),
        )
        .where(
            Grid.plan_id == plan_id,
            Grid.geom.intersects(func.ST_Expand(pt, _deg(reach, lat))),
        )
        .order_by(text("inside DESC"), text("d"), Grid.grid_code)
        .limit(8)
    )
    rows = session.execute(stmt).all()
    rows = [r for r in rows if r.inside or r.d <= reach]
    if not rows:
        return Placement(int(plan_id), None, None, None, None, "outside", None)
    first = rows[0]
    if first.inside:
        others = [r for r in rows[1:] if r.d <= tolerance_m]
        status = "near_boundary" if others else "inside"
        distance = float(first.edge)
    else:
        status = "nearest"
        distance = float(first.d)
    sub = None
    if first.community_code:
        sub = session.execute(
            select(Community.subdistrict_code).where(
                Community.community_code == first.community_code
            )
        ).scalar_one_or_none()
        sub = sub or str(first.community_code)[:9]
    return Placement(
        int(plan_id),
        first.grid_code,
        first.community_code,
        sub,
        None if first.worker_id is None else int(first.worker_id),
        status,
        round(distance, 3),
    )


def _geog(expr: Any) -> Any:
    """``geography(expr)``: metre distances on CGCS2000 longitude/latitude."""
    return func.geography(expr)


# ------------------------------------------------------------------------ intake


def find_open_duplicate(
    category_code: str,
    lon: float,
    lat: float,
    reported_at: datetime,
    *,
    session: Session,
    radius_m: float = 50.0,
    window: timedelta = timedelta(hours=24),
    exclude_id: int | None = None,
) -> int | None:
    """Earliest still-open incident of ``category_code`` near the point, or None.

    Same rule as :func:`spatialgrid.incidents.find_duplicates`: same category,
    within ``radius_m`` metres, reported at most ``window`` before
    ``reported_at`` (and not after it), not yet closed or ended.
    """
    if radius_m <= 0 or window <= timedelta(0):
        msg = f"radius_m={radius_m} and window={window} must both be positive"
        raise InputError(msg)
    pt = _point(lon, lat)
    when = _aware(reported_at)
    stmt = (
        select(Incident.id)
        .where(
            Incident.category_code == category_code,
            Incident.stage.not_in(CLOSED_STATES),
            Incident.reported_at >= when - window,
            Incident.reported_at <= when,
            Incident.geom.intersects(func.ST_Expand(pt, _deg(radius_m, lat))),
            func.ST_DWithin(_geog(Incident.geom), _geog(pt), float(radius_m)),
        )
        .order_by(Incident.reported_at, Incident.id)
        .limit(1)
    )
    if exclude_id is not None:
        stmt = stmt.where(Incident.id != int(exclude_id))
    found = session.execute(stmt).scalar_one_or_none()
    return None if found is None else int(found)


@dataclass(frozen=True)
class CreatedIncident:
    """What intake decided: the new id, its placement and a possible duplicate."""

    incident_id: int
    placement: Placement
    duplicate_of: int | None
    reported_at: datetime


def create_incident(
    *,
    session: Session,
    category_code: str,
    lon: float,
    lat: float,
    categories: pd.DataFrame,
    description: str | None = None,
    address: str | None = None,
    reported_at: datetime | None = None,
    reporter_name: str | None = None,
    reporter_phone: str | None = None,
    source: str = "api",
    reported_by: int | None = None,
    duplicate_radius_m: float = 50.0,
    duplicate_window: timedelta = timedelta(hours=24),
) -> CreatedIncident:
    """Store a new incident in stage ``collect``; return its id and placement.

    Parameters
    ----------
    session
        The caller's session.
    category_code
        A code of ``categories`` (:func:`spatialgrid.incidents.load_categories`).
    lon, lat
        CGCS2000 (EPSG:4490) longitude/latitude.
    categories
        The category table in force.
    description, address
        Free text (address as given, e.g. an Open311 ``address_string``).
    reported_at
        When it was reported (default now; not in the future).
    reporter_name, reporter_phone
        Stored only when given, in :class:`~spatialgrid.db.models.IncidentReporter`.
    source
        ``"api"``, ``"open311"``, ``"demo"`` or ``"import"``.
    reported_by
        Id of the API key that reported it.
    duplicate_radius_m, duplicate_window
        The duplicate rule (:func:`find_open_duplicate`).

    Raises
    ------
    InputError
        Unknown category, a future ``reported_at``, text too long, bad coordinates.
    """
    codes = set(categories["category_code"].astype(str))
    if category_code not in codes:
        msg = (
            f"category_code={category_code!r} is not in the category table; use one "
            f"of {sorted(codes)[:12]}{'...' if len(codes) > 12 else ''} "
            "(GET /v1/categories)"
        )
        raise InputError(msg)
    _check_lonlat(lon, lat)
    now = _now()
    when = _aware(reported_at) if reported_at is not None else now
    if when > now + timedelta(minutes=5):
        msg = f"reported_at={when.isoformat()} lies in the future; omit it for now"
        raise InputError(msg)
    name = _clean_text(reporter_name, "reporter_name", limit=200)
    phone = _clean_text(reporter_phone, "reporter_phone", limit=50)
    placement = place_point(lon, lat, session=session, at=when)
    duplicate = find_open_duplicate(
        category_code,
        lon,
        lat,
        when,
        session=session,
        radius_m=duplicate_radius_m,
        window=duplicate_window,
    )
    row = Incident(
        category_code=category_code,
        description=_clean_text(description, "description"),
        address=_clean_text(address, "address", limit=500),
        reported_at=when,
        source=source,
        reported_by=reported_by,
        stage="collect",
        stage_entered_at=when,
        plan_id=placement.plan_id,
        grid_code=placement.grid_code,
        community_code=placement.community_code,
        subdistrict_code=placement.subdistrict_code,
        worker_id=placement.worker_id,
        location_status=placement.location_status,
        boundary_distance_m=placement.boundary_distance_m,
        duplicate_of=duplicate,
        geom=f"SRID={STORAGE_EPSG};POINT({float(lon)!r} {float(lat)!r})",
    )
    session.add(row)
    session.flush()
    if name is not None or phone is not None:
        session.add(IncidentReporter(incident_id=row.id, name=name, phone=phone))
        session.flush()
    # Never log reporter details; the id and placement are enough.
    log.info(
        "incident %d (%s) in grid %s, duplicate of %s",
        row.id,
        category_code,
        placement.grid_code,
        duplicate,
    )
    return CreatedIncident(int(row.id), placement, duplicate, when)


# ------------------------------------------------------------------------- reads


def _incident_select() -> Any:
    return select(
        Incident.id.label("incident_id"),
        Incident.category_code,
        Incident.description,
        Incident.address,
        Incident.reported_at,
        Incident.source,
        Incident.stage,
        Incident.stage_entered_at,
        Incident.plan_id,
        Incident.grid_code,
        Incident.community_code,
        Incident.subdistrict_code,
        Incident.worker_id,
        Incident.location_status,
        Incident.boundary_distance_m,
        Incident.duplicate_of,
        type_coerce(func.ST_AsBinary(Incident.geom), LargeBinary).label("wkb"),
    )


def _filters(
    stmt: Any,
    *,
    stages: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    grids: Sequence[str] | None = None,
    communities: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    ids: Sequence[int] | None = None,
) -> Any:
    if stages:
        unknown = sorted(set(stages) - set(STATES))
        if unknown:
            msg = f"stage {unknown} unknown; use one of {list(STATES)}"
            raise InputError(msg)
        stmt = stmt.where(Incident.stage.in_(list(stages)))
    if categories:
        stmt = stmt.where(Incident.category_code.in_(list(categories)))
    if grids:
        stmt = stmt.where(Incident.grid_code.in_(list(grids)))
    if communities:
        stmt = stmt.where(Incident.community_code.in_(list(communities)))
    if start is not None:
        stmt = stmt.where(Incident.reported_at >= _aware(start))
    if end is not None:
        stmt = stmt.where(Incident.reported_at < _aware(end))
    if ids is not None:
        stmt = stmt.where(Incident.id.in_([int(i) for i in ids]))
    return stmt


def _to_frame(rows: Sequence[Any], timezone: str) -> gpd.GeoDataFrame:
    cols = list(INCIDENT_COLUMNS)
    frame = pd.DataFrame([tuple(r)[:-1] for r in rows], columns=cols)
    for col in ("reported_at", "stage_entered_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True).dt.tz_convert(timezone)
    for col in ("plan_id", "worker_id", "duplicate_of"):
        frame[col] = pd.array(frame[col].tolist(), dtype="Int64")
    frame["incident_id"] = frame["incident_id"].astype("int64")
    frame["boundary_distance_m"] = frame["boundary_distance_m"].astype("float64")
    geoms = shapely.from_wkb(np.asarray([bytes(r[-1]) for r in rows], dtype=object))
    return gpd.GeoDataFrame(
        frame, geometry=gpd.GeoSeries(geoms, crs=_STORAGE_CRS), crs=_STORAGE_CRS
    )


def list_incidents(
    *,
    session: Session,
    stages: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    grids: Sequence[str] | None = None,
    communities: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = 100,
    offset: int = 0,
    newest_first: bool = True,
    timezone: str = "Asia/Shanghai",
) -> tuple[gpd.GeoDataFrame, int]:
    """A page of incidents (no reporter details) and the number matching.

    Parameters
    ----------
    session
        The caller's session.
    stages, categories, grids, communities
        Keep incidents in these states / categories / grid codes / communities.
    start, end
        Reported in ``[start, end)`` (naive times are UTC).
    limit, offset
        Paging; ``limit=None`` returns every match.
    newest_first
        Order by report time descending (else ascending); ties by id.
    timezone
        Zone of the returned timestamps.

    Returns
    -------
    (geopandas.GeoDataFrame, int)
        Columns :data:`INCIDENT_COLUMNS` and point geometry in EPSG:4490.
    """
    filters = {
        "stages": stages,
        "categories": categories,
        "grids": grids,
        "communities": communities,
        "start": start,
        "end": end,
    }
    total = int(
        session.execute(
            _filters(select(func.count()).select_from(Incident), **filters)
        ).scalar_one()
    )
    order = (
        (Incident.reported_at.desc(), Incident.id.desc())
        if newest_first
        else (Incident.reported_at, Incident.id)
    )
    stmt = _filters(_incident_select(), **filters).order_by(*order)
    if offset:
        stmt = stmt.offset(int(offset))
    if limit is not None:
        stmt = stmt.limit(int(limit))
    rows = session.execute(stmt).all()
    return _to_frame(rows, timezone), total


def get_incident(
    incident_id: int, *, session: Session, timezone: str = "Asia/Shanghai"
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, bool]:
    """One incident (a one-row frame), its transitions, and whether a reporter is stored.

    Raises
    ------
    NotFoundError
        No such incident.
    """
    _get_row(incident_id, session)
    rows = session.execute(
        _incident_select().where(Incident.id == int(incident_id))
    ).all()
    frame = _to_frame(rows, timezone)
    history = _transitions(session, [int(incident_id)], timezone)
    has_reporter = (
        session.execute(
            select(func.count())
            .select_from(IncidentReporter)
            .where(IncidentReporter.incident_id == int(incident_id))
        ).scalar_one()
        > 0
    )
    return frame, history, bool(has_reporter)


def _transitions(
    session: Session, ids: Sequence[int] | None, timezone: str
) -> pd.DataFrame:
    stmt = select(
        IncidentTransition.incident_id,
        IncidentTransition.from_stage,
        IncidentTransition.to_stage,
        IncidentTransition.at,
        IncidentTransition.actor,
        IncidentTransition.note,
    ).order_by(
        IncidentTransition.incident_id, IncidentTransition.at, IncidentTransition.id
    )
    if ids is not None:
        stmt = stmt.where(IncidentTransition.incident_id.in_(list(ids)))
    rows = session.execute(stmt).all()
    frame = pd.DataFrame(
        [tuple(r) for r in rows],
        columns=["incident_id", "from_stage", "to_stage", "at", "actor", "note"],
    )
    frame["incident_id"] = frame["incident_id"].astype("int64")
    frame["at"] = pd.to_datetime(frame["at"], utc=True).dt.tz_convert(timezone)
    return frame


def load_incident_frames(
    *,
    session: Session,
    start: datetime | None = None,
    end: datetime | None = None,
    categories: Sequence[str] | None = None,
    grids: Sequence[str] | None = None,
    communities: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
    timezone: str = "Asia/Shanghai",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(incidents, transitions)`` for :func:`spatialgrid.incidents.summarize_incidents`.

    ``incidents`` has ``incident_id, category_code, reported_at, grid_code,
    community_code, subdistrict_code, worker_id`` (no geometry, no reporter);
    ``transitions`` the full log of those incidents. Filters as in
    :func:`list_incidents` (on the report time).
    """
    stmt = _filters(
        select(
            Incident.id,
            Incident.category_code,
            Incident.reported_at,
            Incident.grid_code,
            Incident.community_code,
            Incident.subdistrict_code,
            Incident.worker_id,
        ),
        categories=categories,
        grids=grids,
        communities=communities,
        start=start,
        end=end,
        ids=ids,
    ).order_by(Incident.id)
    rows = session.execute(stmt).all()
    incidents = pd.DataFrame(
        [tuple(r) for r in rows],
        columns=[
            "incident_id",
            "category_code",
            "reported_at",
            "grid_code",
            "community_code",
            "subdistrict_code",
            "worker_id",
        ],
    )
    incidents["incident_id"] = incidents["incident_id"].astype("int64")
    incidents["reported_at"] = pd.to_datetime(
        incidents["reported_at"], utc=True
    ).dt.tz_convert(timezone)
    incidents["worker_id"] = pd.array(incidents["worker_id"].tolist(), dtype="Int64")
    filtered = any(
        v is not None for v in (start, end, categories, grids, communities, ids)
    )
    transitions = _transitions(
        session, incidents["incident_id"].tolist() if filtered else None, timezone
    )
    return incidents, transitions


# ------------------------------------------------------------------- lifecycle


def record_transition(
    incident_id: int,
    to_stage: str,
    *,
    session: Session,
    actor: str,
    actor_key_id: int | None = None,
    note: str = "",
    at: datetime | None = None,
) -> str:
    """Move an incident to ``to_stage`` and log the step; return the previous state.

    Parameters
    ----------
    incident_id
        The incident.
    to_stage
        Target state; must be allowed from the current one
        (:data:`spatialgrid.incidents.ALLOWED_TRANSITIONS`).
    session
        The caller's session (the incident row is locked until it ends).
    actor
        Who makes the step (a key name, a person); required.
    actor_key_id
        The API key used.
    note
        Why (rework reason, duplicate of which case...).
    at
        When it happened (default now): not before the previous step, not in the
        future (a step recorded offline in the field and synchronised later).

    Raises
    ------
    NotFoundError
        No such incident.
    TransitionError
        The step is not allowed from the current state, or goes back in time.
    InputError
        ``at`` in the future or the note too long.
    """
    row = _get_row(incident_id, session, lock=True)
    now = _now()
    when = _aware(at) if at is not None else now
    if when > now + timedelta(minutes=5):
        msg = f"at={when.isoformat()} lies in the future; omit it for now"
        raise InputError(msg)
    clean_note = _clean_text(note, "note") or ""
    # advance() checks the rules; the last step's time is where this one may start.
    current = LifecycleIncident(
        incident_id=str(row.id),
        category_code=row.category_code,
        reported_at=row.stage_entered_at,
        stage=row.stage,
    )
    moved = advance(current, to_stage, actor=actor, at=when, note=clean_note)
    previous = row.stage
    session.execute(
        insert(IncidentTransition).values(
            incident_id=row.id,
            from_stage=previous,
            to_stage=moved.stage,
            at=when,
            actor=str(actor),
            actor_key_id=actor_key_id,
            note=clean_note,
        )
    )
    session.execute(
        update(Incident)
        .where(Incident.id == row.id)
        .values(stage=moved.stage, stage_entered_at=when)
    )
    session.expire(row)
    log.info("incident %d: %s -> %s by %s", row.id, previous, moved.stage, actor)
    return previous


def merge_incident(
    incident_id: int,
    into_id: int,
    *,
    session: Session,
    actor: str,
    actor_key_id: int | None = None,
    note: str = "",
) -> None:
    """End ``incident_id`` as a duplicate of ``into_id`` and link it there.

    Raises
    ------
    NotFoundError
        Either incident is missing.
    ConflictError
        Merging into itself, into a case that is itself a merged duplicate, or
        into a case that already points (directly or through a chain) back here.
    TransitionError
        ``incident_id`` can no longer end as a duplicate (it is past
        registration or already ended).
    """
    if int(incident_id) == int(into_id):
        msg = f"incident {incident_id} cannot be merged into itself"
        raise ConflictError(msg)
    source = _get_row(incident_id, session, lock=True)
    target = _get_row(into_id, session)
    if target.stage == "duplicate":
        msg = (
            f"incident {into_id} is itself a merged duplicate (of "
            f"{target.duplicate_of}); merge into that case instead"
        )
        raise ConflictError(msg)
    seen = {int(source.id)}
    cursor: Incident | None = target
    while cursor is not None and cursor.duplicate_of is not None:
        if int(cursor.duplicate_of) in seen:
            msg = (
                f"merging {incident_id} into {into_id} would make a cycle of "
                "duplicates; merge the other way round"
            )
            raise ConflictError(msg)
        seen.add(int(cursor.id))
        cursor = session.get(Incident, int(cursor.duplicate_of))
    text_ = f"merged into incident {into_id}" + (f": {note}" if note else "")
    record_transition(
        incident_id,
        "duplicate",
        session=session,
        actor=actor,
        actor_key_id=actor_key_id,
        note=text_,
    )
    session.execute(
        update(Incident)
        .where(Incident.id == int(incident_id))
        .values(duplicate_of=int(into_id))
    )


def allowed_next(incident_id: int, *, session: Session) -> tuple[str, tuple[str, ...]]:
    """Current state of an incident and the states it may move to."""
    row = _get_row(incident_id, session)
    return row.stage, allowed_transitions(row.stage)


# ------------------------------------------------------------------- reporters


def read_reporter(
    incident_id: int,
    *,
    session: Session,
    key_id: int | None,
    key_name: str,
    role: str,
    purpose: str = "",
) -> dict[str, str | None] | None:
    """A reporter's name and phone, or None when none was given; always audited.

    Every call writes a ``reporter_access_log`` row (who, when, which incident,
    whether anything was found), in the caller's transaction.

    Raises
    ------
    NotFoundError
        No such incident (the attempt is logged all the same).
    """
    exists = session.get(Incident, _check_id(incident_id)) is not None
    found = None
    if exists:
        found = session.execute(
            select(IncidentReporter.name, IncidentReporter.phone).where(
                IncidentReporter.incident_id == int(incident_id)
            )
        ).one_or_none()
    session.execute(
        insert(ReporterAccess).values(
            incident_id=int(incident_id),
            key_id=key_id,
            key_name=str(key_name),
            role=str(role),
            purpose=_clean_text(purpose, "purpose", limit=500) or "",
            found=found is not None,
        )
    )
    if not exists:
        msg = f"incident {incident_id} does not exist"
        raise NotFoundError(msg)
    if found is None:
        return None
    return {"name": found.name, "phone": found.phone}


def reporter_access_log(
    *, session: Session, incident_id: int | None = None, limit: int = 1000
) -> pd.DataFrame:
    """Audit rows of reporter reads, newest first (optionally of one incident)."""
    stmt = select(
        ReporterAccess.id,
        ReporterAccess.incident_id,
        ReporterAccess.accessed_at,
        ReporterAccess.key_id,
        ReporterAccess.key_name,
        ReporterAccess.role,
        ReporterAccess.purpose,
        ReporterAccess.found,
    ).order_by(ReporterAccess.accessed_at.desc(), ReporterAccess.id.desc())
    if incident_id is not None:
        stmt = stmt.where(ReporterAccess.incident_id == int(incident_id))
    rows = session.execute(stmt.limit(int(limit))).all()
    return pd.DataFrame(
        [tuple(r) for r in rows],
        columns=[
            "id",
            "incident_id",
            "accessed_at",
            "key_id",
            "key_name",
            "role",
            "purpose",
            "found",
        ],
    )


# ---------------------------------------------------------------- aggregation


def count_incident_cells(
    *,
    session: Session,
    cell_size_m: float,
    working_epsg: int,
    start: datetime | None = None,
    end: datetime | None = None,
    categories: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Incidents per fixed square cell, counted in PostGIS.

    Cells are anchored at multiples of ``cell_size_m`` in ``working_epsg``
    (``floor(x / size)``), exactly like
    :func:`spatialgrid.render.aggregate_incident_cells`, so the two agree.

    Returns
    -------
    pandas.DataFrame
        ``cell_i, cell_j, count`` (non-empty cells only), sorted.
    """
    if not cell_size_m > 0:
        msg = f"cell_size_m={cell_size_m} must be positive"
        raise InputError(msg)
    inner = _filters(
        select(func.ST_Transform(Incident.geom, int(working_epsg)).label("p")),
        categories=categories,
        start=start,
        end=end,
    ).subquery()
    size = bindparam("size", float(cell_size_m))
    ci = func.floor(func.ST_X(inner.c.p) / size).label("cell_i")
    cj = func.floor(func.ST_Y(inner.c.p) / size).label("cell_j")
    stmt = select(ci, cj, func.count().label("count")).group_by(ci, cj).order_by(ci, cj)
    rows = session.execute(stmt).all()
    frame = pd.DataFrame(
        [tuple(r) for r in rows], columns=["cell_i", "cell_j", "count"]
    )
    return frame.astype({"cell_i": "int64", "cell_j": "int64", "count": "int64"})


def count_incidents_by_grid(
    *,
    session: Session,
    start: datetime | None = None,
    end: datetime | None = None,
    categories: Sequence[str] | None = None,
    plan_id: int | None = None,
) -> pd.Series:
    """Incidents per grid code (as assigned at report time), counted in SQL.

    ``plan_id`` keeps only incidents placed on that plan.
    """
    stmt = _filters(
        select(Incident.grid_code, func.count()).where(Incident.grid_code.is_not(None)),
        categories=categories,
        start=start,
        end=end,
    ).group_by(Incident.grid_code)
    if plan_id is not None:
        stmt = stmt.where(Incident.plan_id == int(plan_id))
    rows = session.execute(stmt).all()
    return pd.Series(
        {str(code): int(n) for code, n in rows}, dtype="int64", name="incidents"
    )


def load_plan_grids_with_workers(plan_id: int, *, session: Session) -> gpd.GeoDataFrame:
    """A plan's grids (EPSG:4490) with ``worker`` (the worker's name) added."""
    grids = load_plan_grids(plan_id, session=session)
    names = dict(session.execute(select(GridWorker.id, GridWorker.name)).all())
    grids["worker"] = [
        None if pd.isna(w) else names.get(int(w)) for w in grids["worker_id"]
    ]
    return grids


# --------------------------------------------------------------- recompute grids


def recompute_incident_grids(
    *,
    session: Session,
    plan_id: int | None = None,
    only_open: bool = False,
    tolerance_m: float = 20.0,
    reach_m: float = 50.0,
) -> dict[str, int]:
    """Re-place stored incidents on a plan (default: the plan in force now).

    Use after boundaries change: grid, community, subdistrict and worker of each
    incident are recomputed with :class:`spatialgrid.locate.GridIndex`, like at
    intake (inside → that grid; outside within ``reach_m`` → the nearest grid).

    Returns
    -------
    dict
        ``plan_id``, ``incidents`` (re-placed) and ``changed`` (grid code differs).
    """
    from spatialgrid.locate import GridIndex

    plan = int(plan_id) if plan_id is not None else active_plan_id(session=session)
    grids = load_plan_grids(plan, session=session)
    stmt = select(
        Incident.id,
        Incident.grid_code,
        func.ST_X(Incident.geom),
        func.ST_Y(Incident.geom),
    )
    if only_open:
        stmt = stmt.where(Incident.stage.not_in(CLOSED_STATES))
    rows = session.execute(stmt).all()
    if not rows or len(grids) == 0:
        return {"plan_id": plan, "incidents": 0, "changed": 0}
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    old = np.array([r[1] for r in rows], dtype=object)
    lon = np.array([r[2] for r in rows], dtype=float)
    lat = np.array([r[3] for r in rows], dtype=float)
    subs = dict(
        session.execute(
            select(Community.community_code, Community.subdistrict_code)
        ).all()
    )
    grids["worker_id"] = grids["worker_id"].astype(object)
    index = GridIndex(
        grids, attributes=["worker_id"], max_tolerance_m=max(tolerance_m, 1.0)
    )
    found = index.locate(lon, lat, crs="cgcs2000", tolerance_m=tolerance_m)
    table = found.to_frame(attributes=["worker_id"])
    inside = table["inside"].to_numpy(dtype=bool)
    near_ok = (~inside) & (
        table["nearest_distance_m"].fillna(np.inf) <= reach_m
    ).to_numpy()
    pos = np.where(inside, found.grid, np.where(near_ok, found.nearest, -1))
    codes = np.where(pos >= 0, index.codes[np.maximum(pos, 0)], None)
    comms = np.where(pos >= 0, index.community_codes[np.maximum(pos, 0)], None)
    workers_all = grids["worker_id"].to_numpy(dtype=object)
    workers = np.where(pos >= 0, workers_all[np.maximum(pos, 0)], None)
    status = np.where(
        inside,
        np.where(
            table["status"].astype(str) == "near_boundary", "near_boundary", "inside"
        ),
        np.where(near_ok, "nearest", "outside"),
    )
    dist = table["boundary_distance_m"].to_numpy(dtype=float)
    payload = pd.DataFrame(
        {
            "id": ids,
            "grid_code": codes,
            "community_code": comms,
            "subdistrict_code": [
                None if c is None else (subs.get(c) or str(c)[:9]) for c in comms
            ],
            "worker_id": pd.array(
                [None if w is None or pd.isna(w) else int(w) for w in workers],
                dtype="Int64",
            ),
            "location_status": status,
            "boundary_distance_m": np.where(pos >= 0, np.round(dist, 3), np.nan),
        }
    )
    session.execute(
        text(
            "CREATE TEMP TABLE _sg_replace (id bigint, grid_code text, "
            "community_code text, subdistrict_code text, worker_id bigint, "
            "location_status text, boundary_distance_m double precision) "
            "ON COMMIT DROP"
        )
    )
    _copy(session, "_sg_replace", payload)
    session.execute(
        text(
            "UPDATE incidents i SET plan_id = :plan, grid_code = r.grid_code, "
            "community_code = r.community_code, subdistrict_code = r.subdistrict_code, "
            "worker_id = r.worker_id, location_status = r.location_status, "
            "boundary_distance_m = r.boundary_distance_m "
            "FROM _sg_replace r WHERE i.id = r.id"
        ),
        {"plan": plan},
    )
    session.execute(text("DROP TABLE _sg_replace"))
    changed = int(sum(1 for a, b in zip(old, codes, strict=True) if a != b))
    log.info("re-placed %d incidents on plan %d (%d changed)", len(ids), plan, changed)
    return {"plan_id": plan, "incidents": len(ids), "changed": changed}


# ------------------------------------------------------------------ bulk insert


def _copy_values(values: pd.Series) -> list[str]:
    """COPY text of one column (vectorised; NULL as ``\\N``)."""
    series = pd.Series(values).reset_index(drop=True)
    missing = series.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.dt.tz is not None:
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        stamps = series.to_numpy(dtype="datetime64[us]")
        text_ = pd.Series(np.char.add(np.datetime_as_string(stamps, unit="us"), "Z"))
    elif pd.api.types.is_bool_dtype(series):
        text_ = series.map({True: "t", False: "f"}).astype(object)
    elif pd.api.types.is_float_dtype(series):
        floats = series.to_numpy(dtype=float, na_value=np.nan)
        whole = np.isfinite(floats) & (floats == np.round(floats))
        # ids in a float column (pandas upcasts ints next to None) stay ints
        text_ = pd.Series(
            np.where(
                whole, np.char.mod("%d", np.nan_to_num(floats)), floats.astype(str)
            )
        )
    elif (
        series.dtype == object and series.map(type).isin([pd.Timestamp, datetime]).any()
    ):
        return [
            _NULL if gone else pd.Timestamp(v).isoformat()
            for v, gone in zip(series.tolist(), missing, strict=True)
        ]
    else:
        text_ = series.astype(str)
        special = text_.str.contains(r"[\\\t\n\r]", regex=True).to_numpy()
        if special.any():
            text_[special] = text_[special].map(lambda t: t.translate(_ESCAPES))
    out = text_.to_numpy(dtype=object)
    out[missing] = _NULL
    return out.tolist()


def _copy(session: Session, table: str, frame: pd.DataFrame) -> None:
    """COPY ``frame`` (columns = table columns) into ``table`` on the session."""
    if len(frame) == 0:
        return
    session.flush()
    columns = [_copy_values(frame[c]) for c in frame.columns]
    payload = "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    dbapi = session.connection().connection.driver_connection
    cursor = dbapi.cursor()  # type: ignore[union-attr]
    try:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(
                f'COPY "{table}" ({cols}) FROM STDIN', io.StringIO(payload)
            )
        else:  # pragma: no cover - psycopg 3
            with cursor.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:
                copy.write(payload)
    except Exception as err:
        if hasattr(err, "pgcode"):
            msg = f"storing {table} failed: {str(err).strip().splitlines()[0]}"
            raise DatabaseError(msg) from err
        raise
    finally:
        cursor.close()


def _utc(values: Any) -> pd.Series:
    """Timestamps as a tz-aware UTC series (naive values are taken as UTC)."""
    series = pd.to_datetime(pd.Series(values).reset_index(drop=True))
    if series.dt.tz is None:
        return series.dt.tz_localize("UTC")
    return series.dt.tz_convert("UTC")


def _next_ids(session: Session, n: int) -> np.ndarray:
    rows = session.execute(
        text("SELECT nextval('incidents_id_seq') FROM generate_series(1, :n)"),
        {"n": int(n)},
    ).all()
    return np.array([r[0] for r in rows], dtype=np.int64)


def bulk_insert_incidents(
    incidents: gpd.GeoDataFrame,
    *,
    session: Session,
    transitions: pd.DataFrame | None = None,
    reporters: pd.DataFrame | None = None,
) -> np.ndarray:
    """Store many incidents (and their logs) with COPY; return their new ids.

    Parameters
    ----------
    incidents
        Points with a CRS and ``category_code``, ``reported_at``; optional
        ``description``, ``address``, ``source`` (default ``"import"``), ``stage``
        and ``stage_entered_at`` (default: the end of their transitions, else
        ``collect`` since ``reported_at``), ``plan_id``, ``grid_code``,
        ``community_code``, ``subdistrict_code``, ``worker_id``,
        ``location_status``, ``boundary_distance_m`` and ``duplicate_of`` (the
        *position* of the earlier incident in this frame, or missing).
    session
        The caller's session.
    transitions
        Log rows with ``pos`` (row position in ``incidents``), ``from_stage``,
        ``to_stage``, ``at``, ``actor``, ``note``. Not validated here: check them
        with :func:`spatialgrid.incidents.check_transitions` first.
    reporters
        ``pos``, ``name``, ``phone`` for incidents whose reporter gave details.

    Returns
    -------
    numpy.ndarray
        The incident ids, in row order.
    """
    n = len(incidents)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    ids = _next_ids(session, n)
    pts = incidents.geometry.to_crs(_STORAGE_CRS)
    geoms = shapely.set_srid(np.asarray(pts.values), STORAGE_EPSG)
    frame = pd.DataFrame({"id": ids})
    frame["category_code"] = incidents["category_code"].astype(str).to_numpy()
    frame["reported_at"] = _utc(incidents["reported_at"])
    for col, default in (
        ("description", None),
        ("address", None),
        ("source", "import"),
        ("plan_id", None),
        ("grid_code", None),
        ("community_code", None),
        ("subdistrict_code", None),
        ("worker_id", None),
        ("location_status", "inside"),
        ("boundary_distance_m", None),
    ):
        if col in incidents.columns:
            values = incidents[col].to_numpy(dtype=object)
            if col in ("plan_id", "worker_id"):
                values = np.array(
                    [None if pd.isna(v) else int(v) for v in values], dtype=object
                )
            frame[col] = values
        else:
            frame[col] = default
    stage = pd.Series("collect", index=range(n), dtype=object)
    entered = frame["reported_at"].copy()
    if transitions is not None and len(transitions):
        last = (
            transitions.assign(_at=_utc(transitions["at"]).to_numpy())
            .sort_values(["pos", "_at"], kind="stable")
            .groupby("pos")
            .tail(1)
        )
        stage.iloc[last["pos"].to_numpy()] = last["to_stage"].to_numpy()
        entered.iloc[last["pos"].to_numpy()] = last["_at"].to_numpy()
    if "stage" in incidents.columns:
        stage = incidents["stage"].reset_index(drop=True).astype(object)
    if "stage_entered_at" in incidents.columns:
        entered = _utc(incidents["stage_entered_at"])
    frame["stage"] = stage.to_numpy()
    frame["stage_entered_at"] = entered.reset_index(drop=True)
    if "duplicate_of" in incidents.columns:
        dup = incidents["duplicate_of"].to_numpy(dtype=object)
        frame["duplicate_of"] = pd.array(
            [None if d is None or pd.isna(d) else int(ids[int(d)]) for d in dup],
            dtype="Int64",
        )
    frame["geom"] = shapely.to_wkb(geoms, hex=True, include_srid=True)
    # duplicate_of may point at rows of the same COPY: foreign keys are checked
    # at the end of the statement, so that is fine.
    _copy(session, "incidents", frame)
    if transitions is not None and len(transitions):
        log_frame = pd.DataFrame(
            {
                "incident_id": ids[transitions["pos"].to_numpy(dtype=np.int64)],
                "from_stage": transitions["from_stage"].to_numpy(),
                "to_stage": transitions["to_stage"].to_numpy(),
                "at": _utc(transitions["at"]).to_numpy(),
                "actor": transitions["actor"].astype(str).to_numpy(),
                "note": (
                    transitions["note"].fillna("").astype(str).to_numpy()
                    if "note" in transitions.columns
                    else ""
                ),
            }
        )
        _copy(session, "incident_transitions", log_frame)
    if reporters is not None and len(reporters):
        rep = pd.DataFrame(
            {
                "incident_id": ids[reporters["pos"].to_numpy(dtype=np.int64)],
                "name": reporters["name"].to_numpy(dtype=object),
                "phone": reporters["phone"].to_numpy(dtype=object),
            }
        )
        _copy(session, "incident_reporters", rep)
    log.info("stored %d incidents", n)
    return ids


def delete_incidents(*, session: Session, source: str | None = None) -> int:
    """Delete incidents (all, or those of one ``source``, e.g. ``"demo"``); return count."""
    stmt = delete(Incident)
    if source is not None:
        stmt = stmt.where(Incident.source == source)
    result = session.execute(stmt)
    return int(result.rowcount or 0)


def summarize_stored_incidents(
    *,
    session: Session,
    categories: pd.DataFrame,
    as_of: datetime | None = None,
    calendar: WorkingCalendar | None = None,
    timezone: str = "Asia/Shanghai",
    start: datetime | None = None,
    end: datetime | None = None,
    category_codes: Sequence[str] | None = None,
    grids: Sequence[str] | None = None,
    communities: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Stored incidents through :func:`spatialgrid.incidents.summarize_incidents`.

    One row per incident with its current stage, overdue flags, on-time closure,
    Open311 status and expected close, ready for :func:`spatialgrid.kpi.compute_kpis`.
    Filters as in :func:`load_incident_frames`; ``as_of`` default now.
    """
    from spatialgrid.incidents import summarize_incidents

    incidents, transitions = load_incident_frames(
        session=session,
        start=start,
        end=end,
        categories=category_codes,
        grids=grids,
        communities=communities,
        ids=ids,
        timezone=timezone,
    )
    moment = pd.Timestamp(_aware(as_of)).tz_convert(timezone)
    return summarize_incidents(
        incidents,
        transitions,
        categories,
        as_of=moment,
        calendar=calendar,
        validate=False,
    )
