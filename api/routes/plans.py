"""Grid plans and partition jobs: start a partition, follow it, read and activate plans.

- ``POST /v1/partition-jobs`` (planner) queues a partition of the stored city
  (:mod:`api.jobs`) and answers 202 with the job and its ``Location``;
  ``GET /v1/partition-jobs/{id}`` tells its status, progress and outcome (the id
  and metrics of the draft plan it stored, or the error).
- ``GET /v1/plans`` lists plans with status and effective dates;
  ``GET /v1/plans/active?at=`` finds the plan in force at a moment;
  ``GET /v1/plans/{id}``, ``/grids`` (GeoJSON, bbox and paging like the layers),
  ``/diagnostics`` (per community) read one plan.
- ``POST /v1/plans/{id}/activate`` (planner) puts a draft plan in force; the plan
  in force until then is retired with ``effective_to`` = the new start.

Reading needs :attr:`Permission.READ_PLANS`, writing :attr:`Permission.WRITE_PLANS`
(see the table in :mod:`api.deps`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from geojson_pydantic import Feature
from geojson_pydantic.geometries import Geometry
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.deps import Permission, SessionDep, require_permission
from api.geojson import GEOJSON_MEDIA_TYPE, GeoJSONResponse, feature_collection
from api.jobs import PARTITION_JOB, JobQueueFullError, JobRunner, jobs_lifespan
from api.routes.layers import BBoxQuery, LimitQuery, OffsetQuery, page_links
from api.schemas import ErrorPublic, Link, PagedFeatureCollection, ValidationErrorPublic
from spatialgrid.db import jobs as job_repo
from spatialgrid.db import repository
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.errors import ConflictError, InputError, NotFoundError

router = APIRouter(prefix="/v1", lifespan=jobs_lifespan)

PlanReader = Annotated[ApiKeyInfo, Depends(require_permission(Permission.READ_PLANS))]
PlanWriter = Annotated[ApiKeyInfo, Depends(require_permission(Permission.WRITE_PLANS))]

#: Largest id PostgreSQL's bigint can hold; larger ids cannot exist.
_MAX_ID = 2**63 - 1
_RETRY_AFTER_S = 30

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing, unknown or revoked API key."},
    403: {"model": ErrorPublic, "description": "The key's role may not do this."},
    422: {"model": ValidationErrorPublic, "description": "Invalid parameters."},
    503: {"model": ErrorPublic, "description": "The database is unreachable."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No plan (or job) has that id."}
}

# --------------------------------------------------------------------------- models

CommunityCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]


class PartitionJobCreate(BaseModel):
    """What to partition and how: bounds, code scheme, seed, communities."""

    model_config = ConfigDict(extra="forbid")

    min_households: int = Field(
        400, ge=1, le=100_000, description="Fewest households per grid."
    )
    max_households: int = Field(
        500, ge=1, le=100_000, description="Most households per grid."
    )
    code_scheme: Literal["cjt213", "db11"] = Field(
        "cjt213",
        description="Grid codes: CJ/T 213 (14 digits) or Beijing DB11 (15 digits).",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Same inputs and seed, same plan."
    )
    communities: list[CommunityCode] | None = Field(
        None,
        min_length=1,
        max_length=10_000,
        description="Only these communities (12-digit codes); default all.",
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        # No control characters (PostgreSQL text cannot hold NUL).
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Name of the plan; default 'partition job <id>'.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> PartitionJobCreate:
        if self.min_households > self.max_households:
            msg = (
                f"min_households={self.min_households} is above "
                f"max_households={self.max_households}; use e.g. 400 and 500"
            )
            raise ValueError(msg)
        if self.communities is not None:
            self.communities = sorted(set(self.communities))
        return self


class JobProgress(BaseModel):
    """How far a job got: the stage, and done out of total steps in it."""

    stage: str | None
    done: int
    total: int | None
    fraction: float | None = Field(description="done / total, when total is known.")


class PartitionJobPublic(BaseModel):
    """A partition job: status, progress and outcome."""

    id: int
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    parameters: dict[str, Any]
    progress: JobProgress
    result: dict[str, Any] | None = Field(
        description=(
            "On success: plan_id, plan_name, grids, metrics, "
            "communities_with_violations (their grids are flagged; see the plan's "
            "diagnostics)."
        )
    )
    error: str | None = Field(description="On failure: what went wrong.")
    created_by: int | None = Field(description="Id of the API key that started it.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: list[Link] = Field(default_factory=list)


class PartitionJobsPublic(BaseModel):
    """The newest partition jobs first."""

    jobs: list[PartitionJobPublic]


class PlanPublic(BaseModel):
    """A grid plan: status, effective dates, size, parameters, metrics."""

    id: int
    name: str
    status: Literal["draft", "active", "retired"]
    created_at: datetime
    effective_from: datetime | None
    effective_to: datetime | None
    n_grids: int
    households: int
    parameters: dict[str, Any]
    metrics: dict[str, Any]


class PlansPublic(BaseModel):
    """Plans, oldest first."""

    plans: list[PlanPublic]


class PlanActivate(BaseModel):
    """When the plan takes effect (default now; naive times are UTC)."""

    model_config = ConfigDict(extra="forbid")

    effective_from: datetime | None = Field(
        None,
        description=(
            "ISO 8601 date or date-time, e.g. 2026-01-01 (years 1900–9998; naive "
            "times are UTC)."
        ),
    )

    @model_validator(mode="after")
    def _plausible(self) -> PlanActivate:
        moment = self.effective_from
        if moment is not None and not 1900 <= moment.year <= 9998:
            msg = (
                f"effective_from {moment.isoformat()} is outside the years "
                "1900–9998; give the date the plan takes effect"
            )
            raise ValueError(msg)
        return self


class PlanActivated(PlanPublic):
    """The activated plan and the plan it retired, if any."""

    retired_plan_id: int | None


class PlanDiagnosticsPublic(BaseModel):
    """Per-community diagnostics recorded with a plan."""

    plan_id: int
    communities: list[dict[str, Any]] = Field(
        description=(
            "One row per community: households, k range, status, reasons, notes, "
            "violations, split blocks, islands, choke points, cover checks."
        )
    )


class GridProperties(BaseModel):
    """A grid of a plan."""

    model_config = ConfigDict(extra="allow")

    grid_code: str
    community_code: str | None
    households: int | None
    n_blocks: int | None
    worker_id: int | None


class GridFeature(Feature[Geometry, GridProperties]):
    """One grid of a plan."""


class GridCollection(PagedFeatureCollection[GridFeature]):
    """A page of a plan's grids as GeoJSON."""


# -------------------------------------------------------------------------- helpers


def _checked_id(value: int, what: str) -> int:
    if not 1 <= value <= _MAX_ID:
        msg = f"{what} {value} does not exist; ids are positive whole numbers"
        raise NotFoundError(msg)
    return value


def _job_public(request: Request, job: job_repo.JobInfo) -> PartitionJobPublic:
    total = job.progress_total
    fraction = None if not total else round(min(1.0, job.progress_done / total), 4)
    if job.status == "succeeded":
        fraction = 1.0
    links = [
        Link(
            href=str(request.url_for("get_partition_job", job_id=job.id)),
            rel="self",
            type="application/json",
        )
    ]
    plan_id = (job.result or {}).get("plan_id")
    if plan_id is not None:
        links.append(
            Link(
                href=str(request.url_for("get_plan", plan_id=plan_id)),
                rel="plan",
                type="application/json",
                title="the draft plan this job stored",
            )
        )
    return PartitionJobPublic(
        id=job.id,
        kind=job.kind,
        status=job.status,  # type: ignore[arg-type]
        parameters=job.parameters,
        progress=JobProgress(
            stage=job.progress_stage,
            done=job.progress_done,
            total=total,
            fraction=fraction,
        ),
        result=job.result,
        error=job.error,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=links,
    )


def _nat(value: Any) -> Any:
    return None if value is None or pd.isna(value) else value


def _plan_public(session: Any, plan_id: int) -> PlanPublic:
    info = repository.get_plan(plan_id, session=session)
    plans = repository.list_plans(session=session)
    row = plans[plans["id"] == info.id].iloc[0]
    return PlanPublic(
        id=info.id,
        name=info.name,
        status=info.status,  # type: ignore[arg-type]
        created_at=info.created_at,
        effective_from=info.effective_from,
        effective_to=info.effective_to,
        n_grids=int(row["n_grids"]),
        households=int(row["households"]),
        parameters=info.parameters,
        metrics=info.metrics,
    )


def _runner(request: Request) -> JobRunner:
    runner: JobRunner | None = getattr(request.app.state, "job_runner", None)
    if runner is None:
        raise HTTPException(
            status_code=503,
            detail="the job runner is not running; restart the service",
        )
    return runner


# --------------------------------------------------------------- partition jobs


@router.post(
    "/partition-jobs",
    status_code=202,
    response_model=PartitionJobPublic,
    tags=["partition jobs"],
    summary="Start partitioning the stored city into grids",
    operation_id="start_partition_job",
    responses={
        409: {"model": ErrorPublic, "description": "No city is stored."},
        **_ERRORS,
        503: {
            "model": ErrorPublic,
            "description": "Too many jobs queued (retry later) or database down.",
        },
    },
)
def start_partition_job(
    request: Request,
    response: Response,
    session: SessionDep,
    key: PlanWriter,
    body: Annotated[PartitionJobCreate | None, Body()] = None,
) -> PartitionJobPublic:
    """Queue a partition of the stored city's blocks into grids of
    `min_households`–`max_households` households (default 400–500).

    Answers 202 at once with the job; follow its `Location` (or `links.self`)
    until `status` is `succeeded` (then `result.plan_id` is a new **draft** plan)
    or `failed` (then `error` says why).
    """
    params = body if body is not None else PartitionJobCreate.model_validate({})
    stored = repository.count_layer("blocks", session=session)
    if stored == 0:
        msg = (
            "no city is stored, so there is nothing to partition; import one first "
            "(`spatialgrid import osm FILE` or `spatialgrid demo`)"
        )
        raise ConflictError(msg)
    if params.communities:
        known = set(
            repository.load_layer("communities", session=session)["community_code"]
            .astype(str)
            .tolist()
        )
        unknown = [c for c in params.communities if c not in known]
        if unknown:
            msg = (
                f"communities {unknown[:10]} are not stored; list them with "
                "GET /v1/communities"
            )
            raise InputError(msg)
    try:
        job = _runner(request).submit_partition(params.model_dump(), created_by=key.id)
    except JobQueueFullError as err:
        raise HTTPException(
            status_code=503,
            detail=str(err),
            headers={"Retry-After": str(_RETRY_AFTER_S)},
        ) from err
    public = _job_public(request, job)
    response.headers["Location"] = public.links[0].href
    return public


@router.get(
    "/partition-jobs",
    response_model=PartitionJobsPublic,
    tags=["partition jobs"],
    summary="List recent partition jobs",
    operation_id="list_partition_jobs",
    responses=_ERRORS,
)
def list_partition_jobs(
    request: Request,
    session: SessionDep,
    key: PlanReader,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed"] | None,
        Query(description="Only jobs with this status."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 50,
) -> PartitionJobsPublic:
    """The newest partition jobs first."""
    found = job_repo.list_jobs(
        session=session, kind=PARTITION_JOB, status=status, limit=limit
    )
    return PartitionJobsPublic(jobs=[_job_public(request, j) for j in found])


@router.get(
    "/partition-jobs/{job_id}",
    response_model=PartitionJobPublic,
    tags=["partition jobs"],
    summary="Status, progress and outcome of a partition job",
    operation_id="get_partition_job",
    responses={**_NOT_FOUND, **_ERRORS},
)
def get_partition_job(
    request: Request, session: SessionDep, key: PlanReader, job_id: int
) -> PartitionJobPublic:
    """Poll this until `status` is `succeeded` or `failed`."""
    job = job_repo.get_job(_checked_id(job_id, "partition job"), session=session)
    if job.kind != PARTITION_JOB:
        msg = f"job {job_id} is not a partition job"
        raise NotFoundError(msg)
    return _job_public(request, job)


# ------------------------------------------------------------------------ plans


@router.get(
    "/plans",
    response_model=PlansPublic,
    tags=["plans"],
    summary="List grid plans",
    operation_id="list_plans",
    responses=_ERRORS,
)
def list_plans(
    session: SessionDep,
    key: PlanReader,
    status: Annotated[
        Literal["draft", "active", "retired"] | None,
        Query(description="Only plans with this status."),
    ] = None,
) -> PlansPublic:
    """Every plan, oldest first, with its status and effective dates."""
    frame = repository.list_plans(session=session)
    if status is not None:
        frame = frame[frame["status"] == status]
    plans = []
    for row in frame.to_dict("records"):
        info = repository.get_plan(int(row["id"]), session=session)
        plans.append(
            PlanPublic(
                id=int(row["id"]),
                name=row["name"],
                status=row["status"],
                created_at=row["created_at"],
                effective_from=_nat(row["effective_from"]),
                effective_to=_nat(row["effective_to"]),
                n_grids=int(row["n_grids"]),
                households=int(row["households"]),
                parameters=dict(row["parameters"] or {}),
                metrics=info.metrics,
            )
        )
    return PlansPublic(plans=plans)


@router.get(
    "/plans/active",
    response_model=PlanPublic,
    tags=["plans"],
    summary="The plan in force at a moment",
    operation_id="get_active_plan",
    responses={
        404: {"model": ErrorPublic, "description": "No plan was in force then."},
        **_ERRORS,
    },
)
def get_active_plan(
    session: SessionDep,
    key: PlanReader,
    at: Annotated[
        datetime | None,
        Query(
            description=(
                "ISO 8601 date or date-time (naive = UTC), e.g. 2025-06-01; "
                "default now."
            )
        ),
    ] = None,
) -> PlanPublic:
    """Which plan was (or is) in force at `at`: "who was responsible on date D"."""
    plan_id = repository.active_plan_id(session=session, at=at)
    return _plan_public(session, plan_id)


@router.get(
    "/plans/{plan_id}",
    response_model=PlanPublic,
    tags=["plans"],
    summary="One grid plan",
    operation_id="get_plan",
    responses={**_NOT_FOUND, **_ERRORS},
)
def get_plan(session: SessionDep, key: PlanReader, plan_id: int) -> PlanPublic:
    """A plan's status, dates, grid count, households, parameters and metrics."""
    return _plan_public(session, _checked_id(plan_id, "grid plan"))


@router.get(
    "/plans/{plan_id}/grids",
    response_model=GridCollection,
    response_class=GeoJSONResponse,
    tags=["plans"],
    summary="The grids of a plan as GeoJSON",
    operation_id="list_plan_grids",
    responses={
        200: {"content": {GEOJSON_MEDIA_TYPE: {}}},
        **_NOT_FOUND,
        **_ERRORS,
    },
)
def list_plan_grids(
    request: Request,
    session: SessionDep,
    key: PlanReader,
    plan_id: int,
    bbox: BBoxQuery = None,
    community: Annotated[
        CommunityCode | None, Query(description="Only grids of this community.")
    ] = None,
    limit: LimitQuery = 1000,
    offset: OffsetQuery = 0,
) -> GeoJSONResponse:
    """A page of the plan's grids, ordered by grid code, as a GeoJSON
    FeatureCollection (EPSG:4490 lon/lat): grid_code, community_code, households,
    n_blocks, flags (why a grid breaks a rule; empty when it does not),
    worker_id and the partition's extra columns. Follow the `next` link for more.
    """
    pid = _checked_id(plan_id, "grid plan")
    box: tuple[float, float, float, float] | None = bbox  # type: ignore[assignment]
    page = repository.load_plan_grids(
        pid, session=session, bbox=box, community=community, limit=limit, offset=offset
    )
    matched = repository.count_plan_grids(
        pid, session=session, bbox=box, community=community
    )
    links = page_links(
        request, offset=offset, limit=limit, returned=len(page), matched=matched
    )
    body = feature_collection(
        page, id_col="grid_code", number_matched=matched, links=links
    )
    return GeoJSONResponse(body)


@router.get(
    "/plans/{plan_id}/diagnostics",
    response_model=PlanDiagnosticsPublic,
    tags=["plans"],
    summary="Per-community diagnostics of a plan",
    operation_id="get_plan_diagnostics",
    responses={**_NOT_FOUND, **_ERRORS},
)
def get_plan_diagnostics(
    session: SessionDep,
    key: PlanReader,
    plan_id: int,
    status: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Only communities with this status (ok, split, infeasible).",
        ),
    ] = None,
) -> PlanDiagnosticsPublic:
    """Feasibility per community as the partition recorded it: households, the
    k range, status, reasons an infeasible community cannot obey the rules,
    notes, violations, split blocks, islands and choke points.
    """
    info = repository.get_plan(_checked_id(plan_id, "grid plan"), session=session)
    frame = info.diagnostics
    if status is not None and "status" in frame.columns:
        frame = frame[frame["status"] == status]
    elif status is not None:
        frame = frame.iloc[0:0]
    records = [
        {k: _nat(v) if not isinstance(v, list | dict) else v for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    return PlanDiagnosticsPublic(plan_id=info.id, communities=records)


@router.post(
    "/plans/{plan_id}/activate",
    response_model=PlanActivated,
    tags=["plans"],
    summary="Put a draft plan in force",
    operation_id="activate_plan",
    responses={
        **_NOT_FOUND,
        409: {
            "model": ErrorPublic,
            "description": (
                "The plan is not a draft, or effective_from lies before the start "
                "of the plan in force."
            ),
        },
        **_ERRORS,
    },
)
def activate_plan(
    session: SessionDep,
    key: PlanWriter,
    plan_id: int,
    body: Annotated[PlanActivate | None, Body()] = None,
) -> PlanActivated:
    """Activate a **draft** plan from `effective_from` (default now). The plan in
    force until then is retired with `effective_to` = that moment; old plans stay
    readable (`GET /v1/plans/active?at=` answers for any date).
    """
    plan_id = _checked_id(plan_id, "grid plan")
    start = body.effective_from if body is not None else None
    repository.get_plan(plan_id, session=session)  # 404 before anything else
    before = repository.list_plans(session=session)
    current = before.loc[before["status"] == "active", "id"].tolist()
    repository.activate_plan(plan_id, session=session, effective_from=start)
    public = _plan_public(session, plan_id)
    retired = int(current[0]) if current and int(current[0]) != plan_id else None
    return PlanActivated(**public.model_dump(), retired_plan_id=retired)
