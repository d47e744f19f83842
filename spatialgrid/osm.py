"""Read an OpenStreetMap extract (``.osm`` XML or ``.osm.pbf``) into raw GeoDataFrames.

One pass with pyosmium (node locations for ways, multipolygon areas assembled by
libosmium) collects what spatialgrid needs and nothing else:

- highways (centre lines, with class and name),
- buildings (areas, with ``building``, ``building:levels``, ``building:flats`` and
  whether the building itself carries shop/amenity/office tags),
- POIs (nodes and areas tagged shop/amenity/office/craft/tourism/healthcare/leisure),
- addresses (``addr:housenumber`` + ``addr:street`` on anything),
- residential landuse / ``place=neighbourhood`` areas (compound candidates) and
  non-residential landuse/amenity areas (used by the building heuristics),
- administrative boundaries (``boundary=administrative``, any ``admin_level``).

Everything comes back in EPSG:4490: OSM stores WGS-84, which CGCS2000 matches within
centimetres, so coordinates are relabelled, not transformed. Turning these into City
layers (blocks, households, communities) happens in :mod:`spatialgrid.importers`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import osmium
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.crs import STORAGE_EPSG
from spatialgrid.errors import DataFormatError, EmptyInputError
from spatialgrid.progress import ProgressCallback, report

logger = logging.getLogger(__name__)

#: Keys whose presence makes a node/area a POI candidate.
POI_KEYS: tuple[str, ...] = (
    "shop",
    "amenity",
    "office",
    "craft",
    "tourism",
    "healthcare",
    "leisure",
)
#: Keys that make a POI shop-like (沿街商铺 candidates).
SHOP_KEYS: tuple[str, ...] = ("shop", "craft")
#: amenity values that are shop-like although tagged amenity.
SHOP_AMENITIES: frozenset[str] = frozenset(
    {
        "restaurant",
        "cafe",
        "fast_food",
        "bar",
        "pub",
        "bank",
        "pharmacy",
        "food_court",
        "ice_cream",
        "marketplace",
        "internet_cafe",
        "bureau_de_change",
    }
)
#: Street furniture and similar: never a POI, even when named.
NON_POI_VALUES: frozenset[str] = frozenset(
    {
        "parking",
        "parking_entrance",
        "parking_space",
        "bicycle_parking",
        "motorcycle_parking",
        "bicycle_rental",
        "waste_basket",
        "waste_disposal",
        "recycling",
        "bench",
        "drinking_water",
        "fountain",
        "shelter",
        "vending_machine",
        "post_box",
        "telephone",
        "clock",
        "grit_bin",
        "atm",
        "toilets",
        "pitch",
        "track",
        "playground",
        "garden",
        "picnic_table",
        "swimming_pool",
    }
)
#: landuse values that mark a building's surroundings as non-residential.
NON_RESIDENTIAL_LANDUSE: frozenset[str] = frozenset(
    {
        "commercial",
        "retail",
        "industrial",
        "military",
        "railway",
        "construction",
        "religious",
        "education",
        "institutional",
    }
)
#: amenity values of areas whose buildings are not homes (campus, hospital...).
NON_RESIDENTIAL_AMENITY_AREAS: frozenset[str] = frozenset(
    {
        "school",
        "university",
        "college",
        "kindergarten",
        "hospital",
        "clinic",
        "townhall",
        "police",
        "place_of_worship",
        "marketplace",
        "prison",
        "courthouse",
    }
)


@dataclass
class OSMData:
    """Raw features of one OSM extract, each a GeoDataFrame in EPSG:4490.

    Attributes
    ----------
    highways
        LineStrings: ``osm_id``, ``highway``, ``name`` (``area=yes`` highways such
        as pedestrian squares are skipped).
    buildings
        (Multi)Polygons: ``osm_id`` (``w123``/``r45``), ``building``, ``levels``
        (float, NaN when untagged), ``flats`` (float, NaN when untagged), ``name``,
        ``has_poi_tags`` (the building itself carries shop/amenity/office... tags).
    pois
        Points (areas reduced to a representative point): ``osm_id``, ``name``,
        ``category`` (``key=value``), ``is_shop``.
    addresses
        Points: ``osm_id``, ``road``, ``number``, ``name``, ``building`` (the tagged
        ``addr:housename``/building name when any).
    landuse
        (Multi)Polygons of landuse/place/amenity areas: ``osm_id``, ``kind``
        (``landuse=residential``...), ``name``.
    boundaries
        (Multi)Polygons with ``boundary=administrative``: ``osm_id``,
        ``admin_level`` (int), ``name``, ``ref`` (code tag if any).
    bounds
        Polygon: the extract's ``<bounds>`` when the file has them, else ``None``.
    skipped
        Reason → count of objects that could not be turned into geometry.
    """

    highways: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    pois: gpd.GeoDataFrame
    addresses: gpd.GeoDataFrame
    landuse: gpd.GeoDataFrame
    boundaries: gpd.GeoDataFrame
    bounds: shapely.Polygon | None = None
    skipped: dict[str, int] = field(default_factory=dict)


def _is_poi(tags: dict[str, str]) -> tuple[str, bool] | None:
    """``(category, is_shop)`` when ``tags`` describe a POI, else ``None``."""
    for key in POI_KEYS:
        value = tags.get(key)
        if value is None or value in ("no",) or value in NON_POI_VALUES:
            continue
        if key == "leisure" and "name" not in tags:
            continue  # unnamed pitches/parks are land cover, not places
        is_shop = key in SHOP_KEYS or (key == "amenity" and value in SHOP_AMENITIES)
        return f"{key}={value}", is_shop
    return None


def _number(text: str | None) -> float:
    """Leading number of an OSM tag value ("6", "6;7", "12.5"); NaN when none."""
    if text is None:
        return float("nan")
    head = text.replace(",", ".").split(";")[0].strip()
    digits = ""
    for ch in head:
        if ch.isdigit() or (ch == "." and "." not in digits):
            digits += ch
        else:
            break
    try:
        return float(digits)
    except ValueError:
        return float("nan")


class _Collector:
    """Accumulates rows per raw layer while iterating a pyosmium FileProcessor."""

    def __init__(self) -> None:
        self.wkb = osmium.geom.WKBFactory()
        self.rows: dict[str, list[dict[str, Any]]] = {
            k: []
            for k in (
                "highways",
                "buildings",
                "pois",
                "addresses",
                "landuse",
                "boundaries",
            )
        }
        self.skipped: dict[str, int] = {}

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def node(self, obj: Any, tags: dict[str, str]) -> None:
        if not tags:
            return
        poi = _is_poi(tags)
        addr = "addr:housenumber" in tags and "addr:street" in tags
        if poi is None and not addr:
            return
        loc = obj.location
        if not loc.valid():
            self.skip("node without a valid location")
            return
        point = shapely.Point(loc.lon, loc.lat)
        oid = f"n{obj.id}"
        if poi is not None:
            self._poi(oid, tags, poi, point)
        if addr:
            self._address(oid, tags, point)

    def way(self, obj: Any, tags: dict[str, str]) -> None:
        highway = tags.get("highway")
        if highway is None or tags.get("area") == "yes":
            return
        try:
            line = shapely.from_wkb(self.wkb.create_linestring(obj))
        except (
            RuntimeError,
            ValueError,
            osmium.InvalidLocationError,
            shapely.errors.GEOSException,
        ):
            self.skip("highway with missing node locations")
            return
        self.rows["highways"].append(
            {
                "osm_id": f"w{obj.id}",
                "highway": highway,
                "name": tags.get("name"),
                "geometry": line,
            }
        )

    def area(self, obj: Any, tags: dict[str, str]) -> None:
        if not tags:
            return
        wanted = (
            "building" in tags
            or _is_poi(tags) is not None
            or ("addr:housenumber" in tags and "addr:street" in tags)
            or "landuse" in tags
            or tags.get("place") in ("neighbourhood", "quarter", "city_block")
            or tags.get("amenity") in NON_RESIDENTIAL_AMENITY_AREAS
            or tags.get("boundary") == "administrative"
        )
        if not wanted:
            return
        try:
            geom = shapely.from_wkb(self.wkb.create_multipolygon(obj))
        except (
            RuntimeError,
            ValueError,
            osmium.InvalidLocationError,
            shapely.errors.GEOSException,
        ):
            self.skip("area that could not be assembled")
            return
        if geom.is_empty:
            self.skip("area that could not be assembled")
            return
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        if len(geom.geoms) == 1:
            geom = geom.geoms[0]
        oid = f"{'w' if obj.from_way() else 'r'}{obj.orig_id()}"
        if "building" in tags and tags["building"] != "no":
            self.rows["buildings"].append(
                {
                    "osm_id": oid,
                    "building": tags["building"],
                    "levels": _number(tags.get("building:levels")),
                    "flats": _number(tags.get("building:flats")),
                    "name": tags.get("name"),
                    "has_poi_tags": any(k in tags for k in POI_KEYS),
                    "geometry": geom,
                }
            )
        poi = _is_poi(tags)
        if poi is not None or ("addr:housenumber" in tags and "addr:street" in tags):
            point = geom.representative_point()
            if poi is not None:
                self._poi(oid, tags, poi, point)
            if "addr:housenumber" in tags and "addr:street" in tags:
                self._address(oid, tags, point)
        kind = None
        if "landuse" in tags:
            kind = f"landuse={tags['landuse']}"
        elif tags.get("place") in ("neighbourhood", "quarter", "city_block"):
            kind = f"place={tags['place']}"
        elif tags.get("amenity") in NON_RESIDENTIAL_AMENITY_AREAS:
            kind = f"amenity={tags['amenity']}"
        if kind is not None:
            self.rows["landuse"].append(
                {
                    "osm_id": oid,
                    "kind": kind,
                    "name": tags.get("name"),
                    "geometry": geom,
                }
            )
        if tags.get("boundary") == "administrative":
            level = _number(tags.get("admin_level"))
            self.rows["boundaries"].append(
                {
                    "osm_id": oid,
                    "admin_level": int(level) if level == level else -1,
                    "name": tags.get("name"),
                    "ref": tags.get("ref:gb") or tags.get("ref"),
                    "geometry": geom,
                }
            )

    def _poi(
        self, oid: str, tags: dict[str, str], poi: tuple[str, bool], point: Any
    ) -> None:
        self.rows["pois"].append(
            {
                "osm_id": oid,
                "name": tags.get("name"),
                "category": poi[0],
                "is_shop": poi[1],
                "geometry": point,
            }
        )

    def _address(self, oid: str, tags: dict[str, str], point: Any) -> None:
        self.rows["addresses"].append(
            {
                "osm_id": oid,
                "road": tags["addr:street"],
                "number": tags["addr:housenumber"],
                "name": tags.get("name"),
                "building": tags.get("addr:housename"),
                "geometry": point,
            }
        )


_COLUMNS: dict[str, tuple[str, ...]] = {
    "highways": ("osm_id", "highway", "name"),
    "buildings": ("osm_id", "building", "levels", "flats", "name", "has_poi_tags"),
    "pois": ("osm_id", "name", "category", "is_shop"),
    "addresses": ("osm_id", "road", "number", "name", "building"),
    "landuse": ("osm_id", "kind", "name"),
    "boundaries": ("osm_id", "admin_level", "name", "ref"),
}


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> gpd.GeoDataFrame:
    crs = f"EPSG:{STORAGE_EPSG}"
    if not rows:
        return gpd.GeoDataFrame(
            {c: pd.Series(dtype="object") for c in columns},
            geometry=gpd.GeoSeries([], crs=crs),
            crs=crs,
        )
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)


def read_osm(path: str | Path, *, progress: ProgressCallback | None = None) -> OSMData:
    """Read the features spatialgrid uses from an OSM XML or PBF file.

    Parameters
    ----------
    path
        ``.osm`` (XML), ``.osm.pbf``/``.pbf``, optionally compressed as libosmium
        allows (``.osm.bz2``, ``.osm.gz``).
    progress
        Called as ``progress("read OSM", objects_done, None)`` every 5000 objects.

    Returns
    -------
    OSMData
        Raw layers in EPSG:4490.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataFormatError
        When libosmium cannot parse the file.
    EmptyInputError
        When the file parses but holds no node at all.
    """
    path = Path(path)
    if not path.exists():
        msg = f"OSM file {str(path)!r} does not exist; check the path."
        raise FileNotFoundError(msg)
    collector = _Collector()
    n_nodes = 0
    done = 0
    bounds = None
    try:
        processor = osmium.FileProcessor(str(path)).with_locations().with_areas()
        box = processor.header.box()
        if box.valid():
            bounds = shapely.box(
                box.bottom_left.lon,
                box.bottom_left.lat,
                box.top_right.lon,
                box.top_right.lat,
            )
        for obj in processor:
            done += 1
            if done % 5000 == 0:
                report(progress, "read OSM", done, None)
            kind = obj.type_str()
            tags = dict(obj.tags) if len(obj.tags) else {}
            if kind == "n":
                n_nodes += 1
                collector.node(obj, tags)
            elif kind == "w":
                collector.way(obj, tags)
            elif kind == "a":
                collector.area(obj, tags)
    except (RuntimeError, ValueError, osmium.InvalidLocationError) as err:
        msg = (
            f"cannot read OSM file {str(path)!r}: {err}. Check that it is a complete "
            ".osm (XML) or .osm.pbf extract, e.g. re-export it from Overpass or "
            "osmium extract."
        )
        raise DataFormatError(msg) from err
    report(progress, "read OSM", done, done)
    if n_nodes == 0:
        msg = f"OSM file {str(path)!r} holds no nodes; nothing to import."
        raise EmptyInputError(msg)
    frames = {k: _frame(v, _COLUMNS[k]) for k, v in collector.rows.items()}
    if collector.skipped:
        logger.warning("OSM objects skipped: %s", collector.skipped)
    return OSMData(**frames, bounds=bounds, skipped=dict(collector.skipped))
