"""Command-centre map pages (folium HTML, every asset served by this API).

- ``GET /maps``: an index of the pages.
- ``GET /maps/grids``: the plan in force (or ``plan_id``): households choropleth,
  grid codes, community and worker in popups.
- ``GET /maps/heatmap?start=&end=&category=``: incidents counted per fixed cell
  **in PostGIS** and normalised on the server against one scale (``scale_max``,
  default the busiest cell of the selection), so a colour means the same count at
  every zoom; the page holds cells, not incidents.
- ``GET /maps/hotspots?start=&end=&category=``: Getis–Ord Gi* hot and cold spots
  of incident counts per grid (FDR, 90/95/99 %); refused (422) below 30 grids.
- ``GET /maps/coverage``: the plan's coverage issues (gaps, overlaps, what falls
  through) over the grid plan.
- ``GET /maps/animation?start=&end=&freq=``: the incident cells over time.

Basemap from configuration (``SPATIALGRID_BASEMAP``: none | osm | tianditu | an
XYZ URL); with ``none`` the stored city's streets and blocks are drawn, and the
pages work with no internet at all. Scripts, styles and fonts come from
``/static`` (:func:`spatialgrid.render.map_to_html`).

**Keys.** Map pages need the operator role (:attr:`Permission.VIEW_MAPS`; the
planner too). A browser cannot send an ``X-API-Key`` header when following a
link, so these pages (and only these) also take the key as ``?key=...``. Such
URLs end up in the browser history and in access logs: use a dedicated operator
key for the map screen and revoke it when it leaks. The pages are sent with
``Referrer-Policy: no-referrer`` (the key never reaches a tile server in a
``Referer``) and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

import geopandas as gpd

from api.deps import Permission, SessionDep, get_api_key, has_permission
from api.routes.incidents import settings_of, split_list
from api.schemas import ErrorPublic, ValidationErrorPublic
from spatialgrid.crs import working_crs
from spatialgrid.db import incidents as inc_repo
from spatialgrid.db import repository
from spatialgrid.db.models import CityInfo
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.errors import InputError
from spatialgrid.render import (
    Basemap,
    basemap_from_config,
    cells_from_counts,
    map_to_html,
    render_cell_heatmap,
    render_grid_map,
    render_hotspot_map,
    render_incident_animation,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from api.config import Settings

router = APIRouter(prefix="/maps", tags=["maps"])

#: Most incidents the animation page loads (it needs the points themselves).
ANIMATION_MAX_INCIDENTS = 200_000
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}},
    401: {"model": ErrorPublic, "description": "Missing or unknown API key."},
    403: {"model": ErrorPublic, "description": "Not an operator (or planner) key."},
    404: {"model": ErrorPublic, "description": "No plan in force, or no city."},
    422: {"model": ValidationErrorPublic, "description": "Invalid parameters."},
}


def map_viewer(
    request: Request,
    session: SessionDep,
    key: Annotated[
        str | None,
        Query(
            max_length=512,
            description=(
                "The API key, for links opened in a browser (which cannot send the "
                "X-API-Key header). Prefer the header where you can."
            ),
        ),
    ] = None,
) -> ApiKeyInfo:
    """The key of a map request: ``X-API-Key``/Bearer header or ``?key=``."""
    header = request.headers.get("x-api-key")
    bearer = request.headers.get("authorization", "")
    if not header and bearer.lower().startswith("bearer "):
        header = bearer[7:]
    info = get_api_key(request, session, header or key, None)
    if not has_permission(info.role, Permission.VIEW_MAPS):
        msg = (
            f"API key {info.name!r} has role {info.role!r}; the map pages are for "
            "the operator (and planner) roles"
        )
        raise HTTPException(status_code=403, detail=msg)
    return info


Viewer = Annotated[ApiKeyInfo, Depends(map_viewer)]
StartQuery = Annotated[
    datetime | None,
    Query(description="From (ISO 8601; default 30 days before `end`)."),
]
EndQuery = Annotated[
    datetime | None, Query(description="Until, exclusive (ISO 8601; default now).")
]
CategoryQuery = Annotated[
    str | None, Query(max_length=1000, description="Category codes, comma-separated.")
]


def _window(
    start: datetime | None, end: datetime | None, *, days: int = 30
) -> tuple[datetime, datetime]:
    stop = end or datetime.now(UTC)
    if stop.tzinfo is None:
        stop = stop.replace(tzinfo=UTC)
    begin = start or stop - timedelta(days=days)
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=UTC)
    if begin >= stop:
        msg = f"start={begin.isoformat()} must be before end={stop.isoformat()}"
        raise InputError(msg)
    return begin, stop


def _basemap(settings: Settings) -> Basemap:
    return basemap_from_config(
        settings.basemap,
        tianditu_token=settings.tianditu_token,
        attribution=settings.basemap_attribution,
    )


def _context(
    session: Session, basemap: Basemap
) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None, bool]:
    """Our own streets and blocks when no tiles are drawn; whether to credit OSM."""
    info = session.get(CityInfo, 1)
    source = (info.report or {}).get("source") if info is not None else None
    credit_osm = isinstance(source, dict) and source.get("format") == "osm"
    if basemap.kind != "none":
        return None, None, credit_osm
    streets = repository.load_layer("streets", session=session)
    blocks = repository.load_layer("blocks", session=session)
    return (
        streets if len(streets) else None,
        blocks if len(blocks) else None,
        credit_osm,
    )


def _plan_grids(session: Session, plan_id: int | None) -> gpd.GeoDataFrame:
    plan = (
        plan_id if plan_id is not None else repository.active_plan_id(session=session)
    )
    return inc_repo.load_plan_grids_with_workers(plan, session=session)


def _page(request: Request, m: Any) -> HTMLResponse:
    base = request.scope.get("root_path", "") + "/static"
    return HTMLResponse(map_to_html(m, asset_base_url=base), headers=_HEADERS)


# ------------------------------------------------------------------------ pages


@router.get("", response_class=HTMLResponse, summary="Map pages", responses=_ERRORS)
def index(request: Request, key: Viewer) -> HTMLResponse:
    """Links to every map page (keeping the `?key=` the page was opened with)."""
    keep = request.query_params.get("key")
    suffix = "?" + urlencode({"key": keep}) if keep else ""
    pages = [
        ("grids", "网格划分 Grid plan"),
        ("heatmap", "事件热力图 Incident heatmap (last 30 days)"),
        ("hotspots", "热点分析 Gi* hot spots (last 90 days)"),
        ("coverage", "覆盖检查 Coverage issues"),
        ("animation", "事件动态 Incidents over time"),
    ]
    items = "".join(
        f'<li><a href="{html.escape(request.url_for("maps_" + name).path + suffix)}">'
        f"{html.escape(title)}</a></li>"
        for name, title in pages
    )
    body = (
        '<!doctype html><html lang="zh"><head><meta charset="utf-8">'
        '<title>spatialgrid maps</title></head><body style="font:15px sans-serif;'
        f'margin:2em"><h1>指挥中心地图 Command-centre maps</h1><ul>{items}</ul>'
        "</body></html>"
    )
    return HTMLResponse(body, headers=_HEADERS)


@router.get(
    "/grids",
    name="maps_grids",
    response_class=HTMLResponse,
    summary="The grid plan (households, codes, workers)",
    responses=_ERRORS,
)
def grids_page(
    request: Request,
    session: SessionDep,
    key: Viewer,
    plan_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Default: the plan in force.")
    ] = None,
) -> HTMLResponse:
    """Households choropleth of the grid plan, codes on the map, worker in popups."""
    settings = settings_of(request)
    basemap = _basemap(settings)
    grids = _plan_grids(session, plan_id)
    streets, blocks, credit = _context(session, basemap)
    m = render_grid_map(
        grids,
        streets=streets,
        blocks=blocks,
        basemap=basemap,
        credit_osm=credit,
    )
    return _page(request, m)


@router.get(
    "/heatmap",
    name="maps_heatmap",
    response_class=HTMLResponse,
    summary="Incident heatmap with a fixed, server-side scale",
    responses=_ERRORS,
)
def heatmap_page(
    request: Request,
    session: SessionDep,
    key: Viewer,
    start: StartQuery = None,
    end: EndQuery = None,
    category: CategoryQuery = None,
    cell_size_m: Annotated[
        float, Query(ge=10, le=2000, description="Cell edge in metres.")
    ] = 100.0,
    scale_max: Annotated[
        float | None,
        Query(
            gt=0,
            description=(
                "Incidents per cell shown at full colour (pin it to compare maps); "
                "default the busiest cell of this selection."
            ),
        ),
    ] = None,
) -> HTMLResponse:
    """Incidents in the window and categories, counted per fixed cell in PostGIS."""
    settings = settings_of(request)
    basemap = _basemap(settings)
    begin, stop = _window(start, end)
    grids = _plan_grids(session, None)
    crs = working_crs(grids)
    epsg = crs.to_epsg()
    if epsg is None:  # pragma: no cover - working CRSs are EPSG zones
        msg = f"working CRS {crs.name} has no EPSG code for PostGIS"
        raise InputError(msg)
    cells = inc_repo.count_incident_cells(
        session=session,
        cell_size_m=cell_size_m,
        working_epsg=epsg,
        start=begin,
        end=stop,
        categories=split_list(category),
    )
    # Shown in the legend as local wall-clock minutes; the points carry the same
    # naive start so render's own window filter keeps them all.
    zone = settings.incident_timezone
    label_start = pd.Timestamp(begin).tz_convert(zone).floor("min").tz_localize(None)
    label_end = pd.Timestamp(stop).tz_convert(zone).ceil("min").tz_localize(None)
    heat_cells = cells_from_counts(
        cells, cell_size_m=cell_size_m, crs=crs, scale_max=scale_max
    )
    streets, blocks, credit = _context(session, basemap)
    cats = split_list(category)
    title = "事件热力图 Incidents" + (f" · {', '.join(cats)}" if cats else "")
    m = render_cell_heatmap(
        heat_cells,
        grids=grids,
        start=label_start.strftime("%Y-%m-%d %H:%M"),
        end=label_end.strftime("%Y-%m-%d %H:%M"),
        streets=streets,
        blocks=blocks,
        basemap=basemap,
        credit_osm=credit,
        title=title,
    )
    return _page(request, m)


@router.get(
    "/hotspots",
    name="maps_hotspots",
    response_class=HTMLResponse,
    summary="Gi* hot spots of incidents per grid",
    responses=_ERRORS,
)
def hotspots_page(
    request: Request,
    session: SessionDep,
    key: Viewer,
    start: Annotated[
        datetime | None,
        Query(description="From (ISO 8601; default 90 days before `end`)."),
    ] = None,
    end: EndQuery = None,
    category: CategoryQuery = None,
) -> HTMLResponse:
    """Hot and cold spots (Getis–Ord Gi*, FDR) of incident counts per grid, counted
    in PostGIS by the grid assigned at report time. Fewer than 30 grids: 422."""
    from spatialgrid.hotspots import find_hotspots

    settings = settings_of(request)
    basemap = _basemap(settings)
    # hot spots need more than a month of cases per grid to be significant
    begin, stop = _window(start, end, days=90)
    plan_id = repository.active_plan_id(session=session)
    grids = inc_repo.load_plan_grids_with_workers(plan_id, session=session)
    counts = inc_repo.count_incidents_by_grid(
        session=session, start=begin, end=stop, categories=split_list(category)
    )
    grids["incidents"] = grids["grid_code"].map(counts).fillna(0).astype(int)
    spots = find_hotspots(grids)  # InsufficientDataError (422) below 30 grids
    streets, blocks, credit = _context(session, basemap)
    m = render_hotspot_map(
        spots, streets=streets, blocks=blocks, basemap=basemap, credit_osm=credit
    )
    return _page(request, m)


@router.get(
    "/coverage",
    name="maps_coverage",
    response_class=HTMLResponse,
    summary="Coverage issues of the plan in force",
    responses=_ERRORS,
)
def coverage_page(request: Request, session: SessionDep, key: Viewer) -> HTMLResponse:
    """Gaps, slivers, overlaps, crossings and what falls through, over the plan."""
    from spatialgrid.coverage import add_coverage_layers, find_coverage_issues

    settings = settings_of(request)
    basemap = _basemap(settings)
    grids = _plan_grids(session, None)
    city = repository.load_city(session=session)
    optional = {
        name: getattr(city, name) if len(getattr(city, name)) else None
        for name in ("blocks", "buildings", "compounds", "pois", "addresses", "streets")
    }
    report = find_coverage_issues(grids, city.communities, **optional)
    streets, blocks, credit = _context(session, basemap)
    m = render_grid_map(
        grids,
        streets=streets,
        blocks=blocks,
        basemap=basemap,
        credit_osm=credit,
        label_codes=False,
        title="覆盖检查 Coverage",
        extra_layers=[
            lambda m: add_coverage_layers(
                m, report, show_grids=False, layer_control=False
            )
        ],
    )
    return _page(request, m)


@router.get(
    "/animation",
    name="maps_animation",
    response_class=HTMLResponse,
    summary="Incident cells over time",
    responses=_ERRORS,
)
def animation_page(
    request: Request,
    session: SessionDep,
    key: Viewer,
    start: StartQuery = None,
    end: EndQuery = None,
    category: CategoryQuery = None,
    freq: Annotated[
        str, Query(pattern="^(D|W|M)$", description="Frame length: D, W or M.")
    ] = "D",
    cell_size_m: Annotated[float, Query(ge=10, le=2000)] = 100.0,
) -> HTMLResponse:
    """One frame per day (week, month) of the window, on one shared colour scale."""
    settings = settings_of(request)
    begin, stop = _window(start, end)
    frame, matched = inc_repo.list_incidents(
        session=session,
        categories=split_list(category),
        start=begin,
        end=stop,
        limit=ANIMATION_MAX_INCIDENTS,
        newest_first=False,
        timezone=settings.incident_timezone,
    )
    if matched > ANIMATION_MAX_INCIDENTS:
        msg = (
            f"{matched:,} incidents in the window; the animation shows at most "
            f"{ANIMATION_MAX_INCIDENTS:,}: narrow start/end or the categories"
        )
        raise InputError(msg)
    grids = _plan_grids(session, None)
    # frames are local days/weeks: hand over local wall-clock times
    frame["reported_at"] = frame["reported_at"].dt.tz_localize(None)
    m = render_incident_animation(
        frame[["reported_at", "category_code", "geometry"]],
        freq=freq,
        cell_size_m=cell_size_m,
        grids=grids,
        basemap=_basemap(settings),
    )
    return _page(request, m)
