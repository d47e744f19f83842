"""Request dependencies: a database session per request and API-key roles.

Use them in routes through the ``Annotated`` aliases::

    @router.get("/v1/plans")
    def list_plans(session: SessionDep, key: Annotated[ApiKeyInfo,
                   Depends(require_permission(Permission.READ_PLANS))]) -> ...

Sessions
    :func:`get_session` opens one session per request inside a transaction that is
    committed when the route returns and rolled back when it raises. It runs with
    ``scope="function"``, so the commit happens *before* the response is sent: a
    failed commit becomes an error response, never a 200 for lost work.

Roles
    Keys carry one role: ``planner``, ``operator``, ``worker`` or ``consumer``.
    What each role may do is decided in :data:`ROLE_PERMISSIONS` and nowhere else.
    Routes ask for a :class:`Permission` (:func:`require_permission`) or, rarely,
    for explicit roles (:func:`require_role`); the planner is always admitted.

Keys
    Sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Missing →
    401 with ``WWW-Authenticate``; unknown or revoked → 401; wrong role → 403.
    A verified key is remembered per process for ``auth_cache_seconds``
    (:class:`api.config.Settings`, default 30 s), which saves a database round
    trip on every request: a revoked key stops working within that time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from spatialgrid.db.repository import ApiKeyInfo, authenticate_api_key
from spatialgrid.errors import AuthError
from spatialgrid.roles import ROLES

# ---------------------------------------------------------------------------
# Sessions


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commit on success, roll back on error."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory.begin() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
"""A :class:`sqlalchemy.orm.Session` in a per-request transaction."""


# ---------------------------------------------------------------------------
# Role policy: the only place that says who may do what.


class Permission(StrEnum):
    """Things an API key may be allowed to do."""

    READ_LAYERS = "layers:read"
    """Read city layers: subdistricts, communities, blocks, buildings, POIs..."""
    LOCATE = "locate"
    """Locate a point, geocode or reverse-geocode an address."""
    READ_PLANS = "plans:read"
    """List grid plans and read their grids and assignments."""
    WRITE_PLANS = "plans:write"
    """Start partition jobs, create and activate grid plans."""
    CHECK_COVERAGE = "coverage:read"
    """Run coverage QA on a plan: gaps, overlaps, what falls through."""
    READ_INCIDENTS = "incidents:read"
    """Read incidents (events reported in grids)."""
    REPORT_INCIDENTS = "incidents:report"
    """Report a new incident or add to one (grid workers in the field)."""
    MANAGE_INCIDENTS = "incidents:manage"
    """Assign, escalate, transition and close incidents."""
    MANAGE_WORKERS = "workers:manage"
    """Create grid workers and assign them to grids."""
    HANDLE_INCIDENTS = "incidents:handle"
    """Field steps of a dispatched case: accept it (handle), report back."""
    READ_REQUESTS = "requests:read"
    """Status of service requests without personal data (Open311 GET)."""
    READ_REPORTERS = "reporters:read"
    """Read a reporter's name and phone (every read is audited)."""
    VIEW_MAPS = "maps:view"
    """Open the command-centre map pages."""


#: Who may do what. The planner may do everything but read reporters' personal
#: data, the operator everything but planning writes, a grid worker reads, reports
#: and handles cases in the field, a consumer (partner systems, hotline apps)
#: reads layers, locates, reports and follows its requests. Reporters' names and
#: phones are for the command-centre operator only (check it with
#: :func:`has_permission`: :func:`require_role` always admits the planner).
ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "planner": frozenset(Permission) - {Permission.READ_REPORTERS},
    "operator": frozenset(Permission) - {Permission.WRITE_PLANS},
    "worker": frozenset(
        {
            Permission.READ_LAYERS,
            Permission.LOCATE,
            Permission.READ_PLANS,
            Permission.READ_INCIDENTS,
            Permission.REPORT_INCIDENTS,
            Permission.HANDLE_INCIDENTS,
            Permission.READ_REQUESTS,
        }
    ),
    "consumer": frozenset(
        {
            Permission.READ_LAYERS,
            Permission.LOCATE,
            Permission.REPORT_INCIDENTS,
            Permission.READ_REQUESTS,
        }
    ),
}


def has_permission(role: str, permission: Permission | str) -> bool:
    """Whether :data:`ROLE_PERMISSIONS` grants ``permission`` to ``role``."""
    return Permission(permission) in ROLE_PERMISSIONS.get(role, frozenset())


def roles_with(permission: Permission | str) -> tuple[str, ...]:
    """The roles granted ``permission``, in :data:`ROLES` order."""
    perm = Permission(permission)
    return tuple(role for role in ROLES if perm in ROLE_PERMISSIONS[role])


# ---------------------------------------------------------------------------
# Authentication

_MAX_KEY_LENGTH = 512

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="API key (`spatialgrid keys create --role R`).",
)
_bearer = HTTPBearer(
    auto_error=False, description="The same API key as `Authorization: Bearer <key>`."
)


async def request_credentials(
    request: Request,
) -> tuple[str | None, HTTPAuthorizationCredentials | None]:
    """The X-API-Key header and the Bearer credentials of ``request``, as sent."""
    return await _api_key_header(request), await _bearer(request)


def presented_key(
    header_key: str | None, bearer: HTTPAuthorizationCredentials | None
) -> str | None:
    """The key the client sent: X-API-Key first, else ``Authorization: Bearer``."""
    key = header_key.strip() if header_key else None
    if not key and bearer is not None:
        key = bearer.credentials.strip()
    return key or None


def key_digest(key: str) -> bytes:
    """How :class:`KeyCache` indexes a key (never the key itself)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyCache:
    """Verified keys by SHA-256 digest, each kept for ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[bytes, tuple[float, ApiKeyInfo]] = {}

    def get(self, digest: bytes) -> ApiKeyInfo | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            item = self._items.get(digest)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[digest]
                return None
            return item[1]

    def put(self, digest: bytes, info: ApiKeyInfo) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._items) > 10_000:  # never grows without bound
                self._items.clear()
            self._items[digest] = (time.monotonic() + self.ttl, info)

    def clear(self) -> None:
        """Forget every key (the next request of each is checked again)."""
        with self._lock:
            self._items.clear()


def get_api_key(
    request: Request,
    session: SessionDep,
    header_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> ApiKeyInfo:
    """The verified key of the request (any role); 401 when missing or unknown."""
    key = presented_key(header_key, bearer)
    if not key:
        if request.headers.get("authorization"):
            msg = "the Authorization header must read 'Bearer <API key>'"
        else:
            msg = (
                "missing API key: send it as the X-API-Key header or as "
                "'Authorization: Bearer <key>'; create one with "
                "`spatialgrid keys create --role R`"
            )
        raise AuthError(msg)
    if len(key) > _MAX_KEY_LENGTH:
        msg = "unknown or revoked API key"
        raise AuthError(msg)
    digest = key_digest(key)
    cache: KeyCache = request.app.state.key_cache
    info = cache.get(digest)
    if info is None:
        info = authenticate_api_key(key, session=session)  # AuthError → 401
        cache.put(digest, info)
    return info


def require_role(*roles: str) -> Callable[..., ApiKeyInfo]:
    """A dependency admitting keys of ``roles`` (the planner always), else 403.

    Parameters
    ----------
    *roles
        Role names from :data:`ROLES`. Prefer :func:`require_permission`, which
        reads the policy table instead of repeating it.

    Returns
    -------
    callable
        A FastAPI dependency returning the request's :class:`ApiKeyInfo`.

    Raises
    ------
    ValueError
        At definition time, for a role that does not exist.
    """
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        msg = f"require_role got unknown role(s) {unknown}; roles are {list(ROLES)}"
        raise ValueError(msg)
    allowed = frozenset(roles) | {"planner"}
    allowed_text = ", ".join(r for r in ROLES if r in allowed)

    def _check_role(key: Annotated[ApiKeyInfo, Depends(get_api_key)]) -> ApiKeyInfo:
        if key.role not in allowed:
            msg = (
                f"API key {key.name!r} has role {key.role!r}; this endpoint needs "
                f"one of: {allowed_text}"
            )
            raise HTTPException(status_code=403, detail=msg)
        return key

    _check_role.__name__ = f"require_role_{'_'.join(sorted(allowed))}"
    return _check_role


def require_permission(permission: Permission | str) -> Callable[..., ApiKeyInfo]:
    """A dependency admitting the roles that :data:`ROLE_PERMISSIONS` grants."""
    return require_role(*roles_with(permission))


AnyKey = Annotated[ApiKeyInfo, Depends(get_api_key)]
"""Any valid key, whatever its role."""
LayerReader = Annotated[ApiKeyInfo, Depends(require_permission(Permission.READ_LAYERS))]
"""A key allowed to read city layers (every role)."""
