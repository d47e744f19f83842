"""Benchmark: spatialgrid vs spopt MaxP vs GerryChain on the same blocks.

Usage::

    .venv/bin/python bench/partition.py                    # city + Nanjing, all methods
    .venv/bin/python bench/partition.py --data city --methods spatialgrid
    .venv/bin/python bench/partition.py --peer-budget 120  # seconds per peer and dataset

Datasets: ``city`` — the generated city (``spatialgrid.sample.generate_city`` with 92
communities, ~300k households; a jittered-lattice stand-in built here when that
module is missing), ``nanjing`` — the Nanjing Xinjiekou OSM extract through
``spatialgrid.importers.import_osm`` (skipped when the importer is missing).

Each (method, dataset) runs in its own child process so that peak memory (max RSS)
belongs to that method alone. Printed per method: share of grids within bounds,
share of feasible communities (necessary conditions of
:func:`spatialgrid.feasibility.check_feasibility` hold) entirely within bounds,
mean Polsby–Popper, wall time, peak memory, communities done.

Variants: ``spatialgrid`` (default: building compounds may be split as a last
resort for lumpiness), ``spatialgrid-keep`` (``split_compounds=False``).

Peers (bench-only dependencies: ``pip install spopt gerrychain``):

- spopt ``MaxPHeuristic`` with ``threshold = min`` (MaxP has no upper bound);
- GerryChain ``recursive_tree_part`` with k = the valid grid count nearest to
  H/450, target H/k and ε fitted so that target·(1±ε) stays inside the bounds.

Peers get ``--peer-budget`` seconds per dataset (communities left when it runs out
are counted as not done) and ``--community-timeout`` seconds per community.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NANJING = ROOT.parent / "shared" / "data" / "osm" / "nanjing_xinjiekou.osm"
LO, HI = 400, 500


# ------------------------------------------------------------------------- data


def lattice_city(
    n_communities: int = 92, *, seed: int = 0, households: int = 3000
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A stand-in city: Voronoi blocks of a jittered lattice, lumpy households.

    Each community is a 6 x 6 patch of blocks (tiling exactly, shared edges);
    households per block are log-normal (lumpy) scaled to about ``households``
    per community; each block gets a few building footprints (households spread
    over them) so that blocks can be split by whole buildings.
    """
    rng = np.random.default_rng(seed)
    per_side = 6
    cols = math.ceil(math.sqrt(n_communities))
    rows = math.ceil(n_communities / cols)
    nx_, ny_ = cols * per_side, rows * per_side
    size = 120.0
    x0, y0 = 500_000.0, 3_357_000.0
    gx, gy = np.meshgrid(np.arange(nx_), np.arange(ny_))
    px = x0 + (gx.ravel() + 0.5 + rng.uniform(-0.3, 0.3, gx.size)) * size
    py = y0 + (gy.ravel() + 0.5 + rng.uniform(-0.3, 0.3, gy.size)) * size
    frame = shapely.box(x0, y0, x0 + nx_ * size, y0 + ny_ * size)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(
            shapely.multipoints(np.c_[px, py]), extend_to=frame, ordered=True
        )
    )
    cells = shapely.intersection(cells, frame)
    ccol = gx.ravel() // per_side
    crow = gy.ravel() // per_side
    comm_idx = crow * cols + ccol
    keep = comm_idx < n_communities
    recs, geoms, blds = [], [], []
    for c in range(n_communities):
        members = np.flatnonzero(keep & (comm_idx == c))
        raw = rng.lognormal(0.0, 0.6, len(members))
        target = households * rng.uniform(0.8, 1.2)
        hh = np.maximum(np.round(raw / raw.sum() * target), 0).astype(int)
        code = f"421002{(c // 20) + 1:03d}{(c % 20) + 1:03d}"
        for m, h in zip(members, hh, strict=True):
            bid = f"C{c}_B{m}"
            recs.append(
                {
                    "block_id": bid,
                    "community_code": code,
                    "households": int(h),
                    "households_source": "planner",
                }
            )
            geoms.append(cells[m])
            # buildings: a small grid of footprints inside the block
            inner = shapely.buffer(cells[m], -8.0)
            if inner.is_empty:
                continue
            minx, miny, maxx, maxy = inner.bounds
            nb = max(2, int(h // 40))
            side = math.ceil(math.sqrt(nb))
            xs = np.linspace(minx, maxx, side + 2)[1:-1]
            ys = np.linspace(miny, maxy, side + 2)[1:-1]
            pts = [(x, y) for x in xs for y in ys]
            foot = [shapely.box(x - 6, y - 6, x + 6, y + 6) for x, y in pts]
            foot = [f for f in foot if inner.contains(f)]
            for k, f in enumerate(foot):
                blds.append(
                    {
                        "building_id": f"{bid}_{k}",
                        "block_id": bid,
                        "households": h / len(foot),
                        "geometry": f,
                    }
                )
    blocks = gpd.GeoDataFrame(recs, geometry=geoms, crs="EPSG:4546")
    buildings = gpd.GeoDataFrame(blds, geometry="geometry", crs="EPSG:4546")
    return blocks, buildings


def load_data(name: str) -> dict:
    """Blocks (+ buildings, internal roads) of a dataset, and where they came from."""
    if name == "city":
        try:
            from spatialgrid.sample import generate_city

            city = generate_city(n_communities=92)
            streets = city.streets
            return {
                "source": "spatialgrid.sample.generate_city(n_communities=92)",
                "blocks": city.blocks,
                "buildings": city.buildings,
                "internal_roads": streets[streets["internal"].astype(bool)],
            }
        except ImportError:
            blocks, buildings = lattice_city(92)
            return {
                "source": "bench lattice_city(92) (spatialgrid.sample missing)",
                "blocks": blocks,
                "buildings": buildings,
                "internal_roads": None,
            }
    if name == "nanjing":
        from spatialgrid.importers import import_osm

        city = import_osm(NANJING)
        if len(city.blocks) == 0:
            msg = "the Nanjing import produced no blocks"
            raise SystemExit(msg)
        streets = city.streets
        return {
            "source": f"spatialgrid.importers.import_osm({NANJING.name})",
            "blocks": city.blocks,
            "buildings": city.buildings,
            "internal_roads": streets[streets["internal"].astype(bool)],
        }
    msg = f"unknown dataset {name!r}"
    raise SystemExit(msg)


# --------------------------------------------------------------------- scoring


def _score(
    blocks: gpd.GeoDataFrame, labels: pd.Series, feasible: dict[str, bool]
) -> dict:
    """Grids from a block → label mapping (labels unique across communities)."""
    proj = (
        blocks.to_crs(blocks.estimate_utm_crs()) if blocks.crs.is_geographic else blocks
    )
    frame = proj[["community_code", "households", "geometry"]].copy()
    frame["grid"] = labels.reindex(frame.index)
    frame = frame[frame["grid"].notna()]
    grids = frame.dissolve(
        by="grid", aggfunc={"households": "sum", "community_code": "first"}
    )
    pp = 4 * math.pi * grids.area / grids.length**2
    within = grids["households"].between(LO, HI)
    by_comm = within.groupby(grids["community_code"]).all()
    feas_comms = [c for c, f in feasible.items() if f]
    done_feas = [c for c in feas_comms if c in by_comm.index]
    return {
        "grids": len(grids),
        "share_grids_within": float(within.mean()) if len(grids) else 0.0,
        "feasible_communities": len(feas_comms),
        "share_feasible_within": (
            sum(bool(by_comm[c]) for c in done_feas) / len(feas_comms)
            if feas_comms
            else float("nan")
        ),
        "mean_pp": float(pp.mean()) if len(grids) else float("nan"),
    }


class _Timeout(Exception):
    pass


def _alarm(_sig, _frm):  # pragma: no cover - signal handler
    raise _Timeout


def _valid_k(h: int) -> int | None:
    lo_k, hi_k = math.ceil(h / HI), h // LO
    if lo_k > hi_k or hi_k < 1:
        return None
    return min(max(round(h / ((LO + HI) / 2)), lo_k), hi_k)


def _per_community(blocks, run_one, budget_s, timeout_s) -> tuple[pd.Series, dict]:
    labels = pd.Series(index=blocks.index, dtype=object)
    t0 = time.perf_counter()
    done = failed = timed_out = skipped = 0
    signal.signal(signal.SIGALRM, _alarm)
    for code, comm in blocks.groupby("community_code", sort=True):
        if time.perf_counter() - t0 > budget_s:
            skipped += 1
            continue
        signal.alarm(int(timeout_s))
        try:
            out = run_one(comm)
            if out is None:
                failed += 1
            else:
                labels.loc[comm.index] = [f"{code}:{v}" for v in out]
                done += 1
        except _Timeout:
            timed_out += 1
        except Exception:
            failed += 1
        finally:
            signal.alarm(0)
    return labels, {
        "done": done,
        "failed": failed,
        "timed_out": timed_out,
        "skipped_budget": skipped,
    }


def _rook_w(comm: gpd.GeoDataFrame):
    from libpysal.weights import W

    from spatialgrid.adjacency import shared_edges

    edges = shared_edges(comm.geometry)
    neigh = {i: [] for i in range(len(comm))}
    for i, j in zip(edges["i"], edges["j"], strict=True):
        neigh[int(i)].append(int(j))
        neigh[int(j)].append(int(i))
    return W(neigh, silence_warnings=True)


def run_method(
    method: str,
    data: str,
    budget_s: float,
    timeout_s: float,
    feasible_file: Path | None = None,
) -> dict:
    """Run one method on one dataset in this process; return the scores.

    ``feasible_file``: JSON {community: feasible} written by the spatialgrid run
    (communities not proven infeasible); peers are scored on the same set. Without
    it the necessary conditions of ``check_feasibility`` decide.
    """
    warnings.simplefilter("ignore")
    d = load_data(data)
    blocks = d["blocks"].reset_index(drop=True)
    if feasible_file is not None and feasible_file.exists():
        feasible = json.loads(feasible_file.read_text())
    else:
        from spatialgrid.feasibility import check_feasibility

        feas = check_feasibility(
            blocks, buildings=d["buildings"], internal_roads=d["internal_roads"]
        )
        feasible = dict(
            zip(feas["community_code"], feas["feasible"].astype(bool), strict=True)
        )
    t0 = time.perf_counter()
    status: dict = {}
    if method in ("spatialgrid", "spatialgrid-keep"):
        from spatialgrid.partition import partition_blocks

        res = partition_blocks(
            blocks,
            buildings=d["buildings"],
            internal_roads=d["internal_roads"],
            min_households=LO,
            max_households=HI,
            split_compounds=method == "spatialgrid",
            seed=0,
        )
        if method == "spatialgrid":
            feasible = dict(
                zip(
                    res.diagnostics["community_code"],
                    res.diagnostics["feasible"].astype(bool).tolist(),
                    strict=True,
                )
            )
            if feasible_file is not None:
                feasible_file.write_text(json.dumps(feasible))
        wall = time.perf_counter() - t0
        g = res.grids
        proj = g.to_crs(g.estimate_utm_crs()) if g.crs.is_geographic else g
        pp = 4 * math.pi * proj.area / proj.length**2
        within = g["households"].between(LO, HI)
        by_comm = within.groupby(g["community_code"]).all()
        feas_comms = [c for c, f in feasible.items() if f]
        scores = {
            "grids": len(g),
            "share_grids_within": float(within.mean()),
            "feasible_communities": len(feas_comms),
            "share_feasible_within": sum(bool(by_comm[c]) for c in feas_comms)
            / max(len(feas_comms), 1),
            "mean_pp": float(pp.mean()),
        }
        status = {
            "done": len(res.diagnostics),
            "feasible_by": "spatialgrid exhaustive search / necessary conditions",
            "split_blocks": res.metrics["split_blocks"],
            "infeasible": res.metrics["infeasible_communities"],
            "statuses": res.diagnostics["status"].value_counts().to_dict(),
        }
    elif method == "maxp":
        from spopt.region import MaxPHeuristic

        def one(comm):
            comm = comm.reset_index(drop=True)
            if int(comm["households"].sum()) < LO:
                return None
            model = MaxPHeuristic(
                comm, _rook_w(comm), ["households"], "households", LO, top_n=2
            )
            model.solve()
            return list(model.labels_)

        labels, status = _per_community(blocks, one, budget_s, timeout_s)
        wall = time.perf_counter() - t0
        scores = _score(blocks, labels, feasible)
    elif method == "gerrychain":
        import networkx as nx
        from gerrychain import Graph
        from gerrychain.partition.initial_partition_generators import (
            recursive_tree_part,
        )

        from spatialgrid.adjacency import shared_edges

        def one(comm):
            comm = comm.reset_index(drop=True)
            h = int(comm["households"].sum())
            k = _valid_k(h)
            if k is None:
                return None
            target = h / k
            eps = min((HI - target) / target, (target - LO) / target)
            if k == 1:
                return [0] * len(comm)
            g = nx.Graph()
            for i, v in enumerate(comm["households"]):
                g.add_node(i, households=int(v))
            edges = shared_edges(comm.geometry)
            g.add_edges_from(
                zip(edges["i"].astype(int), edges["j"].astype(int), strict=True)
            )
            if not nx.is_connected(g):
                return None
            assign = recursive_tree_part(
                Graph.from_networkx(g),
                range(k),
                target,
                "households",
                eps,
                rng=0,
            )
            return [assign[i] for i in range(len(comm))]

        labels, status = _per_community(blocks, one, budget_s, timeout_s)
        wall = time.perf_counter() - t0
        scores = _score(blocks, labels, feasible)
    else:
        msg = f"unknown method {method!r}"
        raise SystemExit(msg)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "data": data,
        "source": d["source"],
        "communities": len(feasible),
        "households": int(blocks["households"].sum()),
        "blocks": len(blocks),
        **scores,
        "wall_s": round(wall, 2),
        "peak_mb": round(peak_mb, 1),
        "status": status,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["city", "nanjing"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["spatialgrid", "spatialgrid-keep", "maxp", "gerrychain"],
    )
    parser.add_argument("--peer-budget", type=float, default=300.0)
    parser.add_argument("--community-timeout", type=float, default=20.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--feasible-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = run_method(
            args.methods[0],
            args.data[0],
            args.peer_budget,
            args.community_timeout,
            args.feasible_file,
        )
        print("RESULT " + json.dumps(out))
        return
    rows = []
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench_partition_"))
    for data in args.data:
        feasible_file = tmp / f"feasible_{data}.json"
        for method in args.methods:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--data",
                data,
                "--methods",
                method,
                "--peer-budget",
                str(args.peer_budget),
                "--community-timeout",
                str(args.community_timeout),
                "--feasible-file",
                str(feasible_file),
            ]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, check=False, env=os.environ
            )
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                err = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                print(f"{data:8s} {method:11s} FAILED: {err[0]}")
                continue
            row = json.loads(line[0][7:])
            rows.append(row)
            print(
                f"{data:8s} {method:11s} grids={row['grids']:5d} "
                f"within={row['share_grids_within']:.1%} "
                f"feasible_comm_within={row['share_feasible_within']:.1%} "
                f"(of {row['feasible_communities']}) "
                f"PP={row['mean_pp']:.3f} wall={row['wall_s']:.1f}s "
                f"peak={row['peak_mb']:.0f}MB {row['status']}",
                flush=True,
            )
    if rows:
        print()
        table = pd.DataFrame(rows).drop(columns=["status"])
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
