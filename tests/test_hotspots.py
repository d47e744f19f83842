"""Getis–Ord Gi* hot spots with Benjamini–Hochberg FDR on incident counts per grid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid import hotspots, testing
from spatialgrid.errors import (
    InputError,
    InsufficientDataError,
    MissingColumnError,
    MissingCRSError,
)


def lattice(
    nx: int, ny: int, counts: np.ndarray | list[int] | None = None
) -> gpd.GeoDataFrame:
    grids = testing.box_lattice(nx, ny, size_m=200.0).rename(
        columns={"block_id": "grid_code"}
    )
    grids.index = pd.RangeIndex(100, 100 + len(grids))  # not 0..n-1 on purpose
    if counts is not None:
        grids["incidents"] = np.asarray(counts)
    return grids


def test_gi_star_by_hand_on_a_chain():
    """Five grids in a row, counts 1 2 3 4 10, rook neighbours.

    n = 5, mean 4, S = sqrt(130/5 - 16) = sqrt(10). Grid 4 (count 10): W = 2,
    S1 = 2, lag = 4 + 10 = 14, G* = (14 - 8) / (sqrt(10) sqrt((10 - 4)/4)) = 1.54919.
    Grid 0: (3 - 8) / sqrt(15) = -1.29099. Grid 2: W = 3, lag = 9,
    (9 - 12) / (sqrt(10) sqrt((15 - 9)/4)) = -0.77460.
    """
    grids = lattice(5, 1, [1, 2, 3, 4, 10])
    out = hotspots.find_hotspots(grids, weights="rook", min_grids=5)
    z = out["gi_z"].to_numpy()
    assert z[4] == pytest.approx(6 / math.sqrt(15), abs=1e-9)  # 1.54919
    assert z[0] == pytest.approx(-5 / math.sqrt(15), abs=1e-9)
    assert z[2] == pytest.approx(-3 / math.sqrt(15), abs=1e-9)
    # grid 1: lag 1+2+3 = 6, W = 3 -> (6 - 12)/sqrt(15); grid 3: lag 17 -> 5/sqrt(15)
    assert z[1] == pytest.approx(-6 / math.sqrt(15), abs=1e-9)
    assert z[3] == pytest.approx(5 / math.sqrt(15), abs=1e-9)
    assert out["gi_p"].iloc[4] == pytest.approx(
        0.12134, abs=1e-4
    )  # 2 * (1 - Phi(1.549))
    assert (out["gi_bin"] == 0).all()  # nothing significant with 5 grids
    assert out["neighbours"].tolist() == [1, 2, 2, 2, 1]


def test_gi_star_matches_a_loop_implementation():
    rng = np.random.default_rng(7)
    grids = lattice(6, 5, rng.poisson(4, 30))
    out = hotspots.find_hotspots(grids)  # queen
    x = grids["incidents"].to_numpy(dtype=float)
    geoms = list(grids.geometry)
    n = len(x)
    xbar = x.mean()
    s = math.sqrt((x**2).mean() - xbar**2)
    for i in range(n):
        w = [
            1.0 if (j == i or geoms[i].distance(geoms[j]) < 1e-6) else 0.0
            for j in range(n)
        ]
        wi, s1 = sum(w), sum(v * v for v in w)
        lag = sum(wj * xj for wj, xj in zip(w, x, strict=True))
        expected = (lag - xbar * wi) / (s * math.sqrt((n * s1 - wi**2) / (n - 1)))
        assert out["gi_z"].iloc[i] == pytest.approx(expected, abs=1e-9)


def test_planted_cluster_is_hot_at_99():
    rng = np.random.default_rng(1)
    counts = rng.poisson(5, size=(10, 10))
    counts[2:5, 6:9] = rng.poisson(30, size=(3, 3))  # rows 2-4, cols 6-8
    grids = lattice(10, 10, counts.ravel())
    out = hotspots.find_hotspots(grids)
    bins = out["gi_bin"].to_numpy().reshape(10, 10)
    assert bins[3, 7] == 3  # the centre of the cluster
    assert (bins[2:5, 6:9] >= 2).sum() >= 7
    assert (bins[2:5, 6:9] == 3).sum() >= 5
    assert out.loc[out["gi_bin"] == 3, "gi_label"].unique().tolist() == ["热点 99%"]
    # invariants: CRS, index and geometry kept
    assert out.crs == grids.crs
    assert out.index.equals(grids.index)
    assert out.geometry.equals(grids.geometry)
    # far from the cluster nothing is hot
    assert (bins[7:, :3] <= 0).all()


def test_random_counts_mostly_not_significant_after_fdr():
    grids = lattice(10, 10)
    fdr_hits, raw_hits = [], []
    for seed in range(20):
        counts = np.random.default_rng(100 + seed).poisson(5, 100)
        g = grids.assign(incidents=counts)
        fdr_hits.append((hotspots.find_hotspots(g)["gi_bin"] != 0).mean())
        raw_hits.append((hotspots.find_hotspots(g, fdr=False)["gi_bin"] != 0).mean())
    assert np.mean(fdr_hits) < 0.03
    assert np.mean(raw_hits) > np.mean(fdr_hits)  # FDR removes false positives
    assert np.mean(raw_hits) > 0.03


def test_fdr_bins_by_hand():
    # p sorted: 0.001 0.008 0.02 0.04 0.2 (n = 5)
    # BH at 0.01: thresholds k/5*0.01 = .002 .004 .006 .008 .01 -> largest k with
    #   p_(k) <= t_k is k = 2 (0.008 <= 0.004? no; k=1: .001 <= .002 yes) -> k = 1
    # BH at 0.05: .01 .02 .03 .04 .05 -> k=4 (0.04 <= 0.04) -> p <= 0.04
    # BH at 0.10: .02 .04 .06 .08 .1 -> k=4 (0.04 <= .08), k=5 0.2 > .1 -> p <= 0.04
    p = np.array([0.04, 0.001, 0.2, 0.008, 0.02])
    z = np.array([2.0, -3.3, 1.3, 2.6, 2.3])
    assert hotspots.fdr_bins(z, p).tolist() == [2, -3, 0, 2, 2]
    assert hotspots.fdr_bins(z, p, fdr=False).tolist() == [2, -3, 0, 3, 2]


def test_counts_from_points_or_codes():
    grids = lattice(6, 5)
    rng = np.random.default_rng(0)
    minx, miny, maxx, maxy = grids.total_bounds
    pts = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(
            rng.uniform(minx, maxx, 500), rng.uniform(miny, maxy, 500)
        ),
        crs=grids.crs,
    )
    by_location = hotspots.count_incidents_per_grid(grids, pts)
    assert by_location.sum() == 500
    assert by_location.index.equals(grids.index)
    joined = gpd.sjoin(pts, grids[["grid_code", "geometry"]], predicate="within")
    by_code = hotspots.count_incidents_per_grid(grids, joined[["grid_code"]])
    assert by_code.tolist() == by_location.tolist()
    out = hotspots.find_hotspots(grids, pts)
    assert out["incidents"].sum() == 500


def test_refuses_fewer_than_30_grids():
    grids = lattice(5, 5, np.arange(25))
    with pytest.raises(
        InsufficientDataError, match="25 features; Gi\\* hot spots need at least"
    ):
        hotspots.find_hotspots(grids)
    assert isinstance(InsufficientDataError("x"), ValueError)


def test_weights_options_and_errors():
    grids = lattice(6, 5, np.arange(30))
    rook = hotspots.spatial_weights(grids, weights="rook")
    queen = hotspots.spatial_weights(grids, weights="queen")
    assert len(rook) == 2 * (5 * 5 + 6 * 4)  # directed pairs
    assert len(queen) == len(rook) + 2 * 2 * 5 * 4
    near = hotspots.spatial_weights(grids, weights="distance", distance_m=201)
    assert len(near) == len(rook)
    with pytest.raises(InputError, match="needs distance_m"):
        hotspots.spatial_weights(grids, weights="distance")
    with pytest.raises(InputError, match="weights='knn' unknown"):
        hotspots.find_hotspots(grids, weights="knn")
    with pytest.raises(MissingColumnError, match="count_col='n'"):
        hotspots.find_hotspots(grids, count_col="n")
    with pytest.raises(MissingCRSError):
        hotspots.find_hotspots(grids.set_crs(None, allow_override=True))
    flat = hotspots.find_hotspots(grids.assign(incidents=3))
    assert (flat["gi_z"] == 0).all()
    assert (flat["gi_bin"] == 0).all()


def test_geographic_input_and_islands():
    grids = lattice(6, 5, np.arange(30)).to_crs("EPSG:4490")
    island = gpd.GeoDataFrame(
        {"grid_code": ["far"], "incidents": [3]},
        geometry=[shapely.box(112.5, 30.5, 112.501, 30.501)],
        crs="EPSG:4490",
    )
    both = pd.concat([grids, island])
    out = hotspots.find_hotspots(both)
    assert out.crs == both.crs
    assert out["neighbours"].iloc[-1] == 0
    assert np.isfinite(out["gi_z"]).all()
