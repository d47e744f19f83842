"""Domain-aware repairs of coverage faults, as proposals and as new plans.

What a grid office does with the findings of
:func:`spatialgrid.coverage.find_coverage_issues`:

- **slivers** (narrow gaps) merge into the neighbouring grid with the longest shared
  border (:func:`plan_sliver_merges`, :func:`merge_slivers`); opt-in, returning a new
  grids GeoDataFrame — the input plan is never edited;
- **unassigned territory** is proposed to an adjacent grid of the same community that
  stays within the household bounds ``[min, max]`` after taking it, longest shared
  border first; otherwise it is flagged for the planner (:func:`propose_territory`,
  :func:`apply_territory_proposals`);
- **street-front shops** (沿街商铺) outside every grid are grouped along the street
  they front (nearest centre line, same side, consecutive along it). A small group
  is proposed to the grid on the same side of that street — the grid found by
  walking from the street centre line through the shop, away from the street. A
  group past ``micro_grid_min_shops`` shops or ``micro_grid_min_length_m`` metres of
  frontage gets a dedicated street-front micro-grid (沿街商铺专属微网格): a one-sided
  strip along the street segment, clipped to uncovered area, with a fresh grid code
  (:func:`propose_street_front_shops`, :func:`apply_street_front_shops`).

Every proposal states its effect on the receiving grid: households before/after
(shops have none; households in added area come from the optional buildings/blocks)
and shop counts before/after. Metric work in the report's working CRS; outputs in the
CRS of ``grids``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely
from shapely.ops import substring

from spatialgrid.coverage import _Contents, _ids, _native, _street_fronts
from spatialgrid.crs import require_same_crs
from spatialgrid.errors import CodeOverflowError, InputError
from spatialgrid.validate import LINEAL, require_columns, require_frame

if TYPE_CHECKING:
    from spatialgrid.coverage import CoverageReport

logger = logging.getLogger(__name__)

_TOLERANCE_M = 0.05


def _to(frame: gpd.GeoDataFrame, crs: str) -> np.ndarray:
    return np.asarray(frame.to_crs(crs).geometry.values, dtype=object)


def _shared_borders(
    pieces: np.ndarray, grid_geoms: np.ndarray, tolerance_m: float = _TOLERANCE_M
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(piece, grid, length_m)`` for every piece and grid sharing a border."""
    if len(pieces) == 0 or len(grid_geoms) == 0:
        empty = np.zeros(0, dtype=int)
        return empty, empty, np.zeros(0)
    tree = shapely.STRtree(grid_geoms)
    pi, gi = tree.query(pieces, predicate="dwithin", distance=tolerance_m)
    near = shapely.intersection(
        shapely.boundary(pieces[pi]),
        shapely.buffer(shapely.boundary(grid_geoms[gi]), tolerance_m, quad_segs=2),
    )
    return pi, gi, shapely.length(near)


def _grid_households(
    grids: gpd.GeoDataFrame, report: CoverageReport, households_col: str
) -> np.ndarray:
    if households_col in grids.columns:
        return pd.to_numeric(grids[households_col], errors="coerce").to_numpy(float)
    return pd.to_numeric(report.grids["households"], errors="coerce").to_numpy(float)


def _check_grids(
    grids: gpd.GeoDataFrame, report: CoverageReport, grid_code_col: str
) -> None:
    require_frame(grids, "grids", columns=[grid_code_col])
    codes = set(map(str, grids[grid_code_col]))
    known = set(map(str, report.grids["grid_code"]))
    if codes != known:
        msg = (
            f"grids has {len(codes)} grid codes but the report was made for "
            f"{len(known)} others ({sorted(codes ^ known)[:5]} differ); run "
            "find_coverage_issues on these grids first."
        )
        raise InputError(msg)


def _absorb(
    grids: gpd.GeoDataFrame,
    additions: list[tuple[Any, Any, float]],
    *,
    grid_code_col: str,
    households_col: str,
) -> gpd.GeoDataFrame:
    """A copy of ``grids`` where each grid code takes its added pieces (input CRS)."""
    out = grids.copy()
    if not additions:
        return out
    by_code: dict[Any, list[tuple[Any, float]]] = {}
    for code, geom, hh in additions:
        by_code.setdefault(str(code), []).append((geom, hh))
    codes = out[grid_code_col].astype(str).to_numpy()
    geom_col = out.geometry.name
    for pos in np.flatnonzero(np.isin(codes, list(by_code))):
        items = by_code[codes[pos]]
        label = out.index[pos]
        base = out.geometry.iloc[pos]
        if not shapely.is_valid(base):
            base = shapely.make_valid(base)
        merged = shapely.union_all([base, *(g for g, _ in items)])
        parts = shapely.get_parts(merged)
        polys = [p for p in parts if shapely.get_type_id(p) in (3, 6)]
        out.at[label, geom_col] = shapely.union_all(polys) if polys else merged
        if households_col in out.columns:
            extra = float(np.nansum([h for _, h in items]))
            if pd.api.types.is_integer_dtype(out[households_col].dtype):
                out.at[label, households_col] = int(
                    out.at[label, households_col]
                ) + round(extra)
            else:
                out.at[label, households_col] = out.at[label, households_col] + extra
    return out


# ------------------------------------------------------------------------ slivers


def _working_arrays(
    pieces: gpd.GeoDataFrame,
    grids: gpd.GeoDataFrame,
    report: CoverageReport,
    grid_code_col: str,
    community_col: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gap pieces and (valid) grid geometries in the working CRS, grid codes and
    community codes, as the repairs need them."""
    wcrs = report.working_crs
    comm = (
        grids[community_col].astype(str).to_numpy()
        if community_col in grids.columns
        else report.grids["community_code"].astype(str).to_numpy()
    )
    return (
        _to(pieces, wcrs),
        shapely.make_valid(_to(grids, wcrs)),
        grids[grid_code_col].astype(object).to_numpy(),
        comm,
    )


def plan_sliver_merges(
    grids: gpd.GeoDataFrame,
    report: CoverageReport,
    *,
    grid_code_col: str = "grid_code",
    community_col: str = "community_code",
) -> pd.DataFrame:
    """Which grid each sliver merges into: the neighbour with the longest shared border.

    Neighbours in the sliver's own community win over others; a sliver touching no
    grid stays unmerged (``grid_code`` None).

    Parameters
    ----------
    grids
        The plan the report was made for.
    report
        From :func:`spatialgrid.coverage.find_coverage_issues`.
    grid_code_col, community_col
        Column names in ``grids``.

    Returns
    -------
    pandas.DataFrame
        ``gap_id``, ``community_code``, ``grid_code``, ``shared_border_m``,
        ``households``, ``area_m2``.
    """
    _check_grids(grids, report, grid_code_col)
    slivers = report.gaps[report.gaps["kind"] == "sliver"]
    cols = [
        "gap_id",
        "community_code",
        "grid_code",
        "shared_border_m",
        "households",
        "area_m2",
    ]
    if slivers.empty:
        return pd.DataFrame({c: [] for c in cols})
    pieces, grid_geoms, codes, comm = _working_arrays(
        slivers, grids, report, grid_code_col, community_col
    )
    pi, gi, length = _shared_borders(pieces, grid_geoms)
    sliver_comm = slivers["community_code"].astype(str).to_numpy()
    rows = []
    for k in range(len(slivers)):
        mine = (pi == k) & (length > 0)
        best_code, best_len = None, 0.0
        if mine.any():
            same = mine & (comm[gi] == sliver_comm[k])
            pick = same if same.any() else mine
            # Longest border; ties (to the centimetre) go to the smaller code.
            j = min(
                np.flatnonzero(pick),
                key=lambda x: (-round(float(length[x]), 2), str(codes[gi[x]])),
            )
            best_code, best_len = codes[gi[j]], float(length[j])
        rows.append(
            {
                "gap_id": slivers["gap_id"].iloc[k],
                "community_code": sliver_comm[k],
                "grid_code": best_code,
                "shared_border_m": round(best_len, 3),
                "households": slivers["households"].iloc[k],
                "area_m2": slivers["area_m2"].iloc[k],
            }
        )
    return pd.DataFrame(rows, columns=cols)


def merge_slivers(
    grids: gpd.GeoDataFrame,
    report: CoverageReport,
    *,
    grid_code_col: str = "grid_code",
    community_col: str = "community_code",
    households_col: str = "households",
) -> gpd.GeoDataFrame:
    """A NEW plan with every sliver merged into its longest-border neighbour.

    Parameters
    ----------
    grids
        The plan the report was made for (left untouched).
    report
        From :func:`spatialgrid.coverage.find_coverage_issues`.
    grid_code_col, community_col, households_col
        Column names in ``grids``; the households of a receiving grid grow by the
        sliver's households (usually 0).

    Returns
    -------
    geopandas.GeoDataFrame
        A copy of ``grids`` (same index, columns and CRS) with merged geometries.
    """
    merges = plan_sliver_merges(
        grids, report, grid_code_col=grid_code_col, community_col=community_col
    )
    slivers = report.gaps.set_index("gap_id").to_crs(grids.crs).geometry
    additions = [
        (row.grid_code, slivers.loc[row.gap_id], row.households)
        for row in merges.itertuples()
        if row.grid_code is not None
    ]
    left = len(merges) - len(additions)
    if left:
        logger.warning("%d sliver(s) touch no grid and were left as they are", left)
    return _absorb(
        grids, additions, grid_code_col=grid_code_col, households_col=households_col
    )


# ------------------------------------------------------------- unassigned territory


def propose_territory(
    grids: gpd.GeoDataFrame,
    report: CoverageReport,
    *,
    grid_code_col: str = "grid_code",
    community_col: str = "community_code",
    households_col: str = "households",
    min_households: int = 400,
    max_households: int = 500,
    min_border_m: float = 1.0,
) -> gpd.GeoDataFrame:
    """Propose each unassigned-territory gap to an adjacent grid that keeps the bounds.

    Candidates are grids of the gap's community sharing at least ``min_border_m`` of
    border with it whose households stay within ``[min_households, max_households]``
    after taking the gap's households; the longest shared border wins. Gaps are
    handled largest (households) first and a grid's running total is updated, so two
    gaps never push one grid past the bound together. A gap with no such grid is
    flagged for the planner, with the reason.

    Returns
    -------
    geopandas.GeoDataFrame
        ``gap_id``, ``community_code``, ``households``, ``area_m2``, ``status``
        (``"proposed"`` | ``"flagged"``), ``grid_code``, ``shared_border_m``,
        ``households_before``, ``households_after``, ``reason``; geometry = the gap
        (CRS of ``grids``).
    """
    if min_households > max_households:
        msg = (
            f"min_households={min_households} exceeds max_households={max_households}; "
            "swap them"
        )
        raise InputError(msg)
    _check_grids(grids, report, grid_code_col)
    gaps = report.gaps[report.gaps["kind"] == "unassigned"].to_crs(grids.crs)
    cols = [
        "gap_id",
        "community_code",
        "households",
        "area_m2",
        "status",
        "grid_code",
        "shared_border_m",
        "households_before",
        "households_after",
        "reason",
    ]
    if gaps.empty:
        return gpd.GeoDataFrame(
            {c: pd.Series([], dtype=object) for c in cols},
            geometry=gpd.GeoSeries([], crs=grids.crs),
        )
    pieces, grid_geoms, codes, comm = _working_arrays(
        gaps, grids, report, grid_code_col, community_col
    )
    running = _grid_households(grids, report, households_col).copy()
    pi, gi, length = _shared_borders(pieces, grid_geoms)
    gap_hh = pd.to_numeric(gaps["households"], errors="coerce").to_numpy(float)
    gap_comm = gaps["community_code"].astype(str).to_numpy()
    rows: dict[int, dict[str, Any]] = {}
    for k in np.argsort(-np.nan_to_num(gap_hh), kind="stable"):
        hh = 0.0 if np.isnan(gap_hh[k]) else float(gap_hh[k])
        mine = np.flatnonzero(
            (pi == k) & (length >= min_border_m) & (comm[gi] == gap_comm[k])
        )
        base = {
            "gap_id": gaps["gap_id"].iloc[k],
            "community_code": gap_comm[k],
            "households": gap_hh[k],
            "area_m2": gaps["area_m2"].iloc[k],
            "grid_code": None,
            "shared_border_m": None,
            "households_before": None,
            "households_after": None,
        }
        if len(mine) == 0:
            rows[k] = {
                **base,
                "status": "flagged",
                "reason": "no grid of its community borders it",
            }
            continue
        fits = [
            j for j in mine if min_households <= running[gi[j]] + hh <= max_households
        ]
        if not fits:
            tried = ", ".join(
                f"{codes[gi[j]]}: {running[gi[j]]:g}+{hh:g}={running[gi[j]] + hh:g}"
                for j in mine[np.argsort(-length[mine])][:4]
            )
            rows[k] = {
                **base,
                "status": "flagged",
                "reason": (
                    f"every bordering grid would leave [{min_households}, "
                    f"{max_households}] households ({tried})"
                ),
            }
            continue
        j = min(fits, key=lambda x: (-round(float(length[x]), 2), str(codes[gi[x]])))
        g = gi[j]
        rows[k] = {
            **base,
            "status": "proposed",
            "grid_code": codes[g],
            "shared_border_m": round(float(length[j]), 3),
            "households_before": float(running[g]),
            "households_after": float(running[g] + hh),
            "reason": "longest shared border within the household bounds",
        }
        running[g] += hh
    ordered = [rows[k] for k in range(len(gaps))]
    return gpd.GeoDataFrame(
        pd.DataFrame(ordered, columns=cols),
        geometry=gpd.GeoSeries(gaps.geometry.values, crs=grids.crs),
    )


def apply_territory_proposals(
    grids: gpd.GeoDataFrame,
    proposals: gpd.GeoDataFrame,
    *,
    grid_code_col: str = "grid_code",
    households_col: str = "households",
) -> gpd.GeoDataFrame:
    """A NEW plan where every ``"proposed"`` territory joins its grid (flagged stay)."""
    require_same_crs(grids=grids, proposals=proposals)
    chosen = proposals[proposals["status"] == "proposed"]
    additions = [
        (row.grid_code, row.geometry, float(np.nan_to_num(row.households)))
        for row in chosen.itertuples()
    ]
    return _absorb(
        grids, additions, grid_code_col=grid_code_col, households_col=households_col
    )


# ------------------------------------------------------------- street-front shops


@dataclass(frozen=True)
class StreetFrontProposals:
    """Street-front shop groups and what to do with each.

    Attributes
    ----------
    groups
        One row per group: ``group_id``, ``street_id``, ``street_name``, ``side``,
        ``n_shops``, ``length_m``, ``action`` (``"assign"`` | ``"micro_grid"`` |
        ``"flag"``), ``grid_code`` (receiving grid or the new micro-grid's code),
        ``community_code``, ``households_before``, ``households_after``,
        ``shops_before``, ``shops_after``, ``reason``; geometry = the strip that
        would join the plan (CRS of ``grids``).
    shops
        One row per uncovered shop: ``poi_id``, ``group_id`` (None when no street
        was found near it), ``street_id``, ``side``, ``distance_m``, ``facing_grid``.
    micro_grids
        New grids for ``"micro_grid"`` groups: ``grid_code``, ``community_code``,
        ``households``, ``shops``, ``kind`` (``"street_front"``), ``street_id``,
        ``street_name``.
    summary
        JSON-serialisable counts.
    """

    groups: gpd.GeoDataFrame
    shops: pd.DataFrame
    micro_grids: gpd.GeoDataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _next_code(community: str, taken: set[str]) -> str:
    """The next free grid code of ``community`` (same width as its existing codes)."""
    suffixes = [
        c[len(community) :]
        for c in taken
        if c.startswith(community) and c[len(community) :].isdigit()
    ]
    width = max((len(s) for s in suffixes), default=2)
    nxt = max((int(s) for s in suffixes), default=0) + 1
    if nxt >= 10**width:
        msg = (
            f"community {community!r} has no free {width}-digit grid sequence number "
            f"for a street-front micro-grid (next would be {nxt}); use the 3-digit "
            "'db11' scheme or assign the shops to existing grids"
        )
        raise CodeOverflowError(msg)
    return f"{community}{nxt:0{width}d}"


def _first_hit(
    x: np.ndarray,
    y: np.ndarray,
    ux: np.ndarray,
    uy: np.ndarray,
    length: float,
    tree: shapely.STRtree,
    geoms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """First polygon hit by each ray from (x, y) along (ux, uy); (-1, nan) if none."""
    n = len(x)
    hit = np.full(n, -1, dtype=int)
    dist = np.full(n, np.nan)
    if n == 0:
        return hit, dist
    starts = shapely.points(x, y)
    rays = shapely.linestrings(
        np.stack(
            [np.stack([x, y], axis=1), np.stack([x + ux * length, y + uy * length], 1)],
            axis=1,
        )
    )
    ri, gi = tree.query(rays, predicate="intersects")
    if len(ri):
        d = shapely.distance(starts[ri], shapely.intersection(rays[ri], geoms[gi]))
        table = pd.DataFrame({"r": ri, "g": gi, "d": d}).sort_values(["r", "d"])
        first = table.drop_duplicates("r")
        hit[first["r"].to_numpy()] = first["g"].to_numpy()
        dist[first["r"].to_numpy()] = first["d"].to_numpy()
    return hit, dist


def propose_street_front_shops(
    grids: gpd.GeoDataFrame,
    report: CoverageReport,
    streets: gpd.GeoDataFrame,
    *,
    blocks: gpd.GeoDataFrame | None = None,
    buildings: gpd.GeoDataFrame | None = None,
    grid_code_col: str = "grid_code",
    community_col: str = "community_code",
    households_col: str = "households",
    micro_grid_min_shops: int = 10,
    micro_grid_min_length_m: float = 150.0,
    group_gap_m: float = 40.0,
    search_m: float = 60.0,
    end_margin_m: float = 5.0,
    shop_margin_m: float = 5.0,
) -> StreetFrontProposals:
    """Group uncovered shops along their street and propose an owner for each group.

    Parameters
    ----------
    grids
        The plan the report was made for.
    report
        From :func:`spatialgrid.coverage.find_coverage_issues` (with ``pois``).
    streets
        Street centre lines (rows with ``internal`` True are ignored).
    blocks, buildings
        Optional, to count households inside each proposed strip (else 0: shops
        have no households).
    grid_code_col, community_col, households_col
        Column names in ``grids``.
    micro_grid_min_shops, micro_grid_min_length_m
        A group with at least this many shops, or this much frontage (metres along
        the street), gets a dedicated micro-grid instead of joining a grid.
    group_gap_m
        Shops farther apart than this along one street side start a new group.
    search_m
        How far from a street its shops, and behind a shop its facing grid, may be.
    end_margin_m, shop_margin_m
        Strip extension beyond the first/last shop along the street, and beyond the
        deepest shop away from it when no facing grid bounds the strip.

    Returns
    -------
    StreetFrontProposals
        Groups with their strips and effects, the shop → group table, the new
        micro-grids and a summary.
    """
    _check_grids(grids, report, grid_code_col)
    require_frame(streets, "streets", geometry_types=LINEAL, allow_empty=True)
    require_same_crs(grids=grids, streets=streets)
    if micro_grid_min_shops < 1:
        msg = f"micro_grid_min_shops must be >= 1, got {micro_grid_min_shops}"
        raise InputError(msg)
    wcrs = report.working_crs
    crs = grids.crs
    pts_frame = report.uncovered_points
    shops_frame = pts_frame[
        (pts_frame["kind"] == "poi") & pts_frame["is_shop"].astype(bool)
    ]
    street_w = streets.to_crs(wcrs)
    if "internal" in street_w.columns:
        street_w = street_w.loc[~street_w["internal"].fillna(False).astype(bool)]
    street_w = street_w.reset_index(drop=True)
    lines = np.asarray(street_w.geometry.values, dtype=object)
    street_ids = _ids(street_w, "street_id")  # the ids _street_fronts reports
    pts = _to(shops_frame, wcrs) if len(shops_frame) else np.zeros(0, dtype=object)
    fronts = _street_fronts(pts, street_w, search_m)
    grid_geoms = shapely.make_valid(_to(grids, wcrs))
    codes = grids[grid_code_col].astype(object).to_numpy()
    grid_comm = (
        grids[community_col].astype(str).to_numpy()
        if community_col in grids.columns
        else report.grids["community_code"].astype(str).to_numpy()
    )
    grid_hh = _grid_households(grids, report, households_col).copy()
    grid_shops = report.grids["shops"].to_numpy(int).copy()
    grid_tree = shapely.STRtree(grid_geoms)

    # The grid each shop faces: walk from the street through the shop, away from it.
    n = len(pts)
    facing = np.full(n, -1, dtype=int)
    reach = np.full(n, np.nan)
    across = np.zeros(n, dtype=bool)
    line_of = np.full(n, -1, dtype=int)
    if n:
        has = fronts["_line"] >= 0
        line_of[has] = fronts["_line"][has]
        k_has = np.flatnonzero(has)
        foot = shapely.line_interpolate_point(
            lines[line_of[k_has]], fronts["position_m"][k_has]
        )
        px, py = shapely.get_x(pts[k_has]), shapely.get_y(pts[k_has])
        fx, fy = shapely.get_x(foot), shapely.get_y(foot)
        dx, dy = px - fx, py - fy
        norm = np.hypot(dx, dy)
        # A shop drawn on the centre line: step off on its recorded side.
        on_line = norm < 1e-6
        if on_line.any():
            a = shapely.line_interpolate_point(
                lines[line_of[k_has[on_line]]],
                np.maximum(fronts["position_m"][k_has[on_line]] - 0.5, 0),
            )
            b = shapely.line_interpolate_point(
                lines[line_of[k_has[on_line]]],
                fronts["position_m"][k_has[on_line]] + 0.5,
            )
            tx = shapely.get_x(b) - shapely.get_x(a)
            ty = shapely.get_y(b) - shapely.get_y(a)
            sgn = np.where(fronts["side"][k_has[on_line]] == "left", 1.0, -1.0)
            dx[on_line], dy[on_line] = -ty * sgn, tx * sgn
            norm[on_line] = np.hypot(dx[on_line], dy[on_line])
        ux, uy = dx / np.maximum(norm, 1e-9), dy / np.maximum(norm, 1e-9)
        # Same side first; a shop with nothing behind it (e.g. beyond the outer
        # ring road) looks across the street instead.
        off = 0.01  # start just off the centre line: a grid bounded by it is not hit
        for sign in (1.0, -1.0):
            todo = np.flatnonzero(facing[k_has] < 0)
            if len(todo) == 0:
                break
            hit, dist = _first_hit(
                fx[todo] + sign * ux[todo] * off,
                fy[todo] + sign * uy[todo] * off,
                sign * ux[todo],
                sign * uy[todo],
                search_m,
                grid_tree,
                grid_geoms,
            )
            found = hit >= 0
            facing[k_has[todo[found]]] = hit[found]
            reach[k_has[todo[found]]] = dist[found] + off
            across[k_has[todo[found]]] = sign < 0

    contents = _Contents(
        blocks=blocks.to_crs(wcrs) if blocks is not None else None,
        buildings=buildings.to_crs(wcrs) if buildings is not None else None,
        compounds=None,
        pois=None,
        addresses=None,
        households_col=households_col,
    )

    # Group: same street, same side, consecutive along it.
    shop_group = np.full(n, None, dtype=object)
    table = pd.DataFrame(
        {
            "k": np.arange(n),
            "line": line_of,
            "side": fronts["side"],
            "pos": fronts["position_m"],
        }
    )
    table = table[table["line"] >= 0].sort_values(["line", "side", "pos"])
    groups: list[np.ndarray] = []
    for _, part in table.groupby(["line", "side"], sort=True):
        pos = part["pos"].to_numpy()
        breaks = np.flatnonzero(np.diff(pos) > group_gap_m) + 1
        groups.extend(np.split(part["k"].to_numpy(), breaks))

    taken = set(map(str, codes))
    claimed = shapely.Polygon()
    rows: list[dict[str, Any]] = []
    strips: list[Any] = []
    micro_rows: list[dict[str, Any]] = []
    micro_geoms: list[Any] = []
    poi_ids = shops_frame["feature_id"].astype(object).to_numpy()
    for gid, members in enumerate(groups, start=1):
        shop_group[members] = gid
        li = int(line_of[members[0]])
        line = lines[li]
        side = fronts["side"][members[0]]
        pos = fronts["position_m"][members]
        s0 = max(float(pos.min()) - end_margin_m, 0.0)
        s1 = min(float(pos.max()) + end_margin_m, float(line.length))
        segment = substring(line, s0, s1)
        frontage = float(pos.max() - pos.min())
        hit = facing[members][facing[members] >= 0]
        target = Counter(hit.tolist()).most_common(1)[0][0] if len(hit) else -1
        behind = (facing[members] >= 0) & ~across[members]
        depth_parts = np.where(
            behind,
            reach[members],
            fronts["distance_m"][members] + shop_margin_m,
        )
        depth = float(np.nanmax(depth_parts)) + 0.5
        strip = shapely.buffer(
            segment,
            depth if side == "left" else -depth,
            single_sided=True,
            cap_style="flat",
        )
        # Only area no grid (and no earlier group) holds.
        near = grid_geoms[grid_tree.query(strip, predicate="intersects")]
        if len(near):
            strip = shapely.difference(strip, shapely.union_all(near))
        strip = shapely.difference(strip, claimed)
        polys = [p for p in shapely.get_parts(strip) if shapely.get_type_id(p) == 3]
        strip = shapely.union_all(polys) if polys else shapely.Polygon()
        claimed = shapely.union_all([claimed, strip])
        strip_hh = float(np.nan_to_num(contents.households(np.array([strip]))[0]))
        comms = [
            c
            for c in report.uncovered_points.loc[shops_frame.index[members]][
                "community_code"
            ]
            if c is not None and not (isinstance(c, float) and np.isnan(c))
        ]
        community = (
            Counter(map(str, comms)).most_common(1)[0][0]
            if comms
            else (grid_comm[target] if target >= 0 else None)
        )
        n_shops = len(members)
        big = n_shops >= micro_grid_min_shops or frontage >= micro_grid_min_length_m
        row: dict[str, Any] = {
            "group_id": gid,
            "street_id": street_ids[li],
            "street_name": fronts["street_name"][members[0]],
            "side": side,
            "n_shops": n_shops,
            "length_m": round(frontage, 2),
            "community_code": community,
        }
        if big and community is not None and not strip.is_empty:
            code = _next_code(str(community), taken)
            taken.add(code)
            row |= {
                "action": "micro_grid",
                "grid_code": code,
                "households_before": 0.0,
                "households_after": strip_hh,
                "shops_before": 0,
                "shops_after": n_shops,
                "reason": (
                    f"{n_shops} shops over {frontage:.0f} m reach the micro-grid "
                    f"threshold ({micro_grid_min_shops} shops or "
                    f"{micro_grid_min_length_m:g} m)"
                ),
            }
            micro_rows.append(
                {
                    "grid_code": code,
                    "community_code": community,
                    "households": strip_hh,
                    "shops": n_shops,
                    "kind": "street_front",
                    "street_id": street_ids[li],
                    "street_name": row["street_name"],
                }
            )
            micro_geoms.append(strip)
        elif target >= 0:
            row |= {
                "action": "assign",
                "grid_code": codes[target],
                "households_before": float(grid_hh[target]),
                "households_after": float(grid_hh[target] + strip_hh),
                "shops_before": int(grid_shops[target]),
                "shops_after": int(grid_shops[target] + n_shops),
                "reason": (
                    f"grid on the {side} side of the street, behind the shops"
                    if not across[members][facing[members] == target].all()
                    else "no grid behind the shops on their side: grid across the "
                    "street (check the community boundary)"
                ),
            }
            grid_shops[target] += n_shops
            grid_hh[target] += strip_hh
        else:
            row |= {
                "action": "flag",
                "grid_code": None,
                "households_before": None,
                "households_after": None,
                "shops_before": None,
                "shops_after": None,
                "reason": (
                    f"no grid within {search_m:g} m behind the shops on that side"
                    if not big
                    else "micro-grid strip is empty or has no community"
                ),
            }
        rows.append(row)
        strips.append(strip)

    group_cols = [
        "group_id",
        "street_id",
        "street_name",
        "side",
        "n_shops",
        "length_m",
        "action",
        "grid_code",
        "community_code",
        "households_before",
        "households_after",
        "shops_before",
        "shops_after",
        "reason",
    ]
    groups_out = gpd.GeoDataFrame(
        pd.DataFrame(rows, columns=group_cols),
        geometry=gpd.GeoSeries(np.asarray(strips, dtype=object), crs=wcrs).to_crs(crs),
    )
    shops_out = pd.DataFrame(
        {
            "poi_id": poi_ids,
            "group_id": shop_group,
            "street_id": fronts["street_id"],
            "side": fronts["side"],
            "distance_m": np.round(fronts["distance_m"], 2),
            "facing_grid": np.where(
                facing >= 0, codes[np.maximum(facing, 0)], None
            ).astype(object),
        }
    )
    micro_cols = [
        "grid_code",
        "community_code",
        "households",
        "shops",
        "kind",
        "street_id",
        "street_name",
    ]
    micro_out = gpd.GeoDataFrame(
        pd.DataFrame(micro_rows, columns=micro_cols),
        geometry=gpd.GeoSeries(np.asarray(micro_geoms, dtype=object), crs=wcrs).to_crs(
            crs
        ),
    )
    actions = groups_out["action"].value_counts().to_dict() if rows else {}
    summary = _native(
        {
            "uncovered_shops": n,
            "shops_without_street": int(sum(g is None for g in shop_group)),
            "groups": len(rows),
            "assign": int(actions.get("assign", 0)),
            "micro_grid": int(actions.get("micro_grid", 0)),
            "flag": int(actions.get("flag", 0)),
            "shops_assigned": int(
                groups_out.loc[groups_out["action"] == "assign", "n_shops"].sum()
            )
            if rows
            else 0,
            "shops_in_micro_grids": int(
                groups_out.loc[groups_out["action"] == "micro_grid", "n_shops"].sum()
            )
            if rows
            else 0,
        }
    )
    return StreetFrontProposals(
        groups=groups_out, shops=shops_out, micro_grids=micro_out, summary=summary
    )


def apply_street_front_shops(
    grids: gpd.GeoDataFrame,
    proposals: StreetFrontProposals,
    *,
    grid_code_col: str = "grid_code",
    community_col: str = "community_code",
    households_col: str = "households",
) -> gpd.GeoDataFrame:
    """A NEW plan: assigned strips join their grids, micro-grids are appended.

    Micro-grid rows get ``grid_code_col``, ``community_col`` and ``households_col``
    (``flags`` = ``"street_front_micro_grid"`` and ``n_blocks`` = 0 when the plan
    has those columns); other columns are left empty.
    """
    require_columns(grids, [grid_code_col], "grids")
    assigned = proposals.groups[proposals.groups["action"] == "assign"]
    additions = [
        (
            row.grid_code,
            row.geometry,
            float(row.households_after) - float(row.households_before),
        )
        for row in assigned.to_crs(grids.crs).itertuples()
        if not row.geometry.is_empty
    ]
    out = _absorb(
        grids, additions, grid_code_col=grid_code_col, households_col=households_col
    )
    micro = proposals.micro_grids.to_crs(grids.crs)
    if micro.empty:
        return out
    new = pd.DataFrame(index=range(len(micro)), columns=out.columns, dtype=object)
    new[grid_code_col] = micro["grid_code"].to_numpy()
    if community_col in out.columns:
        new[community_col] = micro["community_code"].to_numpy()
    if households_col in out.columns:
        hh = micro["households"].to_numpy(float)
        new[households_col] = (
            np.round(hh).astype(int)
            if pd.api.types.is_integer_dtype(out[households_col].dtype)
            else hh
        )
    if "flags" in out.columns:
        new["flags"] = "street_front_micro_grid"
    if "n_blocks" in out.columns:
        new["n_blocks"] = 0
    new[out.geometry.name] = micro.geometry.to_numpy()
    appended = gpd.GeoDataFrame(new, geometry=out.geometry.name, crs=grids.crs)
    combined = pd.concat([out, appended], ignore_index=True)
    for col in out.columns:
        if col != out.geometry.name:
            try:
                combined[col] = combined[col].astype(out[col].dtype)
            except (TypeError, ValueError):
                logger.debug("column %r keeps a mixed dtype", col)
    return gpd.GeoDataFrame(combined, geometry=out.geometry.name, crs=grids.crs)
