"""Block contiguity: which polygons touch along an edge, and how long that edge is.

Also the one compactness measure every module reports (:func:`polsby_popper`).

Rook contiguity (a shared edge of positive length), not queen (a shared corner): two
grids that meet only at a street corner are not one piece. Shared-edge lengths feed
the partition engine's cut-length objective and the sliver repair ("merge into the
neighbour with the longest shared border").

Computed in planar metres; callers project first (see :func:`spatialgrid.crs.working_crs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import shapely

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import geopandas as gpd


def shared_edges(
    polygons: gpd.GeoDataFrame | gpd.GeoSeries,
    *,
    min_length_m: float = 0.5,
    snap_tolerance_m: float = 0.01,
) -> pd.DataFrame:
    """Pairs of polygons that share an edge, with the shared length.

    Parameters
    ----------
    polygons
        Polygons in a projected CRS (metres). Positions, not index labels, are used.
    min_length_m
        Shared boundary shorter than this (e.g. a corner touch) is not an edge.
    snap_tolerance_m
        Boundaries closer than this count as shared (absorbs coordinate noise).

    Returns
    -------
    pandas.DataFrame
        Columns ``i``, ``j`` (positions, ``i < j``) and ``length_m``; one row per pair.
    """
    geoms = np.asarray(
        polygons.geometry.values if hasattr(polygons, "geometry") else polygons
    )
    n = len(geoms)
    if n < 2:
        return pd.DataFrame({"i": [], "j": [], "length_m": []}).astype(
            {"i": int, "j": int, "length_m": float}
        )
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="dwithin", distance=snap_tolerance_m)
    keep = left < right
    left, right = left[keep], right[keep]
    boundaries = shapely.boundary(geoms)
    if snap_tolerance_m > 0:
        # The part of i's boundary lying within tolerance of j's boundary.
        near = shapely.intersection(
            boundaries[left],
            shapely.buffer(boundaries[right], snap_tolerance_m, quad_segs=2),
        )
    else:
        near = shapely.intersection(boundaries[left], boundaries[right])
    length = shapely.length(near)
    ok = length >= min_length_m
    return pd.DataFrame(
        {"i": left[ok].astype(int), "j": right[ok].astype(int), "length_m": length[ok]}
    ).reset_index(drop=True)


def adjacency_lists(n: int, edges: pd.DataFrame) -> list[list[int]]:
    """Neighbour lists (by position) from :func:`shared_edges` output."""
    out: list[list[int]] = [[] for _ in range(n)]
    for i, j in zip(edges["i"].to_numpy(), edges["j"].to_numpy(), strict=True):
        out[int(i)].append(int(j))
        out[int(j)].append(int(i))
    return out


def connected_components(n: int, edges: pd.DataFrame) -> np.ndarray:
    """Component label (0..c-1) per position, for the graph given by ``edges``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as _cc

    if n == 0:
        return np.zeros(0, dtype=int)
    i = edges["i"].to_numpy(dtype=int)
    j = edges["j"].to_numpy(dtype=int)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = _cc(graph, directed=False)
    return labels.astype(int)


def pieces(units: Iterable[int], nbrs: Sequence[Iterable[int]]) -> list[set[int]]:
    """The connected pieces of a subset of units, given every unit's neighbours.

    Only edges between units of the subset count: the pieces a grid falls into
    when ``units`` are its members.
    """
    left = set(units)
    out: list[set[int]] = []
    while left:
        start = left.pop()
        piece = {start}
        stack = [start]
        while stack:
            x = stack.pop()
            for v in nbrs[x]:
                if v in left:
                    left.discard(v)
                    piece.add(v)
                    stack.append(v)
        out.append(piece)
    return out


def polsby_popper(geoms: Any) -> np.ndarray:
    """Compactness 4πA/P² of polygons in a projected CRS (1 for a circle, 0 for a
    line or an empty geometry); one geometry or an array of them."""
    arr = np.asarray(geoms, dtype=object)
    area = shapely.area(arr)
    perim = shapely.length(arr)
    return np.where(perim > 0, 4 * np.pi * area / np.maximum(perim, 1e-12) ** 2, 0.0)
