"""Statistical hot spots of incidents per grid: Getis–Ord Gi* with FDR correction.

For grid ``i`` with incident count ``x_i`` among ``n`` grids and spatial weights
``w_ij`` that include the grid itself (``w_ii = 1``, the "star" statistic)::

    G*_i = (sum_j w_ij x_j - xbar W_i) / (S sqrt((n S1_i - W_i^2) / (n - 1)))

with ``xbar`` the mean count, ``S = sqrt(sum x^2 / n - xbar^2)``, ``W_i = sum_j w_ij``
and ``S1_i = sum_j w_ij^2`` (Getis & Ord 1992; Ord & Getis 1995, eq. 8–9). ``G*_i``
is a z-score; its two-sided p-value comes from the standard normal.

Many grids are tested at once, so p-values are corrected with the Benjamini–
Hochberg false discovery rate (1995) at each confidence level, as ArcGIS' Hot Spot
Analysis does: a grid is in the 99 % bin when it passes BH at α = 0.01, else 95 %
at α = 0.05, else 90 % at α = 0.10. Bins are ``+3/+2/+1`` (hot) and ``-3/-2/-1``
(cold), ``0`` not significant.

Fewer than 30 grids give unreliable z-scores (the normal approximation needs a
reasonable n, ArcGIS warns at 30): :func:`find_hotspots` refuses them with
:class:`~spatialgrid.errors.InsufficientDataError`.

Weights: ``"queen"`` (grids sharing an edge or a corner, default), ``"rook"``
(a shared edge, :func:`spatialgrid.adjacency.shared_edges`) or ``"distance"``
(centroids within ``distance_m``), computed in a projected CRS. Binary weights are
used; row-standardising would not change ``G*_i`` (numerator and denominator scale
together).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.adjacency import shared_edges
from spatialgrid.crs import require_crs, require_same_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import (
    InputError,
    InsufficientDataError,
    MissingColumnError,
)

if TYPE_CHECKING:
    from pyproj import CRS

logger = logging.getLogger(__name__)

#: Fewest grids for which hot spots are computed.
MIN_GRIDS = 30
#: (bin, alpha) from the strictest level down.
_LEVELS: tuple[tuple[int, float], ...] = ((3, 0.01), (2, 0.05), (1, 0.10))
BIN_LABELS: dict[int, str] = {
    3: "热点 99%",
    2: "热点 95%",
    1: "热点 90%",
    0: "不显著",
    -1: "冷点 90%",
    -2: "冷点 95%",
    -3: "冷点 99%",
}


def count_incidents_per_grid(
    grids: gpd.GeoDataFrame,
    incidents: pd.DataFrame | gpd.GeoDataFrame,
    *,
    grid_col: str = "grid_code",
) -> pd.Series:
    """Number of incidents in each grid (zero where none), aligned to ``grids``.

    Incidents carrying ``grid_col`` (assigned at report time) are counted by that
    code; otherwise points are joined to the grid polygons that contain them.
    """
    if grid_col not in grids.columns:
        msg = f"grids lack the column grid_col={grid_col!r}"
        raise MissingColumnError(msg)
    if grid_col in incidents.columns:
        counts = incidents[grid_col].value_counts()
    else:
        if not isinstance(incidents, gpd.GeoDataFrame):
            msg = (
                f"incidents have neither {grid_col!r} nor geometries; give points or "
                "the grid code assigned at report time"
            )
            raise MissingColumnError(msg)
        require_same_crs(grids=grids, incidents=incidents)
        joined = gpd.sjoin(
            incidents[[incidents.geometry.name]],
            grids[[grid_col, grids.geometry.name]],
            how="inner",
            predicate="within",
        )
        counts = joined.drop_duplicates(subset=None).groupby(grid_col).size()
    out = grids[grid_col].map(counts).fillna(0).astype(int)
    out.name = "incidents"
    return out


def spatial_weights(
    grids: gpd.GeoDataFrame,
    *,
    weights: str = "queen",
    distance_m: float | None = None,
    working_crs: CRS | str | int | None = None,
) -> pd.DataFrame:
    """Binary neighbour pairs ``i, j`` (positions, both directions, no self pairs)."""
    crs = _working_crs(grids, working_crs)
    geoms = np.asarray(grids.geometry.to_crs(crs).values)
    if weights == "rook":
        edges = shared_edges(geoms)
        i, j = edges["i"].to_numpy(), edges["j"].to_numpy()
    elif weights == "queen":
        tree = shapely.STRtree(geoms)
        i, j = tree.query(geoms, predicate="dwithin", distance=0.01)
        keep = i < j
        i, j = i[keep], j[keep]
    elif weights == "distance":
        if distance_m is None or distance_m <= 0:
            msg = f"weights='distance' needs distance_m > 0, got {distance_m!r}"
            raise InputError(msg)
        from scipy.spatial import cKDTree

        cent = shapely.centroid(geoms)
        xy = np.column_stack([shapely.get_x(cent), shapely.get_y(cent)])
        pairs = cKDTree(xy).query_pairs(distance_m, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
    else:
        msg = f"weights={weights!r} unknown; use 'queen', 'rook' or 'distance'"
        raise InputError(msg)
    return pd.DataFrame(
        {"i": np.r_[i, j].astype(int), "j": np.r_[j, i].astype(int)}
    ).drop_duplicates()


def getis_ord_gi_star(values: np.ndarray, pairs: pd.DataFrame) -> np.ndarray:
    """Gi* z-scores for ``values`` with binary neighbour ``pairs`` plus self weights.

    Parameters
    ----------
    values
        One value per feature (incident counts).
    pairs
        Neighbour pairs ``i, j`` by position, both directions, without self pairs.

    Returns
    -------
    numpy.ndarray
        z-score per feature; 0 everywhere when all values are equal.
    """
    from scipy.sparse import coo_matrix, identity

    x = np.asarray(values, dtype=float)
    n = len(x)
    w = coo_matrix(
        (np.ones(len(pairs)), (pairs["i"].to_numpy(), pairs["j"].to_numpy())),
        shape=(n, n),
    ).tocsr()
    w = (w > 0).astype(float) + identity(n, format="csr")
    xbar = x.mean()
    s = np.sqrt(max((x**2).mean() - xbar**2, 0.0))
    wi = np.asarray(w.sum(axis=1)).ravel()
    s1 = np.asarray(w.multiply(w).sum(axis=1)).ravel()
    lag = w @ x
    if s == 0.0:
        return np.zeros(n)
    denom = s * np.sqrt((n * s1 - wi**2) / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (lag - xbar * wi) / denom
    # A feature that neighbours every other one has zero variance of its sum.
    return np.where(denom > 0, z, 0.0)


def fdr_bins(z: np.ndarray, p: np.ndarray, *, fdr: bool = True) -> np.ndarray:
    """Confidence bins -3..3 from z-scores and two-sided p-values.

    With ``fdr`` the Benjamini–Hochberg procedure picks the p threshold at each
    level (α = 0.01, 0.05, 0.10); without it the plain α is the threshold.
    """
    n = len(p)
    bins = np.zeros(n, dtype=int)
    if n == 0:
        return bins
    order = np.sort(p)
    ranks = np.arange(1, n + 1)
    for level, alpha in reversed(_LEVELS):  # 90 %, then overwrite with 95, 99
        if fdr:
            passing = np.flatnonzero(order <= ranks / n * alpha)
            threshold = order[passing[-1]] if len(passing) else -1.0
        else:
            threshold = alpha
        hit = p <= threshold
        bins[hit] = level
    return bins * np.sign(z).astype(int)


def find_hotspots(
    grids: gpd.GeoDataFrame,
    incidents: pd.DataFrame | gpd.GeoDataFrame | None = None,
    *,
    count_col: str = "incidents",
    grid_col: str = "grid_code",
    weights: str = "queen",
    distance_m: float | None = None,
    fdr: bool = True,
    min_grids: int = MIN_GRIDS,
    working_crs: CRS | str | int | None = None,
) -> gpd.GeoDataFrame:
    """Getis–Ord Gi* hot and cold spots of incident counts per grid.

    Parameters
    ----------
    grids
        Grid polygons with ``grid_col`` (and ``count_col`` when ``incidents`` is
        None). Must have a CRS.
    incidents
        Incidents to count per grid (by their ``grid_col`` or by location); None
        uses ``grids[count_col]``.
    count_col, grid_col
        Column names.
    weights, distance_m
        Neighbourhood: ``"queen"``, ``"rook"`` or ``"distance"`` (with
        ``distance_m``, metres between centroids).
    fdr
        Correct for multiple testing with Benjamini–Hochberg (default).
    min_grids
        Refuse fewer grids than this (default 30; lowering it is at your risk).
    working_crs
        Projected CRS for the neighbourhood; default chosen by
        :func:`spatialgrid.crs.working_crs`.

    Returns
    -------
    geopandas.GeoDataFrame
        The grids (input CRS and index) with ``count_col``, ``gi_z``, ``gi_p``
        (two-sided), ``gi_bin`` (-3..3), ``gi_label`` and ``neighbours``.

    Raises
    ------
    InsufficientDataError
        Fewer than ``min_grids`` grids.
    MissingColumnError
        The count or grid column is absent.
    """
    from scipy.special import ndtr  # lighter than scipy.stats

    require_crs(grids, "grids")
    if len(grids) < min_grids:
        msg = (
            f"grids has {len(grids)} features; Gi* hot spots need at least "
            f"min_grids={min_grids} for a meaningful normal approximation. Analyse a "
            "larger area (more grids) instead"
        )
        raise InsufficientDataError(msg)
    out = grids.copy()
    if incidents is not None:
        out[count_col] = count_incidents_per_grid(grids, incidents, grid_col=grid_col)
    elif count_col not in grids.columns:
        msg = f"grids lack count_col={count_col!r}; add counts or pass incidents"
        raise MissingColumnError(msg)
    pairs = spatial_weights(
        out, weights=weights, distance_m=distance_m, working_crs=working_crs
    )
    x = out[count_col].to_numpy(dtype=float)
    z = getis_ord_gi_star(x, pairs)
    p = 2.0 * ndtr(-np.abs(z))
    bins = fdr_bins(z, p, fdr=fdr)
    out["gi_z"] = z
    out["gi_p"] = p
    out["gi_bin"] = bins
    out["gi_label"] = pd.Series(bins, index=out.index).map(BIN_LABELS)
    out["neighbours"] = (
        pd.Series(pairs["i"].to_numpy())
        .value_counts()
        .reindex(range(len(out)))
        .fillna(0)
    ).to_numpy(dtype=int)
    islands = int((out["neighbours"] == 0).sum())
    if islands:
        logger.info(
            "find_hotspots: %d grids have no neighbour (weights=%s)", islands, weights
        )
    return out
