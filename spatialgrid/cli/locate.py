"""``spatialgrid locate``, ``geocode`` and ``reverse``: points and addresses → grids.

File mode reads the plan (``--grids``) or the gazetteer (``--addresses``) from a
file; without them the commands read the active plan / the stored addresses from
PostGIS (``SPATIALGRID_DATABASE_URL`` or the embedded cluster).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spatialgrid.cli._console import console, fail, progress_bar

if TYPE_CHECKING:
    import pandas as pd

    import geopandas as gpd

    from spatialgrid.geocode import Gazetteer
    from spatialgrid.locate import GridIndex

_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet")
_CRS_HELP = "Coordinate system: wgs84 | gcj02 | bd09 | cgcs2000 | EPSG:n."


def _read_vector(path: Path, name: str, layer: str | None = None) -> gpd.GeoDataFrame:
    import geopandas as gpd

    if not path.exists():
        msg = f"--{name} {path}: no such file"
        raise fail(msg)
    if path.suffix.lower() == ".parquet":
        return gpd.read_parquet(path)
    return gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)


def _db_grids(plan: int | None, at: datetime | None, database_url: str | None) -> Any:
    from spatialgrid.db.engine import database_session
    from spatialgrid.db.repository import active_plan_id, load_plan_grids

    with database_session(database_url) as session:
        plan_id = plan if plan is not None else active_plan_id(session=session, at=at)
        return load_plan_grids(plan_id, session=session)


def _db_layer(layer: str, database_url: str | None) -> Any:
    from spatialgrid.db.engine import database_session
    from spatialgrid.db.repository import load_layer

    with database_session(database_url) as session:
        return load_layer(layer, session=session)


def _grid_index(
    grids: Path | None,
    plan: int | None,
    at: datetime | None,
    database_url: str | None,
    tolerance_m: float,
) -> GridIndex:
    from spatialgrid.locate import GridIndex

    frame = (
        _read_vector(grids, "grids")
        if grids is not None
        else _db_grids(plan, at, database_url)
    )
    return GridIndex(frame, max_tolerance_m=max(50.0, tolerance_m))


def _count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return max(
            sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
            - 1,
            0,
        )


def locate(
    points: Annotated[
        Path,
        typer.Option(
            "--points", help="CSV with coordinate columns, or any vector file."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output file (.csv, .gpkg, .geojson...).")
    ],
    crs: Annotated[
        str | None,
        typer.Option(
            "--crs",
            help=_CRS_HELP + " Required for CSV; defaults to a vector file's CRS.",
        ),
    ] = None,
    grids: Annotated[
        Path | None,
        typer.Option(
            "--grids", help="Plan file (GeoPackage/GeoJSON). Omit for DB mode."
        ),
    ] = None,
    x_col: Annotated[
        str, typer.Option("--x-col", help="CSV longitude/x column.")
    ] = "lon",
    y_col: Annotated[
        str, typer.Option("--y-col", help="CSV latitude/y column.")
    ] = "lat",
    tolerance_m: Annotated[
        float,
        typer.Option("--tolerance-m", help="List other grids within this distance."),
    ] = 20.0,
    plan: Annotated[
        int | None, typer.Option("--plan", help="DB mode: plan id (default: active).")
    ] = None,
    at: Annotated[
        datetime | None,
        typer.Option("--at", help="DB mode: the plan in force at this date."),
    ] = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", help="CSV rows per chunk.")
    ] = 200_000,
) -> None:
    """Locate points in the plan's grids.

    Keeps every input column and adds grid_code, community_code,
    subdistrict_code, status (inside | near_boundary | outside | invalid),
    boundary_distance_m, nearest_grid_code / nearest_distance_m (outside points),
    candidate_codes / candidate_distances_m (other grids within --tolerance-m)
    and the grids' worker columns.
    """
    from spatialgrid.locate import locate_points

    if not points.exists():
        msg = f"--points {points}: no such file"
        raise fail(msg)
    index = _grid_index(grids, plan, at, database_url, tolerance_m)
    is_csv = points.suffix.lower() in (".csv", ".txt", ".tsv")
    if is_csv:
        import pandas as pd

        if crs is None:
            msg = (
                "--crs is required for CSV points: wgs84 | gcj02 | bd09 | cgcs2000 "
                "| EPSG:n"
            )
            raise fail(msg)
        total = _count_rows(points)
        sep = "\t" if points.suffix.lower() == ".tsv" else ","
        done = 0
        counts: dict[str, int] = {}
        frames: list[pd.DataFrame] = []
        csv_out = out.suffix.lower() == ".csv"
        if csv_out and out.exists():
            out.unlink()
        with progress_bar() as progress:
            reader = pd.read_csv(points, sep=sep, chunksize=chunk_size, dtype=str)
            for chunk in reader:
                located = locate_points(
                    chunk,
                    index,
                    crs=crs,
                    x_col=x_col,
                    y_col=y_col,
                    tolerance_m=tolerance_m,
                )
                for key, value in located["status"].value_counts().items():
                    counts[str(key)] = counts.get(str(key), 0) + int(value)
                if csv_out:
                    located.to_csv(out, mode="a", header=done == 0, index=False)
                else:
                    frames.append(located)
                done += len(chunk)
                progress("locate", done, total)
        if not csv_out:
            _write_table(pd.concat(frames, ignore_index=True), out, crs, x_col, y_col)
    else:
        frame = _read_vector(points, "points")
        with progress_bar() as progress:
            located = locate_points(
                frame, index, crs=crs, tolerance_m=tolerance_m, progress=progress
            )
        counts = {str(k): int(v) for k, v in located["status"].value_counts().items()}
        _write_frame(located, out)
    console.print_json(json.dumps({"out": str(out), "status": counts}))


def _write_frame(frame: Any, out: Path) -> None:
    import geopandas as gpd

    suffix = out.suffix.lower()
    if suffix == ".csv":
        table = frame
        if isinstance(frame, gpd.GeoDataFrame):
            table = frame.drop(columns=frame.geometry.name).assign(
                wkt=frame.geometry.to_wkt()
            )
        table.to_csv(out, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(out)
    elif suffix in _VECTOR_SUFFIXES:
        frame.to_file(out)
    else:
        msg = f"--out {out}: use .csv, .gpkg, .geojson, .fgb or .parquet"
        raise fail(msg)


def _write_table(
    frame: pd.DataFrame, out: Path, crs: str, x_col: str, y_col: str
) -> None:
    """CSV points written to a vector file: points in CGCS2000 (EPSG:4490)."""
    import numpy as np
    import pandas as pd

    import geopandas as gpd

    from spatialgrid.coords import to_storage

    x = pd.to_numeric(frame[x_col], errors="coerce").to_numpy(float)
    y = pd.to_numeric(frame[y_col], errors="coerce").to_numpy(float)
    lon, lat = to_storage(x, y, crs)
    geom = gpd.points_from_xy(lon, lat)
    geom = [g if np.isfinite(a) else None for g, a in zip(geom, lon, strict=True)]
    _write_frame(gpd.GeoDataFrame(frame, geometry=geom, crs=4490), out)


def _gazetteer(
    addresses: Path | None,
    communities: Path | None,
    layer: str,
    address_crs: str,
    database_url: str | None,
) -> Gazetteer:
    from spatialgrid.geocode import Gazetteer

    if addresses is None:
        plates = _db_layer("addresses", database_url)
        coms = _db_layer("communities", database_url)
        return Gazetteer(plates, communities=coms if len(coms) else None)
    if addresses.suffix.lower() == ".csv":
        import pandas as pd

        import geopandas as gpd

        from spatialgrid.coords import to_storage

        table = pd.read_csv(addresses, dtype=str)
        missing = [c for c in ("lon", "lat") if c not in table.columns]
        if missing:
            msg = f"--addresses {addresses}: CSV needs lon/lat columns"
            raise fail(msg)
        lon, lat = to_storage(
            pd.to_numeric(table["lon"]).to_numpy(float),
            pd.to_numeric(table["lat"]).to_numpy(float),
            address_crs,
        )
        plates = gpd.GeoDataFrame(
            table, geometry=gpd.points_from_xy(lon, lat), crs=4490
        )
    else:
        is_gpkg = addresses.suffix.lower() == ".gpkg"
        plates = _read_vector(addresses, "addresses", layer if is_gpkg else None)
    coms = None
    if communities is not None:
        coms = _read_vector(communities, "communities")
    elif addresses.suffix.lower() == ".gpkg":
        import pyogrio

        if "communities" in [r[0] for r in pyogrio.list_layers(addresses)]:
            coms = _read_vector(addresses, "addresses", "communities")
    return Gazetteer(plates, communities=coms)


def geocode(
    query: Annotated[
        list[str] | None, typer.Argument(help="Addresses to geocode.")
    ] = None,
    addresses: Annotated[
        Path | None,
        typer.Option(
            "--addresses",
            help=(
                "Gazetteer: a city GeoPackage (layer 'addresses'), any vector file "
                "of plates, or a CSV with lon/lat. Omit for DB mode."
            ),
        ),
    ] = None,
    queries: Annotated[
        Path | None,
        typer.Option("--queries", help="CSV of addresses to geocode (batch)."),
    ] = None,
    column: Annotated[
        str, typer.Option("--column", help="Address column of --queries.")
    ] = "address",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write batch results here (.csv/.gpkg)."),
    ] = None,
    communities: Annotated[
        Path | None, typer.Option("--communities", help="Community polygons.")
    ] = None,
    layer: Annotated[str, typer.Option("--layer")] = "addresses",
    address_crs: Annotated[
        str, typer.Option("--address-crs", help="CRS of a CSV gazetteer's lon/lat.")
    ] = "cgcs2000",
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Geocode Chinese addresses against the door-plate gazetteer.

    Prints one JSON object per query (status matched | partial | ambiguous |
    not_found | invalid, level, confidence, point, candidates) or, with
    `--queries FILE --out FILE`, writes a table keeping every input column.
    """
    import pandas as pd

    from spatialgrid.geocode import geocode_addresses

    if not query and queries is None:
        msg = "give addresses as arguments or --queries FILE.csv"
        raise fail(msg)
    gaz = _gazetteer(addresses, communities, layer, address_crs, database_url)
    if queries is not None:
        if not queries.exists():
            msg = f"--queries {queries}: no such file"
            raise fail(msg)
        table = pd.read_csv(queries, dtype=str)
        if column not in table.columns:
            msg = f"--queries has no column {column!r}; use --column"
            raise fail(msg)
        with progress_bar() as progress:
            result = geocode_addresses(table[column], gaz, progress=progress)
        result = result.drop(columns=["query"])
        result["candidates"] = result["candidates"].map(
            lambda c: json.dumps(c, ensure_ascii=False) if c else ""
        )
        merged = result.copy()
        for col in table.columns:
            merged[col] = table[col].to_numpy()
        ordered = list(table.columns) + list(result.columns)
        merged = merged[ordered]
        if out is None:
            msg = "--out is required with --queries"
            raise fail(msg)
        _write_frame(merged, out)
        counts = {str(k): int(v) for k, v in result["status"].value_counts().items()}
        console.print_json(json.dumps({"out": str(out), "status": counts}))
        return
    result = geocode_addresses(list(query or []), gaz)
    for row in result.drop(columns=result.geometry.name).to_dict("records"):
        console.print_json(json.dumps(_jsonable(row), ensure_ascii=False))


def _jsonable(value: Any) -> Any:
    import math

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def reverse(
    x: Annotated[float, typer.Argument(help="Longitude (or easting for EPSG:n).")],
    y: Annotated[float, typer.Argument(help="Latitude (or northing).")],
    crs: Annotated[str, typer.Option("--crs", help=_CRS_HELP)] = "wgs84",
    addresses: Annotated[
        Path | None,
        typer.Option("--addresses", help="Gazetteer file; omit for DB mode."),
    ] = None,
    layer: Annotated[str, typer.Option("--layer")] = "addresses",
    max_distance_m: Annotated[
        float | None, typer.Option("--max-distance-m", help="Search radius.")
    ] = None,
    address_crs: Annotated[str, typer.Option("--address-crs")] = "cgcs2000",
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """The door or building plate nearest to a point, with its distance."""
    gaz = _gazetteer(addresses, None, layer, address_crs, database_url)
    result = gaz.reverse([x], [y], crs=crs, max_distance_m=max_distance_m)
    console.print_json(
        json.dumps(_jsonable(result.to_dict("records")[0]), ensure_ascii=False)
    )


def register(app: typer.Typer) -> None:
    """Attach ``locate``, ``geocode`` and ``reverse`` to the ``spatialgrid`` app."""
    app.command("locate")(locate)
    app.command("geocode")(geocode)
    app.command("reverse")(reverse)
