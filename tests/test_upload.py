"""Hand-drawn plans matched to blocks: splits by drawn lines, gaps, overlaps, codes."""

from __future__ import annotations

import pytest

import geopandas as gpd
import shapely

from spatialgrid.errors import EmptyInputError, MissingCRSError
from spatialgrid.upload import match_drawn_plan, read_drawn_plan
from tests.test_rebalance import COMM, square_plan


def _drawn(grids: gpd.GeoDataFrame, *, crs=4326) -> gpd.GeoDataFrame:
    """The grids as another GIS would export them: lon/lat, own attribute names."""
    out = gpd.GeoDataFrame(
        {"name": [f"网格{i + 1}" for i in range(len(grids))]},
        geometry=grids.geometry.buffer(0.3).values,  # a sloppy hand: 30 cm over
        crs=grids.crs,
    )
    return out.to_crs(crs)


def test_clean_drawing_matches_blocks(tmp_path):
    blocks, grids, assign = square_plan()
    path = tmp_path / "drawn.gpkg"
    _drawn(grids).to_file(path, layer="grids")
    drawn = read_drawn_plan(path)
    res = match_drawn_plan(drawn, blocks)
    assert res.summary["blocks_matched"] == len(blocks)
    assert res.summary["blocks_split"] == 0
    assert set(res.violations["kind"]) == {"overlap"}  # the 30 cm slop overlaps

    # Same grouping of blocks as the original plan; codes 01..06 assigned.
    def groups(frame):
        return {frozenset(g) for g in frame.groupby("grid_code")["block_id"].apply(set)}

    assert groups(res.assignments) == groups(assign)
    assert sorted(res.grids["grid_code"]) == sorted(grids["grid_code"])
    assert res.grids.crs == blocks.crs
    assert res.grids["households"].tolist() == [400] * 6


def test_drawn_line_through_a_block_gap_and_codes(tmp_path):
    blocks, grids, _assign = square_plan()
    g = grids.set_index("grid_code").geometry
    x0, y0, x1, y1 = g[f"{COMM}01"].bounds
    # Grid 01 drawn 60 m too far east: it cuts blocks B0_2 and B1_2 of grid 02.
    wide = shapely.box(x0, y0, x1 + 60, y1)
    narrow = shapely.difference(g[f"{COMM}02"], wide)
    polys = [wide, narrow] + [g[c] for c in g.index[2:5]]  # grid 06 not drawn
    codes = [f"{COMM}01", f"{COMM}02", f"{COMM}03", "123", f"{COMM}05"]
    drawn = gpd.GeoDataFrame({"grid_code": codes}, geometry=polys, crs=blocks.crs)
    shp = tmp_path / "drawn.shp"
    drawn.to_file(shp)
    res = match_drawn_plan(read_drawn_plan(shp), blocks, used_codes=[f"{COMM}06"])
    v = res.violations
    split = v[v["kind"] == "split_block"]
    assert set(split["block_ids"]) == {"B0_2", "B1_2"}
    assert all(r == f"{COMM}01,{COMM}02" for r in split["grid_codes"])
    gap = v[v["kind"] == "gap"].iloc[0]
    assert set(gap["block_ids"].split(",")) == {"B2_4", "B2_5", "B3_4", "B3_5"}
    assert gap["households"] == 400
    bad = v[v["kind"] == "bad_code"].iloc[0]
    assert "123" in bad["grid_codes"]
    # The invalid code was replaced by a fresh one above every used code.
    assert f"{COMM}07" in set(res.grids["grid_code"])
    assert f"{COMM}06" not in set(res.grids["grid_code"])
    # Split blocks go whole to the larger share (60 % in 01): 600 and 200.
    assert v.loc[v["kind"] == "above_max", "grid_codes"].tolist() == [f"{COMM}01"]
    assert v.loc[v["kind"] == "below_min", "grid_codes"].tolist() == [f"{COMM}02"]
    assert "60% in" in split.iloc[0]["detail"]


def test_bad_inputs(tmp_path):
    blocks, grids, _ = square_plan()
    naive = gpd.GeoDataFrame(geometry=list(grids.geometry.values))
    with pytest.raises(MissingCRSError):
        match_drawn_plan(naive, blocks)
    points = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=[shapely.Point(1, 1)], crs=4326).to_file(points)
    with pytest.raises(EmptyInputError, match="no polygons"):
        read_drawn_plan(points)


def test_self_intersecting_drawing_is_reported_not_raised():
    """A bow tie drawn by hand: an invalid_geometry violation with GEOS's
    reason, matched as repaired, instead of a GEOS TopologyException."""
    blocks, grids, _assign = square_plan()
    drawn = _drawn(grids, crs=grids.crs)
    x0, y0, x1, y1 = drawn.geometry.iloc[0].bounds
    drawn.loc[0, "geometry"] = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])
    res = match_drawn_plan(drawn, blocks)
    bad = res.violations[res.violations["kind"] == "invalid_geometry"]
    assert len(bad) == 1
    assert "Self-intersection" in bad.iloc[0]["detail"]
    assert res.grids.geometry.is_valid.all()
    # The bow tie's two triangles still cover its blocks' larger halves.
    assert res.summary["blocks_matched"] == len(blocks)
