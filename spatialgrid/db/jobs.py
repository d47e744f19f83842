"""Background job rows: create, claim, report progress, finish, fail, recover.

A job (:class:`spatialgrid.db.models.Job`) is a long piece of work started by an
API request and run in a thread of the API process (``api/jobs.py``); clients
poll its row. Its life: ``queued`` → ``running`` → ``succeeded`` | ``failed``.
Transitions are single ``UPDATE ... WHERE status = ...`` statements, so two
processes can never both claim or finish the same job.

Like :mod:`spatialgrid.db.repository`, every function takes the ``session``
keyword-only and never commits: the caller owns the transaction. A job runner
commits each call on its own (short transactions), so that progress is visible
to the clients polling while the job still runs.

Raises, throughout: :class:`~spatialgrid.errors.NotFoundError` for a job id that
does not exist, :class:`~spatialgrid.errors.ConflictError` for a transition the
job's current status does not allow, :class:`~spatialgrid.errors.InputError` for
values that do not fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from spatialgrid.db.models import JOB_STATUSES, Job
from spatialgrid.db.repository import _jsonable
from spatialgrid.errors import ConflictError, InputError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

__all__ = [
    "JOB_STATUSES",
    "UNFINISHED_STATUSES",
    "JobInfo",
    "create_job",
    "fail_job",
    "finish_job",
    "get_job",
    "list_jobs",
    "start_job",
    "unfinished_jobs",
    "update_job_progress",
]

log = logging.getLogger(__name__)

#: Statuses of jobs that have not ended yet.
UNFINISHED_STATUSES: tuple[str, ...] = ("queued", "running")
#: Longest error message kept (a traceback belongs in the server log, not here).
MAX_ERROR_CHARS = 4000
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class JobInfo:
    """One job as stored (see :class:`spatialgrid.db.models.Job`)."""

    id: int
    kind: str
    status: str
    progress_stage: str | None
    progress_done: int
    progress_total: int | None
    parameters: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    runner: str | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @property
    def finished(self) -> bool:
        """True once the job succeeded or failed."""
        return self.status not in UNFINISHED_STATUSES


def _info(row: Job) -> JobInfo:
    return JobInfo(
        id=int(row.id),
        kind=row.kind,
        status=row.status,
        progress_stage=row.progress_stage,
        progress_done=int(row.progress_done or 0),
        progress_total=None if row.progress_total is None else int(row.progress_total),
        parameters=dict(row.parameters or {}),
        result=None if row.result is None else dict(row.result),
        error=row.error,
        runner=row.runner,
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at,
    )


def _not_found(job_id: int) -> NotFoundError:
    msg = f"job {job_id} does not exist; job ids come from POST /v1/partition-jobs"
    return NotFoundError(msg)


def _check_id(job_id: int) -> int:
    job_id = int(job_id)
    if not 1 <= job_id <= _MAX_ID:  # would overflow bigint: cannot exist
        raise _not_found(job_id)
    return job_id


def _transition(
    session: Session,
    job_id: int,
    *,
    allowed: Sequence[str],
    action: str,
    values: dict[str, Any],
) -> JobInfo:
    """Apply ``values`` if the job is in one of ``allowed``; return the new row."""
    job_id = _check_id(job_id)
    now = datetime.now(UTC)
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(tuple(allowed)))
        .values(updated_at=now, **values)
        .returning(Job)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if row is None:
        current = session.execute(
            select(Job.status).where(Job.id == job_id)
        ).scalar_one_or_none()
        if current is None:
            raise _not_found(job_id)
        msg = (
            f"job {job_id} is {current}; it can be {action} only when "
            f"{' or '.join(allowed)}"
        )
        raise ConflictError(msg)
    session.refresh(row)
    return _info(row)


def create_job(
    *,
    session: Session,
    kind: str,
    parameters: dict[str, Any],
    created_by: int | None = None,
    runner: str | None = None,
) -> JobInfo:
    """Record a new ``queued`` job; return it.

    Parameters
    ----------
    session
        The caller's session (commit it before a runner looks for the job).
    kind
        What the job does, e.g. ``"partition"``.
    parameters
        Its arguments (JSON-serialisable; numpy values are converted).
    created_by
        Id of the API key that asked for it.
    runner
        The process that will run it (see :class:`spatialgrid.db.models.Job`).

    Raises
    ------
    InputError
        ``kind`` is empty.
    """
    if not kind or not kind.strip():
        msg = "kind must name what the job does, e.g. 'partition'"
        raise InputError(msg)
    job = Job(
        kind=kind.strip(),
        status="queued",
        parameters=_jsonable(dict(parameters)),
        created_by=created_by,
        runner=runner,
    )
    session.add(job)
    session.flush()
    session.refresh(job)
    log.info("queued %s job %d", job.kind, job.id)
    return _info(job)


def get_job(job_id: int, *, session: Session) -> JobInfo:
    """One job; :class:`NotFoundError` when there is none with that id."""
    job_id = _check_id(job_id)
    row = session.get(Job, job_id, populate_existing=True)
    if row is None:
        raise _not_found(job_id)
    return _info(row)


def list_jobs(
    *,
    session: Session,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[JobInfo]:
    """The newest jobs first, optionally of one ``kind`` and ``status``.

    Raises
    ------
    InputError
        ``status`` is not one of :data:`JOB_STATUSES` or ``limit`` is below 1.
    """
    if status is not None and status not in JOB_STATUSES:
        msg = f"status {status!r} is not one of {list(JOB_STATUSES)}"
        raise InputError(msg)
    if int(limit) < 1:
        msg = f"limit must be at least 1, got {limit}"
        raise InputError(msg)
    stmt = select(Job).order_by(Job.id.desc()).limit(int(limit))
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return [_info(r) for r in session.execute(stmt).scalars().all()]


def start_job(job_id: int, *, session: Session, runner: str | None = None) -> JobInfo:
    """Claim a ``queued`` job: it becomes ``running`` with ``started_at`` = now.

    Raises
    ------
    NotFoundError
        No such job.
    ConflictError
        The job is not queued (already claimed, finished or failed).
    """
    values: dict[str, Any] = {"status": "running", "started_at": func.now()}
    if runner is not None:
        values["runner"] = runner
    return _transition(
        session, job_id, allowed=("queued",), action="started", values=values
    )


def update_job_progress(
    job_id: int,
    *,
    session: Session,
    stage: str,
    done: int,
    total: int | None,
) -> JobInfo:
    """Record how far a ``running`` job got (also its heartbeat).

    Raises
    ------
    InputError
        ``done`` or ``total`` is negative.
    NotFoundError, ConflictError
        No such job, or it is not running.
    """
    if int(done) < 0 or (total is not None and int(total) < 0):
        msg = f"progress must be non-negative, got done={done}, total={total}"
        raise InputError(msg)
    return _transition(
        session,
        job_id,
        allowed=("running",),
        action="updated",
        values={
            "progress_stage": stage,
            "progress_done": int(done),
            "progress_total": None if total is None else int(total),
        },
    )


def finish_job(job_id: int, *, session: Session, result: dict[str, Any]) -> JobInfo:
    """Mark a ``running`` job ``succeeded`` with its ``result`` (JSON).

    Raises
    ------
    NotFoundError, ConflictError
        No such job, or it is not running.
    """
    return _transition(
        session,
        job_id,
        allowed=("running",),
        action="finished",
        values={
            "status": "succeeded",
            "result": _jsonable(dict(result)),
            "error": None,
            "finished_at": func.now(),
        },
    )


def fail_job(
    job_id: int,
    *,
    session: Session,
    error: str,
    statuses: Sequence[str] = UNFINISHED_STATUSES,
) -> JobInfo:
    """Mark an unfinished job ``failed`` with ``error`` (what went wrong, the fix).

    Parameters
    ----------
    job_id
        The job.
    session
        The caller's session.
    error
        The message; cut to :data:`MAX_ERROR_CHARS` characters.
    statuses
        Fail it only from these statuses (e.g. ``("queued",)`` to drop a job
        that never started without touching one a thread has just claimed).

    Raises
    ------
    NotFoundError, ConflictError
        No such job, or it is not in one of ``statuses``.
    """
    text_ = (error or "").strip() or "the job failed without a message"
    if len(text_) > MAX_ERROR_CHARS:
        text_ = text_[: MAX_ERROR_CHARS - 1] + "…"
    return _transition(
        session,
        job_id,
        allowed=tuple(statuses),
        action="failed",
        values={"status": "failed", "error": text_, "finished_at": func.now()},
    )


def unfinished_jobs(*, session: Session) -> list[JobInfo]:
    """Every ``queued`` or ``running`` job, oldest first (for recovery at start-up)."""
    rows = (
        session.execute(
            select(Job).where(Job.status.in_(UNFINISHED_STATUSES)).order_by(Job.id)
        )
        .scalars()
        .all()
    )
    return [_info(r) for r in rows]
