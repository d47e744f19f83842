"""The in-memory city: every layer a planner works with, as GeoDataFrames.

A :class:`City` is what importers (OSM, planner layers) and the sample-city generator
produce, what ``spatialgrid/db`` stores and loads, and what partition, coverage and
locate consume. All layers share one CRS. Column names are fixed here, once:
:data:`LAYER_COLUMNS` lists the required columns of each layer (besides
``geometry``); extra columns are allowed and kept.

Codes follow ../DOMAIN: subdistrict code = 6-digit admin code + 3 digits (9 digits),
community code = subdistrict code + 3 digits (12 digits). Codes are strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

import geopandas as gpd

from spatialgrid.crs import require_same_crs
from spatialgrid.errors import MissingColumnError

#: Required columns per layer (``geometry`` is implied). Geometry types in comments.
LAYER_COLUMNS: dict[str, tuple[str, ...]] = {
    # Polygon/MultiPolygon. level: "district" | "subdistrict"
    "subdistricts": ("subdistrict_code", "name"),
    # Polygon/MultiPolygon. generated: True when grouped by spatialgrid, not given.
    "communities": (
        "community_code",
        "name",
        "subdistrict_code",
        "households",
        "generated",
    ),
    # LineString. highway: OSM class or generator class ("primary", "secondary",
    # "tertiary", "residential", "service", "footway"...). internal: True for roads
    # inside blocks (compound roads, paths) that did not cut blocks.
    "streets": ("street_id", "name", "highway", "internal"),
    # Polygon. households_source: "planner" | "buildings" | "estimated" | "none".
    "blocks": ("block_id", "community_code", "households", "households_source"),
    # Polygon. households_source: "planner" | "flats_tag" | "estimated" | "none".
    "buildings": (
        "building_id",
        "block_id",
        "compound_id",
        "levels",
        "households",
        "households_source",
    ),
    # Polygon. A gated compound (小区); households = sum of its buildings.
    "compounds": ("compound_id", "name", "block_id", "households"),
    # Point. A door plate (门牌) or building plate (楼栋牌). kind: "door" | "building"
    "addresses": (
        "address_id",
        "address",
        "road",
        "number",
        "compound",
        "building",
        "kind",
        "block_id",
    ),
    # Point. is_shop: shop-like POIs (沿街商铺 candidates).
    "pois": ("poi_id", "name", "category", "is_shop", "block_id"),
}

LAYERS: tuple[str, ...] = tuple(LAYER_COLUMNS)


def empty_layer(layer: str, crs: Any) -> gpd.GeoDataFrame:
    """An empty GeoDataFrame with the required columns of ``layer``."""
    cols = LAYER_COLUMNS[layer]
    return gpd.GeoDataFrame(
        {c: pd.Series(dtype="object") for c in cols},
        geometry=gpd.GeoSeries([], crs=crs),
        crs=crs,
    )


@dataclass(frozen=True)
class City:
    """All layers of one city (or one imported area), in one CRS.

    Attributes
    ----------
    subdistricts, communities, streets, blocks, buildings, compounds, addresses, pois
        GeoDataFrames with at least the columns of :data:`LAYER_COLUMNS`.
    name
        Human name of the city/area.
    admin_code
        6-digit GB/T 2260 code of the district.
    report
        What the producer did: counts, what was estimated, what was dropped and why,
        defaults used. JSON-serialisable.
    """

    subdistricts: gpd.GeoDataFrame
    communities: gpd.GeoDataFrame
    streets: gpd.GeoDataFrame
    blocks: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    compounds: gpd.GeoDataFrame
    addresses: gpd.GeoDataFrame
    pois: gpd.GeoDataFrame
    name: str = "city"
    admin_code: str = "000000"
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def crs(self) -> Any:
        """The CRS shared by every layer."""
        return self.blocks.crs

    def layers(self) -> dict[str, gpd.GeoDataFrame]:
        """The layers by name, in :data:`LAYERS` order."""
        return {name: getattr(self, name) for name in LAYERS}

    def to_crs(self, crs: Any) -> City:
        """The same city with every layer reprojected to ``crs``."""
        return replace(self, **{n: g.to_crs(crs) for n, g in self.layers().items()})

    def validate(self) -> None:
        """Check every layer has its required columns and all share one CRS."""
        for name, frame in self.layers().items():
            missing = [c for c in LAYER_COLUMNS[name] if c not in frame.columns]
            if missing:
                msg = f"layer {name!r} lacks required columns {missing}"
                raise MissingColumnError(msg)
        require_same_crs(**self.layers())

    def summary(self) -> dict[str, Any]:
        """Counts and household totals per layer."""
        out: dict[str, Any] = {n: len(g) for n, g in self.layers().items()}
        out["households"] = int(self.blocks["households"].sum())
        return out
