"""Partition engine: invariants on lattices and hand-built infeasible cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid import testing
from spatialgrid.adjacency import adjacency_lists, shared_edges
from spatialgrid.errors import (
    InfeasiblePartitionError,
    InputError,
    MissingColumnError,
    MissingCRSError,
)
from spatialgrid.partition import PartitionResult, partition_blocks

COMMUNITY = "421002001001"
OTHER = "421002001002"
X0, Y0 = testing.ORIGIN


def _lumpy_lattice(nx: int = 6, ny: int = 4, seed: int = 3, code: str = COMMUNITY):
    rng = np.random.default_rng(seed)
    hh = rng.integers(60, 220, nx * ny).tolist()
    return testing.box_lattice(nx, ny, households=hh, community_code=code)


def _two_communities() -> gpd.GeoDataFrame:
    a = _lumpy_lattice(6, 4, seed=3)
    b = testing.box_lattice(
        4,
        3,
        households=[150, 200, 250, 150, 180, 220, 100, 200, 150, 250, 200, 150],
        community_code=OTHER,
        origin=(X0 + 600, Y0),
    )
    b["block_id"] = "O" + b["block_id"]
    blocks = pd.concat([a, b], ignore_index=True)
    blocks.index = pd.Index([f"row{i}" for i in range(len(blocks))], name="fid")
    return blocks


def _assert_invariants(blocks: gpd.GeoDataFrame, res: PartitionResult, lo=400, hi=500):
    grids, assign = res.grids, res.assignments
    assert grids.crs == blocks.crs
    # bounds: every unflagged grid within bounds, every flagged one says why
    within = grids["households"].between(lo, hi)
    assert (within | (grids["flags"] != "")).all()
    # households conserved, per community and overall
    assert grids["households"].sum() == blocks["households"].sum()
    per_comm = grids.groupby("community_code")["households"].sum()
    expect = blocks.groupby("community_code")["households"].sum()
    pd.testing.assert_series_equal(per_comm, expect, check_names=False)
    # every block assigned, shares add up to its households, codes exist
    shares = assign.groupby("block_id")["households"].sum()
    pd.testing.assert_series_equal(
        shares.sort_index(),
        blocks.set_index("block_id")["households"].sort_index(),
        check_names=False,
        check_dtype=False,
    )
    assert set(assign["grid_code"]) == set(grids["grid_code"])
    assert grids["grid_code"].is_unique
    # nesting: a grid's blocks all belong to its community
    comm_of = blocks.set_index("block_id")["community_code"]
    code_comm = grids.set_index("grid_code")["community_code"]
    assert (
        assign["block_id"].map(comm_of).to_numpy()
        == assign["grid_code"].map(code_comm).to_numpy()
    ).all()
    assert all(
        c[:12] == comm
        for c, comm in zip(grids.grid_code, grids.community_code, strict=True)
    )
    # exact cover per community: union equality, no overlap
    for code, g in grids.groupby("community_code"):
        b = blocks[blocks["community_code"] == code]
        ub = shapely.union_all(b.geometry.values)
        ug = shapely.union_all(g.geometry.values)
        tol = 1e-6 * ub.area
        assert shapely.symmetric_difference(ub, ug).area <= tol
        assert abs(shapely.area(g.geometry.values).sum() - ug.area) <= tol
    # contiguity: each grid is one piece (rook: its blocks chain by shared edges)
    for geom in grids.geometry:
        assert geom.geom_type == "Polygon"
    for _code, rows in assign[assign["part_id"].isna()].groupby("grid_code"):
        sub = blocks[blocks["block_id"].isin(rows["block_id"])]
        if len(sub) < 2 or (assign["grid_code"] == _code).sum() != len(sub):
            continue
        if sub.crs.is_geographic:
            sub = sub.to_crs(sub.estimate_utm_crs())
        nb = adjacency_lists(len(sub), shared_edges(sub))
        seen, stack = {0}, [0]
        while stack:
            for v in nb[stack.pop()]:
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
        assert len(seen) == len(sub)
    assert res.diagnostics["cover_ok"].all()


def test_invariants_on_two_lumpy_communities():
    blocks = _two_communities()
    res = partition_blocks(blocks, seed=1)
    _assert_invariants(blocks, res)
    assert res.ok
    assert set(res.diagnostics["status"]) == {"ok"}
    # index preserved: one assignment row per whole block, same labels
    assert res.assignments.index.name == "fid"
    assert list(res.assignments.index) == list(blocks.index)
    # the solver chose k inside the band
    d = res.diagnostics
    assert ((d["k"] >= d["k_min"]) & (d["k"] <= d["k_max"])).all()
    assert res.metrics["share_grids_within_bounds"] == 1.0
    assert 0 < res.metrics["mean_polsby_popper"] <= 1


def test_deterministic_for_a_seed():
    blocks = _two_communities()
    a = partition_blocks(blocks, seed=7)
    b = partition_blocks(blocks, seed=7)
    pd.testing.assert_frame_equal(a.assignments, b.assignments)
    assert a.grids.geometry.equals(b.grids.geometry)
    assert list(a.grids["grid_code"]) == list(b.grids["grid_code"])


def test_codes_run_west_east_north_south():
    # 4 x 2 blocks of 225: four grids of two blocks each
    blocks = testing.box_lattice(4, 2, households=225)
    res = partition_blocks(blocks)
    g = res.grids.sort_values("grid_code")
    pts = g.geometry.representative_point()
    assert g["grid_code"].tolist()[0].endswith("01")
    first = pts.iloc[0]
    assert first.x == pts.x.min() or first.y == pts.y.max()
    assert len(g) == 4


def test_db11_codes():
    res = partition_blocks(
        testing.box_lattice(2, 2, households=225), code_scheme="db11"
    )
    assert all(len(c) == 15 for c in res.grids["grid_code"])


def test_no_valid_k_700():
    blocks = testing.box_lattice(2, 1, households=350)
    res = partition_blocks(blocks)
    d = res.diagnostics.iloc[0]
    assert d["status"] == "infeasible"
    assert not d["feasible"]
    assert "no valid number of grids" in d["reasons"]
    assert (d["k_min"], d["k_max"]) == (2, 1)
    # still a plan, the one with the fewest violations, flagged with why
    assert len(res.grids) == 1
    flag = res.grids["flags"].iloc[0]
    assert flag.startswith("above_max: 700 > 500")
    assert "no valid number of grids" in flag
    assert res.grids["households"].sum() == 700
    with pytest.raises(InfeasiblePartitionError, match="no valid number of grids"):
        partition_blocks(blocks, strict=True)


def test_block_above_max_without_buildings():
    blocks = testing.box_lattice(5, 1, households=[650, 225, 225, 225, 225])
    res = partition_blocks(blocks)
    d = res.diagnostics.iloc[0]
    assert d["status"] == "infeasible"
    assert "B0_0 has 650 households > 500 and cannot be split" in d["reasons"]
    g = res.grids.set_index("households")
    assert "above_max: 650 > 500" in g.loc[650, "flags"]
    assert "cannot be split" in g.loc[650, "flags"]
    # the rest is gridded properly
    others = res.grids[res.grids["households"] != 650]
    assert (others["flags"] == "").all()
    assert others["households"].tolist() == [450, 450]
    assert res.deviations.empty


def test_island_of_120():
    blocks = testing.box_lattice(3, 2, households=200)
    island = gpd.GeoDataFrame(
        {
            "block_id": ["ISL"],
            "community_code": [COMMUNITY],
            "households": [120],
            "households_source": ["planner"],
        },
        geometry=[shapely.box(X0 + 1000, Y0, X0 + 1100, Y0 + 100)],
        crs=blocks.crs,
    )
    blocks = pd.concat([blocks, island], ignore_index=True)
    res = partition_blocks(blocks)
    d = res.diagnostics.iloc[0]
    assert d["status"] == "infeasible"
    assert d["islands"] == 1
    assert "island" in d["reasons"]
    assert "120 households" in d["reasons"]
    isl = res.assignments.set_index("block_id").loc["ISL", "grid_code"]
    grid = res.grids.set_index("grid_code").loc[isl]
    assert grid["households"] == 120
    assert "below_min: 120 < 400" in grid["flags"]
    assert "island" in grid["flags"]
    ok = res.grids[res.grids["grid_code"] != isl]
    assert (ok["flags"] == "").all()
    assert len(ok) == 3


def _buildings_in(block: shapely.Geometry, n: int, households: list[int]):
    minx, miny, maxx, maxy = block.bounds
    step = (maxx - minx) / n
    geoms = [
        shapely.box(
            minx + i * step + 4, miny + 20, minx + (i + 1) * step - 4, maxy - 20
        )
        for i in range(n)
    ]
    return gpd.GeoDataFrame(
        {"building_id": [f"b{i}" for i in range(n)], "households": households},
        geometry=geoms,
        crs=testing.PROJECTED_CRS,
    )


def test_block_above_max_with_buildings_is_split_and_reported():
    blocks = testing.box_lattice(4, 1, households=[650, 250, 250, 250])
    buildings = _buildings_in(
        blocks.geometry.iloc[0], 6, [110, 110, 110, 110, 110, 100]
    )
    res = partition_blocks(blocks, buildings=buildings)
    _assert_invariants(blocks, res)
    assert res.ok
    d = res.diagnostics.iloc[0]
    assert d["status"] == "split"
    assert "split above max: B0_0" in d["notes"]
    dev = res.deviations
    assert set(dev["block_id"]) == {"B0_0"}
    assert dev["households"].sum() == 650
    assert dev["method"].str.contains("buildings").all()
    assert dev["reason"].str.contains("650 households > max 500").all()
    assert dev.crs == blocks.crs
    rows = res.assignments[res.assignments["block_id"] == "B0_0"]
    assert len(rows) >= 2
    assert rows["part_id"].notna().all()
    assert (rows["unit"] == "part").all()
    # never through a building: each footprint lies in exactly one grid
    for foot in buildings.geometry:
        shares = shapely.area(shapely.intersection(res.grids.geometry.values, foot))
        shares = shares / foot.area
        assert np.isclose(np.sort(shares)[-1], 1.0)
        assert np.isclose(np.sort(shares)[:-1].sum(), 0.0)


def test_lumpy_blocks_split_by_buildings_restore_feasibility():
    # three blocks of 300: no whole-block plan (DOMAIN "Lumpiness")
    blocks = testing.box_lattice(3, 1, households=300)
    foot = pd.concat(
        [
            _buildings_in(g, 3, [100, 100, 100]).assign(
                building_id=lambda f, i=i: f"{i}_" + f["building_id"]
            )
            for i, g in enumerate(blocks.geometry)
        ],
        ignore_index=True,
    )
    whole = partition_blocks(blocks)
    assert whole.diagnostics.iloc[0]["status"] == "infeasible"
    assert "exhaustive search" in whole.diagnostics.iloc[0]["reasons"]
    res = partition_blocks(blocks, buildings=foot)
    _assert_invariants(blocks, res)
    assert res.ok
    assert res.diagnostics.iloc[0]["status"] == "split"
    assert "lumpiness" in res.diagnostics.iloc[0]["notes"]
    assert res.deviations["reason"].str.contains("lumpiness").all()


def test_compounds_stay_whole():
    blocks = testing.box_lattice(3, 2, households=200)
    blocks["compound"] = [None, "X", None, None, "X", None]
    res = partition_blocks(blocks, compound_col="compound")
    _assert_invariants(blocks, res)
    a = res.assignments.set_index("block_id")["grid_code"]
    assert a["B0_1"] == a["B1_1"]
    assert set(res.assignments.loc[res.assignments.block_id == "B0_1", "unit"]) == {
        "compound"
    }


def test_compound_above_max_is_not_kept_whole():
    blocks = testing.box_lattice(3, 2, households=200)
    blocks["compound"] = ["X", "X", "X", None, None, None]
    res = partition_blocks(blocks, compound_col="compound")
    _assert_invariants(blocks, res)
    assert res.ok


def test_geographic_crs_input_and_output():
    projected = _lumpy_lattice(5, 4, seed=5)
    geo = projected.to_crs("EPSG:4490")
    res = partition_blocks(geo, seed=2)
    assert res.grids.crs == geo.crs
    assert res.parameters["working_crs"].startswith("EPSG:45")
    _assert_invariants(geo, res)
    ref = partition_blocks(projected, seed=2)
    assert res.grids["households"].sort_values().tolist() == (
        ref.grids["households"].sort_values().tolist()
    )


def test_progress_is_reported():
    calls = []
    partition_blocks(_two_communities(), progress=lambda *a: calls.append(a))
    assert calls[0] == ("partition", 0, 2)
    assert calls[-1] == ("partition", 2, 2)


def test_input_contracts():
    blocks = testing.box_lattice(2, 2, households=225)
    with pytest.raises(MissingCRSError, match="'blocks' has no CRS"):
        partition_blocks(blocks.set_crs(None, allow_override=True))
    with pytest.raises(MissingColumnError, match="pop"):
        partition_blocks(blocks, households_col="pop")
    bad = blocks.copy()
    bad.loc[0, "households"] = -5
    with pytest.raises(InputError, match="whole, non-negative"):
        partition_blocks(bad)
    with pytest.raises(InputError, match="0 < min <= max"):
        partition_blocks(blocks, min_households=500, max_households=400)
    dup = blocks.copy()
    dup.loc[1, "block_id"] = dup.loc[0, "block_id"]
    with pytest.raises(InputError, match="unique"):
        partition_blocks(dup)
    odd = blocks.assign(community_code="C1")
    with pytest.raises(InputError, match="not 12 digits"):
        partition_blocks(odd)
    with pytest.raises(InputError, match="code_scheme"):
        partition_blocks(blocks, code_scheme="x")


def test_cli_file_mode(tmp_path):
    import typer
    from typer.testing import CliRunner

    from spatialgrid.cli.partition import register

    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    blocks = _lumpy_lattice(5, 4, seed=5).to_crs("EPSG:4326")
    blocks = blocks.rename(columns={"households": "hh", "community_code": "comm"})
    src = tmp_path / "blocks.geojson"
    blocks.to_file(src, driver="GeoJSON")
    out = tmp_path / "grids.gpkg"
    result = CliRunner().invoke(
        app,
        [
            "partition",
            "--blocks",
            str(src),
            "--households-col",
            "hh",
            "--community-col",
            "comm",
            "--min",
            "400",
            "--max",
            "500",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    grids = gpd.read_file(out, layer="grids")
    assert grids.crs.to_epsg() == 4326
    assert {"grid_code", "community", "households"} <= set(grids.columns)
    assert grids["households"].sum() == blocks["hh"].sum()
    assign = gpd.read_file(out, layer="assignments")
    assert set(assign["block_id"]) == set(blocks["block_id"])
    diag = gpd.read_file(out, layer="diagnostics")
    assert {"households", "k_min", "k_max", "status", "reasons"} <= set(diag.columns)
    assert "Partition summary" in result.output


def test_cli_database_mode(scratch_db_url):
    from typer.testing import CliRunner

    from spatialgrid.cli import app
    from spatialgrid.db import repository
    from spatialgrid.db.engine import make_engine, session_scope
    from spatialgrid.sample import generate_city

    city = generate_city(n_communities=2)
    engine = make_engine(scratch_db_url, upgrade=True)
    try:
        with session_scope(engine) as session:
            repository.save_city(city, session=session)
        result = CliRunner().invoke(
            app,
            ["partition", "--database-url", scratch_db_url, "--activate"],
        )
        assert result.exit_code == 0, result.output
        with session_scope(engine) as session:
            plans = repository.list_plans(session=session)
            assert len(plans) == 1
            plan_id = int(plans["id"].iloc[0])
            assert plans["status"].iloc[0] == "active"
            assert repository.active_plan_id(session=session) == plan_id
            grids = repository.load_plan_grids(plan_id, session=session)
    finally:
        engine.dispose()
    assert len(grids) > 0
    assert grids["households"].sum() == city.blocks["households"].sum()
    assert grids["households"].between(400, 500).all()
    assert shapely.is_valid(grids.geometry.values).all()


@pytest.fixture(scope="module")
def sample_city():
    from spatialgrid.sample import generate_city

    return generate_city(n_communities=2)


@pytest.fixture(scope="module")
def geographic_result(sample_city):
    blocks = sample_city.blocks.to_crs(4490)
    buildings = sample_city.buildings.to_crs(4490)
    return blocks, partition_blocks(blocks, buildings=buildings)


def test_geographic_input_with_buildings(geographic_result):
    """The database mode's case: EPSG:4490 blocks and buildings, blocks split."""
    blocks, res = geographic_result
    assert res.grids.crs.to_epsg() == 4490
    assert res.deviations.crs.to_epsg() == 4490
    assert res.parameters["working_crs"].startswith("EPSG:45")
    assert len(res.deviations) > 0  # some blocks were split by buildings
    assert res.ok, res.grids["flags"].tolist()
    assert res.diagnostics["cover_ok"].all()
    _assert_invariants(blocks, res)


def test_grids_stay_valid_coverage_in_4490_rounded(sample_city, geographic_result):
    """No zero-width spikes: grids stay valid after conversion and 7-decimal rounding."""
    _, geo = geographic_result
    projected = partition_blocks(sample_city.blocks, buildings=sample_city.buildings)
    assert len(projected.deviations) > 0
    for res in (geo, projected):
        grids = res.grids.to_crs(4490)
        rounded = shapely.set_precision(grids.geometry.values, 1e-7, mode="pointwise")
        assert shapely.is_valid(rounded).all()
        for code in grids["community_code"].unique():
            mask = (grids["community_code"] == code).to_numpy()
            assert shapely.coverage_is_valid(rounded[mask]), code
        assert shapely.is_valid(res.deviations.to_crs(4490).geometry.values).all()


def test_nanjing_grids_stay_inside_their_community(nanjing_plan):
    """Real city: no grid reaches into another community, none overlaps another."""
    city, plan = nanjing_plan
    grids = plan.grids.to_crs(4549)
    blocks = city.blocks.to_crs(4549)
    assert grids.is_valid.all()
    for comm, mine in grids.groupby("community_code"):
        region = shapely.union_all(
            blocks.loc[blocks["community_code"] == comm].geometry
        )
        outside = shapely.difference(shapely.union_all(mine.geometry), region).area
        assert outside < 0.01, (comm, outside)
    pairs = gpd.sjoin(grids, grids, predicate="intersects")
    pairs = pairs[pairs.index < pairs["index_right"]]
    geom = grids.geometry
    worst = max(
        (
            geom[i].intersection(geom[j]).area
            for i, j in zip(pairs.index, pairs["index_right"], strict=True)
        ),
        default=0.0,
    )
    assert worst < 0.01
