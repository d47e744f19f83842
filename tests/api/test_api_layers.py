"""GET /v1/<layer>: GeoJSON, bbox filter, paging, validation, single community."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

import shapely

from api.schemas import layer_models
from spatialgrid.crs import STORAGE_EPSG

# The two communities of tests/api/conftest.py:small_city.
COMMUNITY_WEST = "421002001001"
COMMUNITY_EAST = "421002001002"

pytestmark = pytest.mark.db


def _get(api_env, path, role="consumer", **params):
    return api_env.client.get(path, params=params, headers=api_env.headers(role))


def _blocks_4490(api_env):
    return api_env.city.blocks.to_crs(STORAGE_EPSG).set_index("block_id")


@pytest.mark.parametrize(
    ("layer", "n"),
    [
        ("subdistricts", 1),
        ("communities", 2),
        ("blocks", 12),
        ("buildings", 12),
        ("addresses", 12),
        ("pois", 0),
        ("streets", 0),
        ("compounds", 0),
    ],
)
def test_layer_is_a_valid_paged_feature_collection(api_env, layer, n):
    resp = _get(api_env, f"/v1/{layer}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/geo+json")
    assert "4490" in resp.headers["Content-Crs"]
    _, collection_model = layer_models(layer)
    page = collection_model.model_validate(resp.json())
    assert page.numberMatched == n
    assert page.numberReturned == n == len(page.features)
    assert [link.rel for link in page.links] == ["self"]


def test_blocks_keep_ids_properties_and_exact_coordinates(api_env):
    body = _get(api_env, "/v1/blocks").json()
    expected = _blocks_4490(api_env)
    assert {f["id"] for f in body["features"]} == set(expected.index)
    for feat in body["features"]:
        props = feat["properties"]
        row = expected.loc[feat["id"]]
        assert props["block_id"] == feat["id"]
        assert props["households"] == 250
        assert props["community_code"] == row["community_code"]
        got = shapely.geometry.shape(feat["geometry"])
        # Same polygon to better than 1e-6 degrees (~10 cm): at least 6 decimals.
        assert shapely.equals_exact(
            shapely.normalize(got), shapely.normalize(row.geometry), tolerance=1e-6
        )
        coords = np.asarray(got.exterior.coords)
        assert np.all(np.abs(coords[:, 0] - 111) < 1)  # lon first, CM 111E zone
        assert np.all(np.abs(coords[:, 1] - 30.3) < 0.5)
        decimals = [len(repr(float(v)).split(".")[1]) for v in coords.ravel()]
        assert max(decimals) >= 6


def test_neighbouring_blocks_still_share_their_edge(api_env):
    body = _get(api_env, "/v1/blocks").json()
    geoms = {f["id"]: shapely.geometry.shape(f["geometry"]) for f in body["features"]}
    shared = geoms["B0_0"].intersection(geoms["B0_1"])
    assert shared.geom_type in {"LineString", "MultiLineString"}
    assert shared.length > 0


def test_bbox_returns_exactly_the_intersecting_blocks(api_env):
    blocks = _blocks_4490(api_env)
    # A small box inside block B1_1 (row 1, col 1): only that block intersects.
    cx, cy = blocks.loc["B1_1"].geometry.centroid.coords[0]
    box = (cx - 1e-4, cy - 1e-4, cx + 1e-4, cy + 1e-4)
    resp = _get(api_env, "/v1/blocks", bbox=",".join(map(str, box)))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [f["id"] for f in body["features"]] == ["B1_1"]
    assert body["numberMatched"] == 1

    # A box over the western half touches columns 0-1 and (on its edge) none else.
    west = blocks[blocks["community_code"] == COMMUNITY_WEST]
    minx, miny, maxx, maxy = west.total_bounds
    box = (minx + 1e-5, miny + 1e-5, maxx - 1e-4, maxy - 1e-5)
    expected = set(blocks.index[blocks.intersects(shapely.box(*box))])
    resp = _get(api_env, "/v1/blocks", bbox=",".join(map(str, box)))
    got = {f["id"] for f in resp.json()["features"]}
    assert got == expected == set(west.index)
    assert resp.json()["numberMatched"] == len(expected)


def test_bbox_far_away_is_empty_not_an_error(api_env):
    resp = _get(api_env, "/v1/buildings", bbox="118.7,32.0,118.8,32.1")
    assert resp.status_code == 200
    assert resp.json()["features"] == []
    assert resp.json()["numberMatched"] == 0


def test_paging_walks_every_block_once_via_next_links(api_env):
    seen: list[str] = []
    url = "/v1/blocks?limit=5"
    pages = 0
    while url:
        resp = api_env.client.get(url, headers=api_env.headers("worker"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["numberMatched"] == 12
        assert body["numberReturned"] == len(body["features"]) <= 5
        seen.extend(f["id"] for f in body["features"])
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url = nxt[0] if nxt else None
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(set(seen))
    assert set(seen) == set(_blocks_4490(api_env).index)


def test_paging_links_carry_limit_offset_and_bbox(api_env):
    blocks = _blocks_4490(api_env)
    bbox = ",".join(map(str, blocks.total_bounds))
    body = _get(api_env, "/v1/blocks", bbox=bbox, limit=4, offset=4).json()
    assert body["numberReturned"] == 4
    links = {
        link["rel"]: parse_qs(urlsplit(link["href"]).query) for link in body["links"]
    }
    assert links["next"]["offset"] == ["8"]
    assert links["prev"]["offset"] == ["0"]
    assert links["next"]["limit"] == ["4"]
    assert links["next"]["bbox"] == [bbox]


def test_offset_beyond_the_end_is_an_empty_page(api_env):
    body = _get(api_env, "/v1/blocks", offset=100).json()
    assert body["features"] == []
    assert body["numberMatched"] == 12
    assert "next" not in {link["rel"] for link in body["links"]}


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ("111,30", "needs 4 comma-separated numbers"),
        ("111,30,112,31,5", "needs 4 comma-separated numbers"),
        ("a,b,c,d", "must be numbers"),
        ("111,30,nan,31", "finite"),
        ("111,30,inf,31", "finite"),
        ("112,30,111,31", "minimum must be below maximum"),
        ("111,31,112,31", "minimum must be below maximum"),
        ("30,111,31,112", "swap longitude and latitude"),
        ("-200,30,112,31", "outside -180..180"),
        ("", None),
    ],
)
def test_bad_bbox_is_422_with_a_message(api_env, bbox, message):
    resp = _get(api_env, "/v1/blocks", bbox=bbox)
    if message is None:  # empty bbox means no filter
        assert resp.status_code == 200
        return
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "RequestValidationError"
    assert "bbox" in body["detail"]
    assert message in body["detail"]
    assert body["errors"][0]["loc"] == ["query", "bbox"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 10001},
        {"limit": "ten"},
        {"offset": -1},
        {"offset": 10**30},
        {"bbox": "1," * 500},
    ],
)
def test_bad_paging_is_422(api_env, params):
    resp = _get(api_env, "/v1/blocks", **params)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


def test_limit_bounds_are_accepted(api_env):
    assert _get(api_env, "/v1/blocks", limit=1).json()["numberReturned"] == 1
    assert _get(api_env, "/v1/blocks", limit=10000).json()["numberReturned"] == 12


def test_one_community_by_code(api_env):
    resp = _get(api_env, f"/v1/communities/{COMMUNITY_EAST}")
    assert resp.status_code == 200, resp.text
    feature_model, _ = layer_models("communities")
    feat = feature_model.model_validate(resp.json())
    assert feat.id == COMMUNITY_EAST
    assert feat.properties.households == 6 * 250
    assert feat.properties.name == "东社区"
    assert feat.properties.generated is False
    east = api_env.city.communities.to_crs(STORAGE_EPSG).set_index("community_code")
    got = shapely.geometry.shape(resp.json()["geometry"])
    assert shapely.equals_exact(
        shapely.normalize(got),
        shapely.normalize(east.loc[COMMUNITY_EAST].geometry),
        tolerance=1e-6,
    )


@pytest.mark.parametrize("code", ["999999999999", "%00", "社区", "'; drop table x;--"])
def test_unknown_community_is_404(api_env, code):
    resp = _get(api_env, f"/v1/communities/{code}")
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"] == "NotFoundError"
    assert "no community with code" in resp.json()["detail"]


def test_overlong_community_code_is_422(api_env):
    resp = _get(api_env, f"/v1/communities/{'1' * 65}")
    assert resp.status_code == 422
