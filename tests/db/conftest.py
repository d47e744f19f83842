"""DB test helpers: a small hand-built City with every layer filled."""

from __future__ import annotations

import pytest

import geopandas as gpd
import shapely

from spatialgrid import testing
from spatialgrid.city import City

pytestmark = pytest.mark.db

CRS = testing.PROJECTED_CRS
X0, Y0 = testing.ORIGIN


def build_small_city() -> City:
    """3 x 2 lattice of 100 m blocks plus one feature or two in every other layer."""
    blocks = testing.box_lattice(3, 2, households=[250, 300, 120, 410, 0, 90])
    blocks["households_source"] = ["planner"] * 5 + ["none"]
    blocks["landuse"] = ["residential", None, "retail", None, None, "school"]
    area = shapely.box(X0, Y0, X0 + 300, Y0 + 200)
    subdistricts = gpd.GeoDataFrame(
        {"subdistrict_code": ["421002001"], "name": ["解放路街道"]},
        geometry=[area],
        crs=CRS,
    )
    subdistricts["level"] = "subdistrict"
    communities = gpd.GeoDataFrame(
        {
            "community_code": ["421002001001"],
            "name": ["红门路社区"],
            "subdistrict_code": ["421002001"],
            "households": [1170],
            "generated": [False],
        },
        geometry=[area],
        crs=CRS,
    )
    streets = gpd.GeoDataFrame(
        {
            "street_id": ["S1", "S2"],
            "name": ["北京路", None],
            "highway": ["primary", "service"],
            "internal": [False, True],
            "oneway": ["yes", None],
        },
        geometry=[
            shapely.LineString([(X0, Y0 + 100), (X0 + 300, Y0 + 100)]),
            shapely.MultiLineString(
                [
                    [(X0 + 10, Y0 + 10), (X0 + 50, Y0 + 10)],
                    [(X0 + 60, Y0 + 10), (X0 + 90, Y0 + 10)],
                ]
            ),
        ],
        crs=CRS,
    )
    buildings = gpd.GeoDataFrame(
        {
            "building_id": ["W1", "W2"],
            "block_id": ["B0_0", "B0_0"],
            "compound_id": ["C1", None],
            "levels": [6.0, 3.5],
            "households": [40, None],
            "households_source": ["planner", "none"],
        },
        geometry=[
            shapely.box(X0 + 10, Y0 + 110, X0 + 40, Y0 + 140),
            shapely.MultiPolygon([shapely.box(X0 + 50, Y0 + 150, X0 + 60, Y0 + 160)]),
        ],
        crs=CRS,
    )
    compounds = gpd.GeoDataFrame(
        {
            "compound_id": ["C1"],
            "name": ["幸福小区"],
            "block_id": ["B0_0"],
            "households": [40],
        },
        geometry=[shapely.box(X0 + 5, Y0 + 105, X0 + 45, Y0 + 145)],
        crs=CRS,
    )
    addresses = gpd.GeoDataFrame(
        {
            "address_id": ["A1", "A2"],
            # COPY escaping: tab, newline and backslash must survive.
            "address": ["荆州区北京路1号", "tab\there\nnew\\line"],
            "road": ["北京路", "北京路"],
            "number": ["1", "3"],
            "compound": ["幸福小区", None],
            "building": ["1栋", None],
            "kind": ["door", "building"],
            "block_id": ["B0_0", "B0_1"],
        },
        geometry=[shapely.Point(X0 + 20, Y0 + 101), None],
        crs=CRS,
    )
    pois = gpd.GeoDataFrame(
        {
            "poi_id": ["P1", "P2", "P3"],
            "name": ["便利店", "药店", "学校"],
            "category": ["shop", "shop", "school"],
            "is_shop": [True, True, False],
            "block_id": ["B0_0", "B0_2", "B1_2"],
            "opening_hours": ["08:00-22:00", None, None],
        },
        geometry=[
            shapely.Point(X0 + 30, Y0 + 199),
            shapely.Point(X0 + 250, Y0 + 150),
            shapely.Point(X0 + 250, Y0 + 50),
        ],
        crs=CRS,
    )
    return City(
        subdistricts=subdistricts,
        communities=communities,
        streets=streets,
        blocks=blocks,
        buildings=buildings,
        compounds=compounds,
        addresses=addresses,
        pois=pois,
        name="荆州测试",
        admin_code="421002",
        report={"estimated": {"buildings": 1}, "dropped": []},
    )


@pytest.fixture
def small_city() -> City:
    """A small hand-built city in EPSG:4546 with every layer filled."""
    return build_small_city()
