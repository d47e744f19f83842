"""Street blocks from street centre lines: node, polygonize, drop or merge slivers.

A street block (街区) is a face of the planar graph formed by the street centre lines
of the chosen highway classes, closed at the data boundary. Because every face is
built from the same noded segments, neighbouring blocks share their centre line
exactly: the blocks form a valid polygonal coverage (no overlaps, no gaps between
neighbours; checked with ``shapely.coverage_is_valid``). The same approach as
momepy's ``enclosures`` and osmnx's street-network faces, written directly on
shapely 2 (``shapely.node`` + ``shapely.polygonize_full``).

Faces that are tiny or thin (junction islands, the strip between the two carriageways
of a dual road) are not blocks; they are dropped (road space) or merged into the
neighbour sharing the longest edge, and always reported.

Noding and polygonizing happen in the CRS of the input streets (so that border streets
lying on the bounding box coincide with it exactly; projecting afterwards moves shared
vertices identically and keeps edges shared). Areas, widths and distances are computed
in a projected working CRS (:func:`spatialgrid.crs.working_crs`); results come back in
the CRS of the input streets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.adjacency import shared_edges
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import EmptyInputError, InputError
from spatialgrid.progress import ProgressCallback, report
from spatialgrid.validate import require_frame

if TYPE_CHECKING:
    from pyproj import CRS

logger = logging.getLogger(__name__)

_MAIN = ("motorway", "trunk", "primary", "secondary", "tertiary")
#: Highway classes that cut blocks by default: residential and above, with links.
DEFAULT_HIGHWAY_CLASSES: tuple[str, ...] = (
    *_MAIN,
    "unclassified",
    "residential",
    *(f"{c}_link" for c in _MAIN),
)


@dataclass(frozen=True)
class BlockBuild:
    """Result of :func:`build_blocks`.

    Attributes
    ----------
    blocks
        Polygons with ``block_id`` (``B0001``..., west→east, north→south) and
        ``area_m2``; in the streets' CRS.
    streets
        The input streets clipped to the boundary, exploded to LineStrings, with
        ``street_id``, ``internal`` (True when the line does not bound a block) and
        ``block_id`` (the block an internal line lies in, else ``None``).
    dropped
        The faces that were dropped or merged, with ``area_m2``, ``width_m``,
        ``reason`` and ``merged_into`` (block id or ``None``).
    """

    blocks: gpd.GeoDataFrame
    streets: gpd.GeoDataFrame
    dropped: gpd.GeoDataFrame


def reading_order(points: Any, *, band_m: float | None = None) -> np.ndarray:
    """Positions of ``points`` sorted north→south in bands, west→east inside a band.

    Parameters
    ----------
    points
        Array-like of shapely Points in a projected CRS.
    band_m
        Height of a row band. Default: the square root of the mean spacing area
        (extent area ÷ count), so that roughly one feature falls per band cell.

    Returns
    -------
    numpy.ndarray
        Positions in reading order (deterministic; ties broken by x then position).
    """
    pts = np.asarray(points)
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=int)
    x = shapely.get_x(pts)
    y = shapely.get_y(pts)
    if band_m is None:
        extent = max(float(np.ptp(x)), 1.0) * max(float(np.ptp(y)), 1.0)
        band_m = max(np.sqrt(extent / n), 1.0)
    band = np.floor((y.max() - y) / band_m).astype(int)
    return np.lexsort((np.arange(n), x, band))


def _width(polys: np.ndarray) -> np.ndarray:
    """Width of each polygon: twice the radius of its maximum inscribed circle."""
    out = np.zeros(len(polys))
    for i, poly in enumerate(polys):
        tol = max(np.sqrt(shapely.area(poly)) / 100.0, 0.05)
        out[i] = 2.0 * shapely.length(shapely.maximum_inscribed_circle(poly, tol))
    return out


def build_blocks(
    streets: gpd.GeoDataFrame,
    *,
    highway_classes: Iterable[str] = DEFAULT_HIGHWAY_CLASSES,
    highway_col: str = "highway",
    boundary: shapely.Geometry | None = None,
    min_block_area_m2: float = 1500.0,
    min_block_width_m: float = 15.0,
    sliver_action: Literal["drop", "merge"] = "drop",
    working_crs: CRS | str | int | None = None,
    progress: ProgressCallback | None = None,
) -> BlockBuild:
    """Polygonize street centre lines into street blocks that share edges exactly.

    Parameters
    ----------
    streets
        LineStrings with a CRS and a ``highway_col`` column (OSM classes).
    highway_classes
        Classes whose centre lines bound blocks; other lines become internal.
    highway_col
        Column holding the class.
    boundary
        Polygon (in the streets' CRS) closing the edge blocks; default: the
        bounding box of all streets.
    min_block_area_m2, min_block_width_m
        Faces smaller than this area, or thinner than this width (twice the radius
        of the largest inscribed circle), are slivers, not blocks.
    sliver_action
        ``"drop"``: slivers are road space and leave the coverage (reported);
        ``"merge"``: each sliver joins the neighbour with the longest shared edge
        (keeps the coverage gap-free; reported).
    working_crs
        Projected CRS for the metric work; default from :func:`spatialgrid.crs.working_crs`.
    progress
        Called per stage (``"blocks"``).

    Returns
    -------
    BlockBuild
        Blocks, classified streets and the dropped/merged faces, in the streets' CRS.

    Raises
    ------
    EmptyInputError
        When no street of ``highway_classes`` exists or no face can be formed.
    InputError
        For an unknown ``sliver_action``.
    """
    require_frame(
        streets,
        "streets",
        columns=[highway_col],
        geometry_types=("LineString", "MultiLineString"),
    )
    if sliver_action not in ("drop", "merge"):
        msg = f"sliver_action={sliver_action!r} is not 'drop' or 'merge'"
        raise InputError(msg)
    classes = set(highway_classes)
    src_crs = streets.crs
    wcrs = _working_crs(streets, working_crs)
    report(progress, "blocks", 0, 4)

    # Topology (noding, polygonize) in the streets' own CRS, so that border streets
    # lying on the bounding box coincide with it exactly; measures in metres.
    if boundary is None:
        area = shapely.box(*streets.total_bounds)
    else:
        area = shapely.make_valid(boundary)
    cutting = streets[highway_col].isin(classes).to_numpy()
    if not cutting.any():
        msg = (
            f"no street of highway_classes={sorted(classes)} in 'streets' (classes "
            f"present: {sorted(streets[highway_col].dropna().unique())}); widen "
            "highway_classes."
        )
        raise EmptyInputError(msg)
    lines = shapely.intersection(streets.geometry.values[cutting], area)
    lines = lines[~shapely.is_empty(lines)]
    edges = shapely.node(shapely.union_all(np.append(lines, shapely.boundary(area))))
    faces_gc, _cuts, _dangles, _invalid = shapely.polygonize_full([edges])
    faces = np.asarray(shapely.get_parts(faces_gc))
    faces = faces[shapely.within(shapely.point_on_surface(faces), area)]
    report(progress, "blocks", 1, 4)
    if len(faces) == 0:
        msg = "the streets form no closed face inside the boundary; no block"
        raise EmptyInputError(msg)
    faces_m = gpd.GeoSeries(faces, crs=src_crs).to_crs(wcrs).to_numpy()

    areas = shapely.area(faces_m)
    widths = _width(faces_m)
    small = areas < min_block_area_m2
    thin = widths < min_block_width_m
    sliver = small | thin
    reasons = np.where(
        small & thin,
        f"area < {min_block_area_m2:g} m² and width < {min_block_width_m:g} m",
        np.where(
            small,
            f"area < {min_block_area_m2:g} m²",
            f"width < {min_block_width_m:g} m",
        ),
    )
    keep = faces[~sliver]
    if len(keep) == 0:
        msg = (
            f"all {len(faces)} faces are slivers (min_block_area_m2="
            f"{min_block_area_m2}, min_block_width_m={min_block_width_m}); lower them"
        )
        raise EmptyInputError(msg)
    merged_into = np.full(len(faces), -1)
    if sliver_action == "merge" and sliver.any():
        keep, merged_into = _merge_slivers(faces, faces_m, sliver)
    report(progress, "blocks", 2, 4)

    keep_m = gpd.GeoSeries(keep, crs=src_crs).to_crs(wcrs).to_numpy()
    order = reading_order(shapely.point_on_surface(keep_m))
    keep, keep_m = keep[order], keep_m[order]
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    block_ids = np.array([f"B{i + 1:04d}" for i in range(len(keep))])
    blocks = gpd.GeoDataFrame(
        {"block_id": block_ids, "area_m2": shapely.area(keep_m)},
        geometry=keep,
        crs=src_crs,
    )
    target = [
        block_ids[rank[merged_into[i]]] if merged_into[i] >= 0 else None
        for i in np.flatnonzero(sliver)
    ]
    dropped = gpd.GeoDataFrame(
        {
            "area_m2": areas[sliver],
            "width_m": widths[sliver],
            "reason": reasons[sliver],
            "merged_into": pd.Series(target, dtype="object"),
        },
        geometry=faces[sliver],
        crs=src_crs,
    )
    report(progress, "blocks", 3, 4)

    street_out = _classify_streets(streets, blocks, area, cutting, wcrs)
    report(progress, "blocks", 4, 4)
    logger.info(
        "%d faces: %d blocks, %d slivers %s",
        len(faces),
        len(blocks),
        int(sliver.sum()),
        "merged" if sliver_action == "merge" else "dropped",
    )
    return BlockBuild(blocks=blocks, streets=street_out, dropped=dropped)


def _merge_slivers(
    faces: np.ndarray, faces_m: np.ndarray, sliver: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Union each sliver into the kept neighbour with the longest shared edge.

    Returns the merged kept faces (in original kept order) and, per face, the index
    into that array it was merged into (-1 for kept faces or isolated slivers).
    """
    n = len(faces)
    edges = shared_edges(faces_m, min_length_m=0.01, snap_tolerance_m=0.001)
    owner = np.where(sliver, -1, np.arange(n))
    # Slivers next to slivers: resolve repeatedly, longest edge first.
    for _ in range(n):
        changed = False
        for s in np.flatnonzero((owner < 0) & sliver):
            rows = edges[(edges["i"] == s) | (edges["j"] == s)]
            best, best_len = -1, 0.0
            for i, j, length in rows.itertuples(index=False):
                other = int(j) if int(i) == s else int(i)
                if owner[other] >= 0 and length > best_len:
                    best, best_len = int(owner[other]), float(length)
            if best >= 0:
                owner[s] = best
                changed = True
        if not changed:
            break
    kept_idx = np.flatnonzero(~sliver)
    pos = {int(k): p for p, k in enumerate(kept_idx)}
    merged = []
    for k in kept_idx:
        members = faces[owner == k]
        merged.append(members[0] if len(members) == 1 else shapely.union_all(members))
    into = np.array(
        [pos[int(owner[i])] if sliver[i] and owner[i] >= 0 else -1 for i in range(n)]
    )
    return np.asarray(merged, dtype=object), into


def _classify_streets(
    streets: gpd.GeoDataFrame,
    blocks: gpd.GeoDataFrame,
    area: shapely.Geometry,
    cutting: np.ndarray,
    wcrs: Any,
) -> gpd.GeoDataFrame:
    """Clip streets to the area, explode, flag lines that bound no block."""
    clipped = streets.copy()
    clipped["_cuts"] = cutting
    clipped[clipped.geometry.name] = shapely.intersection(clipped.geometry.values, area)
    clipped = clipped[~clipped.geometry.is_empty]
    clipped = clipped[clipped.geom_type.isin(["LineString", "MultiLineString"])]
    # Clipping splits a line lying on the boundary at every vertex: merge back.
    multi = (clipped.geom_type == "MultiLineString").to_numpy()
    if multi.any():
        geoms = clipped.geometry.to_numpy().copy()
        geoms[multi] = shapely.line_merge(geoms[multi])
        clipped[clipped.geometry.name] = geoms
    clipped = clipped.explode(index_parts=False)
    clipped = clipped[shapely.length(clipped.geometry.values) > 0]
    src_id = (
        clipped["osm_id"].astype(str)
        if "osm_id" in clipped.columns
        else pd.Series(clipped.index.astype(str), index=clipped.index)
    )
    part = clipped.groupby(level=0).cumcount()
    count = clipped.groupby(level=0)[clipped.geometry.name].transform("size")
    clipped["street_id"] = np.where(
        count > 1, src_id + "-" + (part + 1).astype(str), src_id
    )
    clipped = clipped.reset_index(drop=True)
    lines_m = clipped.geometry.to_crs(wcrs).to_numpy()
    rims = shapely.union_all(shapely.boundary(blocks.geometry.to_crs(wcrs).to_numpy()))
    on_rim = shapely.length(shapely.intersection(lines_m, shapely.buffer(rims, 0.05)))
    bounding = clipped["_cuts"].to_numpy() & (on_rim >= 0.5 * shapely.length(lines_m))
    clipped["internal"] = ~bounding
    mid = shapely.line_interpolate_point(clipped.geometry.values, 0.5, normalized=True)
    hit = gpd.GeoDataFrame(geometry=mid, crs=clipped.crs).sjoin(
        blocks[["block_id", blocks.geometry.name]], predicate="within", how="left"
    )
    hit = hit[~hit.index.duplicated(keep="first")]
    inside = hit["block_id"].reindex(clipped.index)
    clipped["block_id"] = [
        b if (flag and isinstance(b, str)) else None
        for flag, b in zip(clipped["internal"], inside, strict=True)
    ]
    if "name" not in clipped.columns:
        clipped["name"] = None
    return clipped.drop(columns=["_cuts"])


def assign_blocks(
    features: gpd.GeoDataFrame,
    blocks: gpd.GeoDataFrame,
    *,
    id_col: str = "block_id",
    max_distance_m: float = 30.0,
    working_crs: CRS | str | int | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """The block of each feature: the one holding its representative point.

    A feature whose point lies in no block (road space, a dropped sliver) goes to
    the nearest block within ``max_distance_m``; beyond that it gets ``None``.

    Parameters
    ----------
    features
        Any geometries, same CRS as ``blocks``.
    blocks
        Block polygons with ``id_col``.
    id_col
        Block id column.
    max_distance_m
        Snap distance for features outside every block (0 disables snapping).
    working_crs
        Projected CRS for distances.

    Returns
    -------
    (numpy.ndarray, dict)
        Block id (object array, ``None`` where unassigned) per feature position, and
        counts ``inside``, ``snapped``, ``outside``.
    """
    n = len(features)
    out = np.full(n, None, dtype=object)
    counts = {"inside": 0, "snapped": 0, "outside": 0}
    if n == 0 or len(blocks) == 0:
        counts["outside"] = n
        return out, counts
    wcrs = _working_crs(blocks, working_crs)
    bproj = blocks[[id_col, blocks.geometry.name]].to_crs(wcrs).reset_index(drop=True)
    pts = gpd.GeoDataFrame(
        geometry=features.to_crs(wcrs).geometry.representative_point().to_numpy(),
        crs=wcrs,
    )
    hit = pts.sjoin(bproj, predicate="within")
    hit = hit[~hit.index.duplicated(keep="first")]
    out[hit.index.to_numpy()] = hit[id_col].to_numpy()
    counts["inside"] = len(hit)
    rest = np.flatnonzero(pd.isna(out))
    if len(rest) and max_distance_m > 0:
        near = pts.iloc[rest].sjoin_nearest(
            bproj, max_distance=max_distance_m, how="inner"
        )
        near = near[~near.index.duplicated(keep="first")]
        out[near.index.to_numpy()] = near[id_col].to_numpy()
        counts["snapped"] = len(near)
    counts["outside"] = int(pd.isna(out).sum())
    return out, counts
