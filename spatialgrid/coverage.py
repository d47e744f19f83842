"""Coverage QA of a grid plan: gaps, slivers, overlaps, crossings and what falls through.

"No blank, no duplicate, no dead corner" (不空白、不重复、无死角): within each community
the grids must tile the community exactly. :func:`find_coverage_issues` finds where a
plan breaks that promise and counts what falls through:

- **gaps** — community area covered by no grid, one row per connected piece, classed
  as ``"sliver"`` (narrower than ``sliver_width_m``) or ``"unassigned"`` territory.
  Width is 2 × the radius of the maximum inscribed circle (GEOS
  ``MaximumInscribedCircle``; the radius is the distance at which a negative buffer
  empties, so it is the natural "how narrow" measure of a gap);
- **overlaps** — area claimed by two grids (duplicated coverage), naming both grid
  codes and, when the plan has a worker column, both workers;
- **crossings** — grids reaching outside their own community (or lying wholly
  outside it, or naming a community that does not exist);
- **invalid** geometries (GEOS reason), repaired with ``make_valid`` for the rest of
  the analysis only;
- **invalid_edges** — GEOS coverage validation (``shapely.coverage_invalid_edges``,
  with ``gap_width = sliver_width_m``): the grid edges that do not match their
  neighbour's, i.e. where a planner has to look;
- households, buildings, compounds, shops/POIs and door-plate addresses inside every
  gap and overlap; points outside every grid one by one (with the street they front,
  when ``streets`` is given); addresses and POIs inside two or more grids.

PostGIS 3.3 has no ``ST_Coverage*``; GEOS 3.12+ (via shapely 2.1) validates a coverage
but says nothing about what a gap contains — that is the part a grid office needs.
Households come from buildings (by representative point) when buildings carry a
``households`` column, else pro-rata from blocks by area.

All metric work happens in :func:`spatialgrid.crs.working_crs`; every output layer
is returned in the CRS of ``grids``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.crs import epsg_or_wkt, require_same_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import InputError
from spatialgrid.progress import ProgressCallback, report
from spatialgrid.validate import (
    LINEAL,
    POLYGONAL,
    PUNTAL,
    require_columns,
    require_frame,
)

if TYPE_CHECKING:
    from pyproj import CRS

logger = logging.getLogger(__name__)

#: Columns tried, in order, as the grid worker column when ``worker_col`` is None.
WORKER_COLUMNS: tuple[str, ...] = ("worker", "worker_name", "worker_id", "grid_worker")

#: Report layers in the order they are written and drawn.
REPORT_LAYERS: tuple[str, ...] = (
    "gaps",
    "overlaps",
    "crossings",
    "invalid",
    "invalid_edges",
    "uncovered_points",
    "multi_covered",
    "grids",
)

_COUNT_COLUMNS = ("households", "buildings", "compounds", "shops", "pois", "addresses")


@dataclass(frozen=True)
class CoverageReport:
    """What :func:`find_coverage_issues` found; every layer in the input CRS.

    Attributes
    ----------
    gaps
        One row per connected piece of community area in no grid: ``gap_id``,
        ``community_code``, ``kind`` (``"sliver"`` | ``"unassigned"``), ``area_m2``,
        ``width_m``, counts (``households``, ``buildings``, ``compounds``, ``shops``,
        ``pois``, ``addresses``), ``compound_ids`` and ``neighbours`` (grid codes
        sharing its border, ``;``-joined).
    overlaps
        One row per overlapping piece of two grids: ``overlap_id``, ``grid_code_a``,
        ``grid_code_b``, ``worker_a``, ``worker_b`` (None without a worker column),
        ``community_code_a``, ``community_code_b``, ``area_m2``, ``width_m`` and
        the same counts as ``gaps``.
    crossings
        Grids not inside their community: ``grid_code``, ``community_code``, ``kind``
        (``"crossing"`` | ``"outside"`` | ``"unknown_community"``), ``area_outside_m2``,
        ``share_outside``, ``into_communities``; geometry = the part outside.
    invalid
        Invalid input geometries: ``layer``, ``feature_id``, ``reason``.
    invalid_edges
        GEOS coverage validation per grid (``grid_code``; lines).
    uncovered_points
        POIs and addresses in no grid: ``kind`` (``"poi"`` | ``"address"``),
        ``feature_id``, ``name``, ``is_shop``, ``community_code`` (containing
        community or None), ``gap_id`` and, with streets, ``street_id``,
        ``street_name``, ``side`` (``"left"``/``"right"`` of the street's drawing
        direction), ``position_m`` (along it) and ``distance_m`` (from its centre line).
    multi_covered
        POIs and addresses inside two or more grids: ``kind``, ``feature_id``,
        ``n_grids``, ``grid_codes``.
    grids
        Per grid: ``grid_code``, ``community_code``, ``households`` (the plan's
        column when present, else estimated like gaps), ``shops``, ``addresses``,
        ``valid``.
    summary
        JSON-serialisable totals (see :func:`find_coverage_issues`).
    crs, working_crs
        The output CRS and the metric CRS used (``EPSG:n`` or WKT).
    """

    gaps: gpd.GeoDataFrame
    overlaps: gpd.GeoDataFrame
    crossings: gpd.GeoDataFrame
    invalid: gpd.GeoDataFrame
    invalid_edges: gpd.GeoDataFrame
    uncovered_points: gpd.GeoDataFrame
    multi_covered: gpd.GeoDataFrame
    grids: gpd.GeoDataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    crs: str = ""
    working_crs: str = ""

    def layers(self) -> dict[str, gpd.GeoDataFrame]:
        """The report layers by name, in :data:`REPORT_LAYERS` order."""
        return {name: getattr(self, name) for name in REPORT_LAYERS}

    @property
    def clean(self) -> bool:
        """True when nothing at all was found."""
        return bool(self.summary.get("clean", False))


# --------------------------------------------------------------------------- helpers


def _polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polygon parts of each geometry (dropping lines/points); (parts, source index)."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    out_parts: list[Any] = []
    out_index: list[int] = []
    type_ids = shapely.get_type_id(parts)
    for part, src, tid in zip(parts, index, type_ids, strict=True):
        if tid == 3:  # Polygon
            out_parts.append(part)
            out_index.append(int(src))
        elif tid in (6, 7):  # MultiPolygon / GeometryCollection
            sub, _ = _polygon_parts(np.array([part], dtype=object))
            out_parts.extend(sub)
            out_index.extend([int(src)] * len(sub))
    return np.array(out_parts, dtype=object), np.array(out_index, dtype=int)


def _widths(polys: np.ndarray, sliver_width_m: float) -> np.ndarray:
    """2 × radius of the maximum inscribed circle of each polygon (metres)."""
    if len(polys) == 0:
        return np.zeros(0)
    # The radius is exact to within the tolerance. A coarse tolerance (1/1000 of the
    # extent) is enough far from the threshold; near it, refine so that the
    # sliver/unassigned class is right to a centimetre-ish.
    fine = max(sliver_width_m / 100.0, 1e-3)
    x0, y0, x1, y1 = shapely.bounds(polys).T
    coarse = np.maximum(np.maximum(x1 - x0, y1 - y0) / 1000.0, fine)
    width = 2.0 * shapely.length(shapely.maximum_inscribed_circle(polys, coarse))
    redo = (coarse > fine) & (np.abs(width - sliver_width_m) <= 2.0 * coarse)
    if redo.any():
        width[redo] = 2.0 * shapely.length(
            shapely.maximum_inscribed_circle(polys[redo], fine)
        )
    return width


def _ids(frame: gpd.GeoDataFrame | None, *cols: str) -> np.ndarray:
    """Feature ids: the first of ``cols`` present (then ``osm_id``), else the index."""
    if frame is None:
        return np.zeros(0, dtype=object)
    for col in (*cols, "osm_id"):
        if col in frame.columns:
            return frame[col].astype(object).to_numpy()
    return frame.index.astype(object).to_numpy()


def _numeric(frame: gpd.GeoDataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(frame[col], errors="coerce").fillna(0.0).to_numpy(float)


def _points_in(polys: np.ndarray, points: np.ndarray, predicate: str) -> np.ndarray:
    """Pairs ``(point index, polygon index)`` with ``predicate(point, polygon)``."""
    if len(polys) == 0 or len(points) == 0:
        return np.zeros((2, 0), dtype=int)
    tree = shapely.STRtree(polys)
    return tree.query(points, predicate=predicate)


def _count(pairs: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(pairs[1], weights=weights, minlength=n)[:n]


class _Contents:
    """Point and polygon layers prepared once, counted inside many polygons."""

    def __init__(
        self,
        *,
        blocks: gpd.GeoDataFrame | None,
        buildings: gpd.GeoDataFrame | None,
        compounds: gpd.GeoDataFrame | None,
        pois: gpd.GeoDataFrame | None,
        addresses: gpd.GeoDataFrame | None,
        households_col: str,
    ) -> None:
        self.blocks = blocks
        self.building_pts = (
            shapely.point_on_surface(np.asarray(buildings.geometry.values))
            if buildings is not None
            else np.zeros(0, dtype=object)
        )
        self.building_hh: np.ndarray | None = None
        if buildings is not None and households_col in buildings.columns:
            self.building_hh = _numeric(buildings, households_col)
        self.compound_pts = (
            shapely.point_on_surface(np.asarray(compounds.geometry.values))
            if compounds is not None
            else np.zeros(0, dtype=object)
        )
        self.compound_ids = _ids(compounds, "compound_id")
        self.poi_pts = (
            np.asarray(pois.geometry.values)
            if pois is not None
            else np.zeros(0, dtype=object)
        )
        self.poi_shop = (
            pois["is_shop"].fillna(False).astype(bool).to_numpy()
            if pois is not None and "is_shop" in pois.columns
            else np.ones(len(self.poi_pts), dtype=bool)
        )
        self.address_pts = (
            np.asarray(addresses.geometry.values)
            if addresses is not None
            else np.zeros(0, dtype=object)
        )
        self.block_hh: np.ndarray | None = None
        if blocks is not None and households_col in blocks.columns:
            self.block_hh = _numeric(blocks, households_col)
            self.block_geoms = np.asarray(blocks.geometry.values)
            self.block_area = shapely.area(self.block_geoms)
            self.block_tree = shapely.STRtree(self.block_geoms)
        if self.building_hh is not None:
            self.households_source = "buildings"
        elif self.block_hh is not None:
            self.households_source = "blocks"
        else:
            self.households_source = "none"

    def households(self, polys: np.ndarray) -> np.ndarray:
        """Households inside each polygon (NaN when no source layer was given)."""
        n = len(polys)
        if self.building_hh is not None:
            pairs = _points_in(polys, self.building_pts, "within")
            return _count(pairs, n, self.building_hh[pairs[0]])
        if self.block_hh is not None and n:
            tree = shapely.STRtree(polys)
            # Whole blocks first (cheap, exact); only partial pairs need an overlay.
            blk, pol = tree.query(self.block_geoms, predicate="intersects")
            inside_blk, inside_pol = tree.query(self.block_geoms, predicate="within")
            full = np.zeros(len(blk), dtype=bool)
            if len(inside_blk):
                key = blk.astype(np.int64) * n + pol
                full = np.isin(key, inside_blk.astype(np.int64) * n + inside_pol)
            share = np.ones(len(blk))
            part = ~full
            if part.any():
                inter = shapely.intersection(
                    self.block_geoms[blk[part]], polys[pol[part]]
                )
                area = self.block_area[blk[part]]
                share[part] = np.divide(
                    shapely.area(inter), area, out=np.zeros(part.sum()), where=area > 0
                )
            hh = np.bincount(pol, weights=self.block_hh[blk] * share, minlength=n)
            return np.round(hh[:n], 6)
        return np.full(n, np.nan)

    def counts(self, polys: np.ndarray) -> dict[str, Any]:
        """Households and feature counts inside each polygon (arrays of len(polys))."""
        n = len(polys)
        b_pairs = _points_in(polys, self.building_pts, "within")
        c_pairs = _points_in(polys, self.compound_pts, "within")
        p_pairs = _points_in(polys, self.poi_pts, "within")
        a_pairs = _points_in(polys, self.address_pts, "within")
        compound_lists: list[list[str]] = [[] for _ in range(n)]
        for ci, pi in zip(c_pairs[0], c_pairs[1], strict=True):
            compound_lists[pi].append(str(self.compound_ids[ci]))
        return {
            "households": self.households(polys),
            "buildings": _count(b_pairs, n).astype(int),
            "compounds": _count(c_pairs, n).astype(int),
            "shops": _count(p_pairs, n, self.poi_shop[p_pairs[0]].astype(float)).astype(
                int
            ),
            "pois": _count(p_pairs, n).astype(int),
            "addresses": _count(a_pairs, n).astype(int),
            "compound_ids": [";".join(sorted(c)) for c in compound_lists],
        }


def _frame(
    data: dict[str, Any], geoms: np.ndarray | list[Any], crs: Any, columns: list[str]
) -> gpd.GeoDataFrame:
    """A GeoDataFrame with ``columns`` (in order) even when empty."""
    body = {c: data.get(c, []) for c in columns}
    if len(geoms) == 0:
        body = {c: pd.Series([], dtype="object") for c in columns}
    return gpd.GeoDataFrame(
        body, geometry=gpd.GeoSeries(np.asarray(geoms, dtype=object), crs=crs), crs=crs
    )


def _prepare(
    frame: gpd.GeoDataFrame | None, name: str, types: tuple[str, ...], wcrs: CRS
) -> gpd.GeoDataFrame | None:
    if frame is None:
        return None
    require_frame(frame, name, geometry_types=types if len(frame) else None,
                  allow_empty=True)  # fmt: skip
    keep = ~(frame.geometry.isna() | frame.geometry.is_empty)
    out = frame.loc[keep]
    if types == PUNTAL and len(out):
        # Point layers only; MultiPoints are rare enough to reduce to a point.
        out = out.set_geometry(shapely.point_on_surface(out.geometry.values))
    return out.to_crs(wcrs)


def _street_fronts(
    points: np.ndarray, streets: gpd.GeoDataFrame | None, search_m: float
) -> dict[str, np.ndarray]:
    """Nearest street centre line of each point, the side it lies on and where."""
    n = len(points)
    out: dict[str, np.ndarray] = {
        "street_id": np.full(n, None, dtype=object),
        "street_name": np.full(n, None, dtype=object),
        "side": np.full(n, None, dtype=object),
        "position_m": np.full(n, np.nan),
        "distance_m": np.full(n, np.nan),
        "_line": np.full(n, -1, dtype=int),  # position in ``streets`` (internal)
    }
    if streets is None or len(streets) == 0 or n == 0:
        return out
    lines = np.asarray(streets.geometry.values)
    tree = shapely.STRtree(lines)
    (pi, li), dist = tree.query_nearest(
        points, max_distance=search_m, return_distance=True, all_matches=False
    )
    if len(pi) == 0:
        return out
    line = lines[li]
    pos = shapely.line_locate_point(line, points[pi])
    length = shapely.length(line)
    eps = np.minimum(0.5, np.maximum(length / 4.0, 1e-6))
    a = shapely.line_interpolate_point(line, np.clip(pos - eps, 0, length))
    b = shapely.line_interpolate_point(line, np.clip(pos + eps, 0, length))
    tx, ty = shapely.get_x(b) - shapely.get_x(a), shapely.get_y(b) - shapely.get_y(a)
    q = shapely.line_interpolate_point(line, pos)
    px = shapely.get_x(points[pi]) - shapely.get_x(q)
    py = shapely.get_y(points[pi]) - shapely.get_y(q)
    cross = tx * py - ty * px
    out["street_id"][pi] = _ids(streets, "street_id")[li]
    if "name" in streets.columns:
        out["street_name"][pi] = streets["name"].astype(object).to_numpy()[li]
    out["side"][pi] = np.where(cross >= 0, "left", "right")
    out["position_m"][pi] = pos
    out["distance_m"][pi] = dist
    out["_line"][pi] = li
    return out


def _native(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _native(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_native(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        v = float(value)
        return None if np.isnan(v) else round(v, 3)
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 3)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ------------------------------------------------------------------------ main entry


def find_coverage_issues(
    grids: gpd.GeoDataFrame,
    communities: gpd.GeoDataFrame,
    *,
    blocks: gpd.GeoDataFrame | None = None,
    buildings: gpd.GeoDataFrame | None = None,
    compounds: gpd.GeoDataFrame | None = None,
    pois: gpd.GeoDataFrame | None = None,
    addresses: gpd.GeoDataFrame | None = None,
    streets: gpd.GeoDataFrame | None = None,
    grid_code_col: str = "grid_code",
    community_col: str = "community_code",
    households_col: str = "households",
    worker_col: str | None = None,
    sliver_width_m: float = 2.0,
    min_area_m2: float = 0.01,
    street_search_m: float = 60.0,
    working_crs: CRS | str | int | None = None,
    progress: ProgressCallback | None = None,
) -> CoverageReport:
    """Find gaps, slivers, overlaps, crossings and invalid grids; count what falls through.

    Parameters
    ----------
    grids
        The plan: polygons with ``grid_code_col`` and ``community_col``.
    communities
        Community polygons with ``community_col``: the area the plan must cover.
    blocks, buildings, compounds, pois, addresses, streets
        Optional city layers (:data:`spatialgrid.city.LAYER_COLUMNS`). Households come
        from ``buildings[households_col]`` (by representative point) when present,
        else pro-rata by area from ``blocks[households_col]``. ``pois`` with
        ``is_shop`` tell shops apart (without it every POI counts as a shop).
        ``streets`` (centre lines; rows with ``internal`` True are ignored) give
        each uncovered point its street and side.
    grid_code_col, community_col, households_col
        Column names.
    worker_col
        Column naming the grid worker; default: the first of :data:`WORKER_COLUMNS`
        present in ``grids``, if any.
    sliver_width_m
        Gaps narrower than this (2 × inscribed-circle radius) are slivers.
    min_area_m2
        Pieces smaller than this are floating-point noise and ignored.
    street_search_m
        How far from a point its street centre line may be.
    working_crs
        Projected CRS for metric work; default :func:`spatialgrid.crs.working_crs`.
    progress
        Optional callback ``(stage, done, total)``.

    Returns
    -------
    CoverageReport
        Layers in the CRS of ``grids``; ``summary`` holds JSON-serialisable totals:
        ``clean``, ``grids``, ``communities``, ``gaps`` / ``slivers`` / ``unassigned``
        (count, area_m2, households, shops, addresses), ``overlaps``, ``crossings``,
        ``invalid``, ``uncovered`` (pois, shops, addresses), ``multi_covered``.

    Raises
    ------
    MissingCRSError, CRSMismatchError
        A layer without a CRS, or layers in different CRSs.
    MissingColumnError
        ``grid_code_col``/``community_col`` absent, or ``worker_col`` absent.
    InvalidGeometryError
        Empty or non-polygonal grids/communities, non-point POIs/addresses.
    InputError
        ``sliver_width_m`` not positive.

    Notes
    -----
    Invalid geometries are reported and repaired (``make_valid``) for the analysis
    only; inputs are never modified.
    """
    if not sliver_width_m > 0:
        msg = f"sliver_width_m must be > 0 metres, got {sliver_width_m!r}"
        raise InputError(msg)
    crs = require_same_crs(
        grids=grids,
        communities=communities,
        blocks=blocks,
        buildings=buildings,
        compounds=compounds,
        pois=pois,
        addresses=addresses,
        streets=streets,
    )
    require_frame(grids, "grids", columns=[grid_code_col], geometry_types=POLYGONAL)
    require_frame(
        communities, "communities", columns=[community_col], geometry_types=POLYGONAL
    )
    if worker_col is not None:
        require_columns(grids, [worker_col], "grids")
    else:
        worker_col = next((c for c in WORKER_COLUMNS if c in grids.columns), None)
    wcrs = _working_crs(grids, working_crs)
    stages = 7
    report(progress, "coverage", 0, stages)

    # -- invalid geometries (report, then repair for the analysis) ---------------
    g = grids.to_crs(wcrs)
    c = communities.to_crs(wcrs)
    invalid_rows: list[tuple[str, Any, str, Any]] = []
    # Copies: invalid rows are repaired in place below, never in the caller's data.
    g_geoms = np.array(g.geometry.values, dtype=object)
    c_geoms = np.array(c.geometry.values, dtype=object)
    grid_valid = shapely.is_valid(g_geoms)
    for layer, frame, geoms, col in (
        ("grids", grids, g_geoms, grid_code_col),
        ("communities", communities, c_geoms, community_col),
    ):
        bad = ~shapely.is_valid(geoms)
        if bad.any():
            reasons = shapely.is_valid_reason(geoms[bad])
            ids = _ids(frame, col)[bad]
            orig = frame.geometry.values[bad]
            invalid_rows += list(
                zip([layer] * int(bad.sum()), ids, reasons, orig, strict=True)
            )
            # Keep only the polygonal part of the repair (make_valid may add lines).
            geoms[bad] = [
                shapely.union_all(_polygon_parts(np.array([r], dtype=object))[0])
                for r in shapely.make_valid(geoms[bad])
            ]
    grid_codes = _ids(grids, grid_code_col)
    grid_comm = (
        grids[community_col].astype(object).to_numpy()
        if community_col in grids.columns
        else np.full(len(grids), None, dtype=object)
    )
    workers = (
        grids[worker_col].astype(object).to_numpy()
        if worker_col is not None
        else np.full(len(grids), None, dtype=object)
    )
    comm_codes = _ids(communities, community_col)
    if community_col not in grids.columns:
        # Plans from other systems may lack the community: take the one holding
        # most of each grid, and say so.
        tree = shapely.STRtree(c_geoms)
        gi, ci = tree.query(g_geoms, predicate="intersects")
        area = shapely.area(shapely.intersection(g_geoms[gi], c_geoms[ci]))
        best: dict[int, tuple[float, int]] = {}
        for a, gg, cc in zip(area, gi, ci, strict=True):
            if a > best.get(int(gg), (-1.0, -1))[0]:
                best[int(gg)] = (float(a), int(cc))
        for gg, (_, cc) in best.items():
            grid_comm[gg] = comm_codes[cc]
        logger.info("grids have no %r column: inferred from overlap", community_col)
    report(progress, "coverage", 1, stages)

    blocks_w = _prepare(blocks, "blocks", POLYGONAL, wcrs)
    buildings_w = _prepare(buildings, "buildings", POLYGONAL, wcrs)
    compounds_w = _prepare(compounds, "compounds", POLYGONAL, wcrs)
    pois_w = _prepare(pois, "pois", PUNTAL, wcrs)
    addresses_w = _prepare(addresses, "addresses", PUNTAL, wcrs)
    streets_w = _prepare(streets, "streets", LINEAL, wcrs)
    if streets_w is not None and "internal" in streets_w.columns:
        streets_w = streets_w.loc[~streets_w["internal"].fillna(False).astype(bool)]
    contents = _Contents(
        blocks=blocks_w,
        buildings=buildings_w,
        compounds=compounds_w,
        pois=pois_w,
        addresses=addresses_w,
        households_col=households_col,
    )

    # -- gaps: community minus the union of every grid touching it --------------
    g_tree = shapely.STRtree(g_geoms)
    ci, gi = g_tree.query(c_geoms, predicate="intersects")
    order = np.argsort(ci, kind="stable")
    ci, gi = ci[order], gi[order]
    bounds = np.searchsorted(ci, np.arange(len(c_geoms) + 1))
    covered = np.array(
        [
            shapely.union_all(g_geoms[gi[bounds[k] : bounds[k + 1]]])
            if bounds[k + 1] > bounds[k]
            else shapely.Polygon()
            for k in range(len(c_geoms))
        ],
        dtype=object,
    )
    holes = shapely.difference(c_geoms, covered)
    gap_polys, gap_src = _polygon_parts(holes)
    keep = shapely.area(gap_polys) >= min_area_m2 if len(gap_polys) else []
    gap_polys, gap_src = gap_polys[keep], gap_src[keep]
    gap_width = _widths(gap_polys, sliver_width_m)
    gap_kind = np.where(gap_width < sliver_width_m, "sliver", "unassigned")
    report(progress, "coverage", 2, stages)

    # -- overlaps between pairs of grids ----------------------------------------
    left, right = g_tree.query(g_geoms, predicate="intersects")
    pair = left < right
    left, right = left[pair], right[pair]
    inter = shapely.intersection(g_geoms[left], g_geoms[right])
    ov_polys, ov_src = _polygon_parts(inter)
    keep = shapely.area(ov_polys) >= min_area_m2 if len(ov_polys) else []
    ov_polys, ov_src = ov_polys[keep], ov_src[keep]
    ov_a, ov_b = left[ov_src], right[ov_src]
    ov_width = _widths(ov_polys, sliver_width_m)
    report(progress, "coverage", 3, stages)

    # -- grids crossing / outside their community --------------------------------
    comm_index = {code: k for k, code in enumerate(comm_codes)}
    cross_rows: list[dict[str, Any]] = []
    cross_geoms: list[Any] = []
    c_tree = shapely.STRtree(c_geoms)
    own = np.array([comm_index.get(code, -1) for code in grid_comm], dtype=int)
    known = own >= 0
    outside = np.full(len(g_geoms), None, dtype=object)
    if known.any():
        outside[known] = shapely.difference(g_geoms[known], c_geoms[own[known]])
    g_area = shapely.area(g_geoms)
    for k in np.flatnonzero(~known):
        outside[k] = g_geoms[k]
    out_area = shapely.area(outside.astype(object))
    for k in np.flatnonzero(out_area >= min_area_m2):
        into = [
            str(comm_codes[j])
            for j in c_tree.query(outside[k], predicate="intersects")
            if j != own[k]
            and shapely.area(shapely.intersection(outside[k], c_geoms[j]))
            >= min_area_m2
        ]
        if not known[k]:
            kind = "unknown_community"
        elif g_area[k] - out_area[k] < min_area_m2:
            kind = "outside"
        else:
            kind = "crossing"
        cross_rows.append(
            {
                "grid_code": grid_codes[k],
                "community_code": grid_comm[k],
                "kind": kind,
                "area_outside_m2": float(out_area[k]),
                "share_outside": float(out_area[k] / g_area[k]) if g_area[k] else 1.0,
                "into_communities": ";".join(sorted(into)),
            }
        )
        cross_geoms.append(outside[k])
    report(progress, "coverage", 4, stages)

    # -- what falls through ------------------------------------------------------
    gap_counts = contents.counts(gap_polys)
    ov_counts = contents.counts(ov_polys)
    # Neighbours of each gap: grids whose boundary runs along it (a corner touch is
    # not a border), longest shared border first.
    neighbours: list[str] = []
    if len(gap_polys):
        gp, gg = g_tree.query(gap_polys, predicate="dwithin", distance=0.01)
        shared = shapely.length(
            shapely.intersection(
                shapely.boundary(gap_polys[gp]),
                shapely.buffer(shapely.boundary(g_geoms[gg]), 0.01, quad_segs=2),
            )
        )
        near: list[dict[str, float]] = [{} for _ in range(len(gap_polys))]
        for p, q, length in zip(gp, gg, shared, strict=True):
            if length >= 0.1:
                code = str(grid_codes[q])
                near[p][code] = max(near[p].get(code, 0.0), float(length))
        neighbours = [
            ";".join(sorted(x, key=lambda code, x=x: (-round(x[code], 2), code)))
            for x in near
        ]
    report(progress, "coverage", 5, stages)

    # -- points: outside every grid, inside two or more -------------------------
    pt_rows: list[dict[str, Any]] = []
    pt_geoms: list[Any] = []
    multi_rows: list[dict[str, Any]] = []
    multi_geoms: list[Any] = []
    gap_ids = np.arange(1, len(gap_polys) + 1)
    for kind, frame, pts, id_col, name_col in (
        ("poi", pois_w, contents.poi_pts, "poi_id", "name"),
        ("address", addresses_w, contents.address_pts, "address_id", "address"),
    ):
        if frame is None or len(pts) == 0:
            continue
        ids = _ids(frame, id_col)
        names = (
            frame[name_col].astype(object).to_numpy()
            if name_col in frame.columns
            else np.full(len(pts), None, dtype=object)
        )
        is_shop = contents.poi_shop if kind == "poi" else np.zeros(len(pts), dtype=bool)
        touching = _points_in(g_geoms, pts, "intersects")
        n_touch = np.bincount(touching[0], minlength=len(pts))
        lost = np.flatnonzero(n_touch == 0)
        if len(lost):
            lost_pts = pts[lost]
            in_comm = _points_in(c_geoms, lost_pts, "intersects")
            comm_of = np.full(len(lost), None, dtype=object)
            comm_of[in_comm[0]] = comm_codes[in_comm[1]]
            in_gap = _points_in(gap_polys, lost_pts, "intersects")
            gap_of = np.full(len(lost), None, dtype=object)
            gap_of[in_gap[0]] = gap_ids[in_gap[1]]
            fronts = _street_fronts(lost_pts, streets_w, street_search_m)
            for j, k in enumerate(lost):
                pt_rows.append(
                    {
                        "kind": kind,
                        "feature_id": ids[k],
                        "name": names[k],
                        "is_shop": bool(is_shop[k]),
                        "community_code": comm_of[j],
                        "gap_id": gap_of[j],
                        **{
                            key: val[j]
                            for key, val in fronts.items()
                            if not key.startswith("_")
                        },
                    }
                )
                pt_geoms.append(pts[k])
        inside = _points_in(g_geoms, pts, "within")
        n_in = np.bincount(inside[0], minlength=len(pts))
        for k in np.flatnonzero(n_in >= 2):
            codes = sorted(str(grid_codes[q]) for q in inside[1][inside[0] == k])
            multi_rows.append(
                {
                    "kind": kind,
                    "feature_id": ids[k],
                    "n_grids": int(n_in[k]),
                    "grid_codes": ";".join(codes),
                }
            )
            multi_geoms.append(pts[k])
    report(progress, "coverage", 6, stages)

    # -- per-grid figures ---------------------------------------------------------
    if households_col in grids.columns:
        grid_hh = _numeric(grids, households_col)
    else:
        grid_hh = contents.households(g_geoms)
    shop_pairs = _points_in(g_geoms, contents.poi_pts, "within")
    addr_pairs = _points_in(g_geoms, contents.address_pts, "within")
    n_g = len(g_geoms)

    # GEOS coverage validation: edges that do not match their neighbour's.
    edges = shapely.coverage_invalid_edges(g_geoms, gap_width=sliver_width_m)
    has_edge = ~(shapely.is_missing(edges) | shapely.is_empty(edges))

    # -- assemble, back in the input CRS ------------------------------------------
    def _back(geoms: np.ndarray | list[Any]) -> np.ndarray:
        series = gpd.GeoSeries(np.asarray(geoms, dtype=object), crs=wcrs)
        return np.asarray(series.to_crs(crs).values, dtype=object)

    gap_cols = [
        "gap_id",
        "community_code",
        "kind",
        "area_m2",
        "width_m",
        *_COUNT_COLUMNS,
        "compound_ids",
        "neighbours",
    ]
    gaps_out = _frame(
        {
            "gap_id": gap_ids,
            "community_code": comm_codes[gap_src] if len(gap_src) else [],
            "kind": gap_kind,
            "area_m2": np.round(shapely.area(gap_polys), 3) if len(gap_polys) else [],
            "width_m": np.round(gap_width, 3),
            **{k: gap_counts[k] for k in (*_COUNT_COLUMNS, "compound_ids")},
            "neighbours": neighbours,
        },
        _back(gap_polys),
        crs,
        gap_cols,
    )
    ov_cols = [
        "overlap_id",
        "grid_code_a",
        "grid_code_b",
        "worker_a",
        "worker_b",
        "community_code_a",
        "community_code_b",
        "area_m2",
        "width_m",
        *_COUNT_COLUMNS,
        "compound_ids",
    ]
    overlaps_out = _frame(
        {
            "overlap_id": np.arange(1, len(ov_polys) + 1),
            "grid_code_a": grid_codes[ov_a],
            "grid_code_b": grid_codes[ov_b],
            "worker_a": workers[ov_a],
            "worker_b": workers[ov_b],
            "community_code_a": grid_comm[ov_a],
            "community_code_b": grid_comm[ov_b],
            "area_m2": np.round(shapely.area(ov_polys), 3) if len(ov_polys) else [],
            "width_m": np.round(ov_width, 3),
            **{k: ov_counts[k] for k in (*_COUNT_COLUMNS, "compound_ids")},
        },
        _back(ov_polys),
        crs,
        ov_cols,
    )
    cross_cols = [
        "grid_code",
        "community_code",
        "kind",
        "area_outside_m2",
        "share_outside",
        "into_communities",
    ]
    crossings_out = _frame(
        {c_: [r[c_] for r in cross_rows] for c_ in cross_cols},
        _back(cross_geoms),
        crs,
        cross_cols,
    )
    inv_cols = ["layer", "feature_id", "reason"]
    invalid_out = _frame(
        {
            "layer": [r[0] for r in invalid_rows],
            "feature_id": [r[1] for r in invalid_rows],
            "reason": [r[2] for r in invalid_rows],
        },
        [r[3] for r in invalid_rows],
        crs,
        inv_cols,
    )
    edges_out = _frame(
        {"grid_code": grid_codes[has_edge]},
        _back(edges[has_edge]),
        crs,
        ["grid_code"],
    )
    pt_cols = [
        "kind",
        "feature_id",
        "name",
        "is_shop",
        "community_code",
        "gap_id",
        "street_id",
        "street_name",
        "side",
        "position_m",
        "distance_m",
    ]
    points_out = _frame(
        {c_: [r[c_] for r in pt_rows] for c_ in pt_cols},
        _back(pt_geoms),
        crs,
        pt_cols,
    )
    if len(points_out):
        # Keep "no gap"/"no community" as missing values, not NaN floats.
        points_out["gap_id"] = pd.array([r["gap_id"] for r in pt_rows], dtype="Int64")
        points_out["community_code"] = pd.Series(
            [r["community_code"] for r in pt_rows], dtype=object, index=points_out.index
        )
    multi_cols = ["kind", "feature_id", "n_grids", "grid_codes"]
    multi_out = _frame(
        {c_: [r[c_] for r in multi_rows] for c_ in multi_cols},
        _back(multi_geoms),
        crs,
        multi_cols,
    )
    grid_cols = [
        "grid_code",
        "community_code",
        "households",
        "shops",
        "pois",
        "addresses",
        "valid",
    ]
    grids_out = _frame(
        {
            "grid_code": grid_codes,
            "community_code": grid_comm,
            "households": grid_hh,
            "shops": _count(
                shop_pairs, n_g, contents.poi_shop[shop_pairs[0]].astype(float)
            ).astype(int),
            "pois": _count(shop_pairs, n_g).astype(int),
            "addresses": _count(addr_pairs, n_g).astype(int),
            "valid": grid_valid,
        },
        np.asarray(grids.geometry.values, dtype=object),
        crs,
        grid_cols,
    )
    grids_out.index = grids.index

    summary = _summarise(
        gaps_out,
        overlaps_out,
        crossings_out,
        invalid_out,
        edges_out,
        points_out,
        multi_out,
        n_grids=len(grids),
        n_communities=len(communities),
        households_source=contents.households_source,
        sliver_width_m=sliver_width_m,
        wcrs=epsg_or_wkt(wcrs),
        worker_col=worker_col,
    )
    report(progress, "coverage", stages, stages)
    logger.info("coverage: %s", summary)
    return CoverageReport(
        gaps=gaps_out,
        overlaps=overlaps_out,
        crossings=crossings_out,
        invalid=invalid_out,
        invalid_edges=edges_out,
        uncovered_points=points_out,
        multi_covered=multi_out,
        grids=grids_out,
        summary=summary,
        crs=epsg_or_wkt(crs),
        working_crs=epsg_or_wkt(wcrs),
    )


def _totals(frame: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {
        "count": len(frame),
        "area_m2": float(frame["area_m2"].sum()) if len(frame) else 0.0,
    }
    for col in _COUNT_COLUMNS:
        values = pd.to_numeric(frame[col], errors="coerce") if len(frame) else []
        out[col] = float(np.nansum(values)) if len(frame) else 0
        if col != "households":
            out[col] = int(out[col])
    return out


def _summarise(
    gaps: gpd.GeoDataFrame,
    overlaps: gpd.GeoDataFrame,
    crossings: gpd.GeoDataFrame,
    invalid: gpd.GeoDataFrame,
    edges: gpd.GeoDataFrame,
    points: gpd.GeoDataFrame,
    multi: gpd.GeoDataFrame,
    **info: Any,
) -> dict[str, Any]:
    kinds = gaps["kind"] if len(gaps) else pd.Series([], dtype=object)
    uncovered_pois = points[points["kind"] == "poi"] if len(points) else points
    summary: dict[str, Any] = {
        "clean": not any(
            len(x) for x in (gaps, overlaps, crossings, invalid, points, multi)
        ),
        "grids": info["n_grids"],
        "communities": info["n_communities"],
        "gaps": _totals(gaps),
        "slivers": _totals(gaps[kinds == "sliver"]),
        "unassigned": _totals(gaps[kinds == "unassigned"]),
        "overlaps": _totals(overlaps),
        "crossings": {
            kind: int((crossings["kind"] == kind).sum()) if len(crossings) else 0
            for kind in ("crossing", "outside", "unknown_community")
        },
        "invalid": len(invalid),
        "invalid_edges": len(edges),
        "uncovered": {
            "pois": len(uncovered_pois),
            "shops": int(uncovered_pois["is_shop"].astype(bool).sum())
            if len(uncovered_pois)
            else 0,
            "addresses": int((points["kind"] == "address").sum()) if len(points) else 0,
        },
        "multi_covered": {
            "pois": int((multi["kind"] == "poi").sum()) if len(multi) else 0,
            "addresses": int((multi["kind"] == "address").sum()) if len(multi) else 0,
        },
        "households_source": info["households_source"],
        "sliver_width_m": info["sliver_width_m"],
        "working_crs": info["wcrs"],
        "worker_col": info["worker_col"],
    }
    return _native(summary)


# ------------------------------------------------------------------------ outputs


def write_coverage_report(
    report_: CoverageReport,
    path: str,
    *,
    extra_layers: dict[str, gpd.GeoDataFrame] | None = None,
) -> list[str]:
    """Write every report layer (plus ``extra_layers``) to a GeoPackage; layer names."""
    written: list[str] = []
    layers = {**report_.layers(), **(extra_layers or {})}
    for name, frame in layers.items():
        out = frame.copy()
        for col in out.columns:
            if col != out.geometry.name and out[col].dtype == object:
                out[col] = out[col].map(lambda v: None if v is None else str(v))
        mode = "w" if not written else "a"
        out.to_file(path, layer=name, driver="GPKG", mode=mode)
        written.append(name)
    return written


_STYLES: dict[str, dict[str, Any]] = {
    "gaps": {"color": "#d62728", "fillColor": "#d62728", "fillOpacity": 0.5},
    "overlaps": {"color": "#9467bd", "fillColor": "#9467bd", "fillOpacity": 0.5},
    "crossings": {"color": "#ff7f0e", "fillColor": "#ff7f0e", "fillOpacity": 0.4},
    "invalid": {"color": "#000000", "fillOpacity": 0.2},
    "invalid_edges": {"color": "#e377c2", "weight": 3},
    "grids": {"color": "#1f77b4", "weight": 1, "fillOpacity": 0.05},
    "micro_grids": {"color": "#2ca02c", "fillColor": "#2ca02c", "fillOpacity": 0.5},
    "shop_groups": {"color": "#bcbd22", "fillColor": "#bcbd22", "fillOpacity": 0.4},
    "territory": {"color": "#17becf", "fillColor": "#17becf", "fillOpacity": 0.3},
}

_POINT_COLORS = {"uncovered_points": "#d62728", "multi_covered": "#9467bd"}


def add_coverage_layers(
    m: Any,
    report_: CoverageReport,
    *,
    extra_layers: dict[str, gpd.GeoDataFrame] | None = None,
    show_grids: bool = True,
    layer_control: bool = True,
) -> Any:
    """Add the report (and e.g. repair proposals) to a folium map as toggleable layers.

    Parameters
    ----------
    m
        A ``folium.Map``.
    report_
        The :class:`CoverageReport` to draw.
    extra_layers
        More layers to draw, e.g. ``{"micro_grids": ..., "shop_groups": ...}``.
    show_grids
        Also draw the plan's grids (thin outlines).
    layer_control
        Add a layer control; pass False when the map gets its own (e.g. the
        ``extra_layers`` hook of :mod:`spatialgrid.render`).

    Returns
    -------
    folium.Map
        ``m``, with one ``FeatureGroup`` per non-empty layer and a layer control.

    Raises
    ------
    ImportError
        When folium is not installed (``pip install spatialgrid[maps]``).
    """
    try:
        import folium
    except ImportError as err:  # pragma: no cover - folium is in the maps extra
        msg = "add_coverage_layers needs folium: pip install 'spatialgrid[maps]'"
        raise ImportError(msg) from err

    layers = {**report_.layers(), **(extra_layers or {})}
    if not show_grids:
        layers.pop("grids", None)
    order = ["grids", *[n for n in layers if n != "grids"]]
    for name in order:
        frame = layers.get(name)
        if frame is None or len(frame) == 0:
            continue
        web = frame.to_crs(4326)
        for col in web.columns:
            if col != web.geometry.name:
                web[col] = web[col].map(
                    lambda v: (
                        None
                        if v is None or (isinstance(v, float) and np.isnan(v))
                        else v
                        if isinstance(v, int | float | str | bool)
                        else str(v)
                    )
                )
        fields = [c for c in web.columns if c != web.geometry.name][:8]
        group = folium.FeatureGroup(name=f"{name} ({len(frame)})", show=name != "grids")
        if name in _POINT_COLORS:
            color = _POINT_COLORS[name]
            for _, row in web.iterrows():
                geom = row.geometry
                tip = "<br>".join(f"{f}: {row[f]}" for f in fields)
                folium.CircleMarker(
                    location=[geom.y, geom.x],
                    radius=4,
                    color=color,
                    fill=True,
                    fill_opacity=0.8,
                    tooltip=tip,
                ).add_to(group)
        else:
            style = _STYLES.get(name, {"color": "#333333"})
            folium.GeoJson(
                web.__geo_interface__,
                style_function=lambda _f, s=style: s,
                tooltip=folium.GeoJsonTooltip(fields=fields) if fields else None,
            ).add_to(group)
        group.add_to(m)
    if layer_control:
        folium.LayerControl(collapsed=False).add_to(m)
    return m
