"""/health, /docs, /redoc, /openapi.json and /static: no key, no external URLs."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.db

_EXTERNAL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)


def test_health_needs_no_key_and_reports_database(api_env):
    from spatialgrid import __version__
    from spatialgrid.db.engine import head_revision

    resp = api_env.client.get("/health")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["database"]["reachable"] is True
    assert body["database"]["revision"] == head_revision()
    assert body["database"]["revision"] is not None


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_assets_from_this_server(api_env, path):
    resp = api_env.client.get(path)
    assert resp.status_code == 200
    html = resp.text
    assert _EXTERNAL.findall(html) == [], "docs page must not load from a CDN"
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert assets, html
    for url in assets:
        assert url.startswith("/"), url
        asset = api_env.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url


def test_swagger_ui_does_not_call_the_online_validator(api_env):
    html = api_env.client.get("/docs").text
    assert '"validatorUrl": null' in html


def test_openapi_lists_layers_and_key_schemes(api_env):
    spec = api_env.client.get("/openapi.json").json()
    for path in ("/health", "/v1/communities", "/v1/blocks", "/v1/buildings"):
        assert path in spec["paths"], path
    assert "/v1/communities/{code}" in spec["paths"]
    schemes = spec["components"]["securitySchemes"]
    assert {s.get("name") for s in schemes.values() if s["type"] == "apiKey"} == {
        "X-API-Key"
    }
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    blocks = spec["paths"]["/v1/blocks"]["get"]
    assert {p["name"] for p in blocks["parameters"]} == {"bbox", "limit", "offset"}
    assert "401" in blocks["responses"]


def test_index_links_docs_and_health(api_env):
    body = api_env.client.get("/").json()
    assert body["docs"].endswith("/docs")
    assert body["health"].endswith("/health")


def test_static_mount_serves_spatialgrid_static(api_env):
    from api.main import STATIC_DIR

    files = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
    assert files, "spatialgrid/static should hold the vendored map libraries"
    rel = files[0].relative_to(STATIC_DIR).as_posix()
    resp = api_env.client.get(f"/static/{rel}")
    assert resp.status_code == 200
    assert resp.content == files[0].read_bytes()
    assert api_env.client.get("/static/no-such-file.js").status_code == 404


def test_health_is_503_degraded_when_the_database_is_down(postgis_url):
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine

    from api.config import Settings
    from api.main import create_app

    app = create_app(Settings(database_url=postgis_url))
    with TestClient(app) as client:
        live = app.state.engine
        # Nothing listens on port 1: every connection attempt fails at once.
        app.state.engine = create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/x")
        try:
            resp = client.get("/health")
        finally:
            app.state.engine.dispose()
            app.state.engine = live
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "degraded"
    assert body["database"]["reachable"] is False
    assert "127.0.0.1" not in resp.text
