"""Grid plans: draft -> active -> retired, effective dates, workers (real PostGIS)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

import shapely

from spatialgrid import testing
from spatialgrid.db import repository
from spatialgrid.errors import ConflictError, InputError, NotFoundError

pytestmark = pytest.mark.db

D2024 = datetime(2024, 1, 1, tzinfo=UTC)
D2025 = datetime(2025, 1, 1, tzinfo=UTC)


def _partition():
    """Two grids over a 4 x 1 lattice (2 blocks each); block B0_3 split in parts."""
    blocks = testing.box_lattice(4, 1, households=[250, 200, 230, 220])
    west = shapely.union_all(blocks.geometry.iloc[:2])
    east = shapely.union_all(blocks.geometry.iloc[2:])
    grids = blocks.iloc[:2].copy()
    grids = grids.set_geometry([west, shapely.MultiPolygon([east])])
    grids = grids.assign(
        grid_code=["42100200100101", "42100200100102"],
        households=[450, 450],
        n_blocks=[2, 2],
        flags=[[], ["split_block"]],
        area_m2=[20000.0, 20000.0],
    )[
        [
            "grid_code",
            "community_code",
            "households",
            "n_blocks",
            "flags",
            "area_m2",
            "geometry",
        ]
    ]
    assignments = pd.DataFrame(
        {
            "block_id": ["B0_0", "B0_1", "B0_2", "B0_3", "B0_3"],
            "grid_code": ["42100200100101"] * 2 + ["42100200100102"] * 3,
            "part_id": [None, None, None, "B0_3/1", "B0_3/2"],
            "households": [250, 200, 230, 110, 110],
        }
    )
    diagnostics = pd.DataFrame(
        {
            "community_code": ["421002001001"],
            "households": [900],
            "k_min": [2],
            "k_max": [2],
            "k": [2],
            "status": ["ok"],
            "reasons": [["split B0_3 by buildings"]],
        }
    )
    return grids, assignments, diagnostics


def _plan(session, name="plan") -> int:
    grids, assignments, diagnostics = _partition()
    return repository.create_plan(
        grids,
        assignments,
        session=session,
        name=name,
        parameters={"min_households": 400, "max_households": 500, "seed": 0},
        diagnostics=diagnostics,
    )


def test_create_plan_round_trip(db_session):
    grids, assignments, _ = _partition()
    plan_id = _plan(db_session, "first draft")
    info = repository.get_plan(plan_id, session=db_session)
    assert (info.name, info.status, info.effective_from) == (
        "first draft",
        "draft",
        None,
    )
    assert info.parameters["max_households"] == 500
    assert info.diagnostics.loc[0, "reasons"] == ["split B0_3 by buildings"]
    loaded = repository.load_plan_grids(plan_id, session=db_session)
    assert loaded.crs.to_epsg() == 4490
    assert list(loaded.columns[:5]) == [
        "grid_code",
        "community_code",
        "households",
        "n_blocks",
        "flags",
    ]
    assert loaded["grid_code"].tolist() == grids["grid_code"].tolist()
    assert loaded["households"].tolist() == [450, 450]
    assert loaded["flags"].tolist() == [[], ["split_block"]]
    assert loaded["area_m2"].tolist() == [20000.0, 20000.0]
    assert set(loaded.geom_type) == {"MultiPolygon"}
    back = loaded.to_crs(grids.crs)
    assert back.geometry.area.round(3).tolist() == [20000.0, 20000.0]
    # Through EPSG:4490 and back: same shapes to well under a square millimetre.
    moved = shapely.symmetric_difference(
        back.geometry.to_numpy(), grids.geometry.to_numpy()
    )
    assert (shapely.area(moved) < 1e-6).all()
    got = repository.load_plan_assignments(plan_id, session=db_session)
    assert got["block_id"].tolist() == assignments["block_id"].tolist()
    parts = [None if pd.isna(v) else v for v in got["part_id"]]
    assert parts == [None, None, None, "B0_3/1", "B0_3/2"]
    assert got["households"].tolist() == [250, 200, 230, 110, 110]
    plans = repository.list_plans(session=db_session)
    row = plans.set_index("id").loc[plan_id]
    assert (row["status"], row["n_grids"], row["households"]) == ("draft", 2, 900)


def test_create_plan_rejects_unknown_grid_codes(db_session):
    grids, assignments, _ = _partition()
    assignments.loc[0, "grid_code"] = "99999999999999"
    with pytest.raises(InputError, match=r"grid codes \['99999999999999'\]"):
        repository.create_plan(
            grids, assignments, session=db_session, name="x", parameters={}
        )


def test_draft_active_retired_with_dates(db_session):
    first = _plan(db_session, "2024 plan")
    second = _plan(db_session, "2025 plan")
    with pytest.raises(NotFoundError, match="no grid plan was in force"):
        repository.active_plan_id(session=db_session, at=D2024)
    repository.activate_plan(first, session=db_session, effective_from=D2024)
    assert repository.active_plan_id(session=db_session) == first
    repository.activate_plan(second, session=db_session, effective_from=D2025)
    old = repository.get_plan(first, session=db_session)
    assert (old.status, old.effective_from, old.effective_to) == (
        "retired",
        D2024,
        D2025,
    )
    new = repository.get_plan(second, session=db_session)
    assert (new.status, new.effective_from, new.effective_to) == ("active", D2025, None)
    assert (
        repository.active_plan_id(session=db_session, at=datetime(2024, 6, 1)) == first
    )
    assert repository.active_plan_id(session=db_session, at=D2025) == second
    assert repository.active_plan_id(session=db_session) == second
    with pytest.raises(NotFoundError, match="no grid plan was in force at 2023"):
        repository.active_plan_id(session=db_session, at=datetime(2023, 12, 31))
    # Old boundaries stay queryable.
    assert len(repository.load_plan_grids(first, session=db_session)) == 2
    statuses = repository.list_plans(session=db_session).set_index("id")["status"]
    assert (statuses[first], statuses[second]) == ("retired", "active")


def test_illegal_transitions(db_session):
    first = _plan(db_session)
    second = _plan(db_session)
    repository.activate_plan(first, session=db_session, effective_from=D2025)
    with pytest.raises(ConflictError, match=f"grid plan {first} is active"):
        repository.activate_plan(first, session=db_session)
    with pytest.raises(ConflictError, match="lies before the start"):
        repository.activate_plan(second, session=db_session, effective_from=D2024)
    repository.activate_plan(second, session=db_session, effective_from=D2025)
    with pytest.raises(ConflictError, match=f"grid plan {first} is retired"):
        repository.activate_plan(first, session=db_session)
    with pytest.raises(NotFoundError, match="grid plan 987654321 does not exist"):
        repository.activate_plan(987654321, session=db_session)
    with pytest.raises(NotFoundError, match="does not exist"):
        repository.load_plan_grids(987654321, session=db_session)


def test_database_allows_one_active_plan_only(db_session):
    first = _plan(db_session)
    second = _plan(db_session)
    repository.activate_plan(first, session=db_session, effective_from=D2024)
    with (
        pytest.raises(IntegrityError, match="uq_grid_plans_one_active"),
        db_session.begin_nested(),
    ):
        db_session.execute(
            text(
                "UPDATE grid_plans SET status = 'active', effective_from = now() "
                "WHERE id = :id"
            ),
            {"id": second},
        )


def test_workers_assigned_to_grids(db_session):
    plan_id = _plan(db_session)
    worker = repository.create_worker(
        session=db_session, name="张三", phone="13800000000", employee_no="E001"
    )
    with pytest.raises(ConflictError, match="employee_no 'E001' already exists"):
        repository.create_worker(session=db_session, name="李四", employee_no="E001")
    repository.assign_worker(plan_id, "42100200100102", worker, session=db_session)
    grids = repository.load_plan_grids(plan_id, session=db_session)
    assert grids["worker_id"].tolist()[1] == worker
    assert pd.isna(grids["worker_id"].tolist()[0])
    assert repository.list_workers(session=db_session)["name"].tolist()[-1] == "张三"
    with pytest.raises(NotFoundError, match="not part of plan"):
        repository.assign_worker(plan_id, "nope", worker, session=db_session)


def test_ever_used_grid_codes_spans_every_plan(db_session):
    from spatialgrid.db.plans_extra import ever_used_grid_codes

    grids, assignments, diagnostics = _partition()
    _plan(db_session, "first")
    # A second plan that re-codes the east grid: both codes count as used.
    recoded = grids.assign(grid_code=["42100200100101", "42100200100107"])
    moved = assignments.assign(
        grid_code=["42100200100101"] * 2 + ["42100200100107"] * 3
    )
    repository.create_plan(
        recoded,
        moved,
        session=db_session,
        name="second",
        parameters={},
        diagnostics=diagnostics,
    )
    assert ever_used_grid_codes(session=db_session) >= {
        "42100200100101",
        "42100200100102",
        "42100200100107",
    }
