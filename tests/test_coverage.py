"""Coverage QA with injected faults on a box-lattice planned city (and the sample city)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import geopandas as gpd
import pyogrio
import shapely
from shapely import affinity

from spatialgrid.coverage import (
    REPORT_LAYERS,
    add_coverage_layers,
    find_coverage_issues,
    write_coverage_report,
)
from spatialgrid.errors import (
    CRSMismatchError,
    InputError,
    MissingColumnError,
    MissingCRSError,
)
from spatialgrid.testing import ORIGIN, lattice_plan

X0, Y0 = ORIGIN
CONTENT = ("blocks", "buildings", "addresses", "pois", "streets")


@pytest.fixture
def plan() -> dict[str, gpd.GeoDataFrame]:
    return lattice_plan()


def _check(plan, grids=None, **kwargs):
    layers = {k: plan[k] for k in CONTENT}
    layers.update({k: v for k, v in kwargs.items() if k in CONTENT})
    options = {k: v for k, v in kwargs.items() if k not in CONTENT}
    return find_coverage_issues(
        plan["grids"] if grids is None else grids,
        plan["communities"],
        **layers,
        **options,
    )


def _replace(grids, code, geometry):
    out = grids.copy()
    out.loc[out["grid_code"] == code, "geometry"] = geometry
    return out


def _geom(grids, code):
    return grids.loc[grids["grid_code"] == code].geometry.iloc[0]


def test_clean_plan_finds_nothing(plan):
    report = _check(plan)
    assert report.clean
    for name, layer in report.layers().items():
        if name != "grids":
            assert layer.empty, name
        assert layer.crs == plan["grids"].crs
    assert report.summary["gaps"]["count"] == 0
    assert report.summary["households_source"] == "buildings"
    assert report.summary["worker_col"] == "worker"
    json.dumps(report.summary)  # JSON-serialisable
    # Per-grid figures keep the plan's households, count shops and addresses.
    assert report.grids["households"].tolist() == plan["grids"]["households"].tolist()
    assert (report.grids["shops"] == 2).all()
    assert (report.grids["addresses"] == 4).all()
    assert list(report.grids.index) == list(plan["grids"].index)


@pytest.mark.parametrize("source", ["buildings", "blocks"])
def test_removed_grid_is_a_gap_with_exact_households(plan, source):
    code = "42100200100104"
    removed = plan["grids"].loc[plan["grids"]["grid_code"] == code]
    grids = plan["grids"].drop(index=removed.index)
    kwargs = {"buildings": None} if source == "blocks" else {}
    report = _check(plan, grids, **kwargs)
    assert not report.clean
    assert report.summary["households_source"] == source
    assert len(report.gaps) == 1
    gap = report.gaps.iloc[0]
    assert gap["kind"] == "unassigned"
    assert gap["community_code"] == "421002001001"
    assert gap["households"] == int(removed["households"].iloc[0])
    assert gap["area_m2"] == pytest.approx(20_000.0)
    assert gap["width_m"] == pytest.approx(100.0, abs=0.05)
    assert gap["addresses"] == 4
    assert gap["shops"] == gap["pois"] == 2
    assert gap["buildings"] == (4 if source == "buildings" else 0)
    assert set(gap["neighbours"].split(";")) == {
        "42100200100102",
        "42100200100103",
        "42100200100106",
        "42100200100203",
    }
    assert gap.geometry.equals(removed.geometry.iloc[0])
    # Each address and shop in the hole is listed one by one, pointing at the gap.
    lost = report.uncovered_points
    assert sorted(lost["kind"]) == ["address"] * 4 + ["poi"] * 2
    assert (lost["gap_id"] == gap["gap_id"]).all()
    assert (lost["community_code"] == "421002001001").all()
    assert set(lost.loc[lost["kind"] == "poi", "street_id"]) == {"H1"}
    assert report.summary["uncovered"] == {"pois": 2, "shops": 2, "addresses": 4}
    assert report.overlaps.empty
    assert report.crossings.empty


@pytest.mark.parametrize(
    ("sliver_width_m", "kind"), [(6.0, "sliver"), (2.0, "unassigned")]
)
def test_grid_shifted_5m_gives_overlap_and_gap(plan, sliver_width_m, kind):
    code = "42100200100103"
    grids = _replace(
        plan["grids"], code, affinity.translate(_geom(plan["grids"], code), 5.0, 0.0)
    )
    report = _check(plan, grids, sliver_width_m=sliver_width_m)
    assert len(report.gaps) == 1
    gap = report.gaps.iloc[0]
    assert gap["kind"] == kind
    assert gap["width_m"] == pytest.approx(5.0, abs=0.1)
    assert gap["area_m2"] == pytest.approx(500.0)
    # Longest shared border first: the shifted grid, then its 5 m ends.
    assert gap["neighbours"] == f"{code};42100200100101;42100200100105"
    assert len(report.overlaps) == 1
    ov = report.overlaps.iloc[0]
    assert {ov["grid_code_a"], ov["grid_code_b"]} == {code, "42100200100104"}
    assert {ov["worker_a"], ov["worker_b"]} == {"worker 001-03", "worker 001-04"}
    assert ov["area_m2"] == pytest.approx(500.0)
    assert ov["width_m"] == pytest.approx(5.0, abs=0.1)
    assert ov["households"] == 0
    assert report.crossings.empty
    assert len(report.invalid_edges) > 0  # GEOS coverage validation agrees


def test_boundary_1m_off_street_centre_line_leaves_slivers(plan):
    grids = plan["grids"]
    # The shared edge of 03 | 04 is street V2 (x0 + 200); 03 stops 1 m short of
    # it, and 05 stops 1 m short of the community's southern street H0.
    g03 = shapely.box(X0, Y0 + 100, X0 + 199, Y0 + 200)
    g05 = shapely.box(X0, Y0 + 1, X0 + 200, Y0 + 100)
    faulty = _replace(_replace(grids, "42100200100103", g03), "42100200100105", g05)
    report = _check(plan, faulty)
    assert sorted(report.gaps["kind"]) == ["sliver", "sliver"]
    assert report.gaps["width_m"].to_numpy() == pytest.approx([1.0, 1.0], abs=0.05)
    assert sorted(report.gaps["area_m2"]) == pytest.approx([100.0, 200.0])
    assert (report.gaps["households"] == 0).all()
    first_two = {";".join(n.split(";")[:2]) for n in report.gaps["neighbours"]}
    assert first_two == {
        "42100200100103;42100200100104",  # 100 m each, then the 1 m ends
        "42100200100105;42100200100106",  # 200 m, then the 1 m end
    }
    assert report.overlaps.empty
    # With a narrower threshold the same 1 m strips are unassigned territory.
    narrow = _check(plan, faulty, sliver_width_m=0.5)
    assert set(narrow.gaps["kind"]) == {"unassigned"}


def test_grid_crossing_into_next_community(plan):
    code = "42100200100104"  # east edge is the community boundary (x0 + 400)
    grids = _replace(
        plan["grids"], code, affinity.translate(_geom(plan["grids"], code), 10.0, 0.0)
    )
    report = _check(plan, grids)
    assert len(report.crossings) == 1
    row = report.crossings.iloc[0]
    assert row["grid_code"] == code
    assert row["kind"] == "crossing"
    assert row["into_communities"] == "421002001002"
    assert row["area_outside_m2"] == pytest.approx(1000.0)
    assert row["share_outside"] == pytest.approx(0.05)
    ov = report.overlaps.iloc[0]
    assert {ov["grid_code_a"], ov["grid_code_b"]} == {code, "42100200100203"}
    assert ov["community_code_a"] != ov["community_code_b"]


def test_outside_and_unknown_community(plan):
    grids = plan["grids"].copy()
    extra = grids.iloc[[0, 0]].copy()
    extra["grid_code"] = ["42100200100107", "42100200999901"]
    extra["community_code"] = ["421002001001", "421002999999"]
    far = affinity.translate(_geom(grids, "42100200100101"), 0.0, 1000.0)
    extra["geometry"] = [far, far]
    report = _check(plan, gpd.GeoDataFrame(
        __import__("pandas").concat([grids, extra], ignore_index=True), crs=grids.crs
    ))  # fmt: skip
    kinds = dict(
        zip(report.crossings["grid_code"], report.crossings["kind"], strict=True)
    )
    assert kinds == {
        "42100200100107": "outside",
        "42100200999901": "unknown_community",
    }
    assert report.summary["crossings"] == {
        "crossing": 0,
        "outside": 1,
        "unknown_community": 1,
    }


def test_duplicate_grid_double_counts_addresses(plan):
    grids = plan["grids"].copy()
    dup = grids.loc[grids["grid_code"] == "42100200100103"].copy()
    dup["grid_code"] = "42100200100107"
    dup["worker"] = "worker dup"
    grids = gpd.GeoDataFrame(
        __import__("pandas").concat([grids, dup], ignore_index=True), crs=grids.crs
    )
    report = _check(plan, grids)
    assert len(report.overlaps) == 1
    ov = report.overlaps.iloc[0]
    assert ov["households"] == int(dup["households"].iloc[0])
    assert ov["addresses"] == 4
    multi = report.multi_covered
    assert (multi["kind"] == "address").sum() == 4
    assert set(multi["grid_codes"]) == {"42100200100103;42100200100107"}
    assert report.summary["multi_covered"] == {"pois": 2, "addresses": 4}


def test_invalid_grid_is_reported_and_analysed(plan):
    code = "42100200100101"
    x, y = X0, Y0 + 200
    bowtie = shapely.Polygon([(x, y), (x + 200, y + 100), (x + 200, y), (x, y + 100)])
    report = _check(plan, _replace(plan["grids"], code, bowtie))
    assert len(report.invalid) == 1
    assert report.invalid.iloc[0]["feature_id"] == code
    assert "Self-intersection" in report.invalid.iloc[0]["reason"]
    assert not report.grids.loc[report.grids["grid_code"] == code, "valid"].iloc[0]
    # The analysis went on with the repaired shape: its two missing wedges are gaps.
    assert len(report.gaps) == 2
    assert report.gaps["area_m2"].sum() == pytest.approx(10_000.0)


def test_geographic_input_gives_geographic_output(plan):
    geo = {k: v.to_crs("EPSG:4490") for k, v in plan.items()}
    code = "42100200100104"
    grids = geo["grids"][geo["grids"]["grid_code"] != code]
    report = _check(geo, grids)
    assert report.gaps.crs.to_epsg() == 4490
    assert report.crs == "EPSG:4490"
    assert report.working_crs.startswith("EPSG:45")  # Gauss–Krüger zone
    gap = report.gaps.iloc[0]
    assert gap["area_m2"] == pytest.approx(20_000.0, rel=0.01)
    assert gap["households"] == int(
        plan["grids"].loc[plan["grids"]["grid_code"] == code, "households"].iloc[0]
    )


def test_grids_without_community_column_are_placed(plan):
    report = _check(plan, plan["grids"].drop(columns="community_code"))
    assert report.clean
    assert report.grids["community_code"].tolist() == (
        plan["grids"]["community_code"].tolist()
    )


def test_progress_is_reported(plan):
    calls = []
    _check(plan, progress=lambda s, d, t: calls.append((s, d, t)))
    assert calls[0] == ("coverage", 0, 7)
    assert calls[-1] == ("coverage", 7, 7)


def test_contract_errors(plan):
    naive = plan["grids"].set_crs(None, allow_override=True)
    with pytest.raises(MissingCRSError, match="'grids' has no CRS"):
        find_coverage_issues(naive, plan["communities"])
    with pytest.raises(CRSMismatchError, match="'pois' is in"):
        _check(plan, pois=plan["pois"].to_crs(4326))
    with pytest.raises(
        MissingColumnError, match=r"'grids' has no column\(s\) \['code'\]"
    ):
        _check(plan, grid_code_col="code")
    with pytest.raises(MissingColumnError, match="worker_phone"):
        _check(plan, worker_col="worker_phone")
    with pytest.raises(InputError, match="sliver_width_m must be > 0"):
        _check(plan, sliver_width_m=0)


def test_report_file_and_folium_map(plan, tmp_path):
    grids = plan["grids"][plan["grids"]["grid_code"] != "42100200100104"]
    report = _check(plan, grids)
    path = tmp_path / "report.gpkg"
    written = write_coverage_report(report, str(path))
    assert written == list(REPORT_LAYERS)
    assert set(pyogrio.list_layers(path)[:, 0]) == set(REPORT_LAYERS)
    gaps = gpd.read_file(path, layer="gaps")
    assert len(gaps) == 1
    assert gaps.crs == plan["grids"].crs
    folium = pytest.importorskip("folium")
    m = folium.Map(location=[30.3, 111.0], zoom_start=15, tiles=None)
    add_coverage_layers(m, report)
    html = m.get_root().render()
    assert "gaps (1)" in html
    assert "uncovered_points (6)" in html
    assert "overlaps" not in html  # empty layers are not drawn


def test_cli_file_mode(plan, tmp_path):
    import typer
    from typer.testing import CliRunner

    from spatialgrid.cli.coverage import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep "coverage" a sub-command
        pass

    grids = plan["grids"][plan["grids"]["grid_code"] != "42100200100104"]
    files = {}
    for name, frame in {**plan, "grids": grids}.items():
        files[name] = tmp_path / f"{name}.gpkg"
        frame.to_file(files[name])
    out = tmp_path / "out" / "report.gpkg"
    repaired = tmp_path / "repaired.gpkg"
    args = ["coverage", "--grids", files["grids"], "--communities",
            files["communities"], "--blocks", files["blocks"], "--buildings",
            files["buildings"], "--shops", files["pois"], "--addresses",
            files["addresses"], "--streets", files["streets"], "--out", out,
            "--repaired-out", repaired, "--map", tmp_path / "map.html"]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    assert data["summary"]["unassigned"]["count"] == 1
    assert data["summary"]["gaps"]["households"] == int(
        plan["grids"]
        .loc[plan["grids"]["grid_code"] == "42100200100104", "households"]
        .iloc[0]
    )
    assert data["proposals"]["territory_flagged"] == 1  # 4xx + 4xx > 500
    assert out.exists()
    assert "territory" in pyogrio.list_layers(out)[:, 0]
    assert (tmp_path / "map.html").exists()
    assert repaired.exists()
    bad = CliRunner().invoke(app, ["coverage", "--grids", str(files["grids"]),
                                   "--out", str(out)])  # fmt: skip
    assert bad.exit_code == 2
    assert "--communities" in bad.output


def test_sample_city_faults():
    sample = pytest.importorskip("spatialgrid.sample")
    city = sample.generate_city(n_communities=3)
    blocks = city.blocks
    # A simple deterministic plan: every block its own grid.
    grids = blocks[["block_id", "community_code", "households", "geometry"]].copy()
    grids["grid_code"] = [
        f"{c}{i:02d}" for i, c in enumerate(grids["community_code"], start=1)
    ]
    layers = {
        "blocks": blocks,
        "buildings": city.buildings,
        "addresses": city.addresses,
        "pois": city.pois,
    }
    clean = find_coverage_issues(grids, city.communities, **layers)
    base_gaps = len(clean.gaps)
    # Streets between blocks may be community area in no block: whatever the clean
    # plan shows, removing a grid adds exactly one gap with its households.
    k = int(np.argmax(grids["households"].to_numpy()))
    removed = grids.iloc[k]
    report = find_coverage_issues(grids.drop(index=grids.index[k]), city.communities,
                                  **layers)  # fmt: skip
    touching = report.gaps[report.gaps.intersects(removed.geometry.buffer(-0.01))]
    assert len(report.gaps) <= base_gaps + 1
    assert len(touching) == 1
    in_removed = shapely.area(
        shapely.intersection(touching.geometry.iloc[0], removed.geometry)
    )
    assert in_removed == pytest.approx(removed.geometry.area, rel=1e-6)
    if base_gaps == 0:
        assert touching["households"].iloc[0] == pytest.approx(removed["households"])


@pytest.mark.db
def test_database_mode_checks_the_active_plan(db_session):
    sample = pytest.importorskip("spatialgrid.sample")
    from spatialgrid.cli.coverage import load_plan_layers
    from spatialgrid.db.repository import activate_plan, create_plan, save_city

    city = sample.generate_city(n_communities=2)
    save_city(city, session=db_session)
    grids = city.blocks[["block_id", "community_code", "households", "geometry"]]
    grids = grids.assign(
        grid_code=[f"{c}{i:02d}" for i, c in enumerate(grids["community_code"], 1)],
        n_blocks=1,
    )
    k = int(np.argmax(grids["households"].to_numpy()))
    removed = grids.iloc[k]
    plan_grids = grids.drop(index=grids.index[k])
    plan_id = create_plan(
        plan_grids.drop(columns="block_id"),
        plan_grids[["block_id", "grid_code"]],
        session=db_session,
        name="one block missing",
        parameters={},
    )
    activate_plan(plan_id, session=db_session)
    layers = load_plan_layers(session=db_session)
    assert layers.pop("plan_id") == plan_id
    report = find_coverage_issues(layers.pop("grids"), layers.pop("communities"),
                                  **layers)  # fmt: skip
    assert report.crs == "EPSG:4490"
    assert report.summary["gaps"]["count"] == 1
    assert report.gaps["households"].iloc[0] == pytest.approx(removed["households"])
    assert report.gaps["area_m2"].iloc[0] == pytest.approx(
        removed.geometry.area, rel=1e-4
    )
