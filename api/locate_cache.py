"""Per-process cache of point-location indexes and the address gazetteer.

Building a :class:`~spatialgrid.locate.GridIndex` for a plan of ~600 grids takes
about a second and a :class:`~spatialgrid.geocode.Gazetteer` for a city of tens of
thousands of door plates a little less; a single-point lookup then takes tens of
microseconds. So each API process builds them lazily, on the first request that
needs them, and keeps them:

- one :class:`PlanEntry` per plan id (the index, each grid's worker; at most
  :attr:`LocateCache.max_plans`, least recently used dropped first). A plan's
  geometry never changes once stored, so an entry is valid as long as its plan
  id is asked for; its worker assignments and names are re-read every
  :attr:`LocateCache.workers_check_s` seconds.
- the id of the plan in force, re-read from the database at most every
  :attr:`LocateCache.plan_check_s` seconds, in a background thread: activating a
  plan takes effect on the locate endpoints within that time plus the new
  index's build, without a database round trip per request and without making
  any request wait for the rebuild.
- one :class:`CityEntry` per stored city version (``city_info.saved_at``, checked
  every :attr:`LocateCache.city_check_s` seconds): community and subdistrict
  names and polygons, and the gazetteer (built on the first geocode).

Requests on the hot path (a single point, cache warm, key cached) touch no
database, no worker thread and no pandas: :meth:`LocateCache.snapshot` only
reads memory. Builds happen under a lock so that concurrent first requests
build once.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request

import shapely

from spatialgrid.db import repository
from spatialgrid.db.models import CityInfo
from spatialgrid.errors import NotFoundError
from spatialgrid.locate import GridIndex

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    SessionFactory = sessionmaker[Session]

    from spatialgrid.geocode import Gazetteer

logger = logging.getLogger(__name__)

#: Seconds between two look-ups of the plan in force.
PLAN_CHECK_SECONDS = 2.0
#: Seconds between two refreshes of a plan's worker assignments and names.
WORKERS_CHECK_SECONDS = 60.0
#: Seconds between two checks of the stored city's version.
CITY_CHECK_SECONDS = 30.0
#: Largest ``tolerance_m`` the cached indexes answer.
MAX_TOLERANCE_M = 50.0
#: Plans kept in memory at once (the active one and a few older ones for ``at=``).
MAX_PLANS = 4

_app_lock = threading.Lock()


@dataclass
class PlanEntry:
    """One plan's index and who is responsible for each of its grids."""

    plan_id: int
    index: GridIndex
    #: Per grid position: the worker as ``{"id", "name", "employee_no"}`` or None.
    workers: list[dict[str, Any] | None]
    workers_at: float
    built_s: float

    def worker(self, position: int) -> dict[str, Any] | None:
        """The worker of the grid at ``position`` (None when unassigned or -1)."""
        return self.workers[position] if position >= 0 else None


@dataclass
class CityEntry:
    """Names and polygons of communities and subdistricts of one city version."""

    version: str
    community_names: dict[str, str]
    subdistrict_names: dict[str, str]
    community_codes: np.ndarray
    community_geoms: np.ndarray
    subdistrict_codes: np.ndarray
    subdistrict_geoms: np.ndarray
    community_tree: shapely.STRtree
    subdistrict_tree: shapely.STRtree
    communities: Any  # GeoDataFrame, for the gazetteer
    gazetteer: Gazetteer | None = None
    address_position: dict[str, int] = field(default_factory=dict)

    def areas_at(self, lon: float, lat: float) -> list[dict[str, Any]]:
        """Communities and subdistricts containing a CGCS2000 point (boundary in)."""
        point = shapely.Point(lon, lat)
        out: list[dict[str, Any]] = []
        for kind, tree, codes, names in (
            (
                "community",
                self.community_tree,
                self.community_codes,
                self.community_names,
            ),
            (
                "subdistrict",
                self.subdistrict_tree,
                self.subdistrict_codes,
                self.subdistrict_names,
            ),
        ):
            for i in sorted(tree.query(point, predicate="intersects").tolist()):
                code = str(codes[i])
                out.append({"type": kind, "code": code, "name": names.get(code)})
        return out


def _freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's reach.

    The indexes, the city, the gazetteer and everything imported so far live as
    long as the process. Without this, each full (generation 2) collection walks
    them all — 150 ms measured with a 600-grid plan — and stalls every request
    in flight. Frozen objects are still freed by reference counting; only
    reference cycles among them stay until exit (see :func:`gc.freeze`).
    """
    gc.freeze()


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return None if text in ("", "nan", "None", "<NA>") else text


class LocateCache:
    """Lazily built, invalidated-by-version indexes for the locate endpoints.

    Parameters
    ----------
    plan_check_s, workers_check_s, city_check_s
        Refresh intervals (seconds) of the plan in force, of worker assignments
        and of the city version. 0 checks on every request.
    max_plans
        Plan indexes kept at once.
    max_tolerance_m
        ``max_tolerance_m`` of the indexes built.

    Notes
    -----
    :meth:`snapshot` never does I/O: it returns what is cached and, when a check
    is due, starts one background refresh (a thread) that re-reads the plan in
    force, rebuilds what changed and swaps it in. Requests keep being answered
    from the previous state meanwhile, so a plan change costs no request a
    rebuild. Only a cold cache (first request) or an ``at=`` lookup waits for the
    database: :meth:`load`, to be run in a worker thread.
    """

    def __init__(
        self,
        *,
        plan_check_s: float = PLAN_CHECK_SECONDS,
        workers_check_s: float = WORKERS_CHECK_SECONDS,
        city_check_s: float = CITY_CHECK_SECONDS,
        max_plans: int = MAX_PLANS,
        max_tolerance_m: float = MAX_TOLERANCE_M,
    ) -> None:
        self.plan_check_s = plan_check_s
        self.workers_check_s = workers_check_s
        self.city_check_s = city_check_s
        self.max_plans = max(1, int(max_plans))
        self.max_tolerance_m = max_tolerance_m
        self._lock = threading.RLock()
        self._plans: OrderedDict[int, PlanEntry] = OrderedDict()
        self._active: tuple[int, float] | None = None
        self._city: CityEntry | None = None
        self._city_checked = -math.inf
        self._refreshing = False
        #: Plan index builds done by this process (observability and tests).
        self.builds = 0

    def clear(self) -> None:
        """Forget everything; the next request rebuilds what it needs."""
        with self._lock:
            self._plans.clear()
            self._active = None
            self._city = None
            self._city_checked = -math.inf

    # ---------------------------------------------------------- no I/O path
    def snapshot(
        self, session_factory: SessionFactory
    ) -> tuple[PlanEntry, CityEntry | None] | None:
        """The plan in force and the city as cached, or None when cold (no I/O).

        Starts a background refresh when a check is due.
        """
        state = self._active
        if state is None:
            return None
        entry = self._plans.get(state[0])
        if entry is None:
            return None
        now = time.monotonic()
        if (
            now - state[1] >= self.plan_check_s
            or now - entry.workers_at >= self.workers_check_s
            or now - self._city_checked >= self.city_check_s
        ):
            self._schedule_refresh(session_factory)
        return entry, self._city

    def _schedule_refresh(self, session_factory: SessionFactory) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        thread = threading.Thread(
            target=self._refresh_in_background,
            args=(session_factory,),
            name="locate-cache-refresh",
            daemon=True,
        )
        thread.start()

    def _refresh_in_background(self, session_factory: SessionFactory) -> None:
        try:
            self.refresh(session_factory)
        except NotFoundError:
            logger.info("locate cache: no plan in force any more")
            self._active = None
        except Exception:  # keep serving the cached state; retry after the interval
            logger.warning("locate cache refresh failed", exc_info=True)
            state = self._active
            if state is not None:
                self._active = (state[0], time.monotonic())
        finally:
            self._refreshing = False

    # ------------------------------------------------------------ I/O path
    def refresh(
        self, session_factory: SessionFactory
    ) -> tuple[PlanEntry, CityEntry | None]:
        """Re-read the plan in force (building its index if new) and the city.

        Raises
        ------
        NotFoundError
            No plan is in force.
        """
        with session_factory.begin() as session:
            pid = repository.active_plan_id(session=session)
            entry = self._plan_entry(pid, session)
            city = self._city_entry(session)
        previous = self._active
        if previous is not None and previous[0] != pid:
            logger.info("locate cache: plan in force %d -> %d", previous[0], pid)
        self._active = (pid, time.monotonic())
        return entry, city

    def load(
        self, session_factory: SessionFactory, *, at: datetime | None = None
    ) -> tuple[PlanEntry, CityEntry | None]:
        """The plan in force now (cached, else read) or at ``at`` (looked up).

        Blocking: run it in a worker thread.

        Raises
        ------
        NotFoundError
            No plan was in force then.
        """
        if at is None:
            snap = self.snapshot(session_factory)
            return snap if snap is not None else self.refresh(session_factory)
        with session_factory.begin() as session:
            pid = repository.active_plan_id(session=session, at=at)
            entry = self._plan_entry(pid, session)
            city = self._city if self._city is not None else self._city_entry(session)
        return entry, city

    def _plan_entry(self, plan_id: int, session: Session) -> PlanEntry:
        with self._lock:
            entry = self._plans.get(plan_id)
            if entry is None:
                entry = self._build_plan(plan_id, session)
                self._plans[plan_id] = entry
                while len(self._plans) > self.max_plans:
                    self._plans.popitem(last=False)
            elif time.monotonic() - entry.workers_at >= self.workers_check_s:
                grids = repository.load_plan_grids(plan_id, session=session)
                entry.workers = self._workers(entry.index, grids, session)
                entry.workers_at = time.monotonic()
            self._plans.move_to_end(plan_id)
        return entry

    def _build_plan(self, plan_id: int, session: Session) -> PlanEntry:
        start = time.perf_counter()
        grids = repository.load_plan_grids(plan_id, session=session)
        if len(grids) == 0:
            msg = f"grid plan {plan_id} has no grids to locate points in"
            raise NotFoundError(msg)
        index = GridIndex(
            grids[["grid_code", "community_code", "geometry"]],
            attributes=(),
            max_tolerance_m=self.max_tolerance_m,
        )
        workers = self._workers(index, grids, session)
        built = time.perf_counter() - start
        self.builds += 1
        _freeze_heap()
        logger.info(
            "locate cache: plan %d indexed (%d grids) in %.2f s",
            plan_id,
            len(grids),
            built,
        )
        return PlanEntry(
            plan_id=plan_id,
            index=index,
            workers=workers,
            workers_at=time.monotonic(),
            built_s=built,
        )

    @staticmethod
    def _workers(
        index: GridIndex, grids: Any, session: Session
    ) -> list[dict[str, Any] | None]:
        """Per grid position of ``index``: its worker (id, name, employee_no)."""
        staff = repository.list_workers(session=session)
        by_id = {
            int(row.id): {
                "id": int(row.id),
                "name": _text(row.name),
                "employee_no": _text(row.employee_no),
            }
            for row in staff.itertuples(index=False)
        }
        ids = dict(
            zip(
                grids["grid_code"].astype(str),
                grids["worker_id"].tolist()
                if "worker_id" in grids.columns
                else [None] * len(grids),
                strict=True,
            )
        )
        out: list[dict[str, Any] | None] = []
        for code in index.codes:
            wid = ids.get(str(code))
            out.append(
                None if wid is None or _text(wid) is None else by_id.get(int(wid))
            )
        return out

    # ------------------------------------------------------------------- city
    def _city_entry(self, session: Session) -> CityEntry | None:
        """The city of the stored version (rebuilt when it changed); None if none."""
        now = time.monotonic()
        entry = self._city
        if entry is not None and now - self._city_checked < self.city_check_s:
            return entry
        info = session.get(CityInfo, 1)
        if info is None:
            self._city = None
            self._city_checked = now
            return None
        version = info.saved_at.isoformat() if info.saved_at else "unknown"
        with self._lock:
            entry = self._city
            if entry is None or entry.version != version:
                entry = self._build_city(version, session)
                self._city = entry
                _freeze_heap()
            self._city_checked = now
        return entry

    @staticmethod
    def _build_city(version: str, session: Session) -> CityEntry:
        communities = repository.load_layer("communities", session=session)
        subdistricts = repository.load_layer("subdistricts", session=session)
        c_geoms = np.asarray(communities.geometry.values, dtype=object)
        s_geoms = np.asarray(subdistricts.geometry.values, dtype=object)
        shapely.prepare(c_geoms)
        shapely.prepare(s_geoms)
        c_codes = communities["community_code"].astype(str).to_numpy(object)
        s_codes = subdistricts["subdistrict_code"].astype(str).to_numpy(object)
        return CityEntry(
            version=version,
            community_names={
                str(c): str(n)
                for c, n in zip(c_codes, communities["name"], strict=True)
                if _text(n)
            },
            subdistrict_names={
                str(c): str(n)
                for c, n in zip(s_codes, subdistricts["name"], strict=True)
                if _text(n)
            },
            community_codes=c_codes,
            community_geoms=c_geoms,
            subdistrict_codes=s_codes,
            subdistrict_geoms=s_geoms,
            community_tree=shapely.STRtree(c_geoms),
            subdistrict_tree=shapely.STRtree(s_geoms),
            communities=communities[["community_code", "name", "geometry"]],
        )

    def city(self, session_factory: SessionFactory) -> CityEntry | None:
        """The stored city's names and polygons (cached); None when none is stored."""
        entry = self._city
        if entry is not None and time.monotonic() - self._city_checked < (
            self.city_check_s
        ):
            return entry
        with session_factory.begin() as session:
            return self._city_entry(session)

    def gazetteer(self, session_factory: SessionFactory) -> tuple[CityEntry, Gazetteer]:
        """The city entry and its door-plate gazetteer (built on first use).

        Blocking: run it in a worker thread.

        Raises
        ------
        NotFoundError
            No city is stored, or it has no door plates.
        """
        from spatialgrid.geocode import Gazetteer

        entry = self.city(session_factory)
        if entry is None:
            msg = (
                "no city is stored in the database; import one first "
                "(`spatialgrid import osm FILE` or `spatialgrid demo`)"
            )
            raise NotFoundError(msg)
        gaz = entry.gazetteer
        if gaz is None:
            with self._lock:
                gaz = entry.gazetteer
                if gaz is None:
                    start = time.perf_counter()
                    with session_factory.begin() as session:
                        addresses = repository.load_layer("addresses", session=session)
                    if len(addresses) == 0:
                        msg = (
                            "the stored city has no door plates (addresses layer); "
                            "import addresses to geocode"
                        )
                        raise NotFoundError(msg)
                    gaz = Gazetteer(addresses, communities=entry.communities)
                    entry.address_position = {str(a): i for i, a in enumerate(gaz.ids)}
                    entry.gazetteer = gaz
                    _freeze_heap()
                    logger.info(
                        "locate cache: gazetteer of %d plates built in %.2f s",
                        len(gaz),
                        time.perf_counter() - start,
                    )
        return entry, gaz


def locate_cache_of(app: Any) -> LocateCache:
    """The :class:`LocateCache` of ``app`` (created on first use, one per process)."""
    state = app.state
    cache: LocateCache | None = getattr(state, "locate_cache", None)
    if cache is None:
        with _app_lock:
            cache = getattr(state, "locate_cache", None)
            if cache is None:
                cache = LocateCache()
                state.locate_cache = cache
    return cache


async def get_locate_cache(request: Request) -> LocateCache:
    """FastAPI dependency: the app's :class:`LocateCache`."""
    return locate_cache_of(request.app)
