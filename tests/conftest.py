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


@pytest.fixture(scope="session")
def nanjing_plan():
    """(city, partition) of the real Nanjing extract, made once per session."""
    if not NANJING_OSM.exists():
        pytest.skip("../shared/data/osm/nanjing_xinjiekou.osm is absent")
    from spatialgrid.importers import import_osm
    from spatialgrid.partition import partition_blocks

    city = import_osm(NANJING_OSM, admin_code="320102")
    internal = city.streets[city.streets["internal"].astype(bool)]
    plan = partition_blocks(
        city.blocks, buildings=city.buildings, internal_roads=internal, seed=0
    )
    return city, plan


@pytest.fixture
def lattice_blocks():
    """A 4 x 3 lattice of 100 m blocks, 250 households each, one community."""
    return testing.box_lattice(4, 3, households=250)


# --------------------------------------------------------------- database (db helper)
# postgis_url: SPATIALGRID_TEST_DB_URL, else a throw-away embedded cluster started
# once per pytest session in a temp dir (about 2 s). Skipped without PostgreSQL/PostGIS
# binaries, unless CI=true or SPATIALGRID_REQUIRE_DB=1 (then the run fails).


def _db_required() -> bool:
    import os

    return (
        os.environ.get("CI", "").lower() == "true"
        or os.environ.get("SPATIALGRID_REQUIRE_DB") == "1"
    )


@pytest.fixture(scope="session")
def postgis_url():
    """URL of a PostGIS database for tests (external or throw-away embedded)."""
    import os
    import tempfile

    url = os.environ.get("SPATIALGRID_TEST_DB_URL")
    if url:
        yield url
        return
    try:
        from spatialgrid.db.embedded import EmbeddedCluster, find_binaries

        find_binaries()
    except Exception as err:  # ImportError (no db extra) or DatabaseError
        if _db_required():
            pytest.fail(f"PostGIS is required (CI/SPATIALGRID_REQUIRE_DB): {err}")
        pytest.skip(f"no PostGIS for DB tests: {err}")
    home = tempfile.mkdtemp(prefix="spatialgrid-test-")
    os.chmod(home, 0o755)  # the server runs as 'postgres' when we are root
    cluster = EmbeddedCluster(home, durable=False)
    try:
        yield cluster.ensure_running()
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def db_engine(postgis_url):
    """An engine on ``postgis_url`` with the schema upgraded to head."""
    from spatialgrid.db.engine import make_engine

    engine = make_engine(postgis_url, upgrade=True)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(db_engine):
    """A session inside a transaction that is rolled back after the test.

    ``session.commit()`` in the test only releases a savepoint, so nothing a test
    writes is visible to the next one.
    """
    from sqlalchemy.orm import Session

    conn = db_engine.connect()
    trans = conn.begin()
    session = Session(
        bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        if trans.is_active:
            trans.rollback()
        conn.close()


@pytest.fixture
def scratch_db_url(postgis_url):
    """A fresh, empty database on the test server, for code that commits.

    CLI commands and the demo commit their own transactions; they get a database
    of their own, dropped afterwards, so nothing leaks into other tests.
    """
    import uuid

    from sqlalchemy import create_engine, make_url, text

    url = make_url(postgis_url)
    name = f"sg_scratch_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def module_db_url(postgis_url):
    """Like ``scratch_db_url``, but one database per test module.

    For API tests whose background jobs commit from their own threads and
    connections (the rolled-back ``db_session`` cannot serve them) and whose
    module shares one started app.
    """
    import uuid

    from sqlalchemy import create_engine, make_url, text

    url = make_url(postgis_url)
    name = f"sg_module_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (never a downloaded browser).

    Skipped where Chromium or Playwright is missing, except under CI or
    SPATIALGRID_REQUIRE_DB=1, where that is a failure.
    """
    from offline_browser import CHROMIUM_ARGS

    chromium = Path("/usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        if _db_required():
            pytest.fail(f"Playwright is required for the browser tests: {err}")
        pytest.skip(f"no Playwright: {err}")
    if not chromium.exists():
        msg = "/usr/bin/chromium is missing (apt-get install chromium)"
        if _db_required():
            pytest.fail(msg)
        pytest.skip(msg)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory):
    """Where browser tests save screenshots (SPATIALGRID_SCREENSHOT_DIR to keep them)."""
    import os

    wanted = os.environ.get("SPATIALGRID_SCREENSHOT_DIR")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        return Path(wanted)
    return tmp_path_factory.mktemp("screens")
