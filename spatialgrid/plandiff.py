"""Differences between two grid plans: grids, households and blocks that moved, codes.

A plan is its ``grids`` (one row per grid code, polygon geometry) and its
``assignments`` (block, or block part, → grid code with households), the two frames
of :class:`spatialgrid.partition.PartitionResult` and of a stored plan.

Households are compared *per block*: for every block the households each plan puts
in each grid code are set side by side, the older plan's shares scaled to the newer
plan's block total (the data may have changed between the plans). A block's moved
households are the households the new plan puts into grid codes that held fewer of
them before; a whole block that changed grid moves all its households. Blocks only
in the newer plan are *added*, blocks only in the older plan *removed*.

Plans drawn independently (a full re-partition) number their grids afresh; pass
them through :func:`match_grid_codes` first to compare like with like: each new
grid takes the old code it shares most households with (maximum-weight matching per
community, Hungarian method, :func:`scipy.optimize.linear_sum_assignment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.crs import require_same_crs
from spatialgrid.errors import MissingColumnError
from spatialgrid.split import allocate_households

__all__ = [
    "PlanDiff",
    "block_flows",
    "block_shares",
    "diff_block_ids",
    "diff_plans",
    "match_grid_codes",
    "relabel_to_match",
]


@dataclass(frozen=True)
class PlanDiff:
    """What changed between an old and a new plan.

    Attributes
    ----------
    grids
        One row per grid code of either plan: ``grid_code``, ``community_code``,
        ``status`` (``"added"``, ``"removed"``, ``"changed"``, ``"unchanged"``),
        ``households_old``, ``households_new``, ``households_in``,
        ``households_out``, ``blocks_in``, ``blocks_out`` (block ids, comma
        separated), ``geometry_changed``.
    moves
        One row per block and (old grid → new grid) flow of households:
        ``block_id``, ``from_grid``, ``to_grid``, ``households``.
    layer
        A map layer: the new plan's grids plus the removed grids (old geometry),
        with ``status``, households old/new and in/out; when ``blocks`` were
        given, also the moved blocks (``kind="moved_block"`` with from/to).
    summary
        Counts: grids added/removed/changed/unchanged, households moved, blocks
        moved, blocks added/removed, codes retired/created (lists).
    """

    grids: pd.DataFrame
    moves: pd.DataFrame
    layer: gpd.GeoDataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _require(frame: pd.DataFrame, cols: tuple[str, ...], name: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        msg = f"{name!r} lacks column(s) {missing}; it has {list(frame.columns)}"
        raise MissingColumnError(msg)


def block_shares(
    assignments: pd.DataFrame, *, households_col: str = "households"
) -> dict[str, dict[str, int]]:
    """Households per grid code for every block: ``{block_id: {grid_code: hh}}``.

    Without a households column each assignment row counts 1 (so a whole block is
    1 and a moved block counts as one block, not as households).
    """
    _require(assignments, ("block_id", "grid_code"), "assignments")
    bid = assignments["block_id"].astype(str).to_numpy()
    code = assignments["grid_code"].astype(str).to_numpy()
    if households_col in assignments.columns:
        hh = pd.to_numeric(assignments[households_col], errors="coerce")
        hh = hh.fillna(0).astype("int64").to_numpy()
    else:
        hh = np.ones(len(bid), dtype=np.int64)
    out: dict[str, dict[str, int]] = {}
    for b, c, h in zip(bid, code, hh, strict=True):
        d = out.setdefault(b, {})
        d[c] = d.get(c, 0) + int(h)
    return out


def diff_block_ids(
    old_assignments: pd.DataFrame,
    new_assignments: pd.DataFrame,
    *,
    households_col: str = "households",
) -> tuple[list[str], list[str]]:
    """The blocks :func:`diff_plans` needs, so a caller can load only those.

    Returns (blocks in both plans that are shared differently or split in
    either — the only ones the diff can draw as moved; blocks split in either
    plan — the only ones whose buildings it counts), each sorted.
    """
    old = block_shares(old_assignments, households_col=households_col)
    new = block_shares(new_assignments, households_col=households_col)
    both = set(old) & set(new)
    split = {b for b in both if len(old[b]) > 1 or len(new[b]) > 1}
    differ = {b for b in both if old[b] != new[b]}
    return sorted(differ | split), sorted(split)


def block_flows(
    old: dict[str, int], new: dict[str, int]
) -> tuple[int, list[tuple[str | None, str, int]]]:
    """Moved households of one block and its ``(from, to, households)`` flows.

    ``old`` and ``new`` map grid codes to the block's households in each plan;
    the old shares are first scaled to the new total. ``from`` is None for
    households that appeared (the block grew beyond the old grids' shares).
    """
    total = sum(new.values())
    codes = sorted(old)
    scaled = dict(
        zip(
            codes,
            allocate_households(total, np.asarray([old[c] for c in codes], float)),
            strict=True,
        )
    )
    gains = {c: h - int(scaled.get(c, 0)) for c, h in new.items()}
    gains = {c: g for c, g in gains.items() if g > 0}
    losses = {c: int(h) - new.get(c, 0) for c, h in scaled.items()}
    losses = {c: x for c, x in losses.items() if x > 0}
    moved = sum(gains.values())
    flows: list[tuple[str | None, str, int]] = []
    src = sorted(losses.items())
    si = 0
    for to, amount in sorted(gains.items()):
        left = amount
        while left > 0 and si < len(src):
            frm, avail = src[si]
            take = min(left, avail)
            flows.append((frm, to, take))
            left -= take
            avail -= take
            if avail == 0:
                si += 1
            else:
                src[si] = (frm, avail)
        if left > 0:
            flows.append((None, to, left))
    return moved, flows


def relabel_to_match(
    old_assignments: pd.DataFrame,
    new_grids: gpd.GeoDataFrame,
    new_assignments: pd.DataFrame,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The newer plan's grids and assignments with the codes
    :func:`match_grid_codes` gives them (same rows, ``grid_code`` replaced)."""
    mapping = match_grid_codes(old_assignments, new_assignments)
    return (
        new_grids.assign(grid_code=new_grids["grid_code"].astype(str).map(mapping)),
        new_assignments.assign(
            grid_code=new_assignments["grid_code"].astype(str).map(mapping)
        ),
    )


def match_grid_codes(
    old_assignments: pd.DataFrame,
    new_assignments: pd.DataFrame,
    *,
    households_col: str = "households",
    community_col: str = "community_code",
) -> dict[str, str]:
    """Map each new grid code to the old code it shares most households with.

    Matching is one-to-one inside each community (maximum total shared households,
    Hungarian method); new grids left without a partner keep their own code unless
    it collides with an old code of the community, then they get ``"<code>*"``.

    Returns
    -------
    dict
        ``{new_code: matched_code}`` for every new grid code.
    """
    from scipy.optimize import linear_sum_assignment

    old = block_shares(old_assignments, households_col=households_col)
    new = block_shares(new_assignments, households_col=households_col)
    overlap: dict[tuple[str, str], int] = {}
    for b, nd in new.items():
        od = old.get(b)
        if not od:
            continue
        total = sum(nd.values())
        codes = sorted(od)
        scaled = allocate_households(total, np.asarray([od[c] for c in codes], float))
        # Shares of one block: split proportionally (upper bound min(old, new)).
        for oc, oh in zip(codes, scaled, strict=True):
            for nc, nh in nd.items():
                key = (nc, oc)
                overlap[key] = overlap.get(key, 0) + min(int(oh), int(nh))

    def _comm(frame: pd.DataFrame) -> dict[str, str]:
        if community_col in frame.columns:
            return dict(
                zip(
                    frame["grid_code"].astype(str),
                    frame[community_col].astype(str),
                    strict=True,
                )
            )
        return {str(c): str(c)[:12] for c in frame["grid_code"]}

    new_comm = _comm(new_assignments)
    old_comm = _comm(old_assignments)
    mapping: dict[str, str] = {}
    for comm in sorted(set(new_comm.values())):
        ncodes = sorted(c for c, cc in new_comm.items() if cc == comm)
        ocodes = sorted(c for c, cc in old_comm.items() if cc == comm)
        if ocodes:
            w = np.zeros((len(ncodes), len(ocodes)))
            for i, nc in enumerate(ncodes):
                for j, oc in enumerate(ocodes):
                    w[i, j] = overlap.get((nc, oc), 0)
            rows, cols = linear_sum_assignment(w, maximize=True)
            for i, j in zip(rows, cols, strict=True):
                if w[i, j] > 0:
                    mapping[ncodes[i]] = ocodes[j]
        taken = set(mapping.values()) | set(ocodes)
        for nc in ncodes:
            if nc not in mapping:
                mapping[nc] = nc if nc not in taken else f"{nc}*"
                taken.add(mapping[nc])
    return mapping


def _building_flows(
    buildings: gpd.GeoDataFrame,
    old_grids: gpd.GeoDataFrame,
    new_grids: gpd.GeoDataFrame,
    old: dict[str, dict[str, int]],
    new: dict[str, dict[str, int]],
) -> dict[str, list[tuple[str | None, str, int]]]:
    """Flows of split blocks counted per building: ``{block_id: [(from, to, hh)]}``.

    Only blocks split in either plan whose buildings (by ``block_id``) hold the
    block's households in the newer plan (within 1 %), every building located
    in a grid of each plan.
    """
    _require(buildings, ("block_id", "households"), "buildings")
    split = {b for b in set(old) & set(new) if len(old[b]) > 1 or len(new[b]) > 1}
    if not split:
        return {}
    bid = buildings["block_id"].astype(str).to_numpy()
    mine = np.isin(bid, sorted(split))
    if not mine.any():
        return {}
    sub = buildings[mine]
    hh = pd.to_numeric(sub["households"], errors="coerce").fillna(0).to_numpy()
    pts = shapely.point_on_surface(np.asarray(sub.geometry.values, dtype=object))

    def locate(grids: gpd.GeoDataFrame) -> np.ndarray:
        codes = grids["grid_code"].astype(str).to_numpy()
        tree = shapely.STRtree(np.asarray(grids.geometry.values, dtype=object))
        p, g = tree.query(pts, predicate="within")
        out = np.full(len(pts), None, dtype=object)
        out[p] = codes[g]
        return out

    before, after = locate(old_grids), locate(new_grids)
    out: dict[str, list[tuple[str | None, str, int]]] = {}
    frame = pd.DataFrame({"block": bid[mine], "hh": hh, "old": before, "new": after})
    for b, rows in frame.groupby("block", sort=True):
        total = sum(new[b].values())
        if rows["old"].isna().any() or rows["new"].isna().any():
            continue
        if abs(rows["hh"].sum() - total) > max(1.0, 0.01 * total):
            continue
        moved = rows[rows["old"] != rows["new"]]
        agg = moved.groupby(["old", "new"], sort=True)["hh"].sum()
        out[str(b)] = [(str(o), str(n), round(float(h))) for (o, n), h in agg.items()]
    return out


def diff_plans(
    old_grids: gpd.GeoDataFrame,
    old_assignments: pd.DataFrame,
    new_grids: gpd.GeoDataFrame,
    new_assignments: pd.DataFrame,
    *,
    blocks: gpd.GeoDataFrame | None = None,
    buildings: gpd.GeoDataFrame | None = None,
    id_col: str = "block_id",
    households_col: str = "households",
) -> PlanDiff:
    """Compare two plans: grids added/removed/changed, households and blocks moved.

    Parameters
    ----------
    old_grids, old_assignments
        The older plan (grids with ``grid_code`` and geometry; assignments with
        ``block_id``, ``grid_code`` and households).
    new_grids, new_assignments
        The newer plan, same columns and same CRS as the older grids.
    blocks
        Optional blocks (``id_col`` and geometry, same CRS) to draw the moved
        blocks on the map layer.
    buildings
        Optional buildings (``block_id``, ``households`` and geometry, same CRS).
        A block split between grids in either plan is then compared building by
        building (each building's point located in both plans' grids) when its
        buildings account for its households: two plans that cut a block in the
        same proportions but along different lines move the residents of the
        buildings that changed side, which shares alone cannot see.
    id_col, households_col
        Column names in ``blocks`` and the assignments.

    Returns
    -------
    PlanDiff

    Raises
    ------
    MissingColumnError
        A plan frame lacks ``grid_code`` or ``block_id``.
    CRSMismatchError
        The grids (and blocks) do not share a CRS.

    Notes
    -----
    Codes are compared as they are; match independently drawn plans first with
    :func:`match_grid_codes`.
    """
    for frame, cols, name in (
        (old_grids, ("grid_code",), "old_grids"),
        (new_grids, ("grid_code",), "new_grids"),
        (old_assignments, ("block_id", "grid_code"), "old_assignments"),
        (new_assignments, ("block_id", "grid_code"), "new_assignments"),
    ):
        _require(frame, cols, name)
    crs = require_same_crs(
        old_grids=old_grids, new_grids=new_grids, blocks=blocks, buildings=buildings
    )
    old = block_shares(old_assignments, households_col=households_col)
    new = block_shares(new_assignments, households_col=households_col)
    by_building = (
        _building_flows(buildings, old_grids, new_grids, old, new)
        if buildings is not None and len(buildings)
        else {}
    )

    move_rows: list[dict[str, Any]] = []
    hh_in: dict[str, int] = {}
    hh_out: dict[str, int] = {}
    b_in: dict[str, set[str]] = {}
    b_out: dict[str, set[str]] = {}
    moved_hh = 0
    moved_blocks: set[str] = set()
    for b in sorted(set(new) & set(old)):
        if b in by_building:
            flows = by_building[b]
            moved = sum(h for _, _, h in flows)
        else:
            moved, flows = block_flows(old[b], new[b])
        if moved <= 0:
            continue
        moved_hh += moved
        moved_blocks.add(b)
        for frm, to, h in flows:
            move_rows.append(
                {"block_id": b, "from_grid": frm, "to_grid": to, "households": h}
            )
            hh_in[to] = hh_in.get(to, 0) + h
            b_in.setdefault(to, set()).add(b)
            if frm is not None:
                hh_out[frm] = hh_out.get(frm, 0) + h
                b_out.setdefault(frm, set()).add(b)
    added_blocks = sorted(set(new) - set(old))
    removed_blocks = sorted(set(old) - set(new))
    for b in added_blocks:
        for c in new[b]:
            b_in.setdefault(c, set()).add(b)
    for b in removed_blocks:
        for c in old[b]:
            b_out.setdefault(c, set()).add(b)

    og = old_grids.set_index(old_grids["grid_code"].astype(str))
    ng = new_grids.set_index(new_grids["grid_code"].astype(str))
    old_codes, new_codes = set(og.index), set(ng.index)
    rows: list[dict[str, Any]] = []
    geoms: list[Any] = []
    for code in sorted(old_codes | new_codes):
        in_old, in_new = code in old_codes, code in new_codes
        geom_changed = False
        if in_old and in_new:
            go, gn = og.geometry.loc[code], ng.geometry.loc[code]
            geom_changed = not (
                go is gn
                or (go is not None and gn is not None and go.equals_exact(gn, 0))
            )
            changed = bool(b_in.get(code) or b_out.get(code)) or geom_changed
            status = "changed" if changed else "unchanged"
        else:
            status = "added" if in_new else "removed"
        src = ng if in_new else og
        comm = (
            str(src.loc[code, "community_code"])
            if "community_code" in src.columns
            else code[:12]
        )
        rows.append(
            {
                "grid_code": code,
                "community_code": comm,
                "status": status,
                "households_old": _hh(og, code),
                "households_new": _hh(ng, code),
                "households_in": hh_in.get(code, 0),
                "households_out": hh_out.get(code, 0),
                "blocks_in": ",".join(sorted(b_in.get(code, ()))),
                "blocks_out": ",".join(sorted(b_out.get(code, ()))),
                "geometry_changed": geom_changed,
            }
        )
        geoms.append(src.geometry.loc[code])
    grids = pd.DataFrame(rows)
    moves = pd.DataFrame(
        move_rows, columns=["block_id", "from_grid", "to_grid", "households"]
    )
    layer = gpd.GeoDataFrame(
        grids.assign(kind="grid", block_id=None, from_grid=None, to_grid=None),
        geometry=gpd.GeoSeries(geoms, crs=crs),
        crs=crs,
    )
    if blocks is not None and len(moves):
        bl = blocks.set_index(blocks[id_col].astype(str))
        agg = (
            moves.groupby("block_id")
            .agg(
                from_grid=(
                    "from_grid",
                    lambda s: ",".join(sorted({str(x) for x in s})),
                ),
                to_grid=("to_grid", lambda s: ",".join(sorted({str(x) for x in s}))),
                households_in=("households", "sum"),
            )
            .reset_index()
        )
        agg = agg[agg["block_id"].isin(bl.index)]
        extra = gpd.GeoDataFrame(
            agg.assign(kind="moved_block", status="moved"),
            geometry=gpd.GeoSeries(
                bl.geometry.loc[agg["block_id"]].to_numpy(), crs=crs
            ),
            crs=crs,
        )
        layer = gpd.GeoDataFrame(pd.concat([layer, extra], ignore_index=True), crs=crs)
    status = grids["status"] if len(grids) else pd.Series([], dtype=object)
    summary: dict[str, Any] = {
        "grids_added": int((status == "added").sum()),
        "grids_removed": int((status == "removed").sum()),
        "grids_changed": int((status == "changed").sum()),
        "grids_unchanged": int((status == "unchanged").sum()),
        "households_moved": int(moved_hh),
        "blocks_moved": len(moved_blocks),
        "blocks_added": len(added_blocks),
        "blocks_removed": len(removed_blocks),
        "codes_retired": sorted(old_codes - new_codes),
        "codes_created": sorted(new_codes - old_codes),
    }
    return PlanDiff(grids=grids, moves=moves, layer=layer, summary=summary)


def _hh(frame: pd.DataFrame, code: str) -> int | None:
    if code not in frame.index or "households" not in frame.columns:
        return None
    value = frame.loc[code, "households"]
    return None if pd.isna(value) else int(value)
