"""API keys and roles: 401 missing/unknown/revoked, 403 wrong role, 200 allowed.

Test-only routes (``EXTRA_ROUTERS``) exercise :func:`api.deps.require_permission`,
:func:`api.deps.require_role` and the per-request transaction of
:data:`api.deps.SessionDep` on the real app.
"""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends

from api.deps import (
    ROLE_PERMISSIONS,
    AnyKey,
    Permission,
    SessionDep,
    require_permission,
    require_role,
    roles_with,
)
from spatialgrid.db import repository
from spatialgrid.db.repository import ApiKeyInfo
from spatialgrid.errors import ConflictError
from spatialgrid.roles import ROLES

pytestmark = pytest.mark.db

_test_router = APIRouter(prefix="/test")


@_test_router.get("/plans-write")
def _plans_write(
    key: Annotated[ApiKeyInfo, Depends(require_permission(Permission.WRITE_PLANS))],
) -> dict[str, str]:
    return {"role": key.role}


@_test_router.get("/incidents-report")
def _report(
    key: Annotated[
        ApiKeyInfo, Depends(require_permission(Permission.REPORT_INCIDENTS))
    ],
) -> dict[str, str]:
    return {"role": key.role}


@_test_router.get("/worker-only")
def _worker_only(
    key: Annotated[ApiKeyInfo, Depends(require_role("worker"))],
) -> dict[str, str]:
    return {"role": key.role}


@_test_router.post("/keys")
def _create_key(session: SessionDep, key: AnyKey, fail: bool = False) -> dict[str, int]:
    repository.create_api_key(session=session, role="consumer", name="made-in-request")
    if fail:
        msg = "asked to fail after writing"
        raise ConflictError(msg)
    return {"count": len(repository.list_api_keys(session=session))}


@_test_router.get("/keys/count")
def _count_keys(session: SessionDep, key: AnyKey) -> dict[str, int]:
    return {"count": len(repository.list_api_keys(session=session))}


EXTRA_ROUTERS = [_test_router]


# ---------------------------------------------------------------- policy table


def test_policy_covers_every_role_and_planner_may_do_everything():
    assert set(ROLE_PERMISSIONS) == set(ROLES)
    # Reporters' names and phones are for the command center only (privacy).
    assert ROLE_PERMISSIONS["planner"] == frozenset(Permission) - {
        Permission.READ_REPORTERS
    }
    assert Permission.WRITE_PLANS not in ROLE_PERMISSIONS["operator"]
    assert ROLE_PERMISSIONS["operator"] | {Permission.WRITE_PLANS} == frozenset(
        Permission
    )
    assert ROLE_PERMISSIONS["consumer"] == {
        Permission.READ_LAYERS,
        Permission.LOCATE,
        Permission.REPORT_INCIDENTS,
        Permission.READ_REQUESTS,
    }
    assert roles_with(Permission.READ_LAYERS) == ROLES
    assert roles_with("plans:write") == ("planner",)


def test_require_role_rejects_unknown_roles_at_definition():
    with pytest.raises(ValueError, match=r"unknown role\(s\) \['admin'\]"):
        require_role("admin")


# ---------------------------------------------------------------- 401


def test_missing_key_is_401_with_www_authenticate(api_env):
    resp = api_env.client.get("/v1/communities")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = resp.json()
    assert body["error"] == "AuthError"
    assert "X-API-Key" in body["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "sg_not-a-real-key"},
        {"X-API-Key": "x" * 5000},
        {"Authorization": "Bearer sg_not-a-real-key"},
        {"X-API-Key": "   "},
    ],
    ids=["unknown", "huge", "unknown-bearer", "blank"],
)
def test_wrong_key_is_401(api_env, headers):
    resp = api_env.client.get("/v1/communities", headers=headers)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "AuthError"
    assert "WWW-Authenticate" in resp.headers


def test_authorization_with_another_scheme_says_use_bearer(api_env):
    resp = api_env.client.get(
        "/v1/communities", headers={"Authorization": f"Basic {api_env.keys['planner']}"}
    )
    assert resp.status_code == 401
    assert "Bearer" in resp.json()["detail"]


def test_revoked_key_is_401(api_env):
    from sqlalchemy.orm import Session

    factory = api_env.app.state.session_factory
    with factory.begin() as session:
        assert isinstance(session, Session)
        key = repository.create_api_key(session=session, role="planner", name="gone")
        info = repository.authenticate_api_key(key, session=session)
        repository.revoke_api_key(info.id, session=session)
    resp = api_env.client.get("/v1/communities", headers={"X-API-Key": key})
    assert resp.status_code == 401


def test_verified_keys_are_cached_until_cleared(api_env):
    factory = api_env.app.state.session_factory
    with factory.begin() as session:
        key = repository.create_api_key(session=session, role="worker", name="cached")
    headers = {"X-API-Key": key}
    assert api_env.client.get("/v1/pois", headers=headers).status_code == 200
    with factory.begin() as session:
        info = repository.authenticate_api_key(key, session=session)
        repository.revoke_api_key(info.id, session=session)
    # Within auth_cache_seconds the revoked key still passes (documented) ...
    assert api_env.app.state.settings.auth_cache_seconds > 0
    assert api_env.client.get("/v1/pois", headers=headers).status_code == 200
    # ... and fails as soon as the cache forgets it.
    api_env.app.state.key_cache.clear()
    assert api_env.client.get("/v1/pois", headers=headers).status_code == 401


# ---------------------------------------------------------------- 200 / 403


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_layers_with_either_header(api_env, role):
    key = api_env.keys[role]
    by_header = api_env.client.get("/v1/communities", headers={"X-API-Key": key})
    by_bearer = api_env.client.get(
        "/v1/communities", headers={"Authorization": f"Bearer {key}"}
    )
    assert by_header.status_code == 200, by_header.text
    assert by_bearer.status_code == 200, by_bearer.text


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/test/plans-write", {"planner"}),
        ("/test/incidents-report", {"planner", "operator", "worker", "consumer"}),
        ("/test/worker-only", {"planner", "worker"}),
    ],
)
@pytest.mark.parametrize("role", ROLES)
def test_roles_get_403_outside_their_permissions(api_env, path, allowed, role):
    resp = api_env.client.get(path, headers=api_env.headers(role))
    if role in allowed:
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"role": role}
    else:
        assert resp.status_code == 403, resp.text
        body = resp.json()
        assert body["error"] == "Forbidden"
        assert f"role {role!r}" in body["detail"]


# ---------------------------------------------------------------- transactions


def test_request_transaction_commits_on_success_and_rolls_back_on_error(api_env):
    headers = api_env.headers("planner")
    before = api_env.client.get("/test/keys/count", headers=headers).json()["count"]

    failed = api_env.client.post("/test/keys", params={"fail": True}, headers=headers)
    assert failed.status_code == 409
    assert failed.json() == {
        "detail": "asked to fail after writing",
        "error": "ConflictError",
    }
    after_fail = api_env.client.get("/test/keys/count", headers=headers).json()
    assert after_fail["count"] == before

    ok = api_env.client.post("/test/keys", headers=headers)
    assert ok.status_code == 200
    after_ok = api_env.client.get("/test/keys/count", headers=headers).json()
    assert after_ok["count"] == before + 1
