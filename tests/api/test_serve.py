"""`spatialgrid serve`: uvicorn starts the app and the printed URLs answer.

The server runs in a subprocess exactly as the command line starts it; a headless
Chromium then opens /docs with every non-local request blocked, as on an intranet.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from offline_browser import open_offline
from typer.testing import CliRunner

from spatialgrid.cli.serve import register

_RUN = (
    "import typer; from spatialgrid.cli.serve import register; "
    "app = typer.Typer(); register(app); app()"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_help_teaches_the_options():
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers", "--database-url"):
        assert option in result.output


@pytest.fixture(scope="module")
def served(postgis_url: str, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A `serve` subprocess on a free port: (base URL, file with its output)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "SPATIALGRID_DATABASE_URL": postgis_url,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _RUN, "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no answer in 60 s\n" + log.read_text()
            try:
                httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.db
@pytest.mark.slow
def test_serve_prints_urls_that_answer(served):
    base, log = served
    printed = log.read_text()
    assert f"{base}/docs" in printed
    assert f"{base}/health" in printed
    health = httpx.get(f"{base}/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["database"]["reachable"] is True
    assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
    assert httpx.get(f"{base}/v1/blocks", timeout=5).status_code == 401


@pytest.mark.db
@pytest.mark.slow
@pytest.mark.browser
def test_docs_render_in_a_browser_with_no_internet(served, browser):
    base, _ = served
    page, log = open_offline(browser, allowed=(base + "/", "data:"))
    try:
        page.goto(f"{base}/docs")
        page.wait_for_selector(
            ".opblock-summary-path[data-path='/v1/communities/{code}']",
            timeout=20_000,
        )
        assert "spatialgrid" in page.title()
        assert page.locator(".btn.authorize").count() == 1
    finally:
        page.close()
    assert log["blocked"] == []
    assert log["failed"] == []
