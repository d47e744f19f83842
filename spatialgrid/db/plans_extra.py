"""Plan helpers for dynamic adjustment: load a plan whole, codes ever used, store drafts.

Built only on :mod:`spatialgrid.db.repository` (no schema change): the set of grid
codes ever used is derived from the grids of every stored plan, so a retired code
can never come back (DOMAIN: codes are versioned, old plans stay queryable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from spatialgrid.db import repository

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    import geopandas as gpd

__all__ = ["ever_used_grid_codes", "load_diff_layers", "load_plan", "store_draft_plan"]


def load_plan(
    plan_id: int, *, session: Session
) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """Grids (EPSG:4490) and assignments of a stored plan; NotFoundError if absent."""
    grids = repository.load_plan_grids(plan_id, session=session)
    assignments = repository.load_plan_assignments(plan_id, session=session)
    if "households" in assignments.columns:
        assignments["households"] = pd.to_numeric(
            assignments["households"], errors="coerce"
        )
    return grids, assignments


def load_diff_layers(
    old_assignments: pd.DataFrame, new_assignments: pd.DataFrame, *, session: Session
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The blocks and buildings :func:`spatialgrid.plandiff.diff_plans` needs
    for two plans, filtered in the database: the blocks it can draw as moved
    and the buildings of blocks split in either plan (EPSG:4490)."""
    from spatialgrid.plandiff import diff_block_ids

    drawn, split = diff_block_ids(old_assignments, new_assignments)
    blocks = repository.load_layer(
        "blocks", session=session, equals={"block_id": drawn}
    )
    buildings = repository.load_layer(
        "buildings", session=session, equals={"block_id": split}
    )
    return blocks, buildings


def ever_used_grid_codes(*, session: Session) -> set[str]:
    """Every grid code of every stored plan (draft, active or retired).

    One query on the codes alone (no geometry is read).
    """
    from sqlalchemy import select

    from spatialgrid.db.models import Grid

    return {str(c) for c in session.scalars(select(Grid.grid_code).distinct())}


def store_draft_plan(
    grids: gpd.GeoDataFrame,
    assignments: pd.DataFrame,
    *,
    session: Session,
    name: str,
    parameters: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> int:
    """Store grids + assignments as a new draft plan (flags as JSON lists); its id."""
    stored = grids.copy()
    if "flags" in stored.columns:
        stored["flags"] = [
            list(f)
            if isinstance(f, list | tuple)
            else [p for p in str(f or "").split("; ") if p]
            for f in stored["flags"]
        ]
    return repository.create_plan(
        stored,
        assignments.reset_index(drop=True),
        session=session,
        name=name,
        parameters=parameters,
        metrics=metrics,
    )
