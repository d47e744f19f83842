"""``spatialgrid db``: the database, embedded PostGIS or an external URL.

With ``SPATIALGRID_DATABASE_URL`` unset, spatialgrid runs its own PostgreSQL +
PostGIS cluster (see :mod:`spatialgrid.db.embedded`); these commands start, stop
and inspect it and upgrade the schema.
"""

from __future__ import annotations

import os

import typer

from spatialgrid.cli._console import console

db_app = typer.Typer(
    help=(
        "The database: spatialgrid's embedded PostGIS (default) or the one named by "
        "SPATIALGRID_DATABASE_URL."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Attach the ``db`` command group to ``app``."""
    app.add_typer(db_app, name="db")


def _external_url() -> str | None:
    from spatialgrid.db.engine import ENV_URL

    return os.environ.get(ENV_URL) or None


def _revisions(url: str) -> tuple[str | None, str | None]:
    from spatialgrid.db.engine import current_revision, head_revision, make_engine

    engine = make_engine(url, upgrade=False)
    try:
        return current_revision(engine), head_revision()
    finally:
        engine.dispose()


@db_app.command()
def status() -> None:
    """Show which database is used, whether it runs, and its schema revision."""
    from spatialgrid.db.embedded import EmbeddedCluster
    from spatialgrid.db.engine import safe_url

    external = _external_url()
    if external:
        console.print(f"database: external ({safe_url(external)})")
        current, head = _revisions(external)
        console.print(f"schema:   {current or 'empty'} (newest {head})")
        return
    cluster = EmbeddedCluster()
    info = cluster.status()
    console.print("database: embedded PostgreSQL + PostGIS")
    console.print(f"data dir: {info.data_dir}")
    if not info.initialized:
        console.print("state:    not created yet (`spatialgrid db start` creates it)")
        return
    state = "running" if info.running else "stopped"
    pid = f", pid {info.pid}" if info.pid else ""
    console.print(f"state:    {state} (PostgreSQL {info.version}{pid})")
    console.print(f"port:     {info.port} on 127.0.0.1")
    if info.running:
        current, head = _revisions(cluster.url())
        console.print(f"schema:   {current or 'empty'} (newest {head})")


@db_app.command()
def start() -> None:
    """Create (first time) and start the embedded cluster; upgrade the schema."""
    from spatialgrid.db.embedded import EmbeddedCluster
    from spatialgrid.db.engine import make_engine, safe_url

    external = _external_url()
    if external:
        console.print(
            f"SPATIALGRID_DATABASE_URL is set ({safe_url(external)}); nothing to "
            "start. Unset it to use the embedded database."
        )
        return
    cluster = EmbeddedCluster()
    url = cluster.ensure_running()
    make_engine(url, upgrade=True).dispose()
    info = cluster.status()
    console.print(f"embedded PostGIS running on 127.0.0.1:{info.port}")
    console.print(f"data dir: {info.data_dir}")


@db_app.command()
def stop() -> None:
    """Stop the embedded cluster (its data stays)."""
    from spatialgrid.db.embedded import EmbeddedCluster

    if _external_url():
        console.print(
            "SPATIALGRID_DATABASE_URL is set; the external server is not ours"
        )
        return
    stopped = EmbeddedCluster().stop()
    console.print("stopped" if stopped else "the embedded database was not running")


@db_app.command()
def upgrade() -> None:
    """Upgrade the schema to the newest revision (starts the embedded cluster)."""
    from spatialgrid.db.engine import current_revision, make_engine

    engine = make_engine(upgrade=True)
    try:
        console.print(f"schema at revision {current_revision(engine)}")
    finally:
        engine.dispose()


@db_app.command()
def url() -> None:
    """Print the database URL (with password; starts the embedded cluster)."""
    from spatialgrid.db.engine import resolve_database_url

    typer.echo(resolve_database_url())
