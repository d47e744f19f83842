"""Partition jobs and grid plans through the API, end to end on real PostGIS.

The module gets a database of its own (``module_db_url``): background jobs
commit from their own threads and connections, which the rolled-back
transaction of ``api_env`` cannot serve. It holds the generated sample city of
two communities; one partition job runs once and later tests read its plan.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

import shapely

from api.routes.plans import GridCollection
from spatialgrid.crs import STORAGE_EPSG

pytestmark = pytest.mark.db

POLL_TIMEOUT_S = 120.0


@dataclass
class Env:
    client: object
    app: object
    keys: dict[str, str]
    city: object
    engine: object

    def headers(self, role: str = "planner") -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}

    def get(self, path: str, role: str = "planner", **params):
        return self.client.get(path, params=params, headers=self.headers(role))

    def post(self, path: str, role: str = "planner", json=None):
        return self.client.post(path, json=json, headers=self.headers(role))


@pytest.fixture(scope="module")
def env(module_db_url):
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app
    from spatialgrid.db import repository
    from spatialgrid.db.engine import make_engine, session_scope
    from spatialgrid.roles import ROLES
    from spatialgrid.sample import generate_city

    city = generate_city(seed=0, n_communities=2)
    engine = make_engine(module_db_url)
    with session_scope(engine) as session:
        repository.save_city(city, session=session)
        keys = {
            role: repository.create_api_key(session=session, role=role, name=role)
            for role in ROLES
        }
    app = create_app(Settings(database_url=module_db_url, cors_origins=[]))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Env(client=client, app=app, keys=keys, city=city, engine=engine)
    finally:
        engine.dispose()


def _wait(env: Env, location: str) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    seen = set()
    while True:
        resp = env.client.get(location, headers=env.headers("operator"))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        seen.add(body["status"])
        if body["status"] in ("succeeded", "failed"):
            body["_seen"] = seen
            return body
        assert time.monotonic() < deadline, f"job stuck: {body}"
        time.sleep(0.1)


def _run_job(env: Env, payload: dict | None = None) -> dict:
    resp = env.post("/v1/partition-jobs", json=payload)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] in ("queued", "running", "succeeded")
    assert resp.headers["Location"].endswith(f"/v1/partition-jobs/{body['id']}")
    return _wait(env, resp.headers["Location"])


@pytest.fixture(scope="module")
def job(env) -> dict:
    """The partition job of the whole sample city (default 400–500)."""
    return _run_job(env)


@pytest.fixture(scope="module")
def plan_id(job) -> int:
    assert job["status"] == "succeeded", job
    return int(job["result"]["plan_id"])


# ----------------------------------------------------------------- partition jobs


def test_partition_job_succeeds_with_progress_and_result(env, job):
    assert job["status"] == "succeeded", job.get("error")
    assert job["error"] is None
    assert job["progress"]["fraction"] == 1.0
    assert job["progress"] == {
        "stage": "save plan",
        "done": 1,
        "total": 1,
        "fraction": 1.0,
    }
    assert job["started_at"] is not None
    assert job["finished_at"] >= job["started_at"]
    params = job["parameters"]
    assert params["min_households"] == 400
    assert params["max_households"] == 500
    assert params["code_scheme"] == "cjt213"
    result = job["result"]
    assert result["grids"] == result["metrics"]["grids"] > 0
    assert result["metrics"]["households"] == int(env.city.blocks["households"].sum())
    assert isinstance(result["communities_with_violations"], list)
    rels = {link["rel"]: link["href"] for link in job["links"]}
    assert rels["plan"].endswith(f"/v1/plans/{result['plan_id']}")
    assert job["created_by"] is not None


def test_job_is_listed(env, job):
    body = env.get("/v1/partition-jobs", role="operator").json()
    assert job["id"] in [j["id"] for j in body["jobs"]]
    done = env.get("/v1/partition-jobs", status="succeeded").json()
    assert all(j["status"] == "succeeded" for j in done["jobs"])


def test_plan_from_job_is_a_draft_with_metrics(env, job, plan_id):
    resp = env.get(f"/v1/plans/{plan_id}", role="worker")
    assert resp.status_code == 200, resp.text
    plan = resp.json()
    assert plan["status"] == "draft"
    assert plan["effective_from"] is None
    assert plan["n_grids"] == job["result"]["grids"]
    assert plan["households"] == int(env.city.blocks["households"].sum())
    assert plan["parameters"]["job_id"] == job["id"]
    assert plan["metrics"] == job["result"]["metrics"]
    listed = env.get("/v1/plans", status="draft").json()["plans"]
    assert plan_id in [p["id"] for p in listed]


def test_plan_grids_geojson_conserves_households(env, job, plan_id):
    resp = env.get(f"/v1/plans/{plan_id}/grids", role="operator")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/geo+json")
    assert str(STORAGE_EPSG) in resp.headers["Content-Crs"]
    page = GridCollection.model_validate(resp.json())
    body = resp.json()
    n = job["result"]["grids"]
    assert page.numberMatched == page.numberReturned == len(body["features"]) == n
    households = [f["properties"]["households"] for f in body["features"]]
    assert sum(households) == int(env.city.blocks["households"].sum())
    # Grids obey the bounds unless flagged with the reason (infeasible community).
    flags = [f["properties"]["flags"] for f in body["features"]]
    assert all(isinstance(f, list) for f in flags)
    assert all(isinstance(r, str) and r for f in flags for r in f)
    assert all(400 <= h <= 500 for h, f in zip(households, flags, strict=True) if not f)
    assert sum(not f for f in flags) > 0
    codes = [f["id"] for f in body["features"]]
    assert codes == sorted(codes)
    assert len(set(codes)) == n
    assert all(len(c) == 14 and c.isdigit() for c in codes)
    communities = set(env.city.communities["community_code"])
    assert {f["properties"]["community_code"] for f in body["features"]} == communities
    # The grids tile the city: together they have the area of its blocks.
    geoms = [shapely.geometry.shape(f["geometry"]) for f in body["features"]]
    assert {g.geom_type for g in geoms} == {"MultiPolygon"}
    blocks = env.city.blocks.to_crs(STORAGE_EPSG)
    total = float(shapely.area(blocks.geometry.values).sum())
    assert sum(g.area for g in geoms) == pytest.approx(total, 1e-4)


def test_plan_grids_paging_bbox_and_community(env, plan_id):
    path = f"/v1/plans/{plan_id}/grids"
    everything = env.get(path).json()
    n = everything["numberMatched"]
    first = env.get(path, limit=5).json()
    assert first["numberReturned"] == 5
    assert first["numberMatched"] == n
    nxt = next(link for link in first["links"] if link["rel"] == "next")
    query = parse_qs(urlsplit(nxt["href"]).query)
    assert query["offset"] == ["5"]
    second = env.get(path, limit=5, offset=5).json()
    ids = [f["id"] for f in first["features"] + second["features"]]
    assert ids == [f["id"] for f in everything["features"][:10]]

    code = sorted(env.city.communities["community_code"])[0]
    one = env.get(path, community=code).json()
    assert 0 < one["numberMatched"] < n
    assert {f["properties"]["community_code"] for f in one["features"]} == {code}

    # A bbox around one grid's interior point finds that grid (and maybe others).
    feat = everything["features"][0]
    p = shapely.geometry.shape(feat["geometry"]).representative_point()
    box = f"{p.x - 1e-5},{p.y - 1e-5},{p.x + 1e-5},{p.y + 1e-5}"
    hit = env.get(path, bbox=box).json()
    assert [f["id"] for f in hit["features"]] == [feat["id"]]
    far = env.get(path, bbox="10,10,10.001,10.001").json()
    assert far["numberMatched"] == 0
    assert far["features"] == []
    assert env.get(path, bbox="1,2,3").status_code == 422
    assert env.get(path, community="12").status_code == 422


def test_plan_diagnostics_per_community(env, plan_id):
    resp = env.get(f"/v1/plans/{plan_id}/diagnostics", role="worker")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["plan_id"] == plan_id
    rows = {r["community_code"]: r for r in body["communities"]}
    assert set(rows) == set(env.city.communities["community_code"])
    hh = env.city.blocks.groupby("community_code")["households"].sum()
    for code, row in rows.items():
        assert row["households"] == int(hh[code])
        assert row["k_min"] <= row["k"] <= row["k_max"]
        if row["violations"] == 0:
            assert row["status"] in ("ok", "split")
        if row["status"] == "infeasible":
            assert row["reasons"]
    infeasible = env.get(f"/v1/plans/{plan_id}/diagnostics", status="infeasible")
    codes = [r["community_code"] for r in infeasible.json()["communities"]]
    assert codes == [c for c, r in sorted(rows.items()) if r["status"] == "infeasible"]
    job = env.get(f"/v1/plans/{plan_id}").json()["parameters"]["job_id"]
    result = env.get(f"/v1/partition-jobs/{job}").json()["result"]
    violating = [c for c, r in sorted(rows.items()) if r["violations"] > 0]
    assert result["communities_with_violations"] == violating
    flagged = {
        f["properties"]["community_code"]
        for f in env.get(f"/v1/plans/{plan_id}/grids").json()["features"]
        if f["properties"]["flags"]
    }
    assert flagged == set(violating)


def test_failed_job_records_a_clear_error(env):
    from sqlalchemy.orm import sessionmaker

    from api.jobs import run_partition_job
    from spatialgrid.db import jobs as job_repo
    from spatialgrid.db.engine import session_scope

    with session_scope(env.engine) as session:
        bad = job_repo.create_job(
            session=session,
            kind="partition",
            parameters={
                "min_households": 400,
                "max_households": 500,
                "code_scheme": "gb99",
                "seed": 0,
            },
        )
        broken = job_repo.create_job(
            session=session, kind="partition", parameters={"seed": 0}
        )
    factory = sessionmaker(env.engine, expire_on_commit=False)
    ended = run_partition_job(bad.id, session_factory=factory)
    assert ended.status == "failed"
    assert ended.error.startswith("InputError: code_scheme='gb99' is unknown")
    body = env.get(f"/v1/partition-jobs/{bad.id}").json()
    assert body["status"] == "failed"
    assert body["result"] is None
    assert "use 'cjt213'" in body["error"]
    crashed = run_partition_job(broken.id, session_factory=factory)
    assert crashed.status == "failed"
    assert crashed.error.startswith("internal error (KeyError")


def test_job_for_some_communities_and_other_seed(env):
    code = sorted(env.city.communities["community_code"])[1]
    done = _run_job(
        env,
        {
            "communities": [code],
            "seed": 7,
            "code_scheme": "db11",
            "min_households": 350,
            "max_households": 550,
            "name": "east only",
        },
    )
    assert done["status"] == "succeeded", done.get("error")
    plan_id = done["result"]["plan_id"]
    plan = env.get(f"/v1/plans/{plan_id}").json()
    assert plan["name"] == "east only"
    assert plan["parameters"]["communities"] == [code]
    grids = env.get(f"/v1/plans/{plan_id}/grids").json()["features"]
    assert {f["properties"]["community_code"] for f in grids} == {code}
    assert all(len(f["id"]) == 15 for f in grids)
    hh = env.city.blocks.loc[env.city.blocks["community_code"] == code, "households"]
    assert sum(f["properties"]["households"] for f in grids) == int(hh.sum())
    assert all(
        350 <= f["properties"]["households"] <= 550
        for f in grids
        if not f["properties"]["flags"]
    )


# -------------------------------------------------------------------- activation


def test_activate_retires_previous_and_answers_for_old_dates(env, plan_id):
    second = _run_job(env, {"seed": 3})
    assert second["status"] == "succeeded", second.get("error")
    newer = second["result"]["plan_id"]

    resp = env.post(
        f"/v1/plans/{plan_id}/activate", json={"effective_from": "2024-01-01"}
    )
    assert resp.status_code == 200, resp.text
    first = resp.json()
    assert first["status"] == "active"
    assert datetime.fromisoformat(first["effective_from"]) == datetime(
        2024, 1, 1, tzinfo=UTC
    )
    assert first["retired_plan_id"] is None

    resp = env.post(
        f"/v1/plans/{newer}/activate",
        json={"effective_from": "2025-03-01T08:00:00+08:00"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["retired_plan_id"] == plan_id
    old = env.get(f"/v1/plans/{plan_id}").json()
    assert old["status"] == "retired"
    switch = datetime(2025, 3, 1, tzinfo=UTC)
    assert datetime.fromisoformat(old["effective_to"]) == switch
    assert datetime.fromisoformat(resp.json()["effective_from"]) == switch

    def active_at(at):
        return env.get("/v1/plans/active", role="worker", at=at)

    assert active_at("2024-06-01").json()["id"] == plan_id
    assert active_at("2025-02-28T23:59:59Z").json()["id"] == plan_id
    assert active_at("2025-03-01T00:00:00Z").json()["id"] == newer
    assert env.get("/v1/plans/active").json()["id"] == newer
    before = active_at("2023-12-31")
    assert before.status_code == 404
    assert "no grid plan was in force" in before.json()["detail"]
    assert active_at("yesterday").status_code == 422

    # Only drafts can be activated; dates cannot go back before the plan in force.
    again = env.post(f"/v1/plans/{plan_id}/activate")
    assert again.status_code == 409
    assert "retired" in again.json()["detail"]
    assert env.post(f"/v1/plans/{newer}/activate").status_code == 409
    third = _run_job(env, {"seed": 4})["result"]["plan_id"]
    early = env.post(
        f"/v1/plans/{third}/activate", json={"effective_from": "2020-01-01"}
    )
    assert early.status_code == 409
    assert "pick a later date" in early.json()["detail"]
    statuses = {p["id"]: p["status"] for p in env.get("/v1/plans").json()["plans"]}
    assert statuses[plan_id] == "retired"
    assert statuses[newer] == "active"
    assert statuses[third] == "draft"


def test_coverage_of_the_job_plan_has_no_gap_or_overlap(env, plan_id):
    from spatialgrid.coverage import find_coverage_issues
    from spatialgrid.db import repository
    from spatialgrid.db.engine import session_scope

    resp = env.get(f"/v1/plans/{plan_id}/coverage", role="operator")
    assert resp.status_code == 200, resp.text
    summary = resp.json()["summary"]
    assert summary["gaps"]["count"] == 0
    assert summary["overlaps"]["count"] == 0
    assert summary["crossings"] == {"crossing": 0, "outside": 0, "unknown_community": 0}
    assert summary["grids"] == env.get(f"/v1/plans/{plan_id}").json()["n_grids"]
    # The endpoint answers what the library finds on the stored plan and city.
    with session_scope(env.engine) as session:
        grids = repository.load_plan_grids(plan_id, session=session)
        city = repository.load_city(session=session)
    expected = find_coverage_issues(
        grids,
        city.communities,
        blocks=city.blocks,
        buildings=city.buildings,
        compounds=city.compounds,
        pois=city.pois,
        addresses=city.addresses,
        streets=city.streets,
    ).summary
    assert summary == json.loads(json.dumps(expected))


# ---------------------------------------------------------------- roles and errors


@pytest.mark.parametrize("role", ["operator", "worker", "consumer"])
def test_only_planners_start_jobs_or_activate(env, role, plan_id):
    resp = env.post("/v1/partition-jobs", role=role, json={})
    assert resp.status_code == 403
    assert "planner" in resp.json()["detail"]
    resp = env.post(f"/v1/plans/{plan_id}/activate", role=role)
    assert resp.status_code == 403


def test_consumer_cannot_read_plans_and_anonymous_is_401(env, plan_id):
    assert env.get("/v1/plans", role="consumer").status_code == 403
    assert env.get(f"/v1/plans/{plan_id}/grids", role="consumer").status_code == 403
    assert env.client.get("/v1/plans").status_code == 401
    assert env.client.post("/v1/partition-jobs", json={}).status_code == 401


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"min_households": 600, "max_households": 500}, "min_households=600"),
        ({"min_households": 0}, "min_households"),
        ({"code_scheme": "gb99"}, "code_scheme"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**40}, "seed"),
        ({"communities": ["12345"]}, "communities"),
        ({"communities": []}, "communities"),
        ({"max_households": "many"}, "max_households"),
        ({"bounds": [400, 500]}, "bounds"),
        ({"name": "a\x00b"}, "name"),
        ({"name": ""}, "name"),
        ({"communities": ["421002001999"]}, "not stored"),
        ([1, 2], "body"),
    ],
)
def test_bad_job_parameters_are_422(env, payload, fragment):
    resp = env.post("/v1/partition-jobs", json=payload)
    assert resp.status_code == 422, resp.text
    assert fragment in resp.json()["detail"]


def test_malformed_json_is_422(env):
    resp = env.client.post(
        "/v1/partition-jobs",
        content=b"{not json",
        headers={**env.headers(), "Content-Type": "application/json"},
    )
    assert resp.status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        "/v1/plans/987654",
        "/v1/plans/0",
        "/v1/plans/-3",
        "/v1/plans/99999999999999999999999",
        "/v1/plans/987654/grids",
        "/v1/plans/987654/diagnostics",
        "/v1/plans/987654/coverage",
        "/v1/partition-jobs/987654",
        "/v1/partition-jobs/0",
        "/v1/partition-jobs/99999999999999999999999",
    ],
)
def test_unknown_ids_are_404(env, path):
    resp = env.get(path)
    assert resp.status_code == 404, resp.text
    assert "does not exist" in resp.json()["detail"]


def test_activate_unknown_plan_is_404_and_bad_dates_422(env, plan_id):
    assert env.post("/v1/plans/987654/activate").status_code == 404
    assert env.post("/v1/plans/99999999999999999999/activate").status_code == 404
    for body in (
        {"effective_from": "soon"},
        {"effective_from": "2025-13-45"},
        {"effective_from": "0001-01-01T00:00:00+01:00"},
        {"effective_from": "9999-12-31T23:00:00-05:00"},
        {"when": "2025-01-01"},
    ):
        resp = env.post(f"/v1/plans/{plan_id}/activate", json=body)
        assert resp.status_code == 422, resp.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/plans/abc", {}),
        ("/v1/partition-jobs/abc", {}),
        ("/v1/plans", {"status": "paused"}),
        ("/v1/partition-jobs", {"limit": 0}),
        ("/v1/plans/1/grids", {"limit": 0}),
        ("/v1/plans/1/grids", {"offset": -1}),
        ("/v1/plans/1/grids", {"bbox": "a,b,c,d"}),
        ("/v1/plans/1/diagnostics", {"status": "x" * 100}),
        ("/v1/plans/active", {"at": "2025-02-30"}),
    ],
)
def test_bad_parameters_are_422(env, path, params):
    resp = env.get(path, **params)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


def test_full_queue_answers_503_with_retry_after(env):
    runner = env.app.state.job_runner
    saved = runner.max_pending
    runner.max_pending = 0
    try:
        resp = env.post("/v1/partition-jobs", json={})
    finally:
        runner.max_pending = saved
    assert resp.status_code == 503
    assert "retry" in resp.json()["detail"]
    assert int(resp.headers["Retry-After"]) > 0


# ------------------------------------------------------------ runner recovery


def test_recover_fails_jobs_of_dead_processes_only(env):
    from api.jobs import JobRunner
    from spatialgrid.db import jobs as job_repo
    from spatialgrid.db.engine import session_scope

    runner = JobRunner(env.engine)
    try:
        dead_pid = _dead_pid()
        with session_scope(env.engine) as session:
            rows = {
                "dead": f"{runner.host}|{dead_pid}|aaaa",
                "restarted": f"{runner.host}|{runner.pid}|old0",
                "sibling": f"{runner.host}|{os.getppid()}|bbbb",
                "other_host_fresh": "elsewhere|1|cccc",
            }
            ids = {}
            for label, owner in rows.items():
                job = job_repo.create_job(
                    session=session, kind="partition", parameters={}, runner=owner
                )
                if label != "restarted":
                    job_repo.start_job(job.id, session=session)
                ids[label] = job.id
        failed = runner.recover()
        assert sorted(failed) == sorted([ids["dead"], ids["restarted"]])
        with session_scope(env.engine) as session:
            status = {k: job_repo.get_job(v, session=session) for k, v in ids.items()}
        assert status["dead"].status == "failed"
        assert "process that ran it stopped" in status["dead"].error
        assert "POST /v1/partition-jobs" in status["dead"].error
        assert status["restarted"].status == "failed"
        assert "queued when the API process that ran it was restarted" in (
            status["restarted"].error
        )
        assert status["sibling"].status == "running"
        assert status["other_host_fresh"].status == "running"
        # A stale heartbeat from another host counts as dead.
        runner.stale_after_s = 0.0
        assert set(runner.recover()) == {ids["other_host_fresh"]}
    finally:
        runner.shutdown()
        with session_scope(env.engine) as session:  # leave no job running
            for job in job_repo.unfinished_jobs(session=session):
                job_repo.fail_job(job.id, session=session, error="test cleanup")


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_shutdown_fails_jobs_that_never_started(env):
    from api.jobs import JobRunner
    from spatialgrid.db import jobs as job_repo
    from spatialgrid.db.engine import session_scope

    runner = JobRunner(env.engine, max_workers=1, max_pending=2)
    params = {
        "min_households": 400,
        "max_households": 500,
        "code_scheme": "cjt213",
        "seed": 11,
        "communities": None,
        "name": None,
    }
    first = runner.submit_partition(params)
    deadline = time.monotonic() + 30
    while True:  # the pool thread has claimed it: shutdown will not cancel it
        with session_scope(env.engine) as session:
            if job_repo.get_job(first.id, session=session).status != "queued":
                break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = runner.submit_partition(params)
    assert runner.pending == 2
    from api.jobs import JobQueueFullError

    with pytest.raises(JobQueueFullError, match="already queued or running"):
        runner.submit_partition(params)
    runner.shutdown()  # waits for the running one
    with session_scope(env.engine) as session:
        a = job_repo.get_job(first.id, session=session)
        b = job_repo.get_job(second.id, session=session)
    assert a.status == "succeeded"
    assert b.status == "failed"
    assert "stopped before job" in b.error
    with pytest.raises(JobQueueFullError, match="shutting down"):
        runner.submit_partition(params)


def test_progress_writes_are_throttled_but_keep_stage_changes_and_ends(env):
    from sqlalchemy.orm import sessionmaker

    from api.jobs import _Progress
    from spatialgrid.db import jobs as job_repo
    from spatialgrid.db.engine import session_scope

    with session_scope(env.engine) as session:
        job = job_repo.create_job(session=session, kind="partition", parameters={})
        job_repo.start_job(job.id, session=session)
    progress = _Progress(job.id, sessionmaker(env.engine), interval_s=3600)

    def stored():
        with session_scope(env.engine) as session:
            row = job_repo.get_job(job.id, session=session)
        return row.progress_stage, row.progress_done, row.progress_total

    progress("partition", 0, 10)
    assert stored() == ("partition", 0, 10)
    progress("partition", 4, 10)  # within the interval: skipped
    assert stored() == ("partition", 0, 10)
    progress("partition", 10, 10)  # the end of a stage is always written
    assert stored() == ("partition", 10, 10)
    progress("save plan", 0, None)  # a new stage is always written
    assert stored() == ("save plan", 0, None)
    with session_scope(env.engine) as session:
        job_repo.fail_job(job.id, session=session, error="test over")
    progress("save plan", 1, 1)  # a write to an ended job is logged, not raised
    assert stored() == ("save plan", 0, None)
