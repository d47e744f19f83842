"""Partition units below and above block level: split blocks, keep compounds whole.

The partition engine works on *units*. A unit is normally one street block; a gated
compound (小区) spread over several blocks is one unit while it fits under
``max_households`` (DOMAIN: compounds stay whole); a block is split into *parts*
when it alone exceeds ``max_households`` or, where buildings are known, when its
community cannot be cut into valid grids from whole blocks ("lumpiness").

Splitting never cuts through a building:

1. **Internal roads** (compound roads, paths that did not cut blocks) are polygonized
   with the block outline; when they cut the block, each piece is a part.
2. **Whole buildings**: buildings (grouped by compound when the compound fits under
   max) are ordered along the block's long axis and cut into groups of about
   ``part_households``; each group's territory is the union of the Voronoi cells of
   its buildings' points, then every building footprint is handed whole to its own
   group. Parts are carved sequentially from what is left of the block, so they
   tile it exactly (no gap, no overlap).

Households of a split block are shared among its parts by building households (or
floor area when those are unknown), else by land area, with largest-remainder
rounding so the block total is conserved exactly. Every split is reported by the
partition engine as a deviation from street boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

import shapely

__all__ = ["BlockSplit", "allocate_households", "split_block"]

_AREA_EPS = 1e-6


@dataclass(frozen=True)
class BlockSplit:
    """The parts of one block.

    Attributes
    ----------
    parts
        Polygons tiling the block (working CRS), at least one.
    households
        Households per part; sums to the block's households.
    method
        ``"internal_roads"``, ``"buildings"``, ``"internal_roads+buildings"`` or
        ``"none"`` (not split).
    reason
        Why the block was not split (empty when it was).
    """

    parts: np.ndarray
    households: np.ndarray
    method: str
    reason: str = ""

    @property
    def n_parts(self) -> int:
        """Number of parts."""
        return len(self.parts)


def allocate_households(total: int, weights: np.ndarray) -> np.ndarray:
    """Split the integer ``total`` in proportion to ``weights`` (largest remainder).

    Zero or missing weights everywhere share equally. The result sums to ``total``.
    """
    w = np.nan_to_num(np.asarray(weights, dtype=float), nan=0.0)
    w = np.clip(w, 0.0, None)
    n = len(w)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if w.sum() <= 0:
        w = np.ones(n)
    raw = total * w / w.sum()
    base = np.floor(raw).astype(np.int64)
    left = int(total - base.sum())
    if left > 0:
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:left]] += 1
    return base


def _polygons(geom: shapely.Geometry) -> list[shapely.Geometry]:
    """The polygon pieces of ``geom`` with positive area."""
    if geom is None or geom.is_empty:
        return []
    parts = shapely.get_parts(geom)
    out = []
    for p in parts:
        if p.geom_type == "Polygon" and p.area > _AREA_EPS:
            out.append(p)
        elif p.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(_polygons(p))
    return out


def _split_by_roads(
    block: shapely.Geometry, roads: np.ndarray | None
) -> list[shapely.Geometry]:
    """Pieces of ``block`` cut by ``roads`` (one piece when they do not cut it)."""
    if roads is None or len(roads) == 0:
        return [block]
    inside = shapely.intersection(np.asarray(roads, dtype=object), block)
    inside = inside[~shapely.is_empty(inside)]
    if len(inside) == 0:
        return [block]
    lines = shapely.union_all(np.concatenate([[shapely.boundary(block)], inside]))
    faces = _polygons(shapely.polygonize(shapely.get_parts(lines)))
    reps = shapely.point_on_surface(np.asarray(faces, dtype=object)) if faces else []
    faces = [
        f for f, r in zip(faces, reps, strict=False) if block.contains(r)
    ]  # drop faces of holes / outside
    if len(faces) < 2:
        return [block]
    return _tile(block, faces)


def _tile(block: shapely.Geometry, pieces: list[shapely.Geometry]) -> list:
    """Carve ``pieces`` sequentially out of ``block`` so they tile it exactly."""
    remaining = block
    out = []
    for piece in pieces[:-1]:
        part = shapely.intersection(piece, remaining)
        if part.is_empty or part.area <= _AREA_EPS:
            continue
        out.append(part)
        remaining = shapely.difference(remaining, part)
    if not remaining.is_empty and remaining.area > _AREA_EPS:
        out.append(remaining)
    return out


def _long_axis(geom: shapely.Geometry) -> tuple[float, float]:
    """Unit vector of the long side of ``geom``'s minimum rotated rectangle."""
    rect = shapely.minimum_rotated_rectangle(geom)
    coords = np.asarray(shapely.get_coordinates(rect))
    if len(coords) < 4:
        return (1.0, 0.0)
    e1 = coords[1] - coords[0]
    e2 = coords[2] - coords[1]
    e = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
    norm = float(np.hypot(*e))
    if norm == 0:
        return (1.0, 0.0)
    return (float(e[0] / norm), float(e[1] / norm))


def _bisect_items(
    items: np.ndarray,
    along: np.ndarray,
    across: np.ndarray,
    weights: np.ndarray,
    n_groups: int,
) -> list[list[int]]:
    """Recursive coordinate bisection of items into ``n_groups`` compact groups.

    Cuts across the longer extent of the items at the weighted position that
    gives each side its share of groups, so parts come out squat, not as strips.
    """
    if n_groups <= 1 or len(items) <= 1:
        return [items.tolist()]
    ext_a = np.ptp(along[items])
    ext_c = np.ptp(across[items])
    key = along[items] if ext_a >= ext_c else across[items]
    order = items[np.argsort(key, kind="stable")]
    left_n = n_groups // 2
    share = left_n / n_groups
    cum = np.cumsum(weights[order])
    total = cum[-1] if cum[-1] > 0 else 1.0
    cut = int(np.searchsorted(cum, share * total))
    # choose between cut and cut + 1 items on the left, whichever is closer
    cut = min(max(cut, 0), len(order) - 2)
    if cut + 1 < len(order) - 1 and abs(cum[cut + 1] - share * total) < abs(
        cum[cut] - share * total
    ):
        cut += 1
    left, right = order[: cut + 1], order[cut + 1 :]
    return _bisect_items(left, along, across, weights, left_n) + _bisect_items(
        right, along, across, weights, n_groups - left_n
    )


def _items(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Item id per building: compound groups together, other buildings alone."""
    n = len(groups)
    item_of = np.empty(n, dtype=np.int64)
    keys: dict[object, int] = {}
    for b in range(n):
        g = groups[b]
        key = ("b", b) if g is None or (isinstance(g, float) and math.isnan(g)) else g
        item_of[b] = keys.setdefault(key, len(keys))
    return item_of, len(keys)


def _half_plane(
    poly: shapely.Geometry, axis: tuple[float, float], offset: float
) -> shapely.Geometry:
    """The part of ``poly`` whose projection on ``axis`` is below ``offset``."""
    ax, ay = axis
    minx, miny, maxx, maxy = poly.bounds
    r = 2.0 * math.hypot(maxx - minx, maxy - miny) + 1.0
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    c_proj = cx * ax + cy * ay
    # point on the cut line nearest the centre, then a big box behind it
    lx, ly = cx + (offset - c_proj) * ax, cy + (offset - c_proj) * ay
    px, py = -ay, ax  # along the line
    box = shapely.Polygon(
        [
            (lx + px * r, ly + py * r),
            (lx - px * r, ly - py * r),
            (lx - px * r - ax * r, ly - py * r - ay * r),
            (lx + px * r - ax * r, ly + py * r - ay * r),
        ]
    )
    return shapely.intersection(poly, box)


def _cut_between_buildings(
    block: shapely.Geometry,
    footprints: np.ndarray,
    weights: np.ndarray,
    groups: np.ndarray,
    n_parts: int,
) -> list[tuple[shapely.Geometry, np.ndarray]]:
    """Cut ``block`` by straight lines in the gaps between building groups.

    Recursive bisection: across the piece's longer side, at the gap between
    buildings nearest to the weight share of each side. A line never crosses a
    building (it runs in a gap of the footprints' projections); when no gap
    exists the piece falls back to Voronoi territories
    (:func:`_split_by_buildings`). Returns (part, building positions) pairs.
    """
    item_of, n_items = _items(groups)
    if n_items < 2 or n_parts < 2:
        return [(block, np.arange(len(footprints)))]
    coords = [np.asarray(shapely.get_coordinates(f)) for f in footprints]
    out: list[tuple[shapely.Geometry, np.ndarray]] = []

    def rec(poly: shapely.Geometry, members: np.ndarray, n_groups: int) -> None:
        items = np.unique(item_of[members])
        if n_groups < 2 or len(items) < 2:
            out.append((poly, members))
            return
        ax_long = _long_axis(poly)
        best = None
        for axis in (ax_long, (-ax_long[1], ax_long[0])):
            lo_i = np.full(n_items, np.inf)
            hi_i = np.full(n_items, -np.inf)
            w_i = np.zeros(n_items)
            for b in members:
                proj = coords[b] @ np.asarray(axis)
                it = item_of[b]
                lo_i[it] = min(lo_i[it], proj.min())
                hi_i[it] = max(hi_i[it], proj.max())
                w_i[it] += weights[b]
            mid = (lo_i[items] + hi_i[items]) / 2
            order = items[np.argsort(mid, kind="stable")]
            share = (n_groups // 2) / n_groups
            cum = np.cumsum(w_i[order])
            total = cum[-1] if cum[-1] > 0 else 1.0
            ext = float(hi_i[items].max() - lo_i[items].min())
            for c in range(len(order) - 1):
                gap_lo = hi_i[order[: c + 1]].max()
                gap_hi = lo_i[order[c + 1 :]].min()
                if gap_hi <= gap_lo:
                    continue
                # closeness to the share first, then prefer the long axis
                score = abs(cum[c] / total - share) + (0.0 if axis is ax_long else 0.05)
                score -= 0.02 * min((gap_hi - gap_lo) / max(ext, 1e-9), 1.0)
                if best is None or score < best[0]:
                    best = (score, axis, (gap_lo + gap_hi) / 2, set(order[: c + 1]))
        if best is None:
            for g, b in _split_by_buildings(
                poly, footprints[members], weights[members], groups[members], n_groups
            ):
                out.append((g, members[b]))
            return
        _, axis, offset, left_items = best
        left = _half_plane(poly, axis, offset)
        right = shapely.difference(poly, left)
        if left.is_empty or right.is_empty:
            out.append((poly, members))
            return
        in_left = np.isin(item_of[members], list(left_items))
        left_w = float(weights[members][in_left].sum())
        tot_w = float(weights[members].sum()) or 1.0
        n_left = min(max(round(n_groups * left_w / tot_w), 1), n_groups - 1)
        rec(left, members[in_left], n_left)
        rec(right, members[~in_left], n_groups - n_left)

    rec(block, np.arange(len(footprints)), n_parts)
    return out


def _split_by_buildings(
    block: shapely.Geometry,
    footprints: np.ndarray,
    weights: np.ndarray,
    groups: np.ndarray,
    n_parts: int,
) -> list[tuple[shapely.Geometry, np.ndarray]]:
    """Cut ``block`` into about ``n_parts`` parts of whole buildings.

    Returns (part polygon, positions of its buildings) pairs tiling the block.
    """
    n = len(footprints)
    points = shapely.point_on_surface(footprints)
    # Items: buildings, or all buildings of one compound group together.
    item_of, n_items = _items(groups)
    if n_items < 2:
        return [(block, np.arange(n))]
    ax, ay = _long_axis(block)
    px, py = shapely.get_x(points), shapely.get_y(points)
    cnt = np.bincount(item_of, minlength=n_items)
    along = np.bincount(item_of, weights=px * ax + py * ay, minlength=n_items) / cnt
    across = np.bincount(item_of, weights=-px * ay + py * ax, minlength=n_items) / cnt
    item_w = np.bincount(item_of, weights=weights, minlength=n_items)
    item_groups = _bisect_items(
        np.arange(n_items), along, across, item_w, min(n_parts, n_items)
    )
    if len(item_groups) < 2:
        return [(block, np.arange(n))]
    group_of_item = np.empty(n_items, dtype=np.int64)
    for gi, items in enumerate(item_groups):
        group_of_item[items] = gi
    group_of = group_of_item[item_of]

    cells = shapely.get_parts(
        shapely.voronoi_polygons(
            shapely.multipoints(points), extend_to=block, ordered=True
        )
    )
    if len(cells) != n:  # duplicate points: fall back to nearest-point assignment
        cells = _nearest_cells(cells, points)
    clipped = shapely.intersection(block, footprints)
    pieces = []
    for gi in range(len(item_groups)):
        mine = group_of == gi
        territory = shapely.union_all(np.concatenate([cells[mine], clipped[mine]]))
        others = clipped[~mine]
        if len(others):
            territory = shapely.difference(territory, shapely.union_all(others))
            territory = shapely.union(territory, shapely.union_all(clipped[mine]))
        pieces.append(territory)
    tiles = _tile_exact(block, pieces)
    out = []
    for gi, tile in enumerate(tiles):
        if tile is None:
            continue
        out.append((tile, np.flatnonzero(group_of == gi)))
    return out


def _nearest_cells(cells: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map Voronoi cells back to points when GEOS merged duplicate points."""
    tree = shapely.STRtree(cells)
    idx = tree.query_nearest(points)[1]
    return cells[idx]


def _tile_exact(
    block: shapely.Geometry, pieces: list[shapely.Geometry]
) -> list[shapely.Geometry | None]:
    """Like :func:`_tile` but keeps one slot per piece (``None`` when emptied)."""
    remaining = block
    out: list[shapely.Geometry | None] = []
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        part = remaining if i == last else shapely.intersection(piece, remaining)
        if part.is_empty or part.area <= _AREA_EPS:
            out.append(None)
            continue
        out.append(part)
        if i != last:
            remaining = shapely.difference(remaining, part)
    return out


def _attach_fragments(
    polys: list[shapely.Geometry], weights: list[float]
) -> tuple[list[shapely.Geometry], list[float]]:
    """Merge zero-weight polygons into the neighbour sharing the longest boundary."""
    polys = list(polys)
    weights = list(weights)
    changed = True
    while changed and len(polys) > 1:
        changed = False
        for i, w in enumerate(weights):
            if w > 0:
                continue
            best, best_len = None, -1.0
            bi = shapely.boundary(polys[i])
            for j, other in enumerate(polys):
                if j == i:
                    continue
                shared = shapely.length(
                    shapely.intersection(bi, shapely.buffer(other.boundary, 0.01))
                )
                if shared > best_len:
                    best, best_len = j, shared
            if best is None or best_len <= 0:
                continue
            # Polygonal part only: a union may carry a stray zero-area line.
            merged = _polygons(shapely.union(polys[best], polys[i]))
            polys[best] = shapely.union_all(np.asarray(merged, dtype=object))
            weights[best] += w
            del polys[i]
            del weights[i]
            changed = True
            break
    return polys, weights


def split_block(
    geometry: shapely.Geometry,
    households: int,
    *,
    buildings: np.ndarray | None = None,
    building_weights: np.ndarray | None = None,
    building_groups: np.ndarray | None = None,
    internal_roads: np.ndarray | None = None,
    part_households: int = 100,
    max_households: int | None = None,
    use_roads: bool = True,
) -> BlockSplit:
    """Split one block into parts along internal roads, then by whole buildings.

    Parameters
    ----------
    geometry
        The block polygon in a projected CRS (metres).
    households
        Households of the block; conserved exactly over the parts.
    buildings
        Building footprints (polygons, same CRS) whose representative point lies
        in the block. ``None`` or empty: the block cannot be split by buildings.
    building_weights
        Households (or floor area) per building, used to share ``households``.
        ``None``: footprint area.
    building_groups
        Per building a group key (e.g. compound id) whose buildings stay in one
        part, or ``None``/NaN for no group.
    internal_roads
        Road lines (same CRS) that may cut the block; ``None`` to skip.
    part_households
        Target households per part: a piece above it is cut by buildings into
        ``ceil(households / part_households)`` parts.
    max_households
        A building group (compound) whose share of ``households`` exceeds this is
        not kept together (DOMAIN: compounds stay whole unless alone above max).
    use_roads
        Whether to cut along ``internal_roads`` first.

    Returns
    -------
    BlockSplit
        Parts tiling the block, their households and the method used. ``method``
        is ``"none"`` with a ``reason`` when the block could not be split.
    """
    hh = int(households)
    nb = 0 if buildings is None else len(buildings)
    foot = np.asarray(buildings, dtype=object) if nb else np.zeros(0, dtype=object)
    if nb:
        wts = (
            np.asarray(shapely.area(foot), dtype=float)
            if building_weights is None
            else np.nan_to_num(np.asarray(building_weights, dtype=float), nan=0.0)
        )
        if wts.sum() <= 0:
            wts = np.asarray(shapely.area(foot), dtype=float)
        grp = (
            np.full(nb, None, dtype=object)
            if building_groups is None
            else np.asarray(building_groups, dtype=object).copy()
        )
        if max_households is not None and building_groups is not None:
            known = pd.notna(grp)
            if known.any():
                shares = pd.Series(wts[known]).groupby(grp[known]).sum()
                too_big = shares[shares * hh / wts.sum() > max_households].index
                grp[known & np.isin(grp, list(too_big))] = None
        bpts = shapely.point_on_surface(foot)
    methods: list[str] = []

    pieces = _split_by_roads(geometry, internal_roads) if use_roads else [geometry]
    if len(pieces) > 1:
        methods.append("internal_roads")

    # (polygon, building positions) per part
    parts: list[tuple[shapely.Geometry, np.ndarray]] = []
    for piece in pieces:
        if nb:
            inside = (
                np.flatnonzero(shapely.contains(piece, bpts))
                if len(pieces) > 1
                else np.arange(nb)
            )
        else:
            inside = np.zeros(0, dtype=np.int64)
        piece_hh = (
            hh * (wts[inside].sum() / wts.sum())
            if nb and wts.sum() > 0
            else hh * piece.area / max(geometry.area, _AREA_EPS)
        )
        n_parts = math.ceil(piece_hh / max(part_households, 1))
        if n_parts >= 2 and len(inside) >= 2:
            sub = _cut_between_buildings(
                piece, foot[inside], wts[inside], grp[inside], n_parts
            )
            if len(sub) > 1:
                if "buildings" not in methods:
                    methods.append("buildings")
                parts.extend((g, inside[b]) for g, b in sub)
                continue
        parts.append((piece, inside))

    if len(parts) < 2:
        if nb >= 2:
            reason = "its buildings cannot be grouped into more than one part"
        elif nb == 1:
            reason = "it holds a single building"
        else:
            reason = "no buildings are known inside it"
        if internal_roads is None or len(internal_roads) == 0 or not use_roads:
            reason += " and no internal roads were given"
        else:
            reason += " and no internal road cuts it"
        return BlockSplit(
            parts=np.asarray([geometry], dtype=object),
            households=np.asarray([hh], dtype=np.int64),
            method="none",
            reason=reason,
        )

    # Explode multi-part parts; each polygon keeps the buildings whose point is in it.
    polys: list[shapely.Geometry] = []
    weights: list[float] = []
    areas: list[float] = []
    for geom, members in parts:
        for poly in _polygons(geom):
            if nb and len(members):
                mine = members[shapely.contains(poly, bpts[members])]
                w = float(wts[mine].sum()) if len(mine) else 0.0
                if len(mine) and w <= 0:
                    w = _AREA_EPS
            else:
                w = 0.0
            polys.append(poly)
            weights.append(w)
            areas.append(poly.area)
    if sum(weights) <= 0:
        # Road pieces without buildings: share by land area.
        weights = list(areas)
    polys, weights = _attach_fragments(polys, weights)
    hh_parts = allocate_households(hh, np.asarray(weights))
    return BlockSplit(
        parts=np.asarray(polys, dtype=object),
        households=hh_parts,
        method="+".join(methods) if methods else "buildings",
    )
