"""PostGIS tables of spatialgrid (SQLAlchemy declarative + GeoAlchemy2).

Design rationale
----------------
- **One SRID.** Every geometry is stored in CGCS2000 geographic, EPSG:4490
  (:data:`spatialgrid.crs.STORAGE_EPSG`), the system Chinese deliverables use.
  Layers arrive in any CRS and are reprojected on save; metric work never happens
  in the database (it happens in a projected working CRS in the library).
- **Every geometry column has a GiST index** (``spatial_index=True``): bbox
  queries from the API and point lookups depend on it.
- **City layers mirror** :data:`spatialgrid.city.LAYER_COLUMNS`: one table per
  layer, the required columns as typed columns, and a JSONB ``properties`` column
  for any extra column a producer added (OSM tags, planner attributes), so a
  save/load round trip loses nothing. Natural ids (``block_id``...) are stored as
  text and are unique per layer; a surrogate ``id`` keeps insertion order for
  stable paging. Layers do not reference each other by foreign key: an import may
  legitimately hold a building whose block was dropped, and that is reported by
  validation, not refused by the database.
- **Plans are versioned** (like MapIt "generations"): every partition run is
  stored as a :class:`GridPlan` with its parameters and diagnostics, and grids
  reference their plan. A plan goes ``draft`` → ``active`` → ``retired``; when one
  is activated the previous active plan is retired with ``effective_to`` = the new
  plan's ``effective_from``. Old plans stay queryable, so "which grid (and which
  worker) was responsible for this address on date D" has an answer, as grid
  offices need after boundaries are adjusted (动态调整). A partial unique index
  allows at most one ``active`` plan.
- **Grid workers** are separate from grids (一格一员 assigns one per grid, but a
  worker survives a redraw); ``grids.worker_id`` is nullable.
- **API keys** store only a salted SHA-256 of a 256-bit random secret plus a
  public lookup prefix. Slow password hashes (argon2) protect low-entropy human
  passwords; for random keys they only add ~50 ms to every request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from spatialgrid.crs import STORAGE_EPSG
from spatialgrid.roles import ROLES

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PLAN_STATUSES = ("draft", "active", "retired")


class Base(DeclarativeBase):
    """Declarative base with a naming convention (stable Alembic names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _geom(kind: str = "GEOMETRY", *, nullable: bool = False) -> Mapped[Any]:
    return mapped_column(
        Geometry(kind, srid=STORAGE_EPSG, spatial_index=True), nullable=nullable
    )


def _geom_type_check(*types: str) -> CheckConstraint:
    allowed = ", ".join(f"'ST_{t}'" for t in types)
    return CheckConstraint(f"ST_GeometryType(geom) IN ({allowed})", name="geom_type")


def _properties() -> Mapped[dict[str, Any]]:
    return mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))


def _in(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


# ----------------------------------------------------------------------- city layers


class CityInfo(Base):
    """The stored city's name, admin code and import report (one row, id 1)."""

    __tablename__ = "city_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    admin_code: Mapped[str] = mapped_column(Text)
    source_crs: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = _properties()
    saved_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Subdistrict(Base):
    """A subdistrict (街道) or, with ``level='district'``, a district (区)."""

    __tablename__ = "subdistricts"
    __table_args__ = (
        _geom_type_check("Polygon", "MultiPolygon"),
        _in("level", ("district", "subdistrict"), "level"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    subdistrict_code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text, server_default="subdistrict")
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom()


class Community(Base):
    """A community (社区): 12-digit code, about 3000 households."""

    __tablename__ = "communities"
    __table_args__ = (_geom_type_check("Polygon", "MultiPolygon"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    community_code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    subdistrict_code: Mapped[str | None] = mapped_column(Text, index=True)
    households: Mapped[int | None] = mapped_column(Integer)
    # True when spatialgrid grouped blocks into this community (no planner layer).
    generated: Mapped[bool] = mapped_column(Boolean, server_default="false")
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom()


class Street(Base):
    """A street centreline; ``internal`` roads lie inside blocks."""

    __tablename__ = "streets"
    __table_args__ = (_geom_type_check("LineString", "MultiLineString"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    street_id: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    highway: Mapped[str | None] = mapped_column(Text)
    internal: Mapped[bool] = mapped_column(Boolean, server_default="false")
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom()


class Block(Base):
    """A street block: the unit grids are built from."""

    __tablename__ = "blocks"
    __table_args__ = (_geom_type_check("Polygon", "MultiPolygon"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    block_id: Mapped[str] = mapped_column(Text, unique=True)
    community_code: Mapped[str | None] = mapped_column(Text, index=True)
    households: Mapped[int | None] = mapped_column(Integer)
    households_source: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom()


class Building(Base):
    """A building (楼栋) with its households and where that number came from."""

    __tablename__ = "buildings"
    __table_args__ = (_geom_type_check("Polygon", "MultiPolygon"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    building_id: Mapped[str] = mapped_column(Text, unique=True)
    block_id: Mapped[str | None] = mapped_column(Text, index=True)
    compound_id: Mapped[str | None] = mapped_column(Text, index=True)
    levels: Mapped[float | None] = mapped_column(Float)
    households: Mapped[int | None] = mapped_column(Integer)
    households_source: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom()


class Compound(Base):
    """A gated compound (小区)."""

    __tablename__ = "compounds"
    __table_args__ = (_geom_type_check("Polygon", "MultiPolygon"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    compound_id: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    block_id: Mapped[str | None] = mapped_column(Text, index=True)
    households: Mapped[int | None] = mapped_column(Integer)
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom()


class Address(Base):
    """A door plate (门牌) or building plate (楼栋牌); may be not yet located."""

    __tablename__ = "addresses"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    address_id: Mapped[str] = mapped_column(Text, unique=True)
    address: Mapped[str | None] = mapped_column(Text)
    road: Mapped[str | None] = mapped_column(Text)
    number: Mapped[str | None] = mapped_column(Text)
    compound: Mapped[str | None] = mapped_column(Text)
    building: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(Text)
    block_id: Mapped[str | None] = mapped_column(Text, index=True)
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom("POINT", nullable=True)


class Poi(Base):
    """A point of interest; ``is_shop`` marks street-front shop candidates."""

    __tablename__ = "pois"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    poi_id: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    is_shop: Mapped[bool] = mapped_column(Boolean, server_default="false")
    block_id: Mapped[str | None] = mapped_column(Text, index=True)
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom("POINT")


#: ORM class per City layer name.
LAYER_MODELS: dict[str, type[Base]] = {
    "subdistricts": Subdistrict,
    "communities": Community,
    "streets": Street,
    "blocks": Block,
    "buildings": Building,
    "compounds": Compound,
    "addresses": Address,
    "pois": Poi,
}


# ------------------------------------------------------------------------ grid plans


class GridWorker(Base):
    """A grid worker (网格员)."""

    __tablename__ = "grid_workers"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    employee_no: Mapped[str | None] = mapped_column(Text, unique=True)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class GridPlan(Base):
    """One partition run: a versioned set of grids (see the module notes)."""

    __tablename__ = "grid_plans"
    __table_args__ = (
        _in("status", PLAN_STATUSES, "status"),
        CheckConstraint(
            "effective_to IS NULL OR effective_from IS NULL "
            "OR effective_to >= effective_from",
            name="effective_range",
        ),
        CheckConstraint(
            "status = 'draft' OR effective_from IS NOT NULL", name="effective_set"
        ),
        # At most one plan in force: a partial unique index on the status.
        Index(
            "uq_grid_plans_one_active",
            "status",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    status: Mapped[str] = mapped_column(Text, server_default="draft")
    effective_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    effective_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    parameters: Mapped[dict[str, Any]] = _properties()
    diagnostics: Mapped[Any] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    metrics: Mapped[dict[str, Any]] = _properties()


class Grid(Base):
    """One grid (网格) of one plan."""

    __tablename__ = "grids"
    __table_args__ = (
        UniqueConstraint("plan_id", "grid_code"),
        Index("ix_grids_plan_id_community_code", "plan_id", "community_code"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    plan_id: Mapped[int] = mapped_column(
        ForeignKey("grid_plans.id", ondelete="CASCADE")
    )
    grid_code: Mapped[str] = mapped_column(Text)
    community_code: Mapped[str | None] = mapped_column(Text)
    households: Mapped[int | None] = mapped_column(Integer)
    n_blocks: Mapped[int | None] = mapped_column(Integer)
    flags: Mapped[Any] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("grid_workers.id", ondelete="SET NULL"), index=True
    )
    properties: Mapped[dict[str, Any]] = _properties()
    geom: Mapped[Any] = _geom("MULTIPOLYGON")


class PlanAssignment(Base):
    """Which grid a block (or a part of a split block) belongs to in a plan."""

    __tablename__ = "plan_assignments"
    __table_args__ = (
        Index("ix_plan_assignments_plan_id_block_id", "plan_id", "block_id"),
        Index("ix_plan_assignments_plan_id_grid_code", "plan_id", "grid_code"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    plan_id: Mapped[int] = mapped_column(
        ForeignKey("grid_plans.id", ondelete="CASCADE")
    )
    block_id: Mapped[str] = mapped_column(Text)
    grid_code: Mapped[str] = mapped_column(Text)
    # Set for blocks split between grids (by internal roads or whole buildings).
    part_id: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = _properties()


# -------------------------------------------------------------------------- API keys


class ApiKey(Base):
    """An API key: public lookup ``prefix`` + salted SHA-256 of the secret."""

    __tablename__ = "api_keys"
    __table_args__ = (_in("role", ROLES, "role"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text, unique=True)
    salt: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# ---------------------------------------------------------------- background jobs

JOB_STATUSES = ("queued", "running", "succeeded", "failed")


class Job(Base):
    """A background job of the API (a partition run), its progress and outcome.

    Jobs run in a thread pool of one API process (``api/jobs.py``), so a job
    outlives the request that started it but not its process. ``runner`` names
    that process (``host|pid|boot token``) and ``updated_at`` is its heartbeat:
    a process starting up marks as failed the unfinished jobs of processes that
    are gone, instead of leaving them ``running`` for ever.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        _in("status", JOB_STATUSES, "status"),
        CheckConstraint(
            "progress_done >= 0 AND (progress_total IS NULL OR progress_total >= 0)",
            name="progress_range",
        ),
        Index("ix_jobs_status", "status"),
        Index("ix_jobs_created_at", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    progress_stage: Mapped[str | None] = mapped_column(Text)
    progress_done: Mapped[int] = mapped_column(BigInteger, server_default="0")
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    parameters: Mapped[dict[str, Any]] = _properties()
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    runner: Mapped[str | None] = mapped_column(Text)
    # The API key that started the job (keys are revoked, not deleted).
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


# ------------------------------------------------------------------------ incidents

#: Where an incident came in from.
INCIDENT_SOURCES = ("api", "open311", "demo", "import")
#: How the incident's point relates to the plan in force when it was reported.
LOCATION_STATUSES = ("inside", "near_boundary", "nearest", "outside", "no_plan")


def _incident_states() -> tuple[str, ...]:
    from spatialgrid.incidents import STATES

    return STATES


class Incident(Base):
    """An incident (事件/部件问题) on the map, with its current lifecycle state.

    Grid, community, subdistrict and worker are assigned **at report time** from
    the plan in force and kept (``plan_id`` says which plan): a later redraw does
    not silently move old cases, which would falsify the KPIs of the grid that
    was responsible then. ``POST /v1/incidents/recompute-grids`` re-assigns them
    on purpose. ``stage``/``stage_entered_at`` cache the end of the transition log
    (:class:`IncidentTransition`, the source of truth) for fast filtering.
    Reporter details live in :class:`IncidentReporter`, never here.
    """

    __tablename__ = "incidents"
    __table_args__ = (
        _in("stage", _incident_states(), "stage"),
        _in("source", INCIDENT_SOURCES, "source"),
        _in("location_status", LOCATION_STATUSES, "location_status"),
        CheckConstraint("ST_GeometryType(geom) = 'ST_Point'", name="geom_type"),
        CheckConstraint("duplicate_of IS NULL OR duplicate_of <> id", name="not_self"),
        Index("ix_incidents_reported_at", "reported_at"),
        Index("ix_incidents_stage", "stage"),
        Index("ix_incidents_category_code_reported_at", "category_code", "reported_at"),
        Index("ix_incidents_grid_code", "grid_code"),
        Index("ix_incidents_community_code", "community_code"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    category_code: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(Text, server_default="api")
    # The API key that reported it (keys are revoked, not deleted).
    reported_by: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    stage: Mapped[str] = mapped_column(Text, server_default="collect")
    stage_entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    plan_id: Mapped[int | None] = mapped_column(
        ForeignKey("grid_plans.id", ondelete="SET NULL")
    )
    grid_code: Mapped[str | None] = mapped_column(Text)
    community_code: Mapped[str | None] = mapped_column(Text)
    subdistrict_code: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("grid_workers.id", ondelete="SET NULL")
    )
    location_status: Mapped[str] = mapped_column(Text, server_default="inside")
    boundary_distance_m: Mapped[float | None] = mapped_column(Float)
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
    geom: Mapped[Any] = _geom("POINT")


class IncidentTransition(Base):
    """One recorded lifecycle step: who moved the case, when, and why."""

    __tablename__ = "incident_transitions"
    __table_args__ = (
        _in("from_stage", _incident_states(), "from_stage"),
        _in("to_stage", _incident_states(), "to_stage"),
        Index("ix_incident_transitions_incident_id_at", "incident_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE")
    )
    from_stage: Mapped[str] = mapped_column(Text)
    to_stage: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(Text)
    actor_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    note: Mapped[str] = mapped_column(Text, server_default="")


class IncidentReporter(Base):
    """A reporter's name and phone, stored only when given (one row per incident).

    Kept apart from :class:`Incident` so that no query for maps, KPIs, exports or
    Open311 can select it by accident; every read goes through
    ``spatialgrid.db.incidents.read_reporter``, which writes a
    :class:`ReporterAccess` row.
    """

    __tablename__ = "incident_reporters"
    __table_args__ = (
        CheckConstraint("name IS NOT NULL OR phone IS NOT NULL", name="something"),
    )
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)


class ReporterAccess(Base):
    """Audit log: who read a reporter's details, when, for which incident.

    No foreign keys: the log outlives deleted incidents and revoked keys.
    """

    __tablename__ = "reporter_access_log"
    __table_args__ = (
        Index("ix_reporter_access_log_incident_id", "incident_id"),
        Index("ix_reporter_access_log_accessed_at", "accessed_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(BigInteger)
    accessed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    key_id: Mapped[int | None] = mapped_column(BigInteger)
    key_name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text, server_default="")
    found: Mapped[bool] = mapped_column(Boolean)
