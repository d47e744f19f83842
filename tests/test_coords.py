"""China coordinate systems: published reference pairs, round trips, errors."""

from __future__ import annotations

import numpy as np
import pytest

from spatialgrid.coords import (
    bd09_to_gcj02,
    bd09_to_wgs84,
    convert,
    from_storage,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    normalize_crs,
    out_of_china,
    to_projected,
    to_storage,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)
from spatialgrid.crs import transformer
from spatialgrid.errors import CoordinateRangeError

# eviltransform test vectors (googollee/eviltransform): WGS-84 -> GCJ-02.
EVILTRANSFORM = [
    # (wgs lon, wgs lat, gcj lon, gcj lat)
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),  # Shanghai
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),  # Shenzhen
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),  # Beijing
]
# coordtransform / hutool CoordinateUtil test vectors at (116.404, 39.915).
WGS_TO_GCJ = (116.41024449916938, 39.91640428150164)
GCJ_TO_BD = (116.41036949371029, 39.92133699351021)
WGS_TO_BD = (116.41662724378733, 39.922699552216216)
# hutool wgs84toBd09Test2 (values from tool.lu).
WGS_TO_BD_2 = ((122.99395597, 44.99804071), (123.00636516028885, 45.0063690918959))
# The same libraries' one-step approximate inverses (metres off, by design).
APPROX_GCJ_TO_WGS = (116.39775550083061, 39.91359571849836)
APPROX_BD_TO_GCJ = (116.39762729119315, 39.90865673957631)


def _metres(lon0, lat0, lon1, lat1):
    k = 111_320.0
    return np.hypot((lon1 - lon0) * k * np.cos(np.radians(lat0)), (lat1 - lat0) * k)


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), EVILTRANSFORM)
def test_wgs84_to_gcj02_matches_eviltransform(wlon, wlat, glon, glat):
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert float(lon) == pytest.approx(glon, abs=1e-9)
    assert float(lat) == pytest.approx(glat, abs=1e-9)


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), EVILTRANSFORM)
def test_gcj02_to_wgs84_inverts_reference(wlon, wlat, glon, glat):
    lon, lat = gcj02_to_wgs84(glon, glat)
    assert _metres(wlon, wlat, float(lon), float(lat)) < 0.01


def test_coordtransform_vectors():
    assert np.allclose(wgs84_to_gcj02(116.404, 39.915), WGS_TO_GCJ, atol=1e-11)
    assert np.allclose(gcj02_to_bd09(116.404, 39.915), GCJ_TO_BD, atol=1e-11)
    assert np.allclose(wgs84_to_bd09(116.404, 39.915), WGS_TO_BD, atol=1e-11)
    assert np.allclose(wgs84_to_bd09(*WGS_TO_BD_2[0]), WGS_TO_BD_2[1], atol=1e-11)


def test_iterative_inverse_beats_one_step_approximation():
    lon, lat = gcj02_to_wgs84(116.404, 39.915)
    # the published one-step inverse is within a few metres of ours...
    assert _metres(*APPROX_GCJ_TO_WGS, float(lon), float(lat)) < 5.0
    # ...but only ours round-trips to < 1 cm
    back = wgs84_to_gcj02(lon, lat)
    assert _metres(116.404, 39.915, *map(float, back)) < 0.01
    approx_back = wgs84_to_gcj02(*APPROX_GCJ_TO_WGS)
    assert _metres(116.404, 39.915, *map(float, approx_back)) > 0.02
    g = bd09_to_gcj02(116.404, 39.915)
    assert _metres(*APPROX_BD_TO_GCJ, *map(float, g)) < 5.0


def test_round_trips_below_one_centimetre():
    rng = np.random.default_rng(7)
    lon = rng.uniform(74.0, 134.0, 20_000)
    lat = rng.uniform(18.5, 53.0, 20_000)
    g = wgs84_to_gcj02(lon, lat)
    w = gcj02_to_wgs84(*g)
    assert _metres(lon, lat, *w).max() < 0.01
    b = wgs84_to_bd09(lon, lat)
    w2 = bd09_to_wgs84(*b)
    assert _metres(lon, lat, *w2).max() < 0.01
    # and the shift itself is real: hundreds of metres
    assert np.median(_metres(lon, lat, *g)) > 100


def test_outside_china_passes_through_gcj02():
    lon = np.array([2.35, -74.0, 139.7, 105.0])
    lat = np.array([48.85, 40.7, 35.7, -10.0])
    assert out_of_china(lon, lat).all()
    g = wgs84_to_gcj02(lon, lat)
    assert np.array_equal(g[0], lon)
    assert np.array_equal(g[1], lat)
    w = gcj02_to_wgs84(lon, lat)
    assert np.array_equal(w[0], lon)


def test_to_storage_and_back_for_every_system():
    lon = np.array([112.24, 118.78, 116.40])
    lat = np.array([30.33, 32.04, 39.91])
    for crs in ("wgs84", "gcj02", "bd09", "cgcs2000", "EPSG:4490", "EPSG:4326"):
        x, y = from_storage(lon, lat, crs)
        lo, la = to_storage(x, y, crs)
        assert _metres(lon, lat, lo, la).max() < 0.01, crs
    # projected: Gauss-Kruger CM 111E and UTM 49N, both ways, via PROJ
    for crs in ("EPSG:4546", "EPSG:32649"):
        x, y = from_storage(lon[:1], lat[:1], crs)
        assert x[0] > 100_000
        lo, la = to_storage(x, y, crs)
        assert _metres(lon[:1], lat[:1], lo, la).max() < 0.001


def test_projected_matches_pyproj():
    x, y = from_storage(112.24, 30.33, "EPSG:4546")
    ex, ey = transformer(4490, 4546).transform(112.24, 30.33)
    assert float(x) == pytest.approx(ex, abs=1e-6)
    assert float(y) == pytest.approx(ey, abs=1e-6)
    gx, gy = convert(x, y, src="EPSG:4546", dst="gcj02")
    assert np.allclose(wgs84_to_gcj02(112.24, 30.33), (gx, gy), atol=1e-9)


def test_lattice_batch_within_two_millimetres():
    rng = np.random.default_rng(3)
    n = 120_000  # above LATTICE_MIN_POINTS
    lon = rng.uniform(112.20, 112.26, n)
    lat = rng.uniform(30.30, 30.36, n)
    fast = to_projected(lon, lat, src="gcj02", dst="EPSG:4546")
    sample = slice(0, 3000)
    w = gcj02_to_wgs84(lon[sample], lat[sample])
    ex, ey = transformer(4490, 4546).transform(*w)
    err = np.hypot(fast[0][sample] - ex, fast[1][sample] - ey)
    assert err.max() < 0.002


def test_swapped_lat_lon_is_named():
    with pytest.raises(CoordinateRangeError, match="swapped"):
        to_storage([30.33], [112.24], "wgs84")
    with pytest.raises(CoordinateRangeError, match="out of range"):
        to_storage([200.0], [30.0], "gcj02")
    with pytest.raises(CoordinateRangeError, match="EPSG code"):
        to_storage([500_000.0], [3_357_000.0], "cgcs2000")


def test_unknown_crs_is_an_error():
    with pytest.raises(CoordinateRangeError, match="not a known coordinate system"):
        normalize_crs("mars-ish")
    assert normalize_crs("GCJ-02") == "gcj02"
    assert normalize_crs(4326) == "wgs84"
    assert normalize_crs("EPSG:4546") == "EPSG:4546"


def test_nan_is_kept_not_raised():
    lon, _lat = to_storage([np.nan, 112.2], [np.nan, 30.3], "gcj02")
    assert np.isnan(lon[0])
    assert np.isfinite(lon[1])
