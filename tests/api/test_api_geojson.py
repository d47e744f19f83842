"""api.geojson: GeoDataFrame -> GeoJSON text (no database)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

import shapely

from api.geojson import COORDINATE_DECIMALS, GeoJSONResponse, feature_collection
from api.schemas import Link, layer_models
from spatialgrid import testing


def test_projected_input_comes_out_in_4490_rounded_and_still_seamless():
    blocks = testing.box_lattice(3, 2)  # EPSG:4546 metres
    body = json.loads(feature_collection(blocks, id_col="block_id"))
    _, model = layer_models("blocks")
    body["numberMatched"] = len(blocks)
    model.model_validate(body | {"links": []})
    expected = blocks.to_crs(4490).set_index("block_id")
    geoms = {}
    for feat in body["features"]:
        geom = shapely.geometry.shape(feat["geometry"])
        coords = np.asarray(geom.exterior.coords)
        assert np.array_equal(coords, np.round(coords, COORDINATE_DECIMALS))
        assert shapely.equals_exact(
            shapely.normalize(geom),
            shapely.normalize(expected.loc[feat["id"]].geometry),
            tolerance=10 ** -(COORDINATE_DECIMALS - 1),
        )
        geoms[feat["id"]] = geom
    edge = geoms["B0_0"].intersection(geoms["B0_1"])
    assert edge.geom_type == "LineString"
    assert not geoms["B0_0"].overlaps(geoms["B0_1"])


def test_awkward_values_become_valid_json():
    frame = testing.box_lattice(3, 1).to_crs(4490)
    frame["extra"] = [{"k": [1, 2]}, None, "x"]
    frame["when"] = pd.to_datetime(["2026-01-01", None, "2026-02-03"])
    frame["ratio"] = [0.5, np.nan, np.inf]
    frame["name"] = ["中山路\u2028一号", "line\nbreak", '"quoted"']
    frame.loc[1, "geometry"] = None
    frame.loc[2, "block_id"] = None
    text = feature_collection(frame, id_col="block_id", number_matched=7)
    assert "Infinity" not in text
    assert "NaN" not in text
    body = json.loads(text)
    f0, f1, f2 = body["features"]
    assert f0["id"] == "B0_0"
    assert f0["properties"]["extra"] == {"k": [1, 2]}
    assert f0["properties"]["when"].startswith("2026-01-01")
    assert f0["properties"]["name"] == "中山路\u2028一号"
    assert f1["geometry"] is None
    assert f1["properties"]["ratio"] is None
    assert f1["properties"]["name"] == "line\nbreak"
    assert "id" not in f2
    assert f2["properties"]["ratio"] is None  # inf is not JSON
    assert body["numberMatched"] == 7
    assert body["numberReturned"] == 3


def test_empty_frame_and_links():
    frame = testing.box_lattice(1, 1).iloc[:0]
    links = [Link(href="http://h/v1/blocks?offset=0", rel="self")]
    body = json.loads(feature_collection(frame, id_col="block_id", links=links))
    assert body["features"] == []
    assert body["links"] == [
        {
            "href": "http://h/v1/blocks?offset=0",
            "rel": "self",
            "type": "application/geo+json",
        }
    ]


def test_response_sets_media_type_and_crs_header():
    resp = GeoJSONResponse({"type": "FeatureCollection", "features": []})
    assert resp.media_type == "application/geo+json"
    assert resp.headers["Content-Crs"].endswith("/EPSG/0/4490>")
    assert json.loads(resp.body) == {"type": "FeatureCollection", "features": []}
