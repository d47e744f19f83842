"""The sample city generator: determinism, topology, households, codes, addresses."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely
from geopandas.testing import assert_geodataframe_equal
from pyproj import CRS

from spatialgrid.city import LAYER_COLUMNS, LAYERS
from spatialgrid.errors import InputError
from spatialgrid.sample import generate_city

HPC = 3000


@pytest.fixture(scope="module")
def city():
    return generate_city(seed=7, n_communities=5, households_per_community=HPC)


def test_same_seed_gives_identical_layers(city):
    again = generate_city(seed=7, n_communities=5, households_per_community=HPC)
    for name in LAYERS:
        assert_geodataframe_equal(getattr(city, name), getattr(again, name))
    assert city.report == again.report


def test_different_seed_gives_a_different_city(city):
    other = generate_city(seed=8, n_communities=5, households_per_community=HPC)
    assert not city.blocks.geometry.geom_equals_exact(
        other.blocks.geometry.reindex(city.blocks.index), tolerance=1.0
    ).all()
    assert city.summary() != other.summary()


def test_validate_passes_and_layers_have_required_columns(city):
    city.validate()
    for name, frame in city.layers().items():
        assert set(LAYER_COLUMNS[name]) <= set(frame.columns)
        assert len(frame) > 0, name
        assert CRS.from_user_input(frame.crs).equals(CRS.from_epsg(4546))
    for name in ("blocks", "communities", "subdistricts", "compounds", "buildings"):
        frame = getattr(city, name)
        assert frame.geometry.is_valid.all(), name
        assert set(frame.geom_type) <= {"Polygon"}, name


def test_report_records_seed_and_parameters(city):
    rep = city.report
    assert rep["seed"] == 7
    assert rep["parameters"]["n_communities"] == 5
    assert rep["parameters"]["households_per_community"] == HPC
    assert rep["households"] == int(city.blocks["households"].sum())
    assert rep["counts"]["blocks"] == len(city.blocks)


def test_household_totals_are_conserved(city):
    blocks, buildings, communities = city.blocks, city.buildings, city.communities
    assert (blocks["households_source"] == "buildings").all()
    per_block = buildings.groupby("block_id")["households"].sum()
    got = blocks.set_index("block_id")["households"]
    pd.testing.assert_series_equal(
        per_block.reindex(got.index, fill_value=0), got, check_names=False
    )
    per_com = blocks.groupby("community_code")["households"].sum()
    pd.testing.assert_series_equal(
        per_com.sort_index(),
        communities.set_index("community_code")["households"].sort_index(),
        check_names=False,
    )
    per_compound = buildings.groupby("compound_id")["households"].sum()
    pd.testing.assert_series_equal(
        per_compound.sort_index(),
        city.compounds.set_index("compound_id")["households"].sort_index(),
        check_names=False,
    )
    assert city.subdistricts["households"].sum() == blocks["households"].sum()


def test_households_per_building_follow_floors_and_units(city):
    b = city.buildings
    assert (
        b["households"] == b["levels"] * b["units"] * b["households_per_floor_unit"]
    ).all()
    assert set(np.unique(b["levels"])) <= set(range(3, 34))
    assert (b["levels"] >= 18).any()
    assert (b["levels"] <= 7).any()


def test_every_building_lies_inside_exactly_one_block_and_its_compound(city):
    joined = gpd.sjoin(
        city.buildings[["building_id", "block_id", "geometry"]],
        city.blocks[["block_id", "geometry"]],
        predicate="within",
    )
    assert joined["building_id"].is_unique
    assert len(joined) == len(city.buildings)
    assert (joined["block_id_left"] == joined["block_id_right"]).all()
    compounds = city.compounds.set_index("compound_id").geometry
    inside = shapely.within(
        city.buildings.geometry.values,
        compounds.loc[city.buildings["compound_id"]].values,
    )
    assert inside.all()
    blocks = city.blocks.set_index("block_id").geometry
    assert shapely.within(
        city.compounds.geometry.values, blocks.loc[city.compounds["block_id"]].values
    ).all()


def test_blocks_are_a_seamless_coverage_nested_in_communities(city):
    blocks = city.blocks.geometry.values
    assert shapely.coverage_is_valid(blocks)
    assert shapely.coverage_is_valid(city.communities.geometry.values)
    assert shapely.coverage_is_valid(city.subdistricts.geometry.values)
    union_blocks = shapely.union_all(blocks)
    union_com = shapely.union_all(city.communities.geometry.values)
    assert shapely.area(shapely.symmetric_difference(union_blocks, union_com)) < 1e-3
    assert union_blocks.geom_type == "Polygon"
    # The union has no holes: streets are centre lines, blocks tile the city.
    assert len(union_blocks.interiors) == 0
    assert abs(union_blocks.area - shapely.area(blocks).sum()) < 1e-3
    # Each community is one piece and equals the union of its blocks.
    by_code = city.blocks.dissolve("community_code").geometry
    for row in city.communities.itertuples():
        assert row.geometry.geom_type == "Polygon"
        diff = shapely.symmetric_difference(
            row.geometry, by_code.loc[row.community_code]
        )
        assert shapely.area(diff) < 1e-3


def test_adjacent_blocks_share_street_centre_lines(city):
    streets = city.streets[~city.streets["internal"]]
    edges = shapely.union_all(streets.geometry.values)
    boundaries = shapely.union_all(city.blocks.boundary.values)
    assert shapely.length(shapely.symmetric_difference(edges, boundaries)) < 1e-6


def test_codes_are_fixed_width_digits(city):
    assert city.blocks["block_id"].is_unique
    sub = city.subdistricts["subdistrict_code"]
    com = city.communities["community_code"]
    assert sub.str.fullmatch(r"421002\d{3}").all()
    assert com.str.fullmatch(r"421002\d{6}").all()
    assert com.is_unique
    assert (com.str[:9] == city.communities["subdistrict_code"]).all()
    assert city.blocks["community_code"].isin(com).all()
    assert not city.communities["generated"].any()
    assert city.communities["name"].str.endswith("社区").all()


def test_communities_have_about_the_asked_households(city):
    hh = city.communities["households"]
    assert len(hh) == 5
    assert ((hh >= 0.75 * HPC) & (hh <= 1.25 * HPC)).all(), hh.tolist()


def test_block_households_are_lumpy(city):
    hh = city.blocks["households"]
    assert hh.min() >= 20
    assert hh.max() <= 1400
    assert (hh < 200).any()
    assert (hh > 500).any()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_large_compound_with_an_internal_road_splits_its_block(seed):
    small = generate_city(seed=seed, n_communities=3)
    assert (small.compounds["households"] > 500).any()
    internal = small.streets[small.streets["internal"]]
    assert len(internal) >= 1
    assert (internal["highway"] == "service").all()
    blocks = small.blocks.set_index("block_id").geometry
    compounds = small.compounds.set_index("compound_id")
    for road in internal.itertuples():
        block = blocks.loc[compounds.loc[road.compound_id, "block_id"]]
        assert road.geometry.crosses(compounds.loc[road.compound_id].geometry)
        pieces = shapely.get_parts(
            shapely.polygonize(
                shapely.get_parts(
                    shapely.node(
                        shapely.multilinestrings([block.exterior, road.geometry])
                    )
                )
            )
        )
        assert len(pieces) == 2
        assert abs(shapely.area(pieces).sum() - block.area) < 1e-3
        # No building stands on the road.
        on_road = small.buildings[small.buildings.intersects(road.geometry)]
        assert on_road.empty


def test_shops_line_main_streets_and_some_stand_outside_every_block(city):
    shops = city.pois[city.pois["is_shop"]]
    assert shops["name"].str.len().gt(0).all()
    assert shops["category"].isin(["餐饮", "便利店", "药店"]).any()
    main = city.streets[city.streets["highway"].isin(["primary", "secondary"])]
    main_lines = shapely.union_all(main.geometry.values)
    inside = shops[shops["block_id"].notna()]
    assert len(inside) > 20
    blocks = city.blocks.set_index("block_id").geometry
    assert shapely.within(
        inside.geometry.values, blocks.loc[inside["block_id"]].values
    ).all()
    assert (shapely.distance(inside.geometry.values, main_lines) <= 16 + 7 + 1e-6).all()
    assert not shapely.intersects(
        shapely.union_all(city.compounds.geometry.values), inside.geometry.values
    ).any()

    outside = shops[shops["block_id"].isna()]
    assert len(outside) >= 3
    city_area = shapely.union_all(city.blocks.geometry.values)
    assert not shapely.intersects(city_area, outside.geometry.values).any()
    streets = shapely.union_all(city.streets.geometry.values)
    dist = shapely.distance(outside.geometry.values, streets)
    assert ((dist >= 4.9) & (dist <= 15.1)).all(), dist


DOOR = re.compile(r"^.+(路|道|街|巷)(\d+)号$")
UNIT = re.compile(r"^(.+?)(\d+)栋(\d+)单元$")


def test_addresses_have_door_and_building_plates(city):
    a = city.addresses
    assert a["address_id"].is_unique
    assert set(a["kind"]) == {"door", "building"}
    doors = a[a["kind"] == "door"]
    assert doors["address"].str.fullmatch(DOOR.pattern).all()
    assert doors["address"].str.fullmatch(r"^.+路\d+号$").any()
    assert (
        doors["address"] == doors["road"] + doors["number"].astype(str) + "号"
    ).all()
    assert not doors.duplicated(["road", "number"]).any()
    plates = a[a["kind"] == "building"]
    assert plates["address"].str.fullmatch(UNIT.pattern).all()
    assert plates["address"].str.fullmatch(r"^.+小区\d+栋\d+单元$").any()
    parsed = plates["address"].str.extract(UNIT.pattern)
    assert (parsed[0] == plates["compound"]).all()
    assert (parsed[1] == plates["building"]).all()
    assert (parsed[2].astype(int) == plates["unit"].astype(int)).all()
    # Every unit of every building has its plate.
    assert len(plates) == city.buildings["units"].sum()
    assert plates["block_id"].notna().all()
    blocks = city.blocks.set_index("block_id").geometry
    assert shapely.within(
        plates.geometry.values, blocks.loc[plates["block_id"]].values
    ).all()


def test_door_numbers_are_odd_left_even_right_and_increase_along_the_road(city):
    doors = city.addresses[city.addresses["kind"] == "door"]
    streets = city.streets[~city.streets["internal"]]
    checked = 0
    for road, plates in doors.groupby("road"):
        line = shapely.line_merge(
            shapely.union_all(streets.loc[streets["name"] == road].geometry.values)
        )
        assert line.geom_type == "LineString", road
        pts = plates.geometry.values
        s = shapely.line_locate_point(line, pts)
        a = shapely.get_coordinates(shapely.line_interpolate_point(line, s - 1.0))
        b = shapely.get_coordinates(shapely.line_interpolate_point(line, s + 1.0))
        p = shapely.get_coordinates(pts)
        cross = (b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
            p[:, 0] - a[:, 0]
        )
        odd = plates["number"].to_numpy() % 2 == 1
        sides = {bool(x) for x in (cross[odd] > 0)} | {
            not bool(x) for x in (cross[~odd] > 0)
        }
        assert len(sides) == 1, road  # odd all on one side, even all on the other
        for parity in (odd, ~odd):
            nums = plates["number"].to_numpy()[parity][np.argsort(s[parity])]
            assert (np.diff(nums) > 0).all(), road
        checked += 1
    assert checked >= 5


def test_subdistricts_group_about_ten_communities():
    big = generate_city(seed=3, n_communities=21, households_per_community=1200)
    assert len(big.subdistricts) == 2
    assert big.subdistricts["subdistrict_code"].is_unique
    for sub in big.subdistricts.itertuples():
        members = big.communities[
            big.communities["subdistrict_code"] == sub.subdistrict_code
        ]
        assert len(members) >= 5
        union = shapely.union_all(members.geometry.values)
        assert shapely.area(shapely.symmetric_difference(union, sub.geometry)) < 1e-3
    hh = big.communities["households"]
    assert ((hh >= 0.75 * 1200) & (hh <= 1.25 * 1200)).all(), hh.tolist()


def test_output_crs_is_the_asked_one_and_progress_is_reported():
    calls = []
    geo = generate_city(
        seed=1,
        n_communities=2,
        crs="EPSG:4490",
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    assert calls[0] == ("streets", 0, 6)
    assert calls[-1] == ("done", 6, 6)
    assert CRS.from_user_input(geo.crs).equals(CRS.from_epsg(4490))
    geo.validate()
    lon, lat = geo.blocks.union_all().centroid.coords[0]
    assert 111.9 < lon < 112.5
    assert 30.1 < lat < 30.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_communities": 0}, "n_communities"),
        ({"households_per_community": 10}, "households_per_community"),
        ({"seed": -1}, "seed"),
        ({"admin_code": "42100"}, "admin_code"),
        ({"crs": "not a crs"}, "crs"),
    ],
)
def test_bad_arguments_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        generate_city(**kwargs)
