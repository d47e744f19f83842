"""Grid codes: fixed width, west→east / north→south order, overflow is an error."""

from __future__ import annotations

import numpy as np
import pytest

import shapely

from spatialgrid.codes import (
    assign_grid_codes,
    grid_codes,
    sequence_digits,
    spatial_order,
)
from spatialgrid.errors import CodeOverflowError, InputError

COMMUNITY = "421002001001"


def _boxes(cells: list[tuple[int, int]]) -> list[shapely.Geometry]:
    """Unit boxes at (col, row) with row 0 in the north."""
    return [shapely.box(c * 10, -r * 10, c * 10 + 10, -r * 10 + 10) for c, r in cells]


def test_order_runs_west_to_east_then_north_to_south():
    # positions given scrambled: SE, NW, SW, NE
    geoms = _boxes([(1, 1), (0, 0), (0, 1), (1, 0)])
    order = spatial_order(geoms)
    assert order.tolist() == [1, 3, 2, 0]


def test_row_bands_absorb_wobble():
    # the eastern box sits 3 m lower but belongs to the same row
    geoms = [shapely.box(0, 0, 10, 10), shapely.box(10, -3, 20, 7)]
    geoms.append(shapely.box(0, -20, 10, -10))
    assert spatial_order(geoms).tolist() == [0, 1, 2]


def test_codes_cjt213_and_db11_widths():
    assert grid_codes(COMMUNITY, 3) == [f"{COMMUNITY}0{i}" for i in (1, 2, 3)]
    db11 = grid_codes(COMMUNITY, 2, code_scheme="db11")
    assert db11 == [f"{COMMUNITY}001", f"{COMMUNITY}002"]
    assert all(len(c) == 15 and c.isdigit() for c in db11)
    assert sequence_digits("cjt213") == 2


def test_assign_codes_aligned_with_input():
    geoms = _boxes([(1, 0), (0, 0)])
    assert assign_grid_codes(COMMUNITY, geoms) == [f"{COMMUNITY}02", f"{COMMUNITY}01"]


def test_overflow_is_an_error():
    with pytest.raises(CodeOverflowError, match="at most 99"):
        grid_codes(COMMUNITY, 100)
    assert len(grid_codes(COMMUNITY, 100, code_scheme="db11")) == 100
    with pytest.raises(CodeOverflowError, match="at most 999"):
        grid_codes(COMMUNITY, 1000, code_scheme="db11")


@pytest.mark.parametrize("bad", ["42100200100", "42100200100X", "4210020010011"])
def test_community_code_must_be_12_digits(bad):
    with pytest.raises(InputError, match="not 12 digits"):
        grid_codes(bad, 1)


def test_unknown_scheme():
    with pytest.raises(InputError, match="code_scheme='gb'"):
        grid_codes(COMMUNITY, 1, code_scheme="gb")


def test_order_of_empty_input():
    assert spatial_order(np.array([], dtype=object)).tolist() == []
