"""GET /v1/plans/{id}/coverage: summary, GeoJSON layers, injected faults, roles.

Uses the ``api_env`` city of tests/api/conftest.py: a 4 x 3 lattice of 100 m
blocks of 250 households, west community = columns 0-1, east = columns 2-3, one
building (250 households) and one door plate per block. Plans are built by hand
(two blocks per grid, 500 households), so every count is known exactly.
"""

from __future__ import annotations

import pandas as pd
import pytest

import shapely

from spatialgrid.coverage import REPORT_LAYERS
from spatialgrid.crs import STORAGE_EPSG
from spatialgrid.db import repository

pytestmark = pytest.mark.db


def _grid_rows(api_env, pairs):
    """Grids made of block pairs: [(grid_code, [block ids])...]."""
    blocks = api_env.city.blocks.set_index("block_id")
    rows, assignments = [], []
    for code, ids in pairs:
        rows.append(
            {
                "grid_code": code,
                "community_code": str(blocks.loc[ids[0], "community_code"]),
                "households": int(blocks.loc[ids, "households"].sum()),
                "n_blocks": len(ids),
                "geometry": shapely.union_all(blocks.loc[ids].geometry.values),
            }
        )
        assignments += [{"block_id": b, "grid_code": code} for b in ids]
    import geopandas as gpd

    grids = gpd.GeoDataFrame(rows, geometry="geometry", crs=api_env.city.blocks.crs)
    return grids, pd.DataFrame(assignments)


def _clean_pairs():
    """Three grids per community, one per lattice row (two blocks, 500 households)."""
    pairs = []
    for code, cols in (("421002001001", (0, 1)), ("421002001002", (2, 3))):
        for row in range(3):
            pairs.append((f"{code}{row + 1:02d}", [f"B{row}_{c}" for c in cols]))
    return pairs


def _store(api_env, pairs, name):
    grids, assignments = _grid_rows(api_env, pairs)
    factory = api_env.app.state.session_factory
    with factory() as session:
        plan_id = repository.create_plan(
            grids, assignments, session=session, name=name, parameters={}
        )
        session.commit()
    return plan_id


@pytest.fixture(scope="module")
def plans(api_env):
    pairs = _clean_pairs()
    clean = _store(api_env, pairs, "clean")
    removed_code, removed_blocks = pairs[1]  # west community, middle row
    gap = _store(api_env, [p for p in pairs if p[0] != removed_code], "gap")
    # Grid ...02 also claims the blocks of grid ...01: duplicated coverage.
    overlap_pairs = [
        (code, ids + pairs[0][1] if code == removed_code else ids)
        for code, ids in pairs
    ]
    overlap = _store(api_env, overlap_pairs, "overlap")
    return {
        "clean": clean,
        "gap": gap,
        "overlap": overlap,
        "removed_code": removed_code,
        "removed_blocks": removed_blocks,
        "overlap_codes": {pairs[0][0], removed_code},
    }


def _coverage(api_env, plan_id, role="operator", **params):
    return api_env.client.get(
        f"/v1/plans/{plan_id}/coverage", params=params, headers=api_env.headers(role)
    )


def test_clean_plan_has_a_clean_summary(api_env, plans):
    resp = _coverage(api_env, plans["clean"])
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["plan_id"] == plans["clean"]
    assert body["layers"] == {}
    summary = body["summary"]
    assert summary["clean"] is True
    assert summary["grids"] == 6
    assert summary["communities"] == 2
    for key in ("gaps", "slivers", "unassigned", "overlaps"):
        assert summary[key]["count"] == 0
    assert summary["uncovered"] == {"pois": 0, "shops": 0, "addresses": 0}
    assert summary["sliver_width_m"] == 2.0


def test_clean_plan_layers_are_empty_feature_collections(api_env, plans):
    body = _coverage(api_env, plans["clean"], layers="gaps,overlaps").json()
    assert list(body["layers"]) == ["gaps", "overlaps"]
    for layer in body["layers"].values():
        assert layer["type"] == "FeatureCollection"
        assert layer["features"] == []
    grids = _coverage(api_env, plans["clean"], layers="grids").json()["layers"]
    assert len(grids["grids"]["features"]) == 6
    assert {f["properties"]["households"] for f in grids["grids"]["features"]} == {500}


def test_removed_grid_is_an_unassigned_gap_with_exact_counts(api_env, plans):
    resp = _coverage(
        api_env, plans["gap"], layers="gaps,uncovered_points", sliver_width_m=5
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    summary = body["summary"]
    assert summary["clean"] is False
    assert summary["grids"] == 5
    assert summary["gaps"]["count"] == 1
    assert summary["unassigned"]["count"] == 1
    assert summary["slivers"]["count"] == 0
    assert summary["unassigned"]["households"] == 500
    assert summary["unassigned"]["addresses"] == 2
    assert summary["unassigned"]["area_m2"] == pytest.approx(20_000, rel=1e-3)
    assert summary["overlaps"]["count"] == 0
    assert summary["sliver_width_m"] == 5
    (gap,) = body["layers"]["gaps"]["features"]
    assert gap["properties"]["kind"] == "unassigned"
    assert gap["properties"]["community_code"] == "421002001001"
    assert gap["properties"]["households"] == 500
    blocks = api_env.city.blocks.to_crs(STORAGE_EPSG).set_index("block_id")
    hole = shapely.union_all(blocks.loc[plans["removed_blocks"]].geometry.values)
    got = shapely.geometry.shape(gap["geometry"])
    assert got.symmetric_difference(hole).area < 1e-3 * hole.area
    points = body["layers"]["uncovered_points"]["features"]
    expected = {
        f"A{i}"
        for i, b in enumerate(api_env.city.blocks["block_id"])
        if b in plans["removed_blocks"]
    }
    assert {p["properties"]["feature_id"] for p in points} == expected


def test_duplicated_coverage_is_an_overlap(api_env, plans):
    body = _coverage(api_env, plans["overlap"], layers="overlaps").json()
    summary = body["summary"]
    assert summary["overlaps"]["count"] >= 1
    assert summary["overlaps"]["households"] == 500
    assert summary["gaps"]["count"] == 0
    feats = body["layers"]["overlaps"]["features"]
    codes = {
        c
        for f in feats
        for c in (f["properties"]["grid_code_a"], f["properties"]["grid_code_b"])
    }
    assert codes == plans["overlap_codes"]


def test_all_layers(api_env, plans):
    body = _coverage(api_env, plans["gap"], layers="all").json()
    assert list(body["layers"]) == list(REPORT_LAYERS)


@pytest.mark.parametrize("role", ["planner", "operator"])
def test_planner_and_operator_may_check(api_env, plans, role):
    assert _coverage(api_env, plans["clean"], role=role).status_code == 200


@pytest.mark.parametrize("role", ["worker", "consumer"])
def test_other_roles_may_not(api_env, plans, role):
    resp = _coverage(api_env, plans["clean"], role=role)
    assert resp.status_code == 403
    assert "operator" in resp.json()["detail"]


def test_anonymous_is_401(api_env, plans):
    resp = api_env.client.get(f"/v1/plans/{plans['clean']}/coverage")
    assert resp.status_code == 401


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"sliver_width_m": 0}, "sliver_width_m"),
        ({"sliver_width_m": -1}, "sliver_width_m"),
        ({"sliver_width_m": "wide"}, "sliver_width_m"),
        ({"sliver_width_m": "nan"}, "sliver_width_m"),
        ({"sliver_width_m": 1e6}, "sliver_width_m"),
        ({"layers": "gaps,holes"}, "unknown report layer(s) ['holes']"),
        ({"layers": "x" * 400}, "layers"),
    ],
)
def test_bad_parameters_are_422(api_env, plans, params, fragment):
    resp = _coverage(api_env, plans["clean"], **params)
    assert resp.status_code == 422, resp.text
    assert fragment in resp.json()["detail"]


@pytest.mark.parametrize(
    ("plan", "status"),
    [("987654", 404), ("0", 404), ("99999999999999999999999", 404), ("abc", 422)],
)
def test_bad_plan_ids(api_env, plan, status):
    resp = _coverage(api_env, plan)
    assert resp.status_code == status, resp.text
