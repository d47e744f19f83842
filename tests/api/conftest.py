"""API test fixtures: one app + TestClient per test module on the test PostGIS.

The app starts for real (lifespan: ``make_engine`` on the test database, schema
upgrade) and then serves every request from one connection held in an outer
transaction: ``app.state.session_factory`` is re-bound to that connection with
``join_transaction_mode="create_savepoint"``, so the real per-request
commit/rollback of :func:`api.deps.get_session` runs (as savepoints) and the
module's data vanishes when the outer transaction is rolled back at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid import testing
from spatialgrid.city import City, empty_layer

#: Two communities of the 4 x 3 lattice: columns 0-1 and columns 2-3.
COMMUNITY_WEST = "421002001001"
COMMUNITY_EAST = "421002001002"
SUBDISTRICT = "421002001"


def small_city() -> City:
    """A 4 x 3 lattice of 100 m blocks in two communities, one building each."""
    blocks = testing.box_lattice(4, 3, households=250)
    col = blocks["block_id"].str.split("_").str[1].astype(int)
    blocks["community_code"] = [
        COMMUNITY_WEST if c < 2 else COMMUNITY_EAST for c in col
    ]
    crs = blocks.crs
    communities = blocks.dissolve(by="community_code", aggfunc={"households": "sum"})
    communities = communities.reset_index()
    communities["name"] = ["西社区", "东社区"]
    communities["subdistrict_code"] = SUBDISTRICT
    communities["generated"] = False
    communities["households"] = communities["households"].astype(int)
    subdistricts = gpd.GeoDataFrame(
        {"subdistrict_code": [SUBDISTRICT], "name": ["测试街道"]},
        geometry=[shapely.union_all(blocks.geometry.values)],
        crs=crs,
    )
    centroids = blocks.geometry.centroid
    buildings = gpd.GeoDataFrame(
        {
            "building_id": [f"W{i}" for i in range(len(blocks))],
            "block_id": blocks["block_id"],
            "compound_id": pd.Series([None] * len(blocks), dtype="object"),
            "levels": 6,
            "households": 250,
            "households_source": "planner",
        },
        geometry=centroids.buffer(20, cap_style="square"),
        crs=crs,
    )
    addresses = gpd.GeoDataFrame(
        {
            "address_id": [f"A{i}" for i in range(len(blocks))],
            "address": [f"中山路{2 * i + 1}号" for i in range(len(blocks))],
            "road": "中山路",
            "number": [f"{2 * i + 1}号" for i in range(len(blocks))],
            "compound": None,
            "building": None,
            "kind": "door",
            "block_id": blocks["block_id"],
        },
        geometry=centroids,
        crs=crs,
    )
    return City(
        subdistricts=subdistricts,
        communities=communities[
            [
                "community_code",
                "name",
                "subdistrict_code",
                "households",
                "generated",
                "geometry",
            ]
        ],
        streets=empty_layer("streets", crs),
        blocks=blocks,
        buildings=buildings,
        compounds=empty_layer("compounds", crs),
        addresses=addresses,
        pois=empty_layer("pois", crs),
        name="测试城",
        admin_code="421002",
    )


@dataclass
class ApiEnv:
    """What an API test module gets: the client, its app, keys per role, the city."""

    client: object
    app: object
    keys: dict[str, str]
    city: City

    def headers(self, role: str) -> dict[str, str]:
        """``X-API-Key`` headers for a key of ``role``."""
        return {"X-API-Key": self.keys[role]}


@pytest.fixture(scope="module")
def api_env(request, postgis_url: str, db_engine) -> Iterator[ApiEnv]:
    """A started app on the test database holding :func:`small_city` and 4 keys."""
    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session, sessionmaker

    from api.config import Settings
    from api.main import create_app
    from spatialgrid.db import repository
    from spatialgrid.roles import ROLES

    city = small_city()
    connection = db_engine.connect()
    outer = connection.begin()
    try:
        with Session(bind=connection, join_transaction_mode="create_savepoint") as s:
            repository.save_city(city, session=s)
            keys = {
                role: repository.create_api_key(
                    session=s, role=role, name=f"{role}-key"
                )
                for role in ROLES
            }
            s.commit()
        app = create_app(Settings(database_url=postgis_url, cors_origins=[]))
        # A module may declare EXTRA_ROUTERS (test-only routes) to exercise deps.
        for router in getattr(request.module, "EXTRA_ROUTERS", ()):
            app.include_router(router)
        with TestClient(app, raise_server_exceptions=False) as client:
            app.state.session_factory = sessionmaker(
                bind=connection,
                join_transaction_mode="create_savepoint",
                expire_on_commit=False,
            )
            yield ApiEnv(client=client, app=app, keys=keys, city=city)
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture(scope="module")
def active_plan(api_env: ApiEnv) -> dict[str, object]:
    """An active plan on :func:`small_city`: 6 grids (west→east block pairs per
    row, 2 per row per community), each with a grid worker. Returns ``plan_id``,
    ``grids`` (EPSG:4546) and ``workers`` (grid code → worker id)."""
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from spatialgrid.db import repository

    blocks = api_env.city.blocks
    rows, geoms, assign = [], [], []
    for community in (COMMUNITY_WEST, COMMUNITY_EAST):
        part = blocks[blocks["community_code"] == community]
        for seq, (_, pair) in enumerate(
            part.groupby(part["block_id"].str.split("_").str[0], sort=True), start=1
        ):
            code = f"{community}{seq:02d}"
            rows.append(
                {
                    "grid_code": code,
                    "community_code": community,
                    "households": int(pair["households"].sum()),
                    "n_blocks": len(pair),
                }
            )
            geoms.append(shapely.union_all(pair.geometry.values))
            assign += [(b, code) for b in pair["block_id"]]
    grids = gpd.GeoDataFrame(rows, geometry=geoms, crs=blocks.crs)
    factory = api_env.app.state.session_factory  # type: ignore[attr-defined]
    with factory.begin() as session:
        assert isinstance(session, Session)
        plan_id = repository.create_plan(
            grids,
            pd.DataFrame(assign, columns=["block_id", "grid_code"]),
            session=session,
            name="test plan",
            parameters={},
        )
        repository.activate_plan(
            plan_id, session=session, effective_from=datetime(2020, 1, 1, tzinfo=UTC)
        )
        workers = {}
        for i, code in enumerate(grids["grid_code"]):
            wid = repository.create_worker(session=session, name=f"网格员{i}")
            repository.assign_worker(plan_id, code, wid, session=session)
            workers[code] = wid
    return {"plan_id": plan_id, "grids": grids, "workers": workers}
