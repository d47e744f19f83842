#!/usr/bin/env bash
# Quick start, command 1 of 2: install everything, then run the demo
# (embedded PostGIS -> sample city -> grids -> coverage -> maps -> API).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/spatialgrid demo "$@"
