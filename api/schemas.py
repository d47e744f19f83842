"""Response models of the API (OpenAPI documentation and test validation).

GeoJSON uses geojson-pydantic. Layer responses follow OGC API – Features:
a FeatureCollection with ``numberMatched``, ``numberReturned`` and ``links``
(``self``, ``next``, ``prev``). Coordinates are CGCS2000 longitude/latitude
(EPSG:4490, announced in the ``Content-Crs`` header).

Property models list the columns of :data:`spatialgrid.city.LAYER_COLUMNS`; extra
columns a layer carries are passed through (``extra="allow"``).
"""

from __future__ import annotations

from typing import Any, Generic, Literal

from geojson_pydantic import Feature, FeatureCollection
from geojson_pydantic.features import Feat
from geojson_pydantic.geometries import Geometry
from pydantic import BaseModel, ConfigDict, Field

Identifier = str | int


class ErrorPublic(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="What went wrong and how to fix it.")
    error: str = Field(description="Class of the error, e.g. NotFoundError.")


class ValidationErrorItem(BaseModel):
    """One failing request field."""

    loc: list[str]
    msg: str
    type: str


class ValidationErrorPublic(ErrorPublic):
    """The body of a 422 for a malformed request."""

    errors: list[ValidationErrorItem]


class DatabaseStatus(BaseModel):
    """Whether the database answers and which schema revision it has."""

    reachable: bool
    revision: str | None = Field(description="Alembic revision of the schema.")
    head: str | None = Field(description="Newest revision this version ships.")
    detail: str | None = None


class HealthPublic(BaseModel):
    """Service health (no key needed)."""

    status: Literal["ok", "degraded"]
    version: str
    database: DatabaseStatus


class Link(BaseModel):
    """A link of a paged collection (OGC API – Features)."""

    href: str
    rel: str
    type: str = "application/geo+json"
    title: str | None = None


class _Properties(BaseModel):
    model_config = ConfigDict(extra="allow")


class SubdistrictProperties(_Properties):
    """A subdistrict (街道): 9-digit code."""

    subdistrict_code: str
    name: str | None


class CommunityProperties(_Properties):
    """A community (社区): 12-digit code, households, whether generated."""

    community_code: str
    name: str | None
    subdistrict_code: str | None
    households: int | None
    generated: bool | None


class StreetProperties(_Properties):
    """A street centre line."""

    street_id: Identifier
    name: str | None
    highway: str | None
    internal: bool | None


class BlockProperties(_Properties):
    """A street block: households and where that number came from."""

    block_id: Identifier
    community_code: str | None
    households: int | None
    households_source: str | None


class BuildingProperties(_Properties):
    """A building: levels, households and where that number came from."""

    building_id: Identifier
    block_id: Identifier | None
    compound_id: Identifier | None
    levels: float | None
    households: int | None
    households_source: str | None


class CompoundProperties(_Properties):
    """A gated compound (小区)."""

    compound_id: Identifier
    name: str | None
    block_id: Identifier | None
    households: int | None


class AddressProperties(_Properties):
    """A door plate (门牌) or building plate (楼栋牌)."""

    address_id: Identifier
    address: str | None
    road: str | None
    number: str | None
    compound: str | None
    building: str | None
    kind: str | None
    block_id: Identifier | None


class PoiProperties(_Properties):
    """A shop or other point of interest."""

    poi_id: Identifier
    name: str | None
    category: str | None
    is_shop: bool | None
    block_id: Identifier | None


#: Property model of each layer served by ``api/routes/layers.py``.
LAYER_PROPERTIES: dict[str, type[_Properties]] = {
    "subdistricts": SubdistrictProperties,
    "communities": CommunityProperties,
    "streets": StreetProperties,
    "blocks": BlockProperties,
    "buildings": BuildingProperties,
    "compounds": CompoundProperties,
    "addresses": AddressProperties,
    "pois": PoiProperties,
}


class PagedFeatureCollection(FeatureCollection[Feat], Generic[Feat]):
    """A page of features with OGC API – Features paging members."""

    numberMatched: int = Field(description="Features matching the query.")
    numberReturned: int = Field(description="Features on this page.")
    links: list[Link] = Field(default_factory=list)


def layer_models(layer: str) -> tuple[type[Feature[Any, Any]], type[Any]]:
    """Feature and paged FeatureCollection models of ``layer`` (for OpenAPI)."""
    props = LAYER_PROPERTIES[layer]
    name = props.__name__.removesuffix("Properties")
    feature = type(
        f"{name}Feature",
        (Feature[Geometry, props],),  # type: ignore[valid-type]
        {"__module__": __name__, "__doc__": f"One feature of {layer}."},
    )
    collection = type(
        f"{name}Collection",
        (PagedFeatureCollection[feature],),  # type: ignore[valid-type]
        {"__module__": __name__, "__doc__": f"A page of {layer} as GeoJSON."},
    )
    return feature, collection
