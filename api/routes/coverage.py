"""Coverage QA of a stored plan: ``GET /v1/plans/{id}/coverage``.

Runs :func:`spatialgrid.coverage.find_coverage_issues` on the grids of the plan
and the stored city (communities, blocks, buildings, compounds, POIs, door
plates, streets): gaps split into slivers and unassigned territory, overlaps,
grids crossing their community, invalid geometries, and what falls through
(households, shops, addresses). The plan is checked against *every* stored
community, since a plan in force must cover the whole city. Answers the JSON
summary and, on request, report layers as GeoJSON.

Planners and operators may call it (:attr:`Permission.CHECK_COVERAGE`).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, Field

from api.deps import Permission, SessionDep, require_permission
from api.geojson import feature_collection
from api.schemas import ErrorPublic, ValidationErrorPublic
from spatialgrid.coverage import REPORT_LAYERS, find_coverage_issues
from spatialgrid.db import repository
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.errors import NotFoundError

if TYPE_CHECKING:
    import geopandas as gpd

router = APIRouter(prefix="/v1", tags=["coverage"])

CoverageChecker = Annotated[
    ApiKeyInfo, Depends(require_permission(Permission.CHECK_COVERAGE))
]

_MAX_ID = 2**63 - 1
#: Feature id column of each report layer.
_ID_COLUMNS = {
    "gaps": "gap_id",
    "overlaps": "overlap_id",
    "crossings": "grid_code",
    "invalid": None,
    "invalid_edges": "grid_code",
    "uncovered_points": None,
    "multi_covered": None,
    "grids": "grid_code",
}


class CoveragePublic(BaseModel):
    """Coverage report of a plan."""

    plan_id: int
    summary: dict[str, Any] = Field(
        description=(
            "clean, grids, communities, gaps / slivers / unassigned / overlaps "
            "(count, area_m2, households, shops, addresses...), crossings, invalid, "
            "uncovered and multi-covered points, sliver_width_m, working_crs."
        )
    )
    layers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Requested report layers as GeoJSON FeatureCollections.",
    )


def parse_layers(value: str | None) -> list[str]:
    """Parse ``gaps,overlaps`` (or ``all``) into report layer names; ValueError."""
    if value is None or not value.strip():
        return []
    names = [part.strip() for part in value.split(",") if part.strip()]
    if "all" in names:
        return list(REPORT_LAYERS)
    unknown = [n for n in names if n not in REPORT_LAYERS]
    if unknown:
        msg = (
            f"unknown report layer(s) {unknown}; choose from "
            f"{', '.join(REPORT_LAYERS)} or 'all'"
        )
        raise ValueError(msg)
    return list(dict.fromkeys(names))


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@router.get(
    "/plans/{plan_id}/coverage",
    response_model=CoveragePublic,
    summary="Coverage QA of a plan: gaps, slivers, overlaps, what falls through",
    operation_id="check_plan_coverage",
    responses={
        401: {"model": ErrorPublic, "description": "Missing or unknown API key."},
        403: {"model": ErrorPublic, "description": "Not a planner or operator."},
        404: {"model": ErrorPublic, "description": "No such plan, or no city."},
        422: {"model": ValidationErrorPublic, "description": "Invalid parameters."},
        503: {"model": ErrorPublic, "description": "The database is unreachable."},
    },
)
def check_plan_coverage(
    session: SessionDep,
    key: CoverageChecker,
    plan_id: int,
    sliver_width_m: Annotated[
        float,
        Query(
            gt=0,
            le=1000,
            description="Gaps narrower than this (metres) are slivers.",
        ),
    ] = 2.0,
    layers: Annotated[
        str | None,
        Query(
            max_length=300,
            description=(
                "Report layers to return as GeoJSON, comma-separated: "
                f"{', '.join(REPORT_LAYERS)}, or `all`. Default: the summary only."
            ),
            examples=["gaps,overlaps"],
        ),
        AfterValidator(parse_layers),
    ] = None,
) -> Response:
    """Check that the plan's grids tile every stored community with no gap and no
    overlap, and count the households, shops and door plates that fall through.
    """
    # layers arrives parsed: AfterValidator turned the text into a list.
    wanted: list[str] = layers or []  # type: ignore[assignment]
    if not 1 <= plan_id <= _MAX_ID:
        msg = f"grid plan {plan_id} does not exist; ids are positive whole numbers"
        raise NotFoundError(msg)
    grids = repository.load_plan_grids(plan_id, session=session)
    city = repository.load_city(session=session)

    def stored(layer: str) -> gpd.GeoDataFrame | None:
        frame: gpd.GeoDataFrame = getattr(city, layer)
        return frame if len(frame) else None

    report = find_coverage_issues(
        grids,
        city.communities,
        blocks=stored("blocks"),
        buildings=stored("buildings"),
        compounds=stored("compounds"),
        pois=stored("pois"),
        addresses=stored("addresses"),
        streets=stored("streets"),
        sliver_width_m=sliver_width_m,
    )
    summary = json.dumps(
        _finite(report.summary), ensure_ascii=False, default=str, allow_nan=False
    )
    parts = [
        f'"{name}":'
        + feature_collection(getattr(report, name), id_col=_ID_COLUMNS[name])
        for name in wanted
    ]
    body = (
        f'{{"plan_id":{int(plan_id)},"summary":{summary},'
        f'"layers":{{{",".join(parts)}}}}}'
    )
    return Response(content=body, media_type="application/json")
