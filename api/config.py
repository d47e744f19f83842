"""Service settings, read once from the environment (prefix ``SPATIALGRID_``).

This is the only place the service reads configuration. The library never does:
its defaults are explicit parameters.

Examples
--------
``SPATIALGRID_DATABASE_URL=postgresql+psycopg2://u:p@db/spatialgrid`` points the
service at an existing PostGIS; unset, the embedded cluster is used (started if
needed). ``SPATIALGRID_CORS_ORIGINS=https://a.example,https://b.example`` allows
browser apps on those origins.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of the spatialgrid API service."""

    model_config = SettingsConfigDict(
        env_prefix="SPATIALGRID_", extra="ignore", frozen=True
    )

    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the PostGIS database; unset = the embedded cluster "
            "spatialgrid runs itself."
        ),
    )
    db_upgrade_on_startup: bool = Field(
        default=True,
        description="Run Alembic 'upgrade head' when the service starts.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Origins allowed to call the API from a browser, comma-separated; "
            "empty = no CORS headers."
        ),
    )
    auth_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How long a verified API key is remembered per process (saves a "
            "database round trip per request); a revoked key stops working within "
            "this time. 0 = check every request."
        ),
    )
    title: str = "spatialgrid"
    basemap: str = Field(
        default="none",
        description=(
            "What the map pages draw under our layers: 'none' (streets and blocks "
            "from the stored city, works offline), 'osm', 'tianditu' (needs "
            "SPATIALGRID_TIANDITU_TOKEN) or an XYZ tile URL template "
            "(https://.../{z}/{x}/{y}.png; Amap/Tencent hosts are taken as GCJ-02)."
        ),
    )
    tianditu_token: str | None = Field(
        default=None, description="Tianditu (天地图) key for basemap='tianditu'."
    )
    basemap_attribution: str | None = Field(
        default=None, description="Credit shown for a tile URL basemap."
    )
    categories_path: str | None = Field(
        default=None,
        description=(
            "CSV of incident categories and time limits (see data/categories.csv); "
            "unset = the bundled table."
        ),
    )
    incident_working_hours: bool = Field(
        default=True,
        description=(
            "Count time limits in working minutes (08:30-17:30 Monday-Friday); "
            "false = calendar minutes."
        ),
    )
    incident_timezone: str = Field(
        default="Asia/Shanghai",
        description="Local time zone of the command centre (months, working hours).",
    )
    duplicate_radius_m: float = Field(
        default=50.0,
        gt=0,
        le=5000,
        description="A new incident this close to an open one of its category...",
    )
    duplicate_window_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 365,
        description="...reported at most this many hours earlier is a duplicate.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # Accept "a,b" from the environment as well as a JSON list or a Python list.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment, read once per process."""
    return Settings()
