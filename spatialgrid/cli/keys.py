"""``spatialgrid keys``: create, list and revoke API keys of the HTTP API."""

from __future__ import annotations

import typer
from rich.table import Table

from spatialgrid.cli._console import console, err_console
from spatialgrid.roles import ROLES

keys_app = typer.Typer(
    help=f"API keys for the HTTP API. Roles: {', '.join(ROLES)}.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Attach the ``keys`` command group to ``app``."""
    app.add_typer(keys_app, name="keys")


@keys_app.command()
def create(
    role: str = typer.Option(..., "--role", help=f"One of: {', '.join(ROLES)}."),
    name: str = typer.Option(..., "--name", help="Who or what the key is for."),
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from spatialgrid.db import repository
    from spatialgrid.db.engine import database_session

    with database_session() as session:
        key = repository.create_api_key(session=session, role=role, name=name)
    typer.echo(key)
    err_console.print(
        f"created a {role} key for {name!r}; store it now, it cannot be shown again"
    )


@keys_app.command("list")
def list_keys() -> None:
    """List keys: id, name, role, created, revoked."""
    from spatialgrid.db import repository
    from spatialgrid.db.engine import database_session

    with database_session() as session:
        keys = repository.list_api_keys(session=session)
    table = Table("id", "name", "role", "created", "revoked")
    for key in keys:
        table.add_row(
            str(key.id),
            key.name,
            key.role,
            f"{key.created_at:%Y-%m-%d %H:%M}" if key.created_at else "",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )
    console.print(table)


@keys_app.command()
def revoke(
    key_id: int = typer.Argument(..., help="The key's id (see `keys list`)."),
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from spatialgrid.db import repository
    from spatialgrid.db.engine import database_session

    with database_session() as session:
        repository.revoke_api_key(key_id, session=session)
    console.print(f"revoked key {key_id}")
