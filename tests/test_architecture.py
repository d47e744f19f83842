"""The library stays usable with no database and no web stack (STYLE §1, §6)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_library_pulls_no_db_or_web_stack():
    code = (
        "import sys, spatialgrid, spatialgrid.city, spatialgrid.crs, "
        "spatialgrid.validate, spatialgrid.adjacency\n"
        "import importlib\n"
        "for name in ('partition', 'sample', 'importers', 'coverage', 'locate', "
        "'geocode', 'incidents', 'kpi', 'hotspots', 'render', 'coords'):\n"
        "    try:\n"
        "        importlib.import_module('spatialgrid.' + name)\n"
        "    except ModuleNotFoundError as err:\n"
        "        if err.name != 'spatialgrid.' + name:\n"
        "            raise\n"
        "bad = sorted(m for m in ('fastapi', 'sqlalchemy', 'geoalchemy2', 'psycopg2', "
        "'starlette', 'uvicorn') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"library imported {out.stdout.strip()}"


def test_cli_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "spatialgrid.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "spatialgrid" in out.stdout


def test_public_api_names_resolve():
    import spatialgrid

    for name in spatialgrid.__all__:
        assert getattr(spatialgrid, name) is not None, name
    assert callable(spatialgrid.partition_blocks)
    assert "partition_blocks" in dir(spatialgrid)


def test_every_lazy_name_is_exported():
    import spatialgrid

    assert set(spatialgrid._LAZY) <= set(spatialgrid.__all__)
