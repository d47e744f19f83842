"""import_osm on Nanjing and a synthetic town; import_layers; the `import` CLI."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import geopandas as gpd
import shapely

from spatialgrid import testing
from spatialgrid.city import LAYER_COLUMNS, City
from spatialgrid.cli.importing import register
from spatialgrid.errors import InputError, MissingColumnError, MissingCRSError
from spatialgrid.importers import import_layers, import_osm
from spatialgrid.io import read_city

TINY = Path(__file__).parent / "data" / "tiny_town.osm"


@functools.cache
def _nanjing(path: Path) -> City:
    return import_osm(path, admin_code="320102")


@functools.cache
def _tiny(**options) -> City:
    return import_osm(TINY, **options)


# ----------------------------------------------------------------------- Nanjing


def test_nanjing_counts_and_crs(nanjing_osm):
    city = _nanjing(nanjing_osm)
    city.validate()
    assert city.crs.to_epsg() == 4490
    for frame in city.layers().values():
        assert frame.crs.to_epsg() == 4490
    counts = city.report["counts"]
    assert 85 <= counts["blocks"] <= 100
    assert counts["buildings"] == 1277
    assert 280 <= counts["pois"] <= 310
    assert counts["addresses"] == 30  # 34 tagged, 4 duplicate door plates merged
    assert (city.addresses["kind"] == "door").all()
    assert city.pois["is_shop"].sum() > 100
    assert city.report["working_crs"] == "EPSG:4549"


def test_nanjing_blocks_coverage(nanjing_osm):
    blocks = _nanjing(nanjing_osm).blocks.to_crs("EPSG:4549")
    geoms = blocks.geometry.values
    assert shapely.coverage_is_valid(geoms, gap_width=1.0)
    assert shapely.is_empty(shapely.coverage_invalid_edges(geoms)).all()
    assert blocks["block_id"].is_unique


def test_nanjing_households_estimated_and_reported(nanjing_osm):
    city = _nanjing(nanjing_osm)
    b = city.buildings
    total = int(city.blocks["households"].sum())
    assert total > 10_000
    # households are conserved: blocks = buildings in blocks = communities
    assert total == int(b.loc[b["block_id"].notna(), "households"].sum())
    assert total == int(city.communities["households"].sum())
    assert city.report["households"]["total"] == total
    est = city.report["estimated"]["buildings"]
    assert est["by_source"]["estimated"]["buildings"] > 500
    assert est["by_source"]["estimated"]["households"] == total  # no flats tags here
    assert est["levels_defaulted"] > 0
    assert est["defaults"]["dwelling_size_m2"] == 90
    assert set(b["households_source"]) <= {"estimated", "none", "flats_tag"}
    assert (b.loc[b["households_source"] == "none", "households"] == 0).all()
    assert set(city.blocks["households_source"]) <= {"estimated", "buildings", "none"}
    dropped = city.report["dropped"]
    assert any(d["layer"] == "blocks" and "sliver" in d["reason"] for d in dropped)
    assert all(d["count"] > 0 and d["reason"] for d in dropped)


def test_nanjing_every_block_has_a_community(nanjing_osm):
    city = _nanjing(nanjing_osm)
    codes = city.blocks["community_code"]
    assert codes.notna().all()
    assert codes.str.fullmatch(r"320102001\d{3}").all()
    comm = city.communities
    assert set(comm["community_code"]) == set(codes)
    assert comm["generated"].all()
    assert comm["community_code"].is_unique
    total = comm["households"].sum()
    assert abs(len(comm) - total / 3000) <= 4
    # contiguous: each community is one piece (union of rook-adjacent blocks)
    assert (shapely.get_num_geometries(comm.geometry.values) == 1).all()
    assert city.report["communities"]["source"] == "generated"


def test_nanjing_dwelling_size_scales_households(nanjing_osm):
    city = _nanjing(nanjing_osm)
    bigger = import_osm(nanjing_osm, dwelling_size_m2=180, community_target=6000)
    ratio = bigger.blocks["households"].sum() / city.blocks["households"].sum()
    assert 0.45 < ratio < 0.55
    assert len(bigger.blocks) == len(city.blocks)


# ----------------------------------------------------------------------- tiny town


def test_tiny_town_households_blocks_and_boundaries():
    city = _tiny()
    assert len(city.blocks) == 6
    dropped = [d for d in city.report["dropped"] if d["layer"] == "blocks"]
    assert sum(d["count"] for d in dropped) == 3  # dual-carriageway strips
    b = city.buildings.set_index("building_id")
    assert b.loc["w13", "households"] == 120
    assert b.loc["w13", "households_source"] == "flats_tag"
    assert b.loc["w14", "households"] == 0  # commercial
    assert b.loc["w16", "households"] == 0  # building=yes with shop tags
    assert b.loc["w12", "levels_source"] == "tag"
    assert b.loc["w20", "levels_source"] == "default"
    # the building crossing x=200 goes to exactly one block (its rep point)
    straddler = b.loc["w17"]
    assert straddler["block_id"] == b.loc["w18", "block_id"]
    hh = city.blocks.set_index("block_id")["households"]
    assert hh.sum() == city.buildings["households"].sum()
    west_south = b.loc["w12", "block_id"]
    assert hh[west_south] == b.loc["w12", "households"] + 120
    assert b.loc["w12", "compound_id"] == "C0001"
    assert city.compounds["name"].tolist() == ["Green Garden"]
    assert city.compounds["households"].iloc[0] == hh[west_south]
    # communities from admin_level 10, codes from ref or sequence; subdistrict 8
    comm = city.communities.set_index("name")
    assert comm.loc["West Community", "community_code"] == "320102003007"
    assert comm.loc["East Community", "community_code"] == "320102003001"
    assert not comm["generated"].any()
    assert city.subdistricts["subdistrict_code"].tolist() == ["320102003"]
    assert city.subdistricts["name"].tolist() == ["Tiny Subdistrict"]
    assert city.blocks["community_code"].notna().all()
    streets = city.streets.set_index("street_id")
    assert streets.loc["w9", "internal"]  # footway
    assert streets.loc["w10", "internal"]  # dead end
    assert not streets.loc["w1", "internal"]
    assert len(city.addresses) == 2
    assert city.addresses["block_id"].notna().all()


def test_tiny_town_merge_leaves_no_gap():
    city = _tiny(sliver_action="merge")
    proj = city.blocks.to_crs("EPSG:4549")
    union = shapely.union_all(proj.geometry.values)
    assert shapely.get_num_interior_rings(union) == 0
    assert shapely.coverage_is_valid(proj.geometry.values)
    box = gpd.GeoSeries([shapely.box(*city.blocks.total_bounds)], crs=city.crs)
    box_area = shapely.area(box.to_crs("EPSG:4549").to_numpy())[0]
    assert shapely.area(union) == pytest.approx(box_area, rel=1e-6)


def test_tiny_town_planner_communities_win(tmp_path):
    blocks = _tiny().blocks
    one = gpd.GeoDataFrame(
        {"community_code": ["111111222333"], "name": ["All"]},
        geometry=[shapely.union_all(blocks.geometry.values).buffer(0.001)],
        crs=blocks.crs,
    )
    path = tmp_path / "communities.geojson"
    one.to_file(path)
    city = import_osm(TINY, communities=path)
    assert set(city.blocks["community_code"]) == {"111111222333"}
    assert city.report["communities"]["source"] == "planner"


def test_tiny_town_boundaries_beat_generation():
    city = import_osm(TINY, communities=None, community_target=200, admin_code="420102")
    assert city.report["communities"]["source"] == "admin_level 10"
    with pytest.raises(InputError, match="admin_code"):
        import_osm(TINY, admin_code="42")


# ----------------------------------------------------------------------- layers


def _planner_blocks() -> gpd.GeoDataFrame:
    blocks = testing.box_lattice(
        4, 2, households=[300, 310, 320, 330, 340, 350, 360, 370]
    )
    return blocks.rename(columns={"households": "HH", "block_id": "BH"}).drop(
        columns=["community_code", "households_source"]
    )


def test_import_layers_gpkg_with_mapping(tmp_path):
    path = tmp_path / "planner.gpkg"
    _planner_blocks().to_file(path, layer="jiequ")
    bld = gpd.GeoDataFrame(
        {"hh": [5, 7]},
        geometry=[
            shapely.box(*(testing.ORIGIN[0] + 10, testing.ORIGIN[1] + 110) * 2).buffer(
                5
            ),
            shapely.box(*(testing.ORIGIN[0] + 120, testing.ORIGIN[1] + 10) * 2).buffer(
                5
            ),
        ],
        crs=testing.PROJECTED_CRS,
    )
    bld.to_file(path, layer="buildings")
    city = import_layers(
        path,
        mapping={
            "blocks": {"layer": "jiequ", "households": "HH", "block_id": "BH"},
            "buildings": {"households": "hh"},
        },
        admin_code="421002",
        community_target=1000,
    )
    city.validate()
    assert city.crs == testing.PROJECTED_CRS
    blocks = city.blocks.set_index("block_id")
    # planner counts beat anything derived from buildings
    assert blocks.loc["B0_0", "households"] == 300
    assert (blocks["households_source"] == "planner").all()
    assert blocks["households"].sum() == 2680
    assert city.buildings["households_source"].tolist() == ["planner", "planner"]
    assert city.buildings["block_id"].tolist() == ["B0_0", "B1_1"]
    assert blocks["community_code"].str.startswith("421002001").all()
    assert city.communities["households"].sum() == 2680
    for layer, cols in LAYER_COLUMNS.items():
        assert set(cols) <= set(getattr(city, layer).columns), layer


def test_import_layers_unknown_column_lists_columns(tmp_path):
    path = tmp_path / "blocks.gpkg"
    _planner_blocks().to_file(path, layer="blocks")
    with pytest.raises(MissingColumnError, match=r"'HHX'.*columns are \['BH', 'HH'\]"):
        import_layers(path, mapping={"blocks": {"households": "HHX"}})
    with pytest.raises(InputError, match="unknown layer"):
        import_layers(path, mapping={"blokcs": {"households": "HH"}})


def test_import_layers_missing_households(tmp_path):
    path = tmp_path / "blocks.geojson"
    _planner_blocks().drop(columns="HH").to_crs(4326).to_file(path)
    with pytest.raises(MissingColumnError, match="no 'households' column"):
        import_layers(path)


def test_import_layers_without_crs(tmp_path):
    path = tmp_path / "blocks.shp"
    with pytest.warns(UserWarning, match="crs"):
        _planner_blocks().set_crs(None, allow_override=True).to_file(path)
    with pytest.raises(MissingCRSError, match="no CRS"):
        import_layers(path, mapping={"blocks": {"households": "HH"}})


def test_import_layers_dict_and_planner_codes(tmp_path):
    blocks = _planner_blocks()
    blocks["COMM"] = np.where(
        blocks.geometry.centroid.x < testing.ORIGIN[0] + 200,
        "421002001005",
        "421002001006",
    )
    path = tmp_path / "b.geojson"
    blocks.to_crs(4490).to_file(path)
    city = import_layers(
        {"blocks": path},
        mapping={"blocks": {"households": "HH", "community_code": "COMM"}},
    )
    assert city.crs.to_epsg() == 4490
    assert sorted(city.communities["community_code"]) == [
        "421002001005",
        "421002001006",
    ]
    assert city.communities.set_index("community_code")["households"].to_dict() == {
        "421002001005": 300 + 310 + 340 + 350,
        "421002001006": 320 + 330 + 360 + 370,
    }


def test_import_layers_rejects_bad_counts(tmp_path):
    blocks = _planner_blocks()
    blocks.loc[2, "HH"] = -5
    path = tmp_path / "b.gpkg"
    blocks.to_file(path, layer="blocks")
    with pytest.raises(
        InputError, match=r"missing or negative for block_id \['B0_2'\]"
    ):
        import_layers(path, mapping={"blocks": {"households": "HH", "block_id": "BH"}})


# ----------------------------------------------------------------------- CLI


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def test_cli_import_osm_to_file(cli, tmp_path):
    out = tmp_path / "tiny.gpkg"
    result = CliRunner().invoke(
        cli,
        ["import", "osm", str(TINY), "--out", str(out), "--admin-code", "320102"],
    )
    assert result.exit_code == 0, result.output
    assert "households" in result.output
    assert "sliver" in result.output
    city = read_city(out)
    assert len(city.blocks) == 6
    assert city.admin_code == "320102"
    assert city.report["counts"]["blocks"] == 6


def test_cli_import_layers_to_file(cli, tmp_path):
    src = tmp_path / "planner.gpkg"
    _planner_blocks().to_file(src, layer="blocks")
    out = tmp_path / "city.gpkg"
    mapping = json.dumps({"blocks": {"households": "HH", "block_id": "BH"}})
    result = CliRunner().invoke(
        cli, ["import", "layers", str(src), "--mapping", mapping, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    city = read_city(out)
    assert int(city.blocks["households"].sum()) == 2680
    assert "planner" in result.output
    bad = CliRunner().invoke(cli, ["import", "layers", str(src), "--mapping", "{oops"])
    assert bad.exit_code == 2


@pytest.mark.db
def test_import_then_save_city_round_trip(db_session):
    from spatialgrid.db.repository import load_city, save_city

    city = _tiny()
    counts = save_city(city, session=db_session, replace=True)
    assert counts["blocks"] == 6
    loaded = load_city(session=db_session)
    assert len(loaded.blocks) == 6
    assert int(loaded.blocks["households"].sum()) == int(
        city.blocks["households"].sum()
    )
    assert set(loaded.blocks["community_code"]) == set(city.blocks["community_code"])
    pd.testing.assert_series_equal(
        loaded.blocks.sort_values("block_id")["households"].reset_index(drop=True),
        city.blocks.sort_values("block_id")["households"].reset_index(drop=True),
        check_dtype=False,
        check_names=False,
    )


@pytest.mark.db
def test_cli_import_osm_into_database(cli, postgis_url):
    """DB mode (no --out) in a database of its own, so no other test sees it."""
    from sqlalchemy import create_engine, make_url, text

    from spatialgrid.db.engine import make_engine, session_scope
    from spatialgrid.db.repository import load_city

    url = make_url(postgis_url)
    name = "spatialgrid_import_cli_test"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    target = url.set(database=name).render_as_string(hide_password=False)
    try:
        result = CliRunner().invoke(
            cli, ["import", "osm", str(TINY), "--database-url", target]
        )
        assert result.exit_code == 0, result.output
        assert "saved tiny_town to the database" in result.output
        engine = make_engine(target, upgrade=False)
        try:
            with session_scope(engine) as session:
                city = load_city(session=session)
        finally:
            engine.dispose()
        assert len(city.blocks) == 6
        assert city.crs.to_epsg() == 4490
        assert int(city.blocks["households"].sum()) == int(
            _tiny().blocks["households"].sum()
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
