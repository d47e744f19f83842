"""Feasibility checks with reasons: k band, units above max, islands, choke points."""

from __future__ import annotations

import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid import testing
from spatialgrid.feasibility import (
    assess_units,
    check_feasibility,
    has_valid_k,
    k_range,
)


def test_k_band_matches_domain():
    assert k_range(3000) == (6, 7)
    assert k_range(700) == (2, 1)
    no_k = [h for h in range(1, 2000) if not has_valid_k(h)]
    expected = [
        *range(1, 400),
        *range(501, 800),
        *range(1001, 1200),
        *range(1501, 1600),
    ]
    assert no_k == expected


def test_no_valid_k_reason():
    res = assess_units([350, 350], [[1], [0]], labels=["A", "B"])
    assert not res.feasible
    assert "no valid number of grids" in res.reasons[0]
    assert "700" in res.reasons[0]


def test_unit_above_max_splittable_or_not():
    nb = [[1], [0, 2], [1]]
    hard = assess_units([650, 200, 250], nb, labels=["A", "B", "C"])
    assert any("A has 650" in r and "cannot be split" in r for r in hard.reasons)
    assert hard.oversize == (0,)
    soft = assess_units(
        [650, 200, 250], nb, labels=["A", "B", "C"], splittable=[True, False, False]
    )
    assert not any("cannot be split" in r for r in soft.reasons)
    assert any("split below block level" in n for n in soft.notes)


def test_island_below_min():
    # 0-1-2 connected (1200), 3 alone with 120
    res = assess_units(
        [400, 400, 400, 120], [[1], [0, 2], [1], []], labels=["A", "B", "C", "D"]
    )
    assert len(res.components) == 2
    assert any("island" in r and "120 households" in r for r in res.reasons)


def test_choke_point_that_cannot_fit():
    # D (300) hangs off C (300): they must share a grid of 600 > 500
    nb = [[1], [0, 2], [1, 3], [2]]
    res = assess_units([450, 450, 300, 300], nb, labels=["A", "B", "C", "D"])
    assert res.choke_points == (2,)
    assert any("choke point: C" in r and "600 > 500" in r for r in res.reasons)


def test_choke_point_that_fits_is_a_note():
    nb = [[1], [0, 2], [1, 3], [2]]
    res = assess_units([450, 450, 300, 150], nb, labels=["A", "B", "C", "D"])
    assert res.feasible
    assert any("choke point: C" in n for n in res.notes)


def test_check_feasibility_on_blocks():
    blocks = testing.box_lattice(4, 1, households=[650, 150, 250, 150])
    plain = check_feasibility(blocks)
    assert plain.loc[0, "feasible"] == False  # noqa: E712 - numpy bool
    assert plain.loc[0, "oversize_units"] == ["B0_0"]
    # two buildings in the big block make it splittable
    x0, y0 = testing.ORIGIN
    buildings = gpd.GeoDataFrame(
        {"building_id": ["b1", "b2"]},
        geometry=[
            shapely.box(x0 + 10, y0 + 10, x0 + 40, y0 + 90),
            shapely.box(x0 + 60, y0 + 10, x0 + 90, y0 + 90),
        ],
        crs=blocks.crs,
    )
    split = check_feasibility(blocks, buildings=buildings)
    assert bool(split.loc[0, "feasible"])
    assert "split below block level" in split.loc[0, "notes"]


def test_check_feasibility_islands_and_compounds():
    blocks = testing.box_lattice(3, 2, households=200)
    x0, y0 = testing.ORIGIN
    island = gpd.GeoDataFrame(
        {
            "block_id": ["ISL"],
            "community_code": ["421002001001"],
            "households": [120],
            "households_source": ["planner"],
        },
        geometry=[shapely.box(x0 + 1000, y0, x0 + 1100, y0 + 100)],
        crs=blocks.crs,
    )
    both = pd.concat([blocks, island], ignore_index=True)
    res = check_feasibility(both)
    assert res.loc[0, "islands"] == 1
    assert res.loc[0, "island_households"] == [120]
    assert "island" in res.loc[0, "reasons"]


@pytest.mark.parametrize("bad_col", ["households", "community_code"])
def test_check_feasibility_missing_column(bad_col):
    blocks = testing.box_lattice(2, 1).drop(columns=bad_col)
    with pytest.raises(KeyError, match=bad_col):
        check_feasibility(blocks)


def test_hemmed_in_unit_is_a_reason():
    # D (288) touches only B (300) and C (324): any grid holding D holds > 500.
    nb = [[1, 2], [0, 3], [0, 3], [1, 2]]
    res = assess_units([250, 300, 324, 288], nb, labels=["A", "B", "C", "D"])
    assert not res.feasible
    assert any(r.startswith("hemmed in: D (288 households") for r in res.reasons)
    assert any("588 > 500" in r for r in res.reasons)
    # a neighbour small enough to share a grid with: no such reason
    ok = assess_units([150, 300, 200, 288], nb, labels=["A", "B", "C", "D"])
    assert not any(r.startswith("hemmed in") for r in ok.reasons)
    # a splittable neighbour could give D a share: not a proof
    soft = assess_units(
        [250, 300, 324, 288], nb, labels=list("ABCD"), splittable=[0, 1, 0, 0]
    )
    assert not any(r.startswith("hemmed in: D") for r in soft.reasons)
