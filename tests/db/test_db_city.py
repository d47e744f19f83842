"""City save/load round trips and transactional failure (real PostGIS)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

import shapely

from spatialgrid.city import LAYER_COLUMNS, LAYERS
from spatialgrid.db import repository
from spatialgrid.db.engine import session_scope
from spatialgrid.errors import (
    ConflictError,
    InputError,
    InvalidGeometryError,
    NotFoundError,
)

pytestmark = pytest.mark.db


def _values(series) -> list:
    return [None if pd.isna(v) else v for v in series]


def _counts(session) -> dict[str, int]:
    return {layer: repository.count_layer(layer, session=session) for layer in LAYERS}


def test_round_trip_every_layer(db_session, small_city):
    counts = repository.save_city(small_city, session=db_session)
    assert counts == {n: len(g) for n, g in small_city.layers().items()}
    loaded = repository.load_city(session=db_session)
    assert loaded.name == "荆州测试"
    assert loaded.admin_code == "421002"
    assert loaded.report == small_city.report
    expected = small_city.to_crs("EPSG:4490")
    for layer, frame in loaded.layers().items():
        assert frame.crs.to_epsg() == 4490, layer
        assert list(frame.columns[: len(LAYER_COLUMNS[layer])]) == list(
            LAYER_COLUMNS[layer]
        )
        want = getattr(expected, layer)
        assert len(frame) == len(want)
        # Same geometry, to far better than the 6 decimals deliverables need.
        have_geom = frame.geometry.to_numpy()
        want_geom = want.geometry.to_numpy()
        both = ~shapely.is_missing(want_geom)
        assert (shapely.is_missing(have_geom) == ~both).all()
        assert shapely.equals_exact(have_geom[both], want_geom[both], 1e-9).all()
        assert list(frame.geometry.geom_type[both]) == list(
            want.geometry.geom_type[both]
        )
    blocks = loaded.blocks
    assert blocks["households"].tolist() == [250, 300, 120, 410, 0, 90]
    assert blocks["households"].dtype == np.int64
    assert _values(blocks["landuse"]) == [
        "residential",
        None,
        "retail",
        None,
        None,
        "school",
    ]
    assert loaded.subdistricts["level"].tolist() == ["subdistrict"]
    assert loaded.communities["generated"].tolist() == [False]
    assert _values(loaded.streets["oneway"]) == ["yes", None]
    assert loaded.streets["internal"].tolist() == [False, True]
    assert loaded.buildings["households"].tolist()[0] == 40
    assert loaded.buildings["households"].isna().tolist() == [False, True]
    assert loaded.buildings["levels"].tolist() == [6.0, 3.5]
    assert loaded.addresses["address"].tolist() == [
        "荆州区北京路1号",
        "tab\there\nnew\\line",
    ]
    assert _values(loaded.addresses["compound"]) == ["幸福小区", None]
    assert loaded.pois["is_shop"].tolist() == [True, True, False]
    assert _values(loaded.pois["opening_hours"]) == ["08:00-22:00", None, None]
    loaded.validate()


def test_save_replaces_by_default_and_appends_on_request(db_session, small_city):
    repository.save_city(small_city, session=db_session)
    repository.save_city(small_city, session=db_session)
    assert repository.count_layer("blocks", session=db_session) == 6
    with (
        pytest.raises(ConflictError, match="layer 'subdistricts': duplicate id"),
        db_session.begin_nested(),
    ):
        repository.save_city(small_city, session=db_session, replace=False)
    assert repository.count_layer("blocks", session=db_session) == 6


def test_load_layer_bbox_limit_offset(db_session, small_city):
    repository.save_city(small_city, session=db_session)
    blocks = repository.load_layer("blocks", session=db_session)
    assert blocks["block_id"].tolist() == [
        "B0_0",
        "B0_1",
        "B0_2",
        "B1_0",
        "B1_1",
        "B1_2",
    ]
    # The west column of blocks, by its lon/lat envelope shrunk inwards.
    west = blocks.geometry.iloc[0].union(blocks.geometry.iloc[3])
    minx, miny, maxx, maxy = west.bounds
    dx = (maxx - minx) * 0.1
    bbox = (minx + dx, miny + dx, maxx - dx, maxy - dx)
    got = repository.load_layer("blocks", session=db_session, bbox=bbox)
    assert sorted(got["block_id"]) == ["B0_0", "B1_0"]
    assert repository.count_layer("blocks", session=db_session, bbox=bbox) == 2
    page = repository.load_layer("blocks", session=db_session, limit=2, offset=3)
    assert page["block_id"].tolist() == ["B1_0", "B1_1"]
    far = repository.load_layer("pois", session=db_session, bbox=(0.0, 0.0, 1.0, 1.0))
    assert far.empty
    assert list(far.columns[:5]) == list(LAYER_COLUMNS["pois"])
    assert far.crs.to_epsg() == 4490
    one = repository.load_layer(
        "blocks", session=db_session, equals={"block_id": "B1_1"}
    )
    assert one["block_id"].tolist() == ["B1_1"]
    none = repository.load_layer("blocks", session=db_session, equals={"block_id": "Z"})
    assert none.empty
    nul = repository.load_layer(
        "blocks", session=db_session, equals={"block_id": "B\x00"}
    )
    assert nul.empty  # PostgreSQL refuses NUL in text: nothing can match
    some = repository.load_layer(
        "blocks", session=db_session, equals={"block_id": ["B1_1", "B0_0", "Z", "\x00"]}
    )
    assert sorted(some["block_id"]) == ["B0_0", "B1_1"]
    empty = repository.load_layer("blocks", session=db_session, equals={"block_id": []})
    assert empty.empty
    assert empty.crs.to_epsg() == 4490
    with pytest.raises(InputError, match="cannot be filtered on 'nope'"):
        repository.load_layer("blocks", session=db_session, equals={"nope": 1})


def test_load_layer_errors(db_session):
    with pytest.raises(NotFoundError, match="layer 'roads' does not exist"):
        repository.load_layer("roads", session=db_session)
    with pytest.raises(InputError, match="min > max"):
        repository.count_layer("blocks", session=db_session, bbox=(2, 0, 1, 1))


def test_load_city_without_city(db_session):
    db_session.execute(text("DELETE FROM city_info"))
    with pytest.raises(NotFoundError, match="no city is stored"):
        repository.load_city(session=db_session)


def _dup_poi(city):
    pois = city.pois.copy()
    pois.loc[2, "poi_id"] = "P1"
    return replace(city, pois=pois), ConflictError, "layer 'pois': duplicate id"


def _bad_bool(city):
    pois = city.pois.copy()
    pois["is_shop"] = [True, "maybe", False]
    return replace(city, pois=pois), InputError, "'maybe', which is not true/false"


def _point_block(city):
    blocks = city.blocks.copy()
    blocks.loc[5, "geometry"] = shapely.Point(blocks.geometry.iloc[5].centroid)
    return replace(city, blocks=blocks), InvalidGeometryError, "layer 'blocks'"


def _bad_households(city):
    buildings = city.buildings.copy()
    buildings["households"] = [40, 2.5]
    return replace(city, buildings=buildings), InputError, "2.5, which is not a whole"


@pytest.mark.parametrize("spoil", [_dup_poi, _bad_bool, _point_block, _bad_households])
def test_failed_save_leaves_db_unchanged(db_session, small_city, spoil):
    repository.save_city(small_city, session=db_session)
    before = _counts(db_session)
    bad, error, match = spoil(small_city)
    bad = replace(bad, name="bad")
    # The caller's transaction is a savepoint here; rolled back on the error.
    with pytest.raises(error, match=match), db_session.begin_nested():
        repository.save_city(bad, session=db_session)
    assert _counts(db_session) == before
    assert repository.load_city(session=db_session).name == "荆州测试"


def test_failed_save_in_session_scope_commits_nothing(db_engine, small_city):
    with session_scope(db_engine) as session:
        before = _counts(session)
    bad, error, match = _dup_poi(small_city)

    def save_bad() -> None:
        with session_scope(db_engine) as session:
            repository.save_city(bad, session=session)

    with pytest.raises(error, match=match):
        save_bad()
    with session_scope(db_engine) as session:
        assert _counts(session) == before
