"""The FastAPI application: ``create_app()`` wires settings, engine, routes, errors.

The engine is opened in the lifespan (never at import time) and disposed at
shutdown. Documentation pages (Swagger UI at ``/docs``, ReDoc at ``/redoc``) load
their JavaScript and CSS from this server, not from a CDN, so they work on an
intranet with no internet access. ``/static`` serves ``spatialgrid/static``
(vendored map libraries such as Leaflet).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import sessionmaker

from api.config import Settings, get_settings
from api.deps import KeyCache
from api.errors import add_exception_handlers
from api.routes import ROUTE_MODULES
from spatialgrid import __version__
from spatialgrid.db.engine import make_engine

#: Where the docs pages' assets are served from.
DOCS_ASSETS_URL = "/docs/assets"
#: Where spatialgrid/static is served from.
STATIC_URL = "/static"
STATIC_DIR = Path(__file__).resolve().parents[1] / "spatialgrid" / "static"

_DESCRIPTION = """\
Community grid management (网格化服务管理) over PostGIS.

Every endpoint except `/health` and the documentation needs an API key, sent as
the `X-API-Key` header or as `Authorization: Bearer <key>`. Create one with
`spatialgrid keys create --role planner|operator|worker|consumer`.

Geometries are GeoJSON in CGCS2000 longitude/latitude (EPSG:4490). Errors are
`{"detail": "...", "error": "ClassName"}`.
"""


def _docs_assets_dir() -> Path:
    # Swagger UI 5 and ReDoc bundles shipped by the fastapi-offline wheel.
    return Path(str(files("fastapi_offline") / "static"))


def _lifespan(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(
            settings.database_url, upgrade=settings.db_upgrade_on_startup
        )
        app.state.engine = engine
        app.state.session_factory = sessionmaker(engine, expire_on_commit=False)
        try:
            yield
        finally:
            engine.dispose()

    return lifespan


def _add_docs(app: FastAPI) -> None:
    app.mount(
        DOCS_ASSETS_URL,
        StaticFiles(directory=_docs_assets_dir()),
        name="docs-assets",
    )
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} – API docs",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            # No badge calling validator.swagger.io from the browser.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} – API reference",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the spatialgrid API.

    Parameters
    ----------
    settings
        Service settings; ``None`` reads them from the environment
        (:func:`api.config.get_settings`).

    Returns
    -------
    fastapi.FastAPI
        With ``app.state.settings`` and ``app.state.key_cache``; once started,
        ``app.state.engine`` and ``app.state.session_factory`` (the sessions
        requests use).

    Notes
    -----
    Starting the app connects to the database (embedded cluster when
    ``SPATIALGRID_DATABASE_URL`` is unset) and upgrades its schema unless
    ``SPATIALGRID_DB_UPGRADE_ON_STARTUP=false``; a database that cannot be reached
    stops the start-up with :class:`spatialgrid.errors.DatabaseError`.
    """
    settings = settings if settings is not None else get_settings()
    app = FastAPI(
        title=settings.title,
        version=__version__,
        description=_DESCRIPTION,
        lifespan=_lifespan(settings),
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    add_exception_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    _add_docs(app)
    app.mount(
        STATIC_URL,
        StaticFiles(directory=STATIC_DIR, check_dir=False),
        name="static",
    )
    for name in ROUTE_MODULES:
        module = importlib.import_module(f"api.routes.{name}")
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "name": settings.title,
                "version": __version__,
                "docs": f"{base}/docs",
                "openapi": f"{base}{app.openapi_url}",
                "health": f"{base}/health",
            }
        )

    return app
