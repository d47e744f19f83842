"""``spatialgrid import``: load a city from OpenStreetMap or a planner's own layers.

``spatialgrid import osm FILE`` and ``spatialgrid import layers FILE`` build a City
(:mod:`spatialgrid.importers`) and either write it to a GeoPackage (``--out``, no
database) or store it in PostGIS (replacing the stored city). Both print a summary:
counts per layer, households, what was estimated and what was dropped and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from spatialgrid.cli._console import console, fail, progress_bar

if TYPE_CHECKING:
    from spatialgrid.city import City

import_app = typer.Typer(
    name="import",
    help=(
        "Import a city: `import osm FILE` (OpenStreetMap .osm/.osm.pbf) or "
        "`import layers FILE` (a planner's GeoPackage/GeoJSON/Shapefile). With "
        "`--out city.gpkg` the result goes to a file; otherwise into the database."
    ),
    no_args_is_help=True,
)

_OUT = typer.Option(
    "--out",
    "-o",
    help="Write the city to this GeoPackage instead of the database.",
)
_DB_URL = typer.Option(
    "--database-url", help="Database URL (default: env or the embedded PostGIS)."
)
_ADMIN = typer.Option("--admin-code", help="6-digit GB/T 2260 admin code.")
_SUB = typer.Option("--subdistrict-code", help="3-digit subdistrict code.")
_TARGET = typer.Option("--community-target", help="Households per generated community.")
_COMM = typer.Option(
    "--communities",
    help="A planner's community polygons (GeoPackage/GeoJSON/Shapefile).",
)


def _summary_tables(city: City) -> list[Table]:
    """Rich tables: layer counts, households, estimates, drops."""
    rep = city.report
    counts = Table(title=f"{city.name}: imported layers ({rep.get('crs', city.crs)})")
    counts.add_column("layer")
    counts.add_column("features", justify="right")
    for name, frame in city.layers().items():
        counts.add_row(name, f"{len(frame):,}")
    hh = rep.get("households", {})
    counts.add_row("[bold]households[/]", f"[bold]{hh.get('total', 0):,}[/]")

    est = Table(title="Households by source")
    est.add_column("source")
    est.add_column("households", justify="right")
    for source, value in hh.get("by_block_source", {}).items():
        est.add_row(str(source), f"{value:,}")
    b_rep = rep.get("estimated", {}).get("buildings")
    if b_rep:
        for source, info in b_rep["by_source"].items():
            est.add_row(
                f"buildings: {source}",
                f"{info['buildings']:,} buildings, {info['households']:,} hh",
            )
        est.add_row("levels defaulted", f"{b_rep['levels_defaulted']:,} buildings")
        d = b_rep["defaults"]
        est.add_row(
            "defaults",
            f"{d['default_levels']:g} levels, {d['dwelling_size_m2']:g} m²/dwelling",
        )
    comm = rep.get("communities", {})
    if comm:
        est.add_row("communities", f"{len(city.communities)} ({comm.get('source')})")

    drops = Table(title="Dropped or unassigned")
    drops.add_column("layer")
    drops.add_column("count", justify="right")
    drops.add_column("reason")
    for row in rep.get("dropped", []):
        drops.add_row(str(row["layer"]), f"{row['count']:,}", str(row["reason"]))
    if not rep.get("dropped"):
        drops.add_row("-", "0", "nothing dropped")
    return [counts, est, drops]


def _finish(city: City, out: Path | None, database_url: str | None) -> None:
    if out is not None:
        from spatialgrid.io import write_city

        write_city(city, out)
        where = str(out)
    else:
        from spatialgrid.db.engine import database_session
        from spatialgrid.db.repository import save_city

        with progress_bar() as progress, database_session(database_url) as session:
            save_city(city, session=session, replace=True, progress=progress)
        where = "the database"
    for table in _summary_tables(city):
        console.print(table)
    console.print(f"[green]saved[/] {city.name} to {where}")


def _read_mapping(mapping: str | None) -> dict[str, Any]:
    if mapping is None:
        return {}
    text = Path(mapping).read_text() if Path(mapping).exists() else mapping
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f'--mapping {mapping!r} is not JSON, e.g. {{"blocks": {{"households": "HH"}}}}'
        raise fail(msg) from err
    if not isinstance(value, dict):
        msg = "--mapping must be a JSON object {layer: {column: their_column}}"
        raise fail(msg)
    return value


@import_app.command("osm")
def import_osm_command(
    file: Annotated[Path, typer.Argument(help=".osm or .osm.pbf extract.")],
    out: Annotated[Path | None, _OUT] = None,
    highway: Annotated[
        list[str] | None,
        typer.Option(
            "--highway",
            help="Highway class bounding blocks (repeat). Default: residential and above.",
        ),
    ] = None,
    default_levels: Annotated[
        float, typer.Option("--default-levels", help="Levels when untagged.")
    ] = 6.0,
    dwelling_size: Annotated[
        float,
        typer.Option("--dwelling-size", help="Gross floor area per household (m²)."),
    ] = 90.0,
    min_block_area: Annotated[
        float, typer.Option("--min-block-area", help="Sliver area threshold (m²).")
    ] = 1500.0,
    merge_slivers: Annotated[
        bool,
        typer.Option(
            "--merge-slivers", help="Merge slivers into neighbours instead of dropping."
        ),
    ] = False,
    admin_code: Annotated[str, _ADMIN] = "000000",
    subdistrict_code: Annotated[str, _SUB] = "001",
    community_target: Annotated[int, _TARGET] = 3000,
    communities: Annotated[Path | None, _COMM] = None,
    name: Annotated[str | None, typer.Option("--name", help="City name.")] = None,
    database_url: Annotated[str | None, _DB_URL] = None,
) -> None:
    """Import an OpenStreetMap extract: blocks, households, POIs, communities."""
    from spatialgrid.blocks import DEFAULT_HIGHWAY_CLASSES
    from spatialgrid.importers import import_osm

    if not file.exists():
        msg = f"FILE {file}: no such file"
        raise fail(msg)
    with progress_bar() as progress:
        city = import_osm(
            file,
            highway_classes=tuple(highway) if highway else DEFAULT_HIGHWAY_CLASSES,
            default_levels=default_levels,
            dwelling_size_m2=dwelling_size,
            min_block_area_m2=min_block_area,
            sliver_action="merge" if merge_slivers else "drop",
            admin_code=admin_code,
            subdistrict_code=subdistrict_code,
            community_target=community_target,
            communities=communities,
            name=name,
            progress=progress,
        )
    _finish(city, out, database_url)


@import_app.command("layers")
def import_layers_command(
    file: Annotated[
        Path, typer.Argument(help="GeoPackage (several layers), GeoJSON or Shapefile.")
    ],
    out: Annotated[Path | None, _OUT] = None,
    mapping: Annotated[
        str | None,
        typer.Option(
            "--mapping",
            help='JSON (or a JSON file): {"blocks": {"households": "HH", '
            '"block_id": "FID", "layer": "their_layer"}}.',
        ),
    ] = None,
    admin_code: Annotated[str, _ADMIN] = "000000",
    subdistrict_code: Annotated[str, _SUB] = "001",
    community_target: Annotated[int, _TARGET] = 3000,
    communities: Annotated[Path | None, _COMM] = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Repair invalid geometries.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="City name.")] = None,
    database_url: Annotated[str | None, _DB_URL] = None,
) -> None:
    """Import a planner's layers; their household counts win over estimates."""
    from spatialgrid.importers import import_layers

    if not file.exists():
        msg = f"FILE {file}: no such file"
        raise fail(msg)
    with progress_bar() as progress:
        city = import_layers(
            file,
            mapping=_read_mapping(mapping),
            admin_code=admin_code,
            subdistrict_code=subdistrict_code,
            community_target=community_target,
            communities=communities,
            repair=repair,
            name=name,
            progress=progress,
        )
    _finish(city, out, database_url)


def register(app: typer.Typer) -> None:
    """Attach the ``import`` group to the ``spatialgrid`` app."""
    app.add_typer(import_app, name="import")
