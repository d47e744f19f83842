"""spatialgrid: GIS engine for community grid management (网格化服务管理).

Import a city, partition its street blocks into grids of 400–500 households, find
what no grid covers, locate incidents. Works in a notebook with no database or web
server; ``spatialgrid.db`` adds PostGIS storage and ``api`` a FastAPI service.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from spatialgrid.city import LAYER_COLUMNS, LAYERS, City
from spatialgrid.crs import STORAGE_EPSG, working_crs
from spatialgrid.errors import (
    CRSMismatchError,
    DataFormatError,
    InfeasiblePartitionError,
    InvalidGeometryError,
    MissingColumnError,
    MissingCRSError,
    SpatialgridError,
)

try:
    __version__ = version("spatialgrid")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "LAYERS",
    "LAYER_COLUMNS",
    "STORAGE_EPSG",
    "CRSMismatchError",
    "City",
    "DataFormatError",
    "InfeasiblePartitionError",
    "InvalidGeometryError",
    "MissingCRSError",
    "MissingColumnError",
    "SpatialgridError",
    "__version__",
    "working_crs",
]
