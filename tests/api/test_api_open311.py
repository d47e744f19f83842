"""Open311 GeoReport v2 façade: services, a request round trip, filters, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import geopandas as gpd
import shapely

pytestmark = pytest.mark.db

BASE = "/open311/v2"


def _wgs84(grids: gpd.GeoDataFrame, k: int, dx: float = 60, dy: float = 40):
    minx, miny, _, _ = grids.geometry.iloc[k].bounds
    p = gpd.GeoSeries([shapely.Point(minx + dx, miny + dy)], crs=grids.crs)
    q = p.to_crs(4326).iloc[0]
    return float(q.x), float(q.y)


def _errors(resp, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body, list)
    assert len(body) == 1
    assert body[0]["code"] == status
    return body[0]["description"]


def test_services(api_env):
    resp = api_env.client.get(
        f"{BASE}/services.json", params={"api_key": api_env.keys["consumer"]}
    )
    assert resp.status_code == 200
    services = {s["service_code"]: s for s in resp.json()}
    assert services["SJ0101"]["service_name"] == "暴露垃圾"
    assert services["SJ0101"]["group"] == "市容环境"
    assert services["SJ0101"]["type"] == "realtime"
    assert services["SJ0101"]["metadata"] is False
    one = api_env.client.get(
        f"{BASE}/services/BJ0101.json", headers=api_env.headers("consumer")
    )
    assert one.json() == {"service_code": "BJ0101", "attributes": []}
    missing = api_env.client.get(
        f"{BASE}/services/XX.json", headers=api_env.headers("consumer")
    )
    assert "does not exist" in _errors(missing, 404)
    assert "API key" in _errors(api_env.client.get(f"{BASE}/services.json"), 401)


def test_request_round_trip(api_env, active_plan):
    grids = active_plan["grids"]
    lon, lat = _wgs84(grids, 3)
    form = {
        "api_key": api_env.keys["consumer"],
        "service_code": "SJ0502",
        "lat": f"{lat:.7f}",
        "long": f"{lon:.7f}",
        "description": "店外经营占道",
        "first_name": "五",
        "last_name": "王",
        "phone": "13700001111",
        "email": "never-stored@example.com",
    }
    resp = api_env.client.post(f"{BASE}/requests.json", data=form)
    assert resp.status_code == 201, resp.text
    [created] = resp.json()
    rid = created["service_request_id"]
    assert set(created) == {"service_request_id", "service_notice", "account_id"}
    assert created["account_id"] is None
    assert grids["grid_code"].iloc[3] in created["service_notice"]
    # the request as an Open311 client reads it back
    got = api_env.client.get(
        f"{BASE}/requests/{rid}.json", params={"api_key": api_env.keys["consumer"]}
    )
    assert got.status_code == 200, got.text
    [req] = got.json()
    assert req["service_request_id"] == rid
    assert req["service_code"] == "SJ0502"
    assert req["service_name"] == "店外经营"
    assert req["description"] == "店外经营占道"
    assert req["status"] == "open"
    assert req["status_notes"].startswith("信息收集")
    assert req["lat"] == pytest.approx(lat, abs=1e-7)
    assert req["long"] == pytest.approx(lon, abs=1e-7)
    assert req["agency_responsible"] == f"网格 {grids['grid_code'].iloc[3]}"
    requested = datetime.fromisoformat(req["requested_datetime"])
    assert abs(requested - datetime.now(UTC)) < timedelta(minutes=5)
    assert datetime.fromisoformat(req["expected_datetime"]) > requested
    assert "13700001111" not in got.text
    assert "王" not in got.text
    # the reporter's details were kept (operator only), the e-mail was not
    rep = api_env.client.get(
        f"/v1/incidents/{rid}/reporter", headers=api_env.headers("operator")
    ).json()
    assert rep == {"incident_id": int(rid), "name": "王 五", "phone": "13700001111"}
    # the lifecycle moves the Open311 status: closed once the check passed
    op = api_env.headers("operator")
    for stage in ("register", "dispatch", "handle", "report_back", "check", "evaluate"):
        r = api_env.client.post(
            f"/v1/incidents/{rid}/transitions", json={"to_stage": stage}, headers=op
        )
        assert r.status_code == 200, r.text
    [closed] = api_env.client.get(
        f"{BASE}/requests/{rid}.json", headers=api_env.headers("consumer")
    ).json()
    assert closed["status"] == "closed"
    assert closed["status_notes"].startswith("综合评价")
    assert closed["expected_datetime"] is None
    # filters
    consumer = api_env.headers("consumer")
    listed = api_env.client.get(
        f"{BASE}/requests.json",
        params={"service_code": "SJ0502", "status": "closed"},
        headers=consumer,
    ).json()
    assert rid in [r["service_request_id"] for r in listed]
    still_open = api_env.client.get(
        f"{BASE}/requests.json",
        params={"service_code": "SJ0502", "status": "open"},
        headers=consumer,
    ).json()
    assert rid not in [r["service_request_id"] for r in still_open]
    past = api_env.client.get(
        f"{BASE}/requests.json",
        params={"end_date": "2020-01-01T00:00:00Z"},
        headers=consumer,
    ).json()
    assert past == []
    by_id = api_env.client.get(
        f"{BASE}/requests.json",
        params={"service_request_id": f"{rid},999999"},
        headers=consumer,
    ).json()
    assert [r["service_request_id"] for r in by_id] == [rid]


def test_json_body_and_address_string(api_env, active_plan):
    resp = api_env.client.post(
        f"{BASE}/requests.json",
        json={"service_code": "SJ0201", "address_string": "中山路5号"},
        headers=api_env.headers("worker"),
    )
    assert resp.status_code == 201, resp.text
    rid = resp.json()[0]["service_request_id"]
    [req] = api_env.client.get(
        f"{BASE}/requests/{rid}.json", headers=api_env.headers("worker")
    ).json()
    assert req["address"] == "中山路5号"
    assert req["agency_responsible"].startswith("网格 421002001")


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [
        ({"lat": "30.3", "long": "111.0"}, 400, "service_code is required"),
        ({"service_code": "SJ0101"}, 400, "a location is required"),
        ({"service_code": "SJ0101", "lat": "30.3"}, 400, "both lat and long"),
        ({"service_code": "SJ0101", "lat": "x", "long": "y"}, 400, "invalid location"),
        ({"service_code": "NOPE", "lat": "30.3", "long": "111.0"}, 404, "NOPE"),
        ({"service_code": "SJ0101", "lat": "95", "long": "111"}, 422, "lat"),
        (
            {"service_code": "SJ0101", "address_string": "月球路1号"},
            422,
            "could not be placed",
        ),
    ],
)
def test_errors_are_open311_style(api_env, active_plan, data, status, text):
    resp = api_env.client.post(
        f"{BASE}/requests.json", data=data, headers=api_env.headers("consumer")
    )
    assert text in _errors(resp, status)


def test_auth_and_content_type_errors(api_env):
    form = {"service_code": "SJ0101", "lat": "30.3", "long": "111.0"}
    assert "API key" in _errors(
        api_env.client.post(f"{BASE}/requests.json", data=form), 401
    )
    bad_key = {**form, "api_key": "sg_nope"}
    _errors(api_env.client.post(f"{BASE}/requests.json", data=bad_key), 401)
    xml = api_env.client.post(
        f"{BASE}/requests.json",
        content=b"<x/>",
        headers={"Content-Type": "text/xml", **api_env.headers("consumer")},
    )
    assert "not supported" in _errors(xml, 415)
    _errors(
        api_env.client.get(
            f"{BASE}/requests/abc.json", headers=api_env.headers("consumer")
        ),
        404,
    )
    _errors(
        api_env.client.get(
            f"{BASE}/requests.json",
            params={"status": "pending"},
            headers=api_env.headers("consumer"),
        ),
        400,
    )
