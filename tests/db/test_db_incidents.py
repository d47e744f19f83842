"""Incidents in PostGIS: placement at intake, duplicates, lifecycle, reporters, SQL aggregates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid import render, testing
from spatialgrid.crs import STORAGE_EPSG
from spatialgrid.errors import ConflictError, InputError, NotFoundError, TransitionError
from spatialgrid.incidents import load_categories
from spatialgrid.kpi import compute_kpis

pytestmark = pytest.mark.db

CATEGORIES = load_categories()


@pytest.fixture
def plan_city(db_session):
    """A stored 2-community lattice city (12 grids) with an active plan and workers."""
    from spatialgrid.db import repository as repo

    city, grids = testing.lattice_city(n_communities=2, nx=4, ny=3)
    repo.save_city(city, session=db_session, replace=True)
    plan_id = repo.create_plan(
        grids.drop(columns=["worker"]),
        pd.DataFrame({"block_id": ["C1B0_0"], "grid_code": [grids["grid_code"][0]]}),
        session=db_session,
        name="t",
        parameters={},
    )
    repo.activate_plan(
        plan_id, session=db_session, effective_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    workers = {}
    for i, code in enumerate(grids["grid_code"]):
        wid = repo.create_worker(session=db_session, name=f"w{i}")
        repo.assign_worker(plan_id, code, wid, session=db_session)
        workers[code] = wid
    return {"plan_id": plan_id, "grids": grids, "workers": workers, "city": city}


def _lonlat(grids: gpd.GeoDataFrame, x_off: float, y_off: float, k: int = 0):
    """CGCS2000 lon/lat of a point offset from the SW corner of grid ``k``."""
    minx, miny, _, _ = grids.geometry.iloc[k].bounds
    pt = gpd.GeoSeries([shapely.Point(minx + x_off, miny + y_off)], crs=grids.crs)
    out = pt.to_crs(STORAGE_EPSG).iloc[0]
    return out.x, out.y


def _create(session, grids, *, x=50, y=50, k=0, cat="SJ0101", **kw):
    from spatialgrid.db import incidents as inc

    lon, lat = _lonlat(grids, x, y, k)
    return inc.create_incident(
        session=session,
        category_code=cat,
        lon=lon,
        lat=lat,
        categories=CATEGORIES,
        **kw,
    )


def test_intake_places_on_the_active_plan_with_worker(db_session, plan_city):
    grids = plan_city["grids"]
    made = _create(db_session, grids, x=50, y=50, k=3, description="垃圾堆放")
    code = grids["grid_code"].iloc[3]
    assert made.placement.grid_code == code
    assert made.placement.community_code == grids["community_code"].iloc[3]
    assert made.placement.subdistrict_code == "421002001"
    assert made.placement.worker_id == plan_city["workers"][code]
    assert made.placement.location_status == "inside"
    assert made.placement.boundary_distance_m == pytest.approx(50.0, abs=0.5)
    assert made.duplicate_of is None
    # near the shared edge of two grids (x = 200 m of a 200 m wide grid)
    edge = _create(db_session, grids, x=195, y=50, k=0, cat="BJ0302")
    assert edge.placement.location_status == "near_boundary"
    assert edge.placement.grid_code == grids["grid_code"].iloc[0]
    # 30 m outside the plan: the nearest grid; 500 m outside: none
    minx = grids.total_bounds[0]
    out_near = _create(
        db_session, grids, x=-30 - (grids.geometry.iloc[0].bounds[0] - minx)
    )
    assert out_near.placement.location_status == "nearest"
    far = _create(db_session, grids, x=-500, cat="SJ0201")
    assert far.placement.location_status == "outside"
    assert far.placement.grid_code is None


def test_unknown_category_and_future_time_are_refused(db_session, plan_city):
    with pytest.raises(InputError, match="category_code='XX99'"):
        _create(db_session, plan_city["grids"], cat="XX99")
    later = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(InputError, match="lies in the future"):
        _create(db_session, plan_city["grids"], reported_at=later)


def test_duplicates_same_category_nearby_and_open(db_session, plan_city):
    from spatialgrid.db import incidents as inc

    grids = plan_city["grids"]
    t0 = datetime.now(UTC) - timedelta(hours=3)
    first = _create(db_session, grids, x=50, y=50, reported_at=t0)
    again = _create(db_session, grids, x=80, y=60, reported_at=t0 + timedelta(hours=1))
    assert again.duplicate_of == first.incident_id
    other_cat = _create(
        db_session, grids, x=60, y=50, cat="SJ0501", reported_at=t0 + timedelta(hours=1)
    )
    assert other_cat.duplicate_of is None
    far = _create(db_session, grids, x=50, y=170, reported_at=t0 + timedelta(hours=1))
    assert far.duplicate_of is None  # 120 m away
    # once the first is closed (ended), a new report is not its duplicate
    inc.record_transition(
        first.incident_id, "no_action", session=db_session, actor="op"
    )
    inc.record_transition(
        again.incident_id, "no_action", session=db_session, actor="op"
    )
    fresh = _create(db_session, grids, x=55, y=55, reported_at=t0 + timedelta(hours=2))
    assert fresh.duplicate_of is None
    # merge: the later one ends as duplicate, linked to the earlier one
    third = _create(db_session, grids, x=56, y=56, reported_at=t0 + timedelta(hours=2))
    assert third.duplicate_of == fresh.incident_id
    inc.merge_incident(
        third.incident_id, fresh.incident_id, session=db_session, actor="op"
    )
    frame, history, _ = inc.get_incident(third.incident_id, session=db_session)
    assert frame["stage"].iloc[0] == "duplicate"
    assert frame["duplicate_of"].iloc[0] == fresh.incident_id
    assert (
        history["note"].iloc[-1].startswith(f"merged into incident {fresh.incident_id}")
    )
    with pytest.raises(ConflictError, match="itself a merged duplicate"):
        inc.merge_incident(
            fresh.incident_id, third.incident_id, session=db_session, actor="op"
        )
    with pytest.raises(ConflictError, match="into itself"):
        inc.merge_incident(
            fresh.incident_id, fresh.incident_id, session=db_session, actor="op"
        )


def test_transitions_allowed_refused_and_logged(db_session, plan_city):
    from spatialgrid.db import incidents as inc

    made = _create(db_session, plan_city["grids"])
    iid = made.incident_id
    with pytest.raises(
        TransitionError, match=r"cannot move from 'collect' to 'handle'"
    ):
        inc.record_transition(iid, "handle", session=db_session, actor="op")
    for stage in ("register", "dispatch", "handle", "report_back", "check"):
        inc.record_transition(iid, stage, session=db_session, actor="op", note=stage)
    inc.record_transition(iid, "handle", session=db_session, actor="op", note="redo")
    with pytest.raises(TransitionError, match="before the previous step"):
        inc.record_transition(
            iid, "report_back", session=db_session, actor="w", at=made.reported_at
        )
    frame, history, has_reporter = inc.get_incident(iid, session=db_session)
    assert frame["stage"].iloc[0] == "handle"
    assert history["to_stage"].tolist() == [
        "register",
        "dispatch",
        "handle",
        "report_back",
        "check",
        "handle",
    ]
    assert history["from_stage"].iloc[0] == "collect"
    assert (history["at"].diff().dropna() >= pd.Timedelta(0)).all()
    assert not has_reporter
    assert inc.allowed_next(iid, session=db_session) == (
        "handle",
        ("report_back", "dispatch"),
    )
    with pytest.raises(NotFoundError, match="incident 999999999"):
        inc.record_transition(999_999_999, "register", session=db_session, actor="op")


def test_reporter_stored_only_when_given_and_every_read_audited(db_session, plan_city):
    from sqlalchemy import func, select

    from spatialgrid.db import incidents as inc
    from spatialgrid.db.models import IncidentReporter

    anon = _create(
        db_session, plan_city["grids"], reporter_name="  ", reporter_phone=None
    )
    named = _create(
        db_session,
        plan_city["grids"],
        x=150,
        cat="SJ0501",
        reporter_name="张三",
        reporter_phone="13800000000",
    )
    count = db_session.execute(
        select(func.count()).select_from(IncidentReporter)
    ).scalar()
    assert count == 1
    who = {"key_id": None, "key_name": "op-key", "role": "operator"}
    assert inc.read_reporter(anon.incident_id, session=db_session, **who) is None
    got = inc.read_reporter(
        named.incident_id, session=db_session, purpose="call back", **who
    )
    assert got == {"name": "张三", "phone": "13800000000"}
    with pytest.raises(NotFoundError):
        inc.read_reporter(888_888_888, session=db_session, **who)
    audit = inc.reporter_access_log(session=db_session)
    assert audit["incident_id"].tolist() == [
        888_888_888,
        named.incident_id,
        anon.incident_id,
    ]
    assert audit["found"].tolist() == [False, True, False]
    assert set(audit["key_name"]) == {"op-key"}
    assert audit["purpose"].iloc[1] == "call back"
    # nothing else exposes the reporter
    frame, _ = inc.list_incidents(session=db_session)
    assert not {"name", "phone", "reporter_name"} & set(frame.columns)
    assert "张三" not in frame.drop(columns="geometry").astype(str).to_string()


def test_bulk_insert_kpis_cells_and_grid_counts(db_session, plan_city):
    from spatialgrid.db import incidents as inc

    grids = plan_city["grids"]
    pts = testing.synthetic_incidents(grids, 400, seed=5, start="2026-09-01", days=30)
    pts["reported_at"] = pts["reported_at"].dt.tz_localize("Asia/Shanghai")
    # hand-made histories for the first three; the rest stay in collect
    t = pts["reported_at"]
    h = pd.Timedelta(hours=1)
    log = pd.DataFrame(
        [
            # 0: closed on time (every stage well inside its limit)
            (0, "collect", "register", t[0] + 0.1 * h),
            (0, "register", "dispatch", t[0] + 0.2 * h),
            (0, "dispatch", "handle", t[0] + 0.3 * h),
            (0, "handle", "report_back", t[0] + 0.5 * h),
            (0, "report_back", "check", t[0] + 0.6 * h),
            (0, "check", "evaluate", t[0] + 0.7 * h),
            # 1: closed but handled 30 days (over every handle limit), reworked
            (1, "collect", "register", t[1] + 0.1 * h),
            (1, "register", "dispatch", t[1] + 0.2 * h),
            (1, "dispatch", "handle", t[1] + 0.3 * h),
            (1, "handle", "report_back", t[1] + 720 * h),
            (1, "report_back", "check", t[1] + 720.2 * h),
            (1, "check", "handle", t[1] + 720.4 * h),
            (1, "handle", "report_back", t[1] + 720.6 * h),
            (1, "report_back", "check", t[1] + 720.7 * h),
            (1, "check", "evaluate", t[1] + 720.8 * h),
            # 2: dispatched long ago and never handled: due, open, overdue
            (2, "collect", "register", t[2] + 0.1 * h),
            (2, "register", "dispatch", t[2] + 0.2 * h),
        ],
        columns=["pos", "from_stage", "to_stage", "at"],
    ).assign(actor="op", note="")
    ids = inc.bulk_insert_incidents(
        pts.assign(source="import"), session=db_session, transitions=log
    )
    assert len(ids) == 400
    summary = inc.summarize_stored_incidents(
        session=db_session, categories=CATEGORIES, ids=ids[:3].tolist()
    )
    kpis = compute_kpis(summary)
    row = kpis.iloc[0]
    assert (row["due"], row["closed"], row["closed_on_time"]) == (3, 2, 1)
    assert row["closure_rate_pct"] == pytest.approx(66.67)
    assert row["on_time_rate_pct"] == pytest.approx(33.33)
    assert row["overdue"] == 1
    assert row["rework_rate_pct"] == pytest.approx(50.0)
    frame, history, _ = inc.get_incident(int(ids[1]), session=db_session)
    assert frame["stage"].iloc[0] == "evaluate"
    assert len(history) == 9
    # cells counted in SQL == cells counted by render in Python
    epsg = 4546
    sql = inc.count_incident_cells(
        session=db_session,
        cell_size_m=50,
        working_epsg=epsg,
        start=datetime(2026, 9, 10, tzinfo=UTC),
        categories=["SJ0101", "BJ0101"],
    )
    local = render.aggregate_incident_cells(
        pts.assign(reported_at=pts["reported_at"].dt.tz_convert("UTC")),
        cell_size_m=50,
        working_crs=epsg,
        start="2026-09-10T00:00:00+00:00",
        categories=["SJ0101", "BJ0101"],
    )
    assert sql["count"].sum() == local.attrs["incidents"] > 0
    pd.testing.assert_frame_equal(
        sql, pd.DataFrame(local[["cell_i", "cell_j", "count"]]).astype("int64")
    )
    # bulk rows came without grids: recompute places them with GridIndex
    assert inc.count_incidents_by_grid(session=db_session).empty
    done = inc.recompute_incident_grids(session=db_session)
    assert done == {"plan_id": plan_city["plan_id"], "incidents": 400, "changed": 400}
    from spatialgrid.hotspots import count_incidents_per_grid

    expected = count_incidents_per_grid(grids, pts.drop(columns=[]))
    by_grid = inc.count_incidents_by_grid(session=db_session)
    got = grids["grid_code"].map(by_grid).fillna(0).astype(int)
    assert got.tolist() == expected.tolist()
    frame, _ = inc.list_incidents(session=db_session, grids=[grids["grid_code"][0]])
    assert set(frame["worker_id"]) == {plan_city["workers"][grids["grid_code"][0]]}
    again = inc.recompute_incident_grids(session=db_session)
    assert again["changed"] == 0
