"""The ``spatialgrid`` command line.

Each command group lives in its own module and is attached here. Library errors
(:class:`spatialgrid.errors.SpatialgridError`) end the command with a one-line
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging

import typer

from spatialgrid import __version__
from spatialgrid.cli._console import err_console
from spatialgrid.errors import SpatialgridError

app = typer.Typer(
    name="spatialgrid",
    help=(
        "Community grid management (网格化服务管理) from the command line.\n\n"
        "Typical session: `spatialgrid demo` to see everything on a generated city; "
        "`spatialgrid import osm city.osm` to load a real one; `spatialgrid partition` "
        "to cut its blocks into grids of 400–500 households; `spatialgrid serve` to "
        "start the API. With no SPATIALGRID_DATABASE_URL set, spatialgrid runs its own "
        "PostGIS in ~/.local/share/spatialgrid (see `spatialgrid db --help`)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spatialgrid {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    # Command groups register themselves on ``app``; imported here so that
    # ``spatialgrid --help`` lists them. Heavy imports stay inside the commands.
    from spatialgrid.cli import (
        adjust,
        coverage,
        db,
        demo,
        importing,
        incidents,
        keys,
        locate,
        partition,
        serve,
    )

    for module in (
        demo,
        db,
        importing,
        partition,
        adjust,
        coverage,
        locate,
        incidents,
        serve,
        keys,
    ):
        module.register(app)


_register()


def main() -> None:
    """Entry point of the ``spatialgrid`` script."""
    try:
        app()
    except SpatialgridError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise SystemExit(2) from err
