"""Incidents: categories, the seven-stage lifecycle, time limits, overdue, duplicates.

The closed loop of digital city management (GB/T 30428): collect (信息收集) →
register (案卷建立) → dispatch (任务派遣) → handle (任务处理) → report back (处理反馈)
→ check and close (核查结案) → evaluate (综合评价). A failed check sends the case back
to handle (rework, 返工). Besides closing, a case may end as a duplicate (重复),
not our responsibility (非管辖) or no further action (无需处置) while it is being
collected or registered.

Two shapes of the same rules:

- one incident at a time: the frozen :class:`Incident` and :func:`advance`, which
  records every transition (who, when, note) and refuses illegal ones with
  :class:`~spatialgrid.errors.TransitionError`;
- whole tables for batch work (a million incidents): :func:`summarize_incidents`
  takes an incidents frame and a transition log and derives, vectorised, the current
  stage, registration and closure times, reworks, per-stage overdue, on-time closure,
  the Open311 status and ``expected_datetime``.

Time limits come per category and stage from a configurable table
(:func:`load_categories`, default ``data/categories.csv``) in minutes, counted either
as calendar minutes or as working minutes of a :class:`WorkingCalendar`
(08:30–17:30 Monday–Friday by default; public holidays are not modelled).

Timestamps are local wall-clock time. Naive timestamps are taken as the calendar's
local time; tz-aware ones are converted to the calendar's time zone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialgrid.crs import require_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import (
    DataFormatError,
    InputError,
    MissingColumnError,
    TransitionError,
)

if TYPE_CHECKING:
    import geopandas as gpd
    from pyproj import CRS

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- stages

#: The seven stages, in order (GB/T 30428 workflow).
STAGES: tuple[str, ...] = (
    "collect",
    "register",
    "dispatch",
    "handle",
    "report_back",
    "check",
    "evaluate",
)
#: Terminal outcomes. ``closed`` follows evaluation; the others end a case early.
OUTCOMES: tuple[str, ...] = ("closed", "duplicate", "not_responsible", "no_action")
#: Every state an incident can be in.
STATES: tuple[str, ...] = STAGES + OUTCOMES

STAGE_LABELS_ZH: dict[str, str] = {
    "collect": "信息收集",
    "register": "案卷建立",
    "dispatch": "任务派遣",
    "handle": "任务处理",
    "report_back": "处理反馈",
    "check": "核查结案",
    "evaluate": "综合评价",
    "closed": "已结案",
    "duplicate": "重复案件",
    "not_responsible": "非管辖范围",
    "no_action": "无需处置",
}

_EARLY_END = ("duplicate", "not_responsible", "no_action")

#: Allowed transitions: state -> states it may move to.
ALLOWED_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "collect": ("register", *_EARLY_END),
    "register": ("dispatch", *_EARLY_END),
    # A department may hand a case back to the command centre for re-dispatch.
    "dispatch": ("handle", "register"),
    "handle": ("report_back", "dispatch"),
    "report_back": ("check",),
    # Check passes -> case closed (结案) and goes to evaluation; fails -> rework.
    "check": ("evaluate", "handle"),
    "evaluate": ("closed",),
    "closed": (),
    "duplicate": (),
    "not_responsible": (),
    "no_action": (),
}

#: Stages after which the case counts as closed (结案): the check passed.
_CLOSED_STATES = frozenset({"evaluate", "closed"})
#: Open311 GeoReport v2 knows only "open" and "closed".
_OPEN311_CLOSED = frozenset({"evaluate", *OUTCOMES})


def allowed_transitions(state: str) -> tuple[str, ...]:
    """The states an incident in ``state`` may move to (empty when terminal)."""
    _require_state(state, "state")
    return ALLOWED_TRANSITIONS[state]


def is_terminal(state: str) -> bool:
    """Whether ``state`` ends the lifecycle."""
    _require_state(state, "state")
    return not ALLOWED_TRANSITIONS[state]


def open311_status(state: str) -> str:
    """Open311 ``status`` of an incident in ``state``: ``"open"`` or ``"closed"``."""
    _require_state(state, "state")
    return "closed" if state in _OPEN311_CLOSED else "open"


def _require_state(state: str, name: str) -> None:
    if state not in ALLOWED_TRANSITIONS:
        msg = f"{name}={state!r} is not an incident state; use one of {list(STATES)}"
        raise TransitionError(msg)


# ---------------------------------------------------------------------- categories

_CATEGORY_COLUMNS = (
    "category_code",
    "kind",
    "major_code",
    "major_name",
    "minor_code",
    "minor_name",
)
#: Stages that may carry a time limit column ``<stage>_min`` in the category table.
TIMED_STAGES: tuple[str, ...] = STAGES[:-1]


def default_categories_path() -> Path:
    """Where the bundled category table lives (``data/categories.csv``)."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parent / "data" / "categories.csv",  # installed wheel (force-include)
        here.parents[1] / "data" / "categories.csv",  # source tree
    ):
        if candidate.exists():
            return candidate
    msg = (
        "the bundled category table data/categories.csv was not found; pass "
        "load_categories(path=...) with your city's table"
    )
    raise FileNotFoundError(msg)


def load_categories(path: str | Path | None = None) -> pd.DataFrame:
    """Read and check a category table (components 部件 and events 事件).

    Parameters
    ----------
    path
        CSV with columns ``category_code, kind, major_code, major_name, minor_code,
        minor_name`` and a time limit in minutes per stage, ``<stage>_min`` for the
        stages in :data:`TIMED_STAGES` (a missing column or empty cell means no
        limit for that stage). ``None`` reads the bundled table.

    Returns
    -------
    pandas.DataFrame
        One row per minor class, codes as strings, limits as floats (NaN = none).

    Raises
    ------
    MissingColumnError
        A required column is absent.
    DataFormatError
        Duplicate category codes, an unknown ``kind`` or a negative limit.
    """
    path = default_categories_path() if path is None else Path(path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return check_categories(table, source=str(path))


def check_categories(
    categories: pd.DataFrame, *, source: str = "categories"
) -> pd.DataFrame:
    """Validate and normalise an in-memory category table (see :func:`load_categories`)."""
    missing = [c for c in _CATEGORY_COLUMNS if c not in categories.columns]
    if missing:
        msg = (
            f"category table {source} lacks columns {missing}; see data/categories.csv"
        )
        raise MissingColumnError(msg)
    table = categories.copy()
    for col in _CATEGORY_COLUMNS:
        table[col] = table[col].astype(str).str.strip()
    dup = table["category_code"][table["category_code"].duplicated()].unique()
    if len(dup):
        msg = f"category table {source} repeats category_code {list(dup)[:5]}; codes must be unique"
        raise DataFormatError(msg)
    bad_kind = sorted(set(table["kind"]) - {"component", "event"})
    if bad_kind:
        msg = f"category table {source}: kind {bad_kind} unknown; use 'component' (部件) or 'event' (事件)"
        raise DataFormatError(msg)
    for stage in TIMED_STAGES:
        col = f"{stage}_min"
        if col not in table.columns:
            table[col] = np.nan
            continue
        values = pd.to_numeric(table[col].replace("", np.nan), errors="coerce").astype(
            float
        )
        bad = table.loc[values < 0, "category_code"].tolist()
        if bad:
            msg = f"category table {source}: negative {col} for {bad[:5]}; limits are minutes >= 0"
            raise DataFormatError(msg)
        table[col] = values
    if "urgent" in table.columns:
        table["urgent"] = (
            table["urgent"].astype(str).str.lower().isin({"true", "1", "yes"})
        )
    return table.reset_index(drop=True)


def time_limits(categories: pd.DataFrame) -> pd.DataFrame:
    """Long table ``category_code, stage, limit_min`` of the timed stages."""
    cols = [f"{s}_min" for s in TIMED_STAGES]
    long = categories[["category_code", *cols]].melt(
        id_vars="category_code", var_name="stage", value_name="limit_min"
    )
    long["stage"] = long["stage"].str.removesuffix("_min")
    return long.dropna(subset=["limit_min"]).reset_index(drop=True)


# ------------------------------------------------------------------ working time


@dataclass(frozen=True)
class WorkingCalendar:
    """Working hours for time limits: a daily window on given weekdays.

    Parameters
    ----------
    day_start, day_end
        Daily working window in local time (default 08:30–17:30, 540 minutes).
    weekdays
        Working weekdays, Monday = 0 (default Monday–Friday).
    timezone
        Zone that tz-aware timestamps are converted to (default Asia/Shanghai).

    Notes
    -----
    Public holidays and adjusted working weekends (调休) are not modelled.
    """

    day_start: time = time(8, 30)
    day_end: time = time(17, 30)
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        if self.minutes_per_day <= 0:
            msg = f"day_end={self.day_end} must be after day_start={self.day_start}"
            raise InputError(msg)
        days = sorted(set(self.weekdays))
        if not days or any(d < 0 or d > 6 for d in days):
            msg = f"weekdays={self.weekdays!r} must be a non-empty set of 0..6 (Monday = 0)"
            raise InputError(msg)
        object.__setattr__(self, "weekdays", tuple(days))

    @property
    def start_minute(self) -> float:
        """Minutes after midnight when work starts."""
        return (
            self.day_start.hour * 60
            + self.day_start.minute
            + self.day_start.second / 60
        )

    @property
    def minutes_per_day(self) -> float:
        """Working minutes in one working day."""
        end = self.day_end.hour * 60 + self.day_end.minute + self.day_end.second / 60
        return end - self.start_minute


# 1970-01-05 was a Monday: weekday arithmetic starts there.
_MONDAY = np.datetime64("1970-01-05T00:00:00", "ns")
_NS_PER_MIN = 60_000_000_000


def _local_ns(values: Any, calendar: WorkingCalendar | None) -> tuple[np.ndarray, Any]:
    """datetime64[ns] local wall-clock values and the tz to restore (or None)."""
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    series = pd.to_datetime(series)
    tz = series.dt.tz
    if tz is not None:
        zone = calendar.timezone if calendar is not None else tz
        series = series.dt.tz_convert(zone).dt.tz_localize(None)
        tz = zone
    return series.to_numpy(dtype="datetime64[ns]"), tz


def _working_clock(t: np.ndarray, calendar: WorkingCalendar) -> np.ndarray:
    """Working minutes from the reference Monday to each time (NaN for NaT)."""
    nat = np.isnat(t)
    minutes = (t - _MONDAY).astype("int64") / _NS_PER_MIN
    days = np.floor(minutes / 1440.0)
    dow = (days % 7).astype(int)
    into_day = minutes - days * 1440.0
    workday = np.zeros(7, dtype=float)
    workday[list(calendar.weekdays)] = 1.0
    before = np.concatenate([[0.0], np.cumsum(workday)])  # working days before dow
    per_day = calendar.minutes_per_day
    weeks = np.floor(days / 7.0)
    out = (
        weeks * len(calendar.weekdays) * per_day
        + before[dow] * per_day
        + workday[dow] * np.clip(into_day - calendar.start_minute, 0.0, per_day)
    )
    out[nat] = np.nan
    return out


def elapsed_minutes(
    start: Any, end: Any, *, calendar: WorkingCalendar | None = None
) -> np.ndarray:
    """Minutes from ``start`` to ``end`` (vectorised), calendar or working time.

    Parameters
    ----------
    start, end
        Array-likes of timestamps (same length); NaT gives NaN.
    calendar
        ``None`` counts calendar minutes; a :class:`WorkingCalendar` counts only
        minutes inside its working windows.
    """
    s, _ = _local_ns(start, calendar)
    e, _ = _local_ns(end, calendar)
    if calendar is None:
        out = (e - s).astype("int64") / _NS_PER_MIN
        out = out.astype(float)
        out[np.isnat(s) | np.isnat(e)] = np.nan
        return out
    return _working_clock(e, calendar) - _working_clock(s, calendar)


def add_minutes(
    start: Any, minutes: Any, *, calendar: WorkingCalendar | None = None
) -> pd.Series:
    """Deadlines: ``start`` plus ``minutes`` of calendar or working time (vectorised).

    With a working calendar, a deadline that falls exactly at the end of a working
    day is that day's closing time (17:30), not the next morning.
    """
    s, tz = _local_ns(start, calendar)
    mins = np.asarray(minutes, dtype=float) * np.ones(len(s))
    if calendar is None:
        delta = np.round(mins * _NS_PER_MIN)
        bad = np.isnan(delta) | np.isnat(s)
        raw = s.astype("int64") + np.where(bad, 0, delta).astype("int64")
        out = raw.astype("datetime64[ns]")
        out[bad] = np.datetime64("NaT")
    else:
        per_day = calendar.minutes_per_day
        week_len = per_day * len(calendar.weekdays)
        target = _working_clock(s, calendar) + mins
        bad = np.isnan(target)
        target = np.where(bad, 0.0, target)
        weeks = np.floor(target / week_len)
        rem = target - weeks * week_len
        k = np.clip(np.ceil(rem / per_day) - 1, 0, len(calendar.weekdays) - 1).astype(
            int
        )
        into = rem - k * per_day
        dow = np.asarray(calendar.weekdays)[k]
        total_min = weeks * 7 * 1440 + dow * 1440 + calendar.start_minute + into
        out = _MONDAY + np.round(total_min * _NS_PER_MIN).astype("int64").astype(
            "timedelta64[ns]"
        )
        out[bad] = np.datetime64("NaT")
    result = pd.Series(out, dtype="datetime64[ns]")
    if tz is not None:
        result = result.dt.tz_localize(tz)
    return result


# ------------------------------------------------------------ one incident at a time


@dataclass(frozen=True)
class Transition:
    """One recorded lifecycle step: who moved the case, when, and why."""

    from_stage: str
    to_stage: str
    at: datetime
    actor: str
    note: str = ""


@dataclass(frozen=True)
class Incident:
    """One incident and its full transition history (immutable; see :func:`advance`)."""

    incident_id: str
    category_code: str
    reported_at: datetime
    stage: str = "collect"
    history: tuple[Transition, ...] = field(default_factory=tuple)

    @property
    def is_open(self) -> bool:
        """Open311 view: not yet closed and not ended early."""
        return open311_status(self.stage) == "open"

    @property
    def reworks(self) -> int:
        """How many times a failed check sent the case back to handling."""
        return sum(
            1 for t in self.history if (t.from_stage, t.to_stage) == ("check", "handle")
        )


def advance(
    incident: Incident, to_stage: str, *, actor: str, at: datetime, note: str = ""
) -> Incident:
    """Move ``incident`` to ``to_stage``, recording who, when and why.

    Parameters
    ----------
    incident
        The incident in its current state.
    to_stage
        Target state; must be in ``allowed_transitions(incident.stage)``.
    actor
        Who performs the step (user or role id); required, for the audit trail.
    at
        When it happened; not before the previous step.
    note
        Free text (reason for rework, duplicate of which case, ...).

    Returns
    -------
    Incident
        A new incident with the new stage and the transition appended.

    Raises
    ------
    TransitionError
        The move is not allowed from the current stage, the actor is empty, or
        ``at`` precedes the last recorded step.
    """
    _require_state(to_stage, "to_stage")
    allowed = ALLOWED_TRANSITIONS[incident.stage]
    if to_stage not in allowed:
        hint = f"allowed: {list(allowed)}" if allowed else "it is terminal"
        msg = (
            f"incident {incident.incident_id!r} cannot move from {incident.stage!r} "
            f"to {to_stage!r} ({hint})"
        )
        raise TransitionError(msg)
    if not actor or not str(actor).strip():
        msg = f"actor={actor!r}: every transition must name who made it"
        raise TransitionError(msg)
    last = incident.history[-1].at if incident.history else incident.reported_at
    if pd.Timestamp(at) < pd.Timestamp(last):
        msg = (
            f"at={at!s} is before the previous step of incident "
            f"{incident.incident_id!r} ({last!s}); transitions must be in time order"
        )
        raise TransitionError(msg)
    step = Transition(incident.stage, to_stage, at, str(actor), note)
    return replace(incident, stage=to_stage, history=(*incident.history, step))


def incident_frames(incidents: Iterable[Incident]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn :class:`Incident` objects into the ``(incidents, transitions)`` frames.

    The frames have the columns :func:`summarize_incidents` expects.
    """
    items = list(incidents)
    inc = pd.DataFrame(
        {
            "incident_id": [i.incident_id for i in items],
            "category_code": [i.category_code for i in items],
            "reported_at": pd.to_datetime([i.reported_at for i in items]),
        }
    )
    rows = [
        (i.incident_id, t.from_stage, t.to_stage, t.at, t.actor, t.note)
        for i in items
        for t in i.history
    ]
    trans = pd.DataFrame(
        rows, columns=["incident_id", "from_stage", "to_stage", "at", "actor", "note"]
    )
    trans["at"] = pd.to_datetime(trans["at"])
    return inc, trans


# ------------------------------------------------------------------------- batch

_INCIDENT_COLUMNS = ("incident_id", "category_code", "reported_at")
_TRANSITION_COLUMNS = ("incident_id", "from_stage", "to_stage", "at")
_STATE_CODE = {s: i for i, s in enumerate(STATES)}
_ALLOWED = np.zeros((len(STATES), len(STATES)), dtype=bool)
for _a, _bs in ALLOWED_TRANSITIONS.items():
    for _b in _bs:
        _ALLOWED[_STATE_CODE[_a], _STATE_CODE[_b]] = True
_TERMINAL_CODES = np.array([_STATE_CODE[s] for s in OUTCOMES])
_NAT = np.iinfo(np.int64).min


def _state_codes(values: pd.Series) -> np.ndarray:
    """Integer code per state name; -1 for anything unknown."""
    return pd.Categorical(values, categories=list(STATES)).codes.astype(np.int64)


def _wall_ns(values: Any, zone: str | None) -> np.ndarray:
    """int64 ns of local wall-clock times (tz-aware values converted to ``zone``)."""
    series = pd.to_datetime(
        pd.Series(values) if not isinstance(values, pd.Series) else values
    )
    if series.dt.tz is not None:
        series = series.dt.tz_convert(zone or "UTC").dt.tz_localize(None)
    return series.to_numpy(dtype="datetime64[ns]").view(np.int64)


@dataclass(frozen=True)
class _Log:
    """The transition log sorted by (incident position, time, row), as arrays."""

    order: np.ndarray  # row positions of the input log, sorted
    pos: np.ndarray  # incident position, -1 when unknown
    src: np.ndarray  # from-state code
    dst: np.ndarray  # to-state code
    at: np.ndarray  # int64 ns wall clock


def _prepare_log(
    incidents: pd.DataFrame, transitions: pd.DataFrame, zone: str | None
) -> _Log:
    pos = pd.Index(incidents["incident_id"]).get_indexer(transitions["incident_id"])
    at = _wall_ns(transitions["at"], zone)
    # two stable sorts = sort by (pos, at, row), faster than lexsort on millions
    by_time = np.argsort(at, kind="stable")
    order = by_time[np.argsort(pos[by_time], kind="stable")]
    return _Log(
        order=order,
        pos=pos[order].astype(np.int64),
        src=_state_codes(transitions["from_stage"])[order],
        dst=_state_codes(transitions["to_stage"])[order],
        at=at[order],
    )


def _zone(incidents: pd.DataFrame, calendar: WorkingCalendar | None) -> str | None:
    tz = (
        pd.to_datetime(incidents["reported_at"].iloc[:1]).dt.tz
        if len(incidents)
        else None
    )
    if tz is None:
        return None
    return calendar.timezone if calendar is not None else str(tz)


def check_transitions(
    incidents: pd.DataFrame, transitions: pd.DataFrame
) -> pd.DataFrame:
    """Rows of ``transitions`` that break the lifecycle rules (empty frame when none).

    A row is bad when its ``(from_stage, to_stage)`` pair is not allowed, when its
    ``from_stage`` is not where the previous step (or the initial ``collect``)
    left the incident, when it goes back in time, or when its incident is unknown.
    The returned frame has the offending rows (sorted by incident and time) plus a
    ``problem`` column.
    """
    _require_columns(incidents, _INCIDENT_COLUMNS, "incidents")
    _require_columns(transitions, _TRANSITION_COLUMNS, "transitions")
    zone = _zone(incidents, None)
    log = _prepare_log(incidents, transitions, zone)
    return _check_log(log, transitions, _wall_ns(incidents["reported_at"], zone))


def _check_log(
    log: _Log, transitions: pd.DataFrame, reported: np.ndarray
) -> pd.DataFrame:
    n = len(log.pos)
    same = np.zeros(n, dtype=bool)
    same[1:] = log.pos[1:] == log.pos[:-1]
    prev_dst = np.where(same, np.r_[-1, log.dst[:-1]], _STATE_CODE["collect"])
    prev_at = np.where(
        same, np.r_[_NAT, log.at[:-1]], reported[np.maximum(log.pos, 0)] if n else 0
    )
    known = (log.src >= 0) & (log.dst >= 0)
    ok = np.zeros(n, dtype=bool)
    ok[known] = _ALLOWED[log.src[known], log.dst[known]]
    problem = np.full(n, "", dtype=object)
    problem[~ok] = "transition not allowed"
    problem[(problem == "") & (log.src != prev_dst)] = (
        "from_stage does not match the previous step"
    )
    problem[(problem == "") & (log.pos < 0)] = "unknown incident_id"
    problem[(problem == "") & (log.pos >= 0) & (log.at < prev_at)] = "goes back in time"
    bad = problem != ""
    out = transitions.iloc[log.order[bad]].copy()
    out["problem"] = problem[bad]
    return out.reset_index(drop=True)


def summarize_incidents(
    incidents: pd.DataFrame,
    transitions: pd.DataFrame,
    categories: pd.DataFrame,
    *,
    as_of: datetime | pd.Timestamp,
    calendar: WorkingCalendar | None = None,
    validate: bool = True,
) -> pd.DataFrame:
    """Derive the lifecycle state of many incidents at once (vectorised).

    Parameters
    ----------
    incidents
        One row per incident: ``incident_id``, ``category_code``, ``reported_at``;
        other columns (grid_code, community_code, geometry...) are carried over.
    transitions
        The transition log: ``incident_id``, ``from_stage``, ``to_stage``, ``at``
        (``actor``, ``note`` optional). An incident without rows is in ``collect``
        since ``reported_at``.
    categories
        The category table (:func:`load_categories`) with the limits per stage.
    as_of
        The moment the state is evaluated at (open stages run until then).
    calendar
        ``None`` counts limits in calendar minutes; a :class:`WorkingCalendar`
        counts working minutes.
    validate
        Check the log with :func:`check_transitions` first and raise on problems.

    Returns
    -------
    pandas.DataFrame
        The input columns plus: ``stage`` (current state), ``stage_entered_at``,
        ``outcome`` (terminal state or None), ``registered_at`` (立案: first
        dispatch), ``closed_at`` (结案: check passed), ``is_closed``,
        ``reworks``, ``checked`` (reached check at least once),
        ``stage_limit_min``, ``stage_elapsed_min`` (current stage),
        ``overdue`` (open and the current stage is past its limit),
        ``overdue_steps`` (stage visits past their limit, finished or running),
        ``on_time`` (closed with no overdue step), ``due_at`` (planned closing
        time from registration), ``is_due`` (registered and closed or past
        ``due_at`` — the denominator of 结案率), ``handling_hours`` (registration to
        closure, calendar hours), ``open311_status``, ``status_notes`` and
        ``expected_datetime`` (planned close of an open case). Index as input.

    Raises
    ------
    MissingColumnError
        A required column is missing.
    TransitionError
        ``validate`` and the log breaks the lifecycle rules (first rows named).
    InputError
        An incident's ``category_code`` is not in the category table.
    """
    _require_columns(incidents, _INCIDENT_COLUMNS, "incidents")
    _require_columns(transitions, _TRANSITION_COLUMNS, "transitions")
    if incidents["incident_id"].duplicated().any():
        dups = incidents.loc[incidents["incident_id"].duplicated(), "incident_id"]
        msg = (
            f"incidents repeat incident_id {dups.head(5).tolist()}; ids must be unique"
        )
        raise InputError(msg)
    cat_pos = pd.Index(categories["category_code"]).get_indexer(
        incidents["category_code"]
    )
    if (cat_pos < 0).any():
        bad = incidents.loc[cat_pos < 0, "category_code"].unique()[:5].tolist()
        msg = (
            f"incidents use category_code {bad} that the category table lacks; "
            "add them to the table or fix the incidents"
        )
        raise InputError(msg)
    n = len(incidents)
    zone = _zone(incidents, calendar)
    as_of_ts = pd.Timestamp(as_of)
    if as_of_ts.tzinfo is not None and zone is None:
        # naive incidents are local wall-clock time of the calendar's zone
        local = (
            calendar.timezone if calendar is not None else WorkingCalendar().timezone
        )
        as_of_ts = as_of_ts.tz_convert(local).tz_localize(None)
    as_of_ns = _wall_ns(pd.Series([as_of_ts]), zone)[0]
    reported = _wall_ns(incidents["reported_at"], zone)
    log = _prepare_log(incidents, transitions, zone)
    if validate:
        bad_rows = _check_log(log, transitions, reported)
        if len(bad_rows):
            first = bad_rows.head(3)[
                ["incident_id", "from_stage", "to_stage", "problem"]
            ]
            msg = (
                f"transitions: {len(bad_rows)} rows break the lifecycle rules, e.g. "
                f"{first.to_dict('records')}; fix the log or pass validate=False"
            )
            raise TransitionError(msg)

    keep = log.pos >= 0
    lpos, ldst, lat, lsrc = log.pos[keep], log.dst[keep], log.at[keep], log.src[keep]

    # Stage visits: the initial collect visit plus one per transition, in order.
    vpos = np.r_[np.arange(n), lpos]
    vstage = np.r_[np.full(n, _STATE_CODE["collect"]), ldst]
    vstart = np.r_[reported, lat]
    vseq = np.r_[np.full(n, -1), np.arange(len(lpos))]
    order = np.lexsort((vseq, vpos))
    vpos, vstage, vstart = vpos[order], vstage[order], vstart[order]
    last = np.ones(len(vpos), dtype=bool)
    last[:-1] = vpos[1:] != vpos[:-1]
    terminal = np.isin(vstage, _TERMINAL_CODES)
    vend = np.empty_like(vstart)
    vend[:-1] = vstart[1:]
    vend[last] = np.where(terminal[last], _NAT, as_of_ns)

    limit_table = np.full((len(categories), len(STATES)), np.nan)
    for s in TIMED_STAGES:
        limit_table[:, _STATE_CODE[s]] = categories[f"{s}_min"].to_numpy(dtype=float)
    vlimit = limit_table[cat_pos[vpos], vstage]
    as_dt = lambda a: a.astype("datetime64[ns]")  # noqa: E731
    velapsed = elapsed_minutes(as_dt(vstart), as_dt(vend), calendar=calendar)
    vover = velapsed > vlimit

    cur = np.flatnonzero(last)  # exactly one per incident, in position order
    cur_stage = vstage[cur]
    stage_names = np.asarray(STATES, dtype=object)

    def first_entry(state: str) -> np.ndarray:
        out = np.full(n, _NAT, dtype=np.int64)
        hit = np.flatnonzero(vstage == _STATE_CODE[state])
        positions, first = np.unique(vpos[hit], return_index=True)
        out[positions] = vstart[hit[first]]
        return out

    def to_times(values: np.ndarray) -> pd.Series:
        series = pd.Series(values.astype("datetime64[ns]"), index=incidents.index)
        return series.dt.tz_localize(zone) if zone is not None else series

    out = incidents.copy()
    stage = stage_names[cur_stage]
    is_outcome = np.isin(cur_stage, _TERMINAL_CODES)
    is_open = ~(is_outcome | (cur_stage == _STATE_CODE["evaluate"]))
    registered = first_entry("dispatch")
    closed = first_entry("evaluate")
    out["stage"] = stage
    out["stage_entered_at"] = to_times(vstart[cur])
    out["outcome"] = np.where(is_outcome, stage, None)
    out["registered_at"] = to_times(registered)
    out["closed_at"] = to_times(closed)
    out["is_closed"] = closed != _NAT
    rework = (lsrc == _STATE_CODE["check"]) & (ldst == _STATE_CODE["handle"])
    out["reworks"] = np.bincount(lpos[rework], minlength=n).astype(int)
    out["checked"] = first_entry("check") != _NAT
    cur_limit = vlimit[cur]
    cur_elapsed = np.where(is_outcome, np.nan, velapsed[cur])
    out["stage_limit_min"] = cur_limit
    out["stage_elapsed_min"] = cur_elapsed
    with np.errstate(invalid="ignore"):
        out["overdue"] = is_open & (cur_elapsed > cur_limit)
    out["overdue_steps"] = np.bincount(vpos, weights=vover, minlength=n).astype(int)
    out["on_time"] = out["is_closed"].to_numpy() & (
        out["overdue_steps"].to_numpy() == 0
    )

    # Planned closing: registration + dispatch..check limits.
    limits_of = {
        s: np.nan_to_num(limit_table[cat_pos, _STATE_CODE[s]]) for s in TIMED_STAGES
    }
    after_register = [
        s for s in TIMED_STAGES if STAGES.index(s) >= STAGES.index("dispatch")
    ]
    plan_min = sum(limits_of[s] for s in after_register)
    due = add_minutes(as_dt(registered), plan_min, calendar=calendar)
    due_ns = due.to_numpy(dtype="datetime64[ns]").view(np.int64)
    out["due_at"] = to_times(due_ns)
    out["is_due"] = (registered != _NAT) & (
        (closed != _NAT) | ((due_ns != _NAT) & (due_ns <= as_of_ns))
    )
    hours = (closed - registered) / 3.6e12
    out["handling_hours"] = np.where(
        (closed != _NAT) & (registered != _NAT), hours, np.nan
    )
    out["open311_status"] = np.where(is_open, "open", "closed")
    out["status_notes"] = pd.Series(stage, index=incidents.index).map(STAGE_LABELS_ZH)
    # Expected close of an open case: from the start of its current stage, that
    # stage's limit plus the later stages' (an overdue case gets a time in the
    # past, which is true).
    rest = np.zeros(n)
    for s in TIMED_STAGES:
        rest += np.where(cur_stage <= _STATE_CODE[s], limits_of[s], 0.0)
    expected = add_minutes(as_dt(vstart[cur]), rest, calendar=calendar)
    exp_ns = expected.to_numpy(dtype="datetime64[ns]").view(np.int64)
    out["expected_datetime"] = to_times(np.where(is_open, exp_ns, _NAT))
    return out


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        msg = f"{name} lacks columns {missing}; required: {list(columns)}"
        raise MissingColumnError(msg)


# -------------------------------------------------------------------- duplicates


def find_duplicates(
    incidents: gpd.GeoDataFrame,
    *,
    radius_m: float = 50.0,
    window: timedelta = timedelta(hours=24),
    id_col: str = "incident_id",
    category_col: str = "category_code",
    time_col: str = "reported_at",
    closed_col: str | None = "closed_at",
    working_crs: CRS | str | int | None = None,
) -> pd.Series:
    """Flag incidents that repeat an earlier, still open one nearby (vectorised).

    Incident B duplicates an earlier A when both have the same category, lie within
    ``radius_m`` of each other, B was reported at most ``window`` after A, and A was
    still open when B came in (``closed_col`` empty or later than B's report).
    Among several such A, the earliest is named. Chains are not collapsed: if C
    is near B but not near A, C points at B (merging follows the links).

    Parameters
    ----------
    incidents
        Points with a CRS and the id, category and time columns.
    radius_m, window
        The neighbourhood in space (metres, measured in a projected CRS) and time.
    id_col, category_col, time_col, closed_col
        Column names; ``closed_col=None`` (or absent) treats every earlier incident
        as open.
    working_crs
        Projected CRS for distances; default :func:`spatialgrid.crs.working_crs`.

    Returns
    -------
    pandas.Series
        ``duplicate_of``: the id of the earliest open incident repeated, or None; index
        as ``incidents``.
    """
    require_crs(incidents, "incidents")
    _require_columns(incidents, (id_col, category_col, time_col), "incidents")
    if radius_m <= 0 or window <= timedelta(0):
        msg = f"radius_m={radius_m} and window={window} must both be positive"
        raise InputError(msg)
    from scipy.spatial import cKDTree

    result = np.full(len(incidents), -1, dtype=np.int64)
    if len(incidents) == 0:
        return pd.Series([], index=incidents.index, dtype=object, name="duplicate_of")
    crs = _working_crs(incidents, working_crs)
    pts = incidents.geometry.to_crs(crs)
    if not (pts.geom_type == "Point").all():
        pts = pts.centroid
    xs, ys = pts.x.to_numpy(), pts.y.to_numpy()
    t_ns, _ = _local_ns(incidents[time_col], None)
    t_sec = (t_ns - np.datetime64("1970-01-01T00:00:00", "ns")).astype("int64") / 1e9
    scale = radius_m / window.total_seconds()
    has_closed = closed_col is not None and closed_col in incidents.columns
    if has_closed:
        c_ns, _ = _local_ns(incidents[closed_col], None)
    cats = incidents[category_col].to_numpy()
    order_key = np.lexsort((np.arange(len(incidents)), t_sec))
    rank = np.empty(len(incidents), dtype=np.int64)
    rank[order_key] = np.arange(len(incidents))  # strict time order, ties by position
    for cat in pd.unique(cats):
        pos = np.flatnonzero(cats == cat)
        if len(pos) < 2:
            continue
        coords = np.column_stack([xs[pos], ys[pos], t_sec[pos] * scale])
        pairs = cKDTree(coords).query_pairs(radius_m, p=np.inf, output_type="ndarray")
        if len(pairs) == 0:
            continue
        a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
        swap = rank[a] > rank[b]
        early = np.where(swap, b, a)
        late = np.where(swap, a, b)
        near = np.hypot(xs[early] - xs[late], ys[early] - ys[late]) <= radius_m
        within = (t_sec[late] - t_sec[early]) <= window.total_seconds()
        keep = near & within
        if has_closed:
            closed = c_ns[early]
            keep &= np.isnat(closed) | (closed > t_ns[late])
        early, late = early[keep], late[keep]
        if len(late) == 0:
            continue
        # earliest candidate per later incident
        o = np.lexsort((rank[early], late))
        late_s, early_s = late[o], early[o]
        first = np.r_[True, late_s[1:] != late_s[:-1]]
        result[late_s[first]] = early_s[first]
    ids = incidents[id_col].to_numpy()
    out = np.where(result >= 0, ids[np.maximum(result, 0)], None)
    logger.debug(
        "find_duplicates: %d of %d flagged", int((result >= 0).sum()), len(ids)
    )
    return pd.Series(out, index=incidents.index, dtype=object, name="duplicate_of")


def open311_fields(summary: pd.DataFrame, categories: pd.DataFrame) -> pd.DataFrame:
    """Open311 GeoReport v2 request fields from :func:`summarize_incidents` output.

    Returns ``service_request_id, status, status_notes, service_code,
    service_name, requested_datetime, updated_datetime, expected_datetime``;
    location fields are left to the caller (they depend on the output CRS).
    Reporter details are never included.
    """
    names = categories.set_index("category_code")["minor_name"]
    return pd.DataFrame(
        {
            "service_request_id": summary["incident_id"].astype(str),
            "status": summary["open311_status"],
            "status_notes": summary["status_notes"],
            "service_code": summary["category_code"],
            "service_name": summary["category_code"].map(names),
            "requested_datetime": summary["reported_at"],
            "updated_datetime": summary["stage_entered_at"],
            "expected_datetime": summary["expected_datetime"],
        },
        index=summary.index,
    )
