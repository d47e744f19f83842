"""Engine and session factories; schema upgrades through Alembic.

Nothing connects at import time (unlike module-level engines in many templates):
:func:`make_engine` resolves the URL, builds the engine and upgrades the schema
when called, and the API opens and disposes it in its lifespan.

URL resolution order: the explicit ``url`` argument, then the environment variable
``SPATIALGRID_DATABASE_URL``, then the embedded cluster
(:mod:`spatialgrid.db.embedded`), which is created and started on demand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Session

from spatialgrid.db.embedded import EmbeddedCluster
from spatialgrid.errors import DatabaseError

ENV_URL = "SPATIALGRID_DATABASE_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key serialising concurrent upgrades ("spatialg" in ASCII).
_UPGRADE_LOCK_KEY = 0x7370617469616C67


def _normalise(url: str) -> str:
    # "postgres://" (Heroku style) is no SQLAlchemy dialect name, and a bare
    # "postgresql://" means psycopg 3 in SQLAlchemy 2.1; the db extra ships
    # psycopg2, so bare URLs get that driver. Explicit drivers are kept.
    for bare in ("postgres://", "postgresql://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def resolve_database_url(url: str | None = None) -> str:
    """The database URL to use.

    Parameters
    ----------
    url
        Explicit URL; wins when given.

    Returns
    -------
    str
        ``url``, else ``$SPATIALGRID_DATABASE_URL``, else the URL of the embedded
        cluster (started first if it is not running).

    Raises
    ------
    DatabaseError
        The embedded cluster is needed but cannot be created or started.
    """
    if url:
        return _normalise(url)
    env = os.environ.get(ENV_URL)
    if env:
        return _normalise(env)
    return EmbeddedCluster().ensure_running()


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable url>"


def alembic_config() -> Config:
    """A programmatic Alembic config pointing at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    """The newest schema revision shipped with this version of spatialgrid."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (``None`` when never upgraded)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_schema(engine: Engine, *, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic ``upgrade``), serialised by a lock.

    Raises
    ------
    DatabaseError
        A migration failed (for instance no privilege to create ``postgis``).
    """
    try:
        with engine.begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY}
            )
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except DBAPIError as err:
        msg = (
            f"upgrading the schema of {safe_url(str(engine.url))} to {revision} "
            f"failed: {err.orig}"
        )
        raise DatabaseError(msg) from err


def make_engine(url: str | None = None, *, upgrade: bool = True) -> Engine:
    """Build an engine for ``url`` (see :func:`resolve_database_url`).

    Parameters
    ----------
    url
        Database URL; ``None`` resolves it from the environment or the embedded
        cluster.
    upgrade
        Run Alembic ``upgrade head`` before returning.

    Returns
    -------
    sqlalchemy.Engine
        With ``pool_pre_ping``; the caller disposes it.

    Raises
    ------
    DatabaseError
        The database cannot be reached or upgraded.
    """
    resolved = resolve_database_url(url)
    try:
        engine = create_engine(resolved, pool_pre_ping=True)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except ImportError as err:
        msg = (
            f"the database driver for {safe_url(resolved)} is not installed "
            f"({err.name}); install it or use a postgresql+psycopg2:// URL"
        )
        raise DatabaseError(msg) from err
    except (DBAPIError, ArgumentError) as err:
        detail = getattr(err, "orig", None) or err
        msg = (
            f"cannot connect to {safe_url(resolved)}: {str(detail).strip()}. Check "
            f"{ENV_URL}, or unset it to use the embedded PostGIS"
        )
        raise DatabaseError(msg) from err
    if upgrade:
        upgrade_schema(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception.

    Examples
    --------
    >>> with session_scope(engine) as session:  # doctest: +SKIP
    ...     repository.save_city(city, session=session)
    """
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def database_session(url: str | None = None) -> Iterator[Session]:
    """One short unit of work: an engine for ``url`` (default: the configured or
    embedded database), a :func:`session_scope` on it, the engine disposed after.

    For command-line commands and scripts that open the database once; a
    long-lived service keeps its engine (:func:`make_engine`) instead.
    """
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()
