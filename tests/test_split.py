"""Splitting blocks below block level: internal roads, then whole buildings."""

from __future__ import annotations

import numpy as np
import pytest

import shapely

from spatialgrid.split import allocate_households, split_block

BLOCK = shapely.box(0, 0, 300, 100)


def _row_of_buildings(n: int) -> np.ndarray:
    step = 300 / n
    return np.asarray(
        [shapely.box(i * step + 5, 20, (i + 1) * step - 5, 80) for i in range(n)],
        dtype=object,
    )


def _assert_tiles(parts, block):
    union = shapely.union_all(parts)
    assert shapely.symmetric_difference(union, block).area == pytest.approx(0, abs=1e-6)
    assert sum(p.area for p in parts) == pytest.approx(block.area, rel=1e-9)


def test_allocate_households_conserves_total():
    out = allocate_households(650, np.array([1.0, 1.0, 1.0]))
    assert out.sum() == 650
    assert sorted(out.tolist()) == [216, 217, 217]
    assert allocate_households(5, np.array([0.0, 0.0])).sum() == 5


def test_split_by_buildings_never_cuts_a_building():
    buildings = _row_of_buildings(6)
    res = split_block(BLOCK, 650, buildings=buildings, part_households=200)
    assert res.method == "buildings"
    assert res.n_parts >= 2
    assert res.households.sum() == 650
    _assert_tiles(res.parts, BLOCK)
    for b in buildings:
        inside = [shapely.intersection(p, b).area for p in res.parts]
        # each building lies wholly in exactly one part
        assert max(inside) == pytest.approx(b.area)
        assert sorted(inside)[-2] == pytest.approx(0, abs=1e-9)


def test_compound_buildings_stay_together_when_small():
    buildings = _row_of_buildings(4)
    groups = np.array(["C1", "C1", "C1", None], dtype=object)
    weights = np.array([100.0, 100.0, 100.0, 300.0])
    res = split_block(
        BLOCK,
        600,
        buildings=buildings,
        building_weights=weights,
        building_groups=groups,
        part_households=100,
        max_households=500,
    )
    # three compound buildings (300 households) in one part, the tower alone
    assert sorted(res.households.tolist()) == [300, 300]
    # a compound above max is split
    big = split_block(
        BLOCK,
        1200,
        buildings=buildings,
        building_weights=np.array([400.0, 400.0, 400.0, 0.0]),
        building_groups=np.array(["C1", "C1", "C1", None], dtype=object),
        part_households=400,
        max_households=500,
    )
    assert big.n_parts >= 3


def test_split_along_internal_road():
    road = np.asarray([shapely.LineString([(150, -5), (150, 105)])], dtype=object)
    res = split_block(BLOCK, 600, internal_roads=road, part_households=400)
    assert res.method == "internal_roads"
    assert res.n_parts == 2
    assert res.households.tolist() == [300, 300]  # by land area
    _assert_tiles(res.parts, BLOCK)


def test_road_pieces_then_buildings():
    road = np.asarray([shapely.LineString([(150, -5), (150, 105)])], dtype=object)
    res = split_block(
        BLOCK,
        900,
        buildings=_row_of_buildings(6),
        internal_roads=road,
        part_households=200,
    )
    assert res.method == "internal_roads+buildings"
    assert res.households.sum() == 900
    _assert_tiles(res.parts, BLOCK)


def test_no_buildings_no_roads_cannot_split():
    res = split_block(BLOCK, 650)
    assert res.method == "none"
    assert res.n_parts == 1
    assert "no buildings" in res.reason
    assert res.households.tolist() == [650]
