"""Assertion helpers and synthetic builders reusable by tests, notebooks and benches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import geopandas as gpd
import shapely

#: CGCS2000 / 3-degree Gauss-Kruger CM 111E: projected metres around Jingzhou.
PROJECTED_CRS = "EPSG:4546"
#: A false origin inside that zone (x near the central meridian, y ~ 30.3 N).
ORIGIN = (500_000.0, 3_357_000.0)


def box_lattice(
    nx: int,
    ny: int,
    *,
    size_m: float = 100.0,
    households: int | Sequence[int] = 250,
    community_code: str = "421002001001",
    origin: tuple[float, float] = ORIGIN,
    crs: str = PROJECTED_CRS,
) -> gpd.GeoDataFrame:
    """An ``nx`` x ``ny`` lattice of square blocks sharing edges exactly.

    Block ids are ``B{row}_{col}`` with row 0 in the north; ``households`` is one
    number for all blocks or one per block in row-major order (north-west first).
    """
    x0, y0 = origin
    ids, geoms = [], []
    for row in range(ny):
        for col in range(nx):
            x = x0 + col * size_m
            y = y0 + (ny - 1 - row) * size_m
            ids.append(f"B{row}_{col}")
            geoms.append(shapely.box(x, y, x + size_m, y + size_m))
    hh = (
        np.full(len(ids), households, dtype=int)
        if isinstance(households, int)
        else np.asarray(households, dtype=int)
    )
    if len(hh) != len(ids):
        msg = f"households has {len(hh)} values for {len(ids)} blocks"
        raise ValueError(msg)
    return gpd.GeoDataFrame(
        {
            "block_id": ids,
            "community_code": community_code,
            "households": hh,
            "households_source": "planner",
        },
        geometry=geoms,
        crs=crs,
    )


def lattice_plan(
    *,
    n_communities: int = 2,
    nx: int = 4,
    ny: int = 3,
    size_m: float = 100.0,
    origin: tuple[float, float] = ORIGIN,
    crs: str = PROJECTED_CRS,
) -> dict[str, gpd.GeoDataFrame]:
    """A tiny planned city on a box lattice: layers plus a clean grid plan.

    ``n_communities`` communities side by side (west→east), each ``nx`` x ``ny``
    blocks of ``size_m``; streets run along every lattice line (block edges are
    street centre lines). Each grid is a west→east pair of blocks (``nx`` even), so
    the grids tile each community exactly. Households per block vary (190–235);
    every block has two buildings (households split), a door-plate address at each
    building and one shop. Returns a dict with ``communities``, ``blocks``,
    ``buildings``, ``addresses``, ``pois``, ``streets`` and ``grids`` (columns
    ``grid_code``, ``community_code``, ``households``, ``n_blocks``, ``worker``).
    Used by the coverage and repair tests.
    """
    import pandas as pd

    if nx % 2:
        msg = f"nx must be even (grids are pairs of blocks), got {nx}"
        raise ValueError(msg)
    x0, y0 = origin
    frames = []
    communities = []
    for k in range(n_communities):
        code = f"421002001{k + 1:03d}"
        hh = [190 + (5 * (i + 3 * k)) % 50 for i in range(nx * ny)]
        blk = box_lattice(
            nx,
            ny,
            size_m=size_m,
            households=hh,
            community_code=code,
            origin=(x0 + k * nx * size_m, y0),
            crs=crs,
        )
        blk["block_id"] = [f"C{k + 1}{b}" for b in blk["block_id"]]
        frames.append(blk)
        communities.append(
            (code, shapely.union_all(np.asarray(blk.geometry.values)), int(sum(hh)))
        )
    blocks = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
    comm = gpd.GeoDataFrame(
        {
            "community_code": [c[0] for c in communities],
            "name": [f"Community {c[0][-3:]}" for c in communities],
            "subdistrict_code": "421002001",
            "households": [c[2] for c in communities],
            "generated": False,
        },
        geometry=[c[1] for c in communities],
        crs=crs,
    )
    # Grids: west→east pairs of blocks, coded community + 2-digit sequence.
    rows, geoms = [], []
    for code, part in blocks.groupby("community_code", sort=True):
        part = part.reset_index(drop=True)
        seq = 0
        for row in range(ny):
            for col in range(0, nx, 2):
                pair = part.iloc[[row * nx + col, row * nx + col + 1]]
                seq += 1
                rows.append(
                    {
                        "grid_code": f"{code}{seq:02d}",
                        "community_code": code,
                        "households": int(pair["households"].sum()),
                        "n_blocks": 2,
                        "worker": f"worker {code[-3:]}-{seq:02d}",
                    }
                )
                geoms.append(shapely.union_all(np.asarray(pair.geometry.values)))
    grids = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs)
    # Two buildings per block, an address at each, one shop per block.
    b_rows, b_geoms, a_geoms, p_geoms = [], [], [], []
    for blk_id, hh, geom in zip(
        blocks["block_id"], blocks["households"], blocks.geometry, strict=True
    ):
        bx, by, _, _ = geom.bounds
        half = int(hh) // 2
        for j, (dx, share) in enumerate(((20.0, half), (60.0, int(hh) - half))):
            b_rows.append((f"{blk_id}-{j}", blk_id, share))
            b_geoms.append(shapely.box(bx + dx, by + 30, bx + dx + 20, by + 70))
            a_geoms.append(shapely.Point(bx + dx + 10, by + 30.5))
        p_geoms.append(shapely.Point(bx + 50, by + 15))
    buildings = gpd.GeoDataFrame(
        {
            "building_id": [r[0] for r in b_rows],
            "block_id": [r[1] for r in b_rows],
            "compound_id": None,
            "levels": 6,
            "households": [r[2] for r in b_rows],
            "households_source": "planner",
        },
        geometry=b_geoms,
        crs=crs,
    )
    addresses = gpd.GeoDataFrame(
        {
            "address_id": [f"A-{r[0]}" for r in b_rows],
            "address": [f"{r[0]} door" for r in b_rows],
            "road": None,
            "number": None,
            "compound": None,
            "building": [r[0] for r in b_rows],
            "kind": "door",
            "block_id": [r[1] for r in b_rows],
        },
        geometry=a_geoms,
        crs=crs,
    )
    pois = gpd.GeoDataFrame(
        {
            "poi_id": [f"P-{b}" for b in blocks["block_id"]],
            "name": [f"shop {b}" for b in blocks["block_id"]],
            "category": "shop",
            "is_shop": True,
            "block_id": blocks["block_id"].to_numpy(),
        },
        geometry=p_geoms,
        crs=crs,
    )
    width = n_communities * nx * size_m
    s_rows, s_geoms = [], []
    for j in range(ny + 1):
        y = y0 + j * size_m
        s_rows.append((f"H{j}", f"East-West Road {j}"))
        s_geoms.append(shapely.LineString([(x0, y), (x0 + width, y)]))
    for i in range(n_communities * nx + 1):
        x = x0 + i * size_m
        s_rows.append((f"V{i}", f"North-South Road {i}"))
        s_geoms.append(shapely.LineString([(x, y0), (x, y0 + ny * size_m)]))
    streets = gpd.GeoDataFrame(
        {
            "street_id": [r[0] for r in s_rows],
            "name": [r[1] for r in s_rows],
            "highway": "secondary",
            "internal": False,
        },
        geometry=s_geoms,
        crs=crs,
    )
    return {
        "communities": comm,
        "blocks": blocks,
        "buildings": buildings,
        "addresses": addresses,
        "pois": pois,
        "streets": streets,
        "grids": grids,
    }


def synthetic_incidents(
    area: gpd.GeoDataFrame,
    n: int,
    *,
    seed: int = 0,
    start: str = "2026-10-01",
    days: int = 30,
    categories: Sequence[str] = ("SJ0101", "SJ0501", "BJ0101", "BJ0302"),
    cluster_share: float = 0.0,
    cluster_xy: tuple[float, float] | None = None,
    cluster_sd_m: float = 60.0,
) -> gpd.GeoDataFrame:
    """``n`` random incident points over ``area`` (projected CRS), optionally clustered.

    Points are uniform over the bounding box of ``area`` except a share
    ``cluster_share`` drawn from a normal around ``cluster_xy`` (default: 150 m
    inside the north-west corner). Columns: ``incident_id``, ``category_code``,
    ``reported_at`` (uniform over ``days`` from ``start``).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = area.total_bounds
    k = round(n * cluster_share)
    cx, cy = cluster_xy if cluster_xy is not None else (minx + 150.0, maxy - 150.0)
    x = np.r_[rng.uniform(minx, maxx, n - k), rng.normal(cx, cluster_sd_m, k)]
    y = np.r_[rng.uniform(miny, maxy, n - k), rng.normal(cy, cluster_sd_m, k)]
    seconds = rng.uniform(0, days * 86400, n)
    return gpd.GeoDataFrame(
        {
            "incident_id": [f"I{i:07d}" for i in range(n)],
            "category_code": rng.choice(np.asarray(categories), n),
            "reported_at": pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s"),
        },
        geometry=gpd.points_from_xy(x, y),
        crs=area.crs,
    )


from spatialgrid.city import City, empty_layer  # noqa: E402 - appended helper below


def lattice_city(
    plan: dict[str, gpd.GeoDataFrame] | None = None,
    *,
    name: str = "测试城",
    admin_code: str = "421002",
    **plan_options: object,
) -> tuple[City, gpd.GeoDataFrame]:
    """A storable :class:`~spatialgrid.city.City` and its grids from :func:`lattice_plan`.

    ``plan`` defaults to ``lattice_plan(**plan_options)``. Adds the one subdistrict
    (the union of the communities) and an empty compounds layer; door plates get
    ``road``/``number`` so a gazetteer can find them. Returns ``(city, grids)``.
    """
    if plan is None:
        plan = lattice_plan(**plan_options)  # type: ignore[arg-type]
    communities = plan["communities"]
    crs = communities.crs
    subdistricts = gpd.GeoDataFrame(
        {
            "subdistrict_code": [str(communities["subdistrict_code"].iloc[0])],
            "name": ["测试街道"],
        },
        geometry=[shapely.union_all(np.asarray(communities.geometry.values))],
        crs=crs,
    )
    addresses = plan["addresses"].copy()
    addresses["road"] = "中山路"
    addresses["number"] = [f"{i + 1}号" for i in range(len(addresses))]
    addresses["address"] = [f"中山路{i + 1}号" for i in range(len(addresses))]
    city = City(
        subdistricts=subdistricts,
        communities=communities,
        streets=plan["streets"],
        blocks=plan["blocks"],
        buildings=plan["buildings"],
        compounds=empty_layer("compounds", crs),
        addresses=addresses,
        pois=plan["pois"],
        name=name,
        admin_code=admin_code,
    )
    return city, plan["grids"]
