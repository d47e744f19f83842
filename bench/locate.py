"""Benchmark: batch point location and geocoding throughput.

Run::

    .venv/bin/python bench/locate.py [--points 1000000] [--grids 600] [--seed 0]
                                     [--addresses 12000] [--skip-postgis]

One run measures, on the same ~600-grid plan and the same random points given in
GCJ-02 (as an Amap/Tencent app sends them):

1. spatialgrid ``GridIndex.locate`` (including GCJ-02 → CGCS2000 → working CRS),
   with boundary distances only where needed (``distances=False``, the default of
   the bench headline) and with exact distances for every point;
2. geopandas ``sjoin`` (points made with the same GCJ-02 conversion — PROJ has no
   GCJ-02 — then ``sjoin(predicate="intersects")``);
3. one PostGIS join (``LEFT JOIN ... ON ST_Intersects`` with a GiST index), from
   ``SPATIALGRID_BENCH_DB_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``
   when reachable with PostGIS available (in a temporary schema, dropped after);
4. geocoding throughput on generated addresses in several written variants.

Each measurement runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its
own; the RSS of the setup alone is printed too. Points/s use wall time; CPU time is
printed as well because the machine may be shared. The plan is a deterministic
Voronoi tessellation clipped to a city square in EPSG:4546 (until the partition
engine's plans are used here); codes follow CJ/T 213.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialgrid.coords import from_storage, to_projected, to_storage

CRS = "EPSG:4546"
X0, Y0 = 500_000.0, 3_357_000.0
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"


def voronoi_plan(n_grids: int, *, seed: int) -> gpd.GeoDataFrame:
    """~n_grids Voronoi grids (~0.15 km² each) clipped to a square, CJ/T 213 codes."""
    rng = np.random.default_rng(seed)
    side = float(np.sqrt(n_grids * 150_000.0))
    seeds = rng.uniform(0, side, size=(n_grids, 2)) + np.array([X0, Y0])
    square = shapely.box(X0, Y0, X0 + side, Y0 + side)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=square)
    )
    cells = shapely.intersection(cells, square)
    c = shapely.get_coordinates(shapely.centroid(cells))
    order = np.lexsort((c[:, 0], -np.floor(c[:, 1] / 500.0)))
    cells = cells[order]
    community = [
        f"421002{1 + i // 60:03d}{1 + (i // 6) % 10:03d}" for i in range(len(cells))
    ]
    codes = [f"{community[i]}{i % 6 + 1:02d}" for i in range(len(cells))]
    return gpd.GeoDataFrame(
        {
            "grid_code": codes,
            "community_code": community,
            "worker_name": [f"网格员{i:04d}" for i in range(len(cells))],
        },
        geometry=cells,
        crs=CRS,
    )


def random_points_gcj(plan: gpd.GeoDataFrame, n: int, *, seed: int) -> tuple:
    """n uniform points over the plan's bounds (+2 % margin), as GCJ-02 lon/lat."""
    rng = np.random.default_rng(seed + 1)
    x0, y0, x1, y1 = plan.total_bounds
    pad = 0.02 * (x1 - x0)
    x = rng.uniform(x0 - pad, x1 + pad, n)
    y = rng.uniform(y0 - pad, y1 + pad, n)
    lon, lat = to_storage(x, y, CRS)
    return from_storage(lon, lat, "gcj02")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


# --------------------------------------------------------------------- parts
def part_spatialgrid(args: argparse.Namespace) -> dict:
    from spatialgrid.locate import GridIndex

    plan = voronoi_plan(args.grids, seed=args.seed)
    lon, lat = random_points_gcj(plan, args.points, seed=args.seed)
    setup_rss = _rss_mb()
    index, build_s, _ = _timed(lambda: GridIndex(plan, max_tolerance_m=50.0))
    out: dict = {
        "grids": len(plan),
        "cells": int(index._nx * index._ny),
        "cell_size_m": round(index.cell_size_m, 2),
        "build_s": round(build_s, 3),
        "setup_rss_mb": round(setup_rss, 1),
    }
    index.locate(lon[:1000], lat[:1000], crs="gcj02")  # warm caches
    for label, dist in (("near_only", False), ("all_distances", True)):
        best = None
        for _ in range(args.repeat):
            res, wall, cpu = _timed(
                lambda d=dist: index.locate(
                    lon, lat, crs="gcj02", tolerance_m=20.0, distances=d
                )
            )
            if best is None or wall < best[0]:
                best = (wall, cpu)
        counts = np.bincount(res.status_code, minlength=4).tolist()
        out[label] = {
            "wall_s": round(best[0], 3),
            "cpu_s": round(best[1], 3),
            "points_per_s": round(args.points / best[0]),
            "points_per_cpu_s": round(args.points / best[1]),
            "status_counts": dict(
                zip(
                    ["inside", "near_boundary", "outside", "invalid"],
                    counts,
                    strict=True,
                )
            ),
        }
    out["peak_rss_mb"] = round(_rss_mb(), 1)
    # the answer to compare with the baselines
    np.save(args.tmp / "sg_grid.npy", res.grid)
    return out


def part_sjoin(args: argparse.Namespace) -> dict:
    plan = voronoi_plan(args.grids, seed=args.seed)
    lon, lat = random_points_gcj(plan, args.points, seed=args.seed)
    setup_rss = _rss_mb()

    def run():
        x, y = to_projected(lon, lat, src="gcj02", dst=CRS)
        pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=CRS)
        return gpd.sjoin(
            pts, plan[["grid_code", "geometry"]], predicate="intersects", how="left"
        )

    joined, wall, cpu = _timed(run)
    first = joined[~joined.index.duplicated()]
    codes = first["grid_code"].to_numpy(dtype=object)
    pos = {c: i for i, c in enumerate(plan["grid_code"])}
    grid = np.array([pos.get(c, -1) if isinstance(c, str) else -1 for c in codes])
    agree = None
    sg = args.tmp / "sg_grid.npy"
    if sg.exists():
        agree = float((np.load(sg) == grid).mean())
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "points_per_s": round(args.points / wall),
        "setup_rss_mb": round(setup_rss, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "agreement_with_spatialgrid": agree,
    }


def part_postgis(args: argparse.Namespace) -> dict:
    import psycopg2

    url = os.environ.get("SPATIALGRID_BENCH_DB_URL", DEFAULT_DB)
    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except Exception as err:
        return {"skipped": f"no PostGIS server at {url}: {err}".strip()}
    plan = voronoi_plan(args.grids, seed=args.seed)
    lon, lat = random_points_gcj(plan, args.points, seed=args.seed)
    schema = f"bench_locate_{os.getpid()}"
    cur = conn.cursor()
    try:
        try:
            cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            conn.commit()
        except Exception as err:
            conn.rollback()
            return {"skipped": f"PostGIS not available at {url}: {err}".strip()}
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(
            f"CREATE TABLE {schema}.grids (id int, grid_code text, geom geometry(Polygon, 4546))"
        )
        buf = io.StringIO()
        for i, (code, g) in enumerate(zip(plan.grid_code, plan.geometry, strict=True)):
            buf.write(f"{i}\t{code}\tSRID=4546;{g.wkt}\n")
        buf.seek(0)
        cur.copy_expert(f"COPY {schema}.grids (id, grid_code, geom) FROM STDIN", buf)
        cur.execute(f"CREATE INDEX ON {schema}.grids USING gist (geom)")
        # Points arrive as GCJ-02: PostGIS cannot convert them, so they are loaded
        # already converted (spatialgrid.coords) to the plan's CRS.
        x, y = to_projected(lon, lat, src="gcj02", dst=CRS)
        cur.execute(f"CREATE TABLE {schema}.pts (id int, x float8, y float8)")
        buf = io.StringIO()
        pd.DataFrame({"id": np.arange(len(x)), "x": x, "y": y}).to_csv(
            buf, sep="\t", header=False, index=False
        )
        buf.seek(0)
        t = time.perf_counter()
        cur.copy_expert(f"COPY {schema}.pts (id, x, y) FROM STDIN", buf)
        cur.execute(
            f"ALTER TABLE {schema}.pts ADD COLUMN geom geometry(Point, 4546);"
            f"UPDATE {schema}.pts SET geom = ST_SetSRID(ST_MakePoint(x, y), 4546)"
        )
        load_s = time.perf_counter() - t
        conn.commit()
        cur.execute(f"ANALYZE {schema}.grids; ANALYZE {schema}.pts")
        t = time.perf_counter()
        cur.execute(
            f"SELECT p.id, g.id FROM {schema}.pts p LEFT JOIN {schema}.grids g "
            "ON ST_Intersects(g.geom, p.geom)"
        )
        rows = cur.fetchall()
        join_s = time.perf_counter() - t
        res = np.array([r[1] if r[1] is not None else -1 for r in rows])
        ids = np.array([r[0] for r in rows])
        grid = np.full(len(x), -1)
        order = np.argsort(ids, kind="stable")
        first = np.unique(ids[order], return_index=True)[1]
        grid[ids[order][first]] = res[order][first]
        agree = None
        sg = args.tmp / "sg_grid.npy"
        if sg.exists():
            agree = float((np.load(sg) == grid).mean())
        cur.execute("SELECT postgis_lib_version()")
        version = cur.fetchone()[0]
        return {
            "postgis": version,
            "load_s": round(load_s, 3),
            "join_s": round(join_s, 3),
            "points_per_s": round(args.points / join_s),
            "agreement_with_spatialgrid": agree,
        }
    finally:
        conn.rollback()
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.commit()
        conn.close()


_ROADS = [
    "中山",
    "人民",
    "解放",
    "建设",
    "胜利",
    "和平",
    "友谊",
    "团结",
    "光明",
    "幸福",
    "新华",
    "文化",
    "长江",
    "黄河",
    "江汉",
    "荆州",
    "沙市",
    "太岳",
    "北京",
    "南京",
]
_ROAD_SUFFIX = ("路", "街", "大道")
_COMP_WORDS = [
    "翠柏",
    "金桥",
    "凤凰",
    "银河",
    "兰亭",
    "松林",
    "鸿雁",
    "宝塔",
    "繁荣",
    "江滨",
    "白鹭",
    "启明",
    "北湖",
    "青松",
    "杏花",
    "崇文",
    "梨园",
    "翡翠",
    "乐居",
    "临江",
    "望江",
    "锦绣",
    "丽景",
    "书香",
    "紫荆",
]
_COMP_SUFFIX = ("小区", "花园", "家园", "嘉园", "名苑", "华庭", "公寓", "新村")


def _gazetteer_frame(seed: int) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    roads = [w + s for w in _ROADS for s in _ROAD_SUFFIX][:50]
    for r, road in enumerate(roads):
        for n in range(1, 161):
            rows.append(
                (
                    f"{road}{n}号",
                    road,
                    n,
                    None,
                    None,
                    None,
                    "door",
                    r * 400.0 + n % 2 * 30,
                    n * 25.0,
                )
            )
    comps = [w + s for w in _COMP_WORDS for s in _COMP_SUFFIX][:150]
    for c, comp in enumerate(comps):
        road = roads[c % len(roads)]
        gate = 2 * (c % 80) + 2
        for b in range(1, int(rng.integers(4, 13))):
            for u in range(1, int(rng.integers(2, 5))):
                rows.append(
                    (
                        f"{comp}{b}栋{u}单元",
                        road,
                        gate,
                        comp,
                        str(b),
                        u,
                        "building",
                        c * 60.0 + b * 5,
                        5000.0 + u * 3,
                    )
                )
    frame = pd.DataFrame(
        rows,
        columns=[
            "address",
            "road",
            "number",
            "compound",
            "building",
            "unit",
            "kind",
            "x",
            "y",
        ],
    )
    frame["unit"] = frame["unit"].astype("Int64")
    frame.insert(0, "address_id", [f"A{i:06d}" for i in range(len(frame))])
    frame["block_id"] = "B1"
    return gpd.GeoDataFrame(
        frame.drop(columns=["x", "y"]),
        geometry=gpd.points_from_xy(frame.x + X0, frame.y + Y0),
        crs=CRS,
    )


def _variants(row: pd.Series, rng: np.random.Generator) -> str:
    full = str.maketrans("0123456789", "０１２３４５６７８９")
    if row.kind == "door":
        forms = [
            f"{row.road}{row.number}号",
            f"{row.road}{str(row.number).translate(full)}號",
            f"荆州区{row.road} {row.number} 号",
            f"湖北省荆州市{row.road}{row.number}号",
        ]
    else:
        forms = [
            f"{row.compound}{row.building}栋{row.unit}单元",
            f"{row.compound}{row.building}幢{row.unit}单元501室",
            f"{row.compound}{row.building}号楼{row.unit}单元",
            f"{row.compound} {row.building}-{row.unit}-302",
            f"{row.road}{row.number}号{row.compound}{row.building}栋{row.unit}单元",
        ]
    return forms[int(rng.integers(len(forms)))]


def part_geocode(args: argparse.Namespace) -> dict:
    from spatialgrid.geocode import Gazetteer, geocode_addresses

    plates = _gazetteer_frame(args.seed)
    gaz, build_s, _ = _timed(lambda: Gazetteer(plates))
    rng = np.random.default_rng(args.seed + 2)
    pick = plates.iloc[rng.integers(0, len(plates), args.addresses)]
    queries = [_variants(r, rng) for r in pick.itertuples()]
    # a few misspelt compounds (one character replaced) to exercise fuzzy matching
    for k in range(0, len(queries), 50):
        q = queries[k]
        queries[k] = q[:1] + "X" + q[2:] if len(q) > 4 else q
    from spatialgrid.address import normalize_address, parse_address

    normalize_address.cache_clear()
    parse_address.cache_clear()
    out, wall, cpu = _timed(lambda: geocode_addresses(queries, gaz))
    right = out["address_id"].to_numpy(dtype=object) == pick["address_id"].to_numpy(
        dtype=object
    )
    return {
        "plates": len(plates),
        "queries": len(queries),
        "gazetteer_build_s": round(build_s, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "addresses_per_s": round(len(queries) / wall),
        "exact_plate_rate": round(float(right.mean()), 4),
        "status_counts": {
            str(k): int(v) for k, v in out["status"].value_counts().items()
        },
        "peak_rss_mb": round(_rss_mb(), 1),
    }


PARTS = {
    "spatialgrid": part_spatialgrid,
    "sjoin": part_sjoin,
    "postgis": part_postgis,
    "geocode": part_geocode,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--grids", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--addresses", type=int, default=12_000)
    parser.add_argument("--skip-postgis", action="store_true")
    parser.add_argument("--skip-sjoin", action="store_true")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(PARTS[args.part](args), ensure_ascii=False))
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        parts = ["spatialgrid", "geocode"]
        if not args.skip_sjoin:
            parts.insert(1, "sjoin")
        if not args.skip_postgis:
            parts.insert(2 if not args.skip_sjoin else 1, "postgis")
        print(
            f"locate bench: {args.points:,} random points (GCJ-02) vs a "
            f"~{args.grids}-grid Voronoi plan in {CRS}; load average "
            f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
        results = {}
        for part in parts:
            cmd = [sys.executable, __file__, "--part", part, "--tmp", tmp]
            for key in ("points", "grids", "seed", "repeat", "addresses"):
                cmd += [f"--{key}", str(getattr(args, key))]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                results[part] = {"error": proc.stderr.strip().splitlines()[-1:]}
            else:
                results[part] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"\n[{part}]")
            print(json.dumps(results[part], indent=2, ensure_ascii=False))
        sg = results.get("spatialgrid", {})
        if "near_only" in sg:
            print(
                f"\nsummary: spatialgrid {sg['near_only']['points_per_s']:,} points/s "
                f"(CPU {sg['near_only']['points_per_cpu_s']:,}/s; all distances "
                f"{sg['all_distances']['points_per_s']:,}/s), peak RSS "
                f"{sg['peak_rss_mb']} MB"
            )
        if "points_per_s" in results.get("sjoin", {}):
            print(
                f"         geopandas sjoin {results['sjoin']['points_per_s']:,} points/s"
            )
        pg = results.get("postgis", {})
        if "points_per_s" in pg:
            print(f"         PostGIS join {pg['points_per_s']:,} points/s")
        elif "skipped" in pg:
            print(f"         PostGIS: skipped ({pg['skipped']})")
        geo = results.get("geocode", {})
        if "addresses_per_s" in geo:
            print(
                f"         geocoding {geo['addresses_per_s']:,} addresses/s "
                f"({geo['exact_plate_rate']:.1%} to the exact plate)"
            )


if __name__ == "__main__":
    main()
