"""Command-centre KPIs: closure rate, on-time closure rate, overdue, rework, handling time.

Definitions (../DOMAIN, Tianmen report: 911 of 972 due closed = 93.72 %, 737 of 972
closed on time = 75.82 %):

- due (应结案数): registered cases (立案) that are closed or whose planned closing
  time has passed (``is_due`` of :func:`spatialgrid.incidents.summarize_incidents`);
- closure rate 结案率 = closed ÷ due;
- on-time closure rate 按期结案率 = closed with every stage within its limit ÷ due;
- overdue: open cases whose current stage is past its limit (at ``as_of``);
- rework rate 返工率 = cases sent back from check at least once ÷ cases checked;
- average handling time: registration to closure, hours, over closed cases.

Rolled up by grid, community, subdistrict, district, month (of registration) or
any combination of columns. Output is a plain DataFrame; :func:`kpis_to_json` and
:func:`kpis_to_csv` serialise it. Reporter details never enter these tables.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spatialgrid.errors import InputError, MissingColumnError

#: Shorthands for ``by``: level name -> column of the incident summary.
LEVELS: dict[str, str] = {
    "grid": "grid_code",
    "community": "community_code",
    "subdistrict": "subdistrict_code",
    "district": "district_code",
    "month": "month",
    "category": "category_code",
}

KPI_COLUMNS: tuple[str, ...] = (
    "incidents",
    "registered",
    "due",
    "closed",
    "closed_on_time",
    "closure_rate_pct",
    "on_time_rate_pct",
    "open",
    "overdue",
    "checked",
    "reworked",
    "rework_rate_pct",
    "avg_handling_hours",
)

_NEEDED = (
    "registered_at",
    "is_due",
    "is_closed",
    "on_time",
    "overdue",
    "checked",
    "reworks",
    "handling_hours",
    "open311_status",
)


def _pct(num: pd.Series, den: pd.Series) -> pd.Series:
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = 100.0 * num.astype(float) / den.astype(float).where(den > 0)
    return rate.round(2)


def compute_kpis(
    summary: pd.DataFrame,
    *,
    by: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """KPIs of incidents, overall or per group.

    Parameters
    ----------
    summary
        Output of :func:`spatialgrid.incidents.summarize_incidents` (one row per
        incident) with the grouping columns (``grid_code``, ``community_code``,
        ``subdistrict_code``... as kept at report time).
    by
        ``None`` for one overall row; a level from :data:`LEVELS` (``"grid"``,
        ``"community"``, ``"subdistrict"``, ``"district"``, ``"month"``,
        ``"category"``), a column name, or a sequence of them. ``"month"`` is the
        month of registration (``YYYY-MM``).

    Returns
    -------
    pandas.DataFrame
        The group columns then :data:`KPI_COLUMNS`; rates in percent rounded to
        two decimals (NaN where the denominator is zero); sorted by the groups.

    Raises
    ------
    MissingColumnError
        ``summary`` lacks a derived column or a grouping column.
    """
    missing = [c for c in _NEEDED if c not in summary.columns]
    if missing:
        msg = (
            f"summary lacks {missing}; pass the output of "
            "spatialgrid.incidents.summarize_incidents"
        )
        raise MissingColumnError(msg)
    keys = [] if by is None else [by] if isinstance(by, str) else list(by)
    if not keys and by is not None:
        msg = "by=[] is empty; pass None for an overall row or a level such as 'grid'"
        raise InputError(msg)
    cols = [LEVELS.get(k, k) for k in keys]
    frame = pd.DataFrame(
        {
            "incidents": 1,
            "registered": summary["registered_at"].notna().to_numpy(),
            "due": summary["is_due"].to_numpy(dtype=bool),
            "closed": (summary["is_closed"] & summary["is_due"]).to_numpy(dtype=bool),
            "closed_on_time": (summary["on_time"] & summary["is_due"]).to_numpy(
                dtype=bool
            ),
            "open": (summary["open311_status"] == "open").to_numpy(),
            "overdue": summary["overdue"].to_numpy(dtype=bool),
            "checked": summary["checked"].to_numpy(dtype=bool),
            "reworked": (summary["reworks"] > 0).to_numpy(),
            "_hours": summary["handling_hours"].where(summary["is_closed"]).to_numpy(),
        },
        index=summary.index,
    )
    for key, col in zip(keys, cols, strict=True):
        if col == "month":
            frame["month"] = (
                pd.to_datetime(summary["registered_at"]).dt.strftime("%Y-%m").to_numpy()
            )
        elif col not in summary.columns:
            msg = (
                f"by={key!r} needs column {col!r} in summary; keep it on the incidents "
                f"(known levels: {list(LEVELS)})"
            )
            raise MissingColumnError(msg)
        else:
            frame[col] = summary[col].to_numpy()
    counts = [c for c in KPI_COLUMNS if c in frame.columns]
    if cols:
        grouped = frame.groupby(cols, sort=True, dropna=False)
        out = grouped[counts].sum()
        out["avg_handling_hours"] = grouped["_hours"].mean()
        out = out.reset_index()
    else:
        out = frame[counts].sum().to_frame().T
        out["avg_handling_hours"] = frame["_hours"].mean()
    for c in counts:
        out[c] = out[c].astype(int)
    out["closure_rate_pct"] = _pct(out["closed"], out["due"])
    out["on_time_rate_pct"] = _pct(out["closed_on_time"], out["due"])
    out["rework_rate_pct"] = _pct(out["reworked"], out["checked"])
    out["avg_handling_hours"] = out["avg_handling_hours"].astype(float).round(2)
    return out[[*cols, *KPI_COLUMNS]].reset_index(drop=True)


def kpis_to_records(kpis: pd.DataFrame) -> list[dict[str, Any]]:
    """KPI rows as JSON-ready dicts (NaN becomes None, numpy scalars plain Python)."""
    records: list[dict[str, Any]] = []
    for row in kpis.to_dict("records"):
        clean: dict[str, Any] = {}
        for k, v in row.items():
            if isinstance(v, np.generic):
                v = v.item()
            if (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
                v = None
            clean[str(k)] = v
        records.append(clean)
    return records


def kpis_to_json(kpis: pd.DataFrame) -> str:
    """KPI table as a JSON array of objects (UTF-8 text, Chinese kept readable)."""
    return json.dumps(kpis_to_records(kpis), ensure_ascii=False)


def kpis_to_csv(kpis: pd.DataFrame) -> str:
    """KPI table as CSV text (empty cells where a rate is undefined)."""
    buffer = io.StringIO()
    kpis.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()
