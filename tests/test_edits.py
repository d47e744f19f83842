"""Planner edits (move, merge, split) and the plan validator."""

from __future__ import annotations

import pandas as pd
import pytest

from spatialgrid.edits import VIOLATION_COLUMNS, apply_edits, validate_plan
from spatialgrid.errors import InputError
from tests.test_rebalance import COMM, square_plan


def _kinds(violations: pd.DataFrame) -> list[str]:
    return violations["kind"].tolist()


def test_valid_plan_has_no_violations():
    blocks, grids, assign = square_plan()
    v = validate_plan(blocks, grids, assign)
    assert list(v.columns) == list(VIOLATION_COLUMNS)
    assert v.empty


def test_move_block_reports_bounds_with_grids_and_blocks():
    blocks, grids, assign = square_plan()
    res = apply_edits(
        blocks, grids, assign, [{"op": "move", "blocks": ["B0_1"], "to": f"{COMM}02"}]
    )
    hh = res.grids.set_index("grid_code")["households"]
    assert hh[f"{COMM}01"] == 300
    assert hh[f"{COMM}02"] == 500
    v = res.violations
    assert _kinds(v) == ["below_min"]
    assert v.loc[0, "grid_codes"] == f"{COMM}01"
    assert set(v.loc[0, "block_ids"].split(",")) == {"B0_0", "B1_0", "B1_1"}
    assert res.summary["households_moved"] == 100
    assert res.summary["grids_touched"] == [f"{COMM}01", f"{COMM}02"]
    # Untouched grids keep their geometry objects byte for byte.
    before = grids.set_index("grid_code").geometry
    after = res.grids.set_index("grid_code").geometry
    assert after[f"{COMM}03"].wkb == before[f"{COMM}03"].wkb


def test_move_that_breaks_contiguity_is_reported():
    blocks, grids, assign = square_plan()
    # B1_2 (grid 02, south-west of it) joins grid 01 ... then B0_0 leaves for 04:
    res = apply_edits(
        blocks,
        grids,
        assign,
        [
            {"op": "move", "blocks": ["B0_1", "B1_0"], "to": f"{COMM}04"},
        ],
    )
    kinds = _kinds(res.violations)
    assert "not_contiguous" in kinds
    row = res.violations[res.violations["kind"] == "not_contiguous"].iloc[0]
    assert row["grid_codes"] in {f"{COMM}01", f"{COMM}04"}


def test_merge_and_split():
    blocks, grids, assign = square_plan()
    res = apply_edits(
        blocks, grids, assign, [{"op": "merge", "grids": [f"{COMM}01", f"{COMM}02"]}]
    )
    assert res.summary["codes_retired"] == [f"{COMM}02"]
    assert (res.grids["grid_code"] == f"{COMM}01").sum() == 1
    assert _kinds(res.violations) == ["above_max"]  # 800 households

    split = apply_edits(
        blocks,
        res.grids,
        res.assignments,
        [{"op": "split", "grid": f"{COMM}01"}],
        used_codes=[f"{COMM}02"],
    )
    assert split.summary["codes_created"] == [f"{COMM}07"]  # 02 is never reused
    hh = split.grids.set_index("grid_code")["households"]
    assert hh[f"{COMM}01"] == 400
    assert hh[f"{COMM}07"] == 400
    assert split.violations.empty


def test_split_with_explicit_blocks_and_gap_overlap_detection():
    blocks, grids, assign = square_plan()
    res = apply_edits(
        blocks,
        grids,
        assign,
        [{"op": "split", "grid": f"{COMM}01", "blocks": ["B0_0"]}],
    )
    assert _kinds(res.violations) == ["below_min", "below_min"]
    # A gap (unassigned block) and an overlap (block in two grids whole).
    broken = pd.concat(
        [
            assign[assign["block_id"] != "B3_5"],
            assign[assign["block_id"] == "B0_0"].assign(grid_code=f"{COMM}02"),
        ],
        ignore_index=True,
    )
    v = validate_plan(blocks, grids, broken)
    assert {"gap", "overlap"} <= set(v["kind"])
    gap = v[v["kind"] == "gap"].iloc[0]
    assert gap["block_ids"] == "B3_5"
    assert gap["households"] == 100


def test_invalid_grid_polygon_is_reported_not_raised():
    """A self-intersecting grid polygon (a bow tie drawn by hand) is a
    violation with GEOS's reason; the overlap check still runs."""
    import shapely

    blocks, grids, assign = square_plan()
    grids = grids.copy()
    g = f"{COMM}01"
    x0, y0, x1, y1 = grids.loc[grids["grid_code"] == g].geometry.iloc[0].bounds
    bow = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])
    grids.loc[grids["grid_code"] == g, "geometry"] = bow
    v = validate_plan(blocks, grids, assign)
    bad = v[v["kind"] == "invalid_geometry"]
    assert bad["grid_codes"].tolist() == [g]
    assert "Self-intersection" in bad.iloc[0]["detail"]
    assert (v["kind"] != "invalid_geometry").sum() == len(
        validate_plan(
            blocks, grids.assign(geometry=grids.geometry.make_valid()), assign
        )
    )


def test_nesting_violation():
    blocks, grids, assign = square_plan()
    blocks = blocks.copy()
    blocks.loc[blocks["block_id"] == "B0_0", "community_code"] = "421002001002"
    v = validate_plan(blocks, grids, assign)
    assert "nesting" in set(v["kind"])
    assert v[v["kind"] == "nesting"].iloc[0]["block_ids"] == "B0_0"


def test_edit_errors():
    blocks, grids, assign = square_plan()
    with pytest.raises(InputError, match="op must be one of"):
        apply_edits(blocks, grids, assign, [{"op": "teleport"}])
    with pytest.raises(InputError, match="is locked"):
        apply_edits(
            blocks,
            grids,
            assign,
            [{"op": "move", "blocks": ["B0_1"], "to": f"{COMM}02"}],
            locked=[f"{COMM}02"],
        )
    with pytest.raises(InputError, match="not assigned"):
        apply_edits(
            blocks, grids, assign, [{"op": "move", "blocks": ["X"], "to": "new"}]
        )
    with pytest.raises(InputError, match="not in the plan"):
        apply_edits(blocks, grids, assign, [{"op": "merge", "grids": ["1", "2"]}])


def test_merged_away_grid_cannot_be_edited_further():
    blocks, grids, assign = square_plan()
    with pytest.raises(InputError, match="not in the plan"):
        apply_edits(
            blocks,
            grids,
            assign,
            [
                {
                    "op": "merge",
                    "grids": [f"{COMM}01", f"{COMM}02"],
                    "into": f"{COMM}01",
                },
                {"op": "split", "grid": f"{COMM}02"},
            ],
        )
