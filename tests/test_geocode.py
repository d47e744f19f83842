"""Gazetteer geocoding: written variants, levels, ambiguity, failures, reverse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import geopandas as gpd
import shapely

from spatialgrid.coords import convert
from spatialgrid.errors import MissingColumnError
from spatialgrid.geocode import Gazetteer, geocode_addresses
from spatialgrid.locate import GridIndex
from spatialgrid.testing import ORIGIN, PROJECTED_CRS

X0, Y0 = ORIGIN


def _plates() -> gpd.GeoDataFrame:
    rows = []

    def add(address, road, number, compound, building, unit, kind, x, y):
        rows.append(
            {
                "address_id": f"A{len(rows) + 1:04d}",
                "address": address,
                "road": road,
                "number": number,
                "compound": compound,
                "building": building,
                "unit": unit,
                "kind": kind,
                "block_id": "B1",
                "geometry": shapely.Point(X0 + x, Y0 + y),
            }
        )

    for n in range(1, 41):  # 中山路 1..40, odd north, even south
        add(
            f"中山路{n}号",
            "中山路",
            n,
            None,
            None,
            None,
            "door",
            20 * n,
            210 if n % 2 else 190,
        )
    for n in range(1, 21):
        add(f"人民大道{n}号", "人民大道", n, None, None, None, "door", 900, 20 * n)
    # compound gates
    rows[7]["compound"] = "幸福小区"  # 中山路8号
    rows[21]["compound"] = "翡翠华庭"  # 中山路22号
    for comp, gate_x in (("幸福小区", 160), ("翡翠华庭", 440)):
        for b in (1, 2, 3):
            for u in (1, 2):
                add(
                    f"{comp}{b}栋{u}单元",
                    "中山路",
                    8 if comp == "幸福小区" else 22,
                    comp,
                    str(b),
                    u,
                    "building",
                    gate_x + 30 * b + 8 * u,
                    100,
                )
    # 幸福家园: a compound whose name is close to 幸福小区
    for b in (1, 2):
        add(
            f"幸福家园{b}栋1单元",
            "人民大道",
            5,
            "幸福家园",
            str(b),
            1,
            "building",
            800,
            40 * b,
        )
    return gpd.GeoDataFrame(rows, crs=PROJECTED_CRS)


@pytest.fixture(scope="module")
def plates() -> gpd.GeoDataFrame:
    return _plates()


@pytest.fixture(scope="module")
def gazetteer(plates) -> Gazetteer:
    communities = gpd.GeoDataFrame(
        {"community_code": ["421002001001"], "name": ["墨香社区"]},
        geometry=[shapely.box(X0, Y0, X0 + 1000, Y0 + 400)],
        crs=PROJECTED_CRS,
    )
    return Gazetteer(plates, communities=communities)


def _id(plates, address):
    return plates.loc[plates.address == address, "address_id"].iloc[0]


DOOR_VARIANTS = [
    "中山路17号",
    "中山路１７號",
    "中山路 17 号",
    "中山路十七号",
    "湖北省荆州市荆州区中山路17号",
    "荆州区长安街道中山路17号",
    "中山路17号门口",
]
BUILDING_VARIANTS = [
    "幸福小区2栋1单元",
    "幸福小区2幢1单元",
    "幸福小区二栋一单元",
    "幸福小区2号楼1单元302室",
    "幸福小区 2-1-302",
    "中山路8号幸福小区2栋1单元",
    "荆州区幸福小區2棟1單元",
    "幸福小去2栋1单元",  # typo
]


@pytest.mark.parametrize("query", DOOR_VARIANTS)
def test_door_variants_resolve_to_the_plate(gazetteer, plates, query):
    row = gazetteer.geocode(query)
    assert row["status"] == "matched", row
    assert row["level"] == "door"
    assert row["address_id"] == _id(plates, "中山路17号")
    assert row["confidence"] >= 0.9


@pytest.mark.parametrize("query", BUILDING_VARIANTS)
def test_building_variants_resolve_to_the_plate(gazetteer, plates, query):
    row = gazetteer.geocode(query)
    assert row["status"] == "matched", row
    assert row["level"] == "building"
    assert row["address_id"] == _id(plates, "幸福小区2栋1单元")
    assert row["confidence"] >= (0.7 if "去" in query else 0.95)


def test_coarser_levels(gazetteer, plates):
    row = gazetteer.geocode("翡翠华庭")
    assert (row["status"], row["level"]) == ("partial", "compound")
    assert row["address_id"] == _id(plates, "中山路22号")  # the gate's door plate
    assert row["confidence"] == pytest.approx(0.7)
    row = gazetteer.geocode("翡翠华庭3栋")  # unit missing: the building
    assert (row["status"], row["level"]) == ("matched", "building")
    assert row["matched_address"].startswith("翡翠华庭3栋")
    row = gazetteer.geocode("人民大道")
    assert (row["status"], row["level"]) == ("partial", "road")
    row = gazetteer.geocode("中山路99号")  # number beyond the road: nearest, same side
    assert (row["status"], row["level"]) == ("partial", "road")
    assert row["matched_address"] == "中山路39号"
    assert "not found" in row["note"]
    row = gazetteer.geocode("墨香社区")
    assert (row["status"], row["level"]) == ("partial", "community")
    assert np.isfinite(row["lon"])


def test_ambiguous_input_returns_candidates_not_a_guess(gazetteer):
    row = gazetteer.geocode("1栋1单元")  # which compound?
    assert row["status"] == "ambiguous"
    assert row["address_id"] is None
    assert np.isnan(row["x"])
    assert row["n_candidates"] == 3
    names = sorted(c["address"] for c in row["candidates"])
    assert names == ["幸福家园1栋1单元", "幸福小区1栋1单元", "翡翠华庭1栋1单元"]
    row = gazetteer.geocode("幸福小园1栋1单元")  # equally close to two compounds
    assert row["status"] == "ambiguous"
    assert {c["address"] for c in row["candidates"]} == {
        "幸福小区1栋1单元",
        "幸福家园1栋1单元",
    }


def test_same_road_number_in_two_places_is_ambiguous(plates):
    twin = plates.iloc[[16]].copy()
    twin["address_id"] = "A9999"
    twin["geometry"] = [shapely.Point(X0 + 5000, Y0 + 5000)]
    gaz = Gazetteer(pd.concat([plates, twin], ignore_index=True))
    row = gaz.geocode("中山路17号")
    assert row["status"] == "ambiguous"
    assert {c["address_id"] for c in row["candidates"]} == {"A0017", "A9999"}


@pytest.mark.parametrize("query", ["", "   ", "asdf!!", None, 42, "12345", "？？？"])
def test_garbage_is_an_invalid_row(gazetteer, query):
    row = gazetteer.geocode(query)
    assert row["status"] == "invalid"
    assert row["note"]


def test_unknown_place_is_not_found(gazetteer):
    row = gazetteer.geocode("长江路5号")
    assert row["status"] == "not_found"


def test_batch_frame_and_grid(gazetteer, plates):
    grids = gpd.GeoDataFrame(
        {"grid_code": ["G1", "G2"], "community_code": "421002001001"},
        geometry=[
            shapely.box(X0, Y0, X0 + 500, Y0 + 400),
            shapely.box(X0 + 500, Y0, X0 + 1000, Y0 + 400),
        ],
        crs=PROJECTED_CRS,
    )
    queries = pd.Series(
        ["中山路17号", "asdf", "人民大道3号", "1栋1单元"], index=[5, 6, 7, 8]
    )
    out = geocode_addresses(queries, gazetteer, index=GridIndex(grids))
    assert list(out.index) == [5, 6, 7, 8]
    assert list(out.status) == ["matched", "invalid", "matched", "ambiguous"]
    assert list(out.grid_code[:3].fillna("-")) == ["G1", "-", "G2"]
    assert out.crs == plates.crs
    assert out.geometry.iloc[0].equals(plates.geometry[16])
    assert out.geometry.iloc[1] is None
    lon, lat = convert(
        plates.geometry[16].x, plates.geometry[16].y, src=PROJECTED_CRS, dst="cgcs2000"
    )
    assert out.lon.iloc[0] == pytest.approx(float(lon))
    assert out.lat.iloc[0] == pytest.approx(float(lat))


def test_reverse_nearest_plate(gazetteer, plates):
    p = plates.geometry[16]
    lon, lat = convert(
        [p.x + 3, X0 + 100000], [p.y + 4, Y0], src=PROJECTED_CRS, dst="gcj02"
    )
    out = gazetteer.reverse(lon, lat, crs="gcj02", max_distance_m=1000)
    assert list(out.status) == ["matched", "not_found"]
    assert out.address.iloc[0] == "中山路17号"
    assert out.distance_m.iloc[0] == pytest.approx(5.0, abs=0.01)
    out = gazetteer.reverse([p.x], [p.y - 90], crs=PROJECTED_CRS, kind="building")
    assert out.kind.iloc[0] == "building"


def test_gazetteer_contract(plates):
    with pytest.raises(MissingColumnError, match="road"):
        Gazetteer(plates.drop(columns="road"))


@pytest.fixture(scope="module")
def sample_city():
    sample = pytest.importorskip("spatialgrid.sample")
    return sample.generate_city(seed=3, n_communities=1, households_per_community=1500)


def _door_variants(road: str, number: int) -> list[str]:
    from spatialgrid.address import chinese_to_int  # noqa: F401 - documents the inverse

    full = str(number).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    cn = _to_chinese(number)
    return [
        f"{road}{number}号",
        f"{road}{full}號",
        f"{road} {number} 号",
        f"{road}{cn}号",
        f"湖北省荆州市荆州区{road}{number}号",
    ]


def _to_chinese(n: int) -> str:
    digits = "零一二三四五六七八九"
    if n < 10:
        return digits[n]
    if n < 20:
        return "十" + (digits[n % 10] if n % 10 else "")
    if n < 100:
        return digits[n // 10] + "十" + (digits[n % 10] if n % 10 else "")
    return "".join(digits[int(c)] for c in str(n))


def test_sample_city_plates_in_five_variants(sample_city):
    plates = sample_city.addresses
    gaz = Gazetteer(plates, communities=sample_city.communities)
    rng = np.random.default_rng(0)
    doors = plates[plates.kind == "door"]
    # door numbers unique per road (a road name may repeat: skip those)
    doors = doors[~doors.duplicated(["road", "number"], keep=False)]
    blds = plates[plates.kind == "building"]
    queries, expect = [], []
    for _, d in doors.iloc[
        rng.choice(len(doors), min(8, len(doors)), replace=False)
    ].iterrows():
        for q in _door_variants(d.road, int(d.number)):
            queries.append(q)
            expect.append(d.address_id)
    for _, b in blds.iloc[
        rng.choice(len(blds), min(8, len(blds)), replace=False)
    ].iterrows():
        comp, bl, u = b.compound, int(b.building), int(b.unit)
        for q in (
            f"{comp}{bl}栋{u}单元",
            f"{comp}{bl}幢{u}单元",
            f"{comp}{_to_chinese(bl)}栋{_to_chinese(u)}单元",
            f"{comp}{bl}号楼{u}单元501室",
            f"{comp} {bl}-{u}-501",
            f"{b.road}{int(b.number)}号{comp}{bl}栋{u}单元",
        ):
            queries.append(q)
            expect.append(b.address_id)
    out = geocode_addresses(queries, gaz)
    wrong = out.loc[
        out.address_id.to_numpy() != np.array(expect),
        ["query", "status", "matched_address"],
    ]
    assert wrong.empty, wrong.to_string()
    assert (out.status == "matched").all()


def test_cli_geocode_and_reverse(tmp_path, plates):
    import json

    import typer
    from typer.testing import CliRunner

    from spatialgrid.cli.locate import register

    app = typer.Typer()
    register(app)
    gaz = tmp_path / "plates.gpkg"
    plates.to_file(gaz, layer="addresses")
    runner = CliRunner()
    res = runner.invoke(
        app, ["geocode", "--addresses", str(gaz), "中山路１７號", "xyz"]
    )
    assert res.exit_code == 0, res.output
    assert '"status": "matched"' in res.output
    assert '"status": "invalid"' in res.output
    queries = tmp_path / "q.csv"
    pd.DataFrame({"ticket": [1, 2], "addr": ["幸福小区2幢1单元", "1栋1单元"]}).to_csv(
        queries, index=False
    )
    out = tmp_path / "geo.csv"
    res = runner.invoke(
        app,
        [
            "geocode",
            "--addresses",
            str(gaz),
            "--queries",
            str(queries),
            "--column",
            "addr",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert list(table["ticket"]) == [1, 2]
    assert list(table["status"]) == ["matched", "ambiguous"]
    assert len(json.loads(table["candidates"].iloc[1])) == 3
    p = plates.geometry[16]
    lon, lat = convert([p.x], [p.y], src=PROJECTED_CRS, dst="wgs84")
    res = runner.invoke(
        app,
        [
            "reverse",
            str(float(lon[0])),
            str(float(lat[0])),
            "--crs",
            "wgs84",
            "--addresses",
            str(gaz),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "中山路17号" in res.output
