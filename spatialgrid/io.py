"""File I/O: a whole :class:`~spatialgrid.city.City` as one GeoPackage, single layers.

``write_city`` writes one GeoPackage layer per City layer (named as in
:data:`spatialgrid.city.LAYERS`, CRS kept as is) plus an attribute table
``spatialgrid_meta`` holding the city's name, admin code and import report (JSON).
``read_city`` reads it back; layers missing from the file come back empty.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import geopandas as gpd
import pyogrio

from spatialgrid.city import LAYERS, City, empty_layer
from spatialgrid.crs import STORAGE_EPSG, require_crs
from spatialgrid.errors import DataFormatError, InputError

logger = logging.getLogger(__name__)

META_LAYER = "spatialgrid_meta"


def _jsonable(value: Any) -> Any:
    """Plain Python types for json (numpy scalars and arrays, tuples, sets)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    return value


def _is_nested(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple))


def _nested_as_json(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A copy with dict/list cells as JSON text (GeoPackage has no nested types)."""
    out = frame.copy()
    for col in out.columns:
        if col == out.geometry.name or out[col].dtype != object:
            continue
        if out[col].map(_is_nested).any():
            out[col] = out[col].map(
                lambda v: (
                    json.dumps(_jsonable(v), ensure_ascii=False) if _is_nested(v) else v
                )
            )
    return out


def list_layers(path: str | Path) -> list[str]:
    """Names of the layers in a vector file (GeoPackage, GeoJSON, Shapefile...)."""
    try:
        return [str(name) for name in pyogrio.list_layers(str(path))[:, 0]]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        msg = f"cannot open {str(path)!r} as a vector file: {err}"
        raise DataFormatError(msg) from err


def read_layer(path: str | Path, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read one layer of a vector file; it must carry a CRS.

    Parameters
    ----------
    path
        GeoPackage, GeoJSON, Shapefile or anything GDAL reads.
    layer
        Layer name; default the file's only (or first) layer.

    Returns
    -------
    geopandas.GeoDataFrame

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    DataFormatError
        When the file or layer cannot be read.
    MissingCRSError
        When the layer has no CRS (e.g. a Shapefile without .prj).
    """
    path = Path(path)
    if not path.exists():
        msg = f"{str(path)!r} does not exist; check the path."
        raise FileNotFoundError(msg)
    if layer is not None:
        names = list_layers(path)
        if layer not in names:
            msg = f"{str(path)!r} has no layer {layer!r}; its layers are {names}."
            raise DataFormatError(msg)
    try:
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as err:
        msg = f"cannot read {str(path)!r} (layer {layer!r}): {err}"
        raise DataFormatError(msg) from err
    where = f"{path.name}:{layer}" if layer else path.name
    if isinstance(frame, gpd.GeoDataFrame) and frame.geometry.name in frame.columns:
        require_crs(frame, where)
    return frame


def write_city(city: City, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write every layer of ``city`` to a GeoPackage, in the city's CRS.

    Parameters
    ----------
    city
        The city; its layers must share one CRS (checked).
    path
        Target ``.gpkg``.
    overwrite
        Replace an existing file (default); else raise :class:`InputError`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    city.validate()
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        msg = f"write_city writes a GeoPackage; path={str(path)!r} should end in .gpkg"
        raise InputError(msg)
    if path.exists():
        if not overwrite:
            msg = f"{str(path)!r} exists; pass overwrite=True to replace it"
            raise InputError(msg)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, frame in city.layers().items():
        out = _nested_as_json(frame)
        out.to_file(path, layer=name, driver="GPKG", engine="pyogrio")
    meta = pd.DataFrame(
        {
            "key": ["name", "admin_code", "report"],
            "value": [
                city.name,
                city.admin_code,
                json.dumps(_jsonable(city.report), ensure_ascii=False),
            ],
        }
    )
    pyogrio.write_dataframe(meta, str(path), layer=META_LAYER, driver="GPKG")
    logger.info("wrote %s", path)
    return path


def read_city(path: str | Path) -> City:
    """Read a City written by :func:`write_city` (or any GeoPackage with its layers).

    Layers absent from the file come back empty (with the required columns);
    present layers must have the required columns of :data:`LAYER_COLUMNS`.

    Raises
    ------
    FileNotFoundError, DataFormatError, MissingCRSError, MissingColumnError
    """
    path = Path(path)
    if not path.exists():
        msg = f"{str(path)!r} does not exist; check the path."
        raise FileNotFoundError(msg)
    names = list_layers(path)
    layers: dict[str, gpd.GeoDataFrame] = {}
    crs = None
    for name in LAYERS:
        if name in names:
            frame = read_layer(path, name)
            layers[name] = frame
            crs = crs or frame.crs
    if not layers:
        msg = f"{str(path)!r} holds none of the City layers {list(LAYERS)}"
        raise DataFormatError(msg)
    crs = crs or f"EPSG:{STORAGE_EPSG}"
    for name in LAYERS:
        if name not in layers:
            layers[name] = empty_layer(name, crs)
    meta: dict[str, Any] = {}
    if META_LAYER in names:
        table = pyogrio.read_dataframe(str(path), layer=META_LAYER)
        meta = dict(zip(table["key"], table["value"], strict=True))
    report = json.loads(meta["report"]) if meta.get("report") else {}
    city = City(
        **layers,
        name=str(meta.get("name", path.stem)),
        admin_code=str(meta.get("admin_code", "000000")),
        report=report,
    )
    city.validate()
    return city
