"""Background jobs of the API process: partition runs in a bounded thread pool.

A partition of a whole city takes seconds to tens of seconds, too long for a
request. ``POST /v1/partition-jobs`` records a ``queued`` job row
(:mod:`spatialgrid.db.jobs`) and hands it to the :class:`JobRunner` of the
process; a pool thread claims it, loads the stored city, runs
:func:`spatialgrid.partition.partition_blocks` (writing its progress to the row,
at most once per ``progress_interval_s``), stores the result as a ``draft`` plan
(:func:`spatialgrid.db.repository.create_plan`) and records the plan id and
metrics, in the same transaction as the plan, so a job never claims a plan that
was not saved. Failures are recorded with the error's message; clients poll
``GET /v1/partition-jobs/{id}``.

The pool is bounded twice: ``max_workers`` threads (partitioning is CPU-bound;
more threads than cores only slow every job down) and ``max_pending`` jobs queued
or running per process; beyond that :class:`JobQueueFullError` asks the client to
retry later instead of piling work up.

Jobs live only as long as their process. Each runner names itself
``host|pid|token`` in the rows it owns; at start-up
(:meth:`JobRunner.recover`) it marks as failed the unfinished jobs whose process
is gone: same host and the pid is dead or reused by a newer process (a new token),
or another host whose heartbeat (``updated_at``) is older than ``stale_after_s``.
Jobs of sibling worker processes that are alive are left alone.

The runner is started and stopped by :func:`jobs_lifespan`, which the plans
router declares as its lifespan (FastAPI merges router lifespans into the app's,
after the app's own lifespan has opened the engine).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from sqlalchemy.orm import Session, sessionmaker

from spatialgrid.crs import working_crs
from spatialgrid.db import jobs as job_repo
from spatialgrid.db import repository
from spatialgrid.errors import ConflictError, SpatialgridError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy import Engine

    import geopandas as gpd

    from spatialgrid.db.jobs import JobInfo

__all__ = [
    "PARTITION_JOB",
    "JobQueueFullError",
    "JobRunner",
    "jobs_lifespan",
    "run_partition_job",
]

log = logging.getLogger(__name__)

#: ``kind`` of partition jobs.
PARTITION_JOB = "partition"
#: Threads per process running jobs.
MAX_WORKERS = 1
#: Jobs queued or running per process before new ones are refused.
MAX_PENDING = 8
#: Least time between two progress writes of one job.
PROGRESS_INTERVAL_S = 1.0
#: Jobs of another host without a heartbeat for this long are taken as dead.
STALE_AFTER_S = 3600.0


class JobQueueFullError(RuntimeError):
    """The process already has as many jobs as it accepts; retry later."""


def _now() -> datetime:
    return datetime.now(UTC)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _parse_runner(runner: str | None) -> tuple[str, int, str] | None:
    parts = (runner or "").split("|")
    if len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[1]), parts[2]
    except ValueError:
        return None


class _Progress:
    """A ``ProgressCallback`` writing a job's progress, throttled.

    A write failure (database briefly gone) is logged and never aborts the job.
    """

    def __init__(
        self, job_id: int, factory: Callable[[], Session], interval_s: float
    ) -> None:
        self.job_id = job_id
        self.factory = factory
        self.interval_s = interval_s
        self._last = -float("inf")
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if stage == self._stage and not final and now - self._last < self.interval_s:
            return
        self._stage = stage
        self._last = now
        try:
            with self.factory() as session, session.begin():
                job_repo.update_job_progress(
                    self.job_id, session=session, stage=stage, done=done, total=total
                )
        except Exception:
            log.warning(
                "could not record progress of job %d", self.job_id, exc_info=True
            )


def _load_partition_inputs(
    session: Session, communities: list[str] | None
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """Stored blocks (of ``communities``), their buildings and internal roads."""
    from spatialgrid.errors import InputError, NotFoundError

    blocks = repository.load_layer("blocks", session=session)
    if len(blocks) == 0:
        msg = (
            "no street blocks are stored; import a city first "
            "(`spatialgrid import osm FILE` or `spatialgrid demo`)"
        )
        raise NotFoundError(msg)
    if communities:
        wanted = set(communities)
        have = set(blocks["community_code"].dropna().astype(str))
        missing = sorted(wanted - have)
        if missing:
            msg = (
                f"communities {missing[:10]} have no stored blocks; list them with "
                "GET /v1/communities"
            )
            raise InputError(msg)
        blocks = blocks[blocks["community_code"].astype(str).isin(wanted)]
    buildings = repository.load_layer("buildings", session=session)
    if len(buildings) and communities:
        # Buildings are matched to blocks by location; those of other blocks only
        # cost time. Keep unlinked ones (block_id unknown) to be safe.
        linked = buildings["block_id"]
        keep = linked.isna() | linked.astype(str).isin(set(blocks["block_id"]))
        buildings = buildings[keep.to_numpy()]
    streets = repository.load_layer("streets", session=session)
    internal = streets[
        streets["internal"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    ]
    # Partition in the projected working CRS, not in the geographic storage CRS:
    # metric work belongs there, and partition_blocks currently fails to union
    # split block parts transformed back to EPSG:4490 (GEOS TopologyException).
    # create_plan stores the grids in EPSG:4490 again.
    crs = working_crs(blocks)
    return (
        blocks.to_crs(crs).reset_index(drop=True),
        buildings.to_crs(crs).reset_index(drop=True) if len(buildings) else None,
        internal.to_crs(crs).reset_index(drop=True) if len(internal) else None,
    )


def run_partition_job(
    job_id: int,
    *,
    session_factory: Callable[[], Session],
    runner: str | None = None,
    progress_interval_s: float = PROGRESS_INTERVAL_S,
) -> JobInfo:
    """Run one queued partition job to its end; never raises for job failures.

    Parameters
    ----------
    job_id
        A ``queued`` job of kind :data:`PARTITION_JOB`; its parameters are
        ``min_households``, ``max_households``, ``code_scheme``, ``seed`` and
        optionally ``communities`` (codes) and ``name`` (of the plan).
    session_factory
        Makes sessions on the database (each step commits on its own).
    runner
        Name of the running process, recorded on the job.
    progress_interval_s
        Least time between two progress writes.

    Returns
    -------
    JobInfo
        The job as it ended: ``succeeded`` with ``result`` = ``plan_id``,
        ``plan_name``, ``grids``, ``metrics`` and ``communities_with_violations``
        (codes of communities whose grids break a rule, see the diagnostics), or
        ``failed`` with ``error``.
    """
    from spatialgrid.partition import partition_blocks

    with session_factory() as session, session.begin():
        job = job_repo.start_job(job_id, session=session, runner=runner)
    progress = _Progress(job_id, session_factory, progress_interval_s)
    params = dict(job.parameters)
    try:
        progress("load city", 0, 1)
        with session_factory() as session, session.begin():
            blocks, buildings, internal = _load_partition_inputs(
                session, params.get("communities")
            )
        progress("load city", 1, 1)
        result = partition_blocks(
            blocks,
            buildings=buildings,
            internal_roads=internal,
            min_households=int(params["min_households"]),
            max_households=int(params["max_households"]),
            code_scheme=str(params["code_scheme"]),
            seed=int(params["seed"]),
            progress=progress,
        )
        progress("save plan", 0, 1)
        diagnostics = result.diagnostics
        violating = (
            sorted(
                diagnostics.loc[diagnostics["violations"] > 0, "community_code"]
                .astype(str)
                .tolist()
            )
            if "violations" in diagnostics.columns
            else []
        )
        name = params.get("name") or f"partition job {job_id}"
        with session_factory() as session, session.begin():
            grids = result.grids.copy()
            # One stored shape for flags, as `spatialgrid partition` stores them:
            # a JSON list of reasons, empty when the grid obeys every rule.
            grids["flags"] = [
                [str(f)] if isinstance(f, str) and f else list(f) if f else []
                for f in grids["flags"]
            ]
            plan_id = repository.create_plan(
                grids,
                result.assignments.reset_index(drop=True),
                session=session,
                name=name,
                parameters={
                    **result.parameters,
                    "communities": params.get("communities"),
                    "job_id": job_id,
                },
                diagnostics=diagnostics,
                metrics=result.metrics,
            )
            job_repo.update_job_progress(
                job_id, session=session, stage="save plan", done=1, total=1
            )
            done = job_repo.finish_job(
                job_id,
                session=session,
                result={
                    "plan_id": plan_id,
                    "plan_name": name,
                    "grids": len(result.grids),
                    "metrics": result.metrics,
                    "communities_with_violations": violating,
                },
            )
        log.info("partition job %d stored plan %d", job_id, plan_id)
        return done
    except Exception as err:
        if isinstance(err, SpatialgridError):
            message = f"{type(err).__name__}: {err}"
            log.warning("partition job %d failed: %s", job_id, message)
        else:  # a bug or a lost database: keep the traceback in the server log
            message = (
                f"internal error ({type(err).__name__}: {err}); the server log has "
                "the details"
            )
            log.exception("partition job %d failed unexpectedly", job_id)
        try:
            with session_factory() as session, session.begin():
                return job_repo.fail_job(job_id, session=session, error=message)
        except Exception:
            log.exception("could not record the failure of job %d", job_id)
            raise err from None


class JobRunner:
    """A bounded thread pool running this process's jobs.

    Parameters
    ----------
    engine
        The service's engine; jobs make their own sessions on it.
    max_workers
        Threads running jobs at once.
    max_pending
        Jobs queued or running at once; :meth:`submit_partition` refuses more.
    progress_interval_s
        Least time between two progress writes of a job.
    stale_after_s
        Heartbeat age after which another host's unfinished job counts as dead.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_workers: int = MAX_WORKERS,
        max_pending: int = MAX_PENDING,
        progress_interval_s: float = PROGRESS_INTERVAL_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        if max_workers < 1 or max_pending < 1:
            msg = (
                f"max_workers={max_workers} and max_pending={max_pending} must be "
                "at least 1"
            )
            raise ValueError(msg)
        self.session_factory: sessionmaker[Session] = sessionmaker(
            engine, expire_on_commit=False
        )
        self.max_pending = max_pending
        self.progress_interval_s = progress_interval_s
        self.stale_after_s = stale_after_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.token = secrets.token_hex(4)
        self.name = f"{self.host}|{self.pid}|{self.token}"
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="spatialgrid-job"
        )
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._closed = False

    # ----------------------------------------------------------------- recovery

    def _orphaned(self, job: JobInfo, now: datetime) -> str | None:
        """Why ``job`` has no live process any more, or None if it may have one."""
        owner = _parse_runner(job.runner)
        if owner is not None:
            host, pid, token = owner
            if host == self.host:
                if pid == self.pid and token != self.token:
                    return "the API process that ran it was restarted"
                if pid != self.pid and not _pid_alive(pid):
                    return "the API process that ran it stopped"
                return None
        if now - job.updated_at > timedelta(seconds=self.stale_after_s):
            return (
                f"no sign of life from its API process for over "
                f"{self.stale_after_s / 60:.0f} minutes"
            )
        return None

    def recover(self) -> list[int]:
        """Mark as failed the unfinished jobs whose process is gone; their ids."""
        failed: list[int] = []
        now = _now()
        with self.session_factory() as session, session.begin():
            for job in job_repo.unfinished_jobs(session=session):
                why = self._orphaned(job, now)
                if why is None:
                    continue
                msg = (
                    f"job {job.id} was {job.status} when {why}; nothing was saved. "
                    "Start it again with POST /v1/partition-jobs"
                )
                job_repo.fail_job(job.id, session=session, error=msg)
                failed.append(job.id)
        if failed:
            log.warning("marked orphaned jobs %s as failed", failed)
        return failed

    # ------------------------------------------------------------------- running

    @property
    def pending(self) -> int:
        """Jobs of this process queued or running."""
        with self._lock:
            return len(self._pending)

    def submit_partition(
        self, parameters: dict[str, Any], *, created_by: int | None = None
    ) -> JobInfo:
        """Record a partition job (committed at once) and queue it; return the row.

        Raises
        ------
        JobQueueFullError
            ``max_pending`` jobs are already queued or running in this process,
            or the runner is shutting down.
        """
        with self._lock:
            if self._closed:
                msg = "the service is shutting down; retry in a moment"
                raise JobQueueFullError(msg)
            if len(self._pending) >= self.max_pending:
                msg = (
                    f"{len(self._pending)} partition jobs are already queued or "
                    "running; retry when one has finished"
                )
                raise JobQueueFullError(msg)
            # Committed before the pool sees the id: the thread must find the row.
            with self.session_factory() as session, session.begin():
                job = job_repo.create_job(
                    session=session,
                    kind=PARTITION_JOB,
                    parameters=parameters,
                    created_by=created_by,
                    runner=self.name,
                )
            self._pending.add(job.id)
        try:
            self._pool.submit(self._run, job.id)
        except RuntimeError as err:  # pool shut down between the check and here
            self._forget(job.id, f"the service stopped before job {job.id} ran")
            msg = "the service is shutting down; retry in a moment"
            raise JobQueueFullError(msg) from err
        return job

    def _run(self, job_id: int) -> None:
        try:
            run_partition_job(
                job_id,
                session_factory=self.session_factory,
                runner=self.name,
                progress_interval_s=self.progress_interval_s,
            )
        except Exception:
            log.exception("job %d could not be run", job_id)
        finally:
            with self._lock:
                self._pending.discard(job_id)

    def _forget(self, job_id: int, why: str) -> None:
        with self._lock:
            self._pending.discard(job_id)
        try:
            with self.session_factory() as session, session.begin():
                job_repo.fail_job(job_id, session=session, error=why)
        except Exception:
            log.exception("could not mark job %d as failed", job_id)

    def shutdown(self, *, wait: bool = True) -> None:
        """Refuse new jobs, fail the queued ones, let running ones finish (``wait``)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Jobs whose futures were cancelled never started: they stay queued in
        # the database unless failed here.
        with self._lock:
            queued = sorted(self._pending)
        for job_id in queued:
            try:
                with self.session_factory() as session, session.begin():
                    job_repo.fail_job(
                        job_id,
                        session=session,
                        error=(
                            f"the service stopped before job {job_id} started; "
                            "start it again with POST /v1/partition-jobs"
                        ),
                        statuses=("queued",),
                    )
            except ConflictError:
                pass  # a thread claimed it first: it runs to its end below
            except Exception:
                log.exception("could not mark job %d as failed", job_id)
        if wait:
            self._pool.shutdown(wait=True)


@asynccontextmanager
async def jobs_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the app's :class:`JobRunner` (after recovery); stop it at shutdown.

    Needs ``app.state.engine`` (opened by the app's own lifespan, which runs
    first). The runner is ``app.state.job_runner``.
    """
    engine = getattr(app.state, "engine", None)
    if engine is None:
        msg = "jobs_lifespan needs app.state.engine; create the app with create_app()"
        raise RuntimeError(msg)
    runner = JobRunner(engine)
    await to_thread.run_sync(runner.recover)
    app.state.job_runner = runner
    try:
        yield
    finally:
        await to_thread.run_sync(runner.shutdown)
