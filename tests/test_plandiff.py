"""Plan differences: grids added/removed/changed, households and blocks moved."""

from __future__ import annotations

import pandas as pd
import pytest

from spatialgrid.edits import apply_edits
from spatialgrid.errors import MissingColumnError
from spatialgrid.plandiff import diff_block_ids, diff_plans, match_grid_codes
from spatialgrid.rebalance import apply_household_changes, rebalance_plan
from tests.test_rebalance import COMM, square_plan


def test_identical_plans_have_no_difference():
    _blocks, grids, assign = square_plan()
    d = diff_plans(grids, assign, grids, assign)
    assert d.summary["households_moved"] == 0
    assert d.summary["grids_unchanged"] == 6
    assert d.moves.empty
    assert set(d.layer["status"]) == {"unchanged"}


def test_edit_diff_counts_moves_codes_and_layer():
    blocks, grids, assign = square_plan()
    res = apply_edits(
        blocks,
        grids,
        assign,
        [
            {"op": "move", "blocks": ["B0_1"], "to": f"{COMM}02"},
            {"op": "merge", "grids": [f"{COMM}05", f"{COMM}06"], "into": f"{COMM}05"},
            {"op": "split", "grid": f"{COMM}03", "blocks": ["B0_5", "B1_5"]},
        ],
    )
    d = diff_plans(grids, assign, res.grids, res.assignments, blocks=blocks)
    s = d.summary
    assert s["codes_retired"] == [f"{COMM}06"]
    assert s["codes_created"] == [f"{COMM}07"]
    assert s["grids_added"] == 1
    assert s["grids_removed"] == 1
    # B0_1 (100) + grid 06's four blocks (400) + the two split-off blocks (200).
    assert s["households_moved"] == 700
    assert s["blocks_moved"] == 7
    g = d.grids.set_index("grid_code")
    assert g.loc[f"{COMM}01", "status"] == "changed"
    assert g.loc[f"{COMM}01", "households_out"] == 100
    assert g.loc[f"{COMM}02", "blocks_in"] == "B0_1"
    assert g.loc[f"{COMM}04", "status"] == "unchanged"
    moved = d.layer[d.layer["kind"] == "moved_block"]
    assert set(moved["block_id"]) >= {"B0_1", "B0_5", "B1_5"}
    assert d.layer.crs == grids.crs
    row = d.moves[d.moves["block_id"] == "B0_1"].iloc[0]
    assert (row["from_grid"], row["to_grid"], row["households"]) == (
        f"{COMM}01",
        f"{COMM}02",
        100,
    )


def test_diff_of_a_rebalance_matches_its_summary():
    blocks, grids, assign = square_plan()
    changed = apply_household_changes(blocks, {"B0_0": 160})
    res = rebalance_plan(changed, grids, assign)
    d = diff_plans(grids, assign, res.grids, res.assignments)
    assert d.summary["households_moved"] == res.summary["households_moved"]
    assert set(d.grids.loc[d.grids["status"] != "unchanged", "grid_code"]) == set(
        res.summary["grids_touched"]
    )


def test_match_grid_codes_relabels_an_independent_plan():
    _blocks, grids, assign = square_plan()
    # Same grids, codes shuffled (as a fresh partition would number them).
    shuffle = {f"{COMM}0{i}": f"{COMM}0{7 - i}" for i in range(1, 7)}
    other = assign.assign(grid_code=assign["grid_code"].map(shuffle))
    mapping = match_grid_codes(assign, other)
    assert all(mapping[shuffle[c]] == c for c in shuffle)
    relabelled = other.assign(grid_code=other["grid_code"].map(mapping))
    other_grids = grids.assign(grid_code=grids["grid_code"].map(shuffle))
    other_grids["grid_code"] = other_grids["grid_code"].map(mapping)
    d = diff_plans(grids, assign, other_grids, relabelled)
    assert d.summary["households_moved"] == 0


def test_missing_columns():
    _blocks, grids, assign = square_plan()
    with pytest.raises(MissingColumnError, match="grid_code"):
        diff_plans(grids, assign.drop(columns=["grid_code"]), grids, assign)
    with pytest.raises(MissingColumnError, match="block_id"):
        diff_plans(grids, assign, grids, pd.DataFrame({"grid_code": []}))


def test_buildings_see_a_split_block_cut_along_another_line():
    """Same 50/50 shares, sides swapped: the shares say nothing moved, the
    buildings say all 100 households changed grid."""
    import geopandas as gpd
    import shapely

    crs = "EPSG:4546"
    west, east = shapely.box(0, 0, 50, 100), shapely.box(50, 0, 100, 100)
    a, b = f"{COMM}01", f"{COMM}02"
    assign = pd.DataFrame(
        {
            "block_id": ["B", "B"],
            "grid_code": [a, b],
            "households": [50, 50],
            "part_id": ["B/1", "B/2"],
        }
    )
    old = gpd.GeoDataFrame({"grid_code": [a, b]}, geometry=[west, east], crs=crs)
    new = gpd.GeoDataFrame({"grid_code": [a, b]}, geometry=[east, west], crs=crs)
    buildings = gpd.GeoDataFrame(
        {"block_id": ["B"] * 4, "households": [25, 25, 30, 20]},
        geometry=[
            shapely.box(10, 10, 20, 20),
            shapely.box(10, 60, 20, 70),
            shapely.box(70, 10, 80, 20),
            shapely.box(70, 60, 80, 70),
        ],
        crs=crs,
    )
    assert diff_plans(old, assign, new, assign).summary["households_moved"] == 0
    d = diff_plans(old, assign, new, assign, buildings=buildings)
    assert d.summary["households_moved"] == 100
    flows = {(r.from_grid, r.to_grid): r.households for r in d.moves.itertuples()}
    assert flows == {(a, b): 50, (b, a): 50}
    # Buildings that do not account for the block's households: shares decide.
    partial = buildings.iloc[:2]
    d = diff_plans(old, assign, new, assign, buildings=partial)
    assert d.summary["households_moved"] == 0


def test_diff_block_ids_name_every_block_the_diff_uses():
    """Loading only the blocks diff_block_ids names (and the buildings of its
    split blocks) gives the same diff as loading them all."""
    blocks, grids, assign = square_plan()
    res = apply_edits(
        blocks, grids, assign, [{"op": "move", "blocks": ["B0_1"], "to": f"{COMM}02"}]
    )
    # One block split in both plans, its shares unchanged.
    split_rows = pd.DataFrame(
        {
            "block_id": ["B1_3", "B1_3"],
            "grid_code": [f"{COMM}03", f"{COMM}04"],
            "households": [40, 60],
        }
    )
    old_a = pd.concat([assign[assign["block_id"] != "B1_3"], split_rows])
    new_a = pd.concat(
        [res.assignments[res.assignments["block_id"] != "B1_3"], split_rows]
    )
    drawn, split = diff_block_ids(old_a, new_a)
    assert split == ["B1_3"]
    assert drawn == ["B0_1", "B1_3"]
    full = diff_plans(grids, old_a, res.grids, new_a, blocks=blocks)
    part = diff_plans(
        grids, old_a, res.grids, new_a, blocks=blocks[blocks["block_id"].isin(drawn)]
    )
    assert full.summary == part.summary
    assert full.layer.drop(columns="geometry").equals(
        part.layer.drop(columns="geometry")
    )
    assert diff_block_ids(assign, assign) == ([], [])
