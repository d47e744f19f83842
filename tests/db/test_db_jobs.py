"""Job rows: queued -> running -> succeeded | failed, progress, recovery (real PostGIS)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from spatialgrid.db import jobs, repository
from spatialgrid.db.engine import current_revision, upgrade_schema
from spatialgrid.errors import ConflictError, InputError, NotFoundError

pytestmark = pytest.mark.db


def test_job_lifecycle_success(db_session):
    created = jobs.create_job(
        session=db_session,
        kind="partition",
        parameters={"min_households": np.int64(400), "communities": None},
        runner="host|1|abc",
    )
    assert created.status == "queued"
    assert created.parameters == {"min_households": 400, "communities": None}
    assert created.progress_done == 0
    assert created.progress_total is None
    assert created.started_at is None
    assert created.finished_at is None
    assert not created.finished

    running = jobs.start_job(created.id, session=db_session, runner="host|2|def")
    assert running.status == "running"
    assert running.started_at is not None
    assert running.runner == "host|2|def"

    step = jobs.update_job_progress(
        created.id, session=db_session, stage="partition", done=3, total=10
    )
    assert (step.progress_stage, step.progress_done, step.progress_total) == (
        "partition",
        3,
        10,
    )
    assert step.updated_at >= running.updated_at

    done = jobs.finish_job(
        created.id, session=db_session, result={"plan_id": 7, "share": np.float64(1)}
    )
    assert done.status == "succeeded"
    assert done.finished
    assert done.result == {"plan_id": 7, "share": 1.0}
    assert done.finished_at is not None
    assert done.finished_at >= done.started_at
    again = jobs.get_job(created.id, session=db_session)
    assert again == done


def test_transitions_are_guarded(db_session):
    job = jobs.create_job(session=db_session, kind="partition", parameters={})
    with pytest.raises(ConflictError, match=r"job \d+ is queued; it can be finished"):
        jobs.finish_job(job.id, session=db_session, result={})
    with pytest.raises(ConflictError, match="is queued; it can be updated"):
        jobs.update_job_progress(job.id, session=db_session, stage="x", done=1, total=2)
    jobs.start_job(job.id, session=db_session)
    with pytest.raises(ConflictError, match="is running; it can be started only"):
        jobs.start_job(job.id, session=db_session)
    failed = jobs.fail_job(job.id, session=db_session, error="  boom: fix it  ")
    assert failed.status == "failed"
    assert failed.error == "boom: fix it"
    assert failed.finished_at is not None
    with pytest.raises(ConflictError, match="is failed; it can be failed only when"):
        jobs.fail_job(job.id, session=db_session, error="twice")


def test_queued_job_can_fail_and_long_errors_are_cut(db_session):
    job = jobs.create_job(session=db_session, kind="partition", parameters={})
    failed = jobs.fail_job(job.id, session=db_session, error="x" * 10_000)
    assert failed.status == "failed"
    assert len(failed.error) == jobs.MAX_ERROR_CHARS
    assert failed.error.endswith("…")
    empty = jobs.create_job(session=db_session, kind="partition", parameters={})
    assert (
        "without a message"
        in jobs.fail_job(empty.id, session=db_session, error="").error
    )


@pytest.mark.parametrize("job_id", [0, -1, 2**63, 10**30, 987_654_321])
def test_unknown_ids_are_not_found(db_session, job_id):
    with pytest.raises(NotFoundError, match=f"job {job_id} does not exist"):
        jobs.get_job(job_id, session=db_session)
    with pytest.raises(NotFoundError, match="does not exist"):
        jobs.start_job(job_id, session=db_session)


def test_bad_values_are_input_errors(db_session):
    with pytest.raises(InputError, match="kind must name"):
        jobs.create_job(session=db_session, kind=" ", parameters={})
    job = jobs.create_job(session=db_session, kind="partition", parameters={})
    jobs.start_job(job.id, session=db_session)
    with pytest.raises(InputError, match="non-negative"):
        jobs.update_job_progress(
            job.id, session=db_session, stage="s", done=-1, total=3
        )
    with pytest.raises(InputError, match="status 'done' is not one of"):
        jobs.list_jobs(session=db_session, status="done")
    with pytest.raises(InputError, match="limit must be at least 1"):
        jobs.list_jobs(session=db_session, limit=0)


def test_list_and_unfinished(db_session):
    a = jobs.create_job(session=db_session, kind="partition", parameters={"n": 1})
    b = jobs.create_job(session=db_session, kind="partition", parameters={"n": 2})
    c = jobs.create_job(session=db_session, kind="other", parameters={})
    jobs.start_job(b.id, session=db_session)
    jobs.start_job(c.id, session=db_session)
    jobs.finish_job(c.id, session=db_session, result={})
    listed = jobs.list_jobs(session=db_session, kind="partition")
    assert [j.id for j in listed] == [b.id, a.id]  # newest first
    assert [j.id for j in jobs.list_jobs(session=db_session, status="running")] == [
        b.id
    ]
    assert [j.id for j in jobs.list_jobs(session=db_session, limit=1)] == [c.id]
    unfinished = jobs.unfinished_jobs(session=db_session)
    assert [(j.id, j.status) for j in unfinished] == [
        (a.id, "queued"),
        (b.id, "running"),
    ]


def test_created_by_references_an_api_key(db_session):
    repository.create_api_key(session=db_session, role="planner", name="p")
    key = repository.list_api_keys(session=db_session)[-1]
    job = jobs.create_job(
        session=db_session, kind="partition", parameters={}, created_by=key.id
    )
    assert jobs.get_job(job.id, session=db_session).created_by == key.id
    with pytest.raises(IntegrityError), db_session.begin_nested():
        db_session.execute(
            text("INSERT INTO jobs (kind, created_by) VALUES ('x', 99999999)")
        )


def test_status_check_constraint(db_session):
    with (
        pytest.raises(IntegrityError, match="ck_jobs_status"),
        db_session.begin_nested(),
    ):
        db_session.execute(
            text("INSERT INTO jobs (kind, status) VALUES ('x', 'paused')")
        )


def _downgrade(engine, revision):
    from alembic import command

    from spatialgrid.db.engine import alembic_config

    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_migration_0002_matches_the_model_and_downgrades(scratch_db_url):
    """The jobs table of 0002 is what models.Job declares; 0002 reverts cleanly."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from spatialgrid.db.models import Base

    engine = create_engine(scratch_db_url)
    try:
        upgrade_schema(engine, revision="0002")
        assert current_revision(engine) == "0002"
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        jobs_diff = [d for d in diff if "jobs" in repr(d)]
        assert jobs_diff == []
        _downgrade(engine, "0001")
        assert "jobs" not in inspect(engine).get_table_names()
        upgrade_schema(engine, revision="0002")
        assert "jobs" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
