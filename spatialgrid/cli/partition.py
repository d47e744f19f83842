"""``spatialgrid partition``: cut blocks into grids, from files or from the database.

File mode (no database): ``--blocks FILE`` in any CRS → ``--out OUT.gpkg`` with layers
``grids``, ``assignments``, ``diagnostics`` (and ``deviations`` when blocks were
split), all geometry in the input's CRS.

Database mode (no ``--blocks``): partitions the stored city and saves a draft plan;
``--activate`` puts it in force.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from spatialgrid.cli._console import console, fail, progress_bar

if TYPE_CHECKING:
    import geopandas as gpd

    from spatialgrid.partition import PartitionResult


def _read(path: Path, option: str) -> gpd.GeoDataFrame:
    import geopandas as gpd

    if not path.exists():
        msg = f"{option} {path}: no such file"
        raise fail(msg)
    return gpd.read_file(path)


def _summary(result: PartitionResult) -> None:
    m = result.metrics
    table = Table(title="Partition summary", show_lines=False)
    table.add_column("community")
    table.add_column("households", justify="right")
    table.add_column("k range", justify="right")
    table.add_column("grids", justify="right")
    table.add_column("status")
    table.add_column("reasons / notes", overflow="fold", max_width=70)
    for row in result.diagnostics.itertuples():
        style = {"infeasible": "red", "unsolved": "yellow", "split": "cyan"}.get(
            str(row.status), ""
        )
        text = row.reasons or row.notes
        table.add_row(
            str(row.community_code),
            str(row.households),
            f"{row.k_min}–{row.k_max}",
            str(row.k),
            f"[{style}]{row.status}[/]" if style else str(row.status),
            str(text)[:300],
        )
    console.print(table)
    console.print(
        f"{m['grids']} grids in {m['communities']} communities; "
        f"{m['share_grids_within_bounds']:.1%} within bounds; feasible communities "
        f"entirely within bounds: {m['share_feasible_communities_within_bounds']:.1%} "
        f"({m['feasible_communities']} feasible, {m['infeasible_communities']} "
        f"infeasible); mean Polsby–Popper {m['mean_polsby_popper']:.3f}; "
        f"{m['split_blocks']} block(s) split; {m['seconds']:.1f} s"
    )


def _write(result: PartitionResult, out: Path, *, community_col: str) -> None:
    import pyogrio

    if out.exists():
        out.unlink()
    grids = result.grids.rename(columns={"community_code": community_col})
    grids.to_file(out, layer="grids", driver="GPKG")
    # attribute-only layers (GeoPackage "attributes" tables)
    assign = result.assignments.reset_index(drop=True)
    pyogrio.write_dataframe(assign, out, layer="assignments", driver="GPKG")
    diag = result.diagnostics.rename(columns={"community_code": community_col})
    pyogrio.write_dataframe(diag, out, layer="diagnostics", driver="GPKG")
    if len(result.deviations):
        result.deviations.to_file(out, layer="deviations", driver="GPKG")


def _run_db(
    options: dict[str, Any], *, database_url: str | None, activate: bool, name: str
) -> None:
    from spatialgrid.db import repository
    from spatialgrid.db.engine import database_session
    from spatialgrid.partition import partition_blocks

    with database_session(database_url) as session:
        city = repository.load_city(session=session)
        streets = city.streets
        internal = streets[streets["internal"].astype(bool)] if len(streets) else None
        with progress_bar() as progress:
            result = partition_blocks(
                city.blocks,
                buildings=city.buildings if len(city.buildings) else None,
                internal_roads=internal
                if internal is not None and len(internal)
                else None,
                progress=progress,
                **options,
            )
        grids = result.grids.copy()
        grids["flags"] = [[f] if f else [] for f in grids["flags"]]
        plan_id = repository.create_plan(
            grids,
            result.assignments.reset_index(drop=True),
            session=session,
            name=name,
            parameters=result.parameters,
            diagnostics=result.diagnostics,
            metrics=result.metrics,
        )
        if activate:
            repository.activate_plan(plan_id, session=session)
    _summary(result)
    state = "active" if activate else "draft"
    console.print(f"plan [bold]{plan_id}[/] stored ({state})")


def partition(
    blocks: Annotated[
        Path | None,
        typer.Option(
            "--blocks", help="Blocks file (any CRS). Without it: the database city."
        ),
    ] = None,
    buildings: Annotated[
        Path | None,
        typer.Option("--buildings", help="Building footprints (split by buildings)."),
    ] = None,
    internal_roads: Annotated[
        Path | None,
        typer.Option(
            "--internal-roads", help="Lines inside blocks to split oversize blocks."
        ),
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col")] = "block_id",
    households_col: Annotated[str, typer.Option("--households-col")] = "households",
    community_col: Annotated[str, typer.Option("--community-col")] = "community_code",
    compound_col: Annotated[str | None, typer.Option("--compound-col")] = None,
    min_households: Annotated[int, typer.Option("--min")] = 400,
    max_households: Annotated[int, typer.Option("--max")] = 500,
    scheme: Annotated[
        str, typer.Option("--scheme", help="cjt213 (14 digits) or db11 (15 digits).")
    ] = "cjt213",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    keep_compounds: Annotated[
        bool,
        typer.Option(
            "--keep-compounds",
            help="Never split building compounds for lumpiness (flag instead).",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output GeoPackage (file mode).")
    ] = None,
    activate: Annotated[
        bool, typer.Option("--activate", help="Database mode: activate the plan.")
    ] = False,
    name: Annotated[str, typer.Option("--name", help="Plan name (database).")] = (
        "partition"
    ),
    database_url: Annotated[
        str | None, typer.Option("--database-url", envvar="SPATIALGRID_DATABASE_URL")
    ] = None,
) -> None:
    """Cut street blocks into grids of --min..--max households.

    File mode: `spatialgrid partition --blocks blocks.gpkg --households-col hh
    --community-col comm --out grids.gpkg`. Database mode (no --blocks): the stored
    city is partitioned into a draft plan (`--activate` to put it in force).
    """
    options: dict[str, Any] = {
        "id_col": id_col,
        "households_col": households_col,
        "community_col": community_col,
        "compound_col": compound_col,
        "min_households": min_households,
        "max_households": max_households,
        "code_scheme": scheme,
        "seed": seed,
        "split_compounds": not keep_compounds,
    }
    if blocks is None:
        if out is not None or buildings is not None or internal_roads is not None:
            msg = "--out/--buildings/--internal-roads need --blocks (file mode)"
            raise fail(msg)
        db_options = {
            k: v
            for k, v in options.items()
            if k not in ("id_col", "households_col", "community_col")
        }
        _run_db(db_options, database_url=database_url, activate=activate, name=name)
        return
    if out is None:
        msg = "file mode needs --out OUT.gpkg"
        raise fail(msg)
    if activate:
        msg = "--activate applies to database mode (without --blocks)"
        raise fail(msg)
    from spatialgrid.partition import partition_blocks

    block_frame = _read(blocks, "--blocks")
    building_frame = None if buildings is None else _read(buildings, "--buildings")
    road_frame = (
        None if internal_roads is None else _read(internal_roads, "--internal-roads")
    )
    with progress_bar() as progress:
        result = partition_blocks(
            block_frame,
            buildings=building_frame,
            internal_roads=road_frame,
            progress=progress,
            **options,
        )
    _write(result, out, community_col="community")
    _summary(result)
    console.print(f"wrote {out} (layers grids, assignments, diagnostics)")


def register(app: typer.Typer) -> None:
    """Add the ``partition`` command to ``app``."""
    app.command("partition")(partition)
