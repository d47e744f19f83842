"""Benchmark: minimal-change rebalance vs. a full re-partition after a data change.

Usage::

    .venv/bin/python bench/redraw.py                 # 20 changes, seed 0
    .venv/bin/python bench/redraw.py --changes 5 --seed 3
    .venv/bin/python bench/redraw.py --full-check    # also re-partition the whole city once

On the generated city (``generate_city(n_communities=92)``, ~292k households) the
plan is made once with :func:`spatialgrid.partition.partition_blocks` (buildings and
internal roads given). Then 20 random changes (one block, ±50–600 households, never
below 0) are applied one at a time, each on top of the previous rebalanced plan. For
each change:

- **rebalance**: :func:`spatialgrid.rebalance.rebalance_plan` from the current plan;
- **full re-partition**: ``partition_blocks`` on the changed city, its grids matched
  to the current plan's codes (:func:`spatialgrid.plandiff.match_grid_codes`).

Households moved are measured for both with :func:`spatialgrid.plandiff.diff_plans`
against the current plan. ``partition_blocks`` seeds each community from its code,
so a full re-partition leaves every unchanged community's grids exactly as before:
the bench re-partitions the changed community only and keeps the rest (identical
result, 1/92 of the time); ``--full-check`` verifies that claim once.

Printed per change: block, delta, households of its grid(s) before the change,
``min`` = the minimum necessary move (households outside the bounds after the change:
a grid's surplus above max; below min, its deficit or its own households, whichever is
smaller — no repair can move fewer), rebalance moved
households / grids touched / seconds / violations in the community, the same for the
full re-partition; then medians and the targets (median moved ≤ 10 % of the full
re-partition's, median grids touched ≤ 3, every rebalance ≤ 2 s, repaired plans
within bounds wherever the full re-partition finds bounds).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spatialgrid.partition import partition_blocks  # noqa: E402
from spatialgrid.plandiff import diff_plans, match_grid_codes  # noqa: E402
from spatialgrid.rebalance import apply_household_changes, rebalance_plan  # noqa: E402
from spatialgrid.sample import generate_city  # noqa: E402

LO, HI = 400, 500


def _city(cache: Path | None):
    if cache is not None and cache.exists():
        return pickle.loads(cache.read_bytes())
    t0 = time.perf_counter()
    city = generate_city(n_communities=92)
    internal = city.streets[city.streets["internal"].astype(bool)]
    res = partition_blocks(
        city.blocks, buildings=city.buildings, internal_roads=internal, seed=0
    )
    print(f"city + partition: {time.perf_counter() - t0:.1f} s, {res.metrics}")
    if cache is not None:
        cache.write_bytes(pickle.dumps((city, res)))
    return city, res


def _viol(frame: pd.DataFrame, comm: str) -> int:
    g = frame[frame["community_code"] == comm]
    return int((~g["households"].between(LO, HI)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="pickle of city+plan")
    parser.add_argument("--full-check", action="store_true")
    parser.add_argument("--touch-weight", type=int, default=50)
    parser.add_argument("--beam-width", type=int, default=12)
    args = parser.parse_args()

    city, res = _city(args.cache)
    internal = city.streets[city.streets["internal"].astype(bool)]
    blocks = city.blocks.copy()
    grids, assign = res.grids, res.assignments
    used = set(grids["grid_code"])
    rng = np.random.default_rng(args.seed)
    rows = []
    print(
        f"{'#':>2} {'block':>8} {'delta':>5} {'grid hh':>15} {'min':>5} | {'rb moved':>8} "
        f"{'touched':>7} {'s':>5} {'viol':>4} | {'full moved':>10} {'touched':>7} "
        f"{'viol':>4}"
    )
    for i in range(args.changes):
        b = str(rng.choice(blocks["block_id"].to_numpy()))
        delta = int(rng.integers(50, 601)) * (1 if rng.random() < 0.5 else -1)
        blocks = apply_household_changes(blocks, {b: delta})
        comm = str(blocks.loc[blocks["block_id"] == b, "community_code"].iloc[0])
        g_of = assign.loc[assign["block_id"] == b, "grid_code"].tolist()
        hh_before = grids.set_index("grid_code").loc[g_of, "households"].tolist()
        # Households outside the bounds after the change (a guide to the least
        # that must move): a grid's surplus above max; below min, its deficit or
        # (dissolving it) its own households, whichever is smaller.
        shares = assign.loc[assign["block_id"] == b, "households"].to_numpy(float)
        old_total = shares.sum()
        new_total = int(blocks.loc[blocks["block_id"] == b, "households"].iloc[0])
        lb = 0
        for h, s in zip(hh_before, shares, strict=True):
            h2 = h - s + (new_total * s / old_total if old_total else new_total)
            lb += max(0, h2 - HI) + (min(LO - h2, h2) if h2 < LO else 0)
        lb = round(lb)

        t0 = time.perf_counter()
        rb = rebalance_plan(
            blocks,
            grids,
            assign,
            buildings=city.buildings,
            used_codes=used,
            touch_weight=args.touch_weight,
            beam_width=args.beam_width,
        )
        secs = time.perf_counter() - t0
        d_rb = diff_plans(grids, assign, rb.grids, rb.assignments)

        # Full re-partition (changed community; the others come out identical).
        part = partition_blocks(
            blocks[blocks["community_code"] == comm],
            buildings=city.buildings,
            internal_roads=internal,
            seed=0,
        )
        mapping = match_grid_codes(
            assign[assign["community_code"] == comm], part.assignments
        )
        f_assign = part.assignments.assign(
            grid_code=part.assignments["grid_code"].map(mapping)
        )
        f_grids = part.grids.assign(grid_code=part.grids["grid_code"].map(mapping))
        old_c = grids[grids["community_code"] == comm]
        old_a = assign[assign["community_code"] == comm]
        d_full = diff_plans(old_c, old_a, f_grids, f_assign)
        full_touched = sum(
            d_full.summary[k] for k in ("grids_added", "grids_removed", "grids_changed")
        )
        row = {
            "change": i + 1,
            "block": b,
            "delta": delta,
            "grid_hh": hh_before,
            "lower_bound": lb,
            "rb_moved": d_rb.summary["households_moved"],
            "rb_touched": rb.summary["n_grids_touched"],
            "rb_seconds": secs,
            "rb_viol": _viol(rb.grids, comm),
            "full_moved": d_full.summary["households_moved"],
            "full_touched": full_touched,
            "full_viol": _viol(part.grids, comm),
            "method": ",".join(rb.communities["method"]) or "none",
        }
        rows.append(row)
        print(
            f"{i + 1:>2} {b:>8} {delta:>+5} {hh_before!s:>15} {lb:>5} | {row['rb_moved']:>8} "
            f"{row['rb_touched']:>7} {secs:>5.2f} {row['rb_viol']:>4} | "
            f"{row['full_moved']:>10} {full_touched:>7} {row['full_viol']:>4}  "
            f"{row['method']}"
        )
        grids, assign = rb.grids, rb.assignments
        used |= set(grids["grid_code"])

    med_rb = statistics.median(r["rb_moved"] for r in rows)
    med_full = statistics.median(r["full_moved"] for r in rows)
    med_touch = statistics.median(r["rb_touched"] for r in rows)
    med_lb = statistics.median(r["lower_bound"] for r in rows)
    worst = max(r["rb_seconds"] for r in rows)
    bounds_ok = sum(
        1 for r in rows if r["rb_viol"] == 0 or r["rb_viol"] <= r["full_viol"]
    )
    print()
    print(f"median households moved: rebalance {med_rb}, full re-partition {med_full}")
    print(
        f"median minimum necessary move (households outside the bounds after the "
        f"change, column 'min'): {med_lb}"
    )
    ratio = med_rb / med_full if med_full else float("nan")
    print(f"ratio rebalance / full {ratio:.3f} (target <= 0.10)")
    floor = med_lb / med_full if med_full else float("nan")
    print(
        f"ratio minimum necessary / full {floor:.3f} (no repair can go below this; "
        f"rebalance / minimum {med_rb / med_lb if med_lb else float('nan'):.2f})"
    )
    print(f"median grids touched: {med_touch} (target <= 3)")
    print(f"slowest rebalance: {worst:.2f} s (target <= 2 s)")
    print(
        f"changes whose community is within bounds where the full re-partition is: "
        f"{bounds_ok}/{len(rows)}"
    )
    if args.full_check:
        t0 = time.perf_counter()
        whole = partition_blocks(
            blocks, buildings=city.buildings, internal_roads=internal, seed=0
        )
        print(f"full city re-partition: {time.perf_counter() - t0:.1f} s")
        print(f"{len(whole.grids)} grids")


if __name__ == "__main__":
    main()
