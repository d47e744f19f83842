"""Map pages served by the real API, opened by headless Chromium with the network
outside loopback blocked: no failed request, no console error, a screenshot that
shows the grids and the heatmap. Plus the access rules of the map pages.

The browser part starts the app with uvicorn on 127.0.0.1 against a database of
its own (a lattice city of 36 grids, an active plan with workers and 1,500 demo
incidents with full histories). Uses the system Chromium (never downloads one).
"""

from __future__ import annotations

import threading
import time

import pytest
from offline_browser import EMPTY_LOG, PAINTED_JS, open_offline, screenshot_stats

from spatialgrid import testing

pytestmark = pytest.mark.db


# ------------------------------------------------------------ access (TestClient)


def test_map_pages_need_an_operator_key_header_or_query(api_env, active_plan):
    client = api_env.client
    assert client.get("/maps/grids").status_code == 401
    worker = client.get("/maps/grids", params={"key": api_env.keys["worker"]})
    assert worker.status_code == 403
    assert "operator" in worker.json()["detail"]
    by_query = client.get("/maps/grids", params={"key": api_env.keys["operator"]})
    assert by_query.status_code == 200, by_query.text
    assert by_query.headers["content-type"].startswith("text/html")
    assert by_query.headers["referrer-policy"] == "no-referrer"
    assert by_query.headers["cache-control"] == "no-store"
    page = by_query.text
    assert '<script src="/static/leaflet/leaflet.js">' in page
    assert "cdn.jsdelivr" not in page
    assert "https://" not in page.split("<body")[0]
    assert active_plan["grids"]["grid_code"].iloc[0] in page
    # the worker's name is in the popups (JSON-escaped inside the page)
    assert "网格员0".encode("unicode_escape").decode() in page
    by_header = client.get("/maps/grids", headers=api_env.headers("planner"))
    assert by_header.status_code == 200
    index = client.get("/maps", params={"key": api_env.keys["operator"]})
    assert f"/maps/heatmap?key={api_env.keys['operator']}" in index.text


def test_hotspots_refused_below_30_grids(api_env, active_plan):
    resp = api_env.client.get("/maps/hotspots", headers=api_env.headers("operator"))
    assert resp.status_code == 422
    assert "at least min_grids=30" in resp.json()["detail"]


def test_heatmap_window_must_be_ordered(api_env, active_plan):
    resp = api_env.client.get(
        "/maps/heatmap",
        params={"start": "2026-10-02", "end": "2026-10-01"},
        headers=api_env.headers("operator"),
    )
    assert resp.status_code == 422
    assert "must be before end" in resp.json()["detail"]


# ------------------------------------------------------------------- browser


def _assignments(blocks, grids):
    """Block → grid by the block's representative point."""
    import geopandas as gpd

    points = blocks[["block_id"]].set_geometry(blocks.representative_point())
    joined = gpd.sjoin(points, grids[["grid_code", "geometry"]], predicate="within")
    return joined[["block_id", "grid_code"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def served(module_db_url):
    """The real API on 127.0.0.1 with a city, a plan in force and incidents."""
    import uvicorn

    from api.config import Settings
    from api.main import create_app
    from spatialgrid.cli.incidents import seed_demo_incidents
    from spatialgrid.db import repository as repo
    from spatialgrid.db.engine import make_engine, session_scope

    city, grids = testing.lattice_city(n_communities=3, nx=6, ny=4)
    engine = make_engine(module_db_url, upgrade=True)
    with session_scope(engine) as session:
        repo.save_city(city, session=session, replace=True)
        plan_id = repo.create_plan(
            grids.drop(columns=["worker"]),
            _assignments(city.blocks, grids),
            session=session,
            name="browser test",
            parameters={},
        )
        repo.activate_plan(plan_id, session=session)
        for i, code in enumerate(grids["grid_code"]):
            wid = repo.create_worker(session=session, name=f"网格员{i}")
            repo.assign_worker(plan_id, code, wid, session=session)
        key = repo.create_api_key(session=session, role="operator", name="maps")
    with session_scope(engine) as session:
        summary = seed_demo_incidents(session, count=1500, seed=4, days=60)
    engine.dispose()
    assert summary["incidents"] == 1500
    app = create_app(Settings(database_url=module_db_url))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield {"base": f"http://127.0.0.1:{port}", "key": key, "n_grids": len(grids)}
    server.should_exit = True
    thread.join(timeout=10)


PAGES = {
    "grids": "/maps/grids",
    "heatmap": "/maps/heatmap",
    "hotspots": "/maps/hotspots",
    "coverage": "/maps/coverage",
    "animation": "/maps/animation?freq=W",
}


@pytest.mark.browser
@pytest.mark.parametrize("name", list(PAGES))
def test_map_page_offline_in_chromium(browser, served, screens, name):
    sep = "&" if "?" in PAGES[name] else "?"
    url = f"{served['base']}{PAGES[name]}{sep}key={served['key']}"
    page, log = open_offline(browser, allowed=(served["base"] + "/", "data:"))
    try:
        response = page.goto(url, wait_until="load")
        assert response is not None
        assert response.status == 200
        page.wait_for_function("window.L !== undefined")
        page.wait_for_timeout(700)  # heat layers draw on the next animation frame
        assert log == EMPTY_LOG
        assert page.evaluate("L.version") == "1.9.3"
        paths = page.locator(".leaflet-overlay-pane svg path").count()
        assert paths >= served["n_grids"]  # the grids are drawn
        if name == "heatmap":
            assert page.locator("canvas.leaflet-heatmap-layer").count() == 1
            assert page.evaluate(PAINTED_JS, "canvas.leaflet-heatmap-layer") > 1000
        if name == "animation":
            assert page.locator(".leaflet-control-timecontrol").count() > 0
        png = page.screenshot(path=str(screens / f"api_{name}.png"))
        stats = screenshot_stats(browser, png)
        assert stats["width"] == 1000
        assert stats["variance"] > 50  # not a blank page
        assert stats["colours"] > 20
    finally:
        page.close()
