"""Incident API: intake (coordinates in any system, addresses), roles, lifecycle,
duplicates, reporters' privacy and audit, recompute, KPIs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

import geopandas as gpd
import shapely

from spatialgrid.coords import wgs84_to_gcj02
from spatialgrid.crs import STORAGE_EPSG

pytestmark = pytest.mark.db


def _wgs84(grids: gpd.GeoDataFrame, k: int, dx: float = 50, dy: float = 50):
    """WGS-84 lon/lat of a point dx, dy metres from grid k's SW corner."""
    minx, miny, _, _ = grids.geometry.iloc[k].bounds
    pt = gpd.GeoSeries([shapely.Point(minx + dx, miny + dy)], crs=grids.crs)
    p = pt.to_crs(STORAGE_EPSG).iloc[0]  # CGCS2000 ≈ WGS-84 at centimetres
    return float(p.x), float(p.y)


def _report(env, role="worker", **body):
    body.setdefault("category_code", "SJ0101")
    return env.client.post("/v1/incidents", json=body, headers=env.headers(role))


def test_categories_come_from_the_table(api_env):
    resp = api_env.client.get("/v1/categories", headers=api_env.headers("consumer"))
    assert resp.status_code == 200
    cats = {c["category_code"]: c for c in resp.json()}
    assert cats["SJ0101"]["minor_name"] == "暴露垃圾"
    assert cats["SJ0101"]["kind"] == "event"
    assert cats["BJ0101"]["limits_min"]["dispatch"] == 10
    assert cats["BJ0101"]["limits_min"]["collect"] is None


def test_report_by_coordinates_assigns_grid_community_worker(api_env, active_plan):
    grids = active_plan["grids"]
    lon, lat = _wgs84(grids, 4)
    resp = _report(
        api_env,
        description="路边垃圾堆放",
        location={"lon": lon, "lat": lat, "crs": "wgs84"},
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    code = grids["grid_code"].iloc[4]
    assert body["grid_code"] == code
    assert body["community_code"] == grids["community_code"].iloc[4]
    assert body["subdistrict_code"] == "421002001"
    assert body["worker_id"] == active_plan["workers"][code]
    assert body["stage"] == "collect"
    assert body["stage_label"] == "信息收集"
    assert body["allowed_next"][0] == "register"
    assert body["open311_status"] == "open"
    assert body["history"] == []
    assert body["lon"] == pytest.approx(lon, abs=1e-7)
    assert resp.headers["Location"].endswith(f"/v1/incidents/{body['id']}")
    # a worker does not learn whether a reporter left details; an operator does
    assert body["has_reporter"] is None
    got = api_env.client.get(
        f"/v1/incidents/{body['id']}", headers=api_env.headers("operator")
    ).json()
    assert got["has_reporter"] is False


def test_gcj02_coordinates_are_converted_not_guessed(api_env, active_plan):
    grids = active_plan["grids"]
    lon, lat = _wgs84(grids, 1, 100, 50)  # mid-grid
    glon, glat = (float(v[0]) for v in wgs84_to_gcj02([lon], [lat]))
    ok = _report(
        api_env,
        category_code="SJ0201",
        location={"lon": glon, "lat": glat, "crs": "gcj02"},
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["grid_code"] == grids["grid_code"].iloc[1]
    assert ok.json()["lon"] == pytest.approx(lon, abs=1e-6)
    # the same numbers taken as WGS-84 land hundreds of metres away
    wrong = _report(
        api_env,
        category_code="SJ0202",
        location={"lon": glon, "lat": glat, "crs": "wgs84"},
    )
    assert wrong.json()["grid_code"] != grids["grid_code"].iloc[1]
    # no crs: refused
    missing = _report(api_env, location={"lon": lon, "lat": lat})
    assert missing.status_code == 422
    assert "crs is required" in missing.json()["detail"]
    bad = _report(api_env, location={"lon": lon, "lat": lat, "crs": "EPSG:999999"})
    assert bad.status_code == 422


def test_report_by_address_is_geocoded(api_env, active_plan):
    resp = _report(api_env, category_code="SJ0302", location={"address": "中山路3号"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["geocoded"]["address_id"] == "A1"
    assert body["address"] == "中山路3号"
    # door plate A1 is the centroid of block B0_1: west community, first row
    assert body["grid_code"] == "42100200100101"
    unknown = _report(api_env, location={"address": "人民路999号"})
    assert unknown.status_code == 422
    assert "could not be placed" in unknown.json()["detail"]


def test_roles(api_env, active_plan):
    lon, lat = _wgs84(active_plan["grids"], 0)
    loc = {"lon": lon, "lat": lat, "crs": "cgcs2000"}
    assert (
        _report(api_env, "consumer", category_code="SJ0503", location=loc).status_code
        == 201
    )
    assert (
        api_env.client.get(
            "/v1/incidents", headers=api_env.headers("consumer")
        ).status_code
        == 403
    )
    assert api_env.client.post("/v1/incidents", json={}).status_code == 401
    assert (
        api_env.client.post(
            "/v1/incidents/recompute-grids", headers=api_env.headers("worker")
        ).status_code
        == 403
    )


def test_transitions_allowed_refused_and_field_steps(api_env, active_plan):
    lon, lat = _wgs84(active_plan["grids"], 2)
    iid = _report(
        api_env,
        category_code="BJ0105",
        location={"lon": lon, "lat": lat, "crs": "wgs84"},
    ).json()["id"]
    url = f"/v1/incidents/{iid}/transitions"
    op, worker = api_env.headers("operator"), api_env.headers("worker")
    bad = api_env.client.post(url, json={"to_stage": "handle"}, headers=op)
    assert bad.status_code == 409
    assert bad.json()["allowed"] == [
        "register",
        "duplicate",
        "not_responsible",
        "no_action",
    ]
    assert bad.json()["stage"] == "collect"
    assert (
        api_env.client.post(url, json={"to_stage": "nonsense"}, headers=op).status_code
        == 422
    )
    # the command centre registers and dispatches; a worker may not
    assert (
        api_env.client.post(
            url, json={"to_stage": "register"}, headers=worker
        ).status_code
        == 403
    )
    r = api_env.client.post(
        url, json={"to_stage": "register", "note": "立案"}, headers=op
    )
    assert r.status_code == 200, r.text
    api_env.client.post(url, json={"to_stage": "dispatch"}, headers=op)
    # the worker accepts and reports back
    r = api_env.client.post(url, json={"to_stage": "handle"}, headers=worker)
    assert r.status_code == 200, r.text
    r = api_env.client.post(url, json={"to_stage": "report_back"}, headers=worker)
    body = r.json()
    assert body["stage"] == "report_back"
    assert [h["to_stage"] for h in body["history"]] == [
        "register",
        "dispatch",
        "handle",
        "report_back",
    ]
    assert body["history"][0]["note"] == "立案"
    assert body["history"][0]["actor"] == "operator-key"
    assert body["history"][2]["actor"] == "worker-key"
    # terminal states allow nothing
    for stage in ("check", "evaluate", "closed"):
        assert (
            api_env.client.post(url, json={"to_stage": stage}, headers=op).status_code
            == 200
        )
    done = api_env.client.post(url, json={"to_stage": "handle"}, headers=op)
    assert done.status_code == 409
    assert done.json()["allowed"] == []
    assert (
        api_env.client.get(f"/v1/incidents/{iid}", headers=op).json()["open311_status"]
        == "closed"
    )
    assert api_env.client.get("/v1/incidents/999999999", headers=op).status_code == 404


def test_time_limits_make_a_case_overdue(api_env, active_plan):
    lon, lat = _wgs84(active_plan["grids"], 3)
    t0 = datetime.now(UTC) - timedelta(days=10)
    iid = _report(
        api_env,
        category_code="SJ0403",  # gas leak: register 5, dispatch 5 minutes
        reported_at=t0.isoformat(),
        location={"lon": lon, "lat": lat, "crs": "wgs84"},
    ).json()["id"]
    url = f"/v1/incidents/{iid}/transitions"
    op = api_env.headers("operator")
    for stage, minutes in (("register", 1), ("dispatch", 2)):
        at = (t0 + timedelta(minutes=minutes)).isoformat()
        r = api_env.client.post(url, json={"to_stage": stage, "at": at}, headers=op)
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["overdue"] is True
    assert body["stage_limit_min"] == 5
    assert body["stage_elapsed_min"] > 5
    assert datetime.fromisoformat(body["expected_datetime"]) < datetime.now(UTC)
    early = (t0 - timedelta(days=1)).isoformat()
    back = api_env.client.post(
        url, json={"to_stage": "handle", "at": early}, headers=op
    )
    assert back.status_code == 409
    assert "before the previous step" in back.json()["detail"]
    listed = api_env.client.get(
        "/v1/incidents", params={"stage": "dispatch", "category": "SJ0403"}, headers=op
    ).json()
    assert listed["numberMatched"] == 1
    assert listed["features"][0]["properties"]["overdue"] is True


def test_duplicates_are_flagged_and_merged(api_env, active_plan):
    lon, lat = _wgs84(active_plan["grids"], 5, 120, 60)
    loc = {"lon": lon, "lat": lat, "crs": "wgs84"}
    first = _report(api_env, category_code="SJ0504", location=loc).json()
    second = _report(api_env, category_code="SJ0504", location=loc).json()
    assert first["duplicate_of"] is None
    assert second["duplicate_of"] == first["id"]
    other = _report(api_env, category_code="SJ0105", location=loc).json()
    assert other["duplicate_of"] is None
    op = api_env.headers("operator")
    url = f"/v1/incidents/{second['id']}/merge-into/{first['id']}"
    assert (
        api_env.client.post(url, headers=api_env.headers("worker")).status_code == 403
    )
    merged = api_env.client.post(url, json={"note": "同一处"}, headers=op)
    assert merged.status_code == 200, merged.text
    assert merged.json()["stage"] == "duplicate"
    assert (
        merged.json()["history"][-1]["note"]
        == f"merged into incident {first['id']}: 同一处"
    )
    again = api_env.client.post(url, headers=op)
    assert again.status_code == 409


def test_reporter_details_operator_only_audited_never_leaked(
    api_env, active_plan, caplog
):
    caplog.set_level(logging.DEBUG)
    lon, lat = _wgs84(active_plan["grids"], 0, 30, 70)
    phone = "13912345678"
    made = _report(
        api_env,
        "consumer",
        category_code="SJ0601",
        description="邻里纠纷",
        reporter={"name": "李四", "phone": phone},
        location={"lon": lon, "lat": lat, "crs": "wgs84"},
    )
    assert made.status_code == 201
    iid = made.json()["id"]
    assert phone not in made.text
    assert "李四" not in made.text
    url = f"/v1/incidents/{iid}/reporter"
    for role in ("planner", "worker", "consumer"):
        assert api_env.client.get(url, headers=api_env.headers(role)).status_code == 403
    got = api_env.client.get(
        url, params={"purpose": "回访"}, headers=api_env.headers("operator")
    )
    assert got.status_code == 200
    assert got.json() == {"incident_id": iid, "name": "李四", "phone": phone}
    none = api_env.client.get(
        f"/v1/incidents/{iid - 1}/reporter", headers=api_env.headers("operator")
    )
    assert none.status_code == 404
    log = api_env.client.get(
        "/v1/reporter-access-log", headers=api_env.headers("operator")
    ).json()
    assert [(e["incident_id"], e["found"]) for e in log[:2]] == [
        (iid - 1, False),
        (iid, True),
    ]
    assert log[1]["key_name"] == "operator-key"
    assert log[1]["purpose"] == "回访"
    assert (
        api_env.client.get(
            "/v1/reporter-access-log", headers=api_env.headers("planner")
        ).status_code
        == 403
    )
    # nowhere else: lists, details, KPIs (JSON and CSV), Open311, logs
    op = api_env.headers("operator")
    for path, params in (
        ("/v1/incidents", {"limit": 1000}),
        (f"/v1/incidents/{iid}", {}),
        ("/v1/kpi", {"by": "grid"}),
        ("/v1/kpi", {"by": "grid", "format": "csv"}),
        ("/open311/v2/requests.json", {}),
        (f"/open311/v2/requests/{iid}.json", {}),
    ):
        resp = api_env.client.get(path, params=params, headers=op)
        assert resp.status_code == 200, (path, resp.text)
        assert phone not in resp.text, path
        assert "李四" not in resp.text, path
    assert phone not in caplog.text
    assert "李四" not in caplog.text


def test_recompute_grids(api_env, active_plan):
    resp = api_env.client.post(
        "/v1/incidents/recompute-grids", headers=api_env.headers("operator")
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["plan_id"] == active_plan["plan_id"]
    assert body["incidents"] > 5
    assert body["changed"] == 0  # same plan: nothing moves


def test_kpis_hand_computed(api_env, active_plan):
    """3 due cases of one category: 2 closed (1 on time) → 66.67 %, 33.33 %."""
    op = api_env.headers("operator")
    lon, lat = _wgs84(active_plan["grids"], 1, 20, 20)
    monday = datetime(2026, 10, 12, 9, 0, tzinfo=UTC) - timedelta(hours=8)  # 09:00 +08
    plans = {
        "on time": [5, 10, 15, 60, 70, 80],
        "late": [5, 10, 15, 60 * 24 * 21, 60 * 24 * 21 + 10, 60 * 24 * 21 + 20],
        "never handled": [5, 10],
    }
    stages = ["register", "dispatch", "handle", "report_back", "check", "evaluate"]
    for k, (label, minutes) in enumerate(plans.items()):
        t0 = monday + timedelta(hours=k)
        iid = _report(
            api_env,
            category_code="BJ0401",
            description=label,
            reported_at=t0.isoformat(),
            location={"lon": lon + 0.001 * k, "lat": lat, "crs": "wgs84"},
        ).json()["id"]
        for stage, m in zip(stages, minutes, strict=False):
            at = (t0 + timedelta(minutes=m)).isoformat()
            r = api_env.client.post(
                f"/v1/incidents/{iid}/transitions",
                json={"to_stage": stage, "at": at},
                headers=op,
            )
            assert r.status_code == 200, r.text
    resp = api_env.client.get("/v1/kpi", params={"category": "BJ0401"}, headers=op)
    assert resp.status_code == 200
    row = resp.json()["kpis"][0]
    assert (row["due"], row["closed"], row["closed_on_time"]) == (3, 2, 1)
    assert row["closure_rate_pct"] == 66.67
    assert row["on_time_rate_pct"] == 33.33
    assert row["overdue"] == 1
    by_month = api_env.client.get(
        "/v1/kpi", params={"category": "BJ0401", "by": "month"}, headers=op
    ).json()
    assert [r["month"] for r in by_month["kpis"]] == ["2026-10"]
    csv = api_env.client.get(
        "/v1/kpi",
        params={"category": "BJ0401", "by": "month", "format": "csv"},
        headers=op,
    )
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("month,incidents,registered,due,closed")
    assert lines[1].startswith("2026-10,3,3,3,2,1,66.67,33.33,")
    by_grid = api_env.client.get(
        "/v1/kpi", params={"category": "BJ0401", "by": "grid"}, headers=op
    ).json()["kpis"]
    assert sum(r["due"] for r in by_grid) == 3
    assert len(by_grid) >= 1
    assert (
        api_env.client.get("/v1/kpi", headers=api_env.headers("consumer")).status_code
        == 403
    )
