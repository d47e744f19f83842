"""Planner edits of a grid plan, and the plan validator they (and uploads) report with.

A planner moves blocks between grids, merges grids, or splits one, then asks what
is now wrong. :func:`apply_edits` applies a list of operations to a plan and
returns a new draft with its violations; :func:`validate_plan` checks any plan
(stored, edited, hand-drawn) against the hard rules of DOMAIN.md:

- **bounds**: households per grid within ``min_households``–``max_households``;
- **contiguity**: a grid's blocks (or block parts) form one piece along shared
  street edges (rook, not a corner);
- **nesting**: a grid's blocks all lie in its one community;
- **gaps / overlaps**: every block is assigned, whole blocks to exactly one grid;
  grid polygons do not overlap.

Violations are returned as rows (kind, grids and blocks involved, households,
detail), never raised: an invalid draft is still a draft a planner can fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely
from pyproj import CRS

from spatialgrid.adjacency import pieces, polsby_popper, shared_edges
from spatialgrid.crs import require_same_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import InputError
from spatialgrid.rebalance import next_grid_codes
from spatialgrid.validate import invalid_reasons, repair_invalid, require_columns

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "VIOLATION_COLUMNS",
    "EditResult",
    "apply_edits",
    "build_grids",
    "validate_plan",
]

#: Columns of a violations table.
VIOLATION_COLUMNS = ("kind", "grid_codes", "block_ids", "households", "detail")

_OPS = ("move", "merge", "split")


@dataclass(frozen=True)
class EditResult:
    """An edited draft plan and what is wrong with it.

    Attributes
    ----------
    grids, assignments
        The edited plan (same columns as the input plan, input CRS).
    violations
        :func:`validate_plan` of the edited plan.
    summary
        ``grids_touched``, ``codes_created``, ``codes_retired``,
        ``households_moved``, ``operations``.
    """

    grids: gpd.GeoDataFrame
    assignments: pd.DataFrame
    violations: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------- helpers


def _polys(geom: shapely.Geometry | None) -> shapely.Geometry | None:
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    return shapely.union_all(np.asarray(parts, dtype=object)) if parts else None


def _violation(
    kind: str,
    grids: Iterable[str] = (),
    blocks: Iterable[str] = (),
    households: int | None = None,
    detail: str = "",
) -> dict[str, Any]:
    return {
        "kind": kind,
        "grid_codes": ",".join(sorted({str(g) for g in grids})),
        "block_ids": ",".join(sorted({str(b) for b in blocks})),
        "households": households,
        "detail": detail,
    }


def _row_households(assignments: pd.DataFrame, block_hh: dict[str, int]) -> np.ndarray:
    """Households per assignment row under the blocks' current counts.

    A whole block holds its block's households; the parts of a split block share
    the block's households in proportion to the rows' own counts (the plan's
    split), rounded so the block total is kept. Blocks unknown to ``block_hh``
    keep the rows' own counts.
    """
    from spatialgrid.split import allocate_households

    bid = assignments["block_id"].astype(str).to_numpy()
    if "households" in assignments.columns:
        own = pd.to_numeric(assignments["households"], errors="coerce").to_numpy(float)
    else:
        own = np.full(len(bid), np.nan)
    rows_of: dict[str, list[int]] = {}
    for r, b in enumerate(bid):
        rows_of.setdefault(b, []).append(r)
    out = np.zeros(len(bid), dtype=np.int64)
    for b, rows in rows_of.items():
        w = own[rows]
        if b not in block_hh:
            out[rows] = np.nan_to_num(w, nan=0.0).astype(np.int64)
        elif len(rows) == 1:
            out[rows[0]] = int(block_hh[b])
        else:
            if not np.isfinite(w).all() or w.sum() <= 0:
                w = np.ones(len(rows))
            out[rows] = allocate_households(int(block_hh[b]), w)
    return out


def _unit_geoms(
    assignments: pd.DataFrame,
    block_geom: dict[str, Any],
    grid_geom: dict[str, Any],
) -> list[Any]:
    """Geometry of each assignment row: the block, or block ∩ grid for a part."""
    bid = assignments["block_id"].astype(str).to_numpy()
    code = assignments["grid_code"].astype(str).to_numpy()
    n_grids: dict[str, set[str]] = {}
    for b, c in zip(bid, code, strict=True):
        n_grids.setdefault(b, set()).add(c)
    out: list[Any] = []
    for b, c in zip(bid, code, strict=True):
        g = block_geom.get(b)
        if g is None:
            out.append(None)
        elif len(n_grids[b]) > 1 and grid_geom.get(c) is not None:
            out.append(_polys(shapely.intersection(g, grid_geom[c])))
        else:
            out.append(g)
    return out


# ------------------------------------------------------------------ validation


def validate_plan(
    blocks: gpd.GeoDataFrame,
    grids: gpd.GeoDataFrame,
    assignments: pd.DataFrame,
    *,
    households_col: str = "households",
    community_col: str = "community_code",
    id_col: str = "block_id",
    min_households: int = 400,
    max_households: int = 500,
    working_crs: Any = None,
    overlap_tolerance_m2: float = 1.0,
    only_grids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Every broken rule of a plan, with the grids and blocks involved.

    Parameters
    ----------
    blocks
        Street blocks (``id_col``, ``households_col``, ``community_col``).
    grids
        ``grid_code``, ``community_code`` (optional) and polygons, same CRS.
    assignments
        ``block_id``, ``grid_code`` and, for block parts, ``households`` and
        ``part_id``.
    min_households, max_households
        Bounds per grid.
    working_crs
        Projected CRS for adjacency and areas (default: estimated).
    overlap_tolerance_m2
        Overlaps between grid polygons smaller than this are ignored.
    only_grids
        Check bounds, contiguity and overlaps for these codes only (gaps and
        unknown blocks are always checked); default every grid.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`VIOLATION_COLUMNS`; ``kind`` is one of ``below_min``,
        ``above_max``, ``not_contiguous``, ``nesting``, ``gap``, ``overlap``,
        ``unknown_block``, ``unknown_grid``, ``empty_grid``,
        ``invalid_geometry`` (a self-intersecting or otherwise invalid grid
        polygon as given, with GEOS's reason; overlaps are measured on
        repaired copies). Empty when the plan obeys every rule.

    Raises
    ------
    MissingColumnError, MissingCRSError, CRSMismatchError
        On broken input contracts.
    """
    require_columns(blocks, (id_col, households_col, community_col), "blocks")
    require_columns(grids, ("grid_code",), "grids")
    require_columns(assignments, ("block_id", "grid_code"), "assignments")
    require_same_crs(blocks=blocks, grids=grids)
    lo, hi = int(min_households), int(max_households)
    crs = _working_crs(blocks, working_crs)
    ids = blocks[id_col].astype(str).to_numpy()
    block_hh = dict(zip(ids, blocks[households_col].astype("int64"), strict=True))
    block_comm = dict(zip(ids, blocks[community_col].astype(str), strict=True))
    codes = grids["grid_code"].astype(str).to_numpy()
    check = set(codes) if only_grids is None else {str(c) for c in only_grids}
    grid_comm = (
        dict(zip(codes, grids["community_code"].astype(str), strict=True))
        if "community_code" in grids.columns
        else {}
    )
    a = assignments.reset_index(drop=True)
    bid = a["block_id"].astype(str).to_numpy()
    code = a["grid_code"].astype(str).to_numpy()
    part = (
        a["part_id"].to_numpy(dtype=object)
        if "part_id" in a.columns
        else np.full(len(a), None, dtype=object)
    )
    hh = _row_households(a, block_hh)
    out: list[dict[str, Any]] = []

    unknown = sorted(set(bid) - set(ids))
    if unknown:
        out.append(
            _violation(
                "unknown_block",
                grids=set(code[np.isin(bid, unknown)]),
                blocks=unknown,
                detail=f"{len(unknown)} assigned block(s) are not in the blocks layer",
            )
        )
    bad_codes = sorted(set(code) - set(codes))
    if bad_codes:
        out.append(
            _violation(
                "unknown_grid",
                grids=bad_codes,
                blocks=set(bid[np.isin(code, bad_codes)]),
                detail="assignments name grid codes that are not in the grids layer",
            )
        )
    gaps = sorted(set(ids) - set(bid))
    if gaps:
        out.append(
            _violation(
                "gap",
                blocks=gaps,
                households=int(sum(block_hh[b] for b in gaps)),
                detail=f"{len(gaps)} block(s) belong to no grid (unassigned territory)",
            )
        )
    # A block assigned whole (no part id) to several grids: duplicated coverage.
    rows_of: dict[str, list[int]] = {}
    for r, b in enumerate(bid):
        rows_of.setdefault(b, []).append(r)
    for b, rows in sorted(rows_of.items()):
        gs = {code[r] for r in rows}
        if len(gs) < 2:
            continue
        whole = [r for r in rows if not (isinstance(part[r], str) and part[r])]
        if whole:
            out.append(
                _violation(
                    "overlap",
                    grids=gs,
                    blocks=[b],
                    households=int(block_hh.get(b, 0)),
                    detail=f"block {b} is assigned whole to more than one grid",
                )
            )
    present = set(code)
    for g in codes:
        if g not in present and g in check:
            out.append(_violation("empty_grid", grids=[g], detail="no block assigned"))

    # Bounds and nesting per grid.
    grid_hh = pd.Series(hh).groupby(code).sum()
    for g in sorted(check & present):
        h = int(grid_hh.get(g, 0))
        members = sorted({bid[r] for r in np.flatnonzero(code == g)})
        if h < lo:
            out.append(
                _violation(
                    "below_min",
                    grids=[g],
                    blocks=members,
                    households=h,
                    detail=f"{h} households < {lo}",
                )
            )
        elif h > hi:
            out.append(
                _violation(
                    "above_max",
                    grids=[g],
                    blocks=members,
                    households=h,
                    detail=f"{h} households > {hi}",
                )
            )
        comms = {block_comm[b] for b in members if b in block_comm}
        own = grid_comm.get(g)
        if len(comms) > 1 or (own is not None and comms and comms != {own}):
            per: dict[str, list[str]] = {}
            for b in members:
                if b in block_comm:
                    per.setdefault(block_comm[b], []).append(b)
            minority = [
                b for c, bs in per.items() if own is None or c != own for b in bs
            ]
            if own is None:
                top = max(per.items(), key=lambda kv: len(kv[1]))[0]
                minority = [b for c, bs in per.items() if c != top for b in bs]
            out.append(
                _violation(
                    "nesting",
                    grids=[g],
                    blocks=minority,
                    detail=(
                        f"grid spans communities {sorted(comms)}"
                        + (f"; its community is {own}" if own else "")
                    ),
                )
            )

    # Contiguity (graph of units) and polygon overlaps, in the working CRS.
    sel = np.isin(code, sorted(check)) & np.isin(bid, ids)
    if sel.any():
        grid_geom = dict(zip(codes, grids.geometry.values, strict=True))
        block_geom = dict(zip(ids, blocks.geometry.values, strict=True))
        sub = a[sel]
        geoms = _unit_geoms(sub, block_geom, grid_geom)
        ok = np.asarray([g is not None for g in geoms])
        series = gpd.GeoSeries(
            [g for g in geoms if g is not None], crs=blocks.crs
        ).to_crs(crs)
        sub_code = sub["grid_code"].astype(str).to_numpy()[ok]
        sub_bid = sub["block_id"].astype(str).to_numpy()[ok]
        edges = shared_edges(series)
        same = sub_code[edges["i"].to_numpy()] == sub_code[edges["j"].to_numpy()]
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = len(series)
        ei = edges["i"].to_numpy()[same]
        ej = edges["j"].to_numpy()[same]
        _, labels = connected_components(
            coo_matrix((np.ones(len(ei)), (ei, ej)), shape=(n, n)), directed=False
        )
        for g in sorted(set(sub_code)):
            pos = np.flatnonzero(sub_code == g)
            comps = pd.Series(labels[pos]).value_counts()
            if len(comps) > 1:
                main = comps.index[0]
                stray = sorted({sub_bid[p] for p in pos if labels[p] != main})
                out.append(
                    _violation(
                        "not_contiguous",
                        grids=[g],
                        blocks=stray,
                        detail=(
                            f"grid is in {len(comps)} pieces; blocks outside its "
                            "largest piece listed"
                        ),
                    )
                )
        gsel = np.isin(codes, sorted(check))
        gp = gpd.GeoSeries(grids.geometry.values[gsel], crs=grids.crs).to_crs(crs)
        gcodes = codes[gsel]
        # Validity as given (reprojection alone may fold a hairline); overlaps
        # are measured on repaired copies either way.
        for i, reason in invalid_reasons(grids.geometry.values[gsel]).items():
            out.append(
                _violation(
                    "invalid_geometry",
                    grids=[gcodes[i]],
                    detail=f"grid polygon is invalid: {reason}",
                )
            )
        gg = repair_invalid(gp.values)
        tree = shapely.STRtree(gg)
        left, right = tree.query(gg, predicate="intersects")
        for i, j in zip(left, right, strict=True):
            if i >= j:
                continue
            area = float(shapely.intersection(gg[i], gg[j]).area)
            if area > overlap_tolerance_m2:
                out.append(
                    _violation(
                        "overlap",
                        grids=[gcodes[i], gcodes[j]],
                        detail=f"grid polygons overlap by {area:.1f} m²",
                    )
                )
    frame = pd.DataFrame(out, columns=list(VIOLATION_COLUMNS))
    frame["households"] = frame["households"].astype("Int64")
    return frame.sort_values(["kind", "grid_codes"], kind="stable").reset_index(
        drop=True
    )


# ---------------------------------------------------------------------- grids


def build_grids(
    blocks: gpd.GeoDataFrame,
    assignments: pd.DataFrame,
    *,
    grids: gpd.GeoDataFrame | None = None,
    piece_geoms: dict[int, Any] | None = None,
    households_col: str = "households",
    community_col: str = "community_code",
    id_col: str = "block_id",
    min_households: int = 400,
    max_households: int = 500,
) -> gpd.GeoDataFrame:
    """Grid polygons and counts from block assignments (whole blocks or parts).

    Parameters
    ----------
    blocks
        Street blocks with ``id_col``, ``households_col``, ``community_col``.
    assignments
        ``block_id``, ``grid_code`` (and ``households`` for parts).
    grids
        Optional previous grids: the geometry of a part row is taken as its block
        ∩ that grid's polygon.
    piece_geoms
        Optional geometry per assignment row position (overrides the above).

    Returns
    -------
    geopandas.GeoDataFrame
        ``grid_code``, ``community_code``, ``households``, ``n_blocks``,
        ``polsby_popper``, ``split_blocks``, ``flags``, geometry (blocks' CRS).
    """
    lo, hi = int(min_households), int(max_households)
    ids = blocks[id_col].astype(str).to_numpy()
    block_geom = dict(zip(ids, blocks.geometry.values, strict=True))
    block_hh = dict(zip(ids, blocks[households_col].astype("int64"), strict=True))
    block_comm = dict(zip(ids, blocks[community_col].astype(str), strict=True))
    a = assignments.reset_index(drop=True)
    grid_geom = (
        {}
        if grids is None
        else dict(
            zip(grids["grid_code"].astype(str), grids.geometry.values, strict=True)
        )
    )
    geoms = _unit_geoms(a, block_geom, grid_geom)
    for r, g in (piece_geoms or {}).items():
        geoms[r] = g
    hh = _row_households(a, block_hh)
    bid = a["block_id"].astype(str).to_numpy()
    code = a["grid_code"].astype(str).to_numpy()
    n_grids: dict[str, set[str]] = {}
    for b, c in zip(bid, code, strict=True):
        n_grids.setdefault(b, set()).add(c)
    crs = _working_crs(blocks)
    rows, out_geoms = [], []
    for g in sorted(set(code)):
        pos = np.flatnonzero(code == g)
        members = sorted({bid[p] for p in pos})
        pieces = [geoms[p] for p in pos if geoms[p] is not None]
        geom = shapely.union_all(np.asarray(pieces, dtype=object)) if pieces else None
        h = int(hh[pos].sum())
        comms = sorted({block_comm[b] for b in members if b in block_comm})
        flags = []
        if h < lo:
            flags.append(f"below_min: {h} < {lo}")
        elif h > hi:
            flags.append(f"above_max: {h} > {hi}")
        rows.append(
            {
                "grid_code": g,
                "community_code": comms[0] if len(comms) == 1 else g[:12],
                "households": h,
                "n_blocks": len(members),
                "split_blocks": ",".join(b for b in members if len(n_grids[b]) > 1),
                "flags": "; ".join(flags),
            }
        )
        out_geoms.append(geom)
    frame = gpd.GeoDataFrame(
        pd.DataFrame(
            rows,
            columns=[
                "grid_code",
                "community_code",
                "households",
                "n_blocks",
                "split_blocks",
                "flags",
            ],
        ),
        geometry=gpd.GeoSeries(out_geoms, crs=blocks.crs),
        crs=blocks.crs,
    )
    proj = frame.geometry.to_crs(crs)
    frame.insert(4, "polsby_popper", polsby_popper(proj.values))
    return frame


# ----------------------------------------------------------------------- edits


def _bisect(
    geoms: Sequence[Any], hh: Sequence[int]
) -> tuple[list[int], list[int]] | None:
    """Two contiguous halves of units by households, cut across the long axis."""
    pts = shapely.centroid(np.asarray(geoms, dtype=object))
    x, y = shapely.get_x(pts), shapely.get_y(pts)
    edges = shared_edges(np.asarray(geoms, dtype=object))
    nbrs: list[set[int]] = [set() for _ in geoms]
    for i, j in zip(edges["i"], edges["j"], strict=True):
        nbrs[int(i)].add(int(j))
        nbrs[int(j)].add(int(i))

    def connected(units: list[int]) -> bool:
        return len(pieces(units, nbrs)) == 1

    total = sum(hh)
    best = None
    axes = (x, y) if np.ptp(x) >= np.ptp(y) else (y, x)
    for key in axes:
        order = list(np.argsort(key, kind="stable"))
        cum = 0
        for k in range(1, len(order)):
            cum += hh[order[k - 1]]
            first, second = order[:k], order[k:]
            if connected(first) and connected(second):
                score = abs(total - 2 * cum)
                if best is None or score < best[0]:
                    best = (score, [int(i) for i in first], [int(i) for i in second])
        if best is not None:
            break
    return None if best is None else (best[1], best[2])


def apply_edits(
    blocks: gpd.GeoDataFrame,
    grids: gpd.GeoDataFrame,
    assignments: pd.DataFrame,
    edits: Sequence[dict[str, Any]],
    *,
    locked: Iterable[str] = (),
    used_codes: Iterable[str] = (),
    households_col: str = "households",
    community_col: str = "community_code",
    id_col: str = "block_id",
    min_households: int = 400,
    max_households: int = 500,
    code_scheme: str = "cjt213",
    working_crs: Any = None,
) -> EditResult:
    """Apply planner edits to a plan; return the new draft and its violations.

    Parameters
    ----------
    blocks, grids, assignments
        The city's blocks and the plan to edit (same CRS).
    edits
        Operations, applied in order:

        - ``{"op": "move", "blocks": [ids], "to": code}``: the blocks (every part)
          or block parts (``part_id``) go to grid ``code`` (``"new"``: a new grid);
        - ``{"op": "merge", "grids": [codes], "into": code}``: the grids become
          one, keeping ``into`` (default: the one with most households, the first listed on a tie);
        - ``{"op": "split", "grid": code, "blocks": [ids]}``: the blocks leave
          ``code`` for a new grid; without ``blocks`` the grid is cut in two
          contiguous halves of about equal households.
    locked
        Codes no edit may touch.
    used_codes
        Every code ever used (all stored plans); new grids never reuse one.
    min_households, max_households
        Bounds for the validation.
    code_scheme
        Code scheme of new grids.

    Returns
    -------
    EditResult

    Raises
    ------
    InputError
        An unknown operation, grid code or block id, an edit of a locked grid,
        or a split that cannot be made.
    """
    require_columns(blocks, (id_col, households_col, community_col), "blocks")
    require_columns(grids, ("grid_code",), "grids")
    require_columns(assignments, ("block_id", "grid_code"), "assignments")
    in_crs = CRS.from_user_input(require_same_crs(blocks=blocks, grids=grids))
    locked_set = {str(c) for c in locked}
    codes = [str(c) for c in grids["grid_code"]]
    used = set(map(str, used_codes)) | set(codes)
    ids = blocks[id_col].astype(str).to_numpy()
    block_geom = dict(zip(ids, blocks.geometry.values, strict=True))
    block_hh = dict(zip(ids, blocks[households_col].astype("int64"), strict=True))
    a = assignments.reset_index(drop=True).copy()
    a["block_id"] = a["block_id"].astype(str)
    a["grid_code"] = a["grid_code"].astype(str)
    a["households"] = _row_households(a, block_hh)
    if "part_id" not in a.columns:
        a["part_id"] = None
    if "community_code" not in a.columns:
        a["community_code"] = [str(c)[:12] for c in a["grid_code"]]
    grid_geom = dict(zip(codes, grids.geometry.values, strict=True))
    geoms = _unit_geoms(a, block_geom, grid_geom)  # fixed before any edit
    orig = a["grid_code"].to_numpy().copy()
    touched: set[str] = set()
    created: list[str] = []
    current = set(codes)

    def _grid(code: Any, where: str) -> str:
        c = str(code)
        if c not in current:
            msg = f"{where}: grid {c!r} is not in the plan; pick one of its grid codes"
            raise InputError(msg)
        if c in locked_set:
            msg = f"{where}: grid {c} is locked; unlock it before editing it"
            raise InputError(msg)
        return c

    def _new_code(community: str) -> str:
        code = next_grid_codes(community, 1, used_codes=used, code_scheme=code_scheme)[
            0
        ]
        used.add(code)
        current.add(code)
        created.append(code)
        return code

    def _rows_of(items: Sequence[Any], where: str) -> np.ndarray:
        items = [str(x) for x in items]
        parts = a["part_id"].astype(str).to_numpy()
        mask = a["block_id"].isin(items).to_numpy() | np.isin(parts, items)
        missing = sorted(set(items) - set(a["block_id"][mask]) - set(parts[mask]))
        if missing:
            msg = f"{where}: block(s) {missing[:5]} are not assigned in the plan"
            raise InputError(msg)
        return np.flatnonzero(mask)

    for k, op in enumerate(edits):
        kind = str(op.get("op", ""))
        where = f"edits[{k}] ({kind or 'no op'})"
        if kind not in _OPS:
            msg = f"{where}: op must be one of {list(_OPS)}, got {op.get('op')!r}"
            raise InputError(msg)
        if kind == "move":
            rows = _rows_of(op.get("blocks") or [], where)
            if not len(rows):
                msg = f"{where}: give 'blocks', a list of block ids to move"
                raise InputError(msg)
            for g in set(a.loc[rows, "grid_code"]):
                _grid(g, where)
            to = op.get("to")
            if str(to) == "new":
                comms = set(a.loc[rows, "community_code"].astype(str))
                to = _new_code(sorted(comms)[0])
            else:
                to = _grid(to, where)
            touched |= set(a.loc[rows, "grid_code"]) | {to}
            a.loc[rows, "grid_code"] = to
        elif kind == "merge":
            members = [_grid(g, where) for g in op.get("grids") or []]
            if len(set(members)) < 2:
                msg = f"{where}: 'grids' needs at least two grid codes to merge"
                raise InputError(msg)
            hh = a.groupby("grid_code")["households"].sum()
            into = op.get("into")
            into = (
                _grid(into, where)
                if into is not None
                else max(members, key=lambda g: (int(hh.get(g, 0)), -members.index(g)))
            )
            mask = a["grid_code"].isin(members).to_numpy()
            a.loc[mask, "grid_code"] = into
            current.difference_update(set(members) - {into})
            touched |= set(members) | {into}
        else:  # split
            g = _grid(op.get("grid"), where)
            mine = np.flatnonzero(a["grid_code"].to_numpy() == g)
            chosen = op.get("blocks")
            if chosen:
                rows = _rows_of(chosen, where)
                outside = sorted(set(a.loc[rows, "grid_code"]) - {g})
                if outside:
                    msg = f"{where}: the blocks to split off must lie in grid {g}"
                    raise InputError(msg)
                if len(rows) == len(mine):
                    msg = f"{where}: split off fewer blocks than grid {g} holds"
                    raise InputError(msg)
            else:
                unit_geoms = [geoms[r] for r in mine]
                if len(mine) < 2 or any(x is None for x in unit_geoms):
                    msg = (
                        f"{where}: grid {g} has fewer than two blocks; split it by "
                        "buildings with rebalance, or move blocks in first"
                    )
                    raise InputError(msg)
                proj = gpd.GeoSeries(unit_geoms, crs=in_crs).to_crs(
                    _working_crs(blocks, working_crs)
                )
                halves = _bisect(
                    list(proj.values), [int(a.at[r, "households"]) for r in mine]
                )
                if halves is None:
                    msg = f"{where}: grid {g} cannot be cut into two contiguous halves"
                    raise InputError(msg)
                rows = mine[halves[1]]
            new = _new_code(str(a.loc[rows[0], "community_code"]))
            a.loc[rows, "grid_code"] = new
            touched |= {g, new}

    # Parts that are together again in one grid become one row.
    key_cols = ["block_id", "grid_code"]
    piece: dict[int, Any] = {}
    merged_rows = []
    for _key, grp in a.groupby(key_cols, sort=False):
        first = grp.index[0]
        row = a.loc[first].copy()
        row["households"] = int(grp["households"].sum())
        merged_rows.append(row)
        pieces = [geoms[r] for r in grp.index if geoms[r] is not None]
        piece[len(merged_rows) - 1] = (
            shapely.union_all(np.asarray(pieces, dtype=object)) if pieces else None
        )
    merged = pd.DataFrame(merged_rows).reset_index(drop=True)
    n_grids = merged.groupby("block_id")["grid_code"].transform("nunique")
    whole = (n_grids == 1).to_numpy()
    merged.loc[whole, "part_id"] = None
    if "unit" in merged.columns:
        merged.loc[whole & (merged["unit"] == "part").to_numpy(), "unit"] = "block"
        merged.loc[~whole, "unit"] = "part"
    for r in np.flatnonzero(whole):
        piece[int(r)] = block_geom.get(str(merged.at[r, "block_id"]))
    for b, grp in merged[~whole].groupby("block_id"):
        for n, r in enumerate(grp.index):
            if not (isinstance(grp.at[r, "part_id"], str) and grp.at[r, "part_id"]):
                merged.at[r, "part_id"] = f"{b}/{n + 1}"

    rebuilt = build_grids(
        blocks,
        merged[merged["grid_code"].isin(touched)],
        piece_geoms={
            i: piece[r]
            for i, r in enumerate(np.flatnonzero(merged["grid_code"].isin(touched)))
        },
        households_col=households_col,
        community_col=community_col,
        id_col=id_col,
        min_households=min_households,
        max_households=max_households,
    )
    final_codes = set(merged["grid_code"])
    retired = sorted((set(codes) & touched) - final_codes)
    keep = grids[~grids["grid_code"].astype(str).isin(touched)]
    extra = [c for c in grids.columns if c not in rebuilt.columns]
    old_extra = grids.set_index(grids["grid_code"].astype(str))
    for col in extra:
        rebuilt[col] = [
            old_extra.at[c, col] if c in old_extra.index else None
            for c in rebuilt["grid_code"]
        ]
    rebuilt = rebuilt[[*[c for c in grids.columns if c in rebuilt.columns]]]
    out_grids = (
        gpd.GeoDataFrame(
            pd.concat([keep, rebuilt], ignore_index=True),
            geometry=grids.geometry.name,
            crs=grids.crs,
        )
        .sort_values("grid_code", kind="stable")
        .reset_index(drop=True)
    )
    final = merged.sort_values(["grid_code", "block_id"], kind="stable").reset_index(
        drop=True
    )
    moved_mask = a["grid_code"].to_numpy() != orig
    summary = {
        "grids_touched": sorted(touched),
        "codes_created": created,
        "codes_retired": retired,
        "households_moved": int(a.loc[moved_mask, "households"].sum()),
        "operations": len(edits),
    }
    violations = validate_plan(
        blocks,
        out_grids,
        final,
        households_col=households_col,
        community_col=community_col,
        id_col=id_col,
        min_households=min_households,
        max_households=max_households,
        working_crs=working_crs,
    )
    return EditResult(
        grids=out_grids, assignments=final, violations=violations, summary=summary
    )
