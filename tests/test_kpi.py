"""KPIs against a hand-computed case: 911 of 972 closed (93.72 %), 737 on time (75.82 %)."""

from __future__ import annotations

import io
import json
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from spatialgrid import incidents as inc
from spatialgrid import kpi
from spatialgrid.errors import InputError, MissingColumnError

T0 = pd.Timestamp(datetime(2026, 10, 5, 9, 0))
AS_OF = T0 + pd.Timedelta(days=45)

# SJ0101 limits (minutes): register 30, dispatch 30, handle 240, report back 60,
# check 60; planned close = registration + 390 minutes.
ON_TIME = [("register", 5), ("dispatch", 20), ("handle", 40), ("report_back", 200),
           ("check", 220), ("evaluate", 240), ("closed", 300)]  # fmt: skip
REWORKED = [("register", 5), ("dispatch", 20), ("handle", 40), ("report_back", 100),
            ("check", 120), ("handle", 130), ("report_back", 200), ("check", 210),
            ("evaluate", 230), ("closed", 300)]  # fmt: skip
LATE = [("register", 5), ("dispatch", 20), ("handle", 40), ("report_back", 340),
        ("check", 360), ("evaluate", 380), ("closed", 400)]  # fmt: skip
STUCK = [("register", 5), ("dispatch", 20), ("handle", 40)]
DUPLICATE = [("duplicate", 10)]


def _log(
    ids: np.ndarray, reported: pd.Series, steps: list[tuple[str, int]]
) -> pd.DataFrame:
    frames = []
    prev = "collect"
    for stage, minute in steps:
        frames.append(
            pd.DataFrame(
                {
                    "incident_id": ids,
                    "from_stage": prev,
                    "to_stage": stage,
                    "at": reported.to_numpy() + np.timedelta64(minute, "m"),
                    "actor": "op",
                }
            )
        )
        prev = stage
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def case() -> pd.DataFrame:
    """700 on time + 37 reworked on time + 174 late + 61 stuck + 30 fresh + 20 dups."""
    groups = [
        ("ontime", 700, ON_TIME),
        ("rework", 37, REWORKED),
        ("late", 174, LATE),
        ("stuck", 61, STUCK),
        ("fresh", 30, STUCK[:2]),
        ("dup", 20, DUPLICATE),
    ]
    incidents, logs = [], []
    for name, n, steps in groups:
        ids = np.array([f"{name}{i}" for i in range(n)])
        if name == "fresh":  # in dispatch for 20 of 30 minutes: not due, not late
            reported = pd.Series([AS_OF - pd.Timedelta(minutes=40)] * n)
        else:  # two per day from 5 October: spans October and November
            reported = pd.Series(
                T0 + pd.to_timedelta(np.arange(n) * 720 % (40 * 1440), unit="m")
            )
        incidents.append(
            pd.DataFrame(
                {
                    "incident_id": ids,
                    "category_code": "SJ0101",
                    "reported_at": reported,
                    "group": name,
                    # grid 420100001001 01 gets the stuck cases and 100 on-time ones
                    "grid_code": "42010000100101"
                    if name == "stuck"
                    else [
                        "42010000100101"
                        if (name == "ontime" and i < 100)
                        else "42010000100102"
                        for i in range(n)
                    ],
                    "community_code": "420100001001",
                    "subdistrict_code": "420100001",
                }
            )
        )
        logs.append(_log(ids, reported, steps))
    frame = pd.concat(incidents, ignore_index=True)
    log = pd.concat(logs, ignore_index=True)
    return inc.summarize_incidents(frame, log, inc.load_categories(), as_of=AS_OF)


def test_hand_computed_case(case):
    row = kpi.compute_kpis(case).iloc[0]
    assert row["incidents"] == 1022
    assert row["registered"] == 1002  # all but the 20 duplicates
    assert row["due"] == 972
    assert row["closed"] == 911
    assert row["closed_on_time"] == 737
    assert row["closure_rate_pct"] == 93.72  # 911 / 972
    assert row["on_time_rate_pct"] == 75.82  # 737 / 972
    assert row["open"] == 61 + 30
    assert row["overdue"] == 61
    assert row["checked"] == 911
    assert row["reworked"] == 37
    assert row["rework_rate_pct"] == round(100 * 37 / 911, 2)
    hours = (700 * 220 + 37 * 210 + 174 * 360) / 911 / 60
    assert row["avg_handling_hours"] == round(hours, 2)


def test_by_grid_community_subdistrict(case):
    by_grid = kpi.compute_kpis(case, by="grid").set_index("grid_code")
    g1 = by_grid.loc["42010000100101"]
    assert g1["due"] == 161
    assert g1["closed"] == 100
    assert g1["closure_rate_pct"] == round(100 * 100 / 161, 2)
    assert g1["overdue"] == 61
    assert g1["rework_rate_pct"] == 0.0
    g2 = by_grid.loc["42010000100102"]
    assert g2["due"] == 811
    assert g2["closed_on_time"] == 637
    # the rows add up to the total
    assert by_grid["due"].sum() == 972
    assert by_grid["closed"].sum() == 911
    for level, col in (
        ("community", "community_code"),
        ("subdistrict", "subdistrict_code"),
    ):
        one = kpi.compute_kpis(case, by=level)
        assert one[col].tolist() == [case[col].iloc[0]]
        assert one["closure_rate_pct"].iloc[0] == 93.72


def test_by_month_and_combined(case):
    months = kpi.compute_kpis(case, by="month")
    # the 20 duplicates were never registered: their month is empty
    assert months["month"].isna().sum() == 1
    assert months.loc[months["month"].isna(), "incidents"].iloc[0] == 20
    assert set(months["month"].dropna()) == {"2026-10", "2026-11"}
    assert months["due"].sum() == 972
    both = kpi.compute_kpis(case, by=["grid", "month"])
    assert list(both.columns[:2]) == ["grid_code", "month"]
    assert both["closed"].sum() == 911


def test_undefined_rates_are_empty_not_zero(case):
    dups = case[case["group"] == "dup"]
    row = kpi.compute_kpis(dups).iloc[0]
    assert row["due"] == 0
    assert np.isnan(row["closure_rate_pct"])
    records = kpi.kpis_to_records(kpi.compute_kpis(dups))
    assert records[0]["closure_rate_pct"] is None


def test_json_and_csv(case):
    table = kpi.compute_kpis(case, by="grid")
    data = json.loads(kpi.kpis_to_json(table))
    assert data[0]["grid_code"] == "42010000100101"
    assert isinstance(data[0]["due"], int)
    assert set(kpi.KPI_COLUMNS) <= set(data[0])
    csv = kpi.kpis_to_csv(table)
    back = pd.read_csv(io.StringIO(csv), dtype={"grid_code": str})
    assert back["grid_code"].tolist() == table["grid_code"].tolist()
    assert back["closure_rate_pct"].tolist() == table["closure_rate_pct"].tolist()
    assert "reporter" not in csv


def test_kpi_errors(case):
    with pytest.raises(MissingColumnError, match="district_code"):
        kpi.compute_kpis(case, by="district")
    with pytest.raises(MissingColumnError, match="summarize_incidents"):
        kpi.compute_kpis(case.drop(columns="is_due"))
    with pytest.raises(InputError, match="is empty"):
        kpi.compute_kpis(case, by=[])
