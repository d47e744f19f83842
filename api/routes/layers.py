"""City layers as GeoJSON: ``GET /v1/{layer}`` pages and single features.

Every layer of :data:`spatialgrid.city.LAYERS` is served at ``/v1/<layer>`` with a
``bbox`` filter (longitude/latitude in EPSG:4490) and ``limit``/``offset`` paging,
OGC API – Features style. Communities also have ``/v1/communities/{code}``.
Any valid API key may read.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import AfterValidator

from api.deps import LayerReader, SessionDep
from api.geojson import (
    GEOJSON_MEDIA_TYPE,
    GeoJSONResponse,
    feature_collection,
    feature_texts,
)
from api.schemas import ErrorPublic, Link, ValidationErrorPublic, layer_models
from spatialgrid.city import LAYER_COLUMNS
from spatialgrid.db import repository
from spatialgrid.errors import NotFoundError

router = APIRouter(prefix="/v1", tags=["layers"])

BBox = tuple[float, float, float, float]
LIMIT_DEFAULT = 1000
LIMIT_MAX = 10_000
#: Largest accepted offset (PostgreSQL takes a bigint; keep far below it).
OFFSET_MAX = 1_000_000_000

#: Layers served, in the order they appear in the docs.
SERVED_LAYERS: tuple[str, ...] = (
    "subdistricts",
    "communities",
    "blocks",
    "buildings",
    "compounds",
    "streets",
    "addresses",
    "pois",
)

_LAYER_TITLES = {
    "subdistricts": "subdistricts (街道)",
    "communities": "communities (社区)",
    "blocks": "street blocks",
    "buildings": "buildings",
    "compounds": "gated compounds (小区)",
    "streets": "street centre lines",
    "addresses": "door plates (门牌)",
    "pois": "shops and other POIs",
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "Missing, unknown or revoked API key."},
    403: {"model": ErrorPublic, "description": "The key's role may not read layers."},
    422: {"model": ValidationErrorPublic, "description": "Invalid parameters."},
    503: {"model": ErrorPublic, "description": "The database is unreachable."},
}


def parse_bbox(value: str | None) -> BBox | None:
    """Parse ``minx,miny,maxx,maxy`` (lon/lat, EPSG:4490); ValueError with a fix."""
    if value is None or not value.strip():
        return None
    parts = value.split(",")
    if len(parts) != 4:
        msg = (
            f"bbox needs 4 comma-separated numbers minlon,minlat,maxlon,maxlat; "
            f"got {len(parts)} value(s) in {value!r}"
        )
        raise ValueError(msg)
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        msg = (
            f"bbox values must be numbers (minlon,minlat,maxlon,maxlat); got {value!r}"
        )
        raise ValueError(msg) from None
    if not all(math.isfinite(n) for n in nums):
        msg = f"bbox values must be finite numbers; got {value!r}"
        raise ValueError(msg)
    minx, miny, maxx, maxy = nums
    for name, lat in (("minlat", miny), ("maxlat", maxy)):
        if not -90.0 <= lat <= 90.0:
            msg = (
                f"bbox {name}={lat} is outside -90..90; the order is "
                "minlon,minlat,maxlon,maxlat (did you swap longitude and latitude?)"
            )
            raise ValueError(msg)
    for name, lon in (("minlon", minx), ("maxlon", maxx)):
        if not -180.0 <= lon <= 180.0:
            msg = f"bbox {name}={lon} is outside -180..180"
            raise ValueError(msg)
    if minx >= maxx or miny >= maxy:
        msg = (
            f"bbox minimum must be below maximum (minlon < maxlon and minlat < "
            f"maxlat); got {value!r}"
        )
        raise ValueError(msg)
    return (minx, miny, maxx, maxy)


BBoxQuery = Annotated[
    str | None,
    Query(
        description=(
            "Only features intersecting this box: minlon,minlat,maxlon,maxlat in "
            "CGCS2000 degrees (EPSG:4490), e.g. `118.77,32.03,118.79,32.05`."
        ),
        examples=["118.77,32.03,118.79,32.05"],
        max_length=200,
    ),
    AfterValidator(parse_bbox),
]
LimitQuery = Annotated[
    int, Query(ge=1, le=LIMIT_MAX, description="Features per page (1–10000).")
]
OffsetQuery = Annotated[
    int, Query(ge=0, le=OFFSET_MAX, description="Features to skip (paging).")
]


def page_links(
    request: Request, *, offset: int, limit: int, returned: int, matched: int
) -> list[Link]:
    """OGC API self/next/prev links of one page (shared by every paged route)."""

    def href(new_offset: int) -> str:
        return str(request.url.include_query_params(limit=limit, offset=new_offset))

    links = [Link(href=href(offset), rel="self", title="this page")]
    if offset + returned < matched:
        links.append(Link(href=href(offset + limit), rel="next", title="next page"))
    if offset > 0:
        links.append(
            Link(href=href(max(offset - limit, 0)), rel="prev", title="previous page")
        )
    return links


def _add_collection_route(layer: str) -> None:
    _, collection_model = layer_models(layer)
    id_col = LAYER_COLUMNS[layer][0]
    title = _LAYER_TITLES[layer]

    def read_layer(
        request: Request,
        session: SessionDep,
        key: LayerReader,
        bbox: BBoxQuery = None,
        limit: LimitQuery = LIMIT_DEFAULT,
        offset: OffsetQuery = 0,
    ) -> GeoJSONResponse:
        # bbox arrives parsed: AfterValidator turned the text into a tuple.
        box: BBox | None = bbox  # type: ignore[assignment]
        frame = repository.load_layer(
            layer, session=session, bbox=box, limit=limit, offset=offset
        )
        matched = repository.count_layer(layer, session=session, bbox=box)
        links = page_links(
            request, offset=offset, limit=limit, returned=len(frame), matched=matched
        )
        body = feature_collection(
            frame, id_col=id_col, number_matched=matched, links=links
        )
        return GeoJSONResponse(body)

    read_layer.__name__ = f"read_{layer}"
    read_layer.__doc__ = (
        f"A page of {title} as a GeoJSON FeatureCollection (EPSG:4490 lon/lat), "
        "optionally within `bbox`. Follow the `next` link for more."
    )
    router.add_api_route(
        f"/{layer}",
        read_layer,
        methods=["GET"],
        response_model=collection_model,
        response_class=GeoJSONResponse,
        summary=f"List {title}",
        operation_id=f"list_{layer}",
        responses={
            200: {"content": {GEOJSON_MEDIA_TYPE: {}}},
            **_ERRORS,
        },
    )


for _layer in SERVED_LAYERS:
    _add_collection_route(_layer)

_community_feature, _ = layer_models("communities")


@router.get(
    "/communities/{code}",
    response_model=_community_feature,
    response_class=GeoJSONResponse,
    summary="One community (社区) by code",
    operation_id="get_community",
    responses={
        200: {"content": {GEOJSON_MEDIA_TYPE: {}}},
        404: {"model": ErrorPublic, "description": "No community has that code."},
        **_ERRORS,
    },
)
def read_community(
    session: SessionDep,
    key: LayerReader,
    code: Annotated[
        str,
        Path(
            min_length=1,
            max_length=64,
            description="Community code (12 digits, e.g. `421002001001`).",
        ),
    ],
) -> GeoJSONResponse:
    """One community as a GeoJSON Feature (EPSG:4490 lon/lat); 404 when unknown."""
    match = repository.load_layer(
        "communities", session=session, equals={"community_code": code}, limit=1
    )
    if match.empty:
        stored = repository.count_layer("communities", session=session)
        msg = (
            f"no community with code {code!r}; list them with GET /v1/communities "
            f"({stored} stored)"
        )
        raise NotFoundError(msg)
    return GeoJSONResponse(feature_texts(match.iloc[:1], id_col="community_code")[0])
