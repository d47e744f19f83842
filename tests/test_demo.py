"""`spatialgrid demo` runs every capability and prints URLs that answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.db, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_end_to_end(scratch_db_url, tmp_path):
    port = _free_port()
    env = {**os.environ, "SPATIALGRID_DATABASE_URL": scratch_db_url, "COLUMNS": "100"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spatialgrid",
            "demo",
            "--communities",
            "3",
            "--out",
            str(tmp_path / "demo"),
            "--port",
            str(port),
            "--exit-after-check",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert f"http://127.0.0.1:{port}/docs" in out
    # Map links carry the operator key and must be printed whole, never cut short.
    assert "/maps/heatmap?key=sg_" in out.replace("\n", "").replace("│", "").replace(
        " ", ""
    )
    assert "…" not in out
    assert "plan 1 stored and put in force" in out
    for name in ("city.gpkg", "grids.gpkg", "grids.html", "coverage.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    html = (tmp_path / "demo" / "grids.html").read_text(encoding="utf-8")
    assert "unpkg.com" not in html
    assert "cdn.jsdelivr.net" not in html


def test_demo_runs_again_on_the_same_database(scratch_db_url, tmp_path):
    """`run it again any time`: a second demo reuses workers and retires plan 1."""
    env = {**os.environ, "SPATIALGRID_DATABASE_URL": scratch_db_url, "COLUMNS": "200"}
    outputs = []
    for _ in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "spatialgrid",
                "demo",
                "--communities",
                "2",
                "--incidents",
                "200",
                "--out",
                str(tmp_path / "demo"),
                "--no-serve",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs.append(done.stdout)
    assert "plan 1 stored and put in force" in outputs[0]
    assert "plan 2 stored and put in force" in outputs[1]

    from spatialgrid.db.engine import make_engine, session_scope
    from spatialgrid.db.repository import list_plans, list_workers

    engine = make_engine(scratch_db_url, upgrade=False)
    try:
        with session_scope(engine) as session:
            plans = list_plans(session=session).set_index("id")
            workers = list_workers(session=session)
    finally:
        engine.dispose()
    assert plans.loc[1, "status"] == "retired"
    assert plans.loc[2, "status"] == "active"
    assert workers["employee_no"].is_unique
