"""Reading OSM XML and PBF: raw layers, counts on the Nanjing extract, bad files."""

from __future__ import annotations

from pathlib import Path

import osmium
import pytest

import shapely

from spatialgrid.errors import DataFormatError, EmptyInputError
from spatialgrid.importers import import_osm
from spatialgrid.osm import read_osm

TINY = Path(__file__).parent / "data" / "tiny_town.osm"


def _to_pbf(src: Path, dst: Path) -> Path:
    """Copy an OSM file object by object with pyosmium's writer (format by suffix)."""
    writer = osmium.SimpleWriter(str(dst))
    try:
        for obj in osmium.FileProcessor(str(src)):
            writer.add(obj)
    finally:
        writer.close()
    return dst


def test_tiny_town_raw_layers():
    data = read_osm(TINY)
    assert data.highways.crs.to_epsg() == 4490
    assert len(data.highways) == 11
    assert len(data.buildings) == 11
    assert set(data.buildings["osm_id"]) >= {"w12", "w13"}
    flats = data.buildings.set_index("osm_id")["flats"]
    assert flats["w13"] == 120
    # amenity=parking is street furniture, not a POI; the shop building is one.
    assert sorted(data.pois["name"]) == [
        "Acme",
        "Corner Shop",
        "Noodle House",
        "Tiny Mart",
    ]
    assert data.pois.set_index("name").loc["Corner Shop", "is_shop"]
    assert not data.pois.set_index("name").loc["Acme", "is_shop"]
    assert len(data.addresses) == 3  # de-duplication happens in the importer
    levels = sorted(data.boundaries["admin_level"])
    assert levels == [8, 10, 10]
    assert data.bounds is None  # the file has no <bounds>


def test_nanjing_counts(nanjing_osm):
    data = read_osm(nanjing_osm)
    assert len(data.buildings) == 1277
    # 1270 closed ways + 7 multipolygon relations
    assert data.buildings["osm_id"].str.startswith("r").sum() == 7
    assert 280 <= len(data.pois) <= 310
    assert data.pois["is_shop"].sum() > 100
    assert len(data.addresses) == 34
    assert not data.highways.empty
    assert data.highways.crs.to_epsg() == 4490


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.osm", b'<?xml version="1.0"?>\n<osm version="0.6"><node id="1" lat='),
        ("broken.osm.pbf", b"\x00\x00\x00\x0dnot a pbf at all" * 4),
    ],
)
def test_corrupt_file_raises_data_format_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match="cannot read OSM file"):
        read_osm(path)
    with pytest.raises(DataFormatError, match="cannot read OSM file"):
        import_osm(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_osm(tmp_path / "nope.osm")


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.osm"
    path.write_text('<?xml version="1.0"?>\n<osm version="0.6"></osm>\n')
    with pytest.raises(EmptyInputError, match="holds no nodes"):
        read_osm(path)


def test_pbf_round_trip_tiny(tmp_path):
    pbf = _to_pbf(TINY, tmp_path / "tiny.osm.pbf")
    xml_city = import_osm(TINY)
    pbf_city = import_osm(pbf)
    assert pbf_city.summary() == xml_city.summary()
    assert list(pbf_city.blocks["households"]) == list(xml_city.blocks["households"])


def test_pbf_round_trip_nanjing(nanjing_osm, tmp_path):
    pbf = _to_pbf(nanjing_osm, tmp_path / "nanjing.osm.pbf")
    assert pbf.stat().st_size < nanjing_osm.stat().st_size
    from_xml = read_osm(nanjing_osm)
    from_pbf = read_osm(pbf)
    for layer in ("highways", "buildings", "pois", "addresses", "landuse"):
        assert len(getattr(from_pbf, layer)) == len(getattr(from_xml, layer)), layer
    assert shapely.area(from_pbf.buildings.geometry.values).sum() == pytest.approx(
        shapely.area(from_xml.buildings.geometry.values).sum(), rel=1e-9
    )


def test_file_without_streets_raises(tmp_path):
    path = tmp_path / "nodes.osm"
    path.write_text(
        '<?xml version="1.0"?>\n<osm version="0.6">\n'
        '  <node id="1" lat="32.05" lon="118.8"><tag k="shop" v="bakery"/></node>\n'
        "</osm>\n"
    )
    assert len(read_osm(path).pois) == 1
    with pytest.raises(EmptyInputError, match="highways in the OSM file"):
        import_osm(path)
