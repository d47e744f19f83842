"""One table from exception class to HTTP status, registered once on the app.

Library exceptions never carry HTTP codes; this module decides them. Every error
response has the body ``{"detail": <message>, "error": <ClassName>}`` (request
validation errors add ``"errors"``, the list of failing fields).

The status of an exception is found by walking its class's MRO and taking the
first class listed in :data:`STATUS_BY_ERROR`, so a new subclass added to
``spatialgrid.errors`` maps like its parent without touching this file.
Anything not listed is a server bug: it is logged with its traceback and answered
with a 500 that does not leak internals.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from spatialgrid import errors as sg

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from fastapi import FastAPI, Request

logger = logging.getLogger(__name__)

#: Status for each spatialgrid exception class (most specific wins, via the MRO).
STATUS_BY_ERROR: dict[type[BaseException], int] = {
    # Input that breaks a documented contract: the request was understood but its
    # content is unusable.
    sg.InputError: 422,
    sg.MissingColumnError: 422,
    sg.InfeasiblePartitionError: 422,
    sg.CodeOverflowError: 422,
    # A file or payload that cannot even be parsed.
    sg.DataFormatError: 400,
    sg.NotFoundError: 404,
    sg.ConflictError: 409,
    sg.TransitionError: 409,
    sg.AuthError: 401,
    # An upstream geocoding provider failed: we are a gateway to it.
    sg.GeocodingError: 502,
    sg.DatabaseError: 503,
    # A map needs a front-end asset the installation lacks: our fault, not the
    # client's; logged with its traceback.
    sg.AssetError: 500,
    # The database went away in the middle of a request.
    OperationalError: 503,
}

#: What a 401 tells the client about how to authenticate (RFC 9110 §11.6.1).
WWW_AUTHENTICATE = 'Bearer realm="spatialgrid", charset="UTF-8"'


def status_for(exc: BaseException) -> int | None:
    """The HTTP status for ``exc`` from :data:`STATUS_BY_ERROR`, or ``None``."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return None


def error_body(detail: str, error: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"detail": detail, "error": error, **extra}


def _response(
    status: int, detail: str, error: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    merged = dict(headers or {})
    if status == 401:
        merged.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)
    return JSONResponse(error_body(detail, error), status_code=status, headers=merged)


async def _handle_mapped(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    if status is None:  # a SpatialgridError subclass nobody mapped: a bug
        return await _handle_unexpected(request, exc)
    if status == 500:
        logger.error(
            "%s %s -> 500: %s", request.method, request.url.path, exc, exc_info=exc
        )
    elif status > 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
        if isinstance(exc, DBAPIError):
            # Driver messages may hold host names and SQL; say what matters.
            detail = "the database is unreachable or failed; try again later"
            return _response(status, detail, type(exc).__name__)
    return _response(status, str(exc), type(exc).__name__)


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase.replace(" ", "")
    except ValueError:
        phrase = "HTTPError"
    return _response(exc.status_code, str(exc.detail), phrase, exc.headers)


def _location(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    detail = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors)
    body = error_body(detail or "invalid request", "RequestValidationError")
    body["errors"] = errors
    return JSONResponse(body, status_code=422)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    detail = "internal server error; the server log has the details"
    return _response(500, detail, "InternalServerError")


def add_exception_handlers(app: FastAPI) -> None:
    """Register the error table and the validation / fallback handlers on ``app``."""
    app.add_exception_handler(sg.SpatialgridError, _handle_mapped)
    app.add_exception_handler(OperationalError, _handle_mapped)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(Exception, _handle_unexpected)
