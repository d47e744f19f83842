"""Incident lifecycle, time limits, overdue, Open311 status and duplicates."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd

from spatialgrid import incidents as inc
from spatialgrid.errors import (
    DataFormatError,
    InputError,
    MissingColumnError,
    MissingCRSError,
    TransitionError,
)
from spatialgrid.testing import ORIGIN, PROJECTED_CRS

T0 = datetime(2026, 11, 16, 9, 0)  # a Monday


@pytest.fixture(scope="module")
def categories() -> pd.DataFrame:
    return inc.load_categories()


def walk(incident: inc.Incident, steps: list[tuple[str, int]]) -> inc.Incident:
    """Advance through (stage, minutes after reported_at) steps."""
    for stage, minute in steps:
        incident = inc.advance(
            incident,
            stage,
            actor="op1",
            at=incident.reported_at + timedelta(minutes=minute),
        )
    return incident


CLOSE_PATH = [
    ("register", 5),
    ("dispatch", 20),
    ("handle", 40),
    ("report_back", 200),
    ("check", 220),
    ("evaluate", 240),
    ("closed", 300),
]


# ------------------------------------------------------------------ categories


def test_bundled_category_table(categories):
    assert 20 <= len(categories) <= 40
    assert set(categories["kind"]) == {"component", "event"}
    assert categories["category_code"].is_unique
    assert categories["category_code"].str.fullmatch(r"(BJ|SJ)\d{4}").all()
    # every minor class has a register, dispatch, handle and check limit
    for stage in ("register", "dispatch", "handle", "check"):
        assert (categories[f"{stage}_min"] > 0).all()
    assert categories.loc[categories["urgent"], "dispatch_min"].max() <= 10
    assert "井盖" in "".join(categories["minor_name"])


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda t: t.drop(columns="minor_name"), MissingColumnError, "lacks columns"),
        (lambda t: pd.concat([t, t.head(1)]), DataFormatError, "repeats category_code"),
        (lambda t: t.assign(kind="thing"), DataFormatError, "kind"),
        (lambda t: t.assign(handle_min="-5"), DataFormatError, "negative handle_min"),
    ],
)
def test_bad_category_tables(tmp_path, change, error, match):
    table = pd.read_csv(inc.default_categories_path(), dtype=str)
    path = tmp_path / "cats.csv"
    change(table).to_csv(path, index=False)
    with pytest.raises(error, match=match):
        inc.load_categories(path)


def test_missing_limit_column_means_no_limit(tmp_path):
    table = pd.read_csv(inc.default_categories_path(), dtype=str).drop(
        columns="report_back_min"
    )
    path = tmp_path / "cats.csv"
    table.to_csv(path, index=False)
    loaded = inc.load_categories(path)
    assert loaded["report_back_min"].isna().all()
    assert "report_back" not in set(inc.time_limits(loaded)["stage"])


# ------------------------------------------------------------------ transitions


def test_full_lifecycle_records_every_step():
    done = walk(inc.Incident("A", "SJ0101", T0), CLOSE_PATH)
    assert done.stage == "closed"
    assert [t.to_stage for t in done.history] == [s for s, _ in CLOSE_PATH]
    assert all(t.actor == "op1" for t in done.history)
    assert done.history[0].from_stage == "collect"
    assert not done.is_open
    assert inc.is_terminal("closed")


def test_rework_goes_back_to_handle():
    case = walk(
        inc.Incident("A", "SJ0101", T0),
        [
            ("register", 5),
            ("dispatch", 10),
            ("handle", 20),
            ("report_back", 60),
            ("check", 70),
        ],
    )
    case = inc.advance(
        case, "handle", actor="checker", at=T0 + timedelta(minutes=80), note="照片不清"
    )
    assert case.stage == "handle"
    assert case.reworks == 1
    assert case.history[-1].note == "照片不清"
    assert case.is_open


@pytest.mark.parametrize("outcome", ["duplicate", "not_responsible", "no_action"])
@pytest.mark.parametrize("at_stage", ["collect", "register"])
def test_early_terminal_outcomes(outcome, at_stage):
    case = inc.Incident("A", "SJ0101", T0)
    if at_stage == "register":
        case = inc.advance(case, "register", actor="op", at=T0)
    case = inc.advance(case, outcome, actor="op", at=T0 + timedelta(minutes=1))
    assert case.stage == outcome
    assert inc.open311_status(outcome) == "closed"
    with pytest.raises(TransitionError, match="it is terminal"):
        inc.advance(case, "register", actor="op", at=T0 + timedelta(minutes=2))


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], "dispatch"),  # skip registration
        ([], "closed"),
        ([("register", 1)], "handle"),
        ([("register", 1), ("dispatch", 2)], "duplicate"),  # too late to drop
        (
            [("register", 1), ("dispatch", 2), ("handle", 3)],
            "check",
        ),  # skip report back
        (
            [
                ("register", 1),
                ("dispatch", 2),
                ("handle", 3),
                ("report_back", 4),
                ("check", 5),
            ],
            "closed",
        ),
        (
            [
                ("register", 1),
                ("dispatch", 2),
                ("handle", 3),
                ("report_back", 4),
                ("check", 5),
                ("evaluate", 6),
            ],
            "handle",
        ),
    ],
)
def test_illegal_transitions_refused(path, target):
    case = walk(inc.Incident("A", "SJ0101", T0), path)
    with pytest.raises(
        TransitionError, match=f"cannot move from '{case.stage}' to '{target}'"
    ):
        inc.advance(case, target, actor="op", at=T0 + timedelta(hours=1))


def test_transition_needs_actor_time_order_and_known_state():
    case = inc.Incident("A", "SJ0101", T0)
    with pytest.raises(TransitionError, match="must name who"):
        inc.advance(case, "register", actor=" ", at=T0)
    case = inc.advance(case, "register", actor="op", at=T0 + timedelta(minutes=10))
    with pytest.raises(TransitionError, match="before the previous step"):
        inc.advance(case, "dispatch", actor="op", at=T0 + timedelta(minutes=5))
    with pytest.raises(TransitionError, match="not an incident state"):
        inc.advance(case, "archived", actor="op", at=T0 + timedelta(minutes=20))
    assert inc.allowed_transitions("check") == ("evaluate", "handle")


# ---------------------------------------------------------------- working time


def test_working_calendar_skips_nights_and_weekends():
    cal = inc.WorkingCalendar()
    starts = pd.Series(
        pd.to_datetime(
            [
                "2026-11-20 17:00",
                "2026-11-21 10:00",
                "2026-11-23 08:00",
                "2026-11-23 12:00",
            ]
        )
    )
    # Friday 17:00 + 60 min -> 30 Friday + 30 Monday; Saturday + 540 -> Monday 17:30
    got = inc.add_minutes(starts, [60, 540, 30, 0], calendar=cal)
    assert got.tolist() == [
        pd.Timestamp("2026-11-23 09:00"),
        pd.Timestamp("2026-11-23 17:30"),
        pd.Timestamp("2026-11-23 09:00"),
        pd.Timestamp("2026-11-23 12:00"),
    ]
    back = inc.elapsed_minutes(starts, got, calendar=cal)
    np.testing.assert_allclose(back, [60, 540, 30, 0])
    # calendar minutes: a plain difference
    plain = inc.add_minutes(starts, 60)
    assert plain.iloc[0] == pd.Timestamp("2026-11-20 18:00")
    # a whole week is 5 x 540 working minutes
    week = inc.elapsed_minutes(
        [pd.Timestamp("2026-11-16 00:00")],
        [pd.Timestamp("2026-11-23 00:00")],
        calendar=cal,
    )
    assert week[0] == 5 * 540


def test_working_calendar_converts_aware_times():
    cal = inc.WorkingCalendar()
    # 01:00 UTC = 09:00 in Shanghai, Monday
    start = pd.Series([pd.Timestamp("2026-11-16 01:00", tz="UTC")])
    got = inc.add_minutes(start, [60], calendar=cal)
    assert str(got.dt.tz) == "Asia/Shanghai"
    assert got.iloc[0] == pd.Timestamp("2026-11-16 10:00", tz="Asia/Shanghai")


def test_working_calendar_rejects_bad_hours():
    from datetime import time

    with pytest.raises(InputError, match="must be after day_start"):
        inc.WorkingCalendar(day_start=time(18, 0), day_end=time(9, 0))
    with pytest.raises(InputError, match="weekdays"):
        inc.WorkingCalendar(weekdays=(7,))


# ------------------------------------------------------------------ summaries


def test_summary_overdue_on_time_and_open311(categories):
    on_time = walk(inc.Incident("A", "SJ0101", T0), CLOSE_PATH)
    # BJ0101 (manhole cover, urgent): register limit 10 min, dispatch 10 min.
    late_dispatch = walk(
        inc.Incident("B", "BJ0101", T0), [("register", 5), ("dispatch", 30)]
    )
    reworked = walk(
        inc.Incident("C", "SJ0101", T0),
        [
            ("register", 5),
            ("dispatch", 10),
            ("handle", 20),
            ("report_back", 60),
            ("check", 70),
            ("handle", 80),
            ("report_back", 120),
            ("check", 130),
            ("evaluate", 140),
        ],
    )
    fresh = inc.Incident("D", "SJ0101", T0 + timedelta(minutes=50))
    frames = inc.incident_frames([on_time, late_dispatch, reworked, fresh])
    as_of = T0 + timedelta(minutes=60)
    s = inc.summarize_incidents(*frames, categories, as_of=as_of).set_index(
        "incident_id"
    )

    assert s.loc["A", "stage"] == "closed"
    assert s.loc["A", "on_time"]
    assert s.loc["A", "is_due"]
    assert s.loc["A", "closed_at"] == pd.Timestamp(T0 + timedelta(minutes=240))
    assert s.loc["A", "registered_at"] == pd.Timestamp(T0 + timedelta(minutes=20))
    assert s.loc["A", "handling_hours"] == pytest.approx(220 / 60)
    assert s.loc["A", "open311_status"] == "closed"
    assert pd.isna(s.loc["A", "expected_datetime"])

    # B: register took 25 min > 10 -> one overdue step; in dispatch for 30 min > 10
    assert s.loc["B", "stage"] == "dispatch"
    assert s.loc["B", "overdue"]
    assert s.loc["B", "overdue_steps"] == 2
    assert s.loc["B", "stage_elapsed_min"] == 30
    assert not s.loc["B", "is_due"]  # planned close not reached yet
    # expected: dispatch 10 + handle 240 + report back 30 + check 60 from 09:30
    assert s.loc["B", "expected_datetime"] == pd.Timestamp(
        T0 + timedelta(minutes=30 + 10 + 240 + 30 + 60)
    )
    assert s.loc["B", "due_at"] == s.loc["B", "expected_datetime"]
    assert s.loc["B", "status_notes"] == "任务派遣"

    assert s.loc["C", "reworks"] == 1
    assert s.loc["C", "checked"]
    assert s.loc["C", "stage"] == "evaluate"
    assert s.loc["C", "is_closed"]
    assert s.loc["C", "on_time"]
    assert s.loc["C", "open311_status"] == "closed"

    assert s.loc["D", "stage"] == "collect"
    assert pd.isna(s.loc["D", "registered_at"])
    assert not s.loc["D", "overdue"]  # collect has no limit
    assert s.loc["D", "open311_status"] == "open"

    fields = inc.open311_fields(s.reset_index(), categories)
    assert fields.loc[0, "service_name"] == "暴露垃圾"
    assert set(fields["status"]) == {"open", "closed"}


def test_summary_with_working_calendar(categories):
    """Register stage from Friday 17:20 to Monday 08:40: 20 working minutes."""
    fri = datetime(2026, 11, 20, 17, 0)
    case = inc.advance(
        inc.Incident("A", "SJ0101", fri),
        "register",
        actor="op",
        at=fri + timedelta(minutes=20),
    )
    case = inc.advance(case, "dispatch", actor="op", at=datetime(2026, 11, 23, 8, 40))
    frames = inc.incident_frames([case])
    as_of = datetime(2026, 11, 23, 9, 0)
    work = inc.summarize_incidents(
        *frames, categories, as_of=as_of, calendar=inc.WorkingCalendar()
    )
    wall = inc.summarize_incidents(*frames, categories, as_of=as_of)
    # register limit of SJ0101 is 30 min: within it in working time, far over on
    # the wall clock (63 h 20 min)
    assert work["overdue_steps"].iloc[0] == 0
    assert wall["overdue_steps"].iloc[0] == 1
    assert work["stage_elapsed_min"].iloc[0] == 20
    assert not work["overdue"].iloc[0]
    # planned close: 30 + 240 + 60 + 60 = 390 working minutes from Monday 08:40
    assert work["due_at"].iloc[0] == pd.Timestamp("2026-11-23 15:10")


def test_summary_keeps_time_zones(categories):
    case = walk(inc.Incident("A", "SJ0101", T0), CLOSE_PATH[:3])
    incidents, transitions = inc.incident_frames([case])
    incidents["reported_at"] = incidents["reported_at"].dt.tz_localize("Asia/Shanghai")
    transitions["at"] = (
        transitions["at"].dt.tz_localize("Asia/Shanghai").dt.tz_convert("UTC")
    )
    as_of = pd.Timestamp(T0 + timedelta(minutes=60), tz="Asia/Shanghai")
    s = inc.summarize_incidents(incidents, transitions, categories, as_of=as_of)
    assert str(s["registered_at"].dt.tz) == "Asia/Shanghai"
    assert s["registered_at"].iloc[0] == pd.Timestamp(
        T0 + timedelta(minutes=20), tz="Asia/Shanghai"
    )
    assert s["stage_elapsed_min"].iloc[0] == 20  # handle since 09:40, as_of 10:00
    naive = inc.summarize_incidents(
        *inc.incident_frames([case]), categories, as_of=as_of
    )
    assert naive["stage_elapsed_min"].iloc[0] == 20  # naive = Shanghai wall clock


def test_invalid_log_is_refused(categories):
    frames = inc.incident_frames([inc.Incident("A", "SJ0101", T0)])
    log = pd.DataFrame(
        {
            "incident_id": ["A", "A"],
            "from_stage": ["collect", "register"],
            "to_stage": ["register", "handle"],
            "at": [T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)],
        }
    )
    bad = inc.check_transitions(frames[0], log)
    assert bad["problem"].tolist() == ["transition not allowed"]
    with pytest.raises(TransitionError, match="1 rows break the lifecycle rules"):
        inc.summarize_incidents(
            frames[0], log, categories, as_of=T0 + timedelta(hours=1)
        )
    gap = log.assign(
        from_stage=["collect", "dispatch"], to_stage=["register", "handle"]
    )
    assert inc.check_transitions(frames[0], gap)["problem"].tolist() == [
        "from_stage does not match the previous step"
    ]
    unknown = frames[0].assign(category_code="XX9999")
    with pytest.raises(InputError, match="category table lacks"):
        inc.summarize_incidents(unknown, log.head(1), categories, as_of=T0)


def test_batch_summary_scales(categories):
    """20 000 incidents with ~90 000 transitions summarise in a few seconds."""
    rng = np.random.default_rng(3)
    n = 20_000
    ids = np.array([f"I{i}" for i in range(n)])
    reported = pd.Timestamp(T0) + pd.to_timedelta(
        rng.integers(0, 30 * 1440, n), unit="min"
    )
    depth = rng.integers(0, 8, n)  # how far along the close path
    rows = []
    path = [s for s, _ in CLOSE_PATH]
    prev = ["collect", *path[:-1]]
    for k in range(7):
        sel = depth > k
        rows.append(
            pd.DataFrame(
                {
                    "incident_id": ids[sel],
                    "from_stage": prev[k],
                    "to_stage": path[k],
                    "at": reported[sel] + pd.to_timedelta(30 * (k + 1), unit="min"),
                }
            )
        )
    log = pd.concat(rows, ignore_index=True)
    frame = pd.DataFrame(
        {
            "incident_id": ids,
            "category_code": rng.choice(categories["category_code"], n),
            "reported_at": reported,
        }
    )
    s = inc.summarize_incidents(
        frame, log, categories, as_of=pd.Timestamp(T0) + pd.Timedelta(days=40)
    )
    assert len(s) == n
    assert s.index.equals(frame.index)
    assert (s["is_closed"] == (depth >= 6)).all()
    assert (s["stage"].to_numpy() == np.array(["collect", *path])[depth]).all()


# ------------------------------------------------------------------ duplicates


def _points(
    rows: list[tuple[str, str, float, float, int, int | None]],
) -> gpd.GeoDataFrame:
    x0, y0 = ORIGIN
    return gpd.GeoDataFrame(
        {
            "incident_id": [r[0] for r in rows],
            "category_code": [r[1] for r in rows],
            "reported_at": [
                pd.Timestamp(T0) + pd.Timedelta(minutes=r[4]) for r in rows
            ],
            "closed_at": [
                pd.NaT
                if r[5] is None
                else pd.Timestamp(T0) + pd.Timedelta(minutes=r[5])
                for r in rows
            ],
        },
        geometry=gpd.points_from_xy(
            [x0 + r[2] for r in rows], [y0 + r[3] for r in rows]
        ),
        crs=PROJECTED_CRS,
        index=pd.Index([10 * i for i in range(len(rows))]),
    )


def test_duplicates_same_category_near_and_open():
    pts = _points(
        [
            ("A", "SJ0101", 0, 0, 0, None),
            ("B", "SJ0101", 30, 0, 60, None),  # 30 m, 1 h later -> dup of A
            ("C", "SJ0102", 10, 0, 60, None),  # other category
            ("D", "SJ0101", 80, 0, 120, None),  # 80 m from A, 50 m from B -> B
            ("E", "SJ0101", 500, 0, 60, None),  # far away
            ("F", "SJ0101", 0, 10, 60 * 30, None),  # 30 h later: outside window of A..
            ("G", "BJ0101", 0, 0, 0, 30),  # closed at +30 min
            ("H", "BJ0101", 5, 0, 45, None),  # G closed by then; I still open -> I
            ("I", "BJ0101", 5, 5, 20, None),  # G still open -> dup of G
            ("J", "BJ0102", 0, 0, 0, 10),
            ("K", "BJ0102", 0, 0, 20, None),  # J closed before -> not a dup
        ]
    )
    dup = inc.find_duplicates(pts, radius_m=50, window=timedelta(hours=24))
    assert dup.index.equals(pts.index)
    got = dict(zip(pts["incident_id"], dup, strict=True))
    assert got == {
        "A": None,
        "B": "A",
        "C": None,
        "D": "B",
        "E": None,
        "F": None,
        "G": None,
        "H": "I",
        "I": "G",
        "J": None,
        "K": None,
    }
    # without closure times every earlier case counts as open
    dup_open = inc.find_duplicates(pts.drop(columns="closed_at"), radius_m=50)
    assert dup_open.iloc[7] == "G"
    assert dup_open.iloc[10] == "J"


def test_duplicates_in_geographic_crs_and_errors():
    pts = _points([("A", "SJ0101", 0, 0, 0, None), ("B", "SJ0101", 20, 0, 5, None)])
    geo = pts.to_crs("EPSG:4490")
    assert inc.find_duplicates(geo, radius_m=25).tolist() == [None, "A"]
    assert inc.find_duplicates(geo, radius_m=15).tolist() == [None, None]
    with pytest.raises(InputError, match="must both be positive"):
        inc.find_duplicates(pts, radius_m=0)
    with pytest.raises(MissingCRSError, match="has no CRS"):
        inc.find_duplicates(pts.set_crs(None, allow_override=True))
    empty = inc.find_duplicates(pts.iloc[:0])
    assert len(empty) == 0


def test_incident_frames_round_trip():
    a = walk(inc.Incident("A", "SJ0101", T0), CLOSE_PATH[:3])
    incidents, transitions = inc.incident_frames([a, inc.Incident("B", "BJ0101", T0)])
    assert incidents["incident_id"].tolist() == ["A", "B"]
    assert transitions[["from_stage", "to_stage"]].values.tolist() == [
        ["collect", "register"],
        ["register", "dispatch"],
        ["dispatch", "handle"],
    ]
    assert transitions["at"].iloc[0] == pd.Timestamp(T0 + timedelta(minutes=5))
