"""Match a hand-drawn grid plan (polygons from another GIS) to the street blocks.

Grid offices often draw grids by hand in ArcGIS, QGIS or a CAD tool. To store
such a plan spatialgrid needs it in its own terms: which block belongs to which
grid. :func:`match_drawn_plan` overlays the drawn polygons on the blocks (in a
projected CRS) and gives each block to the polygon covering most of its area.
What does not fit is reported, not silently fixed:

- **split_block**: a drawn line cuts through a block: a second polygon covers more
  than ``split_share`` of the block (the block goes whole to the larger share);
- **gap**: a block is covered by no polygon for at least ``min_cover`` of its area;
- **overlap**: two drawn polygons overlap (duplicated coverage);
- **empty_grid**: a drawn polygon holds no block;
- **invalid_geometry**: a drawn polygon is not a valid polygon (self-intersection,
  with GEOS's reason); it is matched as :func:`shapely.make_valid` repairs it;
- plus everything :func:`spatialgrid.edits.validate_plan` finds on the matched
  plan (bounds, contiguity, nesting).

The matched grids are rebuilt from whole blocks, so the stored plan follows the
streets even where the drawing wobbles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.codes import assign_grid_codes, sequence_digits
from spatialgrid.crs import require_same_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.edits import VIOLATION_COLUMNS, build_grids, validate_plan
from spatialgrid.errors import EmptyInputError, InputError
from spatialgrid.io import read_layer
from spatialgrid.rebalance import next_grid_codes
from spatialgrid.validate import invalid_reasons, repair_invalid, require_columns

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["UploadResult", "match_drawn_plan", "read_drawn_plan"]

_CODE_CANDIDATES = ("grid_code", "code", "gridcode", "GRID_CODE", "网格编码", "编码")


@dataclass(frozen=True)
class UploadResult:
    """A hand-drawn plan matched to blocks.

    Attributes
    ----------
    grids
        Grids rebuilt from whole blocks (``grid_code``, ``community_code``,
        ``households``, ``n_blocks``, ``polsby_popper``, ``split_blocks``,
        ``flags``, ``drawn_id``), blocks' CRS.
    assignments
        ``block_id``, ``grid_code``, ``community_code``, ``households``,
        ``part_id`` (None), ``unit`` (``"block"``), ``cover_share``.
    violations
        Columns :data:`spatialgrid.edits.VIOLATION_COLUMNS`.
    matches
        Per block: ``block_id``, ``drawn_id``, ``grid_code``, ``cover_share``
        (share of the block under its polygon), ``second_share``, ``second_id``.
    summary
        Counts: drawn polygons, grids, blocks matched, split, unassigned.
    """

    grids: gpd.GeoDataFrame
    assignments: pd.DataFrame
    violations: pd.DataFrame
    matches: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def read_drawn_plan(path: str | Path, *, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read drawn grid polygons from a GeoPackage, GeoJSON or Shapefile.

    Raises
    ------
    FileNotFoundError, DataFormatError, MissingCRSError
        As :func:`spatialgrid.io.read_layer`.
    EmptyInputError
        The layer holds no polygon.
    """
    frame = read_layer(path, layer)
    polys = frame[
        frame.geometry.notna() & frame.geom_type.isin(["Polygon", "MultiPolygon"])
    ]
    if polys.empty:
        msg = (
            f"{str(path)!r} holds no polygons; a drawn plan is a layer of grid polygons"
        )
        raise EmptyInputError(msg)
    return polys.reset_index(drop=True)


def match_drawn_plan(
    drawn: gpd.GeoDataFrame,
    blocks: gpd.GeoDataFrame,
    *,
    code_col: str | None = None,
    households_col: str = "households",
    community_col: str = "community_code",
    id_col: str = "block_id",
    min_households: int = 400,
    max_households: int = 500,
    min_cover: float = 0.5,
    split_share: float = 0.05,
    overlap_tolerance_m2: float = 1.0,
    code_scheme: str = "cjt213",
    used_codes: Iterable[str] = (),
    working_crs: Any = None,
) -> UploadResult:
    """Give each block to the drawn polygon covering most of it; report violations.

    Parameters
    ----------
    drawn
        Grid polygons drawn elsewhere, any CRS (reprojected to the blocks' CRS).
    blocks
        Street blocks with ``id_col``, ``households_col``, ``community_col``.
    code_col
        Column of ``drawn`` holding grid codes to keep; default: the first of
        ``grid_code``, ``code``, ``网格编码``... present, else codes are assigned
        (west→east, north→south per community; above ``used_codes`` when given).
        Codes that are not digits of the scheme's width are replaced and reported.
    min_cover
        Share of a block's area a polygon must cover for the block to be assigned.
    split_share
        A second polygon covering more than this share of a block means the
        drawing cuts the block (``split_block``).
    overlap_tolerance_m2
        Overlaps between drawn polygons smaller than this are ignored.
    code_scheme, used_codes
        For assigned codes.

    Returns
    -------
    UploadResult

    Raises
    ------
    MissingColumnError, MissingCRSError
        Broken input contracts.
    EmptyInputError
        ``drawn`` has no polygon.
    InputError
        ``code_col`` names a missing column.
    """
    require_columns(blocks, (id_col, households_col, community_col), "blocks")
    require_same_crs(blocks=blocks)
    if drawn.crs is None:
        require_same_crs(drawn=drawn)  # raises MissingCRSError with the fix
    if len(drawn) == 0:
        msg = "drawn has no polygons; pass the layer of hand-drawn grid polygons"
        raise EmptyInputError(msg)
    if code_col is None:
        code_col = next((c for c in _CODE_CANDIDATES if c in drawn.columns), None)
    elif code_col not in drawn.columns:
        msg = f"code_col={code_col!r} is not a column of drawn: {list(drawn.columns)}"
        raise InputError(msg)
    crs = _working_crs(blocks, working_crs)
    d = drawn.reset_index(drop=True).to_crs(blocks.crs)
    # A self-intersecting drawing (a bow tie, a ring traced twice) is reported
    # and measured as GEOS repairs it.
    reasons = invalid_reasons(d.geometry.values)
    d_w = repair_invalid(d.geometry.to_crs(crs).values)
    b_w = blocks.geometry.to_crs(crs).values
    ids = blocks[id_col].astype(str).to_numpy()
    comm = blocks[community_col].astype(str).to_numpy()
    hh = blocks[households_col].astype("int64").to_numpy()
    drawn_ids = [f"drawn{i + 1}" for i in range(len(d))]

    # Area of each block under each polygon.
    tree = shapely.STRtree(d_w)
    bi, di = tree.query(b_w, predicate="intersects")
    inter = shapely.area(shapely.intersection(b_w[bi], d_w[di]))
    barea = shapely.area(b_w)
    share = np.where(barea[bi] > 0, inter / np.maximum(barea[bi], 1e-12), 0.0)
    best = np.full(len(ids), -1)
    best_share = np.zeros(len(ids))
    second = np.full(len(ids), -1)
    second_share = np.zeros(len(ids))
    for b, p, s in zip(bi, di, share, strict=True):
        if s > best_share[b]:
            second[b], second_share[b] = best[b], best_share[b]
            best[b], best_share[b] = p, s
        elif s > second_share[b]:
            second[b], second_share[b] = p, s
    assigned = best_share >= min_cover

    # Codes: kept from the drawing when valid, else assigned per community.
    digits = sequence_digits(code_scheme)
    poly_comm: dict[int, str] = {}
    for p in range(len(d)):
        mine = assigned & (best == p)
        if mine.any():
            vals, counts = np.unique(comm[mine], return_counts=True)
            poly_comm[p] = str(vals[np.argmax(counts)])
    codes: dict[int, str] = {}
    bad_codes: list[str] = []
    used = {str(c) for c in used_codes}
    if code_col is not None:
        for p, value in enumerate(d[code_col]):
            text = "" if pd.isna(value) else str(value).strip()
            c = poly_comm.get(p)
            if (
                c is not None
                and text.isdigit()
                and len(text) == 12 + digits
                and text.startswith(c)
                and text not in codes.values()
            ):
                codes[p] = text
            elif c is not None:
                bad_codes.append(text or f"(empty, {drawn_ids[p]})")
    for c in sorted(set(poly_comm.values())):
        todo = [p for p, pc in poly_comm.items() if pc == c and p not in codes]
        if not todo:
            continue
        if used or codes:
            fresh = next_grid_codes(
                c,
                len(todo),
                used_codes=used | set(codes.values()),
                code_scheme=code_scheme,
            )
            order = np.argsort(
                np.asarray(
                    assign_grid_codes(
                        c, [d_w[p] for p in todo], code_scheme=code_scheme
                    )
                )
            )
            for k, pos in enumerate(order):
                codes[todo[int(pos)]] = fresh[k]
        else:
            for p, code in zip(
                todo,
                assign_grid_codes(c, [d_w[p] for p in todo], code_scheme=code_scheme),
                strict=True,
            ):
                codes[p] = code

    rows = [
        {
            "block_id": ids[b],
            "grid_code": codes[int(best[b])],
            "community_code": comm[b],
            "households": int(hh[b]),
            "part_id": None,
            "unit": "block",
            "cover_share": round(float(best_share[b]), 4),
        }
        for b in np.flatnonzero(assigned)
    ]
    assignments = pd.DataFrame(
        rows,
        columns=[
            "block_id",
            "grid_code",
            "community_code",
            "households",
            "part_id",
            "unit",
            "cover_share",
        ],
    )
    grids = build_grids(
        blocks,
        assignments,
        households_col=households_col,
        community_col=community_col,
        id_col=id_col,
        min_households=min_households,
        max_households=max_households,
    )
    drawn_of = {code: drawn_ids[p] for p, code in codes.items()}
    grids["drawn_id"] = grids["grid_code"].map(drawn_of)
    violations = validate_plan(
        blocks,
        grids,
        assignments,
        households_col=households_col,
        community_col=community_col,
        id_col=id_col,
        min_households=min_households,
        max_households=max_households,
        working_crs=crs,
    )
    extra: list[dict[str, Any]] = []
    for b in np.flatnonzero(second_share > split_share):
        p1, p2 = int(best[b]), int(second[b])
        names = [codes.get(p1, drawn_ids[p1]), codes.get(p2, drawn_ids[p2])]
        extra.append(
            {
                "kind": "split_block",
                "grid_codes": ",".join(sorted(names)),
                "block_ids": ids[b],
                "households": int(hh[b]),
                "detail": (
                    f"a drawn boundary cuts block {ids[b]}: {best_share[b]:.0%} in "
                    f"{names[0]}, {second_share[b]:.0%} in {names[1]}; assigned whole "
                    f"to {names[0]}"
                    if assigned[b]
                    else f"a drawn boundary cuts block {ids[b]}"
                ),
            }
        )
    for p, reason in reasons.items():
        extra.append(
            {
                "kind": "invalid_geometry",
                "grid_codes": codes.get(p, drawn_ids[p]),
                "block_ids": "",
                "households": None,
                "detail": f"the drawn polygon is invalid ({reason}); matched as "
                "repaired",
            }
        )
    for p in range(len(d)):
        if p not in poly_comm:
            extra.append(
                {
                    "kind": "empty_grid",
                    "grid_codes": drawn_ids[p],
                    "block_ids": "",
                    "households": None,
                    "detail": "the drawn polygon covers no block for at least "
                    f"{min_cover:.0%} of its area",
                }
            )
    left, right = tree.query(d_w, predicate="intersects")
    for i, j in zip(left, right, strict=True):
        if i >= j:
            continue
        area = float(shapely.intersection(d_w[i], d_w[j]).area)
        if area > overlap_tolerance_m2:
            names = [codes.get(int(i), drawn_ids[i]), codes.get(int(j), drawn_ids[j])]
            extra.append(
                {
                    "kind": "overlap",
                    "grid_codes": ",".join(sorted(names)),
                    "block_ids": "",
                    "households": None,
                    "detail": f"drawn polygons overlap by {area:.1f} m²",
                }
            )
    if bad_codes:
        extra.append(
            {
                "kind": "bad_code",
                "grid_codes": ",".join(sorted(bad_codes)),
                "block_ids": "",
                "households": None,
                "detail": (
                    f"codes in {code_col!r} that are not {12 + digits} digits starting "
                    "with their community's code (or repeat) were replaced"
                ),
            }
        )
    if extra:
        violations = pd.concat(
            [violations, pd.DataFrame(extra, columns=list(VIOLATION_COLUMNS))],
            ignore_index=True,
        )
        violations["households"] = violations["households"].astype("Int64")
        violations = violations.sort_values(["kind", "grid_codes"], kind="stable")
        violations = violations.reset_index(drop=True)
    matches = pd.DataFrame(
        {
            "block_id": ids,
            "drawn_id": [drawn_ids[p] if p >= 0 else None for p in best],
            "grid_code": [
                codes.get(int(p)) if ok else None
                for p, ok in zip(best, assigned, strict=True)
            ],
            "cover_share": np.round(best_share, 4),
            "second_id": [drawn_ids[p] if p >= 0 else None for p in second],
            "second_share": np.round(second_share, 4),
        }
    )
    summary = {
        "drawn_polygons": len(d),
        "grids": len(grids),
        "blocks": len(ids),
        "blocks_matched": int(assigned.sum()),
        "blocks_split": int((second_share > split_share).sum()),
        "blocks_unassigned": int((~assigned).sum()),
        "violations": len(violations),
    }
    return UploadResult(
        grids=grids,
        assignments=assignments,
        violations=violations,
        matches=matches,
        summary=summary,
    )
