"""Offline folium maps: local assets only, server-normalised heat, hot spots, basemaps."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from spatialgrid import hotspots, render, testing
from spatialgrid.errors import (
    AssetError,
    EmptyInputError,
    InputError,
    MissingColumnError,
)

folium = pytest.importorskip("folium")

_RESOURCE = re.compile(r'<script src="([^"]+)"|<link rel="stylesheet" href="([^"]+)"')


def _text(page: str) -> str:
    """The page with JSON \\uXXXX escapes decoded (folium escapes non-ASCII and <>)."""
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), page)


_CDN_WORDS = (
    "jsdelivr",
    "cloudflare",
    "bootstrapcdn",
    "code.jquery",
    "unpkg",
    "netdna",
)


@pytest.fixture(scope="module")
def plan():
    return testing.lattice_plan(n_communities=3, nx=6, ny=4)  # 36 grids


@pytest.fixture(scope="module")
def incidents(plan):
    return testing.synthetic_incidents(plan["grids"], 3000, seed=2, cluster_share=0.3)


def _maps(plan, incidents):
    grids = plan["grids"]
    return {
        "grid": lambda: render.render_grid_map(
            grids, streets=plan["streets"], blocks=plan["blocks"]
        ),
        "heat": lambda: render.render_incident_heatmap(
            incidents, grids=grids, start="2026-10-01", end="2026-10-16"
        ),
        "hotspot": lambda: render.render_hotspot_map(
            hotspots.find_hotspots(grids, incidents)
        ),
        "animation": lambda: render.render_incident_animation(incidents, freq="W"),
    }


@pytest.mark.parametrize("kind", ["grid", "heat", "hotspot", "animation"])
def test_pages_load_only_vendored_assets(plan, incidents, kind):
    page = render.map_to_html(_maps(plan, incidents)[kind](), asset_base_url="/assets/")
    links = [a or b for a, b in _RESOURCE.findall(page)]
    assert links, "a map page must load Leaflet"
    assert "/assets/leaflet/leaflet.js" in links
    for link in links:
        assert link.startswith("/assets/"), link
        assert (render.STATIC_DIR / link.removeprefix("/assets/")).is_file(), link
    lowered = page.lower()
    for word in _CDN_WORDS:
        assert word not in lowered
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", page)
    # Bootstrap/Font Awesome dropped; jQuery only where a plugin needs it
    assert "bootstrap" not in lowered
    assert ("jquery/jquery.min.js" in page) == (kind == "animation")


@pytest.mark.parametrize("kind", ["heat", "animation"])
def test_inline_page_is_self_contained(plan, incidents, kind):
    page = render.map_to_html(_maps(plan, incidents)[kind](), inline=True)
    assert "<script src=" not in page
    assert '<link rel="stylesheet"' not in page
    assert "L.HeatLayer" in page or "HeatmapOverlay" in page
    assert "data:image/png;base64," in page  # leaflet's layer-control icons
    if kind == "animation":
        assert "data:font/woff;base64," in page  # time control glyphs
    assert "__spatialgrid_static__" not in page


def test_vendored_assets_exist_and_are_documented():
    readme = (render.STATIC_DIR / "README.md").read_text(encoding="utf-8")
    for local in {v for v in render.ASSET_MAP.values() if v is not None}:
        path = render.STATIC_DIR / local
        assert path.is_file(), local
        assert path.stat().st_size > 500, local
        assert local.split("/")[0] in readme
    assert (
        "Leaflet 1.9.3" in (render.STATIC_DIR / "leaflet/leaflet.js").read_text()[:200]
    )
    css = (
        render.STATIC_DIR
        / "leaflet-timedimension/leaflet.timedimension.control.min.css"
    ).read_text()
    assert "//netdna" not in css
    assert "../glyphicons/glyphicons-halflings-regular.woff" in css


def test_unvendored_elements_are_refused(plan):
    m = render.render_grid_map(plan["grids"])
    folium.Marker([30.3, 111.0], icon=folium.Icon(color="red")).add_to(m)
    with pytest.raises(AssetError, match=r"folium\.Icon needs Bootstrap"):
        render.map_to_html(m)
    m2 = render.render_grid_map(plan["grids"])
    from folium.plugins import Fullscreen

    Fullscreen().add_to(m2)
    with pytest.raises(AssetError, match="does not vendor"):
        render.map_to_html(m2)


def test_render_twice_and_write(plan, tmp_path):
    m = render.render_grid_map(plan["grids"])
    linked = render.map_to_html(m, asset_base_url="/static")
    inline = render.map_to_html(m, inline=True)
    assert '<script src="/static/leaflet/leaflet.js">' in linked
    assert "<script src=" not in inline
    out = render.write_map_html(m, tmp_path / "plan.html")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    rel = render.write_map_html(m, tmp_path / "linked.html", inline=False)
    assert 'src="static/leaflet/leaflet.js"' in rel.read_text(encoding="utf-8")
    copied = render.copy_static_assets(tmp_path / "static")
    assert (copied / "leaflet" / "images" / "layers.png").is_file()


def test_grid_map_content(plan):
    grids = plan["grids"].copy()
    grids.loc[0, "households"] = 620  # above the 500 maximum
    page = _text(render.map_to_html(render.render_grid_map(grids)))
    assert "网格员" in page  # worker alias in popups
    assert grids["worker"].iloc[3] in page
    assert grids["grid_code"].iloc[5] in page
    outside = int(((grids["households"] < 400) | (grids["households"] > 500)).sum())
    assert outside >= 1
    assert f"超出 400–500 户 ({outside})" in page
    # every grid is a feature
    assert page.count('"grid_code": "42100200') >= len(grids)
    with pytest.raises(MissingColumnError, match="households_col"):
        render.render_grid_map(grids.drop(columns="households"))
    with pytest.raises(EmptyInputError, match="grids is empty"):
        render.render_grid_map(grids.iloc[:0])


def test_cells_are_fixed_and_normalised(incidents):
    cells = render.aggregate_incident_cells(incidents, cell_size_m=100)
    assert cells["count"].sum() == len(incidents)
    assert cells["weight"].max() == 1.0
    assert cells.attrs["scale_max"] == cells["count"].max()
    # anchored at multiples of the cell size: a filter does not move cells
    some = render.aggregate_incident_cells(
        incidents, cell_size_m=100, categories=["SJ0101"], scale_max=50
    )
    assert set(zip(some["cell_i"], some["cell_j"], strict=True)) <= set(
        zip(cells["cell_i"], cells["cell_j"], strict=True)
    )
    assert some["count"].sum() == (incidents["category_code"] == "SJ0101").sum()
    np.testing.assert_allclose(some["weight"], np.minimum(some["count"] / 50, 1))
    bounds = some.geometry.bounds
    np.testing.assert_allclose(bounds["minx"] % 100, 0, atol=1e-6)
    np.testing.assert_allclose(bounds["maxx"] - bounds["minx"], 100)
    # time window [start, end)
    window = render.aggregate_incident_cells(
        incidents, start="2026-10-05", end="2026-10-10", scale_max=10
    )
    times = incidents["reported_at"]
    expected = ((times >= "2026-10-05") & (times < "2026-10-10")).sum()
    assert window["count"].sum() == expected == window.attrs["incidents"]
    with pytest.raises(InputError, match="cell_size_m"):
        render.aggregate_incident_cells(incidents, cell_size_m=0)
    with pytest.raises(MissingColumnError, match="time_col='when'"):
        render.aggregate_incident_cells(incidents, start="2026-10-01", time_col="when")


def test_heatmap_ships_cells_with_fixed_scale(plan, incidents):
    m = render.render_incident_heatmap(
        incidents, grids=plan["grids"], cell_size_m=50, scale_max=40, radius_cells=1.5
    )
    page = render.map_to_html(m)
    data = json.loads(
        re.search(r"L\.heatLayer\(\s*(\[\[.*?\]\])\s*,", page, re.S).group(1)
    )
    cells = render.aggregate_incident_cells(incidents, cell_size_m=50, scale_max=40)
    assert len(data) == len(cells) < len(incidents)  # cells, not raw points
    assert max(row[2] for row in data) <= 1.0
    assert sorted(round(r[2], 6) for r in data) == sorted(cells["weight"].round(6))
    assert '"fixedMax": 1.0' in page
    assert re.search(r"lockHeatRadius\(\s*map_\w+, heat_map_\w+, 75\.0", page)
    assert "40 incidents" not in page  # legend shows the scale, not a count of 40
    assert "of 40" in page


def test_counted_cells_draw_the_same_heat_as_points(plan, incidents):
    """The service counts cells in PostGIS and draws them with render_cell_heatmap:
    the same cells, weights and legend as render_incident_heatmap on the points."""
    cells = render.aggregate_incident_cells(incidents, cell_size_m=50, scale_max=40)
    counts = cells[["cell_i", "cell_j", "count"]].sample(frac=1, random_state=0)
    again = render.cells_from_counts(
        counts, cell_size_m=50, crs=cells.crs, scale_max=40
    )
    key = ["cell_i", "cell_j"]
    a = cells.sort_values(key).reset_index(drop=True)
    b = again.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["weight"], b["weight"])
    assert a.geometry.geom_equals(b.geometry).all()
    assert again.attrs == cells.attrs

    def heat(m):
        page = render.map_to_html(m)
        rows = json.loads(
            re.search(r"L\.heatLayer\(\s*(\[\[.*?\]\])\s*,", page, re.S).group(1)
        )
        return sorted(map(tuple, rows)), page

    from_points, _ = heat(
        render.render_incident_heatmap(
            incidents, grids=plan["grids"], cell_size_m=50, scale_max=40
        )
    )
    from_cells, page = heat(render.render_cell_heatmap(again, grids=plan["grids"]))
    assert from_cells == from_points
    assert f"{len(incidents)} incidents" in page
    with pytest.raises(MissingColumnError, match="count"):
        render.cells_from_counts(
            counts.drop(columns="count"), cell_size_m=50, crs=cells.crs
        )
    with pytest.raises(InputError, match="scale_max"):
        render.cells_from_counts(counts, cell_size_m=50, crs=cells.crs, scale_max=0)
    with pytest.raises(EmptyInputError, match="nothing to draw"):
        render.render_cell_heatmap(again.iloc[:0])


def test_heatmap_filters(incidents):
    none = render.render_incident_heatmap(incidents, categories=["XX0000"])
    page = render.map_to_html(none)
    assert "L.heatLayer" not in page
    assert "0 incidents" in page


def test_hotspot_map_colours(plan, incidents):
    spots = hotspots.find_hotspots(plan["grids"], incidents)
    assert (spots["gi_bin"] == 3).any()  # the planted cluster
    page = _text(render.map_to_html(render.render_hotspot_map(spots)))
    assert render.HOTSPOT_COLORS[3] in page
    assert "热点 99%" in page
    with pytest.raises(MissingColumnError, match="find_hotspots"):
        render.render_hotspot_map(plan["grids"])


def test_extra_layers_hook(plan):
    calls = []

    def coverage(m):
        calls.append(m)
        folium.GeoJson(
            plan["communities"].to_crs(4326).__geo_interface__, name="覆盖问题 coverage"
        ).add_to(m)

    m = render.render_grid_map(plan["grids"], extra_layers=[coverage])
    assert calls == [m]
    assert "覆盖问题 coverage" in _text(render.map_to_html(m))


def test_basemap_config():
    assert render.basemap_from_config(None).kind == "none"
    assert render.basemap_from_config("none").kind == "none"
    osm = render.basemap_from_config("osm")
    assert "openstreetmap.org/copyright" in osm.attribution
    assert "ODbL" in osm.attribution
    with pytest.raises(InputError, match="needs a token"):
        render.basemap_from_config("tianditu")
    tdt = render.basemap_from_config("tianditu", tianditu_token="abc123")
    assert tdt.token == "abc123"
    amap = render.basemap_from_config(
        "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}"
    )
    assert amap.gcj02
    plain = render.basemap_from_config("https://tiles.example.cn/{z}/{x}/{y}.png")
    assert not plain.gcj02
    assert "tiles.example.cn" in plain.attribution
    with pytest.raises(InputError, match="XYZ template"):
        render.Basemap("url", url="https://tiles.example.cn/tile.png")
    with pytest.raises(InputError, match="unknown"):
        render.basemap_from_config("google")


def test_basemap_pages(plan):
    grids = plan["grids"]
    osm = _text(
        render.map_to_html(
            render.render_grid_map(grids, basemap=render.basemap_from_config("osm"))
        )
    )
    assert "https://tile.openstreetmap.org/{z}/{x}/{y}.png" in osm
    assert "OpenStreetMap</a> contributors (ODbL)" in osm
    tdt = render.map_to_html(
        render.render_grid_map(
            grids,
            basemap=render.basemap_from_config("tianditu", tianditu_token="abc123"),
        )
    )
    assert "tianditu.gov.cn/vec_w/wmts" in tdt
    assert "tianditu.gov.cn/cva_w/wmts" in tdt
    assert "tk=abc123" in tdt
    none = _text(
        render.map_to_html(
            render.render_grid_map(
                grids, streets=plan["streets"], blocks=plan["blocks"], credit_osm=True
            )
        )
    )
    assert "tile.openstreetmap.org" not in none
    assert "addAttribution" in none
    assert "contributors (ODbL)" in none


def test_gcj02_tiles_shift_geometry(plan):
    grids = plan["grids"]
    amap = render.basemap_from_config(
        "https://webrd01.is.autonavi.com/appmaptile?x={x}&y={y}&z={z}"
    )
    plain = render._for_display(grids, render.Basemap())
    shifted = render._for_display(grids, amap)
    from spatialgrid.coords import wgs84_to_gcj02

    c0 = np.asarray(plain.geometry.iloc[0].exterior.coords)
    c1 = np.asarray(shifted.geometry.iloc[0].exterior.coords)
    lon, lat = wgs84_to_gcj02(c0[:, 0], c0[:, 1])
    np.testing.assert_allclose(c1, np.column_stack([lon, lat]).round(6), atol=1e-9)
    metres = np.hypot((c1[:, 0] - c0[:, 0]) * 96_000, (c1[:, 1] - c0[:, 1]) * 111_000)
    assert (metres > 100).all()
    assert (metres < 1000).all()
    page = render.map_to_html(render.render_grid_map(grids, basemap=amap))
    assert f"{c1[0, 0]:.6f}".rstrip("0") in page


def test_large_heatmap_stays_small(plan):
    many = testing.synthetic_incidents(
        plan["grids"], 200_000, seed=5, cluster_share=0.2
    )
    page = render.map_to_html(render.render_incident_heatmap(many, grids=plan["grids"]))
    assert len(page) < 300_000  # cells, not 200 000 points
    cells = render.aggregate_incident_cells(many)
    assert cells["count"].sum() == 200_000
    assert isinstance(pd.Timestamp(many["reported_at"].min()), pd.Timestamp)
