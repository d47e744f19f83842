"""``spatialgrid rebalance | diff | validate-plan``: dynamic adjustment of grid plans.

File mode (no database) works on GeoPackages as written by ``spatialgrid partition``
(layers ``grids`` and ``assignments``) plus a blocks file with the *current*
households. Database mode (no plan file) works on stored plans and the stored city;
``rebalance`` then stores a new draft plan (activate it with the plans commands).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from spatialgrid.cli._console import console, fail, progress_bar

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.orm import Session

    import geopandas as gpd


def _read(path: Path, option: str, layer: str | None = None) -> Any:
    import geopandas as gpd
    import pyogrio

    if not path.exists():
        msg = f"{option} {path}: no such file"
        raise fail(msg)
    if layer is not None and layer not in pyogrio.list_layers(path)[:, 0]:
        msg = f"{option} {path}: no layer {layer!r} (write it with `spatialgrid partition`)"
        raise fail(msg)
    return gpd.read_file(path, layer=layer)


def _read_plan(path: Path, option: str) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    import pandas as pd

    grids = _read(path, option, "grids")
    assignments = pd.DataFrame(_read(path, option, "assignments"))
    if "geometry" in assignments.columns:
        assignments = assignments.drop(columns=["geometry"])
    return grids, assignments


def _write(out: Path, layers: dict[str, Any]) -> None:
    import geopandas as gpd
    import pyogrio

    if out.exists():
        out.unlink()
    for name, frame in layers.items():
        if isinstance(frame, gpd.GeoDataFrame):
            frame.to_file(out, layer=name, driver="GPKG")
        else:
            pyogrio.write_dataframe(
                frame.reset_index(drop=True), out, layer=name, driver="GPKG"
            )


def _violations_table(violations: pd.DataFrame, title: str) -> None:
    if violations.empty:
        console.print(f"[green]{title}: no violations[/]")
        return
    table = Table(title=title)
    for col in ("kind", "grid_codes", "block_ids", "households", "detail"):
        table.add_column(col, overflow="fold", max_width=48)
    for row in violations.itertuples():
        table.add_row(
            str(row.kind),
            str(row.grid_codes),
            str(row.block_ids)[:200],
            ""
            if row.households is None or str(row.households) == "<NA>"
            else str(row.households),
            str(row.detail),
        )
    console.print(table)


# --------------------------------------------------------------------- rebalance


def rebalance(
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan", help="Plan GeoPackage (grids, assignments). Omit for DB mode."
        ),
    ] = None,
    blocks: Annotated[
        Path | None,
        typer.Option("--blocks", help="Current blocks (changed households)."),
    ] = None,
    buildings: Annotated[
        Path | None,
        typer.Option("--buildings", help="Buildings: lets parts of blocks move."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="File mode: output GeoPackage.")
    ] = None,
    lock: Annotated[
        list[str] | None,
        typer.Option("--lock", help="Grid code to keep as it is (repeat)."),
    ] = None,
    used_codes_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--used-codes-from", help="Older plan files whose codes are never reused."
        ),
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col")] = "block_id",
    households_col: Annotated[str, typer.Option("--households-col")] = "households",
    community_col: Annotated[str, typer.Option("--community-col")] = "community_code",
    min_households: Annotated[int, typer.Option("--min")] = 400,
    max_households: Annotated[int, typer.Option("--max")] = 500,
    code_scheme: Annotated[str, typer.Option("--code-scheme")] = "cjt213",
    repair_all: Annotated[
        bool, typer.Option("--repair-all", help="Also repair old violations elsewhere.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    exhaustive_seconds: Annotated[
        float,
        typer.Option(
            "--exhaustive-seconds",
            min=0.0,
            help="Also solve each changed community whole and exactly for up to "
            "this many seconds (0: the fast repair alone, ~2 s per community).",
        ),
    ] = 0.0,
    plan_id: Annotated[
        int | None,
        typer.Option("--plan-id", help="DB mode: plan (default: the active one)."),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="DB mode: name of the draft.")
    ] = "rebalance",
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Repair a plan after households changed, moving as few households as possible.

    Only grids the change pushed outside min..max are repaired (plus new and removed
    blocks); locked grids and untouched grids stay exactly as they are.
    """
    from spatialgrid.rebalance import rebalance_plan

    options: dict[str, Any] = {
        "locked": list(lock or []),
        "min_households": min_households,
        "max_households": max_households,
        "code_scheme": code_scheme,
        "repair_all": repair_all,
        "seed": seed,
        "exhaustive_seconds": exhaustive_seconds,
    }
    if plan is not None:
        if blocks is None or out is None:
            msg = "file mode needs --plan, --blocks and --out"
            raise fail(msg)
        grids, assignments = _read_plan(plan, "--plan")
        used: set[str] = set()
        for older in used_codes_from or []:
            used |= set(
                _read(older, "--used-codes-from", "grids")["grid_code"].astype(str)
            )
        with progress_bar() as progress:
            result = rebalance_plan(
                _read(blocks, "--blocks"),
                grids,
                assignments,
                buildings=None
                if buildings is None
                else _read(buildings, "--buildings"),
                used_codes=used,
                id_col=id_col,
                households_col=households_col,
                community_col=community_col,
                progress=progress,
                **options,
            )
        _write(
            out,
            {
                "grids": result.grids,
                "assignments": result.assignments,
                "moves": result.moves,
                "communities": result.communities,
            },
        )
        where = str(out)
    else:
        from spatialgrid.db import repository
        from spatialgrid.db.engine import database_session
        from spatialgrid.db.plans_extra import ever_used_grid_codes, store_draft_plan

        with database_session(database_url) as session:
            pid, grids, assignments = _stored_plan(plan_id, session)
            city = repository.load_city(session=session)
            with progress_bar() as progress:
                result = rebalance_plan(
                    city.blocks,
                    grids,
                    assignments,
                    buildings=city.buildings if len(city.buildings) else None,
                    used_codes=ever_used_grid_codes(session=session),
                    progress=progress,
                    **options,
                )
            new_id = store_draft_plan(
                result.grids,
                result.assignments,
                session=session,
                name=name,
                parameters={"rebalanced_from": pid, **options},
                metrics=result.summary,
            )
        where = f"draft plan {new_id} (from plan {pid})"
    s = result.summary
    table = Table(title="Rebalance")
    for col in (
        "community",
        "status",
        "method",
        "viol. before",
        "after",
        "moved",
        "residents",
        "grids",
    ):
        table.add_column(col)
    for row in result.communities.itertuples():
        table.add_row(
            str(row.community_code),
            str(row.status),
            str(row.method),
            str(row.violations_before),
            str(row.violations_after),
            str(row.households_moved),
            str(row.existing_households_moved),
            str(row.grids_touched),
        )
    console.print(table)
    console.print(
        f"{s['households_moved']} households moved ({s['existing_households_moved']} "
        f"of them residents from before the change), {s['n_grids_touched']} grid(s) "
        "touched, "
        f"codes created {s['codes_created'] or '-'}, retired {s['codes_retired'] or '-'}; "
        f"grids outside bounds {s['violations_before']} → {s['violations_after']}; "
        f"{s['seconds']:.2f} s → {where}"
    )


# -------------------------------------------------------------------------- diff


def diff(
    old: Annotated[
        Path | None, typer.Option("--old", help="Older plan GeoPackage.")
    ] = None,
    new: Annotated[
        Path | None, typer.Option("--new", help="Newer plan GeoPackage.")
    ] = None,
    old_id: Annotated[
        int | None, typer.Option("--old-id", help="DB mode: older plan id.")
    ] = None,
    new_id: Annotated[
        int | None, typer.Option("--new-id", help="DB mode: newer plan id.")
    ] = None,
    blocks: Annotated[
        Path | None,
        typer.Option("--blocks", help="Blocks file: adds moved blocks to the map."),
    ] = None,
    buildings: Annotated[
        Path | None,
        typer.Option(
            "--buildings",
            help="Buildings file: split blocks are compared building by building.",
        ),
    ] = None,
    match: Annotated[
        bool,
        typer.Option(
            "--match",
            help="Relabel the newer plan's codes to the older (fresh partitions).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="GeoPackage: layers diff, grids, moves."),
    ] = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Compare two plans: grids added/removed/changed, households and blocks moved."""
    from spatialgrid.plandiff import diff_plans, relabel_to_match

    def matched(
        oa: pd.DataFrame, ng: gpd.GeoDataFrame, na: pd.DataFrame
    ) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
        return relabel_to_match(oa, ng, na) if match else (ng, na)

    block_frame = building_frame = None
    if old is not None and new is not None:
        og, oa = _read_plan(old, "--old")
        ng, na = matched(oa, *_read_plan(new, "--new"))
        if blocks is not None:
            block_frame = _read(blocks, "--blocks")
        if buildings is not None:
            building_frame = _read(buildings, "--buildings")
    elif old_id is not None and new_id is not None:
        from spatialgrid.db.engine import database_session
        from spatialgrid.db.plans_extra import load_diff_layers, load_plan

        with database_session(database_url) as session:
            og, oa = load_plan(old_id, session=session)
            ng, na = matched(oa, *load_plan(new_id, session=session))
            block_frame, building_frame = load_diff_layers(oa, na, session=session)
    else:
        msg = "give --old and --new (files) or --old-id and --new-id (database)"
        raise fail(msg)
    if block_frame is not None:
        block_frame = block_frame.to_crs(og.crs)
    if building_frame is not None:
        building_frame = building_frame.to_crs(og.crs) if len(building_frame) else None
    result = diff_plans(
        og,
        oa,
        ng.to_crs(og.crs),
        na,
        blocks=block_frame,
        buildings=building_frame,
    )
    s = result.summary
    console.print(
        f"grids: {s['grids_added']} added, {s['grids_removed']} removed, "
        f"{s['grids_changed']} changed, {s['grids_unchanged']} unchanged; "
        f"{s['households_moved']} households in {s['blocks_moved']} block(s) moved; "
        f"blocks added {s['blocks_added']}, removed {s['blocks_removed']}; "
        f"codes retired {s['codes_retired'] or '-'}, created {s['codes_created'] or '-'}"
    )
    if out is not None:
        _write(
            out, {"diff": result.layer, "grids": result.grids, "moves": result.moves}
        )
        console.print(f"written {out}")


# ------------------------------------------------------------------ validate-plan


def validate_plan_command(
    plan: Annotated[
        Path | None,
        typer.Option("--plan", help="Plan GeoPackage (grids, assignments)."),
    ] = None,
    drawn: Annotated[
        Path | None,
        typer.Option(
            "--drawn", help="Hand-drawn grid polygons (GPKG/GeoJSON/Shapefile)."
        ),
    ] = None,
    drawn_layer: Annotated[str | None, typer.Option("--drawn-layer")] = None,
    code_col: Annotated[
        str | None, typer.Option("--code-col", help="Column of drawn codes to keep.")
    ] = None,
    blocks: Annotated[
        Path | None, typer.Option("--blocks", help="Blocks file.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="GeoPackage: violations (+ matched plan)."),
    ] = None,
    id_col: Annotated[str, typer.Option("--id-col")] = "block_id",
    households_col: Annotated[str, typer.Option("--households-col")] = "households",
    community_col: Annotated[str, typer.Option("--community-col")] = "community_code",
    min_households: Annotated[int, typer.Option("--min")] = 400,
    max_households: Annotated[int, typer.Option("--max")] = 500,
    plan_id: Annotated[
        int | None, typer.Option("--plan-id", help="DB mode: plan id.")
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Exit with status 1 when anything is wrong."),
    ] = False,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Check a plan (file, stored or hand-drawn): bounds, contiguity, nesting, gaps."""
    from spatialgrid.edits import validate_plan
    from spatialgrid.upload import match_drawn_plan, read_drawn_plan

    cols = {
        "id_col": id_col,
        "households_col": households_col,
        "community_col": community_col,
    }
    bounds = {"min_households": min_households, "max_households": max_households}
    layers: dict[str, Any] = {}
    if plan is not None or drawn is not None:
        if blocks is None:
            msg = "file mode needs --blocks"
            raise fail(msg)
        block_frame = _read(blocks, "--blocks")
        if drawn is not None:
            res = match_drawn_plan(
                read_drawn_plan(drawn, layer=drawn_layer),
                block_frame,
                code_col=code_col,
                **cols,
                **bounds,
            )
            violations = res.violations
            layers = {"grids": res.grids, "assignments": res.assignments}
            console.print(
                f"matched {res.summary['blocks_matched']}/{res.summary['blocks']} blocks "
                f"to {res.summary['grids']} grids; {res.summary['blocks_split']} block(s) "
                "cut by a drawn line"
            )
        else:
            grids, assignments = _read_plan(plan, "--plan")  # type: ignore[arg-type]
            violations = validate_plan(
                block_frame,
                grids.to_crs(block_frame.crs),
                assignments,
                **cols,
                **bounds,
            )
    else:
        from spatialgrid.db import repository
        from spatialgrid.db.engine import database_session

        with database_session(database_url) as session:
            _, grids, assignments = _stored_plan(plan_id, session)
            block_frame = repository.load_layer("blocks", session=session)
        violations = validate_plan(block_frame, grids, assignments, **bounds)
    _violations_table(violations, "Plan violations")
    if out is not None:
        _write(out, {"violations": violations, **layers})
    if strict and len(violations):
        raise typer.Exit(1)


def _stored_plan(
    plan_id: int | None, session: Session
) -> tuple[int, gpd.GeoDataFrame, pd.DataFrame]:
    """(id, grids, assignments) of stored plan ``plan_id``, default the active one."""
    from spatialgrid.db import repository
    from spatialgrid.db.plans_extra import load_plan

    pid = plan_id if plan_id is not None else repository.active_plan_id(session=session)
    return (pid, *load_plan(pid, session=session))


def register(app: typer.Typer) -> None:
    """Add ``rebalance``, ``diff`` and ``validate-plan`` to the ``spatialgrid`` CLI."""
    app.command("rebalance")(rebalance)
    app.command("diff")(diff)
    app.command("validate-plan")(validate_plan_command)
