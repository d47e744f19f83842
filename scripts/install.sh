#!/usr/bin/env bash
# Install what spatialgrid needs on Debian/Ubuntu: PostGIS and Chromium from the
# distribution's packages (only when missing), a virtualenv in .venv, the project
# with all extras and the dev tools. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  $SUDO apt-get install -y -qq --no-install-recommends "$@"
}

# PostgreSQL + PostGIS: the distribution's default PostgreSQL major version.
if ! ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1; then
  echo "==> installing PostgreSQL + PostGIS from the distribution's packages"
  [ "$apt_updated" -eq 0 ] && { $SUDO apt-get update -qq; apt_updated=1; }
  pgver=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/.*Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -n1)
  pgver=${pgver:-15}
  apt_install "postgresql-${pgver}" "postgresql-${pgver}-postgis-3"
fi

# Chromium for the map tests (headless); Debian names it chromium.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "==> installing Chromium (headless map checks)"
  apt_install chromium || apt_install chromium-browser
fi

# Python 3.11+ with venv.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "spatialgrid needs Python >= 3.11 (found: $($PY --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  if ! "$PY" -m venv .venv 2>/dev/null; then
    apt_install python3-venv
    rm -rf .venv
    "$PY" -m venv .venv
  fi
fi
echo "==> installing spatialgrid into .venv"
.venv/bin/python -m pip install -q --upgrade "pip>=25.1"
.venv/bin/python -m pip install -q -e '.[all]' --group dev
echo "==> installed: $(.venv/bin/spatialgrid --version)"
