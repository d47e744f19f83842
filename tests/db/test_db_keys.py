"""API keys: create, authenticate, list, revoke (real PostGIS)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from spatialgrid.db import repository
from spatialgrid.errors import AuthError, InputError, NotFoundError
from spatialgrid.roles import ROLES

pytestmark = pytest.mark.db


@pytest.mark.parametrize("role", ROLES)
def test_create_and_authenticate(db_session, role):
    key = repository.create_api_key(session=db_session, role=role, name=f"{role}-1")
    assert key.startswith("sg_")
    info = repository.authenticate_api_key(key, session=db_session)
    assert (info.name, info.role, info.revoked_at) == (f"{role}-1", role, None)


def test_only_a_hash_is_stored(db_session):
    key = repository.create_api_key(session=db_session, role="planner", name="alice")
    stored = db_session.execute(
        text("SELECT prefix, salt, key_hash FROM api_keys WHERE name = 'alice'")
    ).one()
    assert key.split("_")[1] == stored.prefix
    assert key not in (stored.salt, stored.key_hash)
    assert key.split("_", 2)[2] not in stored.key_hash


def test_wrong_malformed_and_revoked_keys(db_session):
    key = repository.create_api_key(session=db_session, role="worker", name="bob")
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthError, match="unknown API key"):
        repository.authenticate_api_key(wrong, session=db_session)
    with pytest.raises(AuthError, match="unknown API key"):
        repository.authenticate_api_key("sg_000000000000_nothing", session=db_session)
    with pytest.raises(AuthError, match="malformed"):
        repository.authenticate_api_key("let-me-in", session=db_session)
    info = repository.authenticate_api_key(key, session=db_session)
    repository.revoke_api_key(info.id, session=db_session)
    with pytest.raises(AuthError, match=rf"API key {info.id} \(bob\) was revoked"):
        repository.authenticate_api_key(key, session=db_session)
    listed = {k.id: k for k in repository.list_api_keys(session=db_session)}
    assert listed[info.id].revoked_at is not None
    first_revoked = listed[info.id].revoked_at
    repository.revoke_api_key(info.id, session=db_session)  # idempotent
    assert repository.list_api_keys(session=db_session)[-1].revoked_at == first_revoked


def test_bad_role_name_and_id(db_session):
    with pytest.raises(InputError, match="role 'admin' is not one of"):
        repository.create_api_key(session=db_session, role="admin", name="x")
    with pytest.raises(InputError, match="name must be a non-empty"):
        repository.create_api_key(session=db_session, role="planner", name=" ")
    with pytest.raises(NotFoundError, match="API key 987654 does not exist"):
        repository.revoke_api_key(987654, session=db_session)


def test_keys_cli_create_list_revoke(postgis_url, db_engine, monkeypatch):
    import uuid

    import typer
    from typer.testing import CliRunner

    from spatialgrid.cli import keys as keys_cli
    from spatialgrid.db.engine import session_scope

    monkeypatch.setenv("SPATIALGRID_DATABASE_URL", postgis_url)
    app = typer.Typer()
    keys_cli.register(app)
    runner = CliRunner()
    name = f"cli-{uuid.uuid4().hex[:8]}"
    try:
        created = runner.invoke(
            app, ["keys", "create", "--role", "operator", "--name", name]
        )
        assert created.exit_code == 0, created.output
        key = created.stdout.strip().splitlines()[0]
        with session_scope(db_engine) as session:
            info = repository.authenticate_api_key(key, session=session)
        assert (info.name, info.role) == (name, "operator")
        listed = runner.invoke(app, ["keys", "list"])
        assert name in listed.output
        assert key not in listed.output
        revoked = runner.invoke(app, ["keys", "revoke", str(info.id)])
        assert f"revoked key {info.id}" in revoked.output
        with (
            session_scope(db_engine) as session,
            pytest.raises(AuthError, match="revoked"),
        ):
            repository.authenticate_api_key(key, session=session)
        bad = runner.invoke(app, ["keys", "create", "--role", "root", "--name", name])
        assert isinstance(bad.exception, InputError)
    finally:
        with session_scope(db_engine) as session:
            session.execute(text("DELETE FROM api_keys WHERE name = :n"), {"n": name})
