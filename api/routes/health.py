"""``GET /health``: is the service up and does its database answer (no key needed)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from api.schemas import DatabaseStatus, HealthPublic
from spatialgrid import __version__
from spatialgrid.db.engine import current_revision, head_revision

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


def _database_status(engine: Any) -> DatabaseStatus:
    head = head_revision()
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as err:
        logger.warning("health: database unreachable: %s", err)
        return DatabaseStatus(
            reachable=False,
            revision=None,
            head=head,
            detail=f"{type(err).__name__}: the database does not answer",
        )
    detail = None
    if revision != head:
        detail = (
            f"schema at {revision}, code expects {head}: run `spatialgrid db upgrade`"
        )
    return DatabaseStatus(reachable=True, revision=revision, head=head, detail=detail)


@router.get(
    "/health",
    response_model=HealthPublic,
    summary="Service and database health",
    responses={
        503: {"model": HealthPublic, "description": "Database down or schema behind."}
    },
)
def health(request: Request) -> JSONResponse:
    """Version, whether the database answers, and its schema revision.

    200 with ``status: ok`` when the database answers at the expected schema
    revision; 503 with ``status: degraded`` when it does not answer or its schema
    is behind (load balancers then take the instance out of rotation).
    """
    database = _database_status(request.app.state.engine)
    healthy = database.reachable and database.revision == database.head
    body = HealthPublic(
        status="ok" if healthy else "degraded", version=__version__, database=database
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
