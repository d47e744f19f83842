"""Households per building: tagged flats first, else an estimate from floor area.

Rules, in order (each building gets exactly one ``households_source``):

1. ``building:flats`` tagged → that number (``"flats_tag"``).
2. Residential building → ``round(footprint m² × levels ÷ dwelling size m²)``, at least
   1 (``"estimated"``). Residential means a ``building`` value in
   ``residential_tags``; or ``building=yes`` (the most common OSM value) when the
   ``yes`` heuristics hold: the building carries no shop/amenity/office... tags, its
   representative point lies in no non-residential landuse/amenity area (commercial,
   retail, school, hospital...), and its footprint is at least ``min_footprint_m2``
   (smaller ones are kiosks, sheds, gatehouses).
3. Anything else → 0 (``"none"``), with the reason.

Missing ``building:levels`` takes ``default_levels``. Everything estimated or defaulted
is counted in the returned report, so a planner can see how much of the total is a
guess and replace it with their own counts (``source "planner"``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd

from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import InputError
from spatialgrid.validate import require_frame

if TYPE_CHECKING:
    from pyproj import CRS

logger = logging.getLogger(__name__)

#: ``building`` values that are homes.
DEFAULT_RESIDENTIAL_TAGS: tuple[str, ...] = (
    "residential",
    "apartments",
    "house",
    "detached",
    "semidetached_house",
    "terrace",
    "dormitory",
    "bungalow",
)


def estimate_households(
    buildings: gpd.GeoDataFrame,
    *,
    landuse: gpd.GeoDataFrame | None = None,
    default_levels: float = 6.0,
    dwelling_size_m2: float = 90.0,
    residential_tags: Iterable[str] = DEFAULT_RESIDENTIAL_TAGS,
    yes_is_residential: bool = True,
    min_footprint_m2: float = 40.0,
    working_crs: CRS | str | int | None = None,
) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """Households of each building, with the rule that produced it.

    Parameters
    ----------
    buildings
        Polygons with columns ``building`` (OSM value), ``levels`` and ``flats``
        (numbers, NaN when untagged) and ``has_poi_tags`` (bool), as produced by
        :func:`spatialgrid.osm.read_osm`.
    landuse
        Areas with a ``kind`` column (``landuse=commercial``, ``amenity=school``...);
        buildings inside a non-residential one are not homes under the ``yes``
        heuristics. Same CRS as ``buildings``.
    default_levels
        Levels assumed when ``building:levels`` is missing.
    dwelling_size_m2
        Gross floor area per household (common areas included).
    residential_tags
        ``building`` values that count as residential outright.
    yes_is_residential
        Apply the ``building=yes`` heuristics (else ``yes`` counts as non-residential).
    min_footprint_m2
        Smallest footprint of a ``building=yes`` home.
    working_crs
        Projected CRS for areas; default from :func:`spatialgrid.crs.working_crs`.

    Returns
    -------
    (geopandas.GeoDataFrame, dict)
        A copy of ``buildings`` with ``footprint_m2``, ``levels`` (filled),
        ``levels_source`` (``"tag"``/``"default"``), ``residential`` (bool),
        ``households`` (int), ``households_source`` and ``reason``; and a report dict
        (counts per source and reason, defaults used, totals).

    Raises
    ------
    InputError
        For a non-positive ``dwelling_size_m2`` or ``default_levels``.
    """
    if dwelling_size_m2 <= 0:
        msg = f"dwelling_size_m2={dwelling_size_m2} must be > 0 (e.g. 90)"
        raise InputError(msg)
    if default_levels <= 0:
        msg = f"default_levels={default_levels} must be > 0 (e.g. 6)"
        raise InputError(msg)
    require_frame(
        buildings,
        "buildings",
        columns=["building"],
        geometry_types=("Polygon", "MultiPolygon"),
        allow_empty=True,
    )
    out = buildings.copy()
    n = len(out)
    for col, default in (
        ("levels", np.nan),
        ("flats", np.nan),
        ("has_poi_tags", False),
    ):
        if col not in out.columns:
            out[col] = default
    wcrs = _working_crs(out, working_crs) if n else None
    footprint = out.to_crs(wcrs).geometry.area.to_numpy() if n else np.zeros(0)
    levels_tag = pd.to_numeric(out["levels"], errors="coerce").to_numpy(dtype=float)
    has_levels = np.isfinite(levels_tag) & (levels_tag > 0)
    levels = np.where(has_levels, levels_tag, default_levels)
    flats = pd.to_numeric(out["flats"], errors="coerce").to_numpy(dtype=float)
    has_flats = np.isfinite(flats) & (flats >= 0)
    btype = out["building"].astype(str).to_numpy()
    poi_tags = out["has_poi_tags"].fillna(False).astype(bool).to_numpy()

    in_nonres = np.zeros(n, dtype=bool)
    in_res_area = np.zeros(n, dtype=bool)
    if landuse is not None and len(landuse) and n:
        from spatialgrid.osm import (
            NON_RESIDENTIAL_AMENITY_AREAS,
            NON_RESIDENTIAL_LANDUSE,
        )

        kinds = landuse["kind"].astype(str)
        key = kinds.str.split("=", n=1).str[0]
        val = kinds.str.split("=", n=1).str[1]
        nonres = ((key == "landuse") & val.isin(NON_RESIDENTIAL_LANDUSE)) | (
            (key == "amenity") & val.isin(NON_RESIDENTIAL_AMENITY_AREAS)
        )
        res = (key == "landuse") & (val == "residential")
        points = gpd.GeoDataFrame(
            geometry=out.geometry.representative_point().to_numpy(), crs=out.crs
        )
        for mask, target in ((nonres, in_nonres), (res, in_res_area)):
            areas = landuse.loc[mask.to_numpy()]
            if len(areas):
                hit = points.sjoin(areas[[areas.geometry.name]], predicate="within")
                target[np.unique(hit.index.to_numpy())] = True

    res_tags = set(residential_tags)
    reason = np.full(n, "", dtype=object)
    residential = np.zeros(n, dtype=bool)
    is_res_tag = np.isin(btype, list(res_tags))
    residential |= is_res_tag
    reason[is_res_tag] = "building tag is residential"
    is_yes = btype == "yes"
    if yes_is_residential:
        yes_ok = is_yes & ~poi_tags & ~in_nonres & (footprint >= min_footprint_m2)
        residential |= yes_ok
        reason[yes_ok & in_res_area] = "building=yes in residential landuse"
        reason[yes_ok & ~in_res_area] = "building=yes, no non-residential hint"
        reason[is_yes & poi_tags] = "building=yes with shop/amenity/office tags"
        reason[is_yes & ~poi_tags & in_nonres] = (
            "building=yes in non-residential landuse/amenity area"
        )
        small = is_yes & ~poi_tags & ~in_nonres & (footprint < min_footprint_m2)
        reason[small] = f"building=yes below {min_footprint_m2:g} m² footprint"
    else:
        reason[is_yes] = (
            "building=yes counted non-residential (yes_is_residential=False)"
        )
    other = ~is_res_tag & ~is_yes
    reason[other] = np.char.add("non-residential building=", btype[other].astype(str))

    estimate = np.maximum(np.rint(footprint * levels / dwelling_size_m2), 1).astype(int)
    households = np.where(residential, estimate, 0)
    source = np.where(residential, "estimated", "none").astype(object)
    households = np.where(has_flats, np.rint(flats), households).astype(int)
    source[has_flats] = "flats_tag"
    reason[has_flats] = "building:flats tag"

    out["footprint_m2"] = footprint
    out["levels"] = levels
    out["levels_source"] = np.where(has_levels, "tag", "default")
    out["residential"] = residential | has_flats
    out["households"] = households
    out["households_source"] = source
    out["reason"] = reason

    estimated = source == "estimated"
    rep: dict[str, Any] = {
        "buildings": n,
        "households": int(households.sum()),
        "by_source": {
            s: {
                "buildings": int((source == s).sum()),
                "households": int(households[source == s].sum()),
            }
            for s in ("flats_tag", "estimated", "none")
        },
        "by_reason": {
            str(k): int(v) for k, v in pd.Series(reason).value_counts().items()
        },
        "levels_defaulted": int((estimated & ~has_levels).sum()),
        "defaults": {
            "default_levels": default_levels,
            "dwelling_size_m2": dwelling_size_m2,
            "residential_tags": sorted(res_tags),
            "yes_is_residential": yes_is_residential,
            "min_footprint_m2": min_footprint_m2,
        },
    }
    logger.info(
        "households: %d (%d buildings estimated, %d from building:flats)",
        rep["households"],
        rep["by_source"]["estimated"]["buildings"],
        rep["by_source"]["flats_tag"]["buildings"],
    )
    return out, rep
