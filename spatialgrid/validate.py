"""Input contracts: required columns, geometry types, validity, non-empty.

Public entry points call these once, before any work, so that bad input fails fast
with a message that names the argument, the offending value and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

import shapely

from spatialgrid.crs import require_crs
from spatialgrid.errors import (
    EmptyInputError,
    InvalidGeometryError,
    MissingColumnError,
)

if TYPE_CHECKING:
    import geopandas as gpd

POLYGONAL = ("Polygon", "MultiPolygon")
PUNTAL = ("Point",)
LINEAL = ("LineString", "MultiLineString")


def require_columns(frame: gpd.GeoDataFrame, columns: Iterable[str], name: str) -> None:
    """Raise :class:`MissingColumnError` if ``frame`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        # A plain DataFrame (assignments, counts) has no geometry column.
        geom = getattr(frame, "_geometry_column_name", None)
        have = [c for c in frame.columns if c != geom]
        msg = (
            f"{name!r} has no column(s) {missing}; it has {have}. Pass the right "
            "column name (e.g. households_col=...) or add the column."
        )
        raise MissingColumnError(msg)


def require_non_empty(frame: gpd.GeoDataFrame, name: str) -> None:
    """Raise :class:`EmptyInputError` if ``frame`` has no rows."""
    if len(frame) == 0:
        msg = f"{name!r} is empty: at least one feature is needed"
        raise EmptyInputError(msg)


def require_geometry_types(
    frame: gpd.GeoDataFrame, allowed: tuple[str, ...], name: str
) -> None:
    """Raise :class:`InvalidGeometryError` for missing, empty or wrongly typed rows."""
    geoms = frame.geometry.values
    missing = np.asarray(frame.geometry.isna()) | np.asarray(shapely.is_empty(geoms))
    if missing.any():
        rows = list(frame.index[missing][:5])
        msg = f"{name!r} has {int(missing.sum())} missing or empty geometries (rows {rows})"
        raise InvalidGeometryError(msg)
    types = np.asarray(frame.geom_type)
    bad = ~np.isin(types, allowed)
    if bad.any():
        rows = list(frame.index[bad][:5])
        msg = (
            f"{name!r} must hold {'/'.join(allowed)} geometries; found "
            f"{sorted(set(types[bad]))} at rows {rows}"
        )
        raise InvalidGeometryError(msg)


def find_invalid(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Rows whose geometry is invalid, with a ``reason`` column (GEOS explanation)."""
    geoms = frame.geometry.values
    invalid = ~np.asarray(shapely.is_valid(geoms))
    out = frame.loc[invalid].copy()
    out["reason"] = shapely.is_valid_reason(geoms[invalid])
    return out


def invalid_reasons(geoms: np.ndarray) -> dict[int, str]:
    """Position -> GEOS reason of every present but invalid geometry."""
    geoms = np.asarray(geoms, dtype=object)
    bad = np.flatnonzero(~shapely.is_missing(geoms) & ~shapely.is_valid(geoms))
    return {int(i): str(shapely.is_valid_reason(geoms[i])) for i in bad}


def repair_invalid(geoms: np.ndarray) -> np.ndarray:
    """``geoms`` with every present but invalid geometry made valid (a copy
    when any is repaired)."""
    geoms = np.asarray(geoms, dtype=object)
    bad = np.flatnonzero(~shapely.is_missing(geoms) & ~shapely.is_valid(geoms))
    if len(bad):
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    return geoms


def require_valid(
    frame: gpd.GeoDataFrame, name: str, *, repair: bool = False
) -> gpd.GeoDataFrame:
    """Return ``frame`` if all geometries are valid; repair only when asked.

    Raises
    ------
    InvalidGeometryError
        When some geometry is invalid and ``repair`` is False.
    """
    bad = find_invalid(frame)
    if bad.empty:
        return frame
    if not repair:
        first = bad.index[0]
        msg = (
            f"{name!r} has {len(bad)} invalid geometries (first: row {first}: "
            f"{bad['reason'].iloc[0]}). Fix them, or pass repair=True to apply "
            "shapely.make_valid."
        )
        raise InvalidGeometryError(msg)
    fixed = frame.copy()
    fixed.loc[bad.index, fixed.geometry.name] = shapely.make_valid(
        frame.geometry.values[np.isin(frame.index, bad.index)]
    )
    return fixed


def require_frame(
    frame: gpd.GeoDataFrame,
    name: str,
    *,
    columns: Iterable[str] = (),
    geometry_types: tuple[str, ...] | None = None,
    allow_empty: bool = False,
) -> None:
    """The usual contract in one call: CRS, columns, non-empty, geometry types."""
    require_crs(frame, name)
    require_columns(frame, columns, name)
    if not allow_empty:
        require_non_empty(frame, name)
    if geometry_types is not None and len(frame):
        require_geometry_types(frame, geometry_types, name)
