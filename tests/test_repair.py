"""Repairs: sliver merges, territory proposals, street-front shops and micro-grids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid.coverage import find_coverage_issues
from spatialgrid.errors import CodeOverflowError, InputError
from spatialgrid.repair import (
    apply_street_front_shops,
    apply_territory_proposals,
    merge_slivers,
    plan_sliver_merges,
    propose_street_front_shops,
    propose_territory,
)
from spatialgrid.testing import ORIGIN, lattice_plan

X0, Y0 = ORIGIN
FRONTAGE_M = 12.0  # street-front strip between the blocks and the southern street


def _check(plan, grids=None, **kwargs):
    layers = {
        k: plan[k] for k in ("blocks", "buildings", "addresses", "pois", "streets")
    }
    layers.update(kwargs)
    grids = plan["grids"] if grids is None else grids
    return find_coverage_issues(grids, plan["communities"], **layers)


def _replace(grids, code, geometry):
    out = grids.copy()
    out.loc[out["grid_code"] == code, "geometry"] = geometry
    return out


def _shops(xs, y, prefix):
    return [(f"{prefix}{i}", shapely.Point(x, y)) for i, x in enumerate(xs)]


@pytest.fixture
def frontage_plan():
    """Communities reach 12 m south of the blocks, to the southern street's centre
    line; shops stand in that strip, in front of the blocks."""
    plan = lattice_plan()
    comm = plan["communities"].copy()
    comm["geometry"] = [
        shapely.union(
            g, shapely.box(X0 + k * 400, Y0 - FRONTAGE_M, X0 + (k + 1) * 400, Y0)
        )
        for k, g in enumerate(comm.geometry)
    ]
    streets = plan["streets"].copy()
    south = streets["street_id"] == "H0"
    streets.loc[south, "geometry"] = shapely.LineString(
        [(X0, Y0 - FRONTAGE_M), (X0 + 800, Y0 - FRONTAGE_M)]
    )
    small = _shops([X0 + 30, X0 + 60, X0 + 90], Y0 - 6, "S")  # 3 shops, 60 m
    big = _shops(np.arange(X0 + 420, X0 + 760, 30.0), Y0 - 6, "M")  # 12 shops
    across = _shops([X0 + 150], Y0 + 305, "X")  # north of the city's last street
    rows = small + big + across
    extra = gpd.GeoDataFrame(
        {
            "poi_id": [r[0] for r in rows],
            "name": [f"shop {r[0]}" for r in rows],
            "category": "shop",
            "is_shop": True,
            "block_id": None,
        },
        geometry=[r[1] for r in rows],
        crs=plan["pois"].crs,
    )
    plan |= {
        "communities": comm,
        "streets": streets,
        "pois": gpd.GeoDataFrame(
            pd.concat([plan["pois"], extra], ignore_index=True), crs=extra.crs
        ),
    }
    return plan


# ------------------------------------------------------------------- slivers


def test_slivers_merge_into_longest_border_neighbour():
    plan = lattice_plan()
    grids = plan["grids"]
    g05 = shapely.box(X0, Y0 + 1, X0 + 200, Y0 + 100)  # 1 m off street H0
    g03 = shapely.box(X0, Y0 + 100, X0 + 199, Y0 + 200)  # 1 m off street V2
    faulty = _replace(_replace(grids, "42100200100105", g05), "42100200100103", g03)
    before = faulty.copy()
    report = _check(plan, faulty)
    assert sorted(report.gaps["kind"]) == ["sliver", "sliver"]

    merges = plan_sliver_merges(faulty, report)
    by_area = merges.set_index("area_m2")["grid_code"].to_dict()
    assert by_area[200.0] == "42100200100105"  # 200 m border vs a 1 m end
    # 03 and 04 both share 100 m with the V2 sliver: the tie goes to the smaller code.
    assert by_area[100.0] == "42100200100103"
    assert merges.set_index("area_m2").loc[200.0, "shared_border_m"] == pytest.approx(
        200.0, abs=0.2
    )

    repaired = merge_slivers(faulty, report)
    assert repaired is not faulty
    pd.testing.assert_frame_equal(pd.DataFrame(faulty), pd.DataFrame(before))
    assert list(repaired.index) == list(faulty.index)
    assert repaired.crs == faulty.crs
    assert repaired["households"].sum() == faulty["households"].sum()
    assert _check(plan, repaired).clean


def test_merge_slivers_rejects_another_plan():
    plan = lattice_plan()
    report = _check(plan)
    other = plan["grids"].iloc[:-1]
    with pytest.raises(InputError, match="run find_coverage_issues on these grids"):
        merge_slivers(other, report)


# ----------------------------------------------------------- unassigned territory


def _notched(plan):
    """Grid 03 loses a 5 m x 50 m notch on its east side (border 55 m vs 04's 50 m)."""
    g03 = shapely.difference(
        shapely.box(X0, Y0 + 100, X0 + 200, Y0 + 200),
        shapely.box(X0 + 195, Y0 + 100, X0 + 200, Y0 + 150),
    )
    return _replace(plan["grids"], "42100200100103", g03)


def test_territory_goes_to_the_neighbour_that_keeps_the_bounds():
    plan = lattice_plan()
    grids = _notched(plan)
    report = _check(plan, grids, buildings=None)  # households pro-rata from blocks
    gap = report.gaps.iloc[0]
    assert gap["kind"] == "unassigned"
    notch_hh = 250 / 10_000 * 215  # block C1B1_1 has 215 households
    assert gap["households"] == pytest.approx(notch_hh)
    proposals = propose_territory(grids, report)
    row = proposals.iloc[0]
    assert row["status"] == "proposed"
    assert row["grid_code"] == "42100200100103"
    assert row["shared_border_m"] == pytest.approx(55.0, abs=0.2)  # 50 m + 5 m
    assert row["households_before"] == 425
    assert row["households_after"] == pytest.approx(425 + notch_hh)
    assert proposals.crs == grids.crs

    repaired = apply_territory_proposals(grids, proposals)
    assert _check(plan, repaired, buildings=None).clean
    assert repaired.loc[repaired["grid_code"] == "42100200100103", "households"].iloc[
        0
    ] == round(425 + notch_hh)


def test_territory_flagged_when_no_neighbour_keeps_the_bounds():
    plan = lattice_plan()
    grids = _notched(plan)
    report = _check(plan, grids, buildings=None)
    proposals = propose_territory(grids, report, max_households=428)
    row = proposals.iloc[0]
    assert row["status"] == "flagged"
    assert row["grid_code"] is None
    assert "[400, 428]" in row["reason"]
    assert "42100200100103: 425+5.375=430.375" in row["reason"]
    # A removed grid's households cannot go to any 4xx neighbour either.
    code = "42100200100104"
    without = plan["grids"][plan["grids"]["grid_code"] != code]
    flagged = propose_territory(without, _check(plan, without))
    assert flagged["status"].tolist() == ["flagged"]
    with pytest.raises(InputError, match="min_households=500 exceeds"):
        propose_territory(grids, report, min_households=500, max_households=400)


# -------------------------------------------------------------- street-front shops


def test_street_front_shops_are_found_and_proposed(frontage_plan):
    plan = frontage_plan
    report = _check(plan)
    lost = report.uncovered_points
    shops = lost[lost["kind"] == "poi"]
    assert len(shops) == 16
    assert set(shops["feature_id"].str[0]) == {"S", "M", "X"}
    front = shops[shops["feature_id"].str[0].isin(["S", "M"])]
    assert (front["street_id"] == "H0").all()
    assert (front["side"] == "left").all()  # H0 runs west→east: north is left
    assert front["distance_m"].to_numpy() == pytest.approx(6.0)
    assert report.summary["uncovered"]["shops"] == 16
    # The frontage strips are unassigned territory holding those shops.
    assert set(report.gaps["kind"]) == {"unassigned"}
    assert report.gaps["shops"].sum() == 15

    proposals = propose_street_front_shops(plan["grids"], report, plan["streets"])
    groups = proposals.groups.set_index("group_id")
    assert len(groups) == 3
    assert proposals.summary == {
        "uncovered_shops": 16,
        "shops_without_street": 0,
        "groups": 3,
        "assign": 2,
        "micro_grid": 1,
        "flag": 0,
        "shops_assigned": 4,
        "shops_in_micro_grids": 12,
    }
    small = groups[(groups["n_shops"] == 3)].iloc[0]
    assert small["action"] == "assign"
    assert small["grid_code"] == "42100200100105"  # the grid behind the shops
    assert small["households_before"] == small["households_after"] == 465
    assert (small["shops_before"], small["shops_after"]) == (2, 5)
    assert small["length_m"] == pytest.approx(60.0)
    # Its strip runs from the street centre line to the grid, along the shops.
    assert small.geometry.bounds == pytest.approx(
        (X0 + 25, Y0 - FRONTAGE_M, X0 + 95, Y0), abs=0.01
    )

    big = groups[groups["action"] == "micro_grid"].iloc[0]
    assert big["n_shops"] == 12
    assert big["grid_code"] == "42100200100207"  # next free number in 002
    assert big["community_code"] == "421002001002"
    assert big["households_after"] == 0
    micro = proposals.micro_grids
    assert micro["grid_code"].tolist() == ["42100200100207"]
    assert micro["kind"].tolist() == ["street_front"]
    assert micro.geometry.iloc[0].area == pytest.approx((330 + 10) * FRONTAGE_M)

    across = groups[groups["n_shops"] == 1].iloc[0]
    assert across["street_id"] == "H3"
    assert across["action"] == "assign"
    assert across["grid_code"] == "42100200100101"
    assert "across the street" in across["reason"]
    assert set(proposals.shops["group_id"]) == {1, 2, 3}

    repaired = apply_street_front_shops(plan["grids"], proposals)
    assert len(repaired) == len(plan["grids"]) + 1
    after = _check(plan, repaired)
    assert after.summary["uncovered"]["shops"] == 0
    assert after.overlaps.empty
    # Only the shop beyond the city's last street makes its grid cross a boundary.
    assert after.crossings["grid_code"].tolist() == ["42100200100101"]
    new = repaired[repaired["grid_code"] == "42100200100207"].iloc[0]
    assert new["households"] == 0
    assert new["n_blocks"] == 0
    assert repaired["households"].dtype == plan["grids"]["households"].dtype


def test_micro_grid_thresholds_are_configurable(frontage_plan):
    plan = frontage_plan
    report = _check(plan)
    every = propose_street_front_shops(
        plan["grids"], report, plan["streets"], micro_grid_min_shops=1
    )
    assert set(every.groups["action"]) == {"micro_grid"}
    none = propose_street_front_shops(
        plan["grids"],
        report,
        plan["streets"],
        micro_grid_min_shops=100,
        micro_grid_min_length_m=1_000,
    )
    assert set(none.groups["action"]) == {"assign"}
    assert none.groups.loc[none.groups["n_shops"] == 12, "grid_code"].iloc[0] in {
        "42100200100205",
        "42100200100206",
    }
    with pytest.raises(InputError, match="micro_grid_min_shops must be >= 1"):
        propose_street_front_shops(
            plan["grids"], report, plan["streets"], micro_grid_min_shops=0
        )


def test_micro_grid_code_overflow_is_an_error(frontage_plan):
    plan = frontage_plan
    grids = plan["grids"].copy()
    grids.loc[grids["grid_code"] == "42100200100206", "grid_code"] = "42100200100299"
    report = _check(plan, grids)
    with pytest.raises(CodeOverflowError, match="no free 2-digit grid sequence"):
        propose_street_front_shops(grids, report, plan["streets"])


def test_sample_city_shops_outside_every_block():
    sample = pytest.importorskip("spatialgrid.sample")
    city = sample.generate_city(n_communities=3)
    grids = city.blocks[["community_code", "households", "geometry"]].copy()
    grids["grid_code"] = [
        f"{c}{i:02d}" for i, c in enumerate(grids["community_code"], start=1)
    ]
    report = find_coverage_issues(
        grids,
        city.communities,
        buildings=city.buildings,
        pois=city.pois,
        addresses=city.addresses,
        streets=city.streets,
    )
    shops = report.uncovered_points[
        (report.uncovered_points["kind"] == "poi") & report.uncovered_points["is_shop"]
    ]
    assert len(shops) >= 1
    assert shops["street_id"].notna().all()
    proposals = propose_street_front_shops(grids, report, city.streets)
    assert proposals.shops["group_id"].notna().all()
    assert set(proposals.groups["action"]) <= {"assign", "micro_grid"}
    repaired = apply_street_front_shops(grids, proposals)
    after = find_coverage_issues(
        repaired, city.communities, pois=city.pois, streets=city.streets
    )
    assert after.summary["uncovered"]["shops"] == 0
    assert after.overlaps.empty


@pytest.mark.slow
def test_nanjing_shops_outside_blocks_cut_from_main_streets(nanjing_osm):
    """Real data: blocks cut from main streets only, drawn at the building line (road
    space of 20 m / 15 m either side of trunk-primary / secondary centre lines left
    out), as plans from other systems often are. Every POI outside every block is
    listed, and each street-front shop gets a proposal."""
    from spatialgrid.blocks import build_blocks
    from spatialgrid.osm import read_osm

    data = read_osm(nanjing_osm)
    main = ("trunk", "primary", "secondary", "trunk_link", "primary_link",
            "secondary_link")  # fmt: skip
    faces = build_blocks(data.highways, highway_classes=main).blocks
    wcrs = "EPSG:4549"  # CGCS2000 GK CM 120E
    roads = data.highways[data.highways["highway"].isin(main)].to_crs(wcrs)
    half = [
        20.0 if h.startswith(("trunk", "primary")) else 15.0 for h in roads["highway"]
    ]
    road_space = shapely.union_all(shapely.buffer(roads.geometry.values, half))
    grids = faces.to_crs(wcrs)
    grids["geometry"] = shapely.difference(grids.geometry.values, road_space)
    grids = grids[~grids.is_empty].to_crs(faces.crs).reset_index(drop=True)
    grids["community_code"] = "320102001001"
    grids["grid_code"] = [f"32010200100{i:03d}" for i in range(1, len(grids) + 1)]
    community = gpd.GeoDataFrame(
        {"community_code": ["320102001001"]},
        geometry=[shapely.union_all(faces.geometry.values)],
        crs=faces.crs,
    )
    report = find_coverage_issues(
        grids,
        community,
        pois=data.pois,
        addresses=data.addresses,
        streets=data.highways,
    )
    assert report.crs == "EPSG:4490"
    # Exactly the POIs no block touches, one row each.
    outside = ~data.pois.intersects(shapely.union_all(grids.geometry.values))
    expected = set(data.pois.loc[outside, "osm_id"])
    listed = report.uncovered_points[report.uncovered_points["kind"] == "poi"]
    assert set(listed["feature_id"]) == expected
    assert len(listed) == len(expected) >= 3
    shops = listed[listed["is_shop"]]
    assert len(shops) >= 2
    assert shops["street_name"].notna().all()
    proposals = propose_street_front_shops(grids, report, data.highways)
    assert proposals.summary["uncovered_shops"] == len(shops)
    assert proposals.shops["group_id"].notna().all()
    assert (proposals.groups["action"] != "flag").all()
    assert (
        proposals.groups["grid_code"].isin(grids["grid_code"]).all()
        or (proposals.groups["action"] == "micro_grid").any()
    )
    repaired = apply_street_front_shops(grids, proposals)
    after = find_coverage_issues(repaired, community, pois=data.pois)
    assert after.summary["uncovered"]["shops"] == 0
    assert after.overlaps.empty
