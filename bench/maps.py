"""Benchmark: command-centre map pages over 1 million stored incidents.

Run::

    .venv/bin/python bench/maps.py [--incidents 1000000] [--communities 25]
                                   [--month 2026-06] [--repeat 3] [--seed 0]

One run:

1. generates a lattice city of ``--communities`` communities × 24 grids (600 grids,
   1,200 blocks of 100 m) and stores it with a plan in force and a worker per grid
   (database: ``SPATIALGRID_BENCH_DB_URL``, else a throw-away embedded PostGIS);
2. generates ``--incidents`` incidents over one year — more where more households
   live, two hot spots, daytime peaks, weighted categories — places them on the
   plan with :class:`spatialgrid.locate.GridIndex` and stores them with ``COPY``
   (:func:`spatialgrid.db.incidents.bulk_insert_incidents`, in chunks);
3. starts the real API (uvicorn on 127.0.0.1) and times ``GET /maps/heatmap`` for
   one month and ``GET /maps/hotspots`` for that month and for the whole year:
   wall time of the HTTP request (median of ``--repeat``) and HTML size. The
   heatmap is counted per 100 m cell in PostGIS and the hot spots per grid in
   PostGIS, so the incidents never travel to Python;
4. for comparison, in the same run: folium's stock ``HeatMap`` of the raw points
   of the same month (query the points, build the map, render the HTML; assets
   rewritten to local ones so it is the same page shape), time and size.

Budget from the issue: each page ≤ 2 s and ≤ 5 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialgrid import testing

BUDGET_S = 2.0
BUDGET_BYTES = 5_000_000
CATEGORIES = {
    "SJ0101": 12,
    "SJ0103": 6,
    "SJ0201": 8,
    "SJ0501": 9,
    "SJ0502": 7,
    "SJ0504": 8,
    "SJ0302": 3,
    "SJ0601": 4,
    "BJ0101": 3,
    "BJ0105": 4,
    "BJ0302": 5,
}
HOURS = np.array(
    [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 12, 9, 10, 12, 13, 13, 12, 10, 9, 7, 5, 3, 2],
    dtype=float,
)


def _database(tmp: Path) -> tuple[str, object | None]:
    url = os.environ.get("SPATIALGRID_BENCH_DB_URL")
    if url:
        return url, None
    from spatialgrid.db.embedded import EmbeddedCluster

    home = tmp / "pg"
    home.mkdir()
    os.chmod(tmp, 0o755)
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home, durable=False)
    return cluster.ensure_running(), cluster


def _assignments(blocks: gpd.GeoDataFrame, grids: gpd.GeoDataFrame) -> pd.DataFrame:
    points = blocks[["block_id"]].set_geometry(blocks.representative_point())
    joined = gpd.sjoin(points, grids[["grid_code", "geometry"]], predicate="within")
    return joined[["block_id", "grid_code"]].reset_index(drop=True)


def _incidents(
    grids: gpd.GeoDataFrame, n: int, *, year: int, seed: int
) -> gpd.GeoDataFrame:
    """``n`` incidents over ``year`` (EPSG:4546 points), households-weighted + hot spots."""
    from spatialgrid.cli.incidents import _points_in_grids

    rng = np.random.default_rng(seed)
    k_hot = int(n * 0.25)
    base = _points_in_grids(grids, grids["households"].to_numpy(float), n - k_hot, rng)
    cells = shapely.centroid(np.asarray(grids.geometry.values))
    centres = cells[rng.choice(len(cells), 2, replace=False)]
    pick = rng.integers(0, 2, k_hot)
    hot = np.column_stack(
        [
            shapely.get_x(centres)[pick] + rng.normal(0, 250, k_hot),
            shapely.get_y(centres)[pick] + rng.normal(0, 250, k_hot),
        ]
    )
    xy = np.vstack([base, hot])
    codes = list(CATEGORIES)
    p = np.array([CATEGORIES[c] for c in codes], dtype=float)
    start = pd.Timestamp(f"{year}-01-01", tz="Asia/Shanghai")
    days = rng.integers(0, 365, n)
    hours = rng.choice(24, size=n, p=HOURS / HOURS.sum())
    when = (
        start
        + pd.to_timedelta(days, unit="D")
        + pd.to_timedelta(hours, unit="h")
        + pd.to_timedelta(rng.uniform(0, 3600, n), unit="s")
    )
    stage = rng.choice(
        ["closed", "evaluate", "handle", "dispatch", "no_action"],
        size=n,
        p=[0.86, 0.05, 0.04, 0.02, 0.03],
    )
    return gpd.GeoDataFrame(
        {
            "category_code": rng.choice(codes, size=n, p=p / p.sum()),
            "reported_at": when,
            "stage": stage,
            "stage_entered_at": when + pd.to_timedelta(rng.uniform(1, 48, n), unit="h"),
            "source": "import",
        },
        geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]),
        crs=grids.crs,
    )


def _place(frame: gpd.GeoDataFrame, plan: gpd.GeoDataFrame) -> None:
    """Grid, community, worker from the plan (in place), like intake does."""
    from spatialgrid.locate import GridIndex

    index = GridIndex(plan, attributes=["worker_id"])
    pts = np.asarray(frame.geometry.to_crs(plan.crs).values)
    found = index.locate(
        shapely.get_x(pts), shapely.get_y(pts), crs=plan.crs, distances=False
    )
    pos = found.grid.astype(np.int64)
    safe = np.maximum(pos, 0)
    frame["grid_code"] = np.where(pos >= 0, index.codes[safe], None)
    frame["community_code"] = np.where(pos >= 0, index.community_codes[safe], None)
    frame["subdistrict_code"] = np.where(pos >= 0, index.subdistrict_codes[safe], None)
    workers = plan["worker_id"].to_numpy(dtype=object)
    frame["worker_id"] = pd.array(
        [None if q < 0 else int(workers[q]) for q in pos], dtype="Int64"
    )
    frame["location_status"] = np.where(pos >= 0, "inside", "outside")
    frame["plan_id"] = int(plan["plan_id"].iloc[0])


def _get(url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = resp.read()
        status = resp.status
    return time.perf_counter() - t0, len(body), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--communities", type=int, default=25)
    parser.add_argument("--month", default="2026-06")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import uvicorn
    from sqlalchemy import text

    from api.config import Settings
    from api.main import create_app
    from spatialgrid.db import incidents as inc_repo
    from spatialgrid.db import repository as repo
    from spatialgrid.db.engine import make_engine, session_scope

    tmp = Path(tempfile.mkdtemp(prefix="sg-bench-maps-"))
    url, cluster = _database(tmp)
    try:
        engine = make_engine(url, upgrade=True)
        t0 = time.perf_counter()
        city, grids = testing.lattice_city(n_communities=args.communities, nx=8, ny=6)
        with session_scope(engine) as session:
            session.execute(text("TRUNCATE incidents CASCADE"))
            repo.save_city(city, session=session, replace=True)
            plan_id = repo.create_plan(
                grids.drop(columns=["worker"]),
                _assignments(city.blocks, grids),
                session=session,
                name="bench maps",
                parameters={},
            )
            repo.activate_plan(
                plan_id,
                session=session,
                effective_from=datetime(2020, 1, 1, tzinfo=UTC),
            )
            for i, code in enumerate(grids["grid_code"]):
                wid = repo.create_worker(session=session, name=f"网格员{i}")
                repo.assign_worker(plan_id, code, wid, session=session)
            key = repo.create_api_key(session=session, role="operator", name="bench")
            plan = inc_repo.load_plan_grids_with_workers(plan_id, session=session)
        plan["plan_id"] = plan_id
        plan["worker_id"] = plan["worker_id"].astype(object)
        print(
            f"city: {len(city.blocks):,} blocks, {len(grids)} grids "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        year = int(args.month[:4])
        t0 = time.perf_counter()
        frame = _incidents(grids, args.incidents, year=year, seed=args.seed)
        _place(frame, plan)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        chunk = 200_000
        for a in range(0, len(frame), chunk):
            with session_scope(engine) as session:
                inc_repo.bulk_insert_incidents(
                    frame.iloc[a : a + chunk], session=session
                )
        with engine.connect() as conn:
            conn.execute(text("COMMIT"))
            conn.execute(text("VACUUM ANALYZE incidents"))
        t_copy = time.perf_counter() - t0
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
            size = conn.execute(
                text("SELECT pg_size_pretty(pg_total_relation_size('incidents'))")
            ).scalar_one()
        print(
            f"incidents: {stored:,} stored ({size}); generated+placed in {t_gen:.1f} s, "
            f"COPY in {t_copy:.1f} s ({stored / t_copy:,.0f} rows/s)"
        )

        app = create_app(Settings(database_url=url, basemap="none"))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        month = pd.Period(args.month, freq="M")
        start = month.start_time.tz_localize("Asia/Shanghai").isoformat()
        end = (month + 1).start_time.tz_localize("Asia/Shanghai").isoformat()
        window = urllib.parse.urlencode({"start": start, "end": end, "key": key})
        year_window = urllib.parse.urlencode(
            {
                "start": f"{year}-01-01T00:00:00+08:00",
                "end": f"{year + 1}-01-01T00:00:00+08:00",
                "key": key,
            }
        )
        pages = {
            f"heatmap {args.month}": f"{base}/maps/heatmap?{window}",
            f"hotspots {args.month}": f"{base}/maps/hotspots?{window}",
            f"hotspots {year}": f"{base}/maps/hotspots?{year_window}",
            "grids": f"{base}/maps/grids?key={key}",
        }
        rows = []
        for name, link in pages.items():
            _get(link)  # warm-up (imports, caches)
            runs = [_get(link) for _ in range(args.repeat)]
            assert all(r[2] == 200 for r in runs), name
            rows.append((name, statistics.median(r[0] for r in runs), runs[0][1]))
        server.should_exit = True
        thread.join(timeout=10)

        # folium's stock HeatMap of the raw points of the same month
        import folium
        from folium.plugins import HeatMap

        from spatialgrid.render import map_to_html

        stock_times, stock_size, n_points = [], 0, 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with engine.connect() as conn:
                pts = conn.execute(
                    text(
                        "SELECT ST_Y(geom), ST_X(geom) FROM incidents "
                        "WHERE reported_at >= :s AND reported_at < :e"
                    ),
                    {"s": start, "e": end},
                ).all()
            data = np.asarray(pts, dtype=float)
            m = folium.Map(tiles=None)
            HeatMap(data.tolist()).add_to(m)
            m.fit_bounds([data.min(axis=0).tolist(), data.max(axis=0).tolist()])
            page = map_to_html(m)
            stock_times.append(time.perf_counter() - t0)
            stock_size, n_points = len(page.encode("utf-8")), len(data)
        rows.append(
            (
                f"folium HeatMap raw {args.month} ({n_points:,} pts)",
                statistics.median(stock_times),
                stock_size,
            )
        )
        print()
        print(f"{'page':<44} {'time s':>8} {'HTML MB':>9}  budget (≤2 s, ≤5 MB)")
        for name, seconds, nbytes in rows:
            ok = seconds <= BUDGET_S and nbytes <= BUDGET_BYTES
            print(
                f"{name:<44} {seconds:>8.3f} {nbytes / 1e6:>9.2f}  "
                f"{'ok' if ok else 'OVER'}"
            )
        engine.dispose()
    finally:
        if cluster is not None:
            cluster.destroy()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
