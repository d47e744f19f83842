"""Build a :class:`~spatialgrid.city.City` from OpenStreetMap or a planner's own layers.

:func:`import_osm` turns an ``.osm``/``.osm.pbf`` extract into every City layer:
street blocks polygonized from centre lines (:mod:`spatialgrid.blocks`), households
from buildings (:mod:`spatialgrid.buildings`), compounds, door plates, POIs and
communities (:mod:`spatialgrid.communities`). :func:`import_layers` reads a planner's
GeoPackage/GeoJSON/Shapefile with a column mapping; planner household counts beat
any estimate (source ``"planner"``).

Both return a City whose ``report`` says what was read, estimated, defaulted and
dropped, and why — the CLI prints it, the API stores it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

from spatialgrid.blocks import (
    DEFAULT_HIGHWAY_CLASSES,
    assign_blocks,
    build_blocks,
    reading_order,
)
from spatialgrid.buildings import DEFAULT_RESIDENTIAL_TAGS, estimate_households
from spatialgrid.city import LAYER_COLUMNS, LAYERS, City, empty_layer
from spatialgrid.communities import build_communities, check_code
from spatialgrid.crs import STORAGE_EPSG, epsg_or_wkt, require_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import InputError, MissingColumnError
from spatialgrid.io import list_layers, read_layer
from spatialgrid.osm import read_osm
from spatialgrid.progress import ProgressCallback, report
from spatialgrid.validate import require_frame, require_valid

if TYPE_CHECKING:
    from pyproj import CRS

logger = logging.getLogger(__name__)

#: Area kinds that become compounds (小区).
COMPOUND_KINDS: tuple[str, ...] = (
    "landuse=residential",
    "place=neighbourhood",
)


def _objects(values: pd.Series) -> np.ndarray:
    """An object array with ``None`` (not NaN) for missing values."""
    return np.array(
        [v if isinstance(v, str) or pd.notna(v) else None for v in values], dtype=object
    )


def _block_households(
    blocks: gpd.GeoDataFrame, buildings: gpd.GeoDataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Households per block from its buildings, and the block's households source."""
    hh = np.zeros(len(blocks), dtype=int)
    source = np.full(len(blocks), "none", dtype=object)
    if len(buildings) == 0:
        return hh, source
    counted = buildings[buildings["block_id"].notna() & (buildings["households"] > 0)]
    sums = counted.groupby("block_id")["households"].sum()
    estimated = (
        counted[counted["households_source"] == "estimated"]
        .groupby("block_id")["households"]
        .sum()
    )
    ids = blocks["block_id"]
    hh = ids.map(sums).fillna(0).astype(int).to_numpy()
    any_est = ids.map(estimated).fillna(0).to_numpy() > 0
    source = np.where(hh > 0, np.where(any_est, "estimated", "buildings"), "none")
    return hh, source.astype(object)


def _compounds(
    landuse: gpd.GeoDataFrame,
    blocks: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    wcrs: Any,
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Compound polygons (residential landuse, neighbourhoods) and each building's."""
    crs = blocks.crs
    areas = landuse[landuse["kind"].isin(COMPOUND_KINDS)].reset_index(drop=True)
    building_compound = np.full(len(buildings), None, dtype=object)
    if len(areas) == 0:
        return empty_layer("compounds", crs), building_compound
    proj = areas.to_crs(wcrs)
    order = reading_order(shapely.point_on_surface(proj.geometry.values))
    areas = areas.iloc[order].reset_index(drop=True)
    proj = proj.iloc[order].reset_index(drop=True)
    ids = np.array([f"C{i + 1:04d}" for i in range(len(areas))])
    block_id, _ = assign_blocks(areas, blocks, max_distance_m=0, working_crs=wcrs)
    hh = np.zeros(len(areas), dtype=int)
    if len(buildings):
        pts = gpd.GeoDataFrame(
            geometry=buildings.to_crs(wcrs).geometry.representative_point().to_numpy(),
            crs=wcrs,
        )
        hit = pts.sjoin(
            gpd.GeoDataFrame(
                {"_pos": np.arange(len(proj)), "_area": proj.geometry.area},
                geometry=proj.geometry.values,
                crs=wcrs,
            ),
            predicate="within",
        )
        # Nested areas (a neighbourhood holding residential landuse): smallest wins.
        hit = hit.sort_values("_area", kind="stable")
        hit = hit[~hit.index.duplicated(keep="first")]
        building_compound[hit.index.to_numpy()] = ids[hit["_pos"].to_numpy()]
        b_hh = buildings["households"].to_numpy()
        for pos, idx in zip(hit["_pos"], hit.index, strict=True):
            hh[pos] += int(b_hh[idx])
    out = gpd.GeoDataFrame(
        {
            "compound_id": ids,
            "name": _objects(areas["name"]),
            "block_id": block_id,
            "households": hh,
            "kind": areas["kind"].to_numpy(dtype=object),
            "osm_id": areas["osm_id"].to_numpy(dtype=object),
        },
        geometry=areas.geometry.values,
        crs=crs,
    )
    return out, building_compound


def _addresses(
    raw: gpd.GeoDataFrame,
    blocks: gpd.GeoDataFrame,
    compounds: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame,
    wcrs: Any,
    dedupe_distance_m: float,
) -> tuple[gpd.GeoDataFrame, int]:
    """Door plates, one per (road, number) within ``dedupe_distance_m``."""
    crs = blocks.crs
    if len(raw) == 0:
        return empty_layer("addresses", crs), 0
    frame = raw.reset_index(drop=True)
    proj = frame.to_crs(wcrs).geometry.values
    road = frame["road"].astype(str).str.strip().to_numpy()
    number = frame["number"].astype(str).str.strip().to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    seen: dict[tuple[str, str], list[int]] = {}
    for i in range(len(frame)):
        key = (road[i], number[i].removesuffix("号"))
        near = [
            j
            for j in seen.get(key, [])
            if proj[i].distance(proj[j]) <= dedupe_distance_m
        ]
        if near:
            keep[i] = False
        else:
            seen.setdefault(key, []).append(i)
    frame = frame.loc[keep].reset_index(drop=True)
    block_id, _ = assign_blocks(frame, blocks, working_crs=wcrs)
    comp_name = np.full(len(frame), None, dtype=object)
    if len(compounds):
        hit = frame[[frame.geometry.name]].sjoin(
            compounds[["name", compounds.geometry.name]], predicate="within"
        )
        hit = hit[~hit.index.duplicated(keep="first")]
        comp_name[hit.index.to_numpy()] = hit["name"].to_numpy(dtype=object)
    bname = _objects(frame["building"])
    if len(buildings) and "name" in buildings.columns:
        named = buildings[buildings["name"].notna()]
        hit = frame[[frame.geometry.name]].sjoin(
            named[["name", named.geometry.name]], predicate="within"
        )
        hit = hit[~hit.index.duplicated(keep="first")]
        for idx, name in zip(hit.index, hit["name"], strict=True):
            if not isinstance(bname[idx], str):
                bname[idx] = name
    out = gpd.GeoDataFrame(
        {
            "address_id": [f"A{i + 1:05d}" for i in range(len(frame))],
            "address": [
                f"{r}{n}" for r, n in zip(frame["road"], frame["number"], strict=True)
            ],
            "road": frame["road"].to_numpy(dtype=object),
            "number": frame["number"].to_numpy(dtype=object),
            "compound": comp_name,
            "building": bname,
            "kind": "door",
            "block_id": block_id,
            "osm_id": frame["osm_id"].to_numpy(dtype=object),
        },
        geometry=frame.geometry.values,
        crs=crs,
    )
    return out, int((~keep).sum())


def import_osm(
    path: str | Path,
    *,
    highway_classes: Iterable[str] = DEFAULT_HIGHWAY_CLASSES,
    default_levels: float = 6.0,
    dwelling_size_m2: float = 90.0,
    residential_tags: Iterable[str] = DEFAULT_RESIDENTIAL_TAGS,
    yes_is_residential: bool = True,
    min_footprint_m2: float = 40.0,
    min_block_area_m2: float = 1500.0,
    min_block_width_m: float = 15.0,
    sliver_action: Literal["drop", "merge"] = "drop",
    boundary: shapely.Geometry | gpd.GeoDataFrame | None = None,
    snap_distance_m: float = 30.0,
    admin_code: str = "000000",
    subdistrict_code: str = "001",
    community_target: int = 3000,
    communities: gpd.GeoDataFrame | str | Path | None = None,
    name: str | None = None,
    working_crs: CRS | str | int | None = None,
    progress: ProgressCallback | None = None,
) -> City:
    """Import an OpenStreetMap extract as a City in EPSG:4490.

    Parameters
    ----------
    path
        ``.osm`` XML or ``.osm.pbf`` file.
    highway_classes
        Highway classes whose centre lines bound blocks. Default: residential and
        above (motorway, trunk, primary, secondary, tertiary, unclassified,
        residential and their ``_link``). Other highways (service, footway, path...)
        go to the streets layer with ``internal=True``.
    default_levels, dwelling_size_m2, residential_tags, yes_is_residential, min_footprint_m2
        Household estimate, see :func:`spatialgrid.buildings.estimate_households`.
    min_block_area_m2, min_block_width_m, sliver_action
        Sliver handling, see :func:`spatialgrid.blocks.build_blocks`.
    boundary
        Polygon (EPSG:4490 lon/lat, or a GeoDataFrame with a CRS) closing the edge
        blocks. Default: the file's ``<bounds>``, else the bounding box of its streets.
    snap_distance_m
        POIs, door plates and buildings outside every block (in road space) go to
        the nearest block within this distance; farther ones are reported.
    admin_code, subdistrict_code
        6-digit GB/T 2260 admin code and 3-digit subdistrict used in codes.
    community_target
        Households per generated community.
    communities
        A planner's community polygons (GeoDataFrame or file); else OSM
        boundaries (``admin_level`` 9/10); else generated.
    name
        City name; default the file name.
    working_crs
        Projected CRS for metric work; default CGCS2000 Gauss–Krüger zone.
    progress
        Progress callback (stages ``read OSM``, ``blocks``, ``import``).

    Returns
    -------
    City
        All layers in EPSG:4490; ``report`` holds counts, estimates, defaults and
        what was dropped and why.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataFormatError
        When the file is not readable OSM.
    EmptyInputError
        When no street of ``highway_classes`` exists.
    InputError
        For malformed codes or non-positive sizes.
    """
    admin_code = check_code(admin_code, 6, "admin_code")
    subdistrict_code = check_code(subdistrict_code, 3, "subdistrict_code")
    path = Path(path)
    crs = f"EPSG:{STORAGE_EPSG}"
    data = read_osm(path, progress=progress)
    steps = 6
    report(progress, "import", 0, steps)
    if isinstance(boundary, gpd.GeoDataFrame | gpd.GeoSeries):
        require_crs(boundary, "boundary")
        boundary = shapely.union_all(boundary.to_crs(crs).geometry.values)
    area = boundary if boundary is not None else data.bounds
    require_frame(data.highways, "highways in the OSM file")
    wcrs = _working_crs(data.highways, working_crs)
    built = build_blocks(
        data.highways,
        highway_classes=highway_classes,
        boundary=area,
        min_block_area_m2=min_block_area_m2,
        min_block_width_m=min_block_width_m,
        sliver_action=sliver_action,
        working_crs=wcrs,
        progress=progress,
    )
    blocks = built.blocks
    report(progress, "import", 1, steps)

    buildings, b_report = estimate_households(
        data.buildings,
        landuse=data.landuse,
        default_levels=default_levels,
        dwelling_size_m2=dwelling_size_m2,
        residential_tags=residential_tags,
        yes_is_residential=yes_is_residential,
        min_footprint_m2=min_footprint_m2,
        working_crs=wcrs,
    )
    buildings = buildings.reset_index(drop=True)
    b_block, b_counts = assign_blocks(
        buildings, blocks, max_distance_m=snap_distance_m, working_crs=wcrs
    )
    buildings["block_id"] = b_block
    buildings["building_id"] = buildings["osm_id"]
    lost = buildings["block_id"].isna()
    report(progress, "import", 2, steps)

    compounds, b_compound = _compounds(data.landuse, blocks, buildings, wcrs)
    buildings["compound_id"] = b_compound
    hh, hh_source = _block_households(blocks, buildings)
    blocks["households"] = hh
    blocks["households_source"] = hh_source
    report(progress, "import", 3, steps)

    addresses, n_dupes = _addresses(
        data.addresses, blocks, compounds, buildings, wcrs, dedupe_distance_m=50.0
    )
    pois = data.pois.reset_index(drop=True)
    p_block, p_counts = assign_blocks(
        pois, blocks, max_distance_m=snap_distance_m, working_crs=wcrs
    )
    pois = gpd.GeoDataFrame(
        {
            "poi_id": pois["osm_id"].to_numpy(dtype=object),
            "name": _objects(pois["name"]),
            "category": pois["category"].to_numpy(dtype=object),
            "is_shop": pois["is_shop"].astype(bool).to_numpy(),
            "block_id": p_block,
        },
        geometry=pois.geometry.values,
        crs=crs,
    )
    report(progress, "import", 4, steps)

    comm = build_communities(
        blocks,
        communities=communities,
        boundaries=data.boundaries,
        admin_code=admin_code,
        subdistrict_code=subdistrict_code,
        target_households=community_target,
        working_crs=wcrs,
    )
    blocks = comm.blocks
    report(progress, "import", 5, steps)

    streets = built.streets
    streets = streets[
        ["street_id", "name", "highway", "internal", "block_id", "osm_id", "geometry"]
    ].reset_index(drop=True)
    buildings_out = buildings[
        [
            "building_id",
            "block_id",
            "compound_id",
            "levels",
            "households",
            "households_source",
            "building",
            "name",
            "footprint_m2",
            "levels_source",
            "residential",
            "reason",
            "geometry",
        ]
    ]
    blocks = blocks[
        [
            "block_id",
            "community_code",
            "households",
            "households_source",
            "area_m2",
            "geometry",
        ]
    ]

    dropped: list[dict[str, Any]] = []
    for reason, part in built.dropped.groupby("reason"):
        dropped.append(
            {
                "layer": "blocks",
                "count": len(part),
                "reason": f"sliver face ({reason})"
                + (
                    ", merged into a neighbour"
                    if sliver_action == "merge"
                    else ", road space"
                ),
            }
        )
    if lost.any():
        dropped.append(
            {
                "layer": "buildings",
                "count": int(lost.sum()),
                "reason": f"outside every block (> {snap_distance_m:g} m); "
                f"{int(buildings.loc[lost, 'households'].sum())} households not in any block",
            }
        )
    if p_counts["outside"]:
        dropped.append(
            {
                "layer": "pois",
                "count": p_counts["outside"],
                "reason": f"outside every block (> {snap_distance_m:g} m); kept with block_id=None",
            }
        )
    if n_dupes:
        dropped.append(
            {
                "layer": "addresses",
                "count": n_dupes,
                "reason": "duplicate door plate (same road and number within 50 m)",
            }
        )
    for what, count in data.skipped.items():
        dropped.append({"layer": "osm", "count": count, "reason": what})

    city = City(
        subdistricts=comm.subdistricts,
        communities=comm.communities,
        streets=streets,
        blocks=blocks,
        buildings=buildings_out,
        compounds=compounds,
        addresses=addresses,
        pois=pois,
        name=name or path.name.split(".")[0],
        admin_code=admin_code,
        report={},
    )
    summary = city.summary()
    city.report.update(
        {
            "source": {"format": "osm", "path": str(path)},
            "crs": crs,
            "working_crs": epsg_or_wkt(wcrs),
            "counts": {k: v for k, v in summary.items() if k != "households"},
            "households": {
                "total": summary["households"],
                "by_block_source": {
                    str(k): int(v)
                    for k, v in blocks.groupby("households_source")["households"]
                    .sum()
                    .items()
                },
            },
            "estimated": {
                "buildings": b_report,
                "blocks_with_estimated_households": int(
                    (blocks["households_source"] == "estimated").sum()
                ),
            },
            "defaults": {
                "highway_classes": sorted(set(highway_classes)),
                "min_block_area_m2": min_block_area_m2,
                "min_block_width_m": min_block_width_m,
                "sliver_action": sliver_action,
                "snap_distance_m": snap_distance_m,
                "admin_code": admin_code,
                "subdistrict_code": subdistrict_code,
                "community_target": community_target,
                "boundary": (
                    "given"
                    if boundary is not None
                    else (
                        "file <bounds>"
                        if data.bounds is not None
                        else "bounding box of the streets"
                    )
                ),
                **b_report["defaults"],
            },
            "dropped": dropped,
            "assigned": {
                "buildings": b_counts,
                "pois": p_counts,
            },
            "communities": comm.report,
            "streets": {
                "bounding": int((~streets["internal"]).sum()),
                "internal": int(streets["internal"].sum()),
            },
        }
    )
    city.validate()
    report(progress, "import", steps, steps)
    logger.info("imported %s: %s", path, summary)
    return city


# --------------------------------------------------------------------------------
# Planner layers


#: Columns a planner may leave out, with the value filled in.
_FILL: dict[str, dict[str, Any]] = {
    "subdistricts": {"name": None},
    "communities": {"name": None, "generated": False},
    "streets": {"name": None, "highway": "unknown", "internal": False},
    "buildings": {"compound_id": None, "levels": np.nan},
    "compounds": {"name": None},
    "addresses": {
        "address": None,
        "road": None,
        "number": None,
        "compound": None,
        "building": None,
        "kind": "door",
    },
    "pois": {"name": None, "category": None, "is_shop": False},
}


def _apply_mapping(
    frame: gpd.GeoDataFrame, layer: str, columns: Mapping[str, str], where: str
) -> gpd.GeoDataFrame:
    """Rename the planner's columns to ours; unknown planner columns are errors."""
    have = [c for c in frame.columns if c != frame.geometry.name]
    rename: dict[str, str] = {}
    for ours, theirs in columns.items():
        if ours == "layer":
            continue
        if theirs not in frame.columns:
            msg = (
                f"mapping[{layer!r}][{ours!r}] names column {theirs!r}, which "
                f"{where} does not have; its columns are {have}. Fix the mapping."
            )
            raise MissingColumnError(msg)
        rename[theirs] = ours
    if rename:
        # A mapped column replaces any same-named column of the planner's.
        clash = [
            ours
            for ours in rename.values()
            if ours in frame.columns and ours not in rename
        ]
        frame = frame.drop(columns=clash).rename(columns=rename)
    return frame


def _read_planner_layers(
    path: str | Path | Mapping[str, str | Path],
    mapping: Mapping[str, Mapping[str, str]],
) -> dict[str, gpd.GeoDataFrame]:
    unknown = [k for k in mapping if k not in LAYERS]
    if unknown:
        msg = f"mapping has unknown layer(s) {unknown}; City layers are {list(LAYERS)}"
        raise InputError(msg)
    frames: dict[str, gpd.GeoDataFrame] = {}
    if isinstance(path, Mapping):
        bad = [k for k in path if k not in LAYERS]
        if bad:
            msg = f"path has unknown layer(s) {bad}; City layers are {list(LAYERS)}"
            raise InputError(msg)
        for layer, file in path.items():
            sub = mapping.get(layer, {}).get("layer")
            frames[layer] = read_layer(file, sub)
            frames[layer].attrs["where"] = f"{Path(file).name}" + (
                f":{sub}" if sub else ""
            )
        return frames
    names = list_layers(path)
    for layer in LAYERS:
        theirs = mapping.get(layer, {}).get("layer", layer)
        if theirs in names:
            frames[layer] = read_layer(path, theirs)
            frames[layer].attrs["where"] = f"{Path(path).name}:{theirs}"
        elif "layer" in mapping.get(layer, {}):
            msg = f"mapping[{layer!r}]['layer']={theirs!r} is not in {str(path)!r}; its layers are {names}"
            raise InputError(msg)
    if "blocks" not in frames and len(names) == 1:
        frames["blocks"] = read_layer(path, names[0])
        frames["blocks"].attrs["where"] = f"{Path(path).name}:{names[0]}"
    return frames


def import_layers(
    path: str | Path | Mapping[str, str | Path],
    *,
    mapping: Mapping[str, Mapping[str, str]] | None = None,
    admin_code: str = "000000",
    subdistrict_code: str = "001",
    community_target: int = 3000,
    communities: gpd.GeoDataFrame | str | Path | None = None,
    repair: bool = False,
    name: str | None = None,
    working_crs: CRS | str | int | None = None,
    progress: ProgressCallback | None = None,
) -> City:
    """Import a planner's own layers (GeoPackage, GeoJSON, Shapefile) as a City.

    Parameters
    ----------
    path
        One file with several layers (named like the City layers, or as given by
        ``mapping[layer]["layer"]``; a single-layer file is read as ``blocks``), or a
        dict ``{city_layer: file}``.
    mapping
        Per City layer, ``{our_column: their_column}``, e.g.
        ``{"blocks": {"households": "HH", "block_id": "FID"}}``; the special key
        ``"layer"`` names the layer inside a multi-layer file.
    admin_code, subdistrict_code, community_target, communities
        As in :func:`import_osm`; used when blocks carry no ``community_code``.
    repair
        Repair invalid geometries with ``shapely.make_valid`` (else raise).
    name
        City name; default the file name.
    working_crs
        Projected CRS for metric work.
    progress
        Progress callback (stage ``import``).

    Returns
    -------
    City
        In the CRS of the blocks layer; households from the planner (source
        ``"planner"``), else summed from the planner's buildings (``"buildings"``).

    Raises
    ------
    MissingColumnError
        A mapping names a column the layer lacks (the message lists what exists), or
        neither blocks nor buildings carry households.
    MissingCRSError
        A layer has no CRS.
    DataFormatError
        A file or layer cannot be read.
    InputError
        Unknown layer names, duplicate block ids, negative or missing counts.
    """
    mapping = dict(mapping or {})
    admin_code = check_code(admin_code, 6, "admin_code")
    check_code(subdistrict_code, 3, "subdistrict_code")
    frames = _read_planner_layers(path, mapping)
    report(progress, "import", 0, 4)
    if "blocks" not in frames:
        msg = (
            f"no blocks layer in {path!r}: name a layer 'blocks' or map it with "
            "mapping={'blocks': {'layer': 'YOUR_LAYER'}}"
        )
        raise InputError(msg)
    for layer, frame in list(frames.items()):
        where = frame.attrs.get("where", layer)
        frame = _apply_mapping(frame, layer, mapping.get(layer, {}), where)
        require_crs(frame, where)
        frames[layer] = frame.reset_index(drop=True)
    blocks = frames["blocks"]
    crs = blocks.crs
    reprojected = []
    for layer, frame in frames.items():
        if not frame.crs.equals(crs):
            frames[layer] = frame.to_crs(crs)
            reprojected.append(layer)
    require_frame(blocks, "blocks", geometry_types=("Polygon", "MultiPolygon"))
    blocks = require_valid(blocks, "blocks", repair=repair)
    wcrs = _working_crs(blocks, working_crs)
    rep: dict[str, Any] = {"source": {"format": "layers", "path": str(path)}}
    estimated: dict[str, Any] = {}
    if reprojected:
        rep["reprojected"] = reprojected

    if "block_id" not in blocks.columns:
        order = reading_order(
            shapely.point_on_surface(blocks.to_crs(wcrs).geometry.values)
        )
        ids = np.empty(len(blocks), dtype=object)
        ids[order] = [f"B{i + 1:04d}" for i in range(len(blocks))]
        blocks["block_id"] = ids
        estimated["block_id"] = "generated B0001... (west→east, north→south)"
    blocks["block_id"] = blocks["block_id"].astype(str)
    dupes = blocks["block_id"][blocks["block_id"].duplicated()].unique().tolist()
    if dupes:
        msg = f"blocks.block_id has duplicates {dupes[:5]}; block ids must be unique"
        raise InputError(msg)
    report(progress, "import", 1, 4)

    buildings = frames.get("buildings")
    if buildings is not None:
        buildings = require_valid(buildings, "buildings", repair=repair)
        if "block_id" not in buildings.columns:
            bid, _ = assign_blocks(buildings, blocks, working_crs=wcrs)
            buildings["block_id"] = bid
        if "building_id" not in buildings.columns:
            buildings["building_id"] = [
                f"BLD{i + 1:05d}" for i in range(len(buildings))
            ]
        if "households" in buildings.columns:
            bh = pd.to_numeric(buildings["households"], errors="coerce")
            buildings["households"] = bh.fillna(0).astype(int)
            buildings["households_source"] = np.where(bh.notna(), "planner", "none")
        else:
            buildings["households"] = 0
            buildings["households_source"] = "none"

    if "households" in blocks.columns:
        hh = pd.to_numeric(blocks["households"], errors="coerce")
        bad = blocks.loc[hh.isna() | (hh < 0), "block_id"].tolist()
        if bad:
            msg = (
                f"blocks households must be whole numbers ≥ 0; missing or negative for "
                f"block_id {bad[:5]} ({len(bad)} blocks). Fill them in the file."
            )
            raise InputError(msg)
        blocks["households"] = hh.astype(int)
        blocks["households_source"] = "planner"
    elif buildings is not None and "households" in frames["buildings"].columns:
        hh, _ = _block_households(blocks, buildings)
        blocks["households"] = hh
        blocks["households_source"] = np.where(hh > 0, "buildings", "none")
        estimated["blocks.households"] = "sum of the planner's building households"
    else:
        have = [c for c in blocks.columns if c != blocks.geometry.name]
        msg = (
            f"blocks have no 'households' column (columns: {have}) and no buildings "
            "layer gives households. Map it, e.g. mapping={'blocks': {'households': "
            "'HH'}}, or add a buildings layer with households."
        )
        raise MissingColumnError(msg)
    report(progress, "import", 2, 4)

    comm_rep: dict[str, Any]
    if "community_code" in blocks.columns and blocks["community_code"].notna().all():
        blocks["community_code"] = blocks["community_code"].astype(str)
        for code in blocks["community_code"].unique():
            check_code(code, 12, "blocks.community_code")
        given = frames.get("communities")
        # Blocks keep the planner's own codes; the layer follows them.
        c_build = build_communities(
            blocks,
            communities=_dissolved_codes(blocks, names=given),
            admin_code=admin_code,
            working_crs=wcrs,
        )
        comm_rep = {"source": "planner (blocks.community_code)"}
    else:
        c_build = build_communities(
            blocks,
            communities=communities
            if communities is not None
            else frames.get("communities"),
            admin_code=admin_code,
            subdistrict_code=subdistrict_code,
            target_households=community_target,
            working_crs=wcrs,
        )
        comm_rep = c_build.report
    blocks = c_build.blocks
    report(progress, "import", 3, 4)

    layers: dict[str, gpd.GeoDataFrame] = {
        "blocks": blocks,
        "communities": c_build.communities,
        "subdistricts": frames.get("subdistricts", c_build.subdistricts),
    }
    if buildings is not None:
        layers["buildings"] = buildings
    for layer in ("streets", "compounds", "addresses", "pois"):
        if layer in frames:
            layers[layer] = frames[layer]
    for layer in LAYERS:
        if layer not in layers:
            layers[layer] = empty_layer(layer, crs)
            continue
        frame = layers[layer]
        for col, value in _FILL.get(layer, {}).items():
            if col not in frame.columns:
                frame[col] = value
        if "block_id" in LAYER_COLUMNS[layer] and "block_id" not in frame.columns:
            bid, _ = assign_blocks(frame, blocks, working_crs=wcrs)
            frame["block_id"] = bid
        id_col = LAYER_COLUMNS[layer][0]
        if id_col not in frame.columns:
            frame[id_col] = [
                f"{layer[:1].upper()}{i + 1:05d}" for i in range(len(frame))
            ]
        if layer == "compounds" and "households" not in frame.columns:
            frame["households"] = 0
        require_frame(frame, layer, columns=LAYER_COLUMNS[layer], allow_empty=True)

    city = City(
        **layers,
        name=name or (Path(path).stem if not isinstance(path, Mapping) else "city"),
        admin_code=admin_code,
    )
    summary = city.summary()
    rep.update(
        {
            "crs": epsg_or_wkt(crs),
            "counts": {k: v for k, v in summary.items() if k != "households"},
            "households": {
                "total": summary["households"],
                "by_block_source": {
                    str(k): int(v)
                    for k, v in blocks.groupby("households_source")["households"]
                    .sum()
                    .items()
                },
            },
            "estimated": estimated,
            "defaults": {
                "admin_code": admin_code,
                "community_target": community_target,
            },
            "dropped": [],
            "communities": comm_rep,
        }
    )
    city.report.update(rep)
    city.validate()
    report(progress, "import", 4, 4)
    return city


def _dissolved_codes(
    blocks: gpd.GeoDataFrame, names: gpd.GeoDataFrame | None = None
) -> gpd.GeoDataFrame:
    """Community polygons from the planner's block codes (names from their layer)."""
    geom = blocks.geometry.name
    parts = blocks.groupby("community_code")[geom].agg(
        lambda s: shapely.union_all(s.values)
    )
    out = gpd.GeoDataFrame(
        {"community_code": parts.index.to_numpy(dtype=object)},
        geometry=parts.to_numpy(),
        crs=blocks.crs,
    )
    if names is not None and {"community_code", "name"} <= set(names.columns):
        lookup = dict(
            zip(names["community_code"].astype(str), names["name"], strict=False)
        )
        out["name"] = out["community_code"].map(lookup)
    return out
