#!/usr/bin/env bash
# Quick start, command 2 of 2: lint and run the whole test suite against a real
# PostGIS (a throw-away embedded cluster unless SPATIALGRID_TEST_DB_URL is set).
# Database and browser tests must run, not skip: SPATIALGRID_REQUIRE_DB=1 turns a
# skip for a missing PostGIS or Chromium into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
export SPATIALGRID_REQUIRE_DB=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest --cov --cov-report=term:skip-covered --cov-fail-under=80 "$@"
