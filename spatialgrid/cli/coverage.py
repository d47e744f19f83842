"""``spatialgrid coverage``: coverage QA of a plan, from files or from the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spatialgrid.cli._console import fail, progress_bar

if TYPE_CHECKING:
    import geopandas as gpd


def _read(path: Path | None, name: str) -> gpd.GeoDataFrame | None:
    if path is None:
        return None
    import geopandas as gpd

    if not path.exists():
        msg = f"--{name} {path}: no such file"
        raise fail(msg)
    return gpd.read_file(path)


def load_plan_layers(*, session: Any, plan: int | None = None) -> dict[str, Any]:
    """City layers and the grids of a stored plan (the active plan unless ``plan``).

    Returns a dict with ``plan_id``, ``grids``, ``communities`` and the optional
    layers (``None`` when the stored layer is empty), all in EPSG:4490.
    """
    from spatialgrid.db.repository import active_plan_id, load_city, load_plan_grids

    plan_id = plan if plan is not None else active_plan_id(session=session)
    city = load_city(session=session)
    grids = load_plan_grids(plan_id, session=session)
    optional = ("blocks", "buildings", "compounds", "pois", "addresses", "streets")
    return {
        "plan_id": plan_id,
        "grids": grids,
        "communities": city.communities,
        **{name: getattr(city, name) if len(getattr(city, name)) else None
           for name in optional},
    }  # fmt: skip


def _load_db(plan: int | None, database_url: str | None) -> dict[str, Any]:
    from spatialgrid.db.engine import database_session

    with database_session(database_url) as session:
        return load_plan_layers(session=session, plan=plan)


def coverage(
    out: Annotated[Path, typer.Option("--out", help="Report GeoPackage to write.")],
    grids: Annotated[
        Path | None,
        typer.Option(
            "--grids", help="Plan file (GeoPackage/GeoJSON). Omit for DB mode."
        ),
    ] = None,
    communities: Annotated[Path | None, typer.Option("--communities")] = None,
    blocks: Annotated[Path | None, typer.Option("--blocks")] = None,
    buildings: Annotated[Path | None, typer.Option("--buildings")] = None,
    compounds: Annotated[Path | None, typer.Option("--compounds")] = None,
    shops: Annotated[
        Path | None,
        typer.Option(
            "--shops", help="Shops/POIs (points); without is_shop all are shops."
        ),
    ] = None,
    addresses: Annotated[Path | None, typer.Option("--addresses")] = None,
    streets: Annotated[
        Path | None,
        typer.Option(
            "--streets", help="Street centre lines: enables street-front proposals."
        ),
    ] = None,
    plan: Annotated[
        int | None,
        typer.Option(
            "--plan", help="DB mode: stored plan id (default: the active plan)."
        ),
    ] = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
    grid_code_col: Annotated[str, typer.Option("--grid-code-col")] = "grid_code",
    community_col: Annotated[str, typer.Option("--community-col")] = "community_code",
    sliver_width_m: Annotated[
        float,
        typer.Option("--sliver-width-m", help="Gaps narrower than this are slivers."),
    ] = 2.0,
    min_households: Annotated[int, typer.Option("--min-households")] = 400,
    max_households: Annotated[int, typer.Option("--max-households")] = 500,
    micro_grid_min_shops: Annotated[
        int,
        typer.Option(
            "--micro-grid-min-shops", help="Shops in a group that earn a micro-grid."
        ),
    ] = 10,
    micro_grid_min_length_m: Annotated[
        float,
        typer.Option(
            "--micro-grid-min-length-m", help="Frontage that earns a micro-grid."
        ),
    ] = 150.0,
    repaired_out: Annotated[
        Path | None,
        typer.Option(
            "--repaired-out",
            help=(
                "Write a NEW draft plan here: slivers merged into their longest-border "
                "neighbour and street-front micro-grids/assignments applied."
            ),
        ),
    ] = None,
    map_out: Annotated[
        Path | None, typer.Option("--map", help="Write a folium map.")
    ] = None,
) -> None:
    """Find gaps, slivers, overlaps and crossings; count households, shops and
    addresses that fall through; propose repairs. Prints a JSON summary.

    File mode: `--grids FILE --communities FILE [...] --out REPORT.gpkg`.
    Database mode (no `--grids`): checks a stored plan (`--plan ID`, default the
    active one) against the stored city.
    """
    from spatialgrid.coverage import (
        add_coverage_layers,
        find_coverage_issues,
        write_coverage_report,
    )
    from spatialgrid.repair import (
        apply_street_front_shops,
        merge_slivers,
        plan_sliver_merges,
        propose_street_front_shops,
        propose_territory,
    )

    if grids is None:
        if communities is not None:
            msg = "--communities needs --grids (file mode); omit both for DB mode"
            raise fail(msg)
        layers = _load_db(plan, database_url)
        source: dict[str, Any] = {"mode": "database", "plan_id": layers.pop("plan_id")}
    else:
        if plan is not None:
            msg = "--plan is for database mode; drop it or drop --grids"
            raise fail(msg)
        if communities is None:
            msg = "--grids needs --communities (the area the plan must cover)"
            raise fail(msg)
        layers = {
            "grids": _read(grids, "grids"),
            "communities": _read(communities, "communities"),
            "blocks": _read(blocks, "blocks"),
            "buildings": _read(buildings, "buildings"),
            "compounds": _read(compounds, "compounds"),
            "pois": _read(shops, "shops"),
            "addresses": _read(addresses, "addresses"),
            "streets": _read(streets, "streets"),
        }
        pois = layers["pois"]
        if pois is not None and "is_shop" not in pois.columns:
            layers["pois"] = pois.assign(is_shop=True)
        source = {"mode": "files", "grids": str(grids)}

    plan_grids = layers.pop("grids")
    with progress_bar() as progress:
        report = find_coverage_issues(
            plan_grids,
            layers.pop("communities"),
            grid_code_col=grid_code_col,
            community_col=community_col,
            sliver_width_m=sliver_width_m,
            progress=progress,
            **layers,
        )
    names = {"grid_code_col": grid_code_col, "community_col": community_col}
    merges = plan_sliver_merges(plan_grids, report, **names)
    territory = propose_territory(
        plan_grids,
        report,
        min_households=min_households,
        max_households=max_households,
        **names,
    )
    extra: dict[str, gpd.GeoDataFrame] = {"territory": territory}
    shop_summary: dict[str, Any] | None = None
    street_front = None
    if layers["streets"] is not None and layers["pois"] is not None:
        street_front = propose_street_front_shops(
            plan_grids,
            report,
            layers["streets"],
            blocks=layers["blocks"],
            buildings=layers["buildings"],
            micro_grid_min_shops=micro_grid_min_shops,
            micro_grid_min_length_m=micro_grid_min_length_m,
            **names,
        )
        extra["shop_groups"] = street_front.groups
        extra["micro_grids"] = street_front.micro_grids
        shop_summary = street_front.summary
    out.parent.mkdir(parents=True, exist_ok=True)
    written = write_coverage_report(report, str(out), extra_layers=extra)
    result: dict[str, Any] = {
        "source": source,
        "summary": report.summary,
        "proposals": {
            "sliver_merges": int(merges["grid_code"].notna().sum()),
            "territory_proposed": int((territory["status"] == "proposed").sum()),
            "territory_flagged": int((territory["status"] == "flagged").sum()),
            "street_front": shop_summary,
        },
        "out": str(out),
        "layers": written,
    }
    if repaired_out is not None:
        new = merge_slivers(plan_grids, report, **names)
        if street_front is not None:
            new = apply_street_front_shops(new, street_front, **names)
        repaired_out.parent.mkdir(parents=True, exist_ok=True)
        new.to_file(repaired_out)
        result["repaired_out"] = str(repaired_out)
        result["repaired_grids"] = len(new)
    if map_out is not None:
        import folium

        web = plan_grids.to_crs(4326)
        minx, miny, maxx, maxy = web.total_bounds
        m = folium.Map(
            location=[(miny + maxy) / 2, (minx + maxx) / 2],
            zoom_start=14,
            tiles=None,
        )
        m.fit_bounds([[miny, minx], [maxy, maxx]])
        add_coverage_layers(m, report, extra_layers=extra)
        m.save(str(map_out))
        result["map"] = str(map_out)
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add the ``coverage`` command to ``app``."""
    app.command("coverage")(coverage)
