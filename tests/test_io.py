"""GeoPackage round trips of a City; single-layer reading."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid import testing
from spatialgrid.city import LAYERS, City, empty_layer
from spatialgrid.errors import DataFormatError, InputError, MissingCRSError
from spatialgrid.importers import import_osm
from spatialgrid.io import list_layers, read_city, read_layer, write_city

TINY = Path(__file__).parent / "data" / "tiny_town.osm"


def _lattice_city() -> City:
    blocks = testing.box_lattice(3, 2, households=[1, 2, 3, 4, 5, 6])
    blocks["community_code"] = "000100001001"  # leading zeros must survive
    layers = {name: empty_layer(name, testing.PROJECTED_CRS) for name in LAYERS}
    layers["blocks"] = blocks
    return City(
        **layers,
        name="lattice",
        admin_code="000100",
        report={"note": "made in a test", "nested": {"a": [1, 2]}},
    )


def test_round_trip_projected_city(tmp_path):
    city = _lattice_city()
    path = write_city(city, tmp_path / "sub" / "lattice.gpkg")
    assert set(LAYERS) <= set(list_layers(path))
    back = read_city(path)
    assert back.crs == city.crs  # EPSG:4546 kept, not reprojected
    assert back.name == "lattice"
    assert back.admin_code == "000100"
    assert back.report == city.report
    assert back.blocks["community_code"].tolist() == ["000100001001"] * 6
    assert back.blocks["households"].tolist() == [1, 2, 3, 4, 5, 6]
    assert shapely.equals(
        back.blocks.geometry.values, city.blocks.geometry.values
    ).all()
    for name in LAYERS:
        assert len(getattr(back, name)) == len(getattr(city, name)), name


def test_round_trip_imported_city(tmp_path):
    city = import_osm(TINY, admin_code="320102")
    path = write_city(city, tmp_path / "tiny.gpkg")
    back = read_city(path)
    assert back.crs.to_epsg() == 4490
    assert back.summary() == city.summary()
    assert back.report["counts"] == city.report["counts"]
    assert back.report["dropped"] == city.report["dropped"]
    left = city.buildings.sort_values("building_id").reset_index(drop=True)
    right = back.buildings.sort_values("building_id").reset_index(drop=True)
    pd.testing.assert_series_equal(
        left["households"], right["households"], check_dtype=False
    )
    assert right["residential"].dtype == bool
    assert back.streets["internal"].dtype == bool
    coords_in = shapely.get_coordinates(city.blocks.geometry.values)
    coords_out = shapely.get_coordinates(back.blocks.geometry.values)
    assert abs(coords_in - coords_out).max() < 1e-9


def test_write_errors(tmp_path):
    city = _lattice_city()
    with pytest.raises(InputError, match=r"\.gpkg"):
        write_city(city, tmp_path / "city.geojson")
    path = write_city(city, tmp_path / "city.gpkg")
    with pytest.raises(InputError, match="overwrite=True"):
        write_city(city, path, overwrite=False)
    write_city(city, path)  # overwrite is the default


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_city(tmp_path / "missing.gpkg")
    other = tmp_path / "other.gpkg"
    gpd.GeoDataFrame(
        {"x": [1]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4490"
    ).to_file(other, layer="roads")
    with pytest.raises(DataFormatError, match="none of the City layers"):
        read_city(other)
    with pytest.raises(DataFormatError, match=r"no layer 'blocks'.*\['roads'\]"):
        read_layer(other, "blocks")
    bad = tmp_path / "bad.gpkg"
    bad.write_bytes(b"not a geopackage")
    with pytest.raises(DataFormatError, match="cannot open"):
        read_layer(bad, "blocks")


def test_read_layer_requires_crs(tmp_path):
    path = tmp_path / "naive.shp"
    with pytest.warns(UserWarning, match="crs"):
        gpd.GeoDataFrame({"x": [1]}, geometry=[shapely.Point(0, 0)]).to_file(path)
    with pytest.raises(MissingCRSError, match=r"naive\.shp"):
        read_layer(path)
