"""Benchmark: coverage QA of a whole-city plan, spatialgrid vs plain geopandas overlay.

Run::

    .venv/bin/python bench/coverage.py [--communities 92] [--seed 0] [--city voronoi|sample]

The city is :func:`spatialgrid.sample.generate_city` when available (``--city
sample``, the default when the module imports), else a Voronoi-tessellated test city
made here. Grids come from a simple deterministic grouping of each community's blocks
(nearest of k seed blocks, k = round(households / 450)). Faults are injected so that
both checks have something to find: grids removed (gaps), grids shifted by 5 m
(overlaps + slivers).

Both methods compute the same findings: gaps (classed by inscribed-circle width),
overlaps, grids outside their community, households/buildings/shops/addresses inside
each gap and overlap, points outside every grid, addresses inside two grids. The
baseline uses geopandas ``overlay`` (difference/intersection) and ``sjoin`` only.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialgrid.coverage import find_coverage_issues

CRS = "EPSG:4546"
X0, Y0 = 500_000.0, 3_357_000.0


def voronoi_city(n_communities: int, seed: int) -> dict[str, gpd.GeoDataFrame]:
    """A city of Voronoi blocks grouped into communities of ~3000 households."""
    rng = np.random.default_rng(seed)
    blocks_per_comm = 40
    n_blocks = n_communities * blocks_per_comm
    side = np.sqrt(n_blocks) * 110.0
    pts = rng.uniform(0, side, size=(n_blocks, 2)) + np.array([X0, Y0])
    extent = shapely.box(X0, Y0, X0 + side, Y0 + side)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)
    )
    cells = shapely.intersection(cells, extent)
    cells = cells[shapely.area(cells) > 1.0]
    centroids = shapely.get_coordinates(shapely.centroid(cells))
    # Communities: nearest of n seeds spread on a lattice.
    m = int(np.ceil(np.sqrt(n_communities)))
    gx, gy = np.meshgrid(np.arange(m), np.arange(m))
    seeds = np.c_[gx.ravel(), gy.ravel()][:n_communities] * (side / m) + side / m / 2
    seeds += [X0, Y0]
    comm_of = np.argmin(((centroids[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
    codes = np.array([f"421002{1 + i // 30:03d}{1 + i % 30:03d}" for i in range(m * m)])
    hh = rng.integers(40, 110, size=len(cells))
    blocks = gpd.GeoDataFrame(
        {
            "block_id": [f"B{i:05d}" for i in range(len(cells))],
            "community_code": codes[comm_of],
            "households": hh,
            "households_source": "planner",
        },
        geometry=cells,
        crs=CRS,
    )
    communities = blocks.dissolve("community_code", aggfunc={"households": "sum"})
    communities = communities.reset_index()
    # Buildings: 4 per block, households split; shops and addresses at buildings.
    rows, geoms = [], []
    for b, geom in zip(blocks.itertuples(), blocks.geometry.values, strict=True):
        inner = shapely.buffer(geom, -8.0)
        if inner.is_empty:
            inner = geom
        cx, cy = shapely.get_coordinates(shapely.point_on_surface(inner))[0]
        share = np.diff(np.round(np.linspace(0, b.households, 5)).astype(int))
        for j, (dx, dy) in enumerate(((-6, -6), (6, -6), (-6, 6), (6, 6))):
            box = shapely.box(
                cx + dx - 2.5, cy + dy - 2.5, cx + dx + 2.5, cy + dy + 2.5
            )
            rows.append((f"{b.block_id}-{j}", b.block_id, int(share[j])))
            geoms.append(box)
    buildings = gpd.GeoDataFrame(
        {
            "building_id": [r[0] for r in rows],
            "block_id": [r[1] for r in rows],
            "compound_id": None,
            "levels": 6,
            "households": [r[2] for r in rows],
            "households_source": "planner",
        },
        geometry=geoms,
        crs=CRS,
    )
    reps = shapely.point_on_surface(buildings.geometry.values)
    addresses = gpd.GeoDataFrame(
        {
            "address_id": buildings["building_id"].to_numpy(),
            "address": "No. 1",
            "road": None,
            "number": None,
            "compound": None,
            "building": None,
            "kind": "building",
            "block_id": buildings["block_id"].to_numpy(),
        },
        geometry=reps,
        crs=CRS,
    ).iloc[::2]
    pick = rng.choice(len(reps), size=3000, replace=False)
    pois = gpd.GeoDataFrame(
        {
            "poi_id": [f"P{i:05d}" for i in range(len(pick))],
            "name": "shop",
            "category": "shop",
            "is_shop": True,
            "block_id": buildings["block_id"].to_numpy()[pick],
        },
        geometry=reps[pick],
        crs=CRS,
    )
    return {
        "communities": communities,
        "blocks": blocks,
        "buildings": buildings,
        "addresses": addresses,
        "pois": pois,
    }


def sample_city(n_communities: int, seed: int) -> dict[str, gpd.GeoDataFrame]:
    """Layers of :func:`spatialgrid.sample.generate_city`."""
    from spatialgrid.sample import generate_city

    city = generate_city(seed=seed, n_communities=n_communities)
    return dict(city.layers())


def group_blocks(blocks: gpd.GeoDataFrame, *, target: int = 450) -> gpd.GeoDataFrame:
    """Deterministic grids: each block to the nearest of k seed blocks of its community."""
    out = []
    for code, part in blocks.groupby("community_code", sort=True):
        hh = int(part["households"].sum())
        k = max(1, round(hh / target))
        xy = shapely.get_coordinates(shapely.point_on_surface(part.geometry.values))
        order = np.lexsort((xy[:, 0], -xy[:, 1]))
        seeds = xy[order[np.linspace(0, len(part) - 1, k).round().astype(int)]]
        label = np.argmin(((xy[:, None, :] - seeds[None]) ** 2).sum(-1), axis=1)
        grouped = part.assign(seq=label).dissolve(
            "seq", aggfunc={"households": "sum", "block_id": "count"}
        )
        grouped = grouped.reset_index(drop=True)
        grouped["community_code"] = code
        grouped["grid_code"] = [f"{code}{i + 1:02d}" for i in range(len(grouped))]
        grouped["worker"] = [f"worker {code[-3:]}-{i + 1}" for i in range(len(grouped))]
        out.append(grouped.rename(columns={"block_id": "n_blocks"}))
    return gpd.GeoDataFrame(pd.concat(out, ignore_index=True), crs=blocks.crs)


def inject_faults(grids: gpd.GeoDataFrame, seed: int) -> gpd.GeoDataFrame:
    """Remove 5 grids, shift 5 grids by 5 m."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(grids), size=10, replace=False)
    faulty = grids.copy()
    for k in picks[5:]:
        faulty.loc[k, "geometry"] = shapely.affinity.translate(
            faulty.geometry[k], 5.0, 0.0
        )
    return faulty.drop(index=picks[:5]).reset_index(drop=True)


def overlay_check(
    grids: gpd.GeoDataFrame,
    communities: gpd.GeoDataFrame,
    blocks: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    pois: gpd.GeoDataFrame,
    addresses: gpd.GeoDataFrame,
    *,
    sliver_width_m: float = 2.0,
) -> dict[str, int | float]:
    """The same findings with plain geopandas overlay + sjoin."""
    # overlay(keep_geom_type=True) warns each time it drops touching edges.
    warnings.filterwarnings("ignore", message=".*keep_geom_type.*")
    g = grids[["grid_code", "community_code", "geometry"]]
    c = communities[["community_code", "geometry"]]
    gaps = gpd.overlay(c, g[["geometry"]], how="difference", keep_geom_type=True)
    gaps = gaps.explode(index_parts=False).reset_index(drop=True)
    gaps = gaps[gaps.area >= 0.01].reset_index(drop=True)
    width = 2 * shapely.length(
        shapely.maximum_inscribed_circle(gaps.geometry.values, sliver_width_m / 100)
    )
    gaps["kind"] = np.where(width < sliver_width_m, "sliver", "unassigned")
    gaps["gap_id"] = np.arange(len(gaps))
    inter = gpd.overlay(
        g.rename(columns={"grid_code": "a"})[["a", "geometry"]],
        g.rename(columns={"grid_code": "b"})[["b", "geometry"]],
        how="intersection",
        keep_geom_type=True,
    )
    overlaps = inter[inter["a"] < inter["b"]].explode(index_parts=False)
    overlaps = overlaps[overlaps.area >= 0.01].reset_index(drop=True)
    overlaps["ov_id"] = np.arange(len(overlaps))
    own = gpd.overlay(g, c, how="intersection", keep_geom_type=True)
    own = own[own["community_code_1"] == own["community_code_2"]]
    inside = own.assign(a=own.area).groupby("grid_code")["a"].sum()
    outside = (
        g.set_index("grid_code").area
        - inside.reindex(g["grid_code"]).fillna(0).to_numpy()
    )
    crossing = int((outside >= 0.01).sum())

    # Households pro-rata from blocks (overlay), buildings/shops/addresses by sjoin.
    bl = blocks[["households", "geometry"]].assign(block_area=blocks.area)
    pieces = gpd.overlay(bl, gaps[["gap_id", "geometry"]], how="intersection")
    gap_hh = (
        (pieces["households"] * pieces.area / pieces["block_area"])
        .groupby(pieces["gap_id"])
        .sum()
    )
    pieces = gpd.overlay(bl, overlaps[["ov_id", "geometry"]], how="intersection")
    ov_hh = (
        (pieces["households"] * pieces.area / pieces["block_area"])
        .groupby(pieces["ov_id"])
        .sum()
    )
    reps = buildings.set_geometry(buildings.representative_point())[["geometry"]]
    b_in_gaps = gpd.sjoin(reps, gaps[["gap_id", "geometry"]], predicate="within")
    b_in_ov = gpd.sjoin(reps, overlaps[["ov_id", "geometry"]], predicate="within")
    out: dict[str, int | float] = {}
    for name, pts in (("pois", pois), ("addresses", addresses)):
        pts = pts[["geometry"]]
        touch = gpd.sjoin(pts, g, predicate="intersects", how="left")
        uncovered = touch["grid_code"].isna().groupby(level=0).all()
        within = gpd.sjoin(pts, g, predicate="within")
        multi = within.groupby(level=0).size()
        in_gaps = gpd.sjoin(pts, gaps[["gap_id", "geometry"]], predicate="within")
        in_ov = gpd.sjoin(pts, overlaps[["ov_id", "geometry"]], predicate="within")
        out[f"uncovered_{name}"] = int(uncovered.sum())
        out[f"multi_{name}"] = int((multi >= 2).sum())
        out[f"{name}_in_gaps"] = len(in_gaps)
        out[f"{name}_in_overlaps"] = len(in_ov)
    out.update(
        {
            "slivers": int((gaps["kind"] == "sliver").sum()),
            "unassigned": int((gaps["kind"] == "unassigned").sum()),
            "overlaps": len(overlaps),
            "crossing_or_outside": crossing,
            "gap_households": round(float(gap_hh.sum()), 1),
            "overlap_households": round(float(ov_hh.sum()), 1),
            "buildings_in_gaps": len(b_in_gaps),
            "buildings_in_overlaps": len(b_in_ov),
        }
    )
    return out


def main() -> None:
    """Build the city, inject faults, time both checks, print both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--communities", type=int, default=92)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--city", choices=["auto", "voronoi", "sample"], default="auto")
    args = parser.parse_args()
    kind = args.city
    if kind == "auto":
        try:
            import spatialgrid.sample  # noqa: F401

            kind = "sample"
        except ImportError:
            kind = "voronoi"
    t0 = time.perf_counter()
    layers = (sample_city if kind == "sample" else voronoi_city)(
        args.communities, args.seed
    )
    blocks = layers["blocks"]
    grids = inject_faults(group_blocks(blocks), args.seed)
    build_s = time.perf_counter() - t0
    n_points = len(layers["pois"]) + len(layers["addresses"])
    print(
        f"city={kind} communities={len(layers['communities'])} blocks={len(blocks)} "
        f"buildings={len(layers['buildings'])} grids={len(grids)} "
        f"pois={len(layers['pois'])} addresses={len(layers['addresses'])} "
        f"(shops+addresses={n_points}) built in {build_s:.1f} s"
    )
    common = {
        "blocks": blocks,
        "pois": layers["pois"],
        "addresses": layers["addresses"],
    }
    t0 = time.perf_counter()
    rep = find_coverage_issues(grids, layers["communities"], **common)
    ours_s = time.perf_counter() - t0
    s = rep.summary
    print(
        f"spatialgrid.find_coverage_issues: {ours_s:.2f} s  slivers={s['slivers']['count']} "
        f"unassigned={s['unassigned']['count']} overlaps={s['overlaps']['count']} "
        f"crossings={sum(s['crossings'].values())} "
        f"gap_households={s['gaps']['households']:.1f} "
        f"overlap_households={s['overlaps']['households']:.1f} "
        f"uncovered pois/addresses={s['uncovered']['pois']}/{s['uncovered']['addresses']} "
        f"multi-covered addresses={s['multi_covered']['addresses']}"
    )
    t0 = time.perf_counter()
    rep_b = find_coverage_issues(
        grids, layers["communities"], buildings=layers["buildings"], **common
    )
    ours_b_s = time.perf_counter() - t0
    print(
        f"  … with buildings (households by building): {ours_b_s:.2f} s "
        f"gap_households={rep_b.summary['gaps']['households']:.0f} "
        f"buildings_in_gaps={rep_b.summary['gaps']['buildings']}"
    )
    t0 = time.perf_counter()
    base = overlay_check(
        grids,
        layers["communities"],
        blocks,
        layers["buildings"],
        layers["pois"],
        layers["addresses"],
    )
    base_s = time.perf_counter() - t0
    print(f"geopandas overlay + sjoin:        {base_s:.2f} s  {base}")
    print(
        f"speed-up {base_s / ours_s:.1f}x; target <= 10 s: "
        f"{'OK' if ours_s <= 10 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
