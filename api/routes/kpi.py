"""Command-centre KPIs: ``GET /v1/kpi?by=grid|community|subdistrict|month``.

Closure rate (结案率 = closed ÷ due), on-time closure rate (按期结案率 = closed
with every stage within its limit ÷ due), open and overdue cases, rework rate and
average handling time (registration to closure, hours), per group, from the
stored incidents and their transition logs (:mod:`spatialgrid.kpi`). Incidents
are grouped by the grid, community and subdistrict assigned at report time, or by
the month of registration. ``format=csv`` answers ``text/csv``. No reporter data
enters these tables. Needs :attr:`Permission.READ_INCIDENTS`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.deps import Permission, SessionDep, require_permission
from api.routes.incidents import calendar_of, categories_of, settings_of, split_list
from api.schemas import ErrorPublic, ValidationErrorPublic
from spatialgrid.db import incidents as inc_repo
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.kpi import KPI_COLUMNS, compute_kpis, kpis_to_csv, kpis_to_records

router = APIRouter(prefix="/v1", tags=["kpi"])

KpiReader = Annotated[
    ApiKeyInfo, Depends(require_permission(Permission.READ_INCIDENTS))
]
Level = Literal["grid", "community", "subdistrict", "district", "month", "category"]


class KpisPublic(BaseModel):
    """KPI rows of one grouping."""

    by: str | None
    as_of: datetime
    working_hours: bool = Field(description="Limits counted in working minutes.")
    columns: list[str]
    kpis: list[dict[str, Any]] = Field(
        description=f"One row per group: the group column(s) then {list(KPI_COLUMNS)}."
    )


@router.get(
    "/kpi",
    response_model=KpisPublic,
    summary="Closure rate, on-time rate, overdue, rework, handling time",
    operation_id="get_kpis",
    responses={
        200: {"content": {"text/csv": {}}},
        401: {"model": ErrorPublic, "description": "Missing or unknown API key."},
        403: {"model": ErrorPublic, "description": "The role may not read incidents."},
        422: {"model": ValidationErrorPublic, "description": "Invalid parameters."},
    },
)
def get_kpis(
    request: Request,
    session: SessionDep,
    key: KpiReader,
    by: Annotated[
        Level | None,
        Query(description="Group by; omit for one overall row."),
    ] = None,
    format: Annotated[
        Literal["json", "csv"], Query(description="json (default) or csv.")
    ] = "json",
    start: Annotated[
        datetime | None, Query(description="Only incidents reported from (ISO 8601).")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="Only incidents reported before.")
    ] = None,
    category: Annotated[
        str | None,
        Query(max_length=1000, description="Category codes, comma-separated."),
    ] = None,
    as_of: Annotated[
        datetime | None,
        Query(description="Evaluate overdue and due at this moment (default now)."),
    ] = None,
) -> Any:
    """KPIs as JSON (or CSV with `format=csv`)."""
    settings = settings_of(request)
    moment = as_of or datetime.now(UTC)
    summary = inc_repo.summarize_stored_incidents(
        session=session,
        categories=categories_of(settings),
        as_of=moment,
        calendar=calendar_of(settings),
        timezone=settings.incident_timezone,
        start=start,
        end=end,
        category_codes=split_list(category),
    )
    table = compute_kpis(summary, by=by)
    if format == "csv":
        name = f"kpi_{by or 'overall'}.csv"
        return Response(
            kpis_to_csv(table),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return KpisPublic(
        by=by,
        as_of=moment,
        working_hours=settings.incident_working_hours,
        columns=[str(c) for c in table.columns],
        kpis=kpis_to_records(table),
    )
