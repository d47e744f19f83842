"""Dynamic adjustment of grid plans: rebalance, planner edits, hand-drawn uploads, diffs.

- ``POST /v1/plans/{id}/rebalance`` (planner) repairs a plan against the stored
  city's current households with minimal change (:func:`spatialgrid.rebalance.
  rebalance_plan`) and stores the result as a new **draft** plan.
- ``POST /v1/plans/{id}/edits`` (planner) applies move / merge / split operations
  (:func:`spatialgrid.edits.apply_edits`), stores a draft, returns its violations.
- ``POST /v1/plans/upload`` (planner, multipart) matches a hand-drawn plan
  (GeoPackage, GeoJSON or a zipped Shapefile) to the blocks
  (:func:`spatialgrid.upload.match_drawn_plan`), stores a draft, returns violations.
- ``GET /v1/plans/{a}/diff/{b}`` (plan readers) compares two plans: JSON summary,
  per-grid rows, moves and a GeoJSON map layer; ``?format=geojson`` returns the
  layer alone.

New grids never reuse a code of any stored plan. Drafts are activated with
``POST /v1/plans/{id}/activate``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Permission, SessionDep, require_permission
from api.geojson import GeoJSONResponse, feature_collection
from api.schemas import ErrorPublic, ValidationErrorPublic
from spatialgrid.db import repository
from spatialgrid.db.plans_extra import (
    ever_used_grid_codes,
    load_diff_layers,
    load_plan,
    store_draft_plan,
)
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.errors import DataFormatError, InputError

router = APIRouter(prefix="/v1", tags=["plan adjustment"])

PlanReader = Annotated[ApiKeyInfo, Depends(require_permission(Permission.READ_PLANS))]
PlanWriter = Annotated[ApiKeyInfo, Depends(require_permission(Permission.WRITE_PLANS))]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing, unknown or revoked API key."},
    403: {"model": ErrorPublic, "description": "The key's role may not do this."},
    404: {"model": ErrorPublic, "description": "No plan has that id (or no city)."},
    422: {"model": ValidationErrorPublic, "description": "Invalid parameters."},
    503: {"model": ErrorPublic, "description": "The database is unreachable."},
}
_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
_UPLOAD_SUFFIXES = (".gpkg", ".geojson", ".json", ".zip", ".shp")


# --------------------------------------------------------------------- models


class Bounds(BaseModel):
    """Households per grid and the code scheme of new grids."""

    model_config = ConfigDict(extra="forbid")

    min_households: int = Field(400, ge=1, le=100_000)
    max_households: int = Field(500, ge=1, le=100_000)
    code_scheme: Literal["cjt213", "db11"] = "cjt213"
    name: str | None = Field(None, max_length=200, description="Name of the draft.")


class RebalanceCreate(Bounds):
    """How to rebalance: locked grids, bounds, whether to repair old flaws too."""

    locked: list[str] = Field(default_factory=list, description="Grid codes to keep.")
    repair_all: bool = Field(
        False, description="Also repair grids that broke the bounds before the change."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    exhaustive_seconds: float = Field(
        0.0,
        ge=0,
        le=30,
        description="Also solve each changed community whole and exactly for up "
        "to this many seconds (0: the fast repair alone, ~2 s per community).",
    )


class EditOperation(BaseModel):
    """One planner edit (see :func:`spatialgrid.edits.apply_edits`)."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["move", "merge", "split"]
    blocks: list[str] | None = Field(None, description="move/split: block or part ids.")
    to: str | None = Field(None, description="move: target grid code, or 'new'.")
    grids: list[str] | None = Field(None, description="merge: grid codes.")
    into: str | None = Field(None, description="merge: code to keep.")
    grid: str | None = Field(None, description="split: grid code to split.")


class EditsCreate(Bounds):
    """Edit operations applied in order to a copy of the plan."""

    edits: list[EditOperation] = Field(min_length=1, max_length=1000)
    locked: list[str] = Field(default_factory=list)


class Violation(BaseModel):
    """A broken rule with the grids and blocks involved."""

    kind: str
    grid_codes: list[str]
    block_ids: list[str]
    households: int | None = None
    detail: str


class DraftPublic(BaseModel):
    """The draft plan a change produced, what changed and what is still wrong."""

    plan_id: int = Field(description="Id of the new draft plan.")
    source_plan_id: int | None = None
    summary: dict[str, Any]
    violations: list[Violation] = Field(default_factory=list)
    communities: list[dict[str, Any]] = Field(default_factory=list)


def _violations(frame: pd.DataFrame) -> list[Violation]:
    out = []
    for row in frame.itertuples(index=False):
        h = row.households
        out.append(
            Violation(
                kind=str(row.kind),
                grid_codes=[c for c in str(row.grid_codes).split(",") if c],
                block_ids=[b for b in str(row.block_ids).split(",") if b],
                households=None if pd.isna(h) else int(h),
                detail=str(row.detail),
            )
        )
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", force_ascii=False))


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(summary, default=str))


# --------------------------------------------------------------------- routes


@router.post(
    "/plans/{plan_id}/rebalance",
    response_model=DraftPublic,
    status_code=201,
    summary="Rebalance a plan after households changed (new draft)",
    operation_id="rebalance_plan",
    responses=_ERRORS,
)
def rebalance(
    session: SessionDep,
    key: PlanWriter,
    plan_id: int,
    body: RebalanceCreate | None = None,
) -> DraftPublic:
    """Repair the plan against the stored city's **current** blocks: grids pushed
    outside the bounds by changed households, new or removed blocks are repaired
    with as few households moved and grids touched as possible. Locked grids and
    untouched grids stay exactly as they are; new grids get never-used codes.
    """
    from spatialgrid.rebalance import rebalance_plan

    opts = body or RebalanceCreate()
    grids, assignments = load_plan(plan_id, session=session)
    city = repository.load_city(session=session)
    result = rebalance_plan(
        city.blocks,
        grids,
        assignments,
        buildings=city.buildings if len(city.buildings) else None,
        locked=opts.locked,
        used_codes=ever_used_grid_codes(session=session),
        min_households=opts.min_households,
        max_households=opts.max_households,
        code_scheme=opts.code_scheme,
        repair_all=opts.repair_all,
        seed=opts.seed,
        exhaustive_seconds=opts.exhaustive_seconds,
    )
    summary = _jsonable(result.summary)
    new_id = store_draft_plan(
        result.grids,
        result.assignments,
        session=session,
        name=opts.name or f"rebalance of plan {plan_id}",
        parameters={"rebalanced_from": plan_id, **opts.model_dump(exclude={"name"})},
        metrics=summary,
    )
    flagged = result.grids[result.grids["flags"].astype(str) != ""]
    violations = [
        Violation(
            kind=str(f).split(":")[0],
            grid_codes=[str(code)],
            block_ids=[],
            households=int(h),
            detail=str(f),
        )
        for code, h, f in zip(
            flagged["grid_code"], flagged["households"], flagged["flags"], strict=True
        )
    ]
    return DraftPublic(
        plan_id=new_id,
        source_plan_id=plan_id,
        summary=summary,
        violations=violations,
        communities=_records(result.communities),
    )


@router.post(
    "/plans/{plan_id}/edits",
    response_model=DraftPublic,
    status_code=201,
    summary="Apply planner edits (move, merge, split) as a new draft",
    operation_id="edit_plan",
    responses=_ERRORS,
)
def edit(
    session: SessionDep, key: PlanWriter, plan_id: int, body: EditsCreate
) -> DraftPublic:
    """Apply the operations in order to a copy of the plan, store it as a draft and
    report every violation of the result (bounds, contiguity, nesting, gaps and
    overlaps) with the grids and blocks involved.
    """
    from spatialgrid.edits import apply_edits

    grids, assignments = load_plan(plan_id, session=session)
    blocks = repository.load_layer("blocks", session=session)
    result = apply_edits(
        blocks,
        grids,
        assignments,
        [op.model_dump(exclude_none=True) for op in body.edits],
        locked=body.locked,
        used_codes=ever_used_grid_codes(session=session),
        min_households=body.min_households,
        max_households=body.max_households,
        code_scheme=body.code_scheme,
    )
    new_id = store_draft_plan(
        result.grids,
        result.assignments,
        session=session,
        name=body.name or f"edit of plan {plan_id}",
        parameters={"edited_from": plan_id, "edits": len(body.edits)},
        metrics=_jsonable(result.summary),
    )
    return DraftPublic(
        plan_id=new_id,
        source_plan_id=plan_id,
        summary=_jsonable(result.summary),
        violations=_violations(result.violations),
    )


@router.post(
    "/plans/upload",
    response_model=DraftPublic,
    status_code=201,
    summary="Upload a hand-drawn plan (GPKG, GeoJSON or zipped Shapefile)",
    operation_id="upload_plan",
    responses={
        400: {"model": ErrorPublic, "description": "The file cannot be read."},
        **_ERRORS,
    },
)
def upload(
    session: SessionDep,
    key: PlanWriter,
    file: Annotated[
        UploadFile, File(description="Grid polygons drawn in another GIS.")
    ],
    layer: Annotated[str | None, Form()] = None,
    code_col: Annotated[str | None, Form()] = None,
    min_households: Annotated[int, Form(ge=1, le=100_000)] = 400,
    max_households: Annotated[int, Form(ge=1, le=100_000)] = 500,
    code_scheme: Annotated[Literal["cjt213", "db11"], Form()] = "cjt213",
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> DraftPublic:
    """Match the drawn polygons to the stored blocks (each block to the polygon
    covering most of it), store the matched plan as a draft and report what does
    not fit: blocks cut by a drawn line, gaps, overlaps, bad codes, bounds,
    contiguity and nesting.
    """
    from spatialgrid.upload import match_drawn_plan, read_drawn_plan

    filename = file.filename or "upload"
    suffix = FilePath(filename).suffix.lower()
    if suffix not in _UPLOAD_SUFFIXES:
        msg = (
            f"file {filename!r}: use a GeoPackage (.gpkg), GeoJSON (.geojson) or a "
            "zipped Shapefile (.zip with .shp, .shx, .dbf, .prj)"
        )
        raise InputError(msg)
    data = file.file.read(_MAX_UPLOAD_BYTES + 1)
    if len(data) > _MAX_UPLOAD_BYTES:
        msg = f"file {filename!r} is larger than {_MAX_UPLOAD_BYTES // 2**20} MB"
        raise InputError(msg)
    with tempfile.TemporaryDirectory(prefix="spatialgrid-upload-") as tmp:
        path = FilePath(tmp) / f"drawn{suffix}"
        path.write_bytes(data)
        try:
            drawn = read_drawn_plan(path, layer=layer)
        except FileNotFoundError as err:  # pragma: no cover - written just above
            raise DataFormatError(str(err)) from err
    blocks = repository.load_layer("blocks", session=session)
    result = match_drawn_plan(
        drawn,
        blocks,
        code_col=code_col,
        min_households=min_households,
        max_households=max_households,
        code_scheme=code_scheme,
        used_codes=ever_used_grid_codes(session=session),
    )
    grids = result.grids.drop(columns=["drawn_id"])
    assignments = result.assignments.drop(columns=["cover_share"])
    summary = _jsonable(result.summary)
    new_id = store_draft_plan(
        grids,
        assignments,
        session=session,
        name=name or f"upload {filename}",
        parameters={"uploaded": filename},
        metrics=summary,
    )
    return DraftPublic(
        plan_id=new_id, summary=summary, violations=_violations(result.violations)
    )


@router.get(
    "/plans/{plan_id}/diff/{other_id}",
    summary="Differences between two plans (JSON with a GeoJSON layer)",
    operation_id="diff_plans",
    responses={
        200: {
            "content": {"application/geo+json": {}},
            "description": "JSON diff, or the GeoJSON layer with ?format=geojson.",
        },
        **_ERRORS,
    },
)
def plan_diff(
    session: SessionDep,
    key: PlanReader,
    plan_id: int,
    other_id: int,
    output: Annotated[Literal["json", "geojson"], Query(alias="format")] = "json",
    match: Annotated[
        bool, Query(description="Relabel the second plan's codes to the first's.")
    ] = False,
) -> Any:
    """Grids added, removed and changed between plan `plan_id` (older) and
    `other_id` (newer); households and blocks moved; codes retired and created.
    The map layer holds the newer plan's grids, the removed grids and the moved
    blocks (`kind`), coordinates in EPSG:4490.
    """
    from spatialgrid.plandiff import diff_plans, relabel_to_match

    og, oa = load_plan(plan_id, session=session)
    ng, na = load_plan(other_id, session=session)
    if match:
        ng, na = relabel_to_match(oa, ng, na)
    blocks, buildings = load_diff_layers(oa, na, session=session)
    result = diff_plans(
        og, oa, ng, na, blocks=blocks, buildings=buildings if len(buildings) else None
    )
    layer = result.layer.copy()
    layer_text = feature_collection(layer, id_col=None)
    if output == "geojson":
        return GeoJSONResponse(layer_text)
    body = {
        "old_plan_id": plan_id,
        "new_plan_id": other_id,
        "summary": _jsonable(result.summary),
        "grids": _records(result.grids),
        "moves": _records(result.moves),
        "layer": json.loads(layer_text),
    }
    return body
