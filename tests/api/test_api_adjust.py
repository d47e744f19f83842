"""Plan adjustment API: rebalance, edits, hand-drawn upload, diff (planner role)."""

from __future__ import annotations

import functools
import json
import operator

import pandas as pd
import pytest

from api.routes.adjust import router
from spatialgrid.edits import build_grids
from tests.api.conftest import COMMUNITY_EAST, COMMUNITY_WEST

pytestmark = pytest.mark.db

EXTRA_ROUTERS = (router,)

WEST = {  # two 3-block grids: 450 households each when planned, 750 now
    f"{COMMUNITY_WEST}01": ["B0_0", "B0_1", "B1_0"],
    f"{COMMUNITY_WEST}02": ["B1_1", "B2_0", "B2_1"],
}
EAST = {
    f"{COMMUNITY_EAST}01": ["B0_2", "B0_3"],
    f"{COMMUNITY_EAST}02": ["B1_2", "B1_3"],
    f"{COMMUNITY_EAST}03": ["B2_2", "B2_3"],
}


@pytest.fixture(scope="module")
def plan_id(api_env) -> int:
    """A stored plan made when the west blocks held 150 households each."""
    from spatialgrid.db.plans_extra import store_draft_plan

    blocks = api_env.city.blocks.copy()
    west = blocks["community_code"] == COMMUNITY_WEST
    blocks.loc[west, "households"] = 150
    rows = [
        {"block_id": b, "grid_code": g, "community_code": g[:12]}
        for g, bs in {**WEST, **EAST}.items()
        for b in bs
    ]
    assign = pd.DataFrame(rows)
    assign["households"] = assign["block_id"].map(
        dict(zip(blocks["block_id"], blocks["households"], strict=True))
    )
    grids = build_grids(blocks, assign)
    factory = api_env.app.state.session_factory
    with factory.begin() as session:
        return store_draft_plan(
            grids.to_crs(4490), assign, session=session, name="old", parameters={}
        )


def test_rebalance_creates_a_draft_within_bounds(api_env, plan_id):
    r = api_env.client.post(
        f"/v1/plans/{plan_id}/rebalance",
        headers=api_env.headers("planner"),
        json={"name": "after growth"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["plan_id"] != plan_id
    s = body["summary"]
    assert s["violations_before"] == 2
    assert s["violations_after"] == 0
    assert s["codes_created"] == [f"{COMMUNITY_WEST}03"]
    # East grids untouched.
    assert all(c.startswith(COMMUNITY_WEST) for c in s["grids_touched"])
    assert body["violations"] == []
    r = api_env.client.post(
        f"/v1/plans/{plan_id}/rebalance",
        headers=api_env.headers("planner"),
        json={"name": "thorough", "exhaustive_seconds": 2},
    )
    assert r.status_code == 201, r.text
    assert r.json()["summary"]["violations_after"] == 0
    # 03 went to the first draft: codes of stored plans are never reused.
    assert r.json()["summary"]["codes_created"] == [f"{COMMUNITY_WEST}04"]
    for bad in (-1, 31, "soon"):
        r = api_env.client.post(
            f"/v1/plans/{plan_id}/rebalance",
            headers=api_env.headers("planner"),
            json={"exhaustive_seconds": bad},
        )
        assert r.status_code == 422, r.text
        assert "exhaustive_seconds" in r.text
    from spatialgrid.db import repository

    with api_env.app.state.session_factory.begin() as session:
        stored = repository.load_plan_grids(body["plan_id"], session=session)
        info = repository.get_plan(body["plan_id"], session=session)
    assert sorted(stored["households"]) == [500] * 6
    assert info.status == "draft"
    assert info.parameters["rebalanced_from"] == plan_id

    # Diff old → new: JSON with a GeoJSON layer, and the layer alone.
    d = api_env.client.get(
        f"/v1/plans/{plan_id}/diff/{body['plan_id']}",
        headers=api_env.headers("worker"),
    )
    assert d.status_code == 200, d.text
    diff = d.json()
    assert diff["summary"]["codes_created"] == [f"{COMMUNITY_WEST}03"]
    assert diff["summary"]["households_moved"] == s["households_moved"]
    assert diff["layer"]["type"] == "FeatureCollection"
    kinds = {f["properties"]["kind"] for f in diff["layer"]["features"]}
    assert kinds == {"grid", "moved_block"}
    g = api_env.client.get(
        f"/v1/plans/{plan_id}/diff/{body['plan_id']}?format=geojson",
        headers=api_env.headers("planner"),
    )
    assert g.status_code == 200
    assert g.headers["content-type"].startswith("application/geo+json")
    lon, lat = g.json()["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 100 < lon < 130
    assert 20 < lat < 40


def test_edits_return_violations(api_env, plan_id):
    r = api_env.client.post(
        f"/v1/plans/{plan_id}/edits",
        headers=api_env.headers("planner"),
        json={
            "edits": [
                {
                    "op": "merge",
                    "grids": [f"{COMMUNITY_EAST}01", f"{COMMUNITY_EAST}02"],
                }
            ]
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    kinds = {(v["kind"], tuple(v["grid_codes"])) for v in body["violations"]}
    assert ("above_max", (f"{COMMUNITY_EAST}01",)) in kinds  # 1000 households
    assert ("above_max", (f"{COMMUNITY_WEST}01",)) in kinds  # 750 now
    assert body["summary"]["codes_retired"] == [f"{COMMUNITY_EAST}02"]
    bad = api_env.client.post(
        f"/v1/plans/{plan_id}/edits",
        headers=api_env.headers("planner"),
        json={"edits": [{"op": "move", "blocks": ["nope"], "to": "new"}]},
    )
    assert bad.status_code == 422
    assert "not assigned" in bad.text


def test_upload_hand_drawn_plan(api_env, plan_id, tmp_path):
    blocks = api_env.city.blocks
    # Three west grids drawn as row bands; the middle band cut through B1_1.
    drawn = blocks[blocks["community_code"] == COMMUNITY_WEST].dissolve(
        by=blocks["block_id"].str[1]
    )
    drawn = drawn.reset_index(drop=True)[["geometry"]]
    geojson = tmp_path / "drawn.geojson"
    drawn.to_crs(4326).to_file(geojson, driver="GeoJSON")
    with open(geojson, "rb") as fh:
        r = api_env.client.post(
            "/v1/plans/upload",
            headers=api_env.headers("planner"),
            files={"file": ("drawn.geojson", fh, "application/geo+json")},
            data={"name": "drawn by hand"},
        )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["summary"]["blocks_matched"] == 6
    kinds = {v["kind"] for v in body["violations"]}
    assert "gap" in kinds  # the east community was not drawn
    gap = next(v for v in body["violations"] if v["kind"] == "gap")
    assert set(gap["block_ids"]) == set(
        functools.reduce(operator.iadd, EAST.values(), [])
    )
    bad = api_env.client.post(
        "/v1/plans/upload",
        headers=api_env.headers("planner"),
        files={"file": ("drawn.txt", b"hello", "text/plain")},
    )
    assert bad.status_code == 422


def test_roles_and_missing_plan(api_env, plan_id):
    r = api_env.client.post(
        f"/v1/plans/{plan_id}/rebalance", headers=api_env.headers("operator")
    )
    assert r.status_code == 403
    r = api_env.client.get(
        f"/v1/plans/{plan_id}/diff/{plan_id}", headers=api_env.headers("consumer")
    )
    assert r.status_code == 403
    r = api_env.client.get(
        f"/v1/plans/{plan_id}/diff/999999", headers=api_env.headers("planner")
    )
    assert r.status_code == 404
    assert json.loads(r.text)
