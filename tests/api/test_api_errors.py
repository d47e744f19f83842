"""The exception → status table and the fallback handlers, on the real app."""

from __future__ import annotations

import inspect

import pytest
from fastapi import APIRouter
from sqlalchemy.exc import OperationalError

from api.errors import STATUS_BY_ERROR, status_for
from spatialgrid import errors as sg

pytestmark = pytest.mark.db

_ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(sg, inspect.isclass)
    if issubclass(cls, sg.SpatialgridError) and cls is not sg.SpatialgridError
]

_router = APIRouter(prefix="/test")


@_router.get("/raise/{name}")
def _raise(name: str) -> None:
    cls = getattr(sg, name)
    msg = f"{name} raised on purpose"
    raise cls(msg)


@_router.get("/bug")
def _bug() -> None:
    secret = {"password": "hunter2"}
    msg = f"internal state {secret}"
    raise RuntimeError(msg)


@_router.get("/db-down")
def _db_down() -> None:
    statement = "SELECT 1"
    raise OperationalError(statement, {}, Exception("could not connect to 10.0.0.5"))


EXTRA_ROUTERS = [_router]


@pytest.mark.parametrize("cls", _ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_library_error_has_a_status(cls):
    status = status_for(cls("x"))
    assert status is not None, f"{cls.__name__} is not mapped in api/errors.py"
    assert 400 <= status < 600


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (sg.MissingCRSError, 422),
        (sg.CoordinateRangeError, 422),
        (sg.MissingColumnError, 422),
        (sg.DataFormatError, 400),
        (sg.NotFoundError, 404),
        (sg.ConflictError, 409),
        (sg.TransitionError, 409),
        (sg.AuthError, 401),
        (sg.DatabaseError, 503),
        (sg.GeocodingError, 502),
    ],
)
def test_status_table(cls, status):
    assert status_for(cls("x")) == status


def test_unmapped_subclass_inherits_its_parents_status():
    class NewInputError(sg.InputError):
        pass

    assert NewInputError not in STATUS_BY_ERROR
    assert status_for(NewInputError("x")) == 422


@pytest.mark.parametrize("cls", _ERROR_CLASSES, ids=lambda c: c.__name__)
def test_library_errors_become_json_with_their_class(api_env, cls):
    resp = api_env.client.get(f"/test/raise/{cls.__name__}")
    assert resp.status_code == status_for(cls("x"))
    assert resp.json() == {
        "detail": f"{cls.__name__} raised on purpose",
        "error": cls.__name__,
    }
    if resp.status_code == 401:
        assert "WWW-Authenticate" in resp.headers


def test_a_server_bug_is_a_500_that_leaks_nothing(api_env, caplog):
    with caplog.at_level("ERROR", logger="api.errors"):
        resp = api_env.client.get("/test/bug")
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"] == "InternalServerError"
    assert "hunter2" not in resp.text
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)


def test_database_failure_mid_request_is_503_without_driver_detail(api_env):
    resp = api_env.client.get("/test/db-down")
    assert resp.status_code == 503
    assert resp.json()["error"] == "OperationalError"
    assert "10.0.0.5" not in resp.text


def test_unknown_path_and_method_keep_the_error_shape(api_env):
    resp = api_env.client.get("/v1/no-such-layer", headers=api_env.headers("planner"))
    assert resp.status_code == 404
    assert resp.json() == {"detail": "Not Found", "error": "NotFound"}
    resp = api_env.client.post("/v1/blocks", headers=api_env.headers("planner"))
    assert resp.status_code == 405
    assert resp.json()["error"] == "MethodNotAllowed"
