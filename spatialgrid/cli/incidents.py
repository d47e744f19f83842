"""``spatialgrid incidents``: demo incidents with full histories, and KPIs.

- ``spatialgrid incidents demo --count 3000`` generates realistic incidents over
  the stored city and the plan in force (more where more households live, a few
  hot spots, daytime peaks, duplicates nearby), walks each through the
  seven-stage lifecycle up to now (some over their time limits, some reworked,
  recent ones still open), and stores them with their transition logs and, for
  some, a reporter's name and phone. Earlier demo incidents are replaced.
- ``spatialgrid incidents kpi --by grid|community|subdistrict|month [--csv]``
  prints closure rate, on-time closure rate, overdue, rework and handling time.

:func:`seed_demo_incidents` is what ``spatialgrid demo`` calls too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.table import Table

import geopandas as gpd
import shapely

from spatialgrid.cli._console import console, err_console

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

incidents_app = typer.Typer(
    help="Incidents of the command centre: demo data and KPIs.",
    no_args_is_help=True,
)

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国红梅玉兰志海燕"
#: Relative frequency of categories in the demo (events far outnumber components).
_CATEGORY_WEIGHTS = {
    "SJ0101": 12,
    "SJ0103": 6,
    "SJ0201": 8,
    "SJ0501": 9,
    "SJ0502": 7,
    "SJ0504": 8,
    "SJ0302": 3,
    "SJ0601": 4,
    "SJ0602": 3,
    "SJ0404": 2,
    "BJ0101": 3,
    "BJ0105": 4,
    "BJ0302": 5,
    "BJ0401": 2,
}
#: Categories that concentrate in hot spots (markets, night streets).
_HOT_CATEGORIES = ("SJ0101", "SJ0501", "SJ0502", "SJ0504", "SJ0201")
_HOUR_WEIGHTS = np.array(
    [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 12, 9, 10, 12, 13, 13, 12, 10, 9, 7, 5, 3, 2],
    dtype=float,
)


def register(app: typer.Typer) -> None:
    """Attach the ``incidents`` command group to ``app``."""
    app.add_typer(incidents_app, name="incidents")


# ------------------------------------------------------------------- simulation


def simulate_lifecycles(
    incidents: pd.DataFrame,
    categories: pd.DataFrame,
    *,
    as_of: datetime | pd.Timestamp,
    seed: int = 0,
    early_end_share: float = 0.05,
    rework_share: float = 0.08,
    stall_share: float = 0.05,
    slowness: float = 0.55,
    duplicate_of: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Plausible lifecycle histories for ``incidents`` up to ``as_of``.

    Each incident walks collect → register → dispatch → handle → report back →
    check → evaluate → closed. The time spent in a stage is its category's limit
    (``<stage>_min``; 30 minutes where none) times a log-normal factor with
    median ``slowness``, so some stages run over their limit. A share ends early
    (not our responsibility / no action), a share fails the check once and is
    reworked, a share stalls after dispatch or handling (the backlog every
    command centre has), and rows flagged in ``duplicate_of`` end as duplicates.
    Walks stop at ``as_of``, so recent incidents are still open.

    Parameters
    ----------
    incidents
        ``category_code`` and ``reported_at`` per row.
    categories
        The category table (:func:`spatialgrid.incidents.load_categories`).
    as_of
        No step after this moment.
    seed
        Random seed.
    early_end_share, rework_share, stall_share, slowness
        Shape of the simulation.
    duplicate_of
        Per row, the earlier incident it repeats, or None.

    Returns
    -------
    pandas.DataFrame
        ``pos, from_stage, to_stage, at, actor, note`` (``pos`` = row position).
    """
    rng = np.random.default_rng(seed)
    limits = categories.set_index("category_code")
    reported = pd.to_datetime(incidents["reported_at"]).reset_index(drop=True)
    end = pd.Timestamp(as_of)
    if end.tzinfo is None and reported.dt.tz is not None:
        end = end.tz_localize(reported.dt.tz)
    elif end.tzinfo is not None and reported.dt.tz is not None:
        end = end.tz_convert(reported.dt.tz)
    codes = incidents["category_code"].astype(str).to_numpy()
    flagged = (
        np.zeros(len(codes), dtype=bool)
        if duplicate_of is None
        else np.array([d is not None and not pd.isna(d) for d in duplicate_of])
    )
    actors = {
        "handle": "grid worker",
        "report_back": "grid worker",
        "check": "grid worker",
    }
    rows: list[tuple[int, str, str, pd.Timestamp, str, str]] = []

    def spent(code: str, stage: str) -> pd.Timedelta:
        col = f"{stage}_min"
        limit = limits.at[code, col] if col in limits.columns else np.nan
        base = 30.0 if pd.isna(limit) else float(limit)
        return pd.Timedelta(minutes=base * slowness * float(rng.lognormal(0.0, 0.7)))

    for pos, (code, t0) in enumerate(zip(codes, reported, strict=True)):
        if flagged[pos]:
            path = [("collect", "duplicate", "repeats an open incident nearby")]
        elif rng.random() < early_end_share:
            outcome = str(rng.choice(["not_responsible", "no_action"]))
            path = [("collect", "register", ""), ("register", outcome, "")]
        else:
            path = [
                ("collect", "register", ""),
                ("register", "dispatch", ""),
                ("dispatch", "handle", ""),
                ("handle", "report_back", ""),
                ("report_back", "check", ""),
            ]
            if rng.random() < rework_share:
                path += [
                    ("check", "handle", "photo check failed: redo"),
                    ("handle", "report_back", ""),
                    ("report_back", "check", ""),
                ]
            path += [("check", "evaluate", ""), ("evaluate", "closed", "")]
            if rng.random() < stall_share:
                path = path[: int(rng.integers(2, 4))]  # stuck in dispatch/handle
        t = t0 + pd.Timedelta(minutes=float(rng.uniform(1, 20)))
        for src, dst, note in path:
            if t > end:
                break
            rows.append((pos, src, dst, t, actors.get(dst, "command centre"), note))
            t = t + spent(code, dst)
    return pd.DataFrame(
        rows, columns=["pos", "from_stage", "to_stage", "at", "actor", "note"]
    )


def _points_in_grids(
    grids: gpd.GeoDataFrame, weights: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` random points (x, y) inside grids drawn with probability ∝ weights."""
    chosen = rng.choice(len(grids), size=n, p=weights / weights.sum())
    out = np.empty((n, 2))
    geoms = np.asarray(grids.geometry.values)
    for g in np.unique(chosen):
        idx = np.flatnonzero(chosen == g)
        minx, miny, maxx, maxy = geoms[g].bounds
        got: list[np.ndarray] = []
        need = len(idx)
        while need > 0:
            k = max(need * 3, 16)
            xy = np.column_stack(
                [rng.uniform(minx, maxx, k), rng.uniform(miny, maxy, k)]
            )
            ok = xy[shapely.contains_xy(geoms[g], xy[:, 0], xy[:, 1])][:need]
            got.append(ok)
            need -= len(ok)
        out[idx] = np.concatenate(got)
    return out


def generate_demo_incidents(
    grids: gpd.GeoDataFrame,
    categories: pd.DataFrame,
    *,
    count: int,
    seed: int = 0,
    days: int = 120,
    as_of: datetime | None = None,
    timezone: str = "Asia/Shanghai",
    hotspot_share: float = 0.4,
    hotspot_sd_m: float = 150.0,
    reporter_share: float = 0.35,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, pd.DataFrame]:
    """Realistic demo incidents over a plan's grids (pure; nothing stored).

    Returns ``(incidents, transitions, reporters)`` as
    :func:`spatialgrid.db.incidents.bulk_insert_incidents` takes them: incidents
    (EPSG:4490 points, placed with :class:`spatialgrid.locate.GridIndex`, with
    ``duplicate_of`` positions from :func:`spatialgrid.incidents.find_duplicates`),
    their simulated transition logs and reporters' details for a share of them.
    """
    from spatialgrid.crs import working_crs
    from spatialgrid.incidents import find_duplicates
    from spatialgrid.locate import GridIndex

    rng = np.random.default_rng(seed)
    now = pd.Timestamp(as_of or datetime.now(UTC)).tz_convert(timezone)
    crs = working_crs(grids)
    projected = grids.to_crs(crs)
    households = (
        projected["households"].fillna(0).to_numpy(dtype=float)
        if "households" in projected.columns
        else np.ones(len(projected))
    )
    weights = np.maximum(households, 1.0)
    k_hot = round(count * hotspot_share)
    xy = _points_in_grids(projected, weights, count - k_hot, rng)
    # a market street and a night-food street: a couple of clear hot spots
    centres = shapely.centroid(
        np.asarray(projected.geometry.values)[
            rng.choice(len(projected), 2, replace=False)
        ]
    )
    pick = rng.integers(0, 2, k_hot)
    hot = np.column_stack(
        [
            shapely.get_x(centres)[pick] + rng.normal(0, hotspot_sd_m, k_hot),
            shapely.get_y(centres)[pick] + rng.normal(0, hotspot_sd_m, k_hot),
        ]
    )
    xy = np.vstack([xy, hot])
    known = [c for c in _CATEGORY_WEIGHTS if c in set(categories["category_code"])]
    if not known:
        known = list(categories["category_code"])
    p = np.array([_CATEGORY_WEIGHTS.get(c, 1) for c in known], dtype=float)
    cats = rng.choice(known, size=count, p=p / p.sum())
    hot_known = [c for c in _HOT_CATEGORIES if c in known] or known
    cats[count - k_hot :] = rng.choice(hot_known, size=k_hot)
    day = rng.integers(0, days, count)
    hour = rng.choice(24, size=count, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    minute = rng.uniform(0, 60, count)
    start_day = (now - pd.Timedelta(days=days)).normalize()
    reported = (
        start_day
        + pd.to_timedelta(day, unit="D")
        + pd.to_timedelta(hour, unit="h")
        + pd.to_timedelta(minute, unit="min")
    )
    reported = pd.Series(reported).where(pd.Series(reported) < now, now)
    order = np.argsort(reported.to_numpy(), kind="stable")
    xy, cats = xy[order], cats[order]
    reported = reported.iloc[order].reset_index(drop=True)
    points = gpd.GeoSeries(gpd.points_from_xy(xy[:, 0], xy[:, 1]), crs=crs)
    storage = points.to_crs(grids.crs)
    names = categories.set_index("category_code")["minor_name"]
    frame = gpd.GeoDataFrame(
        {
            "incident_id": np.arange(count),
            "category_code": cats,
            "reported_at": reported,
            "description": [
                ("群众反映：" if rng.random() < reporter_share else "网格员巡查发现：")
                + str(names.get(c, c))
                for c in cats
            ],
            "source": "demo",
        },
        geometry=storage.values,
        crs=grids.crs,
    )
    # Place every point on the plan like intake does.
    plan = grids.reset_index(drop=True).copy()
    plan["worker_id"] = plan["worker_id"].astype(object)
    index = GridIndex(plan, attributes=["worker_id"])
    found = index.locate(
        shapely.get_x(storage.values),
        shapely.get_y(storage.values),
        crs=storage.crs,
        tolerance_m=20.0,
    )
    table = found.to_frame(attributes=["worker_id"])
    inside = table["inside"].to_numpy(dtype=bool)
    near = (~inside) & (table["nearest_distance_m"].fillna(np.inf) <= 50).to_numpy()
    pos = np.where(inside, found.grid, np.where(near, found.nearest, -1))
    safe = np.maximum(pos, 0)
    frame["grid_code"] = np.where(pos >= 0, index.codes[safe], None)
    frame["community_code"] = np.where(pos >= 0, index.community_codes[safe], None)
    sub = (
        plan["subdistrict_code"].to_numpy(dtype=object)
        if "subdistrict_code" in plan.columns
        else index.subdistrict_codes
    )
    frame["subdistrict_code"] = np.where(pos >= 0, sub[safe], None)
    workers = plan["worker_id"].to_numpy(dtype=object)
    frame["worker_id"] = [
        None if q < 0 or pd.isna(workers[q]) else int(workers[q]) for q in pos
    ]
    status = table["status"].astype(str).to_numpy()
    frame["location_status"] = np.where(
        inside,
        np.where(status == "near_boundary", "near_boundary", "inside"),
        np.where(near, "nearest", "outside"),
    )
    frame["boundary_distance_m"] = np.where(
        pos >= 0, np.round(table["boundary_distance_m"].to_numpy(float), 3), np.nan
    )
    if "plan_id" in plan.columns:
        frame["plan_id"] = plan["plan_id"].iloc[0]
    dup = find_duplicates(frame, closed_col=None)
    frame["duplicate_of"] = [None if d is None else int(d) for d in dup]
    transitions = simulate_lifecycles(
        frame,
        categories,
        as_of=now,
        seed=seed + 1,
        duplicate_of=frame["duplicate_of"].tolist(),
    )
    has = np.flatnonzero(rng.random(count) < reporter_share)
    reporters = pd.DataFrame(
        {
            "pos": has,
            "name": [
                _SURNAMES[rng.integers(len(_SURNAMES))]
                + _GIVEN[rng.integers(len(_GIVEN))]
                + ("" if rng.random() < 0.4 else _GIVEN[rng.integers(len(_GIVEN))])
                for _ in has
            ],
            "phone": [f"13{rng.integers(0, 10**9):09d}" for _ in has],
        }
    )
    return frame.drop(columns=["incident_id"]), transitions, reporters


def seed_demo_incidents(
    session: Session,
    *,
    count: int = 3000,
    seed: int = 0,
    days: int = 120,
    categories: pd.DataFrame | None = None,
    timezone: str = "Asia/Shanghai",
) -> dict[str, Any]:
    """Replace the demo incidents with ``count`` new ones on the plan in force.

    Returns
    -------
    dict
        ``plan_id``, ``incidents``, ``transitions``, ``reporters``, ``duplicates``,
        ``open`` (not yet closed or ended).
    """
    from sqlalchemy import select

    from spatialgrid.db import incidents as inc_repo
    from spatialgrid.db.models import Community
    from spatialgrid.db.repository import active_plan_id
    from spatialgrid.incidents import check_transitions, load_categories

    table = categories if categories is not None else load_categories()
    plan_id = active_plan_id(session=session)
    grids = inc_repo.load_plan_grids_with_workers(plan_id, session=session)
    subs = dict(
        session.execute(
            select(Community.community_code, Community.subdistrict_code)
        ).all()
    )
    grids["subdistrict_code"] = [
        subs.get(c) or (None if c is None else str(c)[:9])
        for c in grids["community_code"]
    ]
    grids["plan_id"] = plan_id
    frame, transitions, reporters = generate_demo_incidents(
        grids, table, count=count, seed=seed, days=days, timezone=timezone
    )
    check = check_transitions(
        pd.DataFrame(
            {
                "incident_id": np.arange(len(frame)),
                "category_code": frame["category_code"],
                "reported_at": frame["reported_at"],
            }
        ),
        transitions.rename(columns={"pos": "incident_id"}),
    )
    if len(check):  # the simulation must only make legal histories
        msg = f"demo histories break the lifecycle: {check.head(3).to_dict('records')}"
        raise RuntimeError(msg)
    inc_repo.delete_incidents(session=session, source="demo")
    ids = inc_repo.bulk_insert_incidents(
        frame, session=session, transitions=transitions, reporters=reporters
    )
    last = transitions.groupby("pos")["to_stage"].last()
    ended = last.isin(
        ["evaluate", "closed", "duplicate", "not_responsible", "no_action"]
    )
    return {
        "plan_id": int(plan_id),
        "incidents": len(ids),
        "transitions": len(transitions),
        "reporters": len(reporters),
        "duplicates": int(frame["duplicate_of"].notna().sum()),
        "open": int(len(ids) - ended.sum()),
    }


# --------------------------------------------------------------------- commands


@incidents_app.command("demo")
def demo(
    count: Annotated[
        int, typer.Option(min=1, max=200_000, help="How many incidents.")
    ] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    days: Annotated[
        int, typer.Option(min=1, max=3650, help="Spread over the last N days.")
    ] = 120,
) -> None:
    """Generate demo incidents with full histories over the plan in force.

    Replaces earlier demo incidents (source 'demo'); other incidents stay.
    """
    from spatialgrid.db.engine import database_session

    with database_session() as session:
        summary = seed_demo_incidents(session, count=count, seed=seed, days=days)
    console.print(
        f"stored {summary['incidents']:,} demo incidents on plan {summary['plan_id']}: "
        f"{summary['transitions']:,} transitions, {summary['open']:,} still open, "
        f"{summary['duplicates']} flagged duplicates, {summary['reporters']:,} with "
        "reporter details (operator-only, audited)"
    )


@incidents_app.command("kpi")
def kpi(
    by: Annotated[
        str,
        typer.Option(help="grid, community, subdistrict, district, month or category."),
    ] = "community",
    csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV instead of a table.")
    ] = False,
    working_hours: Annotated[
        bool,
        typer.Option(
            "--working-hours/--calendar-time",
            help="Count time limits in working minutes (default) or calendar minutes.",
        ),
    ] = True,
) -> None:
    """Closure rate (结案率), on-time closure rate (按期结案率), overdue, rework, handling time."""
    from spatialgrid.db import incidents as inc_repo
    from spatialgrid.db.engine import database_session
    from spatialgrid.incidents import WorkingCalendar, load_categories
    from spatialgrid.kpi import LEVELS, compute_kpis, kpis_to_csv

    if by not in LEVELS:
        msg = f"--by {by!r} unknown; use one of {', '.join(LEVELS)}"
        raise typer.BadParameter(msg)
    with database_session() as session:
        summary = inc_repo.summarize_stored_incidents(
            session=session,
            categories=load_categories(),
            calendar=WorkingCalendar() if working_hours else None,
        )
    if len(summary) == 0:
        err_console.print("no incidents stored; try `spatialgrid incidents demo`")
        raise typer.Exit(1)
    table = compute_kpis(summary, by=by)
    if csv:
        sys.stdout.write(kpis_to_csv(table))
        return
    shown = Table(*[str(c) for c in table.columns], title=f"KPIs by {by}")
    for row in table.itertuples(index=False):
        shown.add_row(*["" if pd.isna(v) else str(v) for v in row])
    console.print(shown)
