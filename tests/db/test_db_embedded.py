"""The embedded cluster: create, start, status, stop, reuse; clear errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg2
import pytest
import typer
from typer.testing import CliRunner

from spatialgrid.cli import db as db_cli
from spatialgrid.db import embedded
from spatialgrid.db.embedded import EmbeddedCluster, default_home, find_binaries
from spatialgrid.db.engine import head_revision, resolve_database_url
from spatialgrid.errors import DatabaseError

pytestmark = pytest.mark.db


@pytest.fixture
def pg_binaries():
    try:
        return find_binaries()
    except DatabaseError as err:
        if (
            os.environ.get("CI", "").lower() == "true"
            or os.environ.get("SPATIALGRID_REQUIRE_DB") == "1"
        ):
            raise
        pytest.skip(str(err))


@pytest.fixture
def home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh SPATIALGRID_HOME the server user can reach (0755 temp dir in /tmp)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="sg-embedded-"))
    path.chmod(0o755)
    monkeypatch.setenv("SPATIALGRID_HOME", str(path))
    monkeypatch.delenv("SPATIALGRID_DATABASE_URL", raising=False)
    yield path
    EmbeddedCluster(path).destroy()


@pytest.fixture
def cli():
    app = typer.Typer()
    db_cli.register(app)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["db", *args])
        if result.exception is not None:
            raise result.exception
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())  # undo rich's line wrapping

    return run


def _marker(url: str, *, create: bool) -> list[str]:
    dsn = url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        if create:
            cur.execute("CREATE TABLE marker (note text)")
            cur.execute("INSERT INTO marker VALUES ('kept')")
        cur.execute("SELECT note FROM marker")
        notes = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT postgis_lib_version()")
        assert cur.fetchone()[0].startswith("3")
    conn.close()
    return notes


def test_lifecycle_start_status_stop_reuse(pg_binaries, home, cli):
    assert default_home() == home
    assert "not created yet" in cli("status")
    out = cli("start")
    assert "embedded PostGIS running on 127.0.0.1:" in out
    status = EmbeddedCluster().status()
    assert status.running
    assert status.initialized
    assert status.port != 5432
    out = cli("status")
    assert "running" in out
    assert f"port: {status.port}" in out
    assert f"schema: {head_revision()}" in out
    assert str(home / "pgdata") in out
    url = cli("url").strip()
    assert url == resolve_database_url()  # no env var: the embedded cluster
    assert f":{status.port}/spatialgrid" in url
    assert _marker(url, create=True) == ["kept"]
    assert "stopped" in cli("stop")
    assert not EmbeddedCluster().status().running
    assert "stopped" in cli("status")
    assert "was not running" in cli("stop")
    # Reuse: a later run starts the same cluster; data and password are kept.
    again = resolve_database_url()
    assert again.split("@")[0] == url.split("@")[0]
    assert _marker(again, create=False) == ["kept"]
    state = (home / embedded.STATE_FILE).stat()
    assert stat.S_IMODE(state.st_mode) == 0o600


def test_external_url_wins(monkeypatch, cli):
    monkeypatch.setenv("SPATIALGRID_DATABASE_URL", "postgres://u:secret@db.example/x")
    assert resolve_database_url() == "postgresql+psycopg2://u:secret@db.example/x"
    assert resolve_database_url("postgresql://a@b/c") == "postgresql+psycopg2://a@b/c"
    assert (
        resolve_database_url("postgresql+psycopg://a@b/c")
        == "postgresql+psycopg://a@b/c"
    )
    assert "nothing to start" in cli("start")
    assert "secret" not in cli("start")


def test_unreachable_database_is_a_clear_error():
    from spatialgrid.db.engine import make_engine

    with pytest.raises(DatabaseError, match=r"cannot connect to .*127\.0\.0\.1:1/"):
        make_engine("postgresql://x:pw@127.0.0.1:1/nothing")
    pytest.importorskip("psycopg2")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        with pytest.raises(
            DatabaseError, match=r"driver .* is not installed \(psycopg\)"
        ):
            make_engine("postgresql+psycopg://x@127.0.0.1:1/nothing")


def test_missing_binaries_message(monkeypatch, tmp_path):
    monkeypatch.setenv("SPATIALGRID_PG_BINDIR", str(tmp_path))
    with pytest.raises(DatabaseError, match="no PostgreSQL server binaries"):
        find_binaries()


def test_missing_postgis_message(pg_binaries, monkeypatch, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("postgres", "initdb", "pg_ctl"):
        (bindir / tool).symlink_to(pg_binaries.bindir / tool)
    fake = bindir / "pg_config"
    fake.write_text(f"#!/bin/sh\necho {tmp_path / 'share'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SPATIALGRID_PG_BINDIR", str(bindir))
    major = pg_binaries.major
    with pytest.raises(
        DatabaseError, match=rf"apt-get install postgresql-{major}-postgis-3"
    ):
        find_binaries()


@pytest.mark.skipif(
    os.geteuid() != 0, reason="only root runs the server as another user"
)
def test_root_needs_enterable_parents(pg_binaries, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    cluster = EmbeddedCluster(locked / "home")
    with pytest.raises(DatabaseError, match=r"cannot enter .*chmod o\+x"):
        cluster.ensure_running()
    assert not (locked / "home" / "pgdata").exists()


def test_default_home_for_root(monkeypatch):
    monkeypatch.delenv("SPATIALGRID_HOME", raising=False)
    if os.geteuid() == 0:
        assert default_home() == Path("/var/lib/spatialgrid")
    else:
        assert default_home().name == "spatialgrid"
