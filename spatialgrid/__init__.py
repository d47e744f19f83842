"""spatialgrid: GIS engine for community grid management (网格化服务管理).

Import a city, partition its street blocks into grids of 400–500 households, find
what no grid covers, redraw with minimal change, locate points and addresses, and
follow incidents. Works in a notebook with no database or web server;
``spatialgrid.db`` adds PostGIS storage and ``api`` a FastAPI service.

The names below are imported on first use (PEP 562), so ``import spatialgrid``
stays cheap and pulls in neither the database nor the web stack.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from spatialgrid.city import LAYER_COLUMNS, LAYERS, City
from spatialgrid.crs import STORAGE_EPSG, working_crs
from spatialgrid.errors import (
    CoordinateRangeError,
    CRSMismatchError,
    DataFormatError,
    InfeasiblePartitionError,
    InvalidGeometryError,
    MissingColumnError,
    MissingCRSError,
    NotFoundError,
    SpatialgridError,
    TransitionError,
)

try:
    __version__ = version("spatialgrid")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

#: Public name -> module that defines it (imported lazily).
_LAZY: dict[str, str] = {
    # import and files
    "import_osm": "importers",
    "import_layers": "importers",
    "read_city": "io",
    "write_city": "io",
    "generate_city": "sample",
    # partition and redraw
    "partition_blocks": "partition",
    "PartitionResult": "partition",
    "check_feasibility": "feasibility",
    "rebalance_plan": "rebalance",
    "apply_edits": "edits",
    "validate_plan": "edits",
    "diff_plans": "plandiff",
    "match_drawn_plan": "upload",
    "read_drawn_plan": "upload",
    # coverage QA
    "find_coverage_issues": "coverage",
    "CoverageReport": "coverage",
    "merge_slivers": "repair",
    "propose_territory": "repair",
    "propose_street_front_shops": "repair",
    # locate and geocode
    "GridIndex": "locate",
    "locate_points": "locate",
    "to_storage": "coords",
    "from_storage": "coords",
    "Gazetteer": "geocode",
    "geocode_addresses": "geocode",
    "parse_address": "address",
    # incidents and the command center
    "load_categories": "incidents",
    "summarize_incidents": "incidents",
    "find_duplicates": "incidents",
    "compute_kpis": "kpi",
    "find_hotspots": "hotspots",
    "render_grid_map": "render",
    "render_incident_heatmap": "render",
    "render_hotspot_map": "render",
    "write_map_html": "render",
}

if TYPE_CHECKING:
    from spatialgrid.address import parse_address
    from spatialgrid.coords import from_storage, to_storage
    from spatialgrid.coverage import CoverageReport, find_coverage_issues
    from spatialgrid.edits import apply_edits, validate_plan
    from spatialgrid.feasibility import check_feasibility
    from spatialgrid.geocode import Gazetteer, geocode_addresses
    from spatialgrid.hotspots import find_hotspots
    from spatialgrid.importers import import_layers, import_osm
    from spatialgrid.incidents import (
        find_duplicates,
        load_categories,
        summarize_incidents,
    )
    from spatialgrid.io import read_city, write_city
    from spatialgrid.kpi import compute_kpis
    from spatialgrid.locate import GridIndex, locate_points
    from spatialgrid.partition import PartitionResult, partition_blocks
    from spatialgrid.plandiff import diff_plans
    from spatialgrid.rebalance import rebalance_plan
    from spatialgrid.render import (
        render_grid_map,
        render_hotspot_map,
        render_incident_heatmap,
        write_map_html,
    )
    from spatialgrid.repair import (
        merge_slivers,
        propose_street_front_shops,
        propose_territory,
    )
    from spatialgrid.sample import generate_city
    from spatialgrid.upload import match_drawn_plan, read_drawn_plan


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'spatialgrid' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"spatialgrid.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "LAYERS",
    "LAYER_COLUMNS",
    "STORAGE_EPSG",
    "CRSMismatchError",
    "City",
    "CoordinateRangeError",
    "CoverageReport",
    "DataFormatError",
    "Gazetteer",
    "GridIndex",
    "InfeasiblePartitionError",
    "InvalidGeometryError",
    "MissingCRSError",
    "MissingColumnError",
    "NotFoundError",
    "PartitionResult",
    "SpatialgridError",
    "TransitionError",
    "__version__",
    "apply_edits",
    "check_feasibility",
    "compute_kpis",
    "diff_plans",
    "find_coverage_issues",
    "find_duplicates",
    "find_hotspots",
    "from_storage",
    "generate_city",
    "geocode_addresses",
    "import_layers",
    "import_osm",
    "load_categories",
    "locate_points",
    "match_drawn_plan",
    "merge_slivers",
    "parse_address",
    "partition_blocks",
    "propose_street_front_shops",
    "propose_territory",
    "read_city",
    "read_drawn_plan",
    "rebalance_plan",
    "render_grid_map",
    "render_hotspot_map",
    "render_incident_heatmap",
    "summarize_incidents",
    "to_storage",
    "validate_plan",
    "working_crs",
    "write_city",
    "write_map_html",
]
