"""``spatialgrid demo``: everything spatialgrid does, on a generated city, in one go.

Start the database (the embedded PostGIS unless SPATIALGRID_DATABASE_URL is set) →
generate and store the sample city → partition it into grids and put the plan in
force with a worker per grid → check coverage → draw the maps → start the API and
print the URLs to open (each checked to answer before it is printed).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from spatialgrid.cli._console import console, progress_bar

if TYPE_CHECKING:
    from spatialgrid.city import City

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国红梅玉兰志海燕"


def _worker_name(i: int) -> str:
    s = _SURNAMES[(i * 7) % len(_SURNAMES)]
    g1 = _GIVEN[(i * 13) % len(_GIVEN)]
    g2 = _GIVEN[(i * 29 + 5) % len(_GIVEN)]
    return s + g1 + (g2 if i % 3 else "")


def _step(title: str) -> None:
    console.print(f"\n[bold cyan]▸ {title}[/]")


def _store_plan(engine: Any, city: City, result: Any) -> tuple[int, dict[str, str]]:
    """Store the partition as the active plan, one worker per grid; return keys too."""
    from spatialgrid.db import repository as repo
    from spatialgrid.db.engine import session_scope
    from spatialgrid.roles import ROLES

    with session_scope(engine) as session:
        plan_id = repo.create_plan(
            result.grids,
            result.assignments,
            session=session,
            name="demo: sample city",
            parameters=result.parameters,
            diagnostics=result.diagnostics,
            metrics=result.metrics,
        )
        repo.activate_plan(plan_id, session=session)
        # Demo workers are W00001, W00002, ...; a rerun reuses the ones it made.
        known = repo.list_workers(session=session)
        by_number = dict(zip(known["employee_no"], known["id"], strict=True))
        for i, code in enumerate(sorted(result.grids["grid_code"])):
            number = f"W{i + 1:05d}"
            worker_id = by_number.get(number)
            if worker_id is None:
                worker_id = repo.create_worker(
                    session=session, name=_worker_name(i), employee_no=number
                )
            repo.assign_worker(plan_id, code, int(worker_id), session=session)
        # Fresh demo keys every run; earlier demo keys are revoked.
        for info in repo.list_api_keys(session=session):
            if (
                info.name.startswith("demo-")
                and getattr(info, "revoked_at", None) is None
            ):
                repo.revoke_api_key(info.id, session=session)
        keys = {
            role: repo.create_api_key(session=session, role=role, name=f"demo-{role}")
            for role in ROLES
        }
    return plan_id, keys


def _check(url: str, key: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read(200_000)
            return response.status, f"{len(body):,} bytes"
    except urllib.error.HTTPError as err:
        return err.code, err.reason
    except OSError as err:
        return 0, str(err)


def demo(
    seed: Annotated[int, typer.Option(help="Seed of the generated city.")] = 0,
    communities: Annotated[
        int, typer.Option(min=1, max=400, help="Communities in the sample city.")
    ] = 10,
    out: Annotated[
        Path, typer.Option(help="Folder for the maps and files the demo writes.")
    ] = Path("spatialgrid-demo"),
    host: Annotated[str, typer.Option(help="API address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="API port.")] = 8000,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="Start the API at the end (stop it with Ctrl-C).",
        ),
    ] = True,
    exit_after_check: Annotated[
        bool,
        typer.Option(
            "--exit-after-check",
            help="Start the API, check every printed URL answers, then stop.",
        ),
    ] = False,
    incidents: Annotated[
        int,
        typer.Option(
            min=0,
            max=200_000,
            help="Demo incidents with full histories for the command centre.",
        ),
    ] = 3000,
) -> None:
    """Run every capability on a generated city and start the API.

    Uses the embedded PostGIS (started, and created on first use) unless
    SPATIALGRID_DATABASE_URL points elsewhere. The sample city replaces whatever
    city the database held. Writes maps and the partition result to --out.

    Examples: `spatialgrid demo`; `spatialgrid demo --communities 30 --port 8080`;
    `spatialgrid demo --no-serve`.
    """
    from spatialgrid.db.engine import make_engine, resolve_database_url, safe_url

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)

    _step("Database")
    url = resolve_database_url()
    engine = make_engine(url)
    console.print(f"  PostGIS at {safe_url(url)} (schema up to date)")

    _step(f"Sample city ({communities} communities, seed {seed})")
    from spatialgrid.sample import generate_city

    with progress_bar() as progress:
        city = generate_city(seed=seed, n_communities=communities, progress=progress)
    summary = city.summary()
    console.print(
        f"  {summary['communities']} communities, {summary['blocks']} blocks, "
        f"{summary['buildings']} buildings, {summary['households']:,} households, "
        f"{summary['pois']} shops/POIs, {summary['addresses']} door plates"
    )
    from spatialgrid.db import repository as repo
    from spatialgrid.db.engine import session_scope

    with progress_bar() as progress, session_scope(engine) as session:
        repo.save_city(city, session=session, replace=True, progress=progress)
    console.print("  stored in PostGIS")

    _step("Partition into grids of 400–500 households")
    from spatialgrid.partition import partition_blocks

    internal = city.streets[city.streets["internal"].astype(bool)]
    with progress_bar() as progress:
        result = partition_blocks(
            city.blocks,
            buildings=city.buildings,
            internal_roads=internal,
            progress=progress,
        )
    m = result.metrics
    table = Table("grids", "within 400–500", "mean Polsby–Popper", "split blocks", "s")
    table.add_row(
        str(len(result.grids)),
        f"{m.get('share_grids_within_bounds', 0):.1%}",
        f"{m.get('mean_polsby_popper', 0):.2f}",
        str(m.get("split_blocks", 0)),
        f"{m.get('seconds', 0):.1f}",
    )
    console.print(table)
    plan_id, keys = _store_plan(engine, city, result)
    console.print(f"  plan {plan_id} stored and put in force, one worker per grid")
    from spatialgrid.io import write_city

    write_city(city, out / "city.gpkg")
    grids_path = out / "grids.gpkg"
    result.grids.to_file(grids_path, layer="grids", driver="GPKG")

    _step("Coverage check")
    from spatialgrid.coverage import find_coverage_issues

    report = find_coverage_issues(
        result.grids,
        city.communities,
        blocks=city.blocks,
        buildings=city.buildings,
        pois=city.pois,
        addresses=city.addresses,
        streets=city.streets,
    )
    (out / "coverage.json").write_text(
        json.dumps(report.summary, ensure_ascii=False, indent=2, default=str)
    )
    console.print("  " + _coverage_line(report.summary))

    _step(f"Incidents ({incidents:,} over the last 120 days)")
    from spatialgrid.cli.incidents import seed_demo_incidents

    if incidents:
        with session_scope(engine) as session:
            seeded = seed_demo_incidents(session, count=incidents, seed=seed)
        console.print(
            f"  {seeded['incidents']:,} incidents, {seeded['transitions']:,} "
            f"lifecycle steps, {seeded['open']:,} still open, "
            f"{seeded['duplicates']} flagged duplicates"
        )
    n_grids = len(result.grids)

    _step("Maps")
    from spatialgrid.render import render_grid_map, write_map_html

    grid_map = render_grid_map(
        result.grids.assign(worker=""), streets=city.streets, blocks=city.blocks
    )
    map_path = write_map_html(grid_map, out / "grids.html")
    console.print(f"  {map_path} (self-contained; opens with no internet)")

    console.print(
        f"\n[green]Done in {time.perf_counter() - started:.0f} s.[/] Files in {out}/"
    )
    _print_keys(keys)
    engine.dispose()
    if serve or exit_after_check:
        _serve(
            host,
            port,
            keys,
            url=url,
            exit_after_check=exit_after_check,
            maps=_map_pages(n_grids=n_grids, incidents=incidents),
        )


def _coverage_line(summary: dict[str, Any]) -> str:
    parts = []
    for key, value in summary.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{key}={value}")
    return ", ".join(parts[:10]) or json.dumps(summary, ensure_ascii=False)[:300]


def _print_keys(keys: dict[str, str]) -> None:
    table = Table("role", "API key (shown once)", title="Demo API keys")
    for role, key in keys.items():
        table.add_row(role, key)
    console.print(table)


def _map_pages(*, n_grids: int, incidents: int) -> list[tuple[str, str]]:
    """Command-centre map pages worth opening (hot spots need 30 grids)."""
    pages = [("map pages", "/maps"), ("map: grid plan", "/maps/grids")]
    if incidents:
        pages.append(("map: incident heatmap", "/maps/heatmap"))
        if n_grids >= 30:
            pages.append(("map: hot spots (Gi*)", "/maps/hotspots"))
    pages.append(("map: coverage", "/maps/coverage"))
    return pages


def _urls(
    base: str, keys: dict[str, str], maps: list[tuple[str, str]] | None = None
) -> list[tuple[str, str, str | None]]:
    planner = keys.get("planner")
    urls: list[tuple[str, str, str | None]] = [
        ("API docs", f"{base}/docs", None),
        ("health", f"{base}/health", None),
        ("communities (GeoJSON)", f"{base}/v1/communities?limit=5", planner),
        ("blocks (GeoJSON)", f"{base}/v1/blocks?limit=5", planner),
    ]
    operator = keys.get("operator")
    if maps and operator:
        urls += [
            ("incidents (GeoJSON)", f"{base}/v1/incidents?limit=5", operator),
            ("KPIs by community", f"{base}/v1/kpi?by=community", operator),
        ]
        # Map pages take the operator key in the URL: a browser link cannot
        # send the X-API-Key header.
        urls += [(label, f"{base}{path}?key={operator}", None) for label, path in maps]
    return urls


def _serve(
    host: str,
    port: int,
    keys: dict[str, str],
    *,
    url: str,
    exit_after_check: bool,
    maps: list[tuple[str, str]] | None = None,
) -> None:
    import uvicorn

    from api.config import Settings
    from api.main import create_app

    _step("API")
    app = create_app(Settings(database_url=url))
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not server.started:
        msg = f"the API did not start on {host}:{port} (port in use? try --port)"
        raise typer.BadParameter(msg)
    shown = "127.0.0.1" if host in {"0.0.0.0", ""} else host
    base = f"http://{shown}:{port}"
    table = Table(title=f"spatialgrid API on {base}")
    table.add_column("open")
    table.add_column("URL", overflow="fold")  # never "…": the URL must be copyable
    table.add_column("check")
    failed = 0
    for label, link, key in _urls(base, keys, maps):
        status, note = _check(link, key)
        failed += status != 200
        mark = "[green]200[/]" if status == 200 else f"[red]{status} {note}[/]"
        role = next((r for r, k in keys.items() if k == key), None)
        table.add_row(label, link + (f"  (X-API-Key: {role} key)" if key else ""), mark)
    console.print(table)
    if exit_after_check:
        server.should_exit = True
        thread.join(timeout=10)
        if failed:
            raise typer.Exit(1)
        return
    console.print("Serving; press Ctrl-C to stop.")
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=10)


def register(app: typer.Typer) -> None:
    """Attach ``spatialgrid demo``."""
    app.command("demo")(demo)
