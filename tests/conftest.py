"""Shared fixtures: box-lattice blocks with household counts in a projected CRS."""

from __future__ import annotations

from pathlib import Path

import pytest

from spatialgrid import testing

PROJECTED_CRS = testing.PROJECTED_CRS
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NANJING_OSM = SHARED_DATA / "osm" / "nanjing_xinjiekou.osm"


@pytest.fixture
def nanjing_osm() -> Path:
    """The real Nanjing extract; skipped only where ../shared/data is absent."""
    if not NANJING_OSM.exists():
        pytest.skip("../shared/data/osm/nanjing_xinjiekou.osm is absent")
    return NANJING_OSM


@pytest.fixture
def lattice_blocks():
    """A 4 x 3 lattice of 100 m blocks, 250 households each, one community."""
    return testing.box_lattice(4, 3, households=250)
