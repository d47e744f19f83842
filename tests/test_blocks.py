"""Street blocks, households from buildings and generated communities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid import testing
from spatialgrid.adjacency import connected_components, shared_edges
from spatialgrid.blocks import assign_blocks, build_blocks, reading_order
from spatialgrid.buildings import estimate_households
from spatialgrid.communities import build_communities, group_blocks, sequence_codes
from spatialgrid.errors import CodeOverflowError, EmptyInputError, InputError
from spatialgrid.osm import read_osm

CRS = testing.PROJECTED_CRS
X0, Y0 = testing.ORIGIN


def _streets(lines: list[tuple[list[tuple[float, float]], str]]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "osm_id": [f"w{i}" for i in range(len(lines))],
            "highway": [h for _, h in lines],
            "name": None,
        },
        geometry=[
            shapely.LineString([(X0 + x, Y0 + y) for x, y in pts]) for pts, _ in lines
        ],
        crs=CRS,
    )


def _grid_streets(extra=()) -> gpd.GeoDataFrame:
    """Streets on x = 0, 200, 400 and y = 0, 200 (2 x 1 blocks of 200 m)."""
    lines = [([(x, 0), (x, 200)], "residential") for x in (0, 200, 400)]
    lines += [([(0, y), (400, y)], "primary") for y in (0, 200)]
    return _streets(lines + list(extra))


def _assert_coverage(blocks: gpd.GeoDataFrame) -> None:
    geoms = blocks.geometry.values
    assert shapely.coverage_is_valid(geoms)
    assert shapely.is_empty(shapely.coverage_invalid_edges(geoms)).all()
    # no overlaps: pairwise intersections have zero area
    total = shapely.area(shapely.union_all(geoms))
    assert shapely.area(geoms).sum() == pytest.approx(total, rel=1e-9)


def test_grid_of_streets_gives_blocks_sharing_edges():
    built = build_blocks(_grid_streets())
    blocks = built.blocks
    assert list(blocks["block_id"]) == ["B0001", "B0002"]  # west → east
    assert blocks.crs == CRS
    assert blocks["area_m2"].to_numpy() == pytest.approx([40000, 40000])
    _assert_coverage(blocks)
    edges = shared_edges(blocks)
    assert len(edges) == 1
    assert edges["length_m"].iloc[0] == pytest.approx(200, abs=0.05)
    assert built.dropped.empty


def test_internal_lines_do_not_cut_and_are_flagged():
    extra = [
        ([(50, 50), (150, 150)], "footway"),
        (
            [(300, 0), (300, 200)],
            "service",
        ),  # crosses a block but is not a cutting class
        ([(250, 200), (250, 120)], "residential"),  # dead end: a dangle
    ]
    built = build_blocks(_grid_streets(extra))
    assert len(built.blocks) == 2
    streets = built.streets.set_index("osm_id")
    assert streets.loc["w5", "internal"]
    assert streets.loc["w5", "block_id"] == "B0001"
    assert streets.loc["w6", "internal"]
    assert streets.loc["w6", "block_id"] == "B0002"
    assert streets.loc["w7", "internal"]  # dangling residential
    assert not streets.loc["w0", "internal"]
    assert not streets.loc["w3", "internal"]
    # a wider class set lets the service road cut
    wider = build_blocks(
        _grid_streets(extra), highway_classes=("residential", "primary", "service")
    )
    assert len(wider.blocks) == 3


@pytest.mark.parametrize("action", ["drop", "merge"])
def test_dual_carriageway_sliver(action):
    extra = [([(0, 206), (400, 206)], "primary"), ([(0, 206), (0, 200)], "primary")]
    extra += [([(x, 200), (x, 206)], "residential") for x in (200, 400)]
    built = build_blocks(_grid_streets(extra), sliver_action=action)
    assert len(built.blocks) == 2
    assert len(built.dropped) == 2
    assert (built.dropped["width_m"] < 15).all()
    assert built.dropped["reason"].str.contains("width").all()
    _assert_coverage(built.blocks)
    if action == "merge":
        assert set(built.dropped["merged_into"]) == {"B0001", "B0002"}
        assert built.blocks["area_m2"].sum() == pytest.approx(400 * 206)
    else:
        assert built.dropped["merged_into"].isna().all()
        assert built.blocks["area_m2"].sum() == pytest.approx(400 * 200)


def test_boundary_closes_edge_blocks():
    # Streets alone form no face; the boundary closes two.
    streets = _streets([([(100, -50), (100, 250)], "primary")])
    built = build_blocks(streets, boundary=shapely.box(X0, Y0, X0 + 200, Y0 + 200))
    assert len(built.blocks) == 2
    assert built.blocks["area_m2"].sum() == pytest.approx(40000)


def test_errors():
    with pytest.raises(EmptyInputError, match="highway_classes"):
        build_blocks(_grid_streets(), highway_classes=("motorway",))
    with pytest.raises(InputError, match="sliver_action"):
        build_blocks(_grid_streets(), sliver_action="keep")
    with pytest.raises(EmptyInputError, match="slivers"):
        build_blocks(_grid_streets(), min_block_area_m2=1e9)


def test_reading_order_rows_then_columns():
    pts = [shapely.Point(x, y) for y in (200, 100, 0) for x in (0, 100, 200)]
    shuffled = [pts[i] for i in (4, 8, 0, 2, 6, 1, 5, 3, 7)]
    order = reading_order(shuffled)
    assert [shuffled[i] for i in order] == pts


def test_assign_blocks_point_then_snap():
    blocks = testing.box_lattice(2, 1)
    features = gpd.GeoDataFrame(
        geometry=[
            shapely.box(X0 + 90, Y0 + 10, X0 + 130, Y0 + 20),  # crosses; rep point east
            shapely.Point(X0 + 50, Y0 - 10),  # 10 m outside: snapped
            shapely.Point(X0 + 50, Y0 - 500),  # far: unassigned
        ],
        crs=CRS,
    )
    ids, counts = assign_blocks(features, blocks, max_distance_m=30)
    assert ids[0] == "B0_1"
    assert ids[1] == "B0_0"
    assert ids[2] is None
    assert counts == {"inside": 1, "snapped": 1, "outside": 1}


def _buildings(rows):
    return gpd.GeoDataFrame(
        pd.DataFrame(
            rows, columns=["building", "levels", "flats", "has_poi_tags", "w"]
        ),
        geometry=[
            shapely.box(X0 + i * 100, Y0, X0 + i * 100 + r[4], Y0 + 10)
            for i, r in enumerate(rows)
        ],
        crs=CRS,
    )


def test_estimate_households_rules():
    b = _buildings(
        [
            ("residential", 10.0, np.nan, False, 90.0),  # 900 m² x 10 / 90 = 100
            ("apartments", np.nan, 42.0, False, 90.0),  # tag wins
            ("yes", np.nan, np.nan, False, 90.0),  # 900 x 6 / 90 = 60
            ("yes", np.nan, np.nan, True, 90.0),  # shop tags: 0
            ("yes", np.nan, np.nan, False, 3.0),  # 30 m² kiosk: 0
            ("office", 20.0, np.nan, False, 90.0),  # non-residential: 0
        ]
    )
    out, rep = estimate_households(b, default_levels=6, dwelling_size_m2=90)
    assert list(out["households"]) == [100, 42, 60, 0, 0, 0]
    assert list(out["households_source"]) == [
        "estimated",
        "flats_tag",
        "estimated",
        "none",
        "none",
        "none",
    ]
    assert rep["households"] == 202
    assert rep["by_source"]["estimated"] == {"buildings": 2, "households": 160}
    assert rep["levels_defaulted"] == 1
    assert rep["defaults"]["dwelling_size_m2"] == 90
    assert "non-residential building=office" in rep["by_reason"]
    # yes inside commercial landuse is not a home
    landuse = gpd.GeoDataFrame(
        {"kind": ["landuse=commercial"]},
        geometry=[shapely.box(X0 + 190, Y0 - 5, X0 + 300, Y0 + 20)],
        crs=CRS,
    )
    out2, _ = estimate_households(b, landuse=landuse)
    assert out2["households"].iloc[2] == 0
    with pytest.raises(InputError, match="dwelling_size_m2"):
        estimate_households(b, dwelling_size_m2=0)


def test_group_blocks_contiguous_near_target():
    blocks = testing.box_lattice(6, 4, households=250)  # 24 x 250 = 6000
    labels = group_blocks(blocks, target_households=1500)
    sizes = pd.Series(blocks["households"].to_numpy()).groupby(labels).sum()
    assert sizes.sum() == 6000
    assert len(sizes) == 4
    assert ((sizes >= 750) & (sizes <= 2250)).all()
    edges = shared_edges(blocks)
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        sub = edges[edges["i"].isin(idx) & edges["j"].isin(idx)].copy()
        remap = {v: k for k, v in enumerate(idx)}
        sub["i"], sub["j"] = sub["i"].map(remap), sub["j"].map(remap)
        assert len(set(connected_components(len(idx), sub))) == 1
    # deterministic
    assert list(group_blocks(blocks, target_households=1500)) == list(labels)


def test_build_communities_codes_and_nesting():
    blocks = testing.box_lattice(6, 4, households=250).drop(columns="community_code")
    built = build_communities(
        blocks, admin_code="420102", subdistrict_code="005", target_households=1500
    )
    comm = built.communities
    assert comm["community_code"].str.fullmatch(r"420102005\d{3}").all()
    assert list(comm["community_code"]) == [f"420102005{i:03d}" for i in range(1, 5)]
    assert comm["generated"].all()
    assert built.blocks["community_code"].notna().all()
    assert comm["households"].sum() == 6000
    assert (shapely.get_num_geometries(comm.geometry.values) == 1).all()
    # code 001 is the north-west community
    nw = built.blocks.set_index("block_id").loc["B0_0", "community_code"]
    assert nw == "420102005001"
    assert built.subdistricts["subdistrict_code"].tolist() == ["420102005"]
    with pytest.raises(InputError, match="admin_code"):
        build_communities(blocks, admin_code="4201")


def test_build_communities_from_planner_polygons():
    blocks = testing.box_lattice(4, 2, households=100).drop(columns="community_code")
    west = shapely.box(X0 - 1, Y0 - 1, X0 + 200, Y0 + 201)
    east = shapely.box(X0 + 200, Y0 - 1, X0 + 401, Y0 + 201)
    planner = gpd.GeoDataFrame(
        {"name": ["West", "East"]}, geometry=[west, east], crs=CRS
    ).to_crs(4490)
    built = build_communities(blocks, communities=planner, admin_code="320102")
    codes = built.blocks.set_index("block_id")["community_code"]
    assert codes["B0_0"] == codes["B1_1"] == "320102001001"
    assert codes["B0_2"] == codes["B1_3"] == "320102001002"
    assert not built.communities["generated"].any()
    assert sorted(built.communities["name"]) == ["East", "West"]


def test_sequence_codes_overflow_and_exclude():
    assert sequence_codes("123456001", 2, exclude=["123456001001"]) == [
        "123456001002",
        "123456001003",
    ]
    with pytest.raises(CodeOverflowError, match="3-digit"):
        sequence_codes("123456001", 1000)


def test_nanjing_blocks_form_a_valid_coverage(nanjing_osm):
    data = read_osm(nanjing_osm)
    built = build_blocks(data.highways)
    blocks = built.blocks
    assert 85 <= len(blocks) <= 100  # ~92 faces of residential-and-above streets
    assert blocks.crs.to_epsg() == 4490
    proj = blocks.to_crs("EPSG:4549")
    assert shapely.coverage_is_valid(proj.geometry.values)
    assert shapely.coverage_is_valid(proj.geometry.values, gap_width=1.0)
    assert shapely.is_empty(shapely.coverage_invalid_edges(proj.geometry.values)).all()
    assert shapely.is_valid(proj.geometry.values).all()
    # seamless: every block shares an edge with a neighbour; the graph is connected
    edges = shared_edges(proj)
    assert len(set(connected_components(len(proj), edges))) == 1
    # what is not covered is only the reported slivers (road space)
    hull = shapely.union_all(proj.geometry.values)
    assert shapely.get_num_interior_rings(hull) <= len(built.dropped)
    assert len(built.dropped) >= 1
    assert ((built.dropped["area_m2"] < 1500) | (built.dropped["width_m"] < 15)).all()
    assert built.streets["internal"].sum() > 100
