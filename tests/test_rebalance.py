"""Rebalance: minimal-change repair, locked grids, stable and fresh codes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import shapely

from spatialgrid import testing
from spatialgrid.edits import build_grids, validate_plan
from spatialgrid.errors import CodeOverflowError, InputError
from spatialgrid.rebalance import (
    apply_household_changes,
    next_grid_codes,
    rebalance_plan,
)

COMM = "421002001001"


def square_plan(nx: int = 6, ny: int = 4, households: int = 100):
    """A lattice of 100-household blocks cut into 2 x 2 grids of 400 households.

    Grid codes run west→east, north→south: ``01`` is the north-west square.
    """
    blocks = testing.box_lattice(nx, ny, households=households, community_code=COMM)
    rc = blocks["block_id"].str[1:].str.split("_", expand=True).astype(int)
    per_row = nx // 2
    seq = (rc[0] // 2) * per_row + rc[1] // 2 + 1
    assignments = pd.DataFrame(
        {
            "block_id": blocks["block_id"],
            "grid_code": [f"{COMM}{s:02d}" for s in seq],
            "community_code": COMM,
            "households": blocks["households"],
            "part_id": None,
            "unit": "block",
        }
    )
    grids = build_grids(blocks, assignments)
    return blocks, grids, assignments


def _grid_of(assignments: pd.DataFrame, block: str) -> str:
    return str(assignments.loc[assignments["block_id"] == block, "grid_code"].iloc[0])


def _neighbours(grids, code: str) -> set[str]:
    geom = grids.set_index("grid_code").geometry
    me = geom.loc[code]
    return {
        c
        for c, g in geom.items()
        if c != code
        and shapely.length(shapely.intersection(me.boundary, g.boundary)) > 1
    }


def test_grid_at_560_is_repaired_touching_only_it_and_its_neighbours():
    blocks, grids, assign = square_plan()
    changed = apply_household_changes(blocks, {"B0_0": 160})  # grid 01: 560
    res = rebalance_plan(changed, grids, assign)
    code = f"{COMM}01"
    assert res.ok
    assert res.grids["households"].between(400, 500).all()
    touched = set(res.summary["grids_touched"])
    assert code in touched
    assert touched <= {code} | _neighbours(grids, code)
    assert len(touched) == 2
    # One 100-household block moves: the least that brings 560 within 500.
    assert res.summary["households_moved"] == 100
    assert res.moves["households"].sum() == 100
    # Households conserved, every block assigned once, plan valid.
    assert res.assignments["households"].sum() == changed["households"].sum()
    assert sorted(res.assignments["block_id"]) == sorted(changed["block_id"])
    assert validate_plan(changed, res.grids, res.assignments).empty
    assert res.communities["status"].tolist() == ["repaired"]


def test_untouched_grids_keep_codes_and_geometry():
    blocks, grids, assign = square_plan()
    changed = apply_household_changes(blocks, {"B0_0": 160})
    res = rebalance_plan(changed, grids, assign)
    touched = set(res.summary["grids_touched"])
    before = grids.set_index("grid_code")
    after = res.grids.set_index("grid_code")
    assert set(before.index) == set(after.index)  # no code retired or created
    for code in set(before.index) - touched:
        assert after.geometry.loc[code].wkb == before.geometry.loc[code].wkb
        old = assign[assign["grid_code"] == code].sort_values("block_id")
        new = res.assignments[res.assignments["grid_code"] == code]
        assert (
            old["block_id"].tolist() == new.sort_values("block_id")["block_id"].tolist()
        )


def test_locked_grids_are_unchanged_byte_for_byte():
    blocks, grids, assign = square_plan()
    code = f"{COMM}01"
    nbrs = sorted(_neighbours(grids, code))
    locked = nbrs[:-1]  # one neighbour stays free
    changed = apply_household_changes(blocks, {"B0_0": 160})
    res = rebalance_plan(changed, grids, assign, locked=locked)
    assert res.ok
    assert set(res.summary["grids_touched"]) == {code, nbrs[-1]}
    before = grids.set_index("grid_code")
    after = res.grids.set_index("grid_code")
    for c in locked:
        assert after.geometry.loc[c].wkb == before.geometry.loc[c].wkb
        old = assign[assign["grid_code"] == c].reset_index(drop=True)
        new = res.assignments[res.assignments["grid_code"] == c].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            old[["block_id", "grid_code", "households", "part_id"]],
            new[["block_id", "grid_code", "households", "part_id"]],
            check_dtype=False,
        )


def test_all_neighbours_locked_leaves_the_violation_reported():
    blocks, grids, assign = square_plan()
    code = f"{COMM}01"
    locked = sorted(_neighbours(grids, code))
    changed = apply_household_changes(blocks, {"B0_0": 160})
    res = rebalance_plan(changed, grids, assign, locked=locked)
    assert not res.ok
    row = res.grids.set_index("grid_code").loc[code]
    assert row["households"] == 560
    assert "above_max" in row["flags"]
    for c in locked:
        assert (
            res.grids.set_index("grid_code").geometry.loc[c].wkb
            == grids.set_index("grid_code").geometry.loc[c].wkb
        )
    assert res.communities["status"].tolist() == ["violations"]


def test_grid_doubling_gets_a_new_never_used_code():
    blocks, grids, assign = square_plan(households=100)
    # Grid 01 at 400 + 460 = 860: too big for any neighbour, split in two.
    changed = apply_household_changes(blocks, {"B0_0": 230, "B1_1": 230})
    retired = f"{COMM}07"  # used by an older plan: never reused
    res = rebalance_plan(changed, grids, assign, used_codes=[retired])
    assert res.ok
    assert res.summary["codes_created"] == [f"{COMM}08"]
    assert f"{COMM}08" in set(res.grids["grid_code"])
    assert retired not in set(res.grids["grid_code"])
    assert res.assignments["households"].sum() == changed["households"].sum()


def test_no_change_means_no_work_and_identical_plan():
    blocks, grids, assign = square_plan()
    res = rebalance_plan(blocks, grids, assign)
    assert res.summary["households_moved"] == 0
    assert res.summary["grids_touched"] == []
    for a, b in zip(grids.geometry.values, res.grids.geometry.values, strict=True):
        assert a.wkb == b.wkb


def test_new_and_removed_blocks():
    blocks, grids, assign = square_plan()
    # A new 60-household block east of the lattice, next to grid 03 (B0_5, B1_5).
    _x0, _y0, x1, y1 = blocks.total_bounds
    new = blocks.iloc[[0]].copy()
    new["block_id"] = "NEW1"
    new["households"] = 60
    new = new.set_geometry([shapely.box(x1, y1 - 200, x1 + 100, y1)], crs=blocks.crs)
    # Remove B3_0 from grid 04 (south-west): 300 households left there.
    current = pd.concat([blocks[blocks["block_id"] != "B3_0"], new], ignore_index=True)
    current = current.set_crs(blocks.crs, allow_override=True)
    res = rebalance_plan(current, grids, assign)
    assert res.ok, res.grids
    assert res.summary["blocks_added"] == ["NEW1"]
    assert res.summary["blocks_removed"] == ["B3_0"]
    assert "B3_0" not in set(res.assignments["block_id"])
    assert _grid_of(res.assignments, "NEW1") == f"{COMM}03"
    assert res.summary["households_new"] == 60
    assert res.assignments["households"].sum() == current["households"].sum()
    assert validate_plan(current, res.grids, res.assignments).empty


def _lumpy_plan():
    """Three grids of one block each (450, 450, 420 households); ten buildings
    of 45 households per block in two rows of five."""
    blocks = testing.box_lattice(3, 1, households=[450, 450, 420], community_code=COMM)
    assign = pd.DataFrame(
        {
            "block_id": blocks["block_id"],
            "grid_code": [f"{COMM}0{i}" for i in (1, 2, 3)],
            "community_code": COMM,
            "households": blocks["households"],
        }
    )
    grids = build_grids(blocks, assign)
    rows = []
    for b, geom in zip(blocks["block_id"], blocks.geometry, strict=True):
        x0, y0, _, _ = geom.bounds
        for k in range(10):
            x = x0 + 10 + (k % 5) * 18
            y = y0 + 20 + (k // 5) * 40
            rows.append((f"{b}-{k}", b, shapely.box(x, y, x + 12, y + 20)))
    import geopandas as gpd

    buildings = gpd.GeoDataFrame(
        {
            "building_id": [r[0] for r in rows],
            "block_id": [r[1] for r in rows],
            "compound_id": None,
            "households": 45,
        },
        geometry=[r[2] for r in rows],
        crs=blocks.crs,
    )
    return blocks, grids, assign, buildings


def test_split_blocks_move_by_buildings():
    """Lumpy grids (one 450-household block each) rebalance by building parts."""
    blocks, grids, assign, buildings = _lumpy_plan()
    changed = apply_household_changes(blocks, {"B0_1": 80})  # middle grid 530
    res = rebalance_plan(changed, grids, assign, buildings=buildings)
    assert res.ok, res.grids[["grid_code", "households"]]
    assert 30 <= res.summary["households_moved"] <= 120
    assert (res.assignments["unit"] == "part").any()
    assert res.assignments.groupby("block_id")["households"].sum().to_dict() == dict(
        zip(changed["block_id"], changed["households"], strict=True)
    )
    # Grid polygons still tile the blocks exactly.
    union = shapely.union_all(np.asarray(res.grids.geometry.values))
    assert abs(union.area - changed.union_all().area) < 1e-3
    assert float(np.sum(res.grids.area)) == pytest.approx(union.area, abs=1e-3)
    assert validate_plan(changed, res.grids, res.assignments).empty


def test_next_grid_codes_never_reuse_and_overflow():
    used = [f"{COMM}{s:02d}" for s in (1, 2, 5)]
    assert next_grid_codes(COMM, 2, used_codes=used) == [f"{COMM}06", f"{COMM}07"]
    full = [f"{COMM}{s:02d}" for s in range(1, 100)]
    with pytest.raises(CodeOverflowError, match="never used"):
        next_grid_codes(COMM, 1, used_codes=full)
    almost = [f"{COMM}99"]
    assert next_grid_codes(COMM, 1, used_codes=almost) == [f"{COMM}01"]
    assert next_grid_codes(COMM, 1, used_codes=[], code_scheme="db11") == [f"{COMM}001"]


def test_bad_inputs():
    blocks, grids, assign = square_plan()
    with pytest.raises(InputError, match="locked grid codes"):
        rebalance_plan(blocks, grids, assign, locked=["nope"])
    with pytest.raises(InputError, match="min_households"):
        rebalance_plan(blocks, grids, assign, min_households=600, max_households=500)
    with pytest.raises(InputError, match="not in blocks"):
        apply_household_changes(blocks, {"ZZ": 3})
    with pytest.raises(Exception, match="CRS"):
        rebalance_plan(blocks, grids.to_crs(4326), assign)


def test_cli_file_mode(tmp_path):
    import typer
    from typer.testing import CliRunner

    import geopandas as gpd
    import pyogrio

    from spatialgrid.cli import adjust

    blocks, grids, assign = square_plan()
    plan = tmp_path / "plan.gpkg"
    grids.to_file(plan, layer="grids", driver="GPKG")
    pyogrio.write_dataframe(assign, plan, layer="assignments", driver="GPKG")
    changed = tmp_path / "blocks.gpkg"
    apply_household_changes(blocks, {"B0_0": 160}).to_file(changed, driver="GPKG")
    app = typer.Typer()
    adjust.register(app)
    runner = CliRunner()
    out = tmp_path / "draft.gpkg"
    r = runner.invoke(
        app,
        ["rebalance", "--plan", str(plan), "--blocks", str(changed), "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "100 households moved" in " ".join(r.output.split())
    draft = gpd.read_file(out, layer="grids")
    assert draft["households"].between(400, 500).all()
    assert draft.crs == blocks.crs
    r = runner.invoke(
        app,
        [
            "diff",
            "--old",
            str(plan),
            "--new",
            str(out),
            "--out",
            str(tmp_path / "d.gpkg"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "100 households in 1 block(s)" in " ".join(r.output.split())
    r = runner.invoke(
        app,
        ["validate-plan", "--plan", str(plan), "--blocks", str(changed), "--strict"],
    )
    assert r.exit_code == 1
    assert "above_max" in r.output
    r = runner.invoke(app, ["rebalance", "--plan", str(plan)])
    assert r.exit_code == 2


def _buildings(blocks, new_compound: dict[str, int] | None = None):
    """Four 25-household buildings stacked in the west of every 100 m block; a
    new compound (four buildings, no earlier households) in the east of some."""
    import geopandas as gpd

    rows = []
    for b, geom, h in zip(
        blocks["block_id"], blocks.geometry, blocks["households"], strict=True
    ):
        x0, y0, _, _ = geom.bounds
        for k in range(4):
            y = y0 + 5 + k * 24
            rows.append(
                (
                    f"{b}-{k}",
                    b,
                    "",
                    h // 4,
                    h // 4,
                    shapely.box(x0 + 5, y, x0 + 25, y + 18),
                )
            )
        extra = (new_compound or {}).get(b, 0)
        for k in range(4 if extra else 0):
            y = y0 + 5 + k * 24
            box = shapely.box(x0 + 60, y, x0 + 85, y + 18)
            rows.append((f"{b}-n{k}", b, f"NEW-{b}", extra // 4, 0, box))
    cols = ["building_id", "block_id", "compound_id", "households", "households_before"]
    return gpd.GeoDataFrame(
        {c: [r[i] for r in rows] for i, c in enumerate(cols)},
        geometry=[r[5] for r in rows],
        crs=blocks.crs,
    )


def test_new_compound_becomes_a_grid_without_moving_a_resident():
    blocks, grids, assign = square_plan()
    buildings = _buildings(blocks, {"B0_0": 400})
    changed = apply_household_changes(blocks, {"B0_0": 400})  # grid 01: 800
    res = rebalance_plan(changed, grids, assign, buildings=buildings)
    assert res.ok, res.grids[["grid_code", "households"]]
    assert res.summary["existing_households_moved"] == 0
    assert res.summary["codes_created"] == [f"{COMM}07"]
    by_code = res.grids.set_index("grid_code")["households"]
    assert by_code[f"{COMM}07"] == 400
    assert by_code[f"{COMM}01"] == 400
    assert len(res.summary["grids_touched"]) == 2
    # The new grid holds exactly the compound's buildings.
    new_geom = res.grids.set_index("grid_code").geometry[f"{COMM}07"]
    inside = buildings[buildings.representative_point().within(new_geom)]
    assert set(inside["compound_id"]) == {"NEW-B0_0"}
    assert len(inside) == 4
    assert validate_plan(changed, res.grids, res.assignments).empty


def test_old_flaw_is_kept_in_its_direction_and_repaired_on_request():
    # Grid 01 held 560 before (B0_0 = 260): a compound of 400 joins it.
    hh = [100] * 24
    hh[0] = 260
    blocks = testing.box_lattice(6, 4, households=hh, community_code=COMM)
    _, _, assign = square_plan()
    assign = assign.assign(households=blocks["households"].to_numpy())
    grids = build_grids(blocks, assign)
    buildings = _buildings(blocks, {"B0_0": 400})
    changed = apply_household_changes(blocks, {"B0_0": 400})  # grid 01: 960
    res = rebalance_plan(changed, grids, assign, buildings=buildings)
    by_code = res.grids.set_index("grid_code")["households"]
    assert by_code[f"{COMM}01"] == 560  # back to its old flaw, no worse
    assert res.summary["existing_households_moved"] == 0
    assert res.summary["violations_after"] == 1
    fixed = rebalance_plan(changed, grids, assign, buildings=buildings, repair_all=True)
    assert fixed.ok, fixed.grids[["grid_code", "households"]]
    assert fixed.summary["existing_households_moved"] > 0


def test_tolerance_holds_only_in_its_own_direction():
    from spatialgrid.rebalance import _Violation

    vf = _Violation(400, 500, {"A": 60, "B": -30})
    assert vf("A", 540) == 0  # above max, within its old surplus
    assert vf("A", 580) == 20
    assert vf("A", 380) == 20  # below min: no tolerance that way
    assert vf("B", 375) == 0
    assert vf("B", 360) == 10
    assert vf("B", 510) == 10
    assert vf("C", 450) == 0


def test_nanjing_grown_block_is_repaired_in_its_community(nanjing_plan):
    """Real city: a block of a full grid gains 300 households (Nanjing import)."""
    city, plan = nanjing_plan
    grids, assign = plan.grids, plan.assignments
    full = grids[grids["households"] == 500].sort_values("grid_code").iloc[0]
    mine = assign[assign["grid_code"] == full["grid_code"]]
    block = str(mine.sort_values(["households", "block_id"]).iloc[-1]["block_id"])
    changed = apply_household_changes(city.blocks, {block: 300})
    res = rebalance_plan(changed, grids, assign, buildings=city.buildings)
    row = res.communities.iloc[0]
    assert row["community_code"] == full["community_code"]
    assert row["status"] == "repaired"
    assert row["violations_after"] == 0
    assert res.grids["geometry"].is_valid.all()
    assert res.assignments["households"].sum() == changed["households"].sum()
    assert res.summary["n_grids_touched"] <= 4
    # Everything outside the changed community is the old plan, byte for byte.
    other = grids[grids["community_code"] != full["community_code"]]
    after = res.grids.set_index("grid_code").geometry
    for code, geom in zip(other["grid_code"], other.geometry, strict=True):
        assert after[code].wkb == geom.wkb
    # No new overlap, gap, contiguity or nesting problem (the plan's own two
    # hairline overlaps between other communities stay as they were).
    kinds = set(validate_plan(changed, res.grids, res.assignments)["kind"])
    before = set(validate_plan(city.blocks, grids, assign)["kind"])
    assert kinds <= before


@pytest.mark.db
def test_cli_database_mode(scratch_db_url):
    """README's commands on a stored city: partition, data change, rebalance,
    diff and validate-plan by plan id."""
    from typer.testing import CliRunner

    from spatialgrid.cli import app
    from spatialgrid.db import repository
    from spatialgrid.db.engine import database_session
    from spatialgrid.sample import generate_city

    city = generate_city(n_communities=2)
    with database_session(scratch_db_url) as session:
        repository.save_city(city, session=session)
    runner = CliRunner()
    url = ["--database-url", scratch_db_url]
    r = runner.invoke(app, ["partition", *url, "--activate"])
    assert r.exit_code == 0, r.output
    with database_session(scratch_db_url) as session:
        active = repository.active_plan_id(session=session)
        assign = repository.load_plan_assignments(active, session=session)
        grids = repository.load_plan_grids(active, session=session)
        # A block of a grid within bounds gains 300 households.
        ok = grids[grids["households"].between(400, 500)].iloc[0]["grid_code"]
        block = str(assign.loc[assign["grid_code"] == ok, "block_id"].iloc[0])
        blocks = apply_household_changes(city.blocks, {block: 300})
        repository.save_city(dataclasses.replace(city, blocks=blocks), session=session)
    r = runner.invoke(app, ["rebalance", *url, "--name", "after the change"])
    assert r.exit_code == 0, r.output
    with database_session(scratch_db_url) as session:
        plans = repository.list_plans(session=session)
    draft = int(plans.loc[plans["status"] == "draft", "id"].iloc[-1])
    assert plans.set_index("id").loc[draft, "name"] == "after the change"
    r = runner.invoke(
        app, ["diff", *url, "--old-id", str(active), "--new-id", str(draft)]
    )
    assert r.exit_code == 0, r.output
    assert "household" in r.output
    r = runner.invoke(app, ["validate-plan", *url, "--plan-id", str(draft)])
    assert r.exit_code == 0, r.output


def test_exhaustive_mode_finds_the_least_change_by_single_buildings():
    """With time to spare the whole community is solved exactly: the 530
    grid gives one 45-household building to a neighbour (the least any plan
    within the bounds can move), never more than the fast repair moves."""
    blocks, grids, assign, buildings = _lumpy_plan()
    changed = apply_household_changes(blocks, {"B0_1": 80})  # middle grid 530
    fast = rebalance_plan(changed, grids, assign, buildings=buildings)
    slow = rebalance_plan(
        changed, grids, assign, buildings=buildings, exhaustive_seconds=5
    )
    assert slow.ok
    assert slow.communities["method"].tolist() == ["exhaustive+parts"]
    assert slow.summary["existing_households_moved"] == 45
    assert (
        slow.summary["existing_households_moved"]
        <= fast.summary["existing_households_moved"]
    )
    assert slow.grids["households"].between(400, 500).all()
    assert validate_plan(changed, slow.grids, slow.assignments).empty
    with pytest.raises(InputError, match="exhaustive_seconds"):
        rebalance_plan(changed, grids, assign, exhaustive_seconds=-1)
    with pytest.raises(InputError, match="exhaustive_seconds"):
        rebalance_plan(changed, grids, assign, exhaustive_seconds="soon")
