"""The embedded PostgreSQL + PostGIS cluster that spatialgrid runs for itself.

With no ``SPATIALGRID_DATABASE_URL``, spatialgrid needs no database administrator:
it creates a PostgreSQL cluster in a data directory it owns, starts it on a free
loopback port (and a private unix-socket directory), creates the ``spatialgrid``
database with the ``postgis`` extension, and reuses that cluster on later runs.

Design notes
------------
- **Where**: ``SPATIALGRID_HOME`` if set; else ``/var/lib/spatialgrid`` when running as
  root, else ``$XDG_DATA_HOME/spatialgrid`` (``~/.local/share/spatialgrid``). Inside:
  ``pgdata/`` (the cluster), ``run/`` (unix socket), ``log/postgres.log`` and
  ``cluster.json`` (port, superuser password; mode 0600).
- **Binaries**: ``SPATIALGRID_PG_BINDIR`` if set; else the newest of ``pg_config
  --bindir`` and ``/usr/lib/postgresql/*/bin`` that has PostGIS installed. An
  existing cluster always uses the binaries of its own major version.
- **Root**: PostgreSQL refuses to run as root. When the effective uid is 0 the
  server programs (``initdb``, ``pg_ctl``) run as the Debian ``postgres`` user (or
  a ``spatialgrid`` system user created on demand); the data directory is owned by
  that user and every parent directory must be enterable by it.
- **Security**: the server listens on 127.0.0.1 only and requires a password
  (scram-sha-256) even locally; the password lives in ``cluster.json``, readable by
  its owner only.
- **Port**: a free port is picked at first start and recorded; if another program
  took it meanwhile, a new one is picked. Nothing assumes 5432.
- **Concurrency**: start/stop hold an exclusive ``flock`` on ``home/.lock`` so that
  two processes starting at once (API server and CLI) do not race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from spatialgrid.errors import DatabaseError

log = logging.getLogger(__name__)

DATABASE = "spatialgrid"
SUPERUSER = "spatialgrid"
STATE_FILE = "cluster.json"
_SYSTEM_USER = "spatialgrid"  # created when root and no ``postgres`` user exists
_START_TIMEOUT_S = 60
_APT_HINT = "apt-get install postgresql-15 postgresql-15-postgis-3"


def default_home() -> Path:
    """The directory the embedded cluster lives in.

    ``SPATIALGRID_HOME`` when set; ``/var/lib/spatialgrid`` for root (PostgreSQL
    runs as an unprivileged user who cannot enter ``/root``); else
    ``$XDG_DATA_HOME/spatialgrid`` or ``~/.local/share/spatialgrid``.
    """
    env = os.environ.get("SPATIALGRID_HOME")
    if env:
        return Path(env).expanduser().absolute()
    if os.geteuid() == 0:
        return Path("/var/lib/spatialgrid")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "spatialgrid"


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class PostgresBinaries:
    """One PostgreSQL installation: its ``bin`` directory and major version."""

    bindir: Path
    major: int

    @property
    def sharedir(self) -> Path:
        """The installation's share directory (holds ``extension/*.control``)."""
        out = subprocess.run(
            [str(self.bindir / "pg_config"), "--sharedir"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
        # Debian layout: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        return Path("/usr/share/postgresql") / str(self.major)

    @property
    def has_postgis(self) -> bool:
        """Whether the PostGIS extension is installed for this version."""
        return (self.sharedir / "extension" / "postgis.control").exists()

    def tool(self, name: str) -> str:
        """Absolute path of one server program (``initdb``, ``pg_ctl``...)."""
        return str(self.bindir / name)


def _major_of(bindir: Path) -> int | None:
    postgres = bindir / "postgres"
    if not (postgres.exists() and (bindir / "initdb").exists()):
        return None
    out = subprocess.run(
        [str(postgres), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"(\d+)(?:\.\d+)?", out.stdout)
    return int(match.group(1)) if match else None


def _candidate_bindirs() -> list[Path]:
    found: list[Path] = []
    env = os.environ.get("SPATIALGRID_PG_BINDIR")
    if env:
        return [Path(env)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            found.append(Path(out.stdout.strip()))
    found.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin")))
    found.append(Path("/usr/local/pgsql/bin"))
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def find_binaries(*, major: int | None = None) -> PostgresBinaries:
    """The PostgreSQL installation to run, newest first, PostGIS required.

    Parameters
    ----------
    major
        Require this major version (an existing cluster can only be run by the
        binaries of the version that created it).

    Raises
    ------
    DatabaseError
        No PostgreSQL server binaries, or none with PostGIS, were found.
    """
    installs = []
    for bindir in _candidate_bindirs():
        version = _major_of(bindir)
        if version is not None and (major is None or version == major):
            installs.append(PostgresBinaries(bindir, version))
    installs.sort(key=lambda b: b.major, reverse=True)
    if not installs:
        want = f"PostgreSQL {major} " if major else "PostgreSQL "
        msg = (
            f"no {want}server binaries (initdb, pg_ctl, postgres) found via "
            "pg_config --bindir or /usr/lib/postgresql/*/bin. Install them "
            f"(`{_APT_HINT.replace('15', str(major or 15))}`), point "
            "SPATIALGRID_PG_BINDIR at their bin directory, or set "
            "SPATIALGRID_DATABASE_URL to an existing PostGIS database."
        )
        raise DatabaseError(msg)
    for install in installs:
        if install.has_postgis:
            return install
    newest = installs[0]
    msg = (
        f"PostgreSQL {newest.major} in {newest.bindir} has no PostGIS extension; "
        f"install it with `apt-get install postgresql-{newest.major}-postgis-3` "
        "or set SPATIALGRID_DATABASE_URL to an existing PostGIS database."
    )
    raise DatabaseError(msg)


# ------------------------------------------------------------------------ server user


@dataclass(frozen=True)
class _ServerUser:
    name: str
    uid: int
    gid: int

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()


def _server_user() -> _ServerUser:
    """The OS user that runs the server: ourselves, or an unprivileged one for root."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return _ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    for name in ("postgres", _SYSTEM_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd")
    if useradd is None:
        msg = (
            "running as root, PostgreSQL needs an unprivileged user but neither "
            "'postgres' exists nor `useradd` is available; create a user named "
            f"{_SYSTEM_USER!r} or run spatialgrid as a normal user"
        )
        raise DatabaseError(msg)
    args = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    subprocess.run(
        [*args, _SYSTEM_USER],
        check=True,
        capture_output=True,
    )
    log.info("created system user %s to run the embedded PostgreSQL", _SYSTEM_USER)
    entry = pwd.getpwnam(_SYSTEM_USER)
    return _ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _can_enter(path: Path, user: _ServerUser) -> bool:
    st = path.stat()
    groups = set(os.getgrouplist(user.name, user.gid))
    if st.st_uid == user.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _require_enterable(path: Path, user: _ServerUser) -> None:
    for parent in [path, *path.parents]:
        if parent.exists() and not _can_enter(parent, user):
            msg = (
                f"the embedded PostgreSQL runs as user {user.name!r} (it refuses to "
                f"run as root) but that user cannot enter {parent}; run `chmod o+x "
                f"{parent}` or set SPATIALGRID_HOME to a directory it can reach "
                "(the default for root is /var/lib/spatialgrid)"
            )
            raise DatabaseError(msg)


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class ClusterStatus:
    """What ``spatialgrid db status`` reports about the embedded cluster."""

    home: Path
    data_dir: Path
    initialized: bool
    running: bool
    port: int | None
    pid: int | None
    version: int | None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class EmbeddedCluster:
    """A PostgreSQL + PostGIS cluster in a directory owned by spatialgrid.

    Parameters
    ----------
    home
        Directory holding the cluster; :func:`default_home` when ``None``.
    durable
        ``False`` turns off fsync and full-page writes: for throw-away test
        clusters only (a crash may corrupt the data).

    Examples
    --------
    >>> cluster = EmbeddedCluster()  # doctest: +SKIP
    >>> url = cluster.ensure_running()  # doctest: +SKIP
    """

    def __init__(self, home: Path | str | None = None, *, durable: bool = True):
        self.home = Path(home).absolute() if home is not None else default_home()
        self.durable = durable
        self.data_dir = self.home / "pgdata"
        self.socket_dir = self.home / "run"
        self.log_file = self.home / "log" / "postgres.log"
        self.state_file = self.home / STATE_FILE

    # ---------------------------------------------------------------- state file
    def _read_state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            return {}
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError) as err:
            msg = f"cannot read {self.state_file}: {err}; delete it to start afresh"
            raise DatabaseError(msg) from err

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ----------------------------------------------------------------- commands
    @property
    def initialized(self) -> bool:
        """Whether ``initdb`` has run (the data directory holds a cluster)."""
        return (self.data_dir / "PG_VERSION").exists() and self.state_file.exists()

    def _binaries(self) -> PostgresBinaries:
        version_file = self.data_dir / "PG_VERSION"
        if version_file.exists():
            return find_binaries(major=int(version_file.read_text().strip()))
        return find_binaries()

    def _run(
        self, user: _ServerUser, args: Sequence[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.home),
        }
        if not user.is_self:
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
        out = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.home,
            env=env,
            **kwargs,
        )
        if check and out.returncode != 0:
            msg = (
                f"{Path(args[0]).name} failed (exit {out.returncode}): "
                f"{(out.stderr or out.stdout).strip()[-800:]}"
            )
            raise DatabaseError(msg)
        return out

    def _prepare_dirs(self, user: _ServerUser) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o755)
        _require_enterable(self.home, user)
        for path, mode in ((self.socket_dir, 0o755), (self.log_file.parent, 0o755)):
            path.mkdir(exist_ok=True, mode=mode)
            if not user.is_self:
                os.chown(path, user.uid, user.gid)

    def _initdb(self, bins: PostgresBinaries, user: _ServerUser) -> dict[str, Any]:
        self._prepare_dirs(user)
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            msg = (
                f"{self.data_dir} exists and is not empty but {self.state_file} is "
                "missing; remove the directory (or restore the state file) so "
                "spatialgrid can create its cluster"
            )
            raise DatabaseError(msg)
        self.data_dir.mkdir(exist_ok=True, mode=0o700)
        if not user.is_self:
            os.chown(self.data_dir, user.uid, user.gid)
        password = secrets.token_urlsafe(24)
        pwfile = self.home / ".pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        if not user.is_self:
            os.chown(pwfile, user.uid, user.gid)
        args = [
            bins.tool("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not self.durable:
            args.append("--no-sync")
        started = time.monotonic()
        try:
            self._run(user, args)
        finally:
            pwfile.unlink(missing_ok=True)
        log.info("initdb %s in %.1f s", self.data_dir, time.monotonic() - started)
        state = {
            "port": _free_port(),
            "user": SUPERUSER,
            "password": password,
            "database": DATABASE,
            "major": bins.major,
            "durable": self.durable,
            "os_user": user.name,
        }
        self._write_state(state)
        return state

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from ``postmaster.pid`` if the server process is alive."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return pid, port

    def status(self) -> ClusterStatus:
        """Whether the cluster exists and runs, its port and version."""
        running = self._postmaster() if self.initialized else None
        state = self._read_state()
        version_file = self.data_dir / "PG_VERSION"
        return ClusterStatus(
            home=self.home,
            data_dir=self.data_dir,
            initialized=self.initialized,
            running=running is not None,
            port=running[1] if running else state.get("port"),
            pid=running[0] if running else None,
            version=int(version_file.read_text()) if version_file.exists() else None,
        )

    def url(self) -> str:
        """The SQLAlchemy URL of the cluster's database (it may not be running)."""
        state = self._read_state()
        if not state:
            msg = (
                f"no embedded cluster in {self.home}; start one with "
                "`spatialgrid db start`"
            )
            raise DatabaseError(msg)
        running = self._postmaster()
        port = running[1] if running else state["port"]
        return (
            f"postgresql+psycopg2://{quote(state['user'], safe='')}:"
            f"{quote(state['password'], safe='')}@127.0.0.1:{port}/"
            f"{state['database']}"
        )

    def ensure_running(self) -> str:
        """Create the cluster if needed, start it if stopped; return its URL."""
        with self._locked():
            if self._postmaster() is not None and self.initialized:
                return self.url()
            user = _server_user()
            bins = self._binaries()
            state = self._read_state() if self.initialized else {}
            if not state:
                state = self._initdb(bins, user)
            else:
                self._prepare_dirs(user)
            self._start(bins, user, state)
            self._ensure_database()
            return self.url()

    def _start(
        self, bins: PostgresBinaries, user: _ServerUser, state: dict[str, Any]
    ) -> None:
        durable = bool(state.get("durable", True))
        for _attempt in range(3):
            port = int(state["port"])
            if not _port_free(port):
                port = _free_port()
                state["port"] = port
                self._write_state(state)
            options = [
                f"-p {port}",
                "-c listen_addresses=127.0.0.1",
                f"-k {shlex.quote(str(self.socket_dir))}",
            ]
            if not durable:
                options += [
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
            started = time.monotonic()
            out = self._run(
                user,
                [
                    bins.tool("pg_ctl"),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-l",
                    str(self.log_file),
                    "-o",
                    " ".join(options),
                ],
                check=False,
            )
            if out.returncode == 0:
                log.info(
                    "embedded PostgreSQL started on port %d in %.1f s",
                    port,
                    time.monotonic() - started,
                )
                return
            tail = self._log_tail()
            if "could not bind" in tail or "in use" in tail:
                state["port"] = _free_port()  # someone took the port: try another
                continue
            msg = (
                f"the embedded PostgreSQL in {self.data_dir} did not start: "
                f"{(out.stderr or out.stdout).strip()} {tail}"
            )
            raise DatabaseError(msg)
        msg = f"the embedded PostgreSQL found no free port; see {self.log_file}"
        raise DatabaseError(msg)

    def _log_tail(self, n_chars: int = 800) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def _ensure_database(self) -> None:
        """Create the ``spatialgrid`` database and its ``postgis`` extension."""
        import psycopg2

        state = self._read_state()
        running = self._postmaster()
        params = {
            "host": "127.0.0.1",
            "port": running[1] if running else state["port"],
            "user": state["user"],
            "password": state["password"],
        }
        conn = psycopg2.connect(dbname="postgres", **params)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (state["database"],)
                )
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{state["database"]}"')
        finally:
            conn.close()
        conn = psycopg2.connect(dbname=state["database"], **params)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                try:
                    cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
                except psycopg2.Error as err:
                    msg = (
                        f"cannot create the postgis extension: {err}. Install it "
                        f"with `{_APT_HINT}`"
                    )
                    raise DatabaseError(msg) from err
        finally:
            conn.close()

    def stop(self) -> bool:
        """Stop the server; ``False`` if it was not running."""
        with self._locked():
            if not self.initialized or self._postmaster() is None:
                return False
            bins = self._binaries()
            self._run(
                _server_user(),
                [
                    bins.tool("pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                ],
            )
            return True

    def destroy(self) -> None:
        """Stop the server and delete the whole home directory (test clusters)."""
        with contextlib.suppress(DatabaseError):
            self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def embedded_url(home: Path | str | None = None) -> str:
    """URL of the embedded cluster in ``home``, creating and starting it if needed."""
    return EmbeddedCluster(home).ensure_running()
