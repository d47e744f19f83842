"""GeoDataFrames to GeoJSON responses, fast and in the storage CRS.

Routes return a :class:`GeoJSONResponse` built from :func:`feature_collection` or
:func:`feature_texts`. The JSON text is assembled from vectorised writers
(GEOS GeoJSON for geometries, pandas for properties) instead of validating
thousands of geojson-pydantic objects per request: a 10,000-polygon page takes
about 0.1 s instead of about 1 s. The models in :mod:`api.schemas` document the
shape in OpenAPI and the tests validate responses against them.

Coordinates are CGCS2000 longitude/latitude (EPSG:4490), rounded to
:data:`COORDINATE_DECIMALS` decimals (7 decimals ≈ 1 cm). Every vertex is rounded
the same way, so edges shared by neighbouring blocks stay identical.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.background import BackgroundTask
from starlette.responses import Response

import shapely

from spatialgrid.crs import STORAGE_EPSG

if TYPE_CHECKING:
    from collections.abc import Mapping

    import geopandas as gpd

    from api.schemas import Link

COORDINATE_DECIMALS = 7
GEOJSON_MEDIA_TYPE = "application/geo+json"
#: OGC API – Features header naming the CRS of the coordinates.
CONTENT_CRS = f"<http://www.opengis.net/def/crs/EPSG/0/{STORAGE_EPSG}>"


class GeoJSONResponse(Response):
    """GeoJSON with the ``Content-Crs`` header; content is JSON text or an object."""

    media_type = GEOJSON_MEDIA_TYPE

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, media_type, background)
        self.headers.setdefault("Content-Crs", CONTENT_CRS)

    def render(self, content: Any) -> bytes:
        """Pre-rendered text passes through; anything else is dumped as JSON."""
        if isinstance(content, bytes):
            return content
        if isinstance(content, str):
            return content.encode("utf-8")
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return text.encode("utf-8")


def _geometry_texts(frame: gpd.GeoDataFrame) -> list[str]:
    if frame.crs is not None and frame.crs.to_epsg() != STORAGE_EPSG:
        frame = frame.to_crs(STORAGE_EPSG)
    geoms = np.asarray(frame.geometry.values, dtype=object)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    rounded = shapely.transform(
        geoms, lambda xy: np.round(xy, COORDINATE_DECIMALS), include_z=False
    )
    texts = shapely.to_geojson(rounded)
    return ["null" if gone else str(t) for t, gone in zip(texts, missing, strict=True)]


def _property_texts(frame: gpd.GeoDataFrame) -> list[str]:
    table = frame.drop(columns=frame.geometry.name)
    if len(table) == 0:
        return []
    if table.shape[1] == 0:
        return ["{}"] * len(table)
    try:
        # NaN/NaT -> null, numpy scalars -> numbers, timestamps -> ISO 8601.
        text = table.to_json(
            orient="records",
            lines=True,
            date_format="iso",
            force_ascii=False,
            double_precision=15,
        )
        # JSON escapes "\n" inside strings, so "\n" only ends records.
        lines: list[str] = str(text).rstrip("\n").split("\n")
        if len(lines) == len(table):
            return lines
    except (TypeError, ValueError, OverflowError):
        pass
    # Unusual values (e.g. Decimal in an extra column): slower but total.
    return [
        json.dumps(row, ensure_ascii=False, default=str, allow_nan=False)
        for row in json.loads(table.to_json(orient="records", default_handler=str))
    ]


def feature_texts(frame: gpd.GeoDataFrame, *, id_col: str | None) -> list[str]:
    """One GeoJSON Feature (JSON text) per row; ``id`` from ``id_col`` when given."""
    geometries = _geometry_texts(frame)
    properties = _property_texts(frame)
    if id_col is not None and id_col in frame.columns:
        column = frame[id_col]
        ids = [
            "" if gone else f'"id":{json.dumps(v, default=str)},'
            for v, gone in zip(column.tolist(), column.isna().to_numpy(), strict=True)
        ]
    else:
        ids = [""] * len(frame)
    return [
        f'{{"type":"Feature",{fid}"geometry":{geom},"properties":{props}}}'
        for fid, geom, props in zip(ids, geometries, properties, strict=True)
    ]


def feature_collection(
    frame: gpd.GeoDataFrame,
    *,
    id_col: str | None,
    number_matched: int | None = None,
    links: list[Link] | None = None,
) -> str:
    """A GeoJSON FeatureCollection (JSON text) with OGC API – Features paging."""
    feats = feature_texts(frame, id_col=id_col)
    members = [f'"type":"FeatureCollection","features":[{",".join(feats)}]']
    if number_matched is not None:
        members.append(f'"numberMatched":{int(number_matched)}')
    members.append(f'"numberReturned":{len(feats)}')
    if links is not None:
        dumped = json.dumps(
            [link.model_dump(exclude_none=True) for link in links], ensure_ascii=False
        )
        members.append(f'"links":{dumped}')
    return "{" + ",".join(members) + "}"
