"""Locate, geocode, reverse and MapIt-style point lookups over HTTP (real PostGIS).

One database per module holds the sample city (``generate_city(n_communities=2)``),
an older plan (one grid per community, in force 2020–2024) and the plan in force
since 2024 (``partition_blocks``), each of whose grids has a worker.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid.coords import from_storage, to_storage

pytestmark = pytest.mark.db

OLD_FROM = datetime(2020, 1, 1, tzinfo=UTC)
NEW_FROM = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Env:
    client: object
    app: object
    keys: dict[str, str]
    city: object
    grids: gpd.GeoDataFrame  # the active plan, projected (city CRS)
    old_plan: int
    new_plan: int
    workers: dict[str, tuple[str, str]]  # grid code -> (name, employee_no)
    engine: object

    def headers(self, role: str = "consumer") -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}

    def get(self, path: str, role: str = "consumer", **params):
        return self.client.get(path, params=params, headers=self.headers(role))


@pytest.fixture(scope="module")
def env(module_db_url):
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app
    from spatialgrid.db import repository as repo
    from spatialgrid.db.engine import make_engine, session_scope
    from spatialgrid.partition import partition_blocks
    from spatialgrid.roles import ROLES
    from spatialgrid.sample import generate_city

    city = generate_city(seed=0, n_communities=2)
    internal = city.streets[city.streets["internal"].astype(bool)]
    result = partition_blocks(
        city.blocks, buildings=city.buildings, internal_roads=internal
    )
    grids = result.grids.copy()
    grids["flags"] = [[] for _ in range(len(grids))]
    old = city.communities[["community_code", "geometry"]].copy()
    old["grid_code"] = old["community_code"] + "01"
    workers: dict[str, tuple[str, str]] = {}
    engine = make_engine(module_db_url)
    with session_scope(engine) as s:
        repo.save_city(city, session=s)
        old_id = repo.create_plan(
            old,
            pd.DataFrame({"block_id": [], "grid_code": []}),
            session=s,
            name="old: one grid per community",
            parameters={},
        )
        repo.activate_plan(old_id, session=s, effective_from=OLD_FROM)
        new_id = repo.create_plan(
            grids,
            result.assignments.reset_index(drop=True),
            session=s,
            name="partition",
            parameters=result.parameters,
        )
        repo.activate_plan(new_id, session=s, effective_from=NEW_FROM)
        for i, code in enumerate(sorted(grids["grid_code"])):
            name, emp = f"网格员{i:02d}", f"W{i:05d}"
            wid = repo.create_worker(
                session=s, name=name, phone="13800000000", employee_no=emp
            )
            repo.assign_worker(new_id, code, wid, session=s)
            workers[code] = (name, emp)
        keys = {r: repo.create_api_key(session=s, role=r, name=r) for r in ROLES}
    app = create_app(Settings(database_url=module_db_url, cors_origins=[]))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Env(
                client=client,
                app=app,
                keys=keys,
                city=city,
                grids=grids.reset_index(drop=True),
                old_plan=old_id,
                new_plan=new_id,
                workers=workers,
                engine=engine,
            )
    finally:
        engine.dispose()


def _lonlat(env: Env, x: float, y: float) -> tuple[float, float]:
    lon, lat = to_storage([x], [y], env.grids.crs.to_epsg())
    return float(lon[0]), float(lat[0])


def _deep_point(env: Env, i: int) -> tuple[float, float]:
    """The centre of grid i's largest inscribed circle (projected)."""
    geom = env.grids.geometry.iat[i]
    centre = shapely.get_point(shapely.maximum_inscribed_circle(geom), 0)
    return centre.x, centre.y


def _shared_edge(env: Env) -> tuple[int, int, shapely.LineString]:
    geoms = env.grids.geometry.values
    for i in range(len(geoms)):
        for j in range(i + 1, len(geoms)):
            shared = shapely.intersection(geoms[i].boundary, geoms[j].boundary)
            lines = [
                g
                for g in shapely.get_parts(shared)
                if g.geom_type == "LineString" and g.length > 40
            ]
            if lines:
                return i, j, max(lines, key=lambda g: g.length)
    msg = "no two grids share an edge"
    raise AssertionError(msg)


# ----------------------------------------------------------------------- single


def test_inside_point_gives_grid_worker_community(env):
    i = 0
    x, y = _deep_point(env, i)
    lon, lat = _lonlat(env, x, y)
    resp = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    code = env.grids["grid_code"].iat[i]
    assert body["plan_id"] == env.new_plan
    assert body["status"] == "inside"
    assert body["inside"] is True
    assert body["outside_all_grids"] is False
    assert body["grid"]["code"] == code
    name, emp = env.workers[code]
    assert body["grid"]["worker"] == {
        "id": body["grid"]["worker"]["id"],
        "name": name,
        "employee_no": emp,
    }
    assert "13800000000" not in resp.text  # no phone numbers
    community = env.grids["community_code"].iat[i]
    names = dict(
        zip(
            env.city.communities["community_code"],
            env.city.communities["name"],
            strict=True,
        )
    )
    assert body["community"] == {"code": community, "name": names[community]}
    assert body["subdistrict"]["code"] == community[:9]
    assert body["subdistrict"]["name"] == "和平街道"
    expected = env.grids.geometry.iat[i].boundary.distance(shapely.Point(x, y))
    assert body["boundary_distance_m"] == pytest.approx(expected, abs=0.05)
    assert body["candidates"] == []
    assert body["nearest"] is None
    assert body["lon"] == pytest.approx(lon, abs=1e-7)


def test_near_boundary_lists_the_other_grid(env):
    i, j, edge = _shared_edge(env)
    mid = edge.interpolate(0.5, normalized=True)
    # 5 m off the shared edge, on grid i's side
    a, b = shapely.get_coordinates(edge)[[0, -1]]
    nx_, ny_ = -(b[1] - a[1]), b[0] - a[0]
    norm = float(np.hypot(nx_, ny_))
    for sign in (1, -1):
        p = shapely.Point(mid.x + sign * 5 * nx_ / norm, mid.y + sign * 5 * ny_ / norm)
        if env.grids.geometry.iat[i].contains(p):
            break
    else:
        pytest.fail("could not place a point 5 m inside grid i")
    lon, lat = _lonlat(env, p.x, p.y)
    body = env.get("/v1/locate", lon=lon, lat=lat, crs="cgcs2000").json()
    assert body["status"] == "near_boundary"
    assert body["grid"]["code"] == env.grids["grid_code"].iat[i]
    other = env.grids["grid_code"].iat[j]
    cand = {c["grid_code"]: c["distance_m"] for c in body["candidates"]}
    assert other in cand
    assert cand[other] == pytest.approx(env.grids.geometry.iat[j].distance(p), abs=0.05)
    assert body["boundary_distance_m"] <= 5.05
    # a tolerance below the distance drops the candidate
    body = env.get("/v1/locate", lon=lon, lat=lat, crs="cgcs2000", tolerance_m=2).json()
    assert body["status"] == "inside"
    assert body["candidates"] == []


def test_outside_every_grid_gives_nearest_flagged(env):
    _, y0, x1, y1 = env.grids.total_bounds
    p = shapely.Point(x1 + 400, (y0 + y1) / 2)
    lon, lat = _lonlat(env, p.x, p.y)
    body = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84").json()
    assert body["status"] == "outside"
    assert body["outside_all_grids"] is True
    assert body["grid"] is None
    assert body["boundary_distance_m"] is None
    dists = env.grids.geometry.distance(p)
    k = int(np.argmin(dists.to_numpy()))
    nearest = body["nearest"]
    assert nearest["grid_code"] == env.grids["grid_code"].iat[k]
    assert nearest["distance_m"] == pytest.approx(float(dists.iat[k]), abs=0.05)
    assert nearest["worker"]["name"] == env.workers[nearest["grid_code"]][0]


def test_at_date_uses_the_plan_then_in_force(env):
    x, y = _deep_point(env, 0)
    lon, lat = _lonlat(env, x, y)
    old = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84", at="2022-06-01")
    assert old.status_code == 200, old.text
    body = old.json()
    assert body["plan_id"] == env.old_plan
    community = env.grids["community_code"].iat[0]
    assert body["grid"]["code"] == community + "01"
    assert body["grid"]["worker"] is None
    now = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84", at="2025-01-01T08:00")
    assert now.json()["plan_id"] == env.new_plan
    before = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84", at="2019-01-01")
    assert before.status_code == 404
    assert "no grid plan was in force" in before.json()["detail"]


@pytest.mark.parametrize("crs", ["gcj02", "bd09", "EPSG:4546"])
def test_other_systems_land_in_the_same_grid(env, crs):
    for i in range(0, len(env.grids), 3):
        x, y = _deep_point(env, i)
        lon, lat = _lonlat(env, x, y)
        base = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84").json()
        cx, cy = from_storage([lon], [lat], crs)
        if crs == "gcj02":  # the offset is larger than a grid: it matters
            shift = np.hypot(*(np.subtract(_proj(env, cx, cy), (x, y))))
            assert shift > 100
        body = env.get("/v1/locate", lon=float(cx[0]), lat=float(cy[0]), crs=crs)
        assert body.status_code == 200, body.text
        body = body.json()
        assert (
            body["grid"]["code"]
            == base["grid"]["code"]
            == env.grids["grid_code"].iat[i]
        )
        assert body["lon"] == pytest.approx(lon, abs=1e-7)
        assert body["boundary_distance_m"] == pytest.approx(
            base["boundary_distance_m"], abs=0.01
        )


def _proj(env: Env, lon, lat) -> tuple[float, float]:
    x, y = from_storage(lon, lat, env.grids.crs.to_epsg())
    return float(x[0]), float(y[0])


# ------------------------------------------------------------------------ batch


def _random_points(env: Env, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = env.grids.total_bounds
    x = rng.uniform(x0 - 150, x1 + 150, n)
    y = rng.uniform(y0 - 150, y1 + 150, n)
    return from_storage(*to_storage(x, y, env.grids.crs.to_epsg()), "wgs84")


def test_batch_geojson_equals_single_lookups(env):
    lon, lat = _random_points(env, 1000)
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": f"p{k}",
                "geometry": {"type": "Point", "coordinates": [a, b]},
                "properties": {},
            }
            for k, (a, b) in enumerate(zip(lon.tolist(), lat.tolist(), strict=True))
        ],
    }
    resp = env.client.post(
        "/v1/locate",
        params={"crs": "wgs84"},
        json=fc,
        headers={**env.headers(), "Content-Type": "application/geo+json"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    rows = body["rows"]
    assert body["count"] == len(rows) == 1000
    assert body["plan_id"] == env.new_plan
    assert sum(body["status_counts"].values()) == 1000
    assert body["status_counts"]["outside"] > 0
    assert body["status_counts"]["near_boundary"] > 0
    for k, row in enumerate(rows):
        assert row["id"] == f"p{k}"
        one = env.get("/v1/locate", lon=lon[k], lat=lat[k], crs="wgs84").json()
        assert row["status"] == one["status"], k
        assert row["grid_code"] == (one["grid"] or {}).get("code"), k
        assert row["community_code"] == (one["community"] or {}).get("code") or (
            one["grid"] is None and row["community_code"] is None
        )
        assert row["candidate_codes"] == [c["grid_code"] for c in one["candidates"]]
        assert row["candidate_distances_m"] == pytest.approx(
            [c["distance_m"] for c in one["candidates"]], abs=1e-3
        )
        if one["grid"] is None:
            assert row["nearest_grid_code"] == one["nearest"]["grid_code"]
            assert row["nearest_distance_m"] == pytest.approx(
                one["nearest"]["distance_m"], abs=1e-3
            )
            assert row["worker_name"] == one["nearest"]["worker"]["name"]
        else:
            assert row["boundary_distance_m"] == pytest.approx(
                one["boundary_distance_m"], abs=1e-3
            )
            assert row["worker_name"] == one["grid"]["worker"]["name"]
            assert row["worker_employee_no"] == one["grid"]["worker"]["employee_no"]


def test_batch_csv_keeps_columns_and_answers_csv(env):
    lon, lat = _random_points(env, 50, seed=2)
    lines = ["case_id,lon,lat,note"]
    lines += [
        f"c{k},{a!r},{b!r},备注{k}"
        for k, (a, b) in enumerate(zip(lon.tolist(), lat.tolist(), strict=True))
    ]
    lines.append("c_missing,,,空")
    text = "\n".join(lines) + "\n"
    resp = env.client.post(
        "/v1/locate",
        params={"crs": "wgs84"},
        content=text.encode(),
        headers={**env.headers(), "Content-Type": "text/csv", "Accept": "text/csv"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == 51
    assert [r["case_id"] for r in rows] == [f"c{k}" for k in range(50)] + ["c_missing"]
    assert rows[3]["note"] == "备注3"
    assert {"grid_code", "status", "worker_name", "candidate_codes"} <= set(rows[0])
    assert rows[-1]["status"] == "invalid"
    single = env.get("/v1/locate", lon=lon[7], lat=lat[7], crs="wgs84").json()
    assert rows[7]["status"] == single["status"]
    assert rows[7]["grid_code"] == ((single["grid"] or {}).get("code") or "")
    # JSON out of CSV in (format param wins over Accept)
    resp = env.client.post(
        "/v1/locate",
        params={"crs": "wgs84", "format": "json"},
        content=text.encode(),
        headers={**env.headers(), "Content-Type": "text/csv", "Accept": "text/csv"},
    )
    assert resp.json()["rows"][3]["note"] == "备注3"


def test_batch_over_limit_is_413(env):
    from api.routes.locate import MAX_BATCH_POINTS

    n = MAX_BATCH_POINTS + 1
    text = "lon,lat\n" + "112.2,30.3\n" * n
    resp = env.client.post(
        "/v1/locate",
        params={"crs": "wgs84"},
        content=text.encode(),
        headers={**env.headers(), "Content-Type": "text/csv"},
    )
    assert resp.status_code == 413
    assert f"{n:,} points" in resp.json()["detail"]
    assert "Split it" in resp.json()["detail"]


# ---------------------------------------------------------------------- geocode


DOOR_VARIANTS = [
    "西环路10号",
    "和平街道建设社区西环路10号",
    "西环路１０號",
    "西环路 10 号",
    "湖北省荆州市荆州区西环路10号",
    "西环路10",
]
BUILDING_VARIANTS = [
    "松林小区2栋1单元",
    "松林小区2号楼1单元",
    "松林小区２幢１单元",
    "西环路108号松林小区2栋1单元",
    "建设社区 松林小区 2栋 1单元",
]


@pytest.mark.parametrize(
    ("queries", "address_id"),
    [(DOOR_VARIANTS, "A000001"), (BUILDING_VARIANTS, "A000154")],
)
def test_geocode_written_variants_resolve_to_the_plate(env, queries, address_id):
    plates = env.city.addresses.set_index("address_id")
    plate = plates.loc[address_id]
    lon, lat = _lonlat(env, plate.geometry.x, plate.geometry.y)
    for q in queries:
        resp = env.get("/v1/geocode", q=q, crs="gcj02")
        assert resp.status_code == 200, (q, resp.text)
        body = resp.json()
        assert body["status"] == "matched", (q, body)
        assert body["address_id"] == address_id, q
        assert body["level"] in ("door", "building")
        assert body["confidence"] >= 0.9
        assert body["lon"] == pytest.approx(lon, abs=1e-6)
        assert body["lat"] == pytest.approx(lat, abs=1e-6)
        gx, _ = from_storage([lon], [lat], "gcj02")
        assert body["x"] == pytest.approx(float(gx[0]), abs=1e-6)
        assert body["grid"] is not None
        assert body["grid"]["code"] in env.workers


def test_geocode_ambiguous_returns_candidates_not_a_guess(env):
    # a unit of a building without the compound: every compound has building 1
    resp = env.get("/v1/geocode", q="1栋1单元")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ambiguous"
    assert body["lon"] is None
    assert body["address_id"] is None
    assert len(body["candidates"]) >= 2
    assert all(c["lon"] is not None for c in body["candidates"])


def test_reverse_gives_nearest_plate(env):
    plate = env.city.addresses.set_index("address_id").loc["A000001"]
    x, y = plate.geometry.x + 2.0, plate.geometry.y
    lon, lat = _lonlat(env, x, y)
    gx, gy = from_storage([lon], [lat], "gcj02")
    resp = env.get("/v1/reverse", lon=float(gx[0]), lat=float(gy[0]), crs="gcj02")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["address_id"] == "A000001"
    assert body["address"] == "西环路10号"
    assert body["distance_m"] == pytest.approx(2.0, abs=0.05)
    far = env.get("/v1/reverse", lon=lon + 0.2, lat=lat, crs="wgs84", max_distance_m=50)
    assert far.status_code == 404
    assert "max_distance_m" in far.json()["detail"]


# ------------------------------------------------------------------------ point


@pytest.mark.parametrize("srid", ["4490", "4326", "4546", "gcj02", "bd09"])
def test_point_lists_grid_community_subdistrict(env, srid):
    x, y = _deep_point(env, 1)
    lon, lat = _lonlat(env, x, y)
    if srid == "4546":
        px, py = x, y
    else:
        cx, cy = from_storage([lon], [lat], f"EPSG:{srid}" if srid.isdigit() else srid)
        px, py = float(cx[0]), float(cy[0])
    resp = env.client.get(f"/v1/point/{srid}/{px!r},{py!r}", headers=env.headers())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    kinds = {a["type"]: a for a in body["areas"]}
    assert kinds["grid"]["code"] == env.grids["grid_code"].iat[1]
    assert kinds["grid"]["worker"]["name"] == env.workers[kinds["grid"]["code"]][0]
    assert kinds["community"]["code"] == env.grids["community_code"].iat[1]
    assert kinds["community"]["name"]
    assert kinds["subdistrict"] == {
        "type": "subdistrict",
        "code": "421002001",
        "name": "和平街道",
    }
    assert body["lon"] == pytest.approx(lon, abs=1e-7)


def test_point_outside_everything_has_no_areas(env):
    resp = env.client.get("/v1/point/4326/100.0,40.0", headers=env.headers())
    assert resp.status_code == 200
    assert resp.json()["areas"] == []


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "params", "status", "needle"),
    [
        ("/v1/locate", {"lon": 112.2, "lat": 30.3}, 422, "crs is required"),
        ("/v1/locate", {"lon": 112.2, "lat": 30.3, "crs": "mars2"}, 422, "crs="),
        ("/v1/locate", {"lon": 30.3, "lat": 112.2, "crs": "wgs84"}, 422, "swapped"),
        ("/v1/locate", {"lon": 30.3, "lat": 112.2, "crs": "gcj02"}, 422, "swapped"),
        ("/v1/locate", {"lon": 500, "lat": 30, "crs": "wgs84"}, 422, "out of range"),
        ("/v1/locate", {"lon": "abc", "lat": 30, "crs": "wgs84"}, 422, "lon"),
        ("/v1/locate", {"lon": "nan", "lat": 30, "crs": "wgs84"}, 422, "finite"),
        ("/v1/locate", {"lat": 30, "crs": "wgs84"}, 422, "lon"),
        (
            "/v1/locate",
            {"lon": 112.2, "lat": 30.3, "crs": "wgs84", "tolerance_m": 500},
            422,
            "tolerance_m",
        ),
        (
            "/v1/locate",
            {"lon": 112.2, "lat": 30.3, "crs": "wgs84", "at": "yesterday"},
            422,
            "at",
        ),
        ("/v1/geocode", {}, 422, "q is required"),
        ("/v1/geocode", {"q": "   "}, 422, "q is required"),
        ("/v1/geocode", {"q": "!!!???"}, 422, "not an address"),
        ("/v1/geocode", {"q": "x" * 500}, 422, "q"),
        ("/v1/geocode", {"q": "月亮路999号"}, 404, "road or compound"),
        ("/v1/geocode", {"q": "西环路10号", "crs": "nowhere"}, 422, "crs="),
        ("/v1/reverse", {"lon": 112.2, "lat": 30.3}, 422, "crs is required"),
        ("/v1/reverse", {"lon": 30.3, "lat": 112.2, "crs": "bd09"}, 422, "swapped"),
        ("/v1/point/4490/abc", {}, 422, "x,y"),
        ("/v1/point/4490/1,2,3", {}, 422, "x,y"),
        ("/v1/point/foo/112.2,30.3", {}, 422, "srid="),
        ("/v1/point/4326/30.3,112.2", {}, 422, "swapped"),
        ("/v1/point/4490/inf,30", {}, 422, "finite"),
    ],
)
def test_garbage_gets_4xx_with_message(env, path, params, status, needle):
    resp = env.get(path, **params)
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert needle in detail, detail


@pytest.mark.parametrize(
    ("content", "ctype", "status", "needle"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"type": "Feature"}', "application/geo+json", 422, "FeatureCollection"),
        (b"[1, 2]", "application/json", 422, "FeatureCollection"),
        (
            b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":'
            b'{"type":"Polygon","coordinates":[]}}]}',
            "application/geo+json",
            422,
            "features[0]",
        ),
        (
            b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":'
            b'{"type":"Point","coordinates":["a", 1]}}]}',
            "application/geo+json",
            422,
            "not numbers",
        ),
        (
            b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":'
            b'{"type":"Point","coordinates":[30.3, 112.2]}}]}',
            "application/geo+json",
            422,
            "swapped",
        ),
        (b"x,y\n1,2\n", "text/csv", 422, "no column"),
        (b"lon,lat\n112.2,abc\n", "text/csv", 422, "not numbers"),
        (b"", "text/csv", 422, "empty"),
        (b"\xff\xfe\x00", "text/csv", 400, "UTF-8"),
        (b"lon,lat\n1,2", "application/xml", 422, "Content-Type"),
    ],
)
def test_batch_garbage_gets_4xx_with_message(env, content, ctype, status, needle):
    resp = env.client.post(
        "/v1/locate",
        params={"crs": "wgs84"},
        content=content,
        headers={**env.headers(), "Content-Type": ctype},
    )
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["detail"]


def test_batch_without_crs_is_422(env):
    resp = env.client.post(
        "/v1/locate",
        content=b"lon,lat\n112.2,30.3\n",
        headers={**env.headers(), "Content-Type": "text/csv"},
    )
    assert resp.status_code == 422
    assert "crs is required" in resp.json()["detail"]


# ------------------------------------------------------------------------ auth


@pytest.mark.parametrize("role", ["consumer", "worker", "operator", "planner"])
def test_every_role_may_locate(env, role):
    resp = env.get("/v1/locate", role=role, lon=112.2, lat=30.3, crs="wgs84")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/locate?lon=112.2&lat=30.3&crs=wgs84",
        "/v1/geocode?q=西环路10号",
        "/v1/reverse?lon=112.2&lat=30.3&crs=wgs84",
        "/v1/point/4490/112.2,30.3",
    ],
)
def test_no_key_is_401(env, path):
    resp = env.client.get(path)
    assert resp.status_code == 401
    assert "API key" in resp.json()["detail"]
    resp = env.client.post("/v1/locate?crs=wgs84", content=b"lon,lat\n1,2\n")
    assert resp.status_code == 401


# ------------------------------------------------------------------------ cache


def test_cache_follows_plan_activation(env):
    """Runs last: it puts a new plan in force."""
    from spatialgrid.db import repository as repo
    from spatialgrid.db.engine import session_scope

    cache = env.app.state.locate_cache
    x, y = _deep_point(env, 0)
    lon, lat = _lonlat(env, x, y)
    first = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84").json()
    builds = cache.builds
    again = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84").json()
    assert again == first
    assert cache.builds == builds  # served from the cache
    shifted = env.grids.copy()
    shifted["grid_code"] = (
        shifted["grid_code"].str.slice(0, 12) + "9" + shifted["grid_code"].str.slice(13)
    )
    with session_scope(env.engine) as s:
        pid = repo.create_plan(
            shifted,
            pd.DataFrame({"block_id": [], "grid_code": []}),
            session=s,
            name="recoded",
            parameters={},
        )
        repo.activate_plan(pid, session=s)
    cache.plan_check_s = 0.0
    try:
        # the switch happens in a background refresh: requests never wait for it
        deadline = time.monotonic() + 60
        while True:
            body = env.get("/v1/locate", lon=lon, lat=lat, crs="wgs84").json()
            if body["plan_id"] == pid or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        cache.plan_check_s = 2.0
    assert body["plan_id"] == pid
    assert body["grid"]["code"][12] == "9"
    assert body["grid"]["worker"] is None  # no worker assigned in the new plan
    assert cache.builds == builds + 1
