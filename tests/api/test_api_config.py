"""Settings from the environment (prefix SPATIALGRID_) and CORS."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.config import Settings, get_settings
from api.main import create_app


def test_settings_read_the_prefixed_environment(monkeypatch):
    monkeypatch.setenv("SPATIALGRID_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv(
        "SPATIALGRID_CORS_ORIGINS", "https://a.example, https://b.example"
    )
    monkeypatch.setenv("SPATIALGRID_DB_UPGRADE_ON_STARTUP", "false")
    settings = Settings()
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.db_upgrade_on_startup is False


def test_settings_default_to_the_embedded_database(monkeypatch):
    monkeypatch.delenv("SPATIALGRID_DATABASE_URL", raising=False)
    monkeypatch.delenv("SPATIALGRID_CORS_ORIGINS", raising=False)
    settings = Settings()
    assert settings.database_url is None
    assert settings.cors_origins == []


def test_cors_origins_accept_a_json_list(monkeypatch):
    monkeypatch.setenv("SPATIALGRID_CORS_ORIGINS", '["https://a.example"]')
    assert Settings().cors_origins == ["https://a.example"]


def test_get_settings_is_cached():
    assert get_settings() is get_settings()


@pytest.mark.db
def test_cors_headers_only_for_configured_origins(postgis_url):
    app = create_app(
        Settings(database_url=postgis_url, cors_origins=["https://map.example"])
    )
    with TestClient(app) as client:
        ok = client.options(
            "/v1/blocks",
            headers={
                "Origin": "https://map.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-API-Key",
            },
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://map.example"
        other = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
