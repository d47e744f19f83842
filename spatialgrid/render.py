"""Command-centre maps with folium, working offline: every asset served by spatialgrid.

A default folium map loads Leaflet, jQuery, Bootstrap and fonts from CDNs; on an
intranet it is a blank page. Here every script, style and font a map needs is
vendored under ``spatialgrid/static`` (see ``static/README.md`` for sources,
versions and licences), and :func:`map_to_html` rewrites folium's CDN links to
``asset_base_url`` (e.g. ``"/static"`` behind the API) or inlines them into one
self-contained HTML file (CLI). A link to anything not vendored is an
:class:`~spatialgrid.errors.AssetError`, never a silent CDN request.

Maps:

- :func:`render_grid_map`: the grid plan, a households choropleth with grid codes,
  community and worker in tooltips and popups;
- :func:`render_incident_heatmap`: incidents in a time window and categories,
  aggregated on the server into fixed cells of ``cell_size_m`` metres and
  normalised against one scale (``scale_max``), drawn by Leaflet.heat with a pinned
  maximum and a radius locked to metres, so colours mean the same at every zoom;
- :func:`render_hotspot_map`: Gi* bins per grid (:mod:`spatialgrid.hotspots`);
- :func:`render_incident_animation`: the same cells over time (HeatMapWithTime).

Basemaps (:class:`Basemap`): none (our own streets and blocks drawn instead), OSM
(credited, ODbL), Tianditu (needs a token) or any XYZ URL template. GCJ-02 tile
sources (Amap, Tencent) get our geometry shifted for display with
:func:`spatialgrid.coords.wgs84_to_gcj02`. Every render function takes
``extra_layers``: callables ``f(map)`` that add more layers (e.g. the coverage
issues of :mod:`spatialgrid.coverage`) before the layer control is added.

folium is imported lazily: ``pip install spatialgrid[maps]``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import mimetypes
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.crs import WEB_EPSG, require_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import (
    AssetError,
    EmptyInputError,
    InputError,
    MissingColumnError,
)
from spatialgrid.validate import require_columns

if TYPE_CHECKING:
    import folium

    from pyproj import CRS

logger = logging.getLogger(__name__)

#: Directory of the vendored front-end assets.
STATIC_DIR = Path(__file__).resolve().parent / "static"

# Pseudo-URL prefix for spatialgrid's own scripts (never fetched from anywhere).
_OWN = "spatialgrid-static:"

#: CDN URL (as folium 0.20 and its plugins reference it) -> file under STATIC_DIR.
#: ``None`` marks resources folium's Map loads by default that none of our maps
#: use (Bootstrap, jQuery, Font Awesome, awesome-markers): they are dropped.
ASSET_MAP: dict[str, str | None] = {
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js": "leaflet/leaflet.js",
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css": "leaflet/leaflet.css",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium@main/folium/templates/leaflet_heat.min.js": "leaflet-heat/leaflet-heat.min.js",
    "https://cdn.jsdelivr.net/npm/iso8601-js-period@0.2.1/iso8601.min.js": "iso8601-js-period/iso8601.js",
    "https://cdn.jsdelivr.net/npm/leaflet-timedimension@1.1.1/dist/leaflet.timedimension.min.js": "leaflet-timedimension/leaflet.timedimension.min.js",
    "https://cdn.jsdelivr.net/npm/leaflet-timedimension@1.1.1/dist/leaflet.timedimension.control.css": "leaflet-timedimension/leaflet.timedimension.control.min.css",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium/folium/templates/pa7_hm.min.js": "heatmapjs/pa7_hm.min.js",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium/folium/templates/pa7_leaflet_hm.min.js": "heatmapjs/pa7_leaflet_hm.min.js",
    f"{_OWN}heat-fixed-scale.js": "spatialgrid/heat-fixed-scale.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js": None,
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.js": None,
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/css/bootstrap.min.css": None,
    "https://netdna.bootstrapcdn.com/bootstrap/3.0.0/css/bootstrap-glyphicons.css": None,
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@6.2.0/css/all.min.css": None,
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.css": None,
    "https://cdn.jsdelivr.net/gh/python-visualization/folium/folium/templates/leaflet.awesome.rotate.min.css": None,
}

OSM_ATTRIBUTION = (
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> '
    "contributors (ODbL)"
)
_OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
_TIANDITU = (
    "https://t{s}.tianditu.gov.cn/{layer}_w/wmts?SERVICE=WMTS&REQUEST=GetTile"
    "&VERSION=1.0.0&LAYER={layer}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles"
    "&TILEMATRIX={{z}}&TILEROW={{y}}&TILECOL={{x}}&tk={token}"
)
# Hosts known to serve GCJ-02 ("Mars") tiles.
_GCJ02_HOSTS = ("autonavi.com", "amap.com", "gtimg.com", "map.qq.com", "tencent")

#: Gi* bin colours (ArcGIS-like diverging palette), -3..3.
HOTSPOT_COLORS: dict[int, str] = {
    3: "#d62f27",
    2: "#ed7551",
    1: "#fab984",
    0: "#eeeeee",
    -1: "#b7cde3",
    -2: "#7498c4",
    -3: "#4576b5",
}
_HEAT_GRADIENT = {
    0.2: "#2c7bb6",
    0.4: "#abd9e9",
    0.6: "#ffffbf",
    0.8: "#fdae61",
    1.0: "#d7191c",
}
_YLORRD = ("#ffffb2", "#fed976", "#feb24c", "#fd8d3c", "#f03b20", "#bd0026")

ExtraLayer = Callable[["folium.Map"], Any]


def _folium() -> Any:
    try:
        import folium
        import folium.plugins
    except ImportError as err:  # pragma: no cover - depends on the environment
        msg = "maps need folium: pip install 'spatialgrid[maps]'"
        raise ImportError(msg) from err
    return folium


# ----------------------------------------------------------------------- basemap


@dataclass(frozen=True)
class Basemap:
    """What is drawn under our layers.

    Attributes
    ----------
    kind
        ``"none"`` (no tiles; streets and blocks from our own data), ``"osm"``,
        ``"tianditu"`` or ``"url"``.
    url
        XYZ tile template for ``"url"`` (``{z}``, ``{x}``, ``{y}``; optional ``{s}``).
    attribution
        Credit shown on the map (required by most tile providers).
    token
        Tianditu key (天地图 tk).
    gcj02
        Tiles are in GCJ-02: shift our geometry for display.
    subdomains
        Values of ``{s}``.
    max_zoom
        Highest zoom the source serves.
    """

    kind: str = "none"
    url: str | None = None
    attribution: str | None = None
    token: str | None = None
    gcj02: bool = False
    subdomains: str = "abc"
    max_zoom: int = 19

    def __post_init__(self) -> None:
        if self.kind not in {"none", "osm", "tianditu", "url"}:
            msg = f"basemap kind={self.kind!r} unknown; use 'none', 'osm', 'tianditu' or 'url'"
            raise InputError(msg)
        if self.kind == "tianditu" and not self.token:
            msg = (
                "basemap 'tianditu' needs a token: set SPATIALGRID_TIANDITU_TOKEN (or "
                "Basemap(kind='tianditu', token=...)); get one at console.tianditu.gov.cn"
            )
            raise InputError(msg)
        if self.kind == "url" and (
            not self.url or not all(k in self.url for k in ("{z}", "{x}", "{y}"))
        ):
            msg = f"basemap url={self.url!r} must be an XYZ template with {{z}}, {{x}} and {{y}}"
            raise InputError(msg)


def basemap_from_config(
    spec: str | None,
    *,
    tianditu_token: str | None = None,
    attribution: str | None = None,
    gcj02: bool | None = None,
) -> Basemap:
    """A :class:`Basemap` from a configuration string.

    ``None``/``"none"``, ``"osm"``, ``"tianditu"`` or an XYZ URL template. For a URL
    ``gcj02`` defaults to True for known GCJ-02 hosts (Amap, Tencent).
    """
    if spec is None or spec.strip().lower() in {"", "none"}:
        return Basemap("none")
    key = spec.strip()
    if key.lower() == "osm":
        return Basemap("osm", url=_OSM_TILES, attribution=OSM_ATTRIBUTION)
    if key.lower() == "tianditu":
        return Basemap(
            "tianditu", token=tianditu_token, subdomains="01234567", max_zoom=18
        )
    if key.startswith(("http://", "https://", "//")):
        host = urlparse(key if not key.startswith("//") else "https:" + key).netloc
        shifted = any(h in host for h in _GCJ02_HOSTS) if gcj02 is None else gcj02
        credit = attribution or f"Tiles &copy; {html.escape(host)}"
        return Basemap("url", url=key, attribution=credit, gcj02=shifted)
    msg = f"basemap={spec!r} unknown; use none, osm, tianditu or an XYZ URL template"
    raise InputError(msg)


def _add_basemap(m: folium.Map, basemap: Basemap) -> None:
    folium = _folium()
    if basemap.kind == "none":
        return
    if basemap.kind == "osm":
        folium.TileLayer(
            tiles=basemap.url or _OSM_TILES,
            attr=basemap.attribution or OSM_ATTRIBUTION,
            name="OpenStreetMap",
            max_zoom=basemap.max_zoom,
            control=False,
        ).add_to(m)
    elif basemap.kind == "tianditu":
        for layer, name in (("vec", "天地图"), ("cva", "天地图注记")):
            folium.TileLayer(
                tiles=_TIANDITU.format(s="{s}", layer=layer, token=basemap.token),
                attr="&copy; 天地图 Tianditu",
                name=name,
                subdomains=basemap.subdomains,
                max_zoom=basemap.max_zoom,
                control=False,
            ).add_to(m)
    else:
        folium.TileLayer(
            tiles=basemap.url,
            attr=basemap.attribution or "Tiles",
            name="Basemap",
            subdomains=basemap.subdomains,
            max_zoom=basemap.max_zoom,
            control=False,
        ).add_to(m)


# ------------------------------------------------------------- geometry helpers


def _for_display(frame: gpd.GeoDataFrame | gpd.GeoSeries, basemap: Basemap) -> Any:
    """EPSG:4326 (shifted to GCJ-02 for such tiles), coordinates rounded to 1e-6."""
    out = frame.to_crs(WEB_EPSG)
    geoms = out.geometry.values if hasattr(out, "geometry") else out.values

    def _shift(coords: np.ndarray) -> np.ndarray:
        if basemap.gcj02:
            from spatialgrid.coords import wgs84_to_gcj02

            lon, lat = wgs84_to_gcj02(coords[:, 0], coords[:, 1])
            coords = np.column_stack([lon, lat])
        return np.round(coords, 6)

    moved = shapely.transform(np.asarray(geoms), _shift)
    if isinstance(out, gpd.GeoDataFrame):
        out = out.set_geometry(gpd.GeoSeries(moved, index=out.index, crs=WEB_EPSG))
    else:
        out = gpd.GeoSeries(moved, index=out.index, crs=WEB_EPSG)
    return out


def _geojson_data(frame: gpd.GeoDataFrame, columns: Sequence[str]) -> dict[str, Any]:
    """GeoJSON FeatureCollection with only ``columns`` as properties (JSON-safe)."""
    props = frame[list(columns)].copy()
    for col in props.columns:
        if pd.api.types.is_datetime64_any_dtype(props[col]):
            props[col] = props[col].astype(str)
        elif pd.api.types.is_float_dtype(props[col]):
            props[col] = (
                props[col].round(4).astype(object).where(props[col].notna(), None)
            )
        elif not pd.api.types.is_integer_dtype(
            props[col]
        ) and not pd.api.types.is_bool_dtype(props[col]):
            props[col] = props[col].astype(object).where(props[col].notna(), None)
    geoms = shapely.to_geojson(np.asarray(frame.geometry.values))
    records = (
        json.loads(props.to_json(orient="records", force_ascii=False))
        if len(props.columns)
        else [{} for _ in range(len(frame))]
    )
    features = [
        {"type": "Feature", "properties": p, "geometry": json.loads(g)}
        for p, g in zip(records, geoms, strict=True)
    ]
    return {"type": "FeatureCollection", "features": features}


def _new_map(
    display_bounds: np.ndarray, basemap: Basemap, title: str | None
) -> folium.Map:
    folium = _folium()
    minx, miny, maxx, maxy = (float(v) for v in display_bounds)
    m = folium.Map(
        location=[(miny + maxy) / 2, (minx + maxx) / 2],
        tiles=None,
        zoom_start=14,
        control_scale=True,
        max_zoom=basemap.max_zoom if basemap.kind != "none" else 20,
    )
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    if basemap.kind == "none":
        # No tiles: a neutral background instead of Leaflet's grey.
        _root(m).header.add_child(
            folium.Element(
                "<style>.folium-map.leaflet-container{background:#f4f3ef;}</style>"
            ),
            name="sg_background",
        )
    _add_basemap(m, basemap)
    if title:
        _add_control_html(
            m,
            f'<div style="font:600 14px sans-serif;padding:4px 8px;background:#fff;'
            f'border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3)">{html.escape(title)}</div>',
            position="topright",
        )
    return m


def _root(m: folium.Map) -> Any:
    """The branca Figure of ``m`` (typed loosely: branca ships no type hints)."""
    return m.get_root()


def _add_control_html(m: folium.Map, content: str, *, position: str) -> None:
    """A static Leaflet control (legend, title) holding ``content``."""
    folium = _folium()
    from branca.element import MacroElement
    from folium.template import Template

    class _HtmlControl(MacroElement):
        _template = Template(
            """
            {% macro script(this, kwargs) %}
            (function () {
                var ctl = L.control({position: {{ this.position|tojson }}});
                ctl.onAdd = function () {
                    var div = L.DomUtil.create("div", "spatialgrid-control");
                    div.innerHTML = {{ this.content|tojson }};
                    L.DomEvent.disableClickPropagation(div);
                    return div;
                };
                ctl.addTo({{ this._parent.get_name() }});
            })();
            {% endmacro %}
            """
        )

        def __init__(self, content: str, position: str) -> None:
            super().__init__()
            self._name = "HtmlControl"
            self.content = content
            self.position = position

    del folium
    m.add_child(_HtmlControl(content, position))


def _legend_html(title: str, items: Sequence[tuple[str, str]]) -> str:
    rows = "".join(
        f'<div style="display:flex;align-items:center;margin:2px 0">'
        f'<span style="width:14px;height:14px;margin-right:6px;border:1px solid #999;'
        f'background:{color};display:inline-block"></span>{html.escape(label)}</div>'
        for color, label in items
    )
    return (
        '<div style="font:12px sans-serif;background:rgba(255,255,255,.9);padding:6px 8px;'
        f'border-radius:4px;box-shadow:0 1px 4px rgba(0,0,0,.3)"><b>{html.escape(title)}</b>'
        f"{rows}</div>"
    )


def _add_attribution(m: folium.Map, text: str) -> None:
    folium = _folium()
    from branca.element import MacroElement
    from folium.template import Template

    class _Attribution(MacroElement):
        _template = Template(
            """
            {% macro script(this, kwargs) %}
            {{ this._parent.get_name() }}.attributionControl.addAttribution({{ this.text|tojson }});
            {% endmacro %}
            """
        )

        def __init__(self, text: str) -> None:
            super().__init__()
            self._name = "Attribution"
            self.text = text

    del folium
    m.add_child(_Attribution(text))


def _add_context(
    m: folium.Map,
    *,
    streets: gpd.GeoDataFrame | None,
    blocks: gpd.GeoDataFrame | None,
    basemap: Basemap,
    credit_osm: bool,
) -> None:
    """Our own streets and blocks as the backdrop (for ``basemap='none'``)."""
    folium = _folium()
    if blocks is not None and len(blocks):
        require_crs(blocks, "blocks")
        shown = _for_display(blocks[[blocks.geometry.name]], basemap)
        folium.GeoJson(
            _geojson_data(shown, []),
            name="街区 blocks",
            style_function=lambda _f: {
                "color": "#c9c4b8",
                "weight": 0.5,
                "fillColor": "#e6e2d8",
                "fillOpacity": 0.8,
            },
            interactive=False,
            control=False,
        ).add_to(m)
    if streets is not None and len(streets):
        require_crs(streets, "streets")
        keep = streets
        if "internal" in streets.columns:
            keep = streets[~streets["internal"].fillna(False).astype(bool)]
        shown = _for_display(keep[[keep.geometry.name]], basemap)
        folium.GeoJson(
            _geojson_data(shown, []),
            name="道路 streets",
            style_function=lambda _f: {"color": "#ffffff", "weight": 3, "opacity": 1},
            interactive=False,
            control=False,
        ).add_to(m)
    if credit_osm and basemap.kind != "osm":
        _add_attribution(m, OSM_ATTRIBUTION)


def _finish(
    m: folium.Map, extra_layers: Iterable[ExtraLayer], layer_control: bool
) -> folium.Map:
    folium = _folium()
    for add in extra_layers:
        add(m)
    if layer_control:
        folium.LayerControl(collapsed=False).add_to(m)
    return m


# ------------------------------------------------------------------------ maps


def render_grid_map(
    grids: gpd.GeoDataFrame,
    *,
    households_col: str = "households",
    code_col: str = "grid_code",
    community_col: str = "community_code",
    worker_col: str | None = "worker",
    min_households: int | None = 400,
    max_households: int | None = 500,
    label_codes: bool | None = None,
    streets: gpd.GeoDataFrame | None = None,
    blocks: gpd.GeoDataFrame | None = None,
    basemap: Basemap | None = None,
    credit_osm: bool = False,
    title: str | None = "网格划分 Grid plan",
    extra_layers: Sequence[ExtraLayer] = (),
) -> folium.Map:
    """The grid plan: households choropleth, grid codes, worker in popups.

    Parameters
    ----------
    grids
        Grid polygons with a CRS, ``code_col`` and ``households_col``.
    households_col, code_col, community_col, worker_col
        Columns; ``community_col`` and ``worker_col`` are shown when present.
    min_households, max_households
        The size rule; grids outside it get a red outline and are counted in
        the legend. ``None`` disables the check.
    label_codes
        Write each grid code on the map (default: when at most 400 grids).
    streets, blocks
        Our own context layers (drawn when given; natural with ``basemap='none'``).
    basemap
        :class:`Basemap`; default none.
    credit_osm
        The data came from OpenStreetMap: show the ODbL credit.
    title
        Shown top right; None for none.
    extra_layers
        Callables ``f(map)`` adding more layers (e.g. coverage issues).

    Returns
    -------
    folium.Map
        Render it with :func:`map_to_html` (local assets), not ``m.save``.
    """
    folium = _folium()
    require_crs(grids, "grids")
    if len(grids) == 0:
        msg = "grids is empty; nothing to draw"
        raise EmptyInputError(msg)
    for col in (households_col, code_col):
        if col not in grids.columns:
            msg = f"grids lack column {col!r}; pass households_col=/code_col= to name them"
            raise MissingColumnError(msg)
    basemap = basemap or Basemap()
    shown = _for_display(grids, basemap)
    m = _new_map(shown.total_bounds, basemap, title)
    _add_context(
        m, streets=streets, blocks=blocks, basemap=basemap, credit_osm=credit_osm
    )

    hh = shown[households_col].astype(float)
    edges = np.linspace(float(hh.min()), float(hh.max()) + 1e-9, len(_YLORRD) + 1)
    cls = np.clip(
        np.searchsorted(edges, hh.to_numpy(), side="right") - 1, 0, len(_YLORRD) - 1
    )
    shown = shown.assign(
        _fill=[_YLORRD[i] for i in cls],
        _out=(
            ((hh < min_households) if min_households is not None else False)
            | ((hh > max_households) if max_households is not None else False)
        ),
    )
    cols = [code_col, households_col]
    aliases = ["网格编码 grid", "户数 households"]
    for extra, alias in (
        (community_col, "社区 community"),
        (worker_col, "网格员 worker"),
    ):
        if extra and extra in shown.columns:
            cols.append(extra)
            aliases.append(alias)
    data = _geojson_data(shown, [*cols, "_fill", "_out"])
    folium.GeoJson(
        data,
        name="网格 grids",
        style_function=lambda f: {
            "fillColor": f["properties"]["_fill"],
            "fillOpacity": 0.65,
            "color": "#d7191c" if f["properties"]["_out"] else "#333333",
            "weight": 2.5 if f["properties"]["_out"] else 1,
        },
        highlight_function=lambda _f: {"weight": 3, "color": "#000000"},
        tooltip=folium.GeoJsonTooltip(fields=cols[:2], aliases=aliases[:2]),
        popup=folium.GeoJsonPopup(fields=cols, aliases=aliases),
    ).add_to(m)
    if label_codes is None:
        label_codes = len(shown) <= 400
    if label_codes:
        labels = folium.FeatureGroup(name="网格编码 codes", show=True)
        points = shapely.point_on_surface(np.asarray(shown.geometry.values))
        for code, pt in zip(shown[code_col].astype(str), points, strict=True):
            folium.Marker(
                [pt.y, pt.x],
                icon=folium.DivIcon(
                    html=f'<div class="sg-code">{html.escape(code[-3:])}</div>',
                    icon_size=(30, 12),
                    icon_anchor=(15, 6),
                ),
                tooltip=code,
            ).add_to(labels)
        labels.add_to(m)
        _root(m).header.add_child(
            folium.Element(
                "<style>.sg-code{font:10px sans-serif;color:#222;text-align:center;"
                "text-shadow:0 0 2px #fff,0 0 2px #fff;white-space:nowrap}</style>"
            ),
            name="sg_code_style",
        )
    n_out = int(shown["_out"].sum())
    items = [
        (_YLORRD[i], f"{edges[i]:.0f}–{edges[i + 1]:.0f}") for i in range(len(_YLORRD))
    ]
    if min_households is not None or max_households is not None:
        items.append(
            ("#ffffff", f"红框: 超出 {min_households}–{max_households} 户 ({n_out})")
        )
    _add_control_html(m, _legend_html("户数 households", items), position="bottomright")
    return _finish(m, extra_layers, layer_control=True)


def _filter_incidents(
    incidents: gpd.GeoDataFrame,
    *,
    start: datetime | str | None,
    end: datetime | str | None,
    categories: Sequence[str] | None,
    time_col: str,
    category_col: str,
) -> gpd.GeoDataFrame:
    keep = np.ones(len(incidents), dtype=bool)
    if start is not None or end is not None:
        if time_col not in incidents.columns:
            msg = f"a time window needs column time_col={time_col!r} in incidents"
            raise MissingColumnError(msg)
        times = pd.to_datetime(incidents[time_col])
        if start is not None:
            keep &= (times >= _like(pd.Timestamp(start), times)).to_numpy()
        if end is not None:
            keep &= (times < _like(pd.Timestamp(end), times)).to_numpy()
    if categories is not None:
        if category_col not in incidents.columns:
            msg = f"a category filter needs column category_col={category_col!r}"
            raise MissingColumnError(msg)
        keep &= incidents[category_col].isin(list(categories)).to_numpy()
    return incidents[keep]


def _like(ts: pd.Timestamp, series: pd.Series) -> pd.Timestamp:
    tz = series.dt.tz
    if tz is not None and ts.tzinfo is None:
        return ts.tz_localize(tz)
    if tz is None and ts.tzinfo is not None:
        return ts.tz_localize(None)
    return ts


def aggregate_incident_cells(
    incidents: gpd.GeoDataFrame,
    *,
    cell_size_m: float = 100.0,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    categories: Sequence[str] | None = None,
    time_col: str = "reported_at",
    category_col: str = "category_code",
    scale_max: float | None = None,
    working_crs: CRS | str | int | None = None,
) -> gpd.GeoDataFrame:
    """Count incidents in fixed square cells of ``cell_size_m`` metres.

    Cells are anchored at multiples of ``cell_size_m`` in the working CRS, so the
    same place falls into the same cell whatever the filter or time window.

    Parameters
    ----------
    incidents
        Points with a CRS.
    cell_size_m
        Cell edge in metres.
    start, end
        Time window ``[start, end)`` on ``time_col``; None leaves it open.
    categories
        Keep only these category codes.
    time_col, category_col
        Column names.
    scale_max
        Count that maps to weight 1 (larger counts are clipped). Use one value for
        every map that must be compared (e.g. all months); default the largest
        cell count of this selection.
    working_crs
        Projected CRS of the cells; default :func:`spatialgrid.crs.working_crs`.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per non-empty cell: ``cell_i``, ``cell_j``, ``count``, ``weight``
        (0..1), cell squares as geometry in the working CRS. ``attrs`` holds
        ``scale_max``, ``cell_size_m`` and ``incidents`` (selected).
    """
    require_crs(incidents, "incidents")
    if cell_size_m <= 0:
        msg = f"cell_size_m={cell_size_m} must be positive"
        raise InputError(msg)
    crs = _working_crs(incidents, working_crs)
    chosen = _filter_incidents(
        incidents,
        start=start,
        end=end,
        categories=categories,
        time_col=time_col,
        category_col=category_col,
    )
    pts = chosen.geometry.to_crs(crs)
    xy = shapely.get_coordinates(np.asarray(pts.values))
    if len(xy) != len(pts):
        msg = "incidents must be single points (one coordinate each)"
        raise InputError(msg)
    i = np.floor(xy[:, 0] / cell_size_m).astype(np.int64)
    j = np.floor(xy[:, 1] / cell_size_m).astype(np.int64)
    cells = (
        pd.DataFrame({"cell_i": i, "cell_j": j})
        .groupby(["cell_i", "cell_j"], sort=True)
        .size()
        .rename("count")
        .reset_index()
    )
    return cells_from_counts(
        cells, cell_size_m=cell_size_m, crs=crs, scale_max=scale_max
    )


def cells_from_counts(
    counts: pd.DataFrame,
    *,
    cell_size_m: float,
    crs: CRS | str | int,
    scale_max: float | None = None,
) -> gpd.GeoDataFrame:
    """Heat cells from counts per cell (``cell_i``, ``cell_j``, ``count``).

    ``cell_i``/``cell_j`` index squares of ``cell_size_m`` anchored at the origin
    of the projected ``crs`` (as :func:`aggregate_incident_cells` and the
    database's cell counts make them). Returns the same frame as
    :func:`aggregate_incident_cells`: ``weight = count / scale_max`` clipped to 1
    (``scale_max`` default: the busiest cell), squares as geometry.

    Raises
    ------
    MissingColumnError
        A column is missing.
    InputError
        ``cell_size_m`` or ``scale_max`` not positive.
    """
    require_columns(counts, ("cell_i", "cell_j", "count"), "counts")
    if cell_size_m <= 0:
        msg = f"cell_size_m={cell_size_m} must be positive"
        raise InputError(msg)
    cells = counts[["cell_i", "cell_j", "count"]].reset_index(drop=True)
    cells = cells.astype({"cell_i": np.int64, "cell_j": np.int64, "count": np.int64})
    top = float(cells["count"].max()) if len(cells) else 0.0
    scale = float(scale_max) if scale_max is not None else max(top, 1.0)
    if scale <= 0:
        msg = f"scale_max={scale_max} must be positive"
        raise InputError(msg)
    cells["weight"] = np.minimum(cells["count"] / scale, 1.0)
    x0 = cells["cell_i"].to_numpy() * cell_size_m
    y0 = cells["cell_j"].to_numpy() * cell_size_m
    out = gpd.GeoDataFrame(
        cells, geometry=shapely.box(x0, y0, x0 + cell_size_m, y0 + cell_size_m), crs=crs
    )
    out.attrs.update(
        {
            "scale_max": scale,
            "cell_size_m": float(cell_size_m),
            "incidents": int(cells["count"].sum()),
        }
    )
    return out


def _heat_lock(m: folium.Map, layer: Any, metres: float) -> None:
    from branca.element import MacroElement
    from folium.elements import JSCSSMixin
    from folium.template import Template

    class _HeatLock(JSCSSMixin, MacroElement):
        _template = Template(
            """
            {% macro script(this, kwargs) %}
            L.spatialgrid.lockHeatRadius(
                {{ this.map_name }}, {{ this.layer_name }}, {{ this.metres }}, 0.4, 3);
            {% endmacro %}
            """
        )
        default_js = [  # noqa: RUF012 - folium's own convention (JSCSSMixin)
            ("spatialgrid-heat-fixed-scale", f"{_OWN}heat-fixed-scale.js")
        ]

        def __init__(self, map_name: str, layer_name: str, metres: float) -> None:
            super().__init__()
            self._name = "HeatLock"
            self.map_name = map_name
            self.layer_name = layer_name
            self.metres = float(metres)

    m.add_child(_HeatLock(m.get_name(), layer.get_name(), metres))


def render_incident_heatmap(
    incidents: gpd.GeoDataFrame,
    *,
    grids: gpd.GeoDataFrame | None = None,
    cell_size_m: float = 100.0,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    categories: Sequence[str] | None = None,
    time_col: str = "reported_at",
    category_col: str = "category_code",
    scale_max: float | None = None,
    radius_cells: float = 1.6,
    cells_layer: bool = True,
    code_col: str = "grid_code",
    streets: gpd.GeoDataFrame | None = None,
    blocks: gpd.GeoDataFrame | None = None,
    basemap: Basemap | None = None,
    credit_osm: bool = False,
    title: str | None = "事件热力图 Incidents",
    working_crs: CRS | str | int | None = None,
    extra_layers: Sequence[ExtraLayer] = (),
) -> folium.Map:
    """Incidents as a heatmap whose colours mean the same at every zoom.

    Incidents in the window and categories are counted per fixed cell of
    ``cell_size_m`` metres (:func:`aggregate_incident_cells`); each cell's weight
    is ``count / scale_max`` (clipped to 1). Leaflet.heat draws one point per cell
    with its maximum pinned to 1 and a kernel radius of ``radius_cells`` cells in
    metres (``static/spatialgrid/heat-fixed-scale.js``), so a cell has one colour at
    every zoom; the HTML holds cells, not raw points.

    Parameters
    ----------
    incidents
        Incident points with a CRS.
    grids
        Grid outlines drawn on top (optional).
    cell_size_m, start, end, categories, time_col, category_col, scale_max
        See :func:`aggregate_incident_cells`.
    radius_cells
        Heat kernel extent in cells (keep below 2 so screen cells never merge).
    cells_layer
        Also add the cells as squares (a switchable layer, off by default).
    code_col
        Grid code column shown in grid tooltips.
    streets, blocks, basemap, credit_osm, title, extra_layers
        As in :func:`render_grid_map`.
    working_crs
        Projected CRS for the cells.

    Returns
    -------
    folium.Map
    """
    cells = aggregate_incident_cells(
        incidents,
        cell_size_m=cell_size_m,
        start=start,
        end=end,
        categories=categories,
        time_col=time_col,
        category_col=category_col,
        scale_max=scale_max,
        working_crs=working_crs,
    )
    if len(incidents) == 0 and (grids is None or len(grids) == 0):
        msg = "incidents is empty and no grids were given; nothing to draw"
        raise EmptyInputError(msg)
    return render_cell_heatmap(
        cells,
        grids=grids,
        start=start,
        end=end,
        radius_cells=radius_cells,
        cells_layer=cells_layer,
        code_col=code_col,
        streets=streets,
        blocks=blocks,
        basemap=basemap,
        credit_osm=credit_osm,
        title=title,
        extra_layers=extra_layers,
        bounds_of=None if grids is not None and len(grids) else incidents,
    )


def render_cell_heatmap(
    cells: gpd.GeoDataFrame,
    *,
    grids: gpd.GeoDataFrame | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    radius_cells: float = 1.6,
    cells_layer: bool = True,
    code_col: str = "grid_code",
    streets: gpd.GeoDataFrame | None = None,
    blocks: gpd.GeoDataFrame | None = None,
    basemap: Basemap | None = None,
    credit_osm: bool = False,
    title: str | None = "事件热力图 Incidents",
    extra_layers: Sequence[ExtraLayer] = (),
    bounds_of: gpd.GeoDataFrame | None = None,
) -> folium.Map:
    """A heatmap of counted cells (:func:`cells_from_counts`,
    :func:`aggregate_incident_cells`) whose colours mean the same at every zoom.

    For callers that count elsewhere (the service counts in PostGIS): the HTML
    holds one point per cell. ``start``/``end`` label the legend; the map is
    framed on ``grids``, else ``bounds_of``, else the cells. Other parameters as
    in :func:`render_incident_heatmap`.

    Raises
    ------
    EmptyInputError
        No cells, no grids and nothing to frame the map on.
    """
    folium = _folium()
    from folium.plugins import HeatMap

    basemap = basemap or Basemap()
    cell_size_m = float(cells.attrs.get("cell_size_m", 100.0))
    if grids is not None and len(grids):
        frame = grids
    elif bounds_of is not None and len(bounds_of):
        frame = bounds_of
    else:
        frame = cells
    if len(frame) == 0:
        msg = "no cells, no grids: nothing to draw"
        raise EmptyInputError(msg)
    m = _new_map(
        _for_display(frame[[frame.geometry.name]], basemap).total_bounds, basemap, title
    )
    _add_context(
        m, streets=streets, blocks=blocks, basemap=basemap, credit_osm=credit_osm
    )
    if grids is not None and len(grids):
        _add_grid_outlines(m, grids, basemap=basemap, code_col=code_col)
    if len(cells):
        centres = _for_display(cells.geometry.centroid, basemap)
        data = np.column_stack(
            [
                shapely.get_y(centres.values),
                shapely.get_x(centres.values),
                cells["weight"],
            ]
        ).round(6)
        heat = HeatMap(
            data.tolist(),
            name="事件热力 heat",
            min_opacity=0.25,
            radius=10,
            blur=6,
            gradient=_HEAT_GRADIENT,
            fixed_max=1.0,
        )
        heat.add_to(m)
        _heat_lock(m, heat, cell_size_m * radius_cells)
        if cells_layer:
            squares = _for_display(cells, basemap)
            squares["_fill"] = [
                _heat_color(w) for w in squares["weight"].to_numpy(dtype=float)
            ]
            folium.GeoJson(
                _geojson_data(squares, ["count", "weight", "_fill"]),
                name=f"事件网格 {cell_size_m:g} m cells",
                show=False,
                style_function=lambda f: {
                    "fillColor": f["properties"]["_fill"],
                    "fillOpacity": 0.7,
                    "weight": 0,
                },
                tooltip=folium.GeoJsonTooltip(
                    fields=["count"], aliases=["事件数 incidents"]
                ),
            ).add_to(m)
    window = " – ".join(str(v) for v in (start, end) if v is not None) or "all time"
    items = [
        (c, f"{100 * k:.0f}% of {cells.attrs['scale_max']:g}")
        for k, c in _HEAT_GRADIENT.items()
    ]
    _add_control_html(
        m,
        _legend_html(
            f"事件/{cell_size_m:g} m 格 · {cells.attrs['incidents']} incidents · {window}",
            items,
        ),
        position="bottomright",
    )
    return _finish(m, extra_layers, layer_control=True)


def _add_grid_outlines(
    m: folium.Map, grids: gpd.GeoDataFrame, *, basemap: Basemap, code_col: str
) -> None:
    folium = _folium()
    require_crs(grids, "grids")
    cols = [c for c in (code_col,) if c in grids.columns]
    shown = _for_display(grids[[*cols, grids.geometry.name]], basemap)
    folium.GeoJson(
        _geojson_data(shown, cols),
        name="网格 grids",
        style_function=lambda _f: {"color": "#555555", "weight": 1, "fillOpacity": 0},
        tooltip=folium.GeoJsonTooltip(fields=cols) if cols else None,
    ).add_to(m)


def _heat_color(weight: float) -> str:
    chosen = "#2c7bb6"
    for stop, color in _HEAT_GRADIENT.items():
        if weight >= stop - 1e-12:
            chosen = color
    return chosen


def render_hotspot_map(
    hotspots: gpd.GeoDataFrame,
    *,
    code_col: str = "grid_code",
    count_col: str = "incidents",
    streets: gpd.GeoDataFrame | None = None,
    blocks: gpd.GeoDataFrame | None = None,
    basemap: Basemap | None = None,
    credit_osm: bool = False,
    title: str | None = "热点分析 Gi* hot spots",
    extra_layers: Sequence[ExtraLayer] = (),
) -> folium.Map:
    """Gi* hot and cold spots per grid, coloured by confidence bin (90/95/99 %).

    Parameters
    ----------
    hotspots
        Output of :func:`spatialgrid.hotspots.find_hotspots` (``gi_bin``, ``gi_z``,
        ``gi_p``, ``gi_label``).
    code_col, count_col
        Shown in tooltips when present.
    streets, blocks, basemap, credit_osm, title, extra_layers
        As in :func:`render_grid_map`.
    """
    folium = _folium()
    from spatialgrid.hotspots import BIN_LABELS

    require_crs(hotspots, "hotspots")
    needed = ("gi_bin", "gi_z", "gi_p")
    missing = [c for c in needed if c not in hotspots.columns]
    if missing:
        msg = f"hotspots lack {missing}; pass the output of spatialgrid.hotspots.find_hotspots"
        raise MissingColumnError(msg)
    basemap = basemap or Basemap()
    shown = _for_display(hotspots, basemap)
    m = _new_map(shown.total_bounds, basemap, title)
    _add_context(
        m, streets=streets, blocks=blocks, basemap=basemap, credit_osm=credit_osm
    )
    shown = shown.assign(
        _fill=shown["gi_bin"].astype(int).map(HOTSPOT_COLORS),
        gi_label=shown["gi_bin"].astype(int).map(BIN_LABELS),
    )
    cols = [c for c in (code_col, count_col) if c in shown.columns] + [
        "gi_z",
        "gi_p",
        "gi_label",
    ]
    folium.GeoJson(
        _geojson_data(shown, [*cols, "_fill"]),
        name="热点 hot spots",
        style_function=lambda f: {
            "fillColor": f["properties"]["_fill"],
            "fillOpacity": 0.75,
            "color": "#555555",
            "weight": 1,
        },
        tooltip=folium.GeoJsonTooltip(fields=cols),
    ).add_to(m)
    counts = shown["gi_bin"].astype(int).value_counts()
    items = [
        (HOTSPOT_COLORS[b], f"{BIN_LABELS[b]} ({int(counts.get(b, 0))})")
        for b in (3, 2, 1, 0, -1, -2, -3)
    ]
    _add_control_html(m, _legend_html("Gi* (FDR)", items), position="bottomright")
    return _finish(m, extra_layers, layer_control=True)


def render_incident_animation(
    incidents: gpd.GeoDataFrame,
    *,
    freq: str = "D",
    cell_size_m: float = 100.0,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    categories: Sequence[str] | None = None,
    time_col: str = "reported_at",
    category_col: str = "category_code",
    scale_max: float | None = None,
    max_frames: int = 366,
    grids: gpd.GeoDataFrame | None = None,
    code_col: str = "grid_code",
    basemap: Basemap | None = None,
    title: str | None = "事件动态 Incidents over time",
    working_crs: CRS | str | int | None = None,
    extra_layers: Sequence[ExtraLayer] = (),
) -> folium.Map:
    """Incident cells over time (one frame per ``freq`` period, HeatMapWithTime).

    Every frame shares one ``scale_max`` (default: the largest cell count of any
    frame), so a colour means the same count in every frame. ``grids`` (optional)
    are drawn as outlines; other parameters as in :func:`render_incident_heatmap`.
    """
    _folium()
    from folium.plugins import HeatMapWithTime

    require_crs(incidents, "incidents")
    basemap = basemap or Basemap()
    chosen = _filter_incidents(
        incidents,
        start=start,
        end=end,
        categories=categories,
        time_col=time_col,
        category_col=category_col,
    )
    if len(chosen) == 0:
        msg = "no incidents in the chosen window and categories; nothing to animate"
        raise EmptyInputError(msg)
    periods = pd.to_datetime(chosen[time_col]).dt.to_period(freq)
    labels = sorted(periods.unique())
    if len(labels) > max_frames:
        msg = (
            f"{len(labels)} frames at freq={freq!r} exceed max_frames={max_frames}; "
            "use a coarser freq or a shorter window"
        )
        raise InputError(msg)
    frames_cells = [
        aggregate_incident_cells(
            chosen[(periods == p).to_numpy()],
            cell_size_m=cell_size_m,
            time_col=time_col,
            category_col=category_col,
            scale_max=1.0,
            working_crs=working_crs,
        )
        for p in labels
    ]
    top = max(float(c["count"].max()) for c in frames_cells)
    scale = float(scale_max) if scale_max is not None else top
    data = []
    for cells in frames_cells:
        centres = _for_display(cells.geometry.centroid, basemap)
        w = np.minimum(cells["count"].to_numpy(dtype=float) / scale, 1.0)
        data.append(
            np.column_stack(
                [shapely.get_y(centres.values), shapely.get_x(centres.values), w]
            )
            .round(6)
            .tolist()
        )
    m = _new_map(
        _for_display(chosen[[chosen.geometry.name]], basemap).total_bounds,
        basemap,
        title,
    )
    if grids is not None and len(grids):
        _add_grid_outlines(m, grids, basemap=basemap, code_col=code_col)
    # scale_radius: radius in map units (degrees at zoom 0 scale), i.e. fixed metres.
    lat = float(np.mean([row[0] for frame in data for row in frame[:1]] or [30.0]))
    radius_deg = cell_size_m * 1.6 / (111_320.0 * np.cos(np.radians(lat)))
    HeatMapWithTime(
        data,
        index=[str(p) for p in labels],
        name="事件动态 animation",
        radius=radius_deg,
        scale_radius=True,
        max_opacity=0.8,
        min_opacity=0.1,
        use_local_extrema=False,
        gradient=_HEAT_GRADIENT,
    ).add_to(m)
    return _finish(m, extra_layers, layer_control=False)


# --------------------------------------------------------------------- assets


def static_dir() -> Path:
    """The directory of vendored assets (mount it at ``asset_base_url``)."""
    return STATIC_DIR


def copy_static_assets(destination: str | Path) -> Path:
    """Copy the vendored assets to ``destination`` (for HTML files that link them)."""
    dest = Path(destination)
    shutil.copytree(STATIC_DIR, dest, dirs_exist_ok=True)
    return dest


def _walk(element: Any) -> Iterable[Any]:
    yield element
    for child in list(getattr(element, "_children", {}).values()):
        yield from _walk(child)


def _local_links(
    links: Sequence[tuple[str, str]], base: str, owner: str
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, url in links:
        if url not in ASSET_MAP:
            msg = (
                f"{owner} links {url!r} ({name}), an asset spatialgrid does not vendor; "
                "an offline map cannot load it. Use another folium element or add the "
                "file under spatialgrid/static and to spatialgrid.render.ASSET_MAP"
            )
            raise AssetError(msg)
        local = ASSET_MAP[url]
        if local is not None:
            out.append((name, f"{base}/{local}"))
    return out


# Folium's Map always lists jQuery; only these plugins use it.
_JQUERY = "https://code.jquery.com/jquery-3.7.1.min.js"
_NEEDS_JQUERY = frozenset({"HeatMapWithTime"})


def _localize(m: folium.Map, base: str) -> None:
    folium = _folium()
    elements = list(_walk(m))
    jquery = any(type(e).__name__ in _NEEDS_JQUERY for e in elements)
    for element in elements:
        if isinstance(element, folium.Icon):
            msg = (
                "folium.Icon needs Bootstrap and Font Awesome, which spatialgrid does "
                "not ship; use folium.CircleMarker or folium.DivIcon instead"
            )
            raise AssetError(msg)
        owner = type(element).__name__
        for attr in ("default_js", "default_css"):
            # Keep folium's original links so a map can be rendered again.
            links = element.__dict__.get(f"_sg_{attr}", getattr(element, attr, None))
            if links:
                setattr(element, f"_sg_{attr}", list(links))
                if not jquery:
                    links = [(n, u) for n, u in links if u != _JQUERY]
                setattr(element, attr, _local_links(links, base, owner))


# Resource loads (not hyperlinks): scripts, stylesheets, images, CSS url()/@import.
_EXTERNAL = re.compile(
    r"""<(?:script|img|iframe)\b[^>]*\ssrc\s*=\s*["'](?:https?:)?//[^"']+"""
    r"""|<link\b[^>]*\shref\s*=\s*["'](?:https?:)?//[^"']+"""
    r"""|url\(\s*["']?(?:https?:)?//[^)]+\)|@import\s""",
    re.IGNORECASE,
)
_INLINE_BASE = "__spatialgrid_static__"


def map_to_html(
    m: folium.Map,
    *,
    asset_base_url: str = "/static",
    inline: bool = False,
) -> str:
    """Render a map to HTML whose scripts, styles and fonts come from spatialgrid.

    Parameters
    ----------
    m
        A map from one of the ``render_*`` functions (or any folium map using
        only vendored plugins).
    asset_base_url
        Where :data:`STATIC_DIR` is served: ``"/static"`` behind the API, a
        relative path (``"static"``) for a file next to a copy of the assets
        (:func:`copy_static_assets`).
    inline
        Put every asset into the page (scripts, styles, images and fonts as data
        URIs): one self-contained file that works from disk, offline.

    Returns
    -------
    str
        The HTML page.

    Raises
    ------
    AssetError
        The map links an asset that is not vendored, or the rendered page still
        references an external script, style or font.
    """
    base = _INLINE_BASE if inline else asset_base_url.rstrip("/")
    _localize(m, base)
    page = m.get_root().render()
    if inline:
        page = _inline_assets(page)
    leftover = _EXTERNAL.findall(page)
    if leftover:
        msg = (
            f"the rendered map still references external resources {leftover[:3]}; "
            "offline maps must load everything from spatialgrid"
        )
        raise AssetError(msg)
    return page


def write_map_html(
    m: folium.Map,
    path: str | Path,
    *,
    inline: bool = True,
    asset_base_url: str = "static",
) -> Path:
    """Write a map to ``path``; self-contained by default (see :func:`map_to_html`)."""
    target = Path(path)
    target.write_text(
        map_to_html(m, asset_base_url=asset_base_url, inline=inline), encoding="utf-8"
    )
    return target


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0]
    if path.suffix == ".woff":
        mime = "font/woff"
    payload = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{mime or 'application/octet-stream'};base64,{payload}"


def _inline_css(css_path: Path) -> str:
    text = css_path.read_text(encoding="utf-8")

    def repl(match: re.Match[str]) -> str:
        ref = match.group(1).strip("'\" ")
        if ref.startswith(("data:", "#")):
            return match.group(0)
        target = (css_path.parent / ref.split("?")[0].split("#")[0]).resolve()
        if not target.is_file() or STATIC_DIR not in target.parents:
            msg = f"{css_path.name} references {ref!r}, not found under spatialgrid/static"
            raise AssetError(msg)
        return f"url({_data_uri(target)})"

    return re.sub(r"url\(([^)]*)\)", repl, text)


def _inline_assets(page: str) -> str:
    prefix = re.escape(_INLINE_BASE + "/")

    def script(match: re.Match[str]) -> str:
        code = (STATIC_DIR / match.group(1)).read_text(encoding="utf-8")
        return "<script>" + code.replace("</script", "<\\/script") + "</script>"

    def style(match: re.Match[str]) -> str:
        css = _inline_css(STATIC_DIR / match.group(1))
        return "<style>" + css.replace("</style", "<\\/style") + "</style>"

    page = re.sub(rf'<script src="{prefix}([^"]+)"></script>', script, page)
    page = re.sub(rf'<link rel="stylesheet" href="{prefix}([^"]+)"\s*/>', style, page)
    if _INLINE_BASE in page:
        msg = "an asset link could not be inlined (unexpected tag format)"
        raise AssetError(msg)
    return page
