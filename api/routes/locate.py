"""Point and address lookups: which grid, community and worker answers for a place.

- ``GET /v1/locate?lon=&lat=&crs=`` — the grid (code, responsible worker's name
  and employee number), community and subdistrict of a point, its distance to the
  grid boundary, the other grids within ``tolerance_m`` (a point near a boundary
  may belong to either side), and, for a point outside every grid, the nearest
  grid with its distance and ``outside_all_grids: true``. ``at=`` answers from
  the plan in force at that date.
- ``POST /v1/locate?crs=`` — the same for a batch: a GeoJSON FeatureCollection of
  points or a CSV with ``lon``/``lat`` columns, up to :data:`MAX_BATCH_POINTS`
  points; rows come back in order as JSON or CSV (``format=`` or ``Accept``).
- ``GET /v1/geocode?q=`` — a Chinese address → door plate (or building, compound,
  road, community), with ``level``, ``confidence`` and the grid; ambiguous input
  answers ``status: "ambiguous"`` with its candidates instead of a guess.
- ``GET /v1/reverse?lon=&lat=&crs=`` — the nearest door plate and its distance.
- ``GET /v1/point/{srid}/{x},{y}`` — MapIt style: every area containing the
  point (grids, community, subdistrict). ``srid`` is an EPSG code (4490, 4326,
  4546, ...) or ``gcj02`` / ``bd09``.

The coordinate system is always explicit (``crs``: ``wgs84`` for GPS, ``gcj02`` for
Amap/Tencent, ``bd09`` for Baidu, ``cgcs2000`` or ``EPSG:n``): the offsets between
them are hundreds of metres, more than a grid is wide. Swapped or out-of-range
coordinates answer 422 with a message that suggests the swap.

Indexes are cached per process (:mod:`api.locate_cache`). Needs
:attr:`Permission.LOCATE` (every role, including ``consumer``).

The single-point routes are built for hundreds of requests per second per
process (``bench/locate_http.py``): they are ``async`` and, once the cache is
warm, run without a worker thread, a database session or pandas; the key is
checked against the app's key cache by :func:`authorize` instead of a chain of
dependencies, and ``GET /v1/locate`` validates its query with one pydantic model
(:class:`LocateQuery`) instead of FastAPI's per-parameter machinery, which cost
more than the lookup itself. Anything that needs the database (a cold cache,
``at=``, geocoding) runs in a worker thread.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import (
    Permission,
    get_api_key,
    key_digest,
    presented_key,
    request_credentials,
    roles_with,
)
from api.locate_cache import (
    MAX_TOLERANCE_M,
    CityEntry,
    LocateCache,
    PlanEntry,
    get_locate_cache,
    locate_cache_of,
)
from api.schemas import ErrorPublic, ValidationErrorPublic
from spatialgrid.coords import from_storage, normalize_crs, to_storage
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.errors import (
    CoordinateRangeError,
    DataFormatError,
    InputError,
    NotFoundError,
)
from spatialgrid.locate import STATUSES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from spatialgrid.locate import LocateResult

router = APIRouter(prefix="/v1", tags=["locate"])

QueryT = TypeVar("QueryT", bound=BaseModel)

#: Roles that may locate (:data:`api.deps.ROLE_PERMISSIONS`; the planner always).
_LOCATE_ROLES = frozenset(roles_with(Permission.LOCATE)) | {"planner"}


def _verify_key(
    request: Request,
    header_key: str | None,
    bearer: HTTPAuthorizationCredentials | None,
) -> ApiKeyInfo:
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory.begin() as session:
        return get_api_key(request, session, header_key, bearer)


async def authorize(request: Request) -> ApiKeyInfo:
    """The request's key, allowed to locate (:attr:`Permission.LOCATE`).

    The same rules and messages as :func:`api.deps.get_api_key`, which it calls
    when the key is not in the app's key cache. A cached key is checked right
    here in the event loop: no dependency resolution, no database session, no
    worker thread — it matters at hundreds of lookups per second. The routes that
    call it directly declare the same OpenAPI security as the other routes.
    """
    header_key, bearer = await request_credentials(request)
    key = presented_key(header_key, bearer)
    info: ApiKeyInfo | None = None
    if key:
        info = request.app.state.key_cache.get(key_digest(key))
    if info is None:
        info = await run_in_threadpool(_verify_key, request, header_key, bearer)
    if info.role not in _LOCATE_ROLES:
        msg = (
            f"API key {info.name!r} has role {info.role!r}; this endpoint needs one "
            f"of: {', '.join(sorted(_LOCATE_ROLES))}"
        )
        raise HTTPException(status_code=403, detail=msg)
    return info


Locator = Annotated[ApiKeyInfo, Depends(authorize)]
CacheDep = Annotated[LocateCache, Depends(get_locate_cache)]
#: OpenAPI security of the routes that call :func:`authorize` themselves.
_SECURITY: dict[str, Any] = {"security": [{"APIKeyHeader": []}, {"HTTPBearer": []}]}

#: Most points one ``POST /v1/locate`` accepts.
MAX_BATCH_POINTS = 200_000
#: Largest request body of a batch (bytes); about 200 bytes per GeoJSON point.
MAX_BATCH_BYTES = 64 * 1024 * 1024
#: Default distance within which other grids are listed as candidates.
DEFAULT_TOLERANCE_M = 20.0

_CRS_HELP = (
    "Coordinate system of the input, always explicit: wgs84 (GPS), gcj02 "
    "(Amap/Tencent), bd09 (Baidu), cgcs2000 (EPSG:4490) or EPSG:n (projected, "
    "metres)."
)
_CRS_REQUIRED = (
    "crs is required: say which coordinate system the point is in — wgs84 (GPS), "
    "gcj02 (Amap/Tencent), bd09 (Baidu), cgcs2000 or EPSG:n. The offsets between "
    "them are hundreds of metres, so spatialgrid never guesses"
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing, unknown or revoked API key."},
    403: {"model": ErrorPublic, "description": "The key's role may not locate."},
    404: {"model": ErrorPublic, "description": "No plan in force (or no city)."},
    422: {
        "model": ValidationErrorPublic,
        "description": "Invalid parameters: unknown crs, swapped or out-of-range "
        "coordinates, empty address.",
    },
    503: {"model": ErrorPublic, "description": "The database is unreachable."},
}

# --------------------------------------------------------------------------- models


class WorkerPublic(BaseModel):
    """The grid worker responsible for a grid (no phone: personal data)."""

    id: int
    name: str | None
    employee_no: str | None


class AreaRef(BaseModel):
    """A community or subdistrict: code and name."""

    code: str
    name: str | None


class GridRef(BaseModel):
    """A grid and its responsible worker."""

    code: str
    worker: WorkerPublic | None


class CandidatePublic(BaseModel):
    """Another grid within the tolerance of the point."""

    grid_code: str
    community_code: str
    distance_m: float = Field(description="0 when the point lies in both grids.")


class NearestPublic(BaseModel):
    """For a point outside every grid: the nearest grid."""

    grid_code: str
    community_code: str
    distance_m: float
    worker: WorkerPublic | None


class LocatePublic(BaseModel):
    """Where a point falls in the plan."""

    plan_id: int
    crs: str = Field(description="Normalised input coordinate system.")
    x: float
    y: float
    lon: float = Field(description="CGCS2000 longitude (EPSG:4490).")
    lat: float = Field(description="CGCS2000 latitude (EPSG:4490).")
    status: Literal["inside", "near_boundary", "outside"]
    inside: bool
    outside_all_grids: bool = Field(
        description="True when the point lies in no grid (see nearest)."
    )
    grid: GridRef | None
    community: AreaRef | None = Field(
        description="Of the grid; for a point outside every grid, the community "
        "polygon containing it, if any (a coverage gap)."
    )
    subdistrict: AreaRef | None
    boundary_distance_m: float | None = Field(
        description="Inside: distance to the grid's boundary. Outside: null."
    )
    tolerance_m: float
    candidates: list[CandidatePublic] = Field(
        description="Other grids within tolerance_m, nearest first."
    )
    nearest: NearestPublic | None


class GeocodeCandidate(BaseModel):
    """One place an ambiguous address may mean."""

    address_id: str | None
    address: str | None
    level: str
    score: float
    lon: float | None
    lat: float | None


class GeocodePublic(BaseModel):
    """An address resolved to a point (or candidates when ambiguous)."""

    query: str
    status: Literal["matched", "partial", "ambiguous"]
    level: str | None = Field(
        description="door | building (matched); compound | road | community "
        "(partial); null when ambiguous."
    )
    confidence: float
    address_id: str | None
    matched_address: str | None
    lon: float | None
    lat: float | None
    crs: str | None = Field(description="The output crs asked for, if any.")
    x: float | None
    y: float | None
    grid: GridRef | None
    community: AreaRef | None
    candidates: list[GeocodeCandidate]
    note: str


class ReversePublic(BaseModel):
    """The door plate nearest a point."""

    address_id: str
    address: str
    kind: str
    distance_m: float
    lon: float
    lat: float


class AreaPublic(BaseModel):
    """One area containing the point."""

    type: Literal["grid", "community", "subdistrict"]
    code: str
    name: str | None = None
    worker: WorkerPublic | None = None


class PointAreasPublic(BaseModel):
    """Every area containing a point (MapIt ``/point``)."""

    srid: str
    x: float
    y: float
    lon: float
    lat: float
    plan_id: int | None
    areas: list[AreaPublic]


# -------------------------------------------------------------------------- helpers


def _json(content: Any, status_code: int = 200) -> Response:
    text = json.dumps(
        content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )
    return Response(text, status_code=status_code, media_type="application/json")


#: Names accepted for ``crs`` besides EPSG codes (see :mod:`spatialgrid.coords`).
_CRS_NAMES = frozenset(
    {
        "wgs84",
        "wgs-84",
        "gps",
        "gcj02",
        "gcj-02",
        "amap",
        "bd09",
        "bd-09",
        "bd09ll",
        "baidu",
        "cgcs2000",
    }
)
_EPSG = re.compile(r"(?:epsg:)?[0-9]{4,6}", re.IGNORECASE)


def _crs(crs: str | None, *, name: str = "crs") -> str:
    """The normalised ``crs``; only names and EPSG codes (no free-form PROJ input).

    Free-form input would reach PROJ's database search, which takes about half a
    second per unknown string: an easy way to tie up the service. Answers, good
    or bad, are remembered.
    """
    if crs is None or not crs.strip():
        raise InputError(_CRS_REQUIRED)
    found = _crs_lookup(crs.strip())
    if found.startswith("!"):
        msg = f"{name}={crs!r} {found[1:]}"
        raise CoordinateRangeError(msg)
    return found


@lru_cache(maxsize=1024)
def _crs_lookup(text: str) -> str:
    """Canonical name of ``text``, or ``"!"`` + why it is refused."""
    if text.lower() not in _CRS_NAMES and not _EPSG.fullmatch(text):
        return (
            "!is not a known coordinate system; use wgs84, gcj02, bd09, cgcs2000 "
            "or an EPSG code such as EPSG:4546"
        )
    try:
        return normalize_crs(int(text) if text.isdigit() else text)
    except CoordinateRangeError:
        return "!is not an EPSG code PROJ knows; use e.g. EPSG:4546 or cgcs2000"


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        msg = f"{name}={value!r} must be a finite number"
        raise CoordinateRangeError(msg)
    return value


def _area(code: Any, names: dict[str, str]) -> dict[str, Any] | None:
    if code is None:
        return None
    return {"code": str(code), "name": names.get(str(code))}


def _point_record(
    result: LocateResult,
    i: int,
    entry: PlanEntry,
    city: CityEntry | None,
    lon: float,
    lat: float,
) -> dict[str, Any]:
    """One located point as the body of ``GET /v1/locate`` (no pandas)."""
    idx = entry.index
    g = int(result.grid[i])
    near = int(result.nearest[i])
    dist = float(result.boundary_distance_m[i])
    dist_r = None if math.isnan(dist) else round(dist, 3)
    c_names = city.community_names if city else {}
    s_names = city.subdistrict_names if city else {}
    a, b = int(result.candidate_ptr[i]), int(result.candidate_ptr[i + 1])
    candidates = [
        {
            "grid_code": str(idx.codes[cg]),
            "community_code": str(idx.community_codes[cg]),
            "distance_m": round(float(cd), 3),
        }
        for cg, cd in zip(
            result.candidate_grid[a:b].tolist(),
            result.candidate_distance_m[a:b].tolist(),
            strict=True,
        )
    ]
    out: dict[str, Any] = {
        "status": STATUSES[int(result.status_code[i])],
        "inside": g >= 0,
        "outside_all_grids": g < 0,
    }
    if g >= 0:
        out["grid"] = {"code": str(idx.codes[g]), "worker": entry.worker(g)}
        out["community"] = _area(idx.community_codes[g], c_names)
        out["subdistrict"] = _area(idx.subdistrict_codes[g], s_names)
        out["boundary_distance_m"] = dist_r
        out["candidates"] = candidates
        out["nearest"] = None
        return out
    community = subdistrict = None
    if city is not None:  # a point in no grid may still lie in a community (a gap)
        for area in city.areas_at(lon, lat):
            ref = {"code": area["code"], "name": area["name"]}
            if area["type"] == "community" and community is None:
                community = ref
            elif area["type"] == "subdistrict" and subdistrict is None:
                subdistrict = ref
    out["grid"] = None
    out["community"] = community
    out["subdistrict"] = subdistrict
    out["boundary_distance_m"] = None
    out["candidates"] = candidates
    out["nearest"] = (
        {
            "grid_code": str(idx.codes[near]),
            "community_code": str(idx.community_codes[near]),
            "distance_m": dist_r,
            "worker": entry.worker(near),
        }
        if near >= 0
        else None
    )
    return out


Snapshot = tuple[PlanEntry, CityEntry | None]


async def _snapshot(
    request: Request, cache: LocateCache, at: datetime | None = None
) -> Snapshot:
    """The cached plan (and city): from memory when warm, else loaded in a thread."""
    factory = request.app.state.session_factory
    snap = cache.snapshot(factory) if at is None else None
    if snap is None:
        snap = await run_in_threadpool(cache.load, factory, at=at)
    return snap


def _locate_one(
    snap: Snapshot,
    x: float,
    y: float,
    crs: str,
    *,
    tolerance_m: float = DEFAULT_TOLERANCE_M,
) -> dict[str, Any]:
    """The body of ``GET /v1/locate`` (CPU only: no I/O, no pandas)."""
    entry, city = snap
    lon_a, lat_a = to_storage(np.array([x]), np.array([y]), crs)
    lon, lat = float(lon_a[0]), float(lat_a[0])
    result = entry.index.locate(lon_a, lat_a, crs="cgcs2000", tolerance_m=tolerance_m)
    body: dict[str, Any] = {
        "plan_id": entry.plan_id,
        "crs": crs,
        "x": x,
        "y": y,
        "lon": round(lon, 8),
        "lat": round(lat, 8),
        "tolerance_m": tolerance_m,
    }
    body.update(_point_record(result, 0, entry, city, lon, lat))
    return body


# --------------------------------------------------------------------------- single

Tolerance = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_TOLERANCE_M,
        description="List other grids within this distance (metres).",
    ),
]
At = Annotated[
    datetime | None,
    Query(
        description="Answer from the plan in force at this date/time (ISO 8601, "
        "e.g. 2024-05-01); default: now."
    ),
]
CrsQuery = Annotated[str | None, Query(description=_CRS_HELP, max_length=64)]


class LocateQuery(BaseModel):
    """The query of ``GET /v1/locate``."""

    model_config = ConfigDict(extra="ignore")

    lon: float = Field(description="Longitude (or easting, EPSG:n).")
    lat: float = Field(description="Latitude (or northing, EPSG:n).")
    crs: str | None = Field(None, max_length=64, description=_CRS_HELP)
    at: datetime | None = Field(
        None,
        description="Answer from the plan in force at this date/time (ISO 8601, "
        "e.g. 2024-05-01); default: now.",
    )
    tolerance_m: float = Field(
        DEFAULT_TOLERANCE_M,
        ge=0,
        le=MAX_TOLERANCE_M,
        description="List other grids within this distance (metres).",
    )


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters of a model's fields (for routes parsing by hand)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        out.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": description,
                "schema": prop,
            }
        )
    return out


def _parse_query(request: Request, model: type[QueryT]) -> QueryT:
    """The request's query as ``model``; a 422 like FastAPI's own when invalid.

    One pydantic validation of a small model costs a few microseconds; FastAPI's
    per-parameter machinery costs a good part of a millisecond per request,
    which matters on the single-point hot path.
    """
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as err:
        errors = [
            {**e, "loc": ("query", *e["loc"])}
            for e in err.errors(include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


@router.get(
    "/locate",
    summary="Grid, community and worker of a point",
    response_model=None,
    responses={200: {"model": LocatePublic}, **_ERRORS},
    openapi_extra={**_SECURITY, "parameters": _query_parameters(LocateQuery)},
)
async def locate_point(request: Request) -> Response:
    """Locate one point: its grid, worker, community, boundary distance, candidates.

    A point outside every grid gets ``outside_all_grids: true``, ``grid: null``
    and ``nearest`` (the nearest grid, its distance and worker). Query:
    ``lon``, ``lat``, ``crs`` (required), ``at``, ``tolerance_m``.
    """
    await authorize(request)
    query = _parse_query(request, LocateQuery)
    name = _crs(query.crs)
    x, y = _finite("lon", query.lon), _finite("lat", query.lat)
    snap = await _snapshot(request, locate_cache_of(request.app), query.at)
    return _json(_locate_one(snap, x, y, name, tolerance_m=query.tolerance_m))


# ---------------------------------------------------------------------------- batch


class _PayloadTooLarge(InputError):
    """Internal: a batch above the limits, answered as 413 by the batch route."""


def _too_many(n: int) -> NoReturn:
    msg = (
        f"the batch holds {n:,} points; one request takes at most "
        f"{MAX_BATCH_POINTS:,}. Split it into several requests, or use "
        "`spatialgrid locate --points FILE` for files of any size"
    )
    raise _PayloadTooLarge(msg)


def _parse_geojson(body: bytes) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        msg = f"the body is not valid JSON ({err}); send a GeoJSON FeatureCollection"
        raise DataFormatError(msg) from err
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        msg = (
            "the JSON body must be a GeoJSON FeatureCollection of Point features "
            '({"type": "FeatureCollection", "features": [...]}); got '
            f"{type(doc).__name__ if not isinstance(doc, dict) else doc.get('type')!r}"
        )
        raise InputError(msg)
    features = doc.get("features")
    if not isinstance(features, list):
        msg = "the FeatureCollection has no 'features' list"
        raise InputError(msg)
    n = len(features)
    if n > MAX_BATCH_POINTS:
        _too_many(n)
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    ids: list[Any] = [None] * n
    for i, feat in enumerate(features):
        if not isinstance(feat, dict):
            msg = f"features[{i}] is not a GeoJSON Feature object"
            raise InputError(msg)
        fid = feat.get("id")
        ids[i] = (
            fid if isinstance(fid, str | int) and not isinstance(fid, bool) else None
        )
        geom = feat.get("geometry")
        if geom is None:
            continue  # a feature without a place: status "invalid"
        coords = geom.get("coordinates") if isinstance(geom, dict) else None
        if (
            not isinstance(geom, dict)
            or geom.get("type") != "Point"
            or not isinstance(coords, list)
            or len(coords) < 2
        ):
            kind = geom.get("type") if isinstance(geom, dict) else type(geom).__name__
            msg = (
                f"features[{i}] has a {kind!r} geometry; the batch takes Point "
                "features with [x, y] coordinates (send polygons' representative "
                "points instead)"
            )
            raise InputError(msg)
        cx, cy = coords[0], coords[1]
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (cx, cy)
        ):
            msg = f"features[{i}] coordinates {coords[:2]!r} are not numbers"
            raise InputError(msg)
        x[i], y[i] = float(cx), float(cy)
    columns: dict[str, Any] = {}
    if any(v is not None for v in ids):
        columns["id"] = pd.array(ids, dtype=object)
    columns["x"], columns["y"] = x, y
    return pd.DataFrame(columns, index=pd.RangeIndex(n)), x, y


def _parse_csv(
    body: bytes, x_col: str, y_col: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        msg = f"the CSV body is not UTF-8 text ({err})"
        raise DataFormatError(msg) from err
    if not text.strip():
        msg = f"the CSV body is empty; send a header line with {x_col},{y_col}"
        raise InputError(msg)
    # Count rows before parsing them all (cheap) so that an oversized batch
    # answers 413 without the work.
    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1) - 1
    if n_lines > MAX_BATCH_POINTS:
        _too_many(n_lines)
    try:
        table = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""]
        )
    except (ValueError, csv.Error, pd.errors.ParserError) as err:
        msg = f"the CSV body cannot be parsed: {err}"
        raise DataFormatError(msg) from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in (x_col, y_col) if c not in table.columns]
    if missing:
        msg = (
            f"the CSV has no column(s) {missing}; it has {list(table.columns)}. "
            "Name the coordinate columns lon,lat or pass x_col=/y_col="
        )
        raise InputError(msg)
    if len(table) > MAX_BATCH_POINTS:
        _too_many(len(table))
    x = pd.to_numeric(table[x_col], errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(table[y_col], errors="coerce").to_numpy(dtype=np.float64)
    bad = (table[x_col].notna() & np.isnan(x)) | (table[y_col].notna() & np.isnan(y))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        msg = (
            f"CSV row {i + 1}: {x_col}={table[x_col].iat[i]!r}, "
            f"{y_col}={table[y_col].iat[i]!r} are not numbers (leave both empty "
            "for a missing point)"
        )
        raise InputError(msg)
    return table, x, y


#: Result columns of a batch row, after the input's own columns.
BATCH_COLUMNS: tuple[str, ...] = (
    "lon",
    "lat",
    "status",
    "outside_all_grids",
    "grid_code",
    "community_code",
    "community_name",
    "subdistrict_code",
    "subdistrict_name",
    "boundary_distance_m",
    "nearest_grid_code",
    "nearest_distance_m",
    "candidate_codes",
    "candidate_distances_m",
    "worker_id",
    "worker_name",
    "worker_employee_no",
)


def _batch_frame(
    table: pd.DataFrame,
    x: np.ndarray,
    y: np.ndarray,
    crs: str,
    entry: PlanEntry,
    city: CityEntry | None,
    tolerance_m: float,
    *,
    as_lists: bool,
) -> pd.DataFrame:
    """Input columns + results, one row per point in input order."""
    finite = np.isfinite(x) & np.isfinite(y)
    lon = np.full(len(x), np.nan)
    lat = np.full(len(x), np.nan)
    if finite.any():
        lon[finite], lat[finite] = to_storage(x[finite], y[finite], crs)
    result = entry.index.locate(lon, lat, crs="cgcs2000", tolerance_m=tolerance_m)
    frame = result.to_frame(attributes=())
    frame = frame.drop(columns=["inside"])
    frame["lon"] = np.round(lon, 8)
    frame["lat"] = np.round(lat, 8)
    frame["outside_all_grids"] = result.grid < 0
    c_names = city.community_names if city else {}
    s_names = city.subdistrict_names if city else {}
    frame["community_name"] = frame["community_code"].map(c_names)
    frame["subdistrict_name"] = frame["subdistrict_code"].map(s_names)
    frame["status"] = frame["status"].astype(str)
    frame["boundary_distance_m"] = frame["boundary_distance_m"].where(result.grid >= 0)
    # the responsible worker: of the grid, or of the nearest grid when outside
    owner = np.where(result.grid >= 0, result.grid, result.nearest)
    workers = [entry.worker(int(g)) for g in owner.tolist()]
    frame["worker_id"] = pd.array(
        [w["id"] if w else None for w in workers], dtype="Int64"
    )
    frame["worker_name"] = [w["name"] if w else None for w in workers]
    frame["worker_employee_no"] = [w["employee_no"] if w else None for w in workers]
    if as_lists:
        counts = np.diff(result.candidate_ptr)
        codes: list[list[str]] = [[] for _ in range(len(frame))]
        dists: list[list[float]] = [[] for _ in range(len(frame))]
        for i in np.flatnonzero(counts).tolist():
            a, b = int(result.candidate_ptr[i]), int(result.candidate_ptr[i + 1])
            codes[i] = [str(c) for c in entry.index.codes[result.candidate_grid[a:b]]]
            dists[i] = [round(float(d), 3) for d in result.candidate_distance_m[a:b]]
        frame["candidate_codes"] = codes
        frame["candidate_distances_m"] = dists
    frame = frame[[c for c in BATCH_COLUMNS if c in frame.columns]]
    kept = table.reset_index(drop=True)
    kept = kept.drop(columns=[c for c in frame.columns if c in kept.columns])
    return pd.concat([kept, frame.reset_index(drop=True)], axis=1)


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def _run_batch(
    body: bytes,
    content_type: str,
    snap: Snapshot,
    crs: str,
    tolerance_m: float,
    x_col: str,
    y_col: str,
    as_csv: bool,
) -> Response:
    if "csv" in content_type or "text/plain" in content_type:
        table, x, y = _parse_csv(body, x_col, y_col)
    elif "json" in content_type or not content_type:
        table, x, y = _parse_geojson(body)
    else:
        msg = (
            f"Content-Type {content_type!r} is not accepted; send "
            "application/geo+json (a FeatureCollection of points) or text/csv"
        )
        raise InputError(msg)
    entry, city = snap
    frame = _batch_frame(
        table, x, y, crs, entry, city, tolerance_m, as_lists=not as_csv
    )
    headers = {"X-Plan-Id": str(entry.plan_id), "X-Point-Count": str(len(frame))}
    if as_csv:
        text = frame.to_csv(index=False, lineterminator="\n")
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)
    rows = frame.to_json(orient="records", force_ascii=False, double_precision=10)
    status_counts = dict.fromkeys(STATUSES, 0)
    for key, value in frame["status"].value_counts().items():
        status_counts[str(key)] = int(value)
    head = json.dumps(
        {
            "plan_id": entry.plan_id,
            "crs": crs,
            "tolerance_m": tolerance_m,
            "count": len(frame),
            "status_counts": status_counts,
        },
        ensure_ascii=False,
    )
    text = head[:-1] + ',"rows":' + rows + "}"
    return Response(text, media_type="application/json", headers=headers)


@router.post(
    "/locate",
    summary="Locate a batch of points (GeoJSON or CSV)",
    response_model=None,
    responses={
        200: {
            "description": "One row per point, in input order: the input columns "
            "(CSV) or id/x/y (GeoJSON), then lon, lat (EPSG:4490), status, "
            "outside_all_grids, grid_code, community_code/name, "
            "subdistrict_code/name, boundary_distance_m, nearest_grid_code, "
            "nearest_distance_m, candidate_codes, candidate_distances_m (lists in "
            "JSON, ';'-joined in CSV), worker_id, worker_name, worker_employee_no "
            "(of the grid, or of the nearest grid when outside).",
            "content": {"application/json": {}, "text/csv": {}},
        },
        413: {"model": ErrorPublic, "description": "More points than one batch takes."},
        **_ERRORS,
    },
    openapi_extra={
        **_SECURITY,
        "requestBody": {
            "required": True,
            "content": {
                "application/geo+json": {
                    "schema": {"type": "object"},
                    "example": {
                        "type": "FeatureCollection",
                        "features": [
                            {
                                "type": "Feature",
                                "id": "p1",
                                "geometry": {
                                    "type": "Point",
                                    "coordinates": [112.19, 30.35],
                                },
                                "properties": {},
                            }
                        ],
                    },
                },
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "id,lon,lat\np1,112.19,30.35\n",
                },
            },
        },
    },
)
async def locate_batch(
    request: Request,
    crs: CrsQuery = None,
    at: At = None,
    tolerance_m: Tolerance = DEFAULT_TOLERANCE_M,
    x_col: Annotated[str, Query(max_length=100, description="CSV x column.")] = "lon",
    y_col: Annotated[str, Query(max_length=100, description="CSV y column.")] = "lat",
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="Response format; default from Accept (JSON)."),
    ] = None,
) -> Response:
    """Locate up to 200,000 points in one request; rows come back in order."""
    await authorize(request)
    cache = locate_cache_of(request.app)
    name = _crs(crs)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
        return _json(
            {
                "detail": f"the body has {int(declared):,} bytes; one batch takes "
                f"at most {MAX_BATCH_BYTES:,} bytes ({MAX_BATCH_POINTS:,} points). "
                "Split it into several requests",
                "error": "PayloadTooLarge",
            },
            413,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            return _json(
                {
                    "detail": f"the body exceeds {MAX_BATCH_BYTES:,} bytes; split "
                    "it into several requests",
                    "error": "PayloadTooLarge",
                },
                413,
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "").lower()
    snap = await _snapshot(request, cache, at)
    try:
        return await run_in_threadpool(
            _run_batch,
            body,
            content_type,
            snap,
            name,
            tolerance_m,
            x_col,
            y_col,
            _wants_csv(request, format),
        )
    except _PayloadTooLarge as err:
        return _json({"detail": str(err), "error": "PayloadTooLarge"}, 413)


# -------------------------------------------------------------------------- geocode


def _grid_of(
    cache: LocateCache, factory: sessionmaker[Session], lon: float, lat: float
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Grid and community of a CGCS2000 point in the plan in force (None if none)."""
    try:
        entry, city = cache.load(factory)
    except NotFoundError:
        return None, None
    res = entry.index.locate([lon], [lat], crs="cgcs2000", tolerance_m=0.0)
    g = int(res.grid[0])
    if g < 0:
        return None, None
    names = city.community_names if city else {}
    return (
        {"code": str(entry.index.codes[g]), "worker": entry.worker(g)},
        _area(entry.index.community_codes[g], names),
    )


def _num(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else round(v, 8)


@router.get(
    "/geocode",
    summary="Chinese address → door plate, point and grid",
    response_model=None,
    responses={200: {"model": GeocodePublic}, **_ERRORS},
    openapi_extra=_SECURITY,
)
def geocode_address(
    request: Request,
    cache: CacheDep,
    key: Locator,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="The address, e.g. 荆州区和平街道建设社区西环路10号.",
        ),
    ] = None,
    crs: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Also give the point in this system (x, y): wgs84, gcj02, "
            "bd09 or EPSG:n.",
        ),
    ] = None,
) -> Response:
    """Geocode one address against the stored door plates.

    ``status`` is ``matched`` (a door or building plate), ``partial`` (only the
    compound, road or community was found: see ``level``) or ``ambiguous`` (no
    point; ``candidates`` lists the places that fit equally well). An address
    that matches nothing answers 404, an empty or meaningless one 422.
    """
    if q is None or not q.strip():
        msg = "q is required: the address to geocode, e.g. 西环路10号"
        raise InputError(msg)
    out_crs = _crs(crs) if crs is not None and crs.strip() else None
    factory = request.app.state.session_factory
    _, gaz = cache.gazetteer(factory)
    row = gaz.geocode(q)
    status = row["status"]
    if status == "invalid":
        msg = f"q={q!r} is not an address: {row['note']}"
        raise InputError(msg)
    if status == "not_found":
        msg = f"q={q!r}: {row['note']}; check the road or compound name"
        raise NotFoundError(msg)
    lon, lat = _num(row["lon"]), _num(row["lat"])
    body: dict[str, Any] = {
        "query": q,
        "status": status,
        "level": row["level"],
        "confidence": float(row["confidence"]),
        "address_id": row["address_id"],
        "matched_address": row["matched_address"],
        "lon": lon,
        "lat": lat,
        "crs": out_crs,
        "x": None,
        "y": None,
        "grid": None,
        "community": None,
        "candidates": [
            {
                "address_id": c.get("address_id"),
                "address": c.get("address"),
                "level": c.get("level"),
                "score": float(c.get("score", 0.0)),
                "lon": _num(c.get("lon")),
                "lat": _num(c.get("lat")),
            }
            for c in row["candidates"]
        ],
        "note": row["note"] or "",
    }
    if lon is not None and lat is not None:
        if out_crs is not None:
            ox, oy = from_storage([lon], [lat], out_crs)
            body["x"], body["y"] = round(float(ox[0]), 8), round(float(oy[0]), 8)
        body["grid"], body["community"] = _grid_of(cache, factory, lon, lat)
    return _json(body)


@router.get(
    "/reverse",
    summary="Nearest door plate to a point",
    response_model=None,
    responses={200: {"model": ReversePublic}, **_ERRORS},
    openapi_extra=_SECURITY,
)
def reverse_geocode(
    request: Request,
    cache: CacheDep,
    key: Locator,
    lon: Annotated[float, Query(description="Longitude (or easting, EPSG:n).")],
    lat: Annotated[float, Query(description="Latitude (or northing, EPSG:n).")],
    crs: CrsQuery = None,
    max_distance_m: Annotated[
        float, Query(gt=0, le=100_000, description="Search radius (metres).")
    ] = 1000.0,
    kind: Annotated[
        Literal["door", "building"] | None,
        Query(description="Only door plates or only building plates."),
    ] = None,
) -> Response:
    """The door (or building) plate nearest the point, with its distance."""
    name = _crs(crs)
    x, y = _finite("lon", lon), _finite("lat", lat)
    plon, plat = to_storage(np.array([x]), np.array([y]), name)
    entry, gaz = cache.gazetteer(request.app.state.session_factory)
    found = gaz.reverse(
        plon, plat, crs="cgcs2000", max_distance_m=max_distance_m, kind=kind
    ).iloc[0]
    if found["status"] != "matched":
        msg = (
            f"no door plate within {max_distance_m:g} m of ({x}, {y}) in {name}; "
            "pass a larger max_distance_m"
        )
        raise NotFoundError(msg)
    i = entry.address_position[str(found["address_id"])]
    return _json(
        {
            "address_id": str(found["address_id"]),
            "address": str(found["address"]),
            "kind": str(found["kind"]),
            "distance_m": float(found["distance_m"]),
            "lon": round(float(gaz.lon[i]), 8),
            "lat": round(float(gaz.lat[i]), 8),
        }
    )


# ---------------------------------------------------------------------------- point


@router.get(
    "/point/{srid}/{coordinates}",
    summary="Every area containing a point (MapIt style)",
    response_model=None,
    responses={200: {"model": PointAreasPublic}, **_ERRORS},
    openapi_extra=_SECURITY,
)
async def point_areas(
    request: Request,
    srid: Annotated[
        str,
        Path(
            max_length=32,
            description="EPSG code of x,y (4490, 4326, 4546, ...) or gcj02 / bd09.",
        ),
    ],
    coordinates: Annotated[
        str, Path(max_length=80, description="x,y (longitude,latitude or metres).")
    ],
) -> Response:
    """Grids (with worker), community and subdistrict containing the point.

    Empty ``areas`` when the point lies in none. Grids come from the plan in
    force, communities and subdistricts from the stored city's polygons.
    """
    await authorize(request)
    cache = locate_cache_of(request.app)
    parts = coordinates.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        msg = (
            f"the point {coordinates!r} must be 'x,y' (two numbers separated by a "
            "comma, longitude first), e.g. /v1/point/4490/112.19,30.35"
        )
        raise InputError(msg) from None
    x, y = _finite("x", x), _finite("y", y)
    name = _crs(srid, name="srid")
    lon_a, lat_a = to_storage(np.array([x]), np.array([y]), name)
    lon, lat = float(lon_a[0]), float(lat_a[0])
    areas: list[dict[str, Any]] = []
    plan_id: int | None = None
    entry: PlanEntry | None
    try:
        entry, city = await _snapshot(request, cache)
    except NotFoundError:  # no plan in force: the city's areas still answer
        entry = None
        city = await run_in_threadpool(cache.city, request.app.state.session_factory)
    if entry is not None:
        plan_id = entry.plan_id
        for area in entry.index.containing_areas(lon, lat, crs="cgcs2000"):
            if area["type"] == "grid":
                g = entry.index.position(area["code"])
                areas.append(
                    {"type": "grid", "code": area["code"], "worker": entry.worker(g)}
                )
    if city is not None:
        areas.extend(city.areas_at(lon, lat))
    return _json(
        {
            "srid": name,
            "x": x,
            "y": y,
            "lon": round(lon, 8),
            "lat": round(lat, 8),
            "plan_id": plan_id,
            "areas": areas,
        }
    )
