"""``spatialgrid serve``: run the API with uvicorn and print the URLs to open."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from spatialgrid.cli._console import console


class LogLevel(StrEnum):
    """uvicorn log levels."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _display_host(host: str) -> str:
    # A wildcard bind is reachable on loopback; IPv6 literals need brackets in URLs.
    if host in {"0.0.0.0", ""}:
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def serve(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Address to listen on; 0.0.0.0 to accept other machines."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=1, max=65535, help="TCP port.")
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="Worker processes (each holds its own connection pool).",
        ),
    ] = 1,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="SPATIALGRID_DATABASE_URL",
            show_envvar=True,
            help="PostGIS URL; unset = the embedded PostGIS (started if needed).",
        ),
    ] = None,
    log_level: Annotated[
        LogLevel,
        typer.Option("--log-level", case_sensitive=False, help="Server log level."),
    ] = LogLevel.info,
) -> None:
    """Start the HTTP API (FastAPI + uvicorn) and print where to find it.

    The database is resolved and its schema upgraded once, before the workers
    start; every endpoint but /health and /docs then needs an API key (create one
    with `spatialgrid keys create --role planner`).

    Examples: `spatialgrid serve` (this machine only, port 8000);
    `spatialgrid serve --host 0.0.0.0 --port 8080 --workers 4`.
    """
    import uvicorn

    from spatialgrid.db.engine import make_engine, resolve_database_url, safe_url

    # Resolve once in this process: starting the embedded cluster or upgrading the
    # schema from several workers at the same time would race.
    url = resolve_database_url(database_url)
    make_engine(url, upgrade=True).dispose()
    os.environ["SPATIALGRID_DATABASE_URL"] = url
    os.environ["SPATIALGRID_DB_UPGRADE_ON_STARTUP"] = "false"

    base = f"http://{_display_host(host)}:{port}"
    console.print(
        f"[bold]spatialgrid API[/] on {base}  (database {safe_url(url)})",
        soft_wrap=True,
    )
    console.print(f"  API docs:  {base}/docs", soft_wrap=True)
    console.print(f"  health:    {base}/health", soft_wrap=True)
    console.print(
        f"  layers:    {base}/v1/communities  (needs an API key)", soft_wrap=True
    )
    console.print("Stop with Ctrl+C.", soft_wrap=True)
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level.value,
        proxy_headers=True,
    )


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve)
