"""Alembic environment for spatialgrid (online migrations only).

Uses ``geoalchemy2.alembic_helpers`` so that autogenerate renders geometry columns
and their GiST indexes correctly. The connection comes from
``config.attributes["connection"]`` when :func:`spatialgrid.db.engine.upgrade_schema`
runs us, else from ``sqlalchemy.url`` in the config, else from
:func:`spatialgrid.db.engine.resolve_database_url`. Logging is left to the caller.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from geoalchemy2 import alembic_helpers
from sqlalchemy import create_engine

from spatialgrid.db.models import Base

config = context.config
target_metadata = Base.metadata


def _include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # Tables of extensions (postgis spatial_ref_sys, tiger, topology) are not ours.
    if type_ == "table" and reflected and compare_to is None:
        return False
    return bool(alembic_helpers.include_object(obj, name, type_, reflected, compare_to))


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on the given connection or a fresh engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from spatialgrid.db.engine import resolve_database_url

        url = resolve_database_url()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    msg = "spatialgrid migrations run online only (they need PostGIS)"
    raise RuntimeError(msg)
run_migrations_online()
