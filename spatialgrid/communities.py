"""Communities (社区) for a set of street blocks: given, or grown from the blocks.

Three sources, in order of preference:

1. A planner's community polygons (a GeoDataFrame or file) — authoritative.
2. Administrative boundaries in the data (OSM ``admin_level`` 9/10 for communities,
   8 for subdistricts).
3. Generated: contiguous groups of about ``target_households`` households grown on
   the rook graph of the blocks (:mod:`spatialgrid.adjacency`). Deterministic region
   growing: seeds are taken in reading order (north-west first); a region absorbs the
   unassigned neighbour sharing the longest edge with it while that brings its total
   closer to the target; regions left below half the target merge into the
   neighbouring region with the longest shared border. Marked ``generated=True``.

Every block gets a ``community_code``: the community containing its representative
point, else the one it overlaps most, else the nearest (reported). Community
geometry is the union of its blocks, so communities nest blocks exactly (the grid
partition relies on that). Codes are 12 digits: 6-digit admin code (GB/T 2260) +
3-digit subdistrict (GB/T 10114) + 3-digit sequence, numbered west→east,
north→south (:func:`spatialgrid.blocks.reading_order`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.adjacency import adjacency_lists, shared_edges
from spatialgrid.blocks import reading_order
from spatialgrid.crs import require_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import CodeOverflowError, InputError
from spatialgrid.validate import require_frame

if TYPE_CHECKING:
    from pyproj import CRS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommunityBuild:
    """Result of :func:`build_communities`.

    Attributes
    ----------
    blocks
        The input blocks with ``community_code`` set on every row.
    communities
        One polygon per community (union of its blocks) with the City columns.
    subdistricts
        One polygon per subdistrict (union of its communities).
    report
        Source, counts, blocks assigned by fallback, empty communities dropped.
    """

    blocks: gpd.GeoDataFrame
    communities: gpd.GeoDataFrame
    subdistricts: gpd.GeoDataFrame
    report: dict[str, Any] = field(default_factory=dict)


def check_code(value: str, digits: int, name: str) -> str:
    """Return ``value`` if it is exactly ``digits`` digits, else raise InputError."""
    text = str(value)
    if not re.fullmatch(rf"\d{{{digits}}}", text):
        msg = (
            f"{name}={value!r} must be exactly {digits} digits (e.g. {'1' * digits!r})"
        )
        raise InputError(msg)
    return text


def sequence_codes(
    prefix: str,
    count: int,
    *,
    exclude: Iterable[str] = (),
    name: str = "community",
) -> list[str]:
    """``count`` codes ``prefix + 001`` … in order, skipping ``exclude``.

    Raises :class:`CodeOverflowError` when the 3-digit sequence (999) runs out.
    """
    taken = set(exclude)
    free = [code for i in range(999) if (code := f"{prefix}{i + 1:03d}") not in taken]
    if count > len(free):
        msg = (
            f"{count} {name}s under {prefix} need more than the 3-digit sequence "
            "(999); split them over several subdistrict codes."
        )
        raise CodeOverflowError(msg)
    return free[:count]


def group_blocks(
    blocks: gpd.GeoDataFrame,
    *,
    target_households: int = 3000,
    households_col: str = "households",
    min_fraction: float = 0.5,
    working_crs: CRS | str | int | None = None,
) -> np.ndarray:
    """Contiguous groups of blocks of about ``target_households`` each.

    Parameters
    ----------
    blocks
        Polygons with a CRS and ``households_col``.
    target_households
        Households per group aimed at (a community holds about 3000).
    households_col
        Column with household counts.
    min_fraction
        Groups below ``min_fraction × target`` merge into the neighbouring group
        with the longest shared border (when they have one).
    working_crs
        Projected CRS for adjacency; default from :func:`spatialgrid.crs.working_crs`.

    Returns
    -------
    numpy.ndarray
        Group label per block position, ``0..k-1``, labels in reading order of the
        groups' seeds.
    """
    if target_households <= 0:
        msg = f"target_households={target_households} must be > 0 (e.g. 3000)"
        raise InputError(msg)
    require_frame(blocks, "blocks", columns=[households_col], allow_empty=True)
    n = len(blocks)
    if n == 0:
        return np.zeros(0, dtype=int)
    proj = blocks.to_crs(_working_crs(blocks, working_crs))
    geoms = proj.geometry.values
    hh = pd.to_numeric(blocks[households_col], errors="coerce").fillna(0).to_numpy()
    edges = shared_edges(geoms)
    neigh = adjacency_lists(n, edges)
    shared: dict[tuple[int, int], float] = {}
    for i, j, length in edges.itertuples(index=False):
        shared[(int(i), int(j))] = shared[(int(j), int(i))] = float(length)
    order = reading_order(shapely.point_on_surface(geoms))
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)

    label = np.full(n, -1)
    totals: list[float] = []
    for seed in order:
        if label[seed] >= 0:
            continue
        g = len(totals)
        label[seed] = g
        total = float(hh[seed])
        border: dict[int, float] = {}
        for nb in neigh[seed]:
            if label[nb] < 0:
                border[nb] = border.get(nb, 0.0) + shared[(seed, nb)]
        while border and total < target_households:
            best = max(border, key=lambda b: (border[b], -rank[b]))
            new_total = total + hh[best]
            if total > 0 and abs(new_total - target_households) > abs(
                total - target_households
            ):
                break
            del border[best]
            label[best] = g
            total = new_total
            for nb in neigh[best]:
                if label[nb] < 0:
                    border[nb] = border.get(nb, 0.0) + shared[(best, nb)]
        totals.append(total)

    # Merge groups far below target into their best-connected neighbour group.
    k = len(totals)
    totals_arr = np.asarray(totals)
    for _ in range(k):
        small = [
            g
            for g in np.argsort(totals_arr, kind="stable")
            if totals_arr[g] < min_fraction * target_households and (label == g).any()
        ]
        merged = False
        for g in small:
            links: dict[int, float] = {}
            for i in np.flatnonzero(label == g):
                for nb in neigh[i]:
                    other = int(label[nb])
                    if other != g:
                        links[other] = links.get(other, 0.0) + shared[(int(i), nb)]
            if not links:
                continue
            target = max(links, key=lambda o: (links[o], -o))
            label[label == g] = target
            totals_arr[target] += totals_arr[g]
            totals_arr[g] = 0
            merged = True
            break
        if not merged:
            break
    # Relabel 0..k-1 in reading order of each group's first block.
    first: dict[int, int] = {}
    for pos in order:
        first.setdefault(int(label[pos]), len(first))
    return np.array([first[int(g)] for g in label])


def read_communities(source: gpd.GeoDataFrame | str | Path) -> gpd.GeoDataFrame:
    """A planner's community polygons from a GeoDataFrame or a file."""
    if isinstance(source, gpd.GeoDataFrame):
        frame = source
    else:
        from spatialgrid.io import read_layer

        frame = read_layer(source)
    require_frame(frame, "communities", geometry_types=("Polygon", "MultiPolygon"))
    return frame


def _assign(
    points: gpd.GeoDataFrame,
    blocks_proj: gpd.GeoDataFrame,
    areas_proj: gpd.GeoDataFrame,
) -> tuple[np.ndarray, dict[str, int]]:
    """Area position per block: containing rep point, else most overlap, else nearest."""
    n = len(points)
    out = np.full(n, -1)
    hit = points.sjoin(areas_proj[[areas_proj.geometry.name]], predicate="within")
    hit = hit[~hit.index.duplicated(keep="first")]
    out[hit.index.to_numpy()] = hit["index_right"].to_numpy()
    counts = {"by_point": int((out >= 0).sum()), "by_overlap": 0, "by_nearest": 0}
    tree = shapely.STRtree(areas_proj.geometry.values)
    for i in np.flatnonzero(out < 0):
        geom = blocks_proj.geometry.values[i]
        cands = tree.query(geom, predicate="intersects")
        if len(cands):
            inter = shapely.area(
                shapely.intersection(geom, areas_proj.geometry.values[cands])
            )
            if inter.max() > 0:
                out[i] = int(cands[int(np.argmax(inter))])
                counts["by_overlap"] += 1
                continue
        out[i] = int(tree.nearest(geom))
        counts["by_nearest"] += 1
    return out, counts


def _dissolve(
    blocks: gpd.GeoDataFrame, key: str, households_col: str
) -> gpd.GeoDataFrame:
    geom = blocks.geometry.name
    rows = []
    for code, part in blocks.groupby(key, sort=True):
        rows.append(
            {
                key: code,
                "households": int(
                    pd.to_numeric(part[households_col], errors="coerce").fillna(0).sum()
                ),
                "n_blocks": len(part),
                geom: shapely.union_all(part.geometry.values),
            }
        )
    return gpd.GeoDataFrame(rows, geometry=geom, crs=blocks.crs)


def build_communities(
    blocks: gpd.GeoDataFrame,
    *,
    communities: gpd.GeoDataFrame | str | Path | None = None,
    boundaries: gpd.GeoDataFrame | None = None,
    admin_code: str = "000000",
    subdistrict_code: str = "001",
    target_households: int = 3000,
    households_col: str = "households",
    working_crs: CRS | str | int | None = None,
) -> CommunityBuild:
    """Give every block a community code and build the communities layer.

    Parameters
    ----------
    blocks
        Block polygons with ``households_col``.
    communities
        A planner's community polygons (GeoDataFrame or file path). Optional
        columns: ``community_code`` (12 digits), ``name``, ``subdistrict_code``.
        Wins over ``boundaries``.
    boundaries
        Administrative boundaries with ``admin_level`` (int), ``name``, ``ref``
        (as from :func:`spatialgrid.osm.read_osm`). Levels 9/10 become
        communities (10 preferred), 8 subdistricts.
    admin_code
        6-digit GB/T 2260 code used in generated codes.
    subdistrict_code
        3-digit subdistrict number used when no subdistrict boundary says otherwise.
    target_households
        Households per generated community.
    households_col
        Column with household counts.
    working_crs
        Projected CRS for metric work.

    Returns
    -------
    CommunityBuild

    Raises
    ------
    InputError
        For malformed codes.
    CRSMismatchError, MissingCRSError
        When ``communities`` has no CRS (or cannot be reprojected).
    """
    admin_code = check_code(admin_code, 6, "admin_code")
    subdistrict_code = check_code(subdistrict_code, 3, "subdistrict_code")
    require_frame(blocks, "blocks", columns=[households_col])
    crs = blocks.crs
    wcrs = _working_crs(blocks, working_crs)
    blocks_proj = blocks.to_crs(wcrs)
    points = gpd.GeoDataFrame(
        geometry=blocks_proj.geometry.representative_point().to_numpy(), crs=wcrs
    )
    out = blocks.copy()
    rep: dict[str, Any] = {}

    given = None
    source = "generated"
    if communities is not None:
        given = read_communities(communities)
        require_crs(given, "communities")
        source = "planner"
    elif boundaries is not None and len(boundaries):
        levels = pd.to_numeric(boundaries["admin_level"], errors="coerce")
        for level in (10, 9):
            if (levels == level).any():
                given = boundaries.loc[(levels == level).to_numpy()]
                source = f"admin_level {level}"
                break
    sub_areas = None
    if boundaries is not None and len(boundaries):
        levels = pd.to_numeric(boundaries["admin_level"], errors="coerce")
        if (levels == 8).any():
            sub_areas = boundaries.loc[(levels == 8).to_numpy()].reset_index(drop=True)

    # Subdistrict per block (codes: ref when 9 digits, else admin + sequence).
    sub_code = np.full(len(out), admin_code + subdistrict_code, dtype=object)
    sub_names: dict[str, str] = {admin_code + subdistrict_code: "generated subdistrict"}
    sub_generated = True
    if sub_areas is not None:
        sub_proj = sub_areas.to_crs(wcrs)
        order = reading_order(shapely.point_on_surface(sub_proj.geometry.values))
        seq = sequence_codes(admin_code, len(order), name="subdistrict")
        codes = np.empty(len(order), dtype=object)
        for rank_, pos in enumerate(order):
            ref = str(sub_areas["ref"].iloc[pos] or "")
            codes[pos] = ref if re.fullmatch(r"\d{9}", ref) else seq[rank_]
        which, _ = _assign(points, blocks_proj, sub_proj)
        sub_code = codes[which]
        sub_names = {
            codes[i]: str(sub_areas["name"].iloc[i] or codes[i])
            for i in range(len(codes))
        }
        sub_generated = False

    if given is not None:
        given = given.reset_index(drop=True)
        given_proj = given.to_crs(wcrs)
        which, counts = _assign(points, blocks_proj, given_proj)
        rep["blocks_assigned"] = counts
        used = np.unique(which)
        unused = len(given) - len(used)
        if unused:
            rep["communities_without_blocks"] = int(unused)
        codes = np.empty(len(given), dtype=object)
        has_code = "community_code" in given.columns
        if not has_code and "ref" in given.columns:
            refs = given["ref"].astype(str)
        else:
            refs = given["community_code"].astype(str) if has_code else None
        if has_code:
            for i, code in enumerate(given["community_code"]):
                codes[i] = check_code(code, 12, "communities.community_code")
        else:
            # Sequence per subdistrict, in reading order.
            rp = shapely.point_on_surface(given_proj.geometry.values)
            in_sub = {}
            for i in range(len(given)):
                member = sub_code[which == i]
                in_sub[i] = member[0] if len(member) else admin_code + subdistrict_code
            for prefix in sorted(set(in_sub.values())):
                idx = np.array([i for i in range(len(given)) if in_sub[i] == prefix])
                order = idx[reading_order(rp[idx])]
                own = [str(refs.iloc[i]) if refs is not None else "" for i in order]
                own = [r if re.fullmatch(r"\d{12}", r) else "" for r in own]
                fresh = iter(sequence_codes(prefix, own.count(""), exclude=own))
                for i, ref in zip(order, own, strict=True):
                    codes[i] = ref or next(fresh)
        out["community_code"] = codes[which]
        names = {
            codes[i]: (
                str(given["name"].iloc[i])
                if "name" in given.columns and pd.notna(given["name"].iloc[i])
                else codes[i]
            )
            for i in range(len(given))
        }
        generated = False
    else:
        codes_arr = np.empty(len(out), dtype=object)
        # Grown inside each subdistrict, so communities nest in subdistricts.
        for prefix in sorted(set(sub_code)):
            mask = sub_code == prefix
            labels = group_blocks(
                out.loc[mask],
                target_households=target_households,
                households_col=households_col,
                working_crs=wcrs,
            )
            seq = sequence_codes(prefix, int(labels.max()) + 1)
            codes_arr[mask] = [seq[int(g)] for g in labels]
        out["community_code"] = codes_arr
        codes_by_label = dict.fromkeys(codes_arr)
        names = {c: f"generated community {c[-3:]}" for c in codes_by_label}
        generated = True
        rep["target_households"] = target_households

    comm = _dissolve(out, "community_code", households_col)
    comm["name"] = comm["community_code"].map(names)
    comm["subdistrict_code"] = comm["community_code"].str[:9]
    comm["generated"] = generated
    comm = comm[
        [
            "community_code",
            "name",
            "subdistrict_code",
            "households",
            "generated",
            "n_blocks",
            comm.geometry.name,
        ]
    ]
    subs = _dissolve(
        comm[["subdistrict_code", "households", comm.geometry.name]],
        "subdistrict_code",
        "households",
    )
    subs["name"] = subs["subdistrict_code"].map(lambda c: sub_names.get(c, c))
    subs["level"] = "subdistrict"
    subs["generated"] = sub_generated
    subs = subs.drop(columns=["n_blocks"])
    rep.update(
        {
            "source": source,
            "communities": len(comm),
            "subdistricts": len(subs),
            "generated": generated,
            "households_min": int(comm["households"].min()) if len(comm) else 0,
            "households_max": int(comm["households"].max()) if len(comm) else 0,
        }
    )
    logger.info("%d communities (%s)", len(comm), source)
    return CommunityBuild(
        blocks=out,
        communities=comm.set_crs(crs, allow_override=True),
        subdistricts=subs.set_crs(crs, allow_override=True),
        report=rep,
    )
