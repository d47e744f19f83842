"""Assertion helpers and synthetic builders reusable by tests, notebooks and benches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import geopandas as gpd
import shapely

#: CGCS2000 / 3-degree Gauss-Kruger CM 111E: projected metres around Jingzhou.
PROJECTED_CRS = "EPSG:4546"
#: A false origin inside that zone (x near the central meridian, y ~ 30.3 N).
ORIGIN = (500_000.0, 3_357_000.0)


def box_lattice(
    nx: int,
    ny: int,
    *,
    size_m: float = 100.0,
    households: int | Sequence[int] = 250,
    community_code: str = "421002001001",
    origin: tuple[float, float] = ORIGIN,
    crs: str = PROJECTED_CRS,
) -> gpd.GeoDataFrame:
    """An ``nx`` x ``ny`` lattice of square blocks sharing edges exactly.

    Block ids are ``B{row}_{col}`` with row 0 in the north; ``households`` is one
    number for all blocks or one per block in row-major order (north-west first).
    """
    x0, y0 = origin
    ids, geoms = [], []
    for row in range(ny):
        for col in range(nx):
            x = x0 + col * size_m
            y = y0 + (ny - 1 - row) * size_m
            ids.append(f"B{row}_{col}")
            geoms.append(shapely.box(x, y, x + size_m, y + size_m))
    hh = (
        np.full(len(ids), households, dtype=int)
        if isinstance(households, int)
        else np.asarray(households, dtype=int)
    )
    if len(hh) != len(ids):
        msg = f"households has {len(hh)} values for {len(ids)} blocks"
        raise ValueError(msg)
    return gpd.GeoDataFrame(
        {
            "block_id": ids,
            "community_code": community_code,
            "households": hh,
            "households_source": "planner",
        },
        geometry=geoms,
        crs=crs,
    )
