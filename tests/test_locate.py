"""GridIndex: inside, boundary, candidates, outside-all, nearest, CRSs, batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid.coords import convert
from spatialgrid.errors import CoordinateRangeError, InputError, MissingColumnError
from spatialgrid.locate import GridIndex, containing_areas, locate_points
from spatialgrid.testing import ORIGIN, PROJECTED_CRS

X0, Y0 = ORIGIN


def _boxes(nx: int = 3, ny: int = 2, size: float = 100.0) -> gpd.GeoDataFrame:
    """nx x ny square grids; columns split into two communities."""
    rows = []
    for j in range(ny):
        for i in range(nx):
            community = "421002001001" if i < 2 else "421002001002"
            rows.append(
                {
                    "grid_code": f"{community}{j * nx + i + 1:02d}",
                    "community_code": community,
                    "worker_name": f"worker {j * nx + i}",
                    "geometry": shapely.box(
                        X0 + i * size,
                        Y0 + j * size,
                        X0 + (i + 1) * size,
                        Y0 + (j + 1) * size,
                    ),
                }
            )
    return gpd.GeoDataFrame(rows, crs=PROJECTED_CRS)


@pytest.fixture(scope="module")
def grids() -> gpd.GeoDataFrame:
    return _boxes()


@pytest.fixture(scope="module")
def index(grids) -> GridIndex:
    return GridIndex(grids, cell_size_m=7.0)


def _one(index, x, y, **kw):
    res = index.locate([x], [y], crs=PROJECTED_CRS, **kw)
    return res, res.to_frame().iloc[0]


def test_inside_centre(index, grids):
    _res, row = _one(index, X0 + 50, Y0 + 50)
    assert row["grid_code"] == grids.grid_code[0]
    assert row["community_code"] == "421002001001"
    assert row["subdistrict_code"] == "421002001"
    assert row["worker_name"] == "worker 0"
    assert row["status"] == "inside"
    assert row["boundary_distance_m"] == pytest.approx(50.0)
    assert row["candidate_codes"] == ""
    assert bool(row["inside"])


def test_near_boundary_lists_the_neighbour(index, grids):
    res, row = _one(index, X0 + 95, Y0 + 30, tolerance_m=20)
    assert row["grid_code"] == grids.grid_code[0]
    assert row["status"] == "near_boundary"
    assert row["boundary_distance_m"] == pytest.approx(5.0)
    assert res.candidates(0) == [(grids.grid_code[1], pytest.approx(5.0))]
    # corner: two other grids within tolerance, nearest first
    res, row = _one(index, X0 + 97, Y0 + 92, tolerance_m=20)
    codes = [c for c, _ in res.candidates(0)]
    assert codes[:2] == [grids.grid_code[1], grids.grid_code[3]]
    assert grids.grid_code[4] in codes
    # a smaller tolerance drops them
    res, row = _one(index, X0 + 95, Y0 + 30, tolerance_m=4)
    assert row["status"] == "inside"


def test_point_on_shared_edge(index, grids):
    res, row = _one(index, X0 + 100, Y0 + 50)
    assert row["grid_code"] == grids.grid_code[0]  # first grid wins
    assert row["boundary_distance_m"] == pytest.approx(0.0)
    assert res.candidates(0) == [(grids.grid_code[1], 0.0)]


def test_outside_every_grid_gives_nearest(index, grids):
    res, row = _one(index, X0 + 330, Y0 + 150)
    assert row["status"] == "outside"
    assert pd.isna(row["grid_code"])
    assert not bool(row["inside"])
    assert row["nearest_grid_code"] == grids.grid_code[5]
    assert row["nearest_distance_m"] == pytest.approx(30.0)
    assert res.candidates(0) == []
    # within tolerance of the plan's edge: that grid is a candidate too
    res, row = _one(index, X0 + 310, Y0 + 150, tolerance_m=20)
    assert row["nearest_distance_m"] == pytest.approx(10.0)
    assert res.candidates(0) == [(grids.grid_code[5], pytest.approx(10.0))]


def test_far_outside_uses_fallback(index, grids):
    _res, row = _one(index, X0 - 5000, Y0 + 50)
    assert row["status"] == "outside"
    assert row["nearest_grid_code"] == grids.grid_code[0]
    assert row["nearest_distance_m"] == pytest.approx(5000.0)


def test_missing_coordinates_are_invalid_rows(index):
    res = index.locate([np.nan, X0 + 50], [np.nan, Y0 + 50], crs=PROJECTED_CRS)
    assert list(res.status) == ["invalid", "inside"]


def test_other_crs_give_same_answer(index, grids):
    pts = np.array([[X0 + 50, Y0 + 50], [X0 + 95, Y0 + 30], [X0 + 330, Y0 + 150]])
    base = index.locate(pts[:, 0], pts[:, 1], crs=PROJECTED_CRS)
    for crs in ("wgs84", "gcj02", "bd09", "cgcs2000"):
        x, y = convert(pts[:, 0], pts[:, 1], src=PROJECTED_CRS, dst=crs)
        res = index.locate(x, y, crs=crs)
        assert list(res.grid) == list(base.grid), crs
        assert np.allclose(res.boundary_distance_m, base.boundary_distance_m, atol=0.01)
    # GCJ-02 taken as WGS-84 lands hundreds of metres away: the CRS matters
    gx, gy = convert(pts[:1, 0], pts[:1, 1], src=PROJECTED_CRS, dst="gcj02")
    wrong = index.locate(gx, gy, crs="wgs84")
    assert wrong.grid[0] != base.grid[0]


def test_swapped_coordinates_raise(index):
    x, y = convert([X0 + 50], [Y0 + 50], src=PROJECTED_CRS, dst="wgs84")
    with pytest.raises(CoordinateRangeError, match="swapped"):
        index.locate(y, x, crs="wgs84")


def test_tolerance_above_index_maximum(index):
    with pytest.raises(InputError, match="max_tolerance_m"):
        index.locate([X0], [Y0], crs=PROJECTED_CRS, tolerance_m=500)


def test_matches_sjoin_and_shapely_distance():
    rng = np.random.default_rng(4)
    seeds = shapely.multipoints(rng.uniform([X0, Y0], [X0 + 2000, Y0 + 2000], (40, 2)))
    square = shapely.box(X0, Y0, X0 + 2000, Y0 + 2000)
    cells = shapely.intersection(
        shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=square)), square
    )
    # a hole: the middle of cell 0 is outside every grid
    hole = shapely.buffer(shapely.point_on_surface(cells[0]), 15)
    cells[0] = shapely.difference(cells[0], hole)
    plan = gpd.GeoDataFrame(
        {"grid_code": [f"G{i:02d}" for i in range(len(cells))], "community_code": "C1"},
        geometry=cells,
        crs=PROJECTED_CRS,
    )
    idx = GridIndex(plan)
    n = 6000
    px = rng.uniform(X0 - 100, X0 + 2100, n)
    py = rng.uniform(Y0 - 100, Y0 + 2100, n)
    hole_c = shapely.get_coordinates(shapely.centroid(hole))[0]
    px[:50], py[:50] = hole_c[0] + rng.uniform(-5, 5, 50), hole_c[1]
    res = idx.locate(px, py, crs=PROJECTED_CRS, tolerance_m=25)
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(px, py), crs=PROJECTED_CRS)
    joined = gpd.sjoin(pts, plan, predicate="intersects", how="left")
    joined = joined[~joined.index.duplicated()]
    expect = joined["grid_code"].to_numpy(dtype=object)
    got = res.to_frame()["grid_code"].to_numpy(dtype=object)
    assert [None if pd.isna(v) else v for v in got] == [
        None if pd.isna(v) else v for v in expect
    ]
    assert (res.grid[:50] == -1).all()
    assert (res.nearest[:50] == 0).all()
    inside = res.grid >= 0
    geoms = pts.geometry.values
    d_in = shapely.distance(geoms[inside], shapely.boundary(cells[res.grid[inside]]))
    assert np.allclose(res.boundary_distance_m[inside], d_in, atol=1e-6)
    out = ~inside
    d_out = shapely.distance(geoms[out], cells[res.nearest[out]])
    assert np.allclose(res.boundary_distance_m[out], d_out, atol=1e-6)
    nearest_any = shapely.STRtree(cells).query_nearest(
        geoms[out], return_distance=True, all_matches=False
    )[1]
    assert np.allclose(d_out, nearest_any, atol=1e-6)
    # candidates are exactly the other grids within tolerance
    tree = shapely.STRtree(cells)
    for i in rng.choice(n, 300, replace=False):
        within = set(tree.query(geoms[i], predicate="dwithin", distance=25).tolist())
        within.discard(int(res.grid[i]))
        got_c = {int(idx.position(c)) for c, _ in res.candidates(int(i))}
        assert got_c == within, i
    # distances=False: same grids, distances only where needed
    lazy = idx.locate(px, py, crs=PROJECTED_CRS, tolerance_m=25, distances=False)
    assert np.array_equal(lazy.grid, res.grid)
    assert np.array_equal(lazy.candidate_grid, res.candidate_grid)
    known = np.isfinite(lazy.boundary_distance_m)
    assert np.allclose(lazy.boundary_distance_m[known], res.boundary_distance_m[known])
    assert (res.boundary_distance_m[~known] > 25).all()


def test_overlapping_grids_are_both_reported():
    a = shapely.box(X0, Y0, X0 + 100, Y0 + 100)
    b = shapely.box(X0 + 60, Y0, X0 + 160, Y0 + 100)
    plan = gpd.GeoDataFrame(
        {"grid_code": ["A", "B"], "community_code": "C"},
        geometry=[a, b],
        crs=PROJECTED_CRS,
    )
    idx = GridIndex(plan, cell_size_m=5)
    res = idx.locate([X0 + 80], [Y0 + 50], crs=PROJECTED_CRS)
    assert res.grid[0] == 0
    assert ("B", 0.0) in res.candidates(0)


def test_geographic_grids_and_multipolygons():
    a = shapely.box(X0, Y0, X0 + 100, Y0 + 100)
    b = shapely.MultiPolygon(
        [
            shapely.box(X0 + 200, Y0, X0 + 300, Y0 + 100),
            shapely.box(X0 + 400, Y0, X0 + 500, Y0 + 100),
        ]
    )
    plan = gpd.GeoDataFrame(
        {"grid_code": ["A", "B"], "community_code": "C"},
        geometry=[a, b],
        crs=PROJECTED_CRS,
    ).to_crs(4490)
    idx = GridIndex(plan)
    assert idx.working_crs.is_projected
    x, y = convert(
        [X0 + 450, X0 + 150], [Y0 + 50, Y0 + 50], src=PROJECTED_CRS, dst="cgcs2000"
    )
    res = idx.locate(x, y, crs="cgcs2000")
    assert list(idx.codes[res.grid[:1]]) == ["B"]
    assert res.grid[1] == -1
    assert res.boundary_distance_m[1] == pytest.approx(50.0, abs=0.01)
    # near the edges of both parts of the MultiPolygon
    px = [X0 + 403, X0 + 397, X0 + 298, X0 + 303]
    x, y = convert(px, [Y0 + 50] * 4, src=PROJECTED_CRS, dst="cgcs2000")
    res = idx.locate(x, y, crs="cgcs2000", tolerance_m=5)
    assert list(res.grid) == [1, -1, 1, -1]
    assert np.allclose(res.boundary_distance_m, [3, 3, 2, 3], atol=0.01)
    assert list(res.status) == ["inside", "outside", "inside", "outside"]
    assert res.candidates(1) == [("B", pytest.approx(3.0, abs=0.01))]


def test_locate_points_keeps_columns(index, grids):
    x, y = convert(
        [X0 + 50, X0 + 150, X0 + 999],
        [Y0 + 50, Y0 + 150, Y0 + 50],
        src=PROJECTED_CRS,
        dst="gcj02",
    )
    table = pd.DataFrame(
        {"id": ["p1", "p2", "p3"], "lng": x, "lat": y, "note": [1, 2, 3]},
        index=[10, 11, 12],
    )
    out = locate_points(table, index, crs="gcj02", x_col="lng")
    assert list(out.index) == [10, 11, 12]
    assert list(out.columns[:4]) == ["id", "lng", "lat", "note"]
    assert list(out["grid_code"][:2]) == [grids.grid_code[0], grids.grid_code[4]]
    assert out["status"].iloc[2] == "outside"
    assert out["nearest_grid_code"].iloc[2] == grids.grid_code[2]
    with pytest.raises(MissingColumnError, match="x_col"):
        locate_points(table, index, crs="gcj02")
    # a GeoDataFrame: its own CRS
    pts = gpd.GeoDataFrame(
        {"id": ["p1"]}, geometry=[shapely.Point(X0 + 150, Y0 + 50)], crs=PROJECTED_CRS
    )
    out = locate_points(pts, index)
    assert isinstance(out, gpd.GeoDataFrame)
    assert out["grid_code"].iloc[0] == grids.grid_code[1]
    assert out.crs == pts.crs


def test_containing_areas_mapit_style(index, grids):
    lon, lat = convert([X0 + 150], [Y0 + 50], src=PROJECTED_CRS, dst="wgs84")
    areas = containing_areas(float(lon[0]), float(lat[0]), index, crs="wgs84")
    assert areas == [
        {"type": "grid", "code": grids.grid_code[1], "worker_name": "worker 1"},
        {"type": "community", "code": "421002001001"},
        {"type": "subdistrict", "code": "421002001"},
    ]
    assert index.containing_areas(X0 - 500, Y0, crs=PROJECTED_CRS) == []


def test_bad_grids_input():
    with pytest.raises(MissingColumnError, match="grid_code"):
        GridIndex(_boxes().drop(columns="grid_code"))
    with pytest.raises(MissingColumnError, match="nope"):
        GridIndex(_boxes(), attributes=["nope"])


def test_cli_locate_csv_and_vector(tmp_path, grids):
    import typer
    from typer.testing import CliRunner

    from spatialgrid.cli.locate import register

    app = typer.Typer()
    register(app)
    grids_path = tmp_path / "grids.gpkg"
    grids.to_file(grids_path)
    x, y = convert(
        [X0 + 50, X0 + 150, X0 + 999, np.nan],
        [Y0 + 50, Y0 + 150, Y0 + 50, np.nan],
        src=PROJECTED_CRS,
        dst="gcj02",
    )
    pts = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "lng": x, "lat": y})
    csv_in = tmp_path / "points.csv"
    pts.to_csv(csv_in, index=False)
    out = tmp_path / "out.csv"
    runner = CliRunner()
    args = [
        "locate",
        "--grids",
        str(grids_path),
        "--points",
        str(csv_in),
        "--out",
        str(out),
    ]
    res = runner.invoke(
        app, [*args, "--crs", "gcj02", "--x-col", "lng", "--chunk-size", "2"]
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out, dtype=str)
    assert list(table.columns[:3]) == ["case_id", "lng", "lat"]
    assert list(table["status"]) == ["inside", "inside", "outside", "invalid"]
    assert table["grid_code"].iloc[1] == grids.grid_code[4]
    assert table["nearest_grid_code"].iloc[2] == grids.grid_code[2]
    assert "worker_name" in table.columns
    # CSV without --crs: a clear error
    res = runner.invoke(app, [*args, "--x-col", "lng"])
    assert res.exit_code != 0
    assert "--crs is required" in res.output
    # vector points keep their geometry and CRS
    gpts = gpd.GeoDataFrame(
        {"case_id": ["a"]},
        geometry=[shapely.Point(X0 + 150, Y0 + 50)],
        crs=PROJECTED_CRS,
    )
    gpath = tmp_path / "pts.gpkg"
    gpts.to_file(gpath)
    vout = tmp_path / "out.gpkg"
    res = runner.invoke(
        app,
        [
            "locate",
            "--grids",
            str(grids_path),
            "--points",
            str(gpath),
            "--out",
            str(vout),
        ],
    )
    assert res.exit_code == 0, res.output
    back = gpd.read_file(vout)
    assert back["grid_code"].iloc[0] == grids.grid_code[1]
    assert back.crs.equals(gpts.crs)


@pytest.mark.db
def test_plan_in_force_at_a_date(db_session, grids):
    """The grid responsible on date D comes from the plan in force on D."""
    from datetime import UTC, datetime

    from spatialgrid.db.repository import (
        activate_plan,
        active_plan_id,
        create_plan,
        load_plan_grids,
    )

    no_blocks = pd.DataFrame(
        {"block_id": pd.Series(dtype=str), "grid_code": pd.Series(dtype=str)}
    )
    old = create_plan(grids, no_blocks, session=db_session, name="2024", parameters={})
    activate_plan(
        old, session=db_session, effective_from=datetime(2024, 1, 1, tzinfo=UTC)
    )
    # 2025: the first column of grids is merged into one grid with a new code
    merged = grids.copy()
    merged.loc[0, "geometry"] = shapely.box(X0, Y0, X0 + 100, Y0 + 200)
    merged.loc[0, "grid_code"] = "42100200100107"
    merged = merged.drop(index=3)
    new = create_plan(merged, no_blocks, session=db_session, name="2025", parameters={})
    activate_plan(
        new, session=db_session, effective_from=datetime(2025, 1, 1, tzinfo=UTC)
    )
    x, y = convert([X0 + 50], [Y0 + 150], src=PROJECTED_CRS, dst="wgs84")
    answers = {}
    for day in (datetime(2024, 6, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC)):
        plan_id = active_plan_id(session=db_session, at=day)
        index = GridIndex(load_plan_grids(plan_id, session=db_session))
        answers[day.year] = (
            index.locate(x, y, crs="wgs84").to_frame()["grid_code"].iloc[0]
        )
    assert answers == {2024: grids.grid_code[3], 2025: "42100200100107"}


def test_record_matches_frame(index, grids):
    res = index.locate(
        [X0 + 95, X0 + 330, np.nan], [Y0 + 30, Y0 + 150, np.nan], crs=PROJECTED_CRS
    )
    frame = res.to_frame()
    rec = res.record(0)
    assert rec["grid_code"] == frame["grid_code"].iloc[0] == grids.grid_code[0]
    assert rec["status"] == "near_boundary"
    assert rec["candidates"] == [{"grid_code": grids.grid_code[1], "distance_m": 5.0}]
    assert rec["worker_name"] == "worker 0"
    out = res.record(1)
    assert (out["grid_code"], out["nearest_grid_code"]) == (None, grids.grid_code[5])
    assert out["nearest_distance_m"] == pytest.approx(30.0)
    assert out["worker_name"] is None
    assert res.record(2)["status"] == "invalid"
    assert res.record(2)["boundary_distance_m"] is None
