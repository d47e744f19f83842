"""Feasibility of a community partition, with reasons, before any solving.

Checks (all *necessary* conditions for a plan whose every grid is one contiguous
piece with ``min_households``–``max_households`` households):

- **household band**: a valid number of grids k exists only if
  ``ceil(H / max) <= k <= floor(H / min)`` (DOMAIN: none for H in 1–399, 501–799,
  1001–1199, 1501–1599 with 400–500);
- **units above max**: a block or compound above max must be split below block level;
  without internal roads or buildings it cannot be;
- **islands**: each connected part of the block graph (rook adjacency: a shared
  street edge, not a corner) is partitioned on its own, so each needs a valid k
  itself; an island below min cannot be a grid;
- **choke points**: an articulation unit whose removal strands parts below min
  forces them into its grid; if they and it exceed max, no plan exists.

Passing every check does not guarantee a plan ("lumpiness": three blocks of 300);
the partition engine reports that case after searching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import shapely

from spatialgrid.adjacency import shared_edges
from spatialgrid.crs import require_same_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.validate import POLYGONAL, require_columns, require_frame

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "CommunityFeasibility",
    "assess_units",
    "check_feasibility",
    "k_range",
]


def k_range(
    households: int, *, min_households: int = 400, max_households: int = 500
) -> tuple[int, int]:
    """The band ``(ceil(H/max), floor(H/min))`` of grid counts for H households.

    The band is empty (first > second) when no valid number of grids exists.
    """
    h = int(households)
    return math.ceil(h / max_households), h // min_households


def has_valid_k(
    households: int, *, min_households: int = 400, max_households: int = 500
) -> bool:
    """Whether some k >= 1 puts H households into grids of min..max each."""
    lo, hi = k_range(
        households, min_households=min_households, max_households=max_households
    )
    return 1 <= max(lo, 1) <= hi


@dataclass(frozen=True)
class CommunityFeasibility:
    """The result of :func:`assess_units` for one community.

    Attributes
    ----------
    households, k_min, k_max
        Total households and the band of valid grid counts.
    feasible
        True when every necessary condition holds (a plan may still be impossible
        because of lumpiness).
    reasons
        One sentence per failed condition (empty when feasible).
    notes
        Findings that do not block a plan (choke points that fit, splittable units).
    oversize
        Positions of units above max that cannot be split.
    components
        Positions of the units of each connected part (largest first).
    choke_points
        Positions of articulation units that strand fewer than min households.
    """

    households: int
    k_min: int
    k_max: int
    feasible: bool
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    oversize: tuple[int, ...] = ()
    components: tuple[tuple[int, ...], ...] = ()
    choke_points: tuple[int, ...] = field(default=())


def _components(n: int, neighbours: Sequence[Sequence[int]], skip: set[int]) -> list:
    seen = set(skip)
    comps = []
    for start in range(n):
        if start in seen:
            continue
        stack = [start]
        seen.add(start)
        comp = []
        while stack:
            u = stack.pop()
            comp.append(u)
            for v in neighbours[u]:
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
        comps.append(sorted(comp))
    return comps


def _articulation_points(n: int, neighbours: Sequence[Sequence[int]]) -> list[int]:
    """Articulation points (iterative Tarjan)."""
    disc = [-1] * n
    low = [0] * n
    out: set[int] = set()
    timer = 0
    for root in range(n):
        if disc[root] != -1:
            continue
        disc[root] = low[root] = timer
        timer += 1
        children = 0
        stack = [(root, -1, iter(neighbours[root]))]
        while stack:
            u, parent, it = stack[-1]
            advanced = False
            for v in it:
                if disc[v] == -1:
                    disc[v] = low[v] = timer
                    timer += 1
                    if u == root:
                        children += 1
                    stack.append((v, u, iter(neighbours[v])))
                    advanced = True
                    break
                if v != parent:
                    low[u] = min(low[u], disc[v])
            if advanced:
                continue
            stack.pop()
            if stack:
                p = stack[-1][0]
                low[p] = min(low[p], low[u])
                if p != root and low[u] >= disc[p]:
                    out.add(p)
        if children > 1:
            out.add(root)
    return sorted(out)


def _names(labels: Sequence[str], positions: Sequence[int], limit: int = 5) -> str:
    names = [str(labels[p]) for p in positions[:limit]]
    more = len(positions) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def assess_units(
    households: Sequence[int] | np.ndarray,
    neighbours: Sequence[Sequence[int]],
    *,
    min_households: int = 400,
    max_households: int = 500,
    labels: Sequence[str] | None = None,
    splittable: Sequence[bool] | np.ndarray | None = None,
) -> CommunityFeasibility:
    """Check the necessary conditions for one community's units.

    Parameters
    ----------
    households
        Households per unit (block, compound or block part).
    neighbours
        Rook neighbours per unit (positions), e.g. from
        :func:`spatialgrid.adjacency.adjacency_lists`.
    min_households, max_households
        Grid bounds.
    labels
        Names used in reasons (block ids); positions when ``None``.
    splittable
        Per unit, whether it can still be split below block level (internal roads
        or at least two buildings). A unit above max that is splittable is a note,
        not a reason.

    Returns
    -------
    CommunityFeasibility
    """
    hh = np.asarray(households, dtype=np.int64)
    n = len(hh)
    lab = [str(i) for i in range(n)] if labels is None else [str(x) for x in labels]
    split_ok = (
        np.zeros(n, dtype=bool) if splittable is None else np.asarray(splittable, bool)
    )
    lo_b, hi_b = min_households, max_households
    total = int(hh.sum())
    k_min, k_max = k_range(total, min_households=lo_b, max_households=hi_b)
    reasons: list[str] = []
    notes: list[str] = []
    if total == 0:
        reasons.append("no households: the community has no households to grid")
    elif not has_valid_k(total, min_households=lo_b, max_households=hi_b):
        reasons.append(
            f"no valid number of grids: {total} households need at least "
            f"ceil({total}/{hi_b})={k_min} grids of <= {hi_b} but allow at most "
            f"floor({total}/{lo_b})={k_max} grids of >= {lo_b}"
        )

    big = [int(i) for i in np.flatnonzero(hh > hi_b)]
    oversize = [i for i in big if not split_ok[i]]
    for i in big:
        if split_ok[i]:
            notes.append(
                f"unit above max: {lab[i]} has {int(hh[i])} households > {hi_b}; "
                "it is split below block level (deviation from street boundaries)"
            )
        else:
            reasons.append(
                f"unit above max: {lab[i]} has {int(hh[i])} households > {hi_b} "
                "and cannot be split (no internal roads cut it, fewer than two "
                "buildings known)"
            )

    comps = _components(n, neighbours, set())
    comps.sort(key=lambda c: (-int(hh[c].sum()), c[0]))
    if len(comps) > 1:
        for comp in comps:
            h_c = int(hh[comp].sum())
            if h_c < lo_b:
                reasons.append(
                    f"island: {len(comp)} unit(s) ({_names(lab, comp)}) with {h_c} "
                    f"households touch no other block along a street edge; below "
                    f"min {lo_b} they cannot be a grid"
                )
            elif not has_valid_k(h_c, min_households=lo_b, max_households=hi_b):
                a, b = k_range(h_c, min_households=lo_b, max_households=hi_b)
                reasons.append(
                    f"island: the disconnected part {_names(lab, comp)} has {h_c} "
                    f"households, which no number of grids fits (needs {a} <= k <= {b})"
                )
            elif comp is not comps[0]:
                notes.append(
                    f"island: {_names(lab, comp)} ({h_c} households) is disconnected "
                    "and gridded on its own"
                )

    chokes: list[int] = []
    for a in _articulation_points(n, neighbours):
        parts = _components(n, neighbours, {a})
        parts.sort(key=lambda c: -int(hh[c].sum()))
        # The part holding most households is "the rest"; others are stranded.
        stranded = [c for c in parts[1:] if int(hh[c].sum()) < lo_b]
        if not stranded:
            continue
        chokes.append(a)
        s_hh = sum(int(hh[c].sum()) for c in stranded)
        units = sorted(u for c in stranded for u in c)
        if s_hh + int(hh[a]) > hi_b and not split_ok[a]:
            reasons.append(
                f"choke point: {lab[a]} ({int(hh[a])} households) is the only link "
                f"to {_names(lab, units)} ({s_hh} households, below min {lo_b}); "
                f"they must share its grid, which would hold {s_hh + int(hh[a])} > "
                f"{hi_b}"
            )
        else:
            notes.append(
                f"choke point: {lab[a]} is the only link to {_names(lab, units)} "
                f"({s_hh} households); they share its grid"
            )
    # Hemmed in: a unit below min must share its grid with a neighbour (grids
    # are contiguous); when every neighbour would take that grid above max, no
    # plan exists for these units.
    for u in range(n):
        if not (0 < hh[u] < lo_b) or split_ok[u] or not neighbours[u]:
            continue
        nbrs = [int(v) for v in neighbours[u] if v != u]
        if not nbrs or any(split_ok[v] for v in nbrs):
            continue
        least = min(int(hh[v]) for v in nbrs)
        if int(hh[u]) + least > hi_b:
            reasons.append(
                f"hemmed in: {lab[u]} ({int(hh[u])} households, below min {lo_b}) "
                f"touches only {_names(lab, nbrs)}; sharing a grid with any of them "
                f"gives at least {int(hh[u]) + least} > {hi_b} households"
            )
    return CommunityFeasibility(
        households=total,
        k_min=k_min,
        k_max=k_max,
        feasible=not reasons,
        reasons=tuple(reasons),
        notes=tuple(notes),
        oversize=tuple(oversize),
        components=tuple(tuple(c) for c in comps),
        choke_points=tuple(chokes),
    )


def _building_counts(
    blocks_geom: np.ndarray, buildings: gpd.GeoDataFrame | None
) -> np.ndarray:
    """Number of buildings whose representative point lies in each block."""
    out = np.zeros(len(blocks_geom), dtype=np.int64)
    if buildings is None or len(buildings) == 0:
        return out
    pts = shapely.point_on_surface(np.asarray(buildings.geometry.values))
    tree = shapely.STRtree(blocks_geom)
    _, blk = tree.query(pts, predicate="within")
    np.add.at(out, blk, 1)
    return out


def _roads_cut(blocks_geom: np.ndarray, roads: gpd.GeoDataFrame | None) -> np.ndarray:
    """Whether some internal road crosses each block's interior."""
    out = np.zeros(len(blocks_geom), dtype=bool)
    if roads is None or len(roads) == 0:
        return out
    tree = shapely.STRtree(np.asarray(roads.geometry.values))
    blk, _ = tree.query(blocks_geom, predicate="crosses")
    out[blk] = True
    return out


def check_feasibility(
    blocks: gpd.GeoDataFrame,
    *,
    households_col: str = "households",
    community_col: str = "community_code",
    id_col: str = "block_id",
    compound_col: str | None = None,
    buildings: gpd.GeoDataFrame | None = None,
    internal_roads: gpd.GeoDataFrame | None = None,
    min_households: int = 400,
    max_households: int = 500,
    working_crs: object | None = None,
) -> pd.DataFrame:
    """Per community, whether grids of min..max households can exist, and why not.

    Units are whole blocks, with the blocks of one compound (``compound_col``)
    merged while the compound fits under max. A unit above max counts as
    splittable when an internal road crosses it or it holds two or more buildings.

    Parameters
    ----------
    blocks
        Street blocks (Polygon/MultiPolygon) with households and community columns.
    households_col, community_col, id_col, compound_col
        Column names.
    buildings, internal_roads
        Optional layers (same CRS as ``blocks``) that make oversize blocks
        splittable.
    min_households, max_households
        Grid bounds.
    working_crs
        Projected CRS for adjacency; estimated when ``None``.

    Returns
    -------
    pandas.DataFrame
        One row per community: ``community_code``, ``households``, ``n_blocks``,
        ``k_min``, ``k_max``, ``feasible``, ``reasons``, ``notes``, ``islands``,
        ``island_households``, ``oversize_units``, ``choke_points``.
    """
    require_frame(
        blocks,
        "blocks",
        columns=[households_col, community_col, id_col],
        geometry_types=POLYGONAL,
    )
    if compound_col is not None:
        require_columns(blocks, [compound_col], "blocks")
    require_same_crs(blocks=blocks, buildings=buildings, internal_roads=internal_roads)
    crs = _working_crs(blocks, working_crs)
    proj = blocks.to_crs(crs)
    geoms = np.asarray(proj.geometry.values)
    nbld = _building_counts(geoms, None if buildings is None else buildings.to_crs(crs))
    cut = _roads_cut(
        geoms, None if internal_roads is None else internal_roads.to_crs(crs)
    )
    comm = blocks[community_col].astype(str).to_numpy()
    hh_all = blocks[households_col].fillna(0).to_numpy(dtype=np.int64)
    ids = blocks[id_col].astype(str).to_numpy()
    cmp_all = None if compound_col is None else blocks[compound_col].to_numpy()
    rows = []
    for code in pd.unique(comm):
        pos = np.flatnonzero(comm == code)
        units: list[list[int]] = []
        edges = shared_edges(geoms[pos])
        nb = [[] for _ in pos]
        for i, j in zip(edges["i"], edges["j"], strict=True):
            nb[int(i)].append(int(j))
            nb[int(j)].append(int(i))
        unit_of = np.full(len(pos), -1)
        if cmp_all is not None:
            keys = cmp_all[pos]
            for key in pd.unique(keys[pd.notna(keys)]):
                members = set(np.flatnonzero(keys == key).tolist())
                if int(hh_all[pos[list(members)]].sum()) > max_households:
                    continue
                for comp in _components(len(pos), nb, set(range(len(pos))) - members):
                    unit_of[comp] = len(units)
                    units.append(comp)
        for p in range(len(pos)):
            if unit_of[p] < 0:
                unit_of[p] = len(units)
                units.append([p])
        u_nb: list[set[int]] = [set() for _ in units]
        for p in range(len(pos)):
            for q in nb[p]:
                if unit_of[p] != unit_of[q]:
                    u_nb[unit_of[p]].add(int(unit_of[q]))
        u_hh = [int(hh_all[pos[u]].sum()) for u in units]
        labels = [
            ids[pos[u[0]]] if len(u) == 1 else f"compound of {len(u)} blocks"
            for u in units
        ]
        split_ok = [
            len(u) == 1 and (nbld[pos[u[0]]] >= 2 or cut[pos[u[0]]]) for u in units
        ]
        res = assess_units(
            u_hh,
            [sorted(s) for s in u_nb],
            min_households=min_households,
            max_households=max_households,
            labels=labels,
            splittable=split_ok,
        )
        rows.append(
            {
                "community_code": code,
                "households": res.households,
                "n_blocks": len(pos),
                "k_min": res.k_min,
                "k_max": res.k_max,
                "feasible": res.feasible,
                "reasons": "; ".join(res.reasons),
                "notes": "; ".join(res.notes),
                "islands": max(len(res.components) - 1, 0),
                "island_households": [
                    int(sum(u_hh[u] for u in c)) for c in res.components[1:]
                ],
                "oversize_units": [labels[i] for i in res.oversize],
                "choke_points": [labels[i] for i in res.choke_points],
            }
        )
    return pd.DataFrame(rows)
