"""CRS policy: the one place that decides and checks coordinate reference systems.

- Every GeoDataFrame input must carry a CRS (:func:`require_crs`).
- Inputs combined in one operation must share it (:func:`require_same_crs`).
- Metric work happens in a projected working CRS (:func:`working_crs`): an explicit
  one, the input's own if projected, else the CGCS2000 3-degree Gauss–Krüger zone
  (China) or the local UTM zone (elsewhere).
- Storage uses CGCS2000 geographic, :data:`STORAGE_EPSG` = 4490. Maps get EPSG:4326.
- pyproj transformers are ``always_xy`` and cached (:func:`transformer`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from pyproj import CRS, Transformer

from spatialgrid.errors import CRSMismatchError, MissingCRSError

if TYPE_CHECKING:
    import geopandas as gpd

STORAGE_EPSG = 4490
"""CGCS2000 geographic: the one SRID every geometry is stored in."""

WEB_EPSG = 4326

# China's extent, generously (used to choose Gauss–Krüger over UTM).
_CHINA_BOUNDS = (73.0, 3.0, 136.0, 54.0)


def require_crs(frame: gpd.GeoDataFrame | gpd.GeoSeries, name: str) -> CRS:
    """Return the CRS of ``frame`` or raise :class:`MissingCRSError` naming it."""
    if frame.crs is None:
        msg = (
            f"{name!r} has no CRS. Set it with {name}.set_crs('EPSG:4490') (or the "
            "EPSG code the data was made in) before passing it to spatialgrid."
        )
        raise MissingCRSError(msg)
    return CRS.from_user_input(frame.crs)


def require_same_crs(**frames: gpd.GeoDataFrame | gpd.GeoSeries | None) -> CRS:
    """Check every given frame has a CRS and all share it; return that CRS."""
    first_name: str | None = None
    first: CRS | None = None
    for name, frame in frames.items():
        if frame is None:
            continue
        crs = require_crs(frame, name)
        if first is None:
            first_name, first = name, crs
        elif not crs.equals(first):
            msg = (
                f"{first_name!r} is in {first.to_string()} but {name!r} is in "
                f"{crs.to_string()}; reproject one with .to_crs() so both share a CRS."
            )
            raise CRSMismatchError(msg)
    if first is None:
        msg = "no GeoDataFrame given"
        raise MissingCRSError(msg)
    return first


def gauss_kruger_epsg(lon: float) -> int:
    """EPSG code of the CGCS2000 3-degree Gauss–Krüger zone (CM in name) for ``lon``.

    EPSG:4534 is CM 75°E … EPSG:4554 is CM 135°E, one code every 3 degrees.
    """
    cm = round(lon / 3.0) * 3
    cm = min(max(cm, 75), 135)
    return 4534 + (cm - 75) // 3


def working_crs(
    frame: gpd.GeoDataFrame | gpd.GeoSeries, crs: CRS | str | int | None = None
) -> CRS:
    """The projected CRS to do metric work in for ``frame``.

    Parameters
    ----------
    frame
        Data whose location decides the zone. Must have a CRS.
    crs
        Explicit choice; wins when given. Must be projected.

    Returns
    -------
    pyproj.CRS
        ``crs`` if given; the frame's own CRS if projected; else CGCS2000 3-degree
        Gauss–Krüger for data in China, local UTM elsewhere.
    """
    if crs is not None:
        chosen = CRS.from_user_input(crs)
        if not chosen.is_projected:
            msg = f"working CRS {chosen.to_string()} is not projected (metres needed)"
            raise MissingCRSError(msg)
        return chosen
    own = require_crs(frame, "frame")
    if own.is_projected:
        return own
    return _estimate_projected(frame)


def _estimate_projected(frame: gpd.GeoDataFrame | gpd.GeoSeries) -> CRS:
    geo = frame.to_crs(WEB_EPSG) if frame.crs is not None else frame
    minx, miny, maxx, maxy = geo.total_bounds
    lon, lat = (minx + maxx) / 2.0, (miny + maxy) / 2.0
    x0, y0, x1, y1 = _CHINA_BOUNDS
    if x0 <= lon <= x1 and y0 <= lat <= y1:
        return CRS.from_epsg(gauss_kruger_epsg(lon))
    zone = int((lon + 180) // 6) + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


@lru_cache(maxsize=128)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(
        CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True
    )


@lru_cache(maxsize=128)
def _transformer_by_code(src: str | int, dst: str | int) -> Transformer:
    return transformer(CRS.from_user_input(src), CRS.from_user_input(dst))


def transformer(src: CRS | str | int, dst: CRS | str | int) -> Transformer:
    """A cached ``always_xy`` transformer from ``src`` to ``dst``.

    Codes and strings (``"EPSG:4546"``, ``4490``) hit a cache keyed on the input
    itself, so a hot path pays no WKT export; CRS objects are keyed by their WKT.
    """
    if isinstance(src, str | int) and isinstance(dst, str | int):
        return _transformer_by_code(src, dst)
    return _transformer(
        CRS.from_user_input(src).to_wkt(), CRS.from_user_input(dst).to_wkt()
    )


def epsg_or_wkt(crs: CRS | str | int) -> str:
    """How a CRS is recorded: ``EPSG:n`` when it has a code, else WKT (never PROJ)."""
    c = CRS.from_user_input(crs)
    code = c.to_epsg()
    return f"EPSG:{code}" if code is not None else c.to_wkt()
