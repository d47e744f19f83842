"""Bad input to `spatialgrid import` ends with a clear message and exit status 2,
and leaves the stored city exactly as it was (issue 2 acceptance)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import geopandas as gpd

from spatialgrid.testing import box_lattice

TINY = Path(__file__).parent / "data" / "tiny_town.osm"

pytestmark = pytest.mark.db


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spatialgrid", *args, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _counts(url: str) -> dict[str, int]:
    from spatialgrid.db.engine import make_engine, session_scope
    from spatialgrid.db.repository import count_layer

    engine = make_engine(url, upgrade=False)
    try:
        with session_scope(engine) as session:
            return {
                layer: count_layer(layer, session=session)
                for layer in ("communities", "blocks", "buildings", "pois", "addresses")
            }
    finally:
        engine.dispose()


@pytest.fixture
def stored(scratch_db_url):
    done = _cli("import", "osm", str(TINY), url=scratch_db_url)
    assert done.returncode == 0, done.stderr + done.stdout
    before = _counts(scratch_db_url)
    assert before["blocks"] > 0
    return scratch_db_url, before


def _blocks_file(tmp_path: Path, *, crs: bool = True, households: bool = True) -> Path:
    blocks = box_lattice(3, 2, households=450)
    if not households:
        blocks = blocks.drop(columns=["households"])
    if not crs:
        blocks = gpd.GeoDataFrame(
            blocks.drop(columns="geometry"), geometry=list(blocks.geometry)
        )
    path = tmp_path / "blocks.gpkg"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        blocks.to_file(path, layer="blocks", driver="GPKG")
    assert (gpd.read_file(path).crs is None) is (not crs)
    return path


def test_corrupt_osm_leaves_db_unchanged(stored, tmp_path):
    url, before = stored
    bad = tmp_path / "broken.osm"
    bad.write_text(TINY.read_text(encoding="utf-8")[:5000], encoding="utf-8")
    done = _cli("import", "osm", str(bad), url=url)
    assert done.returncode == 2
    assert "error" in done.stderr.lower()
    assert "Traceback" not in done.stderr
    assert _counts(url) == before


def test_layer_without_crs_leaves_db_unchanged(stored, tmp_path):
    url, before = stored
    path = _blocks_file(tmp_path, crs=False)
    done = _cli("import", "layers", str(path), url=url)
    assert done.returncode == 2
    assert "CRS" in done.stderr
    assert "Traceback" not in done.stderr
    assert _counts(url) == before


def test_unknown_column_in_mapping_leaves_db_unchanged(stored, tmp_path):
    url, before = stored
    path = _blocks_file(tmp_path)
    done = _cli(
        "import",
        "layers",
        str(path),
        "--mapping",
        '{"blocks": {"households": "HH_TOTAL"}}',
        url=url,
    )
    assert done.returncode == 2
    assert "HH_TOTAL" in done.stderr
    assert "Traceback" not in done.stderr
    assert _counts(url) == before


def test_missing_households_leaves_db_unchanged(stored, tmp_path):
    url, before = stored
    path = _blocks_file(tmp_path, households=False)
    done = _cli("import", "layers", str(path), url=url)
    assert done.returncode == 2
    assert "households" in done.stderr
    assert "Traceback" not in done.stderr
    assert _counts(url) == before
