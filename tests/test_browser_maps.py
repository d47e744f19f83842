"""Headless Chromium opens every map page with the network outside loopback blocked.

Pages are rendered by spatialgrid.render and served with their assets from a local
http.server on 127.0.0.1. Each page must load with no failed or blocked request and
no console error, define Leaflet, draw the grid polygons and the heat layer, and
give a non-blank screenshot. The heat colours must not change with zoom.

Uses the system Chromium (never downloads one); see the `browser` fixture.
"""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
import pytest
from offline_browser import PAINTED_JS, open_offline, screenshot_stats

from spatialgrid import hotspots, render, testing

pytestmark = pytest.mark.browser

PAGES = ("grid", "heat", "hotspot", "animation", "heat_inline")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("folium")
    plan = testing.lattice_plan(n_communities=3, nx=6, ny=4)  # 36 grids
    grids = plan["grids"]
    incidents = testing.synthetic_incidents(grids, 4000, seed=3, cluster_share=0.3)
    root = tmp_path_factory.mktemp("maps")
    (root / "static").symlink_to(render.STATIC_DIR, target_is_directory=True)
    maps = {
        "grid": render.render_grid_map(
            grids, streets=plan["streets"], blocks=plan["blocks"]
        ),
        "heat": render.render_incident_heatmap(
            incidents,
            grids=grids,
            start="2026-10-01",
            end="2026-10-31",
            categories=["SJ0101", "SJ0501", "BJ0101"],
            cell_size_m=50,
        ),
        "hotspot": render.render_hotspot_map(hotspots.find_hotspots(grids, incidents)),
        "animation": render.render_incident_animation(
            incidents, freq="W", cell_size_m=50, grids=grids
        ),
    }
    for name, m in maps.items():
        (root / f"{name}.html").write_text(
            render.map_to_html(m, asset_base_url="/static"), encoding="utf-8"
        )
    # folium's stock HeatMap of the raw points, for comparison (same vendored assets)
    import folium
    from folium.plugins import HeatMap

    stock = folium.Map(tiles=None)
    raw = incidents.to_crs(4326)
    HeatMap(np.column_stack([raw.geometry.y, raw.geometry.x]).tolist()).add_to(stock)
    stock.fit_bounds(maps["heat"].get_bounds())
    (root / "heat_stock.html").write_text(render.map_to_html(stock), encoding="utf-8")
    inline = render.render_incident_heatmap(incidents, grids=grids, cell_size_m=50)
    render.write_map_html(inline, root / "heat_inline.html", inline=True)
    return {"root": root, "n_grids": len(grids)}


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site["root"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _open(browser, url: str):
    """Open ``url`` offline; wait until Leaflet has drawn."""
    page, log = open_offline(browser, url)
    page.wait_for_function("window.L !== undefined")
    page.wait_for_timeout(600)  # heat layers draw on the next animation frame
    return page, log


@pytest.mark.parametrize("name", PAGES)
def test_map_page_offline(browser, server, site, screens, name):
    page, log = _open(browser, f"{server}/{name}.html")
    try:
        assert log["blocked"] == []
        assert log["failed"] == []
        assert log["http_errors"] == []
        assert log["console"] == []
        assert page.evaluate("typeof window.L") == "object"
        assert page.evaluate("L.version") == "1.9.3"
        # every page draws the grid polygons (SVG paths)
        assert page.locator(".leaflet-overlay-pane svg path").count() >= site["n_grids"]
        if name == "animation":
            assert page.locator(".leaflet-control-timecontrol").count() > 0
            assert page.evaluate(PAINTED_JS, "canvas.heatmap-canvas") > 1000
        if name.startswith("heat"):
            assert page.locator("canvas.leaflet-heatmap-layer").count() == 1
            assert page.evaluate(PAINTED_JS, "canvas.leaflet-heatmap-layer") > 1000
        shot = screens / f"{name}.png"
        png = page.screenshot(path=str(shot))
        stats = screenshot_stats(browser, png)
        assert stats["width"] == 1000
        assert stats["variance"] > 50  # not a blank page
        assert stats["colours"] > 20
    finally:
        page.close()


_PICK = """
() => {
  const map = Object.values(window).find((v) => v instanceof L.Map);
  let heat = null;
  map.eachLayer((l) => { if (l instanceof L.HeatLayer) heat = l; });
  const pts = heat._latlngs;
  const top = pts.reduce((a, b) => (b[2] > a[2] ? b : a));
  // a middling cell close to the hottest, so both stay in view when zooming in
  const dist = (p) => Math.hypot(p[0] - top[0], p[1] - top[1]);
  const mid = pts.filter((p) => p[2] > 0.3 && p[2] < 0.7).sort((a, b) => dist(a) - dist(b))[0];
  return [top, mid];
}
"""

_PIXELS = """
(cells) => {
  const map = Object.values(window).find((v) => v instanceof L.Map);
  const ctx = document.querySelector('canvas.leaflet-heatmap-layer').getContext('2d');
  return cells.map((p) => {
    const c = map.latLngToContainerPoint([p[0], p[1]]);
    return Array.from(ctx.getImageData(Math.round(c.x), Math.round(c.y), 1, 1).data);
  });
}
"""

_SET_VIEW = """
([lat, lng, z]) => Object.values(window).find((v) => v instanceof L.Map)
  .setView([lat, lng], z, {animate: false})
"""


def _pixels_across_zoom(browser, url: str, cells: list) -> np.ndarray:
    page, log = _open(browser, url)
    try:
        centre = [(cells[0][0] + cells[1][0]) / 2, (cells[0][1] + cells[1][1]) / 2]
        seen = []
        for zoom in (14, 16, 18):
            page.evaluate(_SET_VIEW, [*centre, zoom])
            page.wait_for_timeout(400)
            seen.append(page.evaluate(_PIXELS, cells))
        assert log["console"] == []
        return np.array(seen, dtype=float)  # zoom x cell x RGBA
    finally:
        page.close()


def test_heat_colours_do_not_change_with_zoom(browser, server):
    page, _ = _open(browser, f"{server}/heat.html")
    try:
        top, mid = page.evaluate(_PICK)
    finally:
        page.close()
    assert top[2] == 1.0  # the hottest cell sits at the fixed maximum
    ours = _pixels_across_zoom(browser, f"{server}/heat.html", [top, mid])
    assert (ours[..., 3] > 0).all()
    drift = np.abs(ours - ours[0]).max(axis=(0, 2))  # per cell, worst channel
    # the same cell keeps its colour at every zoom (a few levels of kernel
    # rounding), and the hottest and a middling cell look different
    assert drift.max() <= 24, ours
    assert np.abs(ours[0, 0] - ours[0, 1]).max() > 30
    # folium's stock heatmap of the raw points, same places: it re-normalises per
    # zoom and saturates, so it either changes colour more or cannot tell the
    # hottest from a middling cell at some zoom
    stock = _pixels_across_zoom(browser, f"{server}/heat_stock.html", [top, mid])
    stock_drift = np.abs(stock - stock[0]).max(axis=(0, 2))
    stock_contrast = np.abs(stock[:, 0] - stock[:, 1]).max(axis=1).min()
    ours_contrast = np.abs(ours[:, 0] - ours[:, 1]).max(axis=1).min()
    assert ours_contrast > 30
    assert stock_drift.max() > drift.max() or stock_contrast < 30, stock
