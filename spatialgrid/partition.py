"""Street blocks → grids of ``min_households``–``max_households`` households.

The partition engine behind ``spatialgrid partition``. Hard rules (DOMAIN.md):
every grid is one contiguous piece (units adjacent along a shared street edge, rook
contiguity, not a corner), lies inside one community, and holds households within
the bounds; the grids of a community cover exactly its blocks. The number of grids
of each community is chosen by the solver within ``ceil(H/max)..floor(H/min)``.

Per community (communities are independent and small: 10–100 units):

1. **Units**: blocks; the blocks of a compound (小区) are one unit while it fits
   under max; a block above max is split along internal roads, then by whole
   buildings (:mod:`spatialgrid.split`).
2. **Feasibility** (:mod:`spatialgrid.feasibility`): household band, units above
   max, islands, choke points — with reasons.
3. **Search**: first an exhaustive enumeration of plans (grids = connected unit
   sets with households in bounds, taken west to east, pruned as soon as a
   connected part of the rest becomes indivisible; compact, block-respecting
   grids tried first). When it finishes without a plan, that is a *proof* that
   none exists for these units. When its step budget runs out, seeded random
   spanning trees are cut recursively into pieces whose households lie in the
   bounds while the rest stays divisible (the recursive tree partition of
   GerryChain / ReCom, DeFord, Duchin & Solomon 2021, generalised from a fixed k
   and ±ε to a household *band* and a free k). The best plans then go through a
   local search of boundary-unit moves that keep every grid contiguous and within
   bounds while lowering the shape cost (mean inverse Polsby–Popper plus a
   penalty on cuts through blocks). Step and restart counts, not time, bound the
   work, so a seed reproduces a plan exactly.
4. **Lumpiness**: when no whole-block plan exists and buildings are known, blocks
   are split into parts of whole buildings (building compounds kept whole first,
   then — ``split_compounds`` — split too, then finer parts) and the search runs
   again; blocks whose parts end in different grids are reported as deviations.
5. **Infeasible** communities still get the plan with the fewest and smallest
   violations (an island is its own grid, an unsplittable oversize block its own
   grid), and every violating grid carries a flag saying why.
6. **Checks**: bounds, contiguity (graph), nesting, exact cover (union equality and
   no overlap, measured on the geometries) and household conservation are
   verified on the result, never assumed; failures are flagged, not hidden.
7. **Codes**: west→east, north→south (:mod:`spatialgrid.codes`).
"""

from __future__ import annotations

import logging
import math
import random
import time
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely
from pyproj import CRS

from spatialgrid.adjacency import polsby_popper, shared_edges
from spatialgrid.codes import assign_grid_codes, check_community_code, sequence_digits
from spatialgrid.crs import epsg_or_wkt, require_same_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import InfeasiblePartitionError, InputError
from spatialgrid.feasibility import CommunityFeasibility, assess_units, has_valid_k
from spatialgrid.progress import report
from spatialgrid.split import split_block
from spatialgrid.validate import LINEAL, POLYGONAL, require_columns, require_frame

if TYPE_CHECKING:
    from spatialgrid.progress import ProgressCallback

__all__ = ["PartitionResult", "partition_blocks"]

log = logging.getLogger(__name__)

_BIG = 1_000_000  # one violating grid outweighs any household amount
_SPLIT_PENALTY = 1.0  # shape-cost weight of a cut through a block (per grid side)
_POLISH = 3  # best plans (by shape cost) that get the local search


@dataclass(frozen=True)
class PartitionResult:
    """Grids, per-block assignments, per-community diagnostics and metrics.

    Attributes
    ----------
    grids
        One row per grid: ``grid_code``, ``community_code``, ``households``,
        ``n_blocks``, ``polsby_popper``, ``split_blocks`` (ids of blocks shared with
        other grids), ``flags`` (empty when the grid obeys every rule; else why not),
        geometry in the input CRS.
    assignments
        One row per (block, grid): ``block_id``, ``grid_code``, ``community_code``,
        ``households`` (the block's households in that grid), ``part_id`` (``None``
        for a whole block), ``unit`` (``"block"``, ``"compound"`` or ``"part"``).
        Indexed by the input blocks' index (repeated for split blocks).
    diagnostics
        One row per community: ``community_code``, ``households``, ``n_blocks``,
        ``n_units``, ``k_min``, ``k_max``, ``k``, ``status`` (``"ok"``, ``"split"``
        when blocks were split, ``"infeasible"``), ``reasons``, ``notes``,
        ``violations``, ``split_blocks``, ``islands``, ``choke_points``,
        ``gap_m2``, ``overlap_m2``, ``cover_ok``.
    deviations
        Block parts that follow no street: ``block_id``, ``part_id``,
        ``grid_code``, ``households``, ``method``, ``reason``, geometry (input CRS).
    metrics
        Totals: grids, share within bounds, feasible communities within bounds,
        mean Polsby–Popper, cut length, split blocks, seconds.
    parameters
        The arguments used (JSON-serialisable), for storing with a plan.
    """

    grids: gpd.GeoDataFrame
    assignments: pd.DataFrame
    diagnostics: pd.DataFrame
    deviations: gpd.GeoDataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every grid obeys every rule."""
        return bool((self.grids["flags"] == "").all())


# --------------------------------------------------------------------------- units


@dataclass
class _Units:
    """Partition units of one community (working CRS)."""

    geom: list[shapely.Geometry]
    hh: list[int]
    blocks: list[tuple[int, ...]]  # local block positions
    kind: list[str]  # "block" | "compound" | "part"
    origin: list[int]  # local block position of a part, else -1
    label: list[str]
    splittable: list[bool]
    unsplittable_reason: list[str]
    split_method: dict[int, str] = field(default_factory=dict)  # local block -> method
    split_reason: dict[int, str] = field(default_factory=dict)  # local block -> why


@dataclass
class _Graph:
    n: int
    nbrs: list[list[tuple[int, float, bool]]]  # (v, shared length, inside one block)
    area: list[float]
    perim: list[float]
    cx: list[float]
    cy: list[float]


def _graph(units: _Units) -> _Graph:
    geoms = np.asarray(units.geom, dtype=object)
    n = len(geoms)
    edges = shared_edges(geoms)
    cents = shapely.centroid(geoms)
    nbrs: list[list[tuple[int, float, bool]]] = [[] for _ in range(n)]
    for i, j, length in zip(
        edges["i"].to_numpy(),
        edges["j"].to_numpy(),
        edges["length_m"].to_numpy(),
        strict=True,
    ):
        i, j = int(i), int(j)
        internal = units.origin[i] >= 0 and units.origin[i] == units.origin[j]
        nbrs[i].append((j, float(length), internal))
        nbrs[j].append((i, float(length), internal))
    return _Graph(
        n=n,
        nbrs=nbrs,
        area=[float(a) for a in shapely.area(geoms)],
        perim=[float(p) for p in shapely.length(geoms)],
        cx=[float(x) for x in shapely.get_x(cents)],
        cy=[float(y) for y in shapely.get_y(cents)],
    )


# -------------------------------------------------------------------------- search


def _viol(h: int, lo: int, hi: int) -> int:
    if h < lo:
        return _BIG + lo - h
    if h > hi:
        return _BIG + h - hi
    return 0


def _min_viol(h: int, lo: int, hi: int) -> int:
    """Smallest violation any split of ``h`` households can reach (0 if divisible)."""
    if h == 0 or has_valid_k(h, min_households=lo, max_households=hi):
        return 0
    best = _viol(h, lo, hi)
    k = max(1, h // hi)
    for kk in (k, k + 1):
        if h > kk * hi:
            best = min(best, _BIG + h - kk * hi)
        elif h < kk * lo:
            best = min(best, _BIG + kk * lo - h)
    return best


@lru_cache(maxsize=16)
def _tables_np(lo: int, hi: int, size: int) -> tuple[list, list, list]:
    h = np.arange(size + 1, dtype=np.int64)
    k_min = -(-h // hi)
    k_max = h // lo
    valid = (k_min <= k_max) & (k_max >= 1) | (h == 0)
    # smallest violation: one grid absorbs the remainder
    kk = np.maximum(h // hi, 1)
    minv = np.full(len(h), np.iinfo(np.int64).max, dtype=np.int64)
    for k in (kk, kk + 1):
        over = np.where(h > k * hi, _BIG + h - k * hi, np.iinfo(np.int64).max)
        under = np.where(h < k * lo, _BIG + k * lo - h, np.iinfo(np.int64).max)
        minv = np.minimum(minv, np.minimum(over, under))
    one = np.where(h < lo, _BIG + lo - h, np.where(h > hi, _BIG + h - hi, 0))
    minv = np.minimum(minv, one)
    minv[valid] = 0
    # slack: how far the total is from becoming indivisible, capped and scaled
    cap = max((hi - lo) / 2, 1.0)
    best = np.zeros(len(h))
    for k in range(1, size // lo + 2):
        m = np.minimum(h - k * lo, k * hi - h).astype(float)
        best = np.maximum(best, m)
    slack = np.minimum(best, cap) / cap
    slack[0] = 1.0
    return valid.tolist(), minv.tolist(), slack.tolist()


def _tables(lo: int, hi: int, total: int) -> tuple[list, list, list]:
    """Per household total 0..total: divisible?, least violation, scaled slack."""
    size = 1 << max(total, 1).bit_length()  # cache by power of two
    return _tables_np(lo, hi, size)


class _Solver:
    """Search over plans of one connected component of units (local indices)."""

    def __init__(
        self,
        graph: _Graph,
        hh: list[int],
        nodes: list[int],
        *,
        lo: int,
        hi: int,
        rng: random.Random,
    ) -> None:
        self.nodes = nodes
        loc = {u: i for i, u in enumerate(nodes)}
        n = self.n = len(nodes)
        self.lo, self.hi, self.rng = lo, hi, rng
        self.h = [hh[u] for u in nodes]
        self.area = [graph.area[u] for u in nodes]
        self.perim = [graph.perim[u] for u in nodes]
        self.nb: list[list[tuple[int, float, bool]]] = [
            [
                (loc[v], length, internal)
                for v, length, internal in graph.nbrs[u]
                if v in loc
            ]
            for u in nodes
        ]
        eu, ev, ei = [], [], []
        for i in range(n):
            for j, _, internal in self.nb[i]:
                if i < j:
                    eu.append(i)
                    ev.append(j)
                    ei.append(internal)
        self.edge_list = list(zip(eu, ev, ei, strict=True))
        self.internal_pairs = {(a, b) for a, b, i in zip(eu, ev, ei, strict=True) if i}
        # moment sums for the compactness of tree pieces
        cx = [graph.cx[u] for u in nodes]
        cy = [graph.cy[u] for u in nodes]
        self.cx, self.cy = cx, cy
        ox, oy = sum(cx) / n, sum(cy) / n
        self.sx = [a * (x - ox) for a, x in zip(self.area, cx, strict=True)]
        self.sy = [a * (y - oy) for a, y in zip(self.area, cy, strict=True)]
        self.sq = [
            a * ((x - ox) ** 2 + (y - oy) ** 2 + a / (2 * math.pi))
            for a, x, y in zip(self.area, cx, cy, strict=True)
        ]
        total = sum(self.h)
        self.valid, self.minv, self.slack = _tables(lo, hi, total)
        self.cap = max((hi - lo) / 2, 1.0)
        total_area = sum(self.area)
        k_mid = max(1, round(total / ((lo + hi) / 2)))
        self.scale = math.sqrt(max(total_area / k_mid, 1e-9))

    # --- recursive tree partition --------------------------------------------
    def _tree(self, alive_mask: list[bool] | None = None) -> list[list[int]]:
        """A random spanning tree (Kruskal on random weights) of the alive units.

        Edges inside one block get lower weights so a block's parts hang together
        in the tree and cuts fall on streets when they can.
        """
        tree: list[list[int]] = [[] for _ in range(self.n)]
        rnd = self.rng.random
        weighted = sorted(
            ((rnd() * 0.5 if i else 0.5 + rnd()), a, b)
            for a, b, i in self.edge_list
            if alive_mask is None or (alive_mask[a] and alive_mask[b])
        )
        parent = list(range(self.n))
        for _, a, b in weighted:
            ra = a
            while parent[ra] != ra:
                parent[ra] = parent[parent[ra]]
                ra = parent[ra]
            rb = b
            while parent[rb] != rb:
                parent[rb] = parent[parent[rb]]
                rb = parent[rb]
            if ra != rb:
                parent[ra] = rb
                tree[a].append(b)
                tree[b].append(a)
        return tree

    def _cuts(
        self, tree: list[list[int]], alive: list[int], strict: bool
    ) -> tuple[list[tuple[float, int, bool]], dict[int, int], dict[int, int]]:
        """Candidate cuts of a spanning tree of ``alive``: (rank, node, take_sub)."""
        lo, hi, h = self.lo, self.hi, self.h
        valid, minv, slack = self.valid, self.minv, self.slack
        area, sx, sy, sq = self.area, self.sx, self.sy, self.sq
        root = alive[0]
        order = [root]
        par = {root: -1}
        for u in order:  # BFS order; appending while iterating is intended
            for v in tree[u]:
                if v not in par:
                    par[v] = u
                    order.append(v)
        sh = {u: h[u] for u in order}
        sa = {u: area[u] for u in order}
        sxx = {u: sx[u] for u in order}
        syy = {u: sy[u] for u in order}
        sqq = {u: sq[u] for u in order}
        for u in reversed(order[1:]):
            p = par[u]
            sh[p] += sh[u]
            sa[p] += sa[u]
            sxx[p] += sxx[u]
            syy[p] += syy[u]
            sqq[p] += sqq[u]
        total = sh[root]
        t_a, t_x, t_y, t_q = sa[root], sxx[root], syy[root], sqq[root]
        cands: list[tuple[float, int, bool]] = []
        here = _viol(total, lo, hi) * 2
        best_score = None
        for v in order[1:]:
            s = sh[v]
            r = total - s
            internal = (min(v, par[v]), max(v, par[v])) in self.internal_pairs
            for take_sub, piece, rest in ((True, s, r), (False, r, s)):
                if strict:
                    if not (lo <= piece <= hi and valid[rest]):
                        continue
                else:
                    score = (_viol(piece, lo, hi) + minv[rest]) * 2
                    if score >= here or (best_score is not None and score > best_score):
                        continue
                    if best_score is None or score < best_score:
                        best_score = score
                        cands = []
                if take_sub:
                    pa, px, py, pq = sa[v], sxx[v], syy[v], sqq[v]
                else:
                    pa = t_a - sa[v]
                    px, py, pq = t_x - sxx[v], t_y - syy[v], t_q - sqq[v]
                inertia = (pq - (px * px + py * py) / pa) / (pa * pa)
                rank = inertia * 2 * math.pi + (1.0 - slack[rest]) * 6.0
                cands.append((rank + (10.0 if internal else 0.0), v, take_sub))
        return cands, par, sh

    def recursive_tree_part(
        self, *, strict: bool, redraws: int = 8
    ) -> list[list[int]] | None:
        """One seeded random-tree partition; ``None`` if strict and stuck.

        Each step draws up to ``redraws`` random spanning trees of what is left
        and cuts off one grid (its households in bounds, the rest divisible).
        """
        lo, hi, rng = self.lo, self.hi, self.rng
        alive = list(range(self.n))
        mask = [True] * self.n
        total = sum(self.h)
        pieces: list[list[int]] = []
        while True:
            if lo <= total <= hi or len(alive) == 1:
                pieces.append(alive)
                return pieces if (not strict or lo <= total <= hi) else None
            for _ in range(redraws):
                tree = self._tree(mask)
                cands, par, sh = self._cuts(tree, alive, strict)
                if cands:
                    break
            if not cands:
                if strict:
                    return None
                pieces.append(alive)
                return pieces
            cands.sort()
            # biased to the most compact piece, random among the good ones
            _, v, take_sub = cands[int(len(cands) * rng.random() ** 3)]
            subtree = [v]
            seen = {v, par[v]}
            for u in subtree:
                for w in tree[u]:
                    if w not in seen:
                        seen.add(w)
                        subtree.append(w)
            sub_set = set(subtree)
            if take_sub:
                piece_nodes = subtree
                alive = [u for u in alive if u not in sub_set]
                total -= sh[v]
            else:
                piece_nodes = [u for u in alive if u not in sub_set]
                alive = subtree
                total = sh[v]
            for u in piece_nodes:
                mask[u] = False
            pieces.append(piece_nodes)

    # --- exact enumeration (small components) ---------------------------------
    def exact(
        self, *, budget: int = 20000, max_solutions: int = 64
    ) -> tuple[list[list[list[int]]], bool]:
        """All (up to ``max_solutions``) valid plans by exhaustive search.

        Grids are enumerated as connected unit sets containing the first
        unassigned unit (west to east), with households in bounds, pruned when a
        connected part of the unassigned units becomes indivisible. Returns the
        plans found and whether the search finished within ``budget`` steps
        (finished with no plan = proof that no valid plan exists for these units).
        """
        lo, hi, h, valid = self.lo, self.hi, self.h, self.valid
        nb = [[v for v, _, _ in lst] for lst in self.nb]  # ids only: hot loops
        n = self.n
        order = sorted(range(n), key=lambda u: (self.cx[u], -self.cy[u]))
        free = [True] * n
        steps = 0
        solutions: list[list[list[int]]] = []
        pieces: list[list[int]] = []

        class _Stop(Exception):
            pass

        def rest_ok(members: list[int]) -> bool:
            # Only the free parts touching the new grid changed; each must stay
            # divisible into grids within bounds.
            seen: set[int] = set()
            add = seen.add
            for m in members:
                for s in nb[m]:
                    if not free[s] or s in seen:
                        continue
                    add(s)
                    stack, tot = [s], 0
                    pop, push = stack.pop, stack.append
                    while stack:
                        x = pop()
                        tot += h[x]
                        for v in nb[x]:
                            if free[v] and v not in seen:
                                add(v)
                                push(v)
                    if not valid[tot]:
                        return False
            return True

        def subsets(members: list[int], total: int, frontier: list[int], banned: set):
            nonlocal steps
            steps += 1
            if steps > budget:
                raise _Stop
            if total >= lo:
                yield members
            for i, v in enumerate(frontier):
                if total + h[v] > hi:
                    continue
                ban = banned | set(frontier[: i + 1])
                new_front = frontier[i + 1 :] + [
                    w
                    for w in nb[v]
                    if free[w]
                    and w not in ban
                    and w not in members
                    and w not in frontier
                ]
                # dedupe while keeping order
                seen_f: set[int] = set()
                new_front = [w for w in new_front if not (w in seen_f or seen_f.add(w))]
                yield from subsets([*members, v], total + h[v], new_front, ban)

        dead: set[bytes] = set()  # sets of free units known to have no plan

        def rec() -> None:
            u = next((x for x in order if free[x]), None)
            if u is None:
                solutions.append([list(p) for p in pieces])
                if len(solutions) >= max_solutions:
                    raise _Stop
                return
            key = bytes(free)
            if key in dead:
                return
            found_before = len(solutions)
            free[u] = False
            start_front = [w for w in nb[u] if free[w]]
            options = []
            for members in list(subsets([u], h[u], start_front, {u})):
                for x in members:
                    free[x] = False
                if rest_ok(members):
                    options.append(members)
                for x in members:
                    free[x] = True
                free[u] = False
            # compact grids that cut few blocks first: the first plans found
            # (the ones kept) are then the good ones
            options.sort(key=self._piece_cost)
            for members in options:
                for x in members:
                    free[x] = False
                pieces.append(members)
                rec()
                pieces.pop()
                for x in members:
                    free[x] = True
                free[u] = False
            free[u] = True
            if len(solutions) == found_before:
                dead.add(key)

        try:
            rec()
        except _Stop:
            return solutions, False
        return solutions, True

    def _piece_cost(self, members: list[int]) -> float:
        inside = set(members)
        per = 0.0
        area = 0.0
        cut_int = 0.0
        for x in members:
            per += self.perim[x]
            area += self.area[x]
            for v, length, internal in self.nb[x]:
                if v in inside:
                    per -= length
                elif internal:
                    cut_int += length
        return per * per / (4 * math.pi * max(area, 1e-9)) + (
            _SPLIT_PENALTY * cut_int / self.scale
        )

    # --- evaluation and local search -----------------------------------------
    def cost(self, assign: list[int], k: int) -> tuple[int, float]:
        """(violation, shape cost) of a plan over this component."""
        H = [0] * k
        A = [0.0] * k
        P = [0.0] * k
        cut_int = 0.0
        for u in range(self.n):
            a = assign[u]
            H[a] += self.h[u]
            A[a] += self.area[u]
            P[a] += self.perim[u]
            for v, length, internal in self.nb[u]:
                if assign[v] == a:
                    P[a] -= length
                elif internal:
                    cut_int += length / 2
        viol = sum(_viol(x, self.lo, self.hi) for x in H)
        shape = sum(P[i] ** 2 / max(A[i], 1e-9) for i in range(k)) / (4 * math.pi * k)
        return viol, shape + _SPLIT_PENALTY * cut_int / self.scale

    def improve(self, assign: list[int], k: int, *, max_passes: int = 30) -> None:
        """Boundary-unit moves that keep contiguity; violation first, then shape."""
        hh, lo, hi, nb = self.h, self.lo, self.hi, self.nb
        area, perim = self.area, self.perim
        H = [0] * k
        A = [0.0] * k
        P = [0.0] * k
        size = [0] * k
        for u in range(self.n):
            a = assign[u]
            H[a] += hh[u]
            A[a] += area[u]
            P[a] += perim[u]
            size[a] += 1
            for v, length, _ in nb[u]:
                if assign[v] == a:
                    P[a] -= length
        norm = 4 * math.pi * k
        pen = _SPLIT_PENALTY / self.scale
        order = list(range(self.n))
        for _ in range(max_passes):
            self.rng.shuffle(order)
            moved = False
            for u in order:
                a = assign[u]
                if size[a] == 1:
                    continue
                shared: dict[int, float] = {}
                int_to: dict[int, float] = {}
                for v, length, internal in nb[u]:
                    b = assign[v]
                    shared[b] = shared.get(b, 0.0) + length
                    if internal:
                        int_to[b] = int_to.get(b, 0.0) + length
                if len(shared) < 2 and a in shared:
                    continue
                s_own = shared.get(a, 0.0)
                v_a = _viol(H[a], lo, hi)
                pa_new = P[a] - perim[u] + 2 * s_own
                aa_new = A[a] - area[u]
                ha_new = H[a] - hh[u]
                va_new = _viol(ha_new, lo, hi)
                base_a = P[a] ** 2 / A[a]
                new_a = pa_new**2 / max(aa_new, 1e-9)
                best = None
                for b, s_b in shared.items():
                    if b == a:
                        continue
                    hb_new = H[b] + hh[u]
                    dv = va_new + _viol(hb_new, lo, hi) - v_a - _viol(H[b], lo, hi)
                    if dv > 0:
                        continue
                    pb_new = P[b] + perim[u] - 2 * s_b
                    ab_new = A[b] + area[u]
                    dc = (new_a + pb_new**2 / ab_new - base_a - P[b] ** 2 / A[b]) / norm
                    # internal cut: edges to a become cut, edges to b stop being cut
                    dc += pen * (int_to.get(a, 0.0) - int_to.get(b, 0.0))
                    if dv < 0 or dc < -1e-9:
                        key = (dv, dc)
                        if best is None or key < best[0]:
                            best = (key, b, pb_new, ab_new, hb_new)
                if best is None:
                    continue
                if sum(1 for v, _, _ in nb[u] if assign[v] == a) > 1 and not (
                    self._connected_without(assign, a, u, size[a] - 1)
                ):
                    continue
                _, b, pb_new, ab_new, hb_new = best
                assign[u] = b
                H[a], A[a], P[a], size[a] = ha_new, aa_new, pa_new, size[a] - 1
                H[b], A[b], P[b], size[b] = hb_new, ab_new, pb_new, size[b] + 1
                moved = True
            if not moved:
                break

    def recombine(
        self, assign: list[int], k: int, *, passes: int = 3, pair_budget: int = 4000
    ) -> None:
        """Re-split adjacent grid pairs optimally (ReCom step, exhaustive per pair).

        For each pair of neighbouring grids within bounds, every split of their
        units into two connected sets within bounds is enumerated (up to
        ``pair_budget`` steps) and the one with the lowest shape cost kept.
        """
        lo, hi, h = self.lo, self.hi, self.h
        nb = [[v for v, _, _ in lst] for lst in self.nb]
        for _ in range(passes):
            changed = False
            members: list[list[int]] = [[] for _ in range(k)]
            for u in range(self.n):
                members[assign[u]].append(u)
            pairs = sorted(
                {
                    (min(assign[a], assign[b]), max(assign[a], assign[b]))
                    for a, b, _ in self.edge_list
                    if assign[a] != assign[b]
                }
            )
            for ga, gb in pairs:
                pa, pb = members[ga], members[gb]
                ha, hb = sum(h[u] for u in pa), sum(h[u] for u in pb)
                if not (lo <= ha <= hi and lo <= hb <= hi):
                    continue
                union = sorted(pa + pb)
                inside = set(union)
                total = ha + hb
                best_cost = self._piece_cost(pa) + self._piece_cost(pb) - 1e-9
                best: list[int] | None = None
                steps = 0
                root = union[0]
                stack: list[tuple[list[int], int, list[int], frozenset]] = [
                    (
                        [root],
                        h[root],
                        [w for w in nb[root] if w in inside],
                        frozenset([root]),
                    )
                ]
                while stack and steps < pair_budget:
                    sub, tot, front, banned = stack.pop()
                    steps += 1
                    if lo <= tot <= hi and lo <= total - tot <= hi:
                        rest = [u for u in union if u not in sub]
                        if _connected_set(rest, nb):
                            c = self._piece_cost(sub) + self._piece_cost(rest)
                            if c < best_cost:
                                best_cost, best = c, list(sub)
                    for i, v in enumerate(front):
                        if tot + h[v] > hi:
                            continue
                        ban = banned | set(front[: i + 1])
                        new_front = front[i + 1 :] + [
                            w
                            for w in nb[v]
                            if w in inside
                            and w not in ban
                            and w not in sub
                            and w not in front
                        ]
                        stack.append(([*sub, v], tot + h[v], new_front, ban))
                if best is not None:
                    chosen = set(best)
                    for u in union:
                        assign[u] = ga if u in chosen else gb
                    members[ga] = sorted(chosen)
                    members[gb] = [u for u in union if u not in chosen]
                    changed = True
            if not changed:
                break

    def _connected_without(self, assign: list[int], a: int, u: int, want: int) -> bool:
        start = next(v for v, _, _ in self.nb[u] if assign[v] == a)
        seen = {start, u}
        stack = [start]
        while stack:
            x = stack.pop()
            for v, _, _ in self.nb[x]:
                if v not in seen and assign[v] == a:
                    seen.add(v)
                    stack.append(v)
        return len(seen) - 1 == want

    def solve(
        self, *, attempts: int, polish: int, exact_budget: int = 20000
    ) -> tuple[list[list[int]], int, bool]:
        """Best plan found: (pieces as global unit ids, violation, proven).

        ``proven`` is True when an exhaustive search showed that no plan within
        bounds exists for these units.
        """
        found: list[tuple[tuple[int, float], list[list[int]]]] = []
        hopeless = not assess_units(
            self.h,
            [[v for v, _, _ in nb] for nb in self.nb],
            min_households=self.lo,
            max_households=self.hi,
        ).feasible
        proven = hopeless
        if not hopeless:
            plans, complete = self.exact(budget=exact_budget)
            proven = complete and not plans
            for pieces in plans:
                found.append(
                    (self.cost(_assign_of(pieces, self.n), len(pieces)), pieces)
                )
            if not complete and not plans:
                seen: set[frozenset[frozenset[int]]] = set()
                for i in range(attempts * 2):
                    if i >= attempts and found:
                        break  # keep searching only while nothing is found
                    pieces = self.recursive_tree_part(strict=True)
                    if pieces is None:
                        continue
                    key = frozenset(frozenset(p) for p in pieces)
                    if key in seen:
                        continue
                    seen.add(key)
                    found.append(
                        (self.cost(_assign_of(pieces, self.n), len(pieces)), pieces)
                    )
        if not found:
            for _ in range(max(2, attempts // 2)):
                pieces = self.recursive_tree_part(strict=False)
                if pieces is None:  # pragma: no cover - relaxed never gives up
                    continue
                found.append(
                    (self.cost(_assign_of(pieces, self.n), len(pieces)), pieces)
                )
        found.sort(key=lambda f: f[0])
        best: tuple[tuple[int, float], list[int], int] | None = None
        for _, pieces in found[:polish]:
            assign = _assign_of(pieces, self.n)
            k = len(pieces)
            self.improve(assign, k)
            if self.cost(assign, k)[0] == 0:
                # a valid plan: make its grids compact pair by pair
                self.recombine(assign, k)
                self.improve(assign, k)
            c = self.cost(assign, k)
            if best is None or c < best[0]:
                best = (c, assign, k)
        assert best is not None
        (viol, _), assign, k = best
        out: list[list[int]] = [[] for _ in range(k)]
        for u, a in enumerate(assign):
            out[a].append(self.nodes[u])
        return [sorted(p) for p in out if p], viol, proven


def _assign_of(pieces: list[list[int]], n: int) -> list[int]:
    out = [0] * n
    for i, piece in enumerate(pieces):
        for u in piece:
            out[u] = i
    return out


# ------------------------------------------------------------------ one community


@dataclass
class _Plan:
    units: _Units
    graph: _Graph
    feas: CommunityFeasibility
    pieces: list[list[int]]
    causes: list[str]  # per piece: why it may violate bounds ("" if nothing known)
    violation: int
    proven: bool  # no valid plan exists for these units (shown, not guessed)


def _plan_community(
    units: _Units,
    *,
    lo: int,
    hi: int,
    rng: random.Random,
    attempts: int,
    polish: int,
    exact_budget: int = 20000,
) -> _Plan:
    graph = _graph(units)
    neighbours = [[v for v, _, _ in nb] for nb in graph.nbrs]
    feas = assess_units(
        units.hh,
        neighbours,
        min_households=lo,
        max_households=hi,
        labels=units.label,
        splittable=[False] * graph.n,  # splitting already happened
    )
    hh = units.hh
    oversize = [u for u in range(graph.n) if hh[u] > hi]
    over_set = set(oversize)
    pieces: list[list[int]] = [[u] for u in oversize]
    causes: list[str] = [
        f"unit {units.label[u]} alone has {hh[u]} households > {hi} and cannot be "
        f"split ({units.unsplittable_reason[u] or 'no internal roads or buildings'})"
        for u in oversize
    ]
    # Connected parts of what is left.
    seen = set(over_set)
    comps: list[list[int]] = []
    for s in range(graph.n):
        if s in seen:
            continue
        comp, stack = [s], [s]
        seen.add(s)
        while stack:
            x = stack.pop()
            for v in neighbours[x]:
                if v not in seen:
                    seen.add(v)
                    comp.append(v)
                    stack.append(v)
        comps.append(sorted(comp))
    violation = sum(_viol(hh[u], lo, hi) for u in oversize)
    proven = bool(oversize)
    for comp in comps:
        h_c = sum(hh[u] for u in comp)
        touching = [
            i for i, u in enumerate(oversize) if any(v in comp for v in neighbours[u])
        ]
        if h_c < lo and touching:
            # Stranded behind an oversize unit: join its (already violating) grid.
            i = touching[0]
            pieces[i] = sorted(pieces[i] + comp)
            causes[i] += f"; holds {h_c} households stranded behind it"
            violation += _viol(sum(hh[u] for u in pieces[i]), lo, hi) - _viol(
                hh[oversize[i]], lo, hi
            )
            continue
        if h_c < lo:
            pieces.append(comp)
            is_island = len(comps) + len(oversize) > 1
            causes.append(
                f"island of {h_c} households (no shared street edge with the rest); "
                f"cannot reach min {lo}"
                if is_island
                else f"the community has only {h_c} households (< min {lo})"
            )
            violation += _viol(h_c, lo, hi)
            proven = True
            continue
        solver = _Solver(graph, hh, comp, lo=lo, hi=hi, rng=rng)
        comp_pieces, v, proof = solver.solve(
            attempts=attempts, polish=polish, exact_budget=exact_budget
        )
        proven = proven or proof
        violation += v
        if v == 0:
            cause = ""
        elif not has_valid_k(h_c, min_households=lo, max_households=hi):
            scope = (
                "community" if len(comps) == 1 and not oversize else "connected part"
            )
            cause = f"no valid number of grids for the {scope}'s {h_c} households"
        else:
            cause = (
                "lumpiness: an exhaustive search proved that these units cannot "
                f"form contiguous grids of {lo}–{hi} households"
                if proof
                else "lumpiness: the search found no split of these units into "
                f"contiguous grids of {lo}–{hi} households"
            )
        pieces.extend(comp_pieces)
        causes.extend([cause] * len(comp_pieces))
    return _Plan(units, graph, feas, pieces, causes, violation, proven)


# ------------------------------------------------------------------- entry point


def _check_inputs(
    blocks: gpd.GeoDataFrame,
    *,
    households_col: str,
    community_col: str,
    id_col: str,
    compound_col: str | None,
    buildings: gpd.GeoDataFrame | None,
    internal_roads: gpd.GeoDataFrame | None,
    min_households: int,
    max_households: int,
    code_scheme: str,
) -> np.ndarray:
    require_frame(
        blocks,
        "blocks",
        columns=[households_col, community_col, id_col],
        geometry_types=POLYGONAL,
    )
    if compound_col is not None:
        require_columns(blocks, [compound_col], "blocks")
    if buildings is not None:
        require_frame(
            buildings, "buildings", geometry_types=POLYGONAL, allow_empty=True
        )
    if internal_roads is not None:
        require_frame(
            internal_roads, "internal_roads", geometry_types=LINEAL, allow_empty=True
        )
    require_same_crs(blocks=blocks, buildings=buildings, internal_roads=internal_roads)
    if not (0 < int(min_households) <= int(max_households)):
        msg = (
            f"min_households={min_households} and max_households={max_households} "
            "must satisfy 0 < min <= max (e.g. 400 and 500)"
        )
        raise InputError(msg)
    sequence_digits(code_scheme)
    hh = pd.to_numeric(blocks[households_col], errors="coerce")
    bad = hh.isna() | (hh < 0) | (hh != np.round(hh))
    if bad.any():
        rows = list(blocks.index[bad.to_numpy()][:5])
        msg = (
            f"blocks[{households_col!r}] must hold whole, non-negative numbers; rows "
            f"{rows} do not. Fill unknown counts (e.g. estimate from buildings) first."
        )
        raise InputError(msg)
    ids = blocks[id_col]
    if ids.isna().any() or ids.duplicated().any():
        dup = list(ids[ids.duplicated() | ids.isna()].astype(str).unique()[:5])
        msg = f"blocks[{id_col!r}] must be unique and present; offending ids: {dup}"
        raise InputError(msg)
    for code in pd.unique(blocks[community_col].astype(str)):
        check_community_code(code)
    return hh.to_numpy(dtype=np.int64)


def partition_blocks(
    blocks: gpd.GeoDataFrame,
    *,
    households_col: str = "households",
    community_col: str = "community_code",
    id_col: str = "block_id",
    compound_col: str | None = None,
    buildings: gpd.GeoDataFrame | None = None,
    internal_roads: gpd.GeoDataFrame | None = None,
    min_households: int = 400,
    max_households: int = 500,
    code_scheme: str = "cjt213",
    seed: int = 0,
    working_crs: Any = None,
    split_compounds: bool = True,
    attempts: int = 24,
    strict: bool = False,
    progress: ProgressCallback | None = None,
) -> PartitionResult:
    """Cut each community's street blocks into grids of min..max households.

    Parameters
    ----------
    blocks
        Street blocks (Polygon/MultiPolygon) with a CRS, a household count, a
        12-digit community code and a unique id per row. Blocks of one community
        should tile it (shared street edges); blocks that touch no other block are
        islands.
    households_col, community_col, id_col
        Column names in ``blocks``.
    compound_col
        Optional column naming each block's compound (小区); the blocks of one
        compound stay in one grid while the compound holds at most max households.
    buildings
        Optional building footprints (same CRS). Enables splitting blocks by whole
        buildings: blocks above max, and lumpy communities with no whole-block plan.
        Used columns when present: ``households`` (else floor area from ``levels``
        × footprint, else footprint) and ``compound_id`` (kept together).
    internal_roads
        Optional lines (same CRS) inside blocks (e.g. ``streets`` rows with
        ``internal=True``) along which blocks above max are cut first.
    min_households, max_households
        Households per grid, inclusive bounds.
    code_scheme
        ``"cjt213"`` (14-digit codes) or ``"db11"`` (15-digit codes).
    seed
        Seed of the search; the same inputs and seed give the same plan.
    working_crs
        Projected CRS for metric work; the input's own when projected, else the
        CGCS2000 Gauss–Krüger zone (China) or UTM.
    split_compounds
        Last resort for lumpy communities: when no plan exists with the
        compounds of ``buildings`` (``compound_id``) whole, split them by whole
        buildings too (DOMAIN "Lumpiness": grid offices do this with large
        compounds). Every such split is reported in ``deviations``. Pass False to
        keep building compounds whole and get flagged plans instead. Compounds of
        ``compound_col`` (whole blocks) always stay whole unless above max.
    attempts
        Random-tree restarts per connected part and stage; more is slower and
        finds more compact plans.
    strict
        Raise :class:`InfeasiblePartitionError` instead of returning a flagged plan
        when some community cannot obey every rule.
    progress
        Called as ``progress("partition", done, total)`` per community.

    Returns
    -------
    PartitionResult
        Grids (input CRS), assignments, diagnostics, deviations, metrics.

    Raises
    ------
    MissingCRSError, CRSMismatchError, MissingColumnError, InvalidGeometryError,
    InputError
        On broken input contracts (checked before any work).
    CodeOverflowError
        When a community needs more grids than its code scheme can number.
    InfeasiblePartitionError
        Only with ``strict=True``, naming the communities and reasons.

    Notes
    -----
    **Compounds.** Two kinds of compound (小区) are kept whole differently:

    - compounds given by ``compound_col`` (groups of whole blocks) always stay
      in one grid unless the compound alone holds more than ``max_households``;
      they are never split for lumpiness;
    - building compounds (``buildings.compound_id``, buildings inside a block)
      stay whole first; only when no plan within bounds exists with them whole
      are they split by whole buildings (never through a building), as a last
      resort for lumpiness and only with ``split_compounds=True`` (the default;
      DOMAIN "Lumpiness": grid offices do this with large compounds). Each such
      split is reported: a row per part in ``deviations`` (``reason`` says
      ``split_compounds=True``) and a note in ``diagnostics["notes"]`` naming the
      blocks. A building compound above max is never kept whole.

    **Geometry.** All geometry work (reprojection once, adjacency, areas,
    splitting, dissolving, validity and cover checks) happens in
    ``working_crs``. Before dissolving, a community's cells (whole blocks and
    the parts of split blocks) are made one valid polygonal coverage (GEOS
    coverage cleaning, snapping within 5 cm), so neighbouring grids share their
    edges exactly and carry no zero-width spikes; only then are grids and
    deviations converted to the input CRS. In a geographic input CRS a grid that
    would turn invalid when rounded to 7 decimals is snapped to that precision.
    Geometry failures are logged and repaired, never raised as GEOS errors.

    **Search budget.** Communities without a plan get a repair: finer building
    parts, then a four-fold search budget while nothing is proven; "infeasible"
    in ``diagnostics`` means proven for the units tried (blocks, compounds and
    building parts), "unsolved" that the budget ran out.

    Infeasibility is a result: read ``diagnostics`` and each grid's ``flags``.
    """
    t0 = time.perf_counter()
    lo, hi = int(min_households), int(max_households)
    hh_all = _check_inputs(
        blocks,
        households_col=households_col,
        community_col=community_col,
        id_col=id_col,
        compound_col=compound_col,
        buildings=buildings,
        internal_roads=internal_roads,
        min_households=lo,
        max_households=hi,
        code_scheme=code_scheme,
    )
    in_crs = CRS.from_user_input(blocks.crs)
    crs = _working_crs(blocks, working_crs)
    same_crs = crs.equals(in_crs)
    proj_blocks = blocks if same_crs else blocks.to_crs(crs)
    geoms = np.asarray(proj_blocks.geometry.values, dtype=object)
    ids = blocks[id_col].astype(str).to_numpy()
    comm = blocks[community_col].astype(str).to_numpy()
    compounds = None if compound_col is None else blocks[compound_col].to_numpy()
    bld = _Buildings.build(buildings, geoms, crs)
    roads = (
        None
        if internal_roads is None or len(internal_roads) == 0
        else np.asarray(internal_roads.to_crs(crs).geometry.values, dtype=object)
    )
    road_tree = None if roads is None else shapely.STRtree(roads)
    part_target = max(1, min(hi - lo, hi // 2)) if hi > lo else max(1, hi // 4)

    codes_sorted = sorted(pd.unique(comm))
    n_comm = len(codes_sorted)
    report(progress, "partition", 0, n_comm)
    out = _Collector(
        ids=ids,
        index=blocks.index,
        hh_all=hh_all,
        lo=lo,
        hi=hi,
        code_scheme=code_scheme,
    )
    for ci, code in enumerate(codes_sorted):
        pos = np.flatnonzero(comm == code)
        rng = random.Random((int(seed) * 1_000_003) ^ zlib.crc32(code.encode("utf-8")))
        builder = _UnitBuilder(
            pos=pos,
            geoms=geoms,
            hh_all=hh_all,
            ids=ids,
            compounds=compounds,
            bld=bld,
            roads=roads,
            road_tree=road_tree,
            lo=lo,
            hi=hi,
            part_target=part_target,
        )
        units = builder.units(lumpy=False)
        plan = _plan_community(
            units, lo=lo, hi=hi, rng=rng, attempts=attempts, polish=_POLISH
        )
        whole_plan = plan
        if plan.violation > 0 and builder.can_split_lumpy(units):
            # Lumpiness: split blocks by whole buildings, compounds whole first,
            # then (split_compounds) compounds too, then finer parts.
            stages = [(False, part_target)]
            if split_compounds:
                stages.append((True, part_target))
            if part_target > 1:
                stages.append((split_compounds, max(1, part_target // 2)))
            finest = plan
            for split_cmp, target in stages:
                cand_units = builder.units(
                    lumpy=True, split_compounds=split_cmp, part_target=target
                )
                finest = _plan_community(
                    cand_units, lo=lo, hi=hi, rng=rng, attempts=attempts, polish=_POLISH
                )
                if finest.violation < plan.violation:
                    plan = finest
                if plan.violation == 0:
                    break
            if plan.violation > 0 and part_target > 3:
                # Repair: finer parts (smaller building groups give the search
                # more ways to meet the bounds), then, while nothing is proven,
                # a larger search budget on the fine and the medium parts.
                repairs = [
                    (max(1, part_target // 4), 1, 20_000),
                    (max(1, part_target // 4), 4, 300_000),
                ]
                for target, mult, budget in repairs:
                    if mult > 1 and finest.proven:
                        break
                    cand_units = builder.units(
                        lumpy=True, split_compounds=split_compounds, part_target=target
                    )
                    if len(cand_units.hh) > 60:
                        # exhaustive search cannot finish on many units: spend
                        # the larger budget on random trees only
                        budget = min(budget, 20_000)
                    finest = _plan_community(
                        cand_units,
                        lo=lo,
                        hi=hi,
                        rng=rng,
                        attempts=mult * attempts,
                        polish=_POLISH,
                        exact_budget=budget,
                    )
                    if finest.violation < plan.violation:
                        plan = finest
                    if plan.violation == 0:
                        break
            if plan.violation > 0 and finest.proven:
                plan.proven = True
        out.add_community(code, pos, plan, whole_plan, geoms)
        report(progress, "partition", ci + 1, n_comm)

    result = out.finish(
        blocks=blocks,
        geoms=geoms,
        in_crs=in_crs,
        crs=crs,
        same_crs=same_crs,
    )
    seconds = time.perf_counter() - t0
    result.metrics["seconds"] = round(seconds, 3)
    result.parameters.update(
        {
            "households_col": households_col,
            "community_col": community_col,
            "id_col": id_col,
            "compound_col": compound_col,
            "buildings": buildings is not None,
            "internal_roads": internal_roads is not None,
            "min_households": lo,
            "max_households": hi,
            "code_scheme": code_scheme,
            "seed": int(seed),
            "attempts": int(attempts),
            "split_compounds": bool(split_compounds),
            "working_crs": epsg_or_wkt(crs),
        }
    )
    if strict and not result.ok:
        bad = result.diagnostics[
            result.diagnostics["status"].isin(["infeasible", "unsolved"])
        ]
        detail = "; ".join(
            f"{r.community_code}: {r.reasons}" for r in bad.head(5).itertuples()
        )
        msg = (
            f"{len(bad)} communit(ies) cannot be gridded within {lo}–{hi} "
            f"households: {detail}. Call with strict=False to get the best flagged "
            "plan, or change the bounds."
        )
        raise InfeasiblePartitionError(msg)
    log.info(
        "partitioned %d communities into %d grids in %.2f s",
        n_comm,
        len(result.grids),
        seconds,
    )
    return result


# -------------------------------------------------------------- unit construction


@dataclass
class _Buildings:
    foot: np.ndarray  # footprints (working CRS)
    weight: np.ndarray
    group: np.ndarray
    by_block: dict[int, np.ndarray]

    @classmethod
    def build(
        cls, buildings: gpd.GeoDataFrame | None, block_geoms: np.ndarray, crs: CRS
    ) -> _Buildings:
        if buildings is None or len(buildings) == 0:
            z = np.zeros(0, dtype=object)
            return cls(z, np.zeros(0), z, {})
        proj = buildings.to_crs(crs)
        foot = np.asarray(proj.geometry.values, dtype=object)
        area = np.asarray(shapely.area(foot), dtype=float)
        weight = area.copy()
        if "levels" in proj.columns:
            lv = pd.to_numeric(proj["levels"], errors="coerce").to_numpy(dtype=float)
            weight = np.where(np.isfinite(lv) & (lv > 0), area * lv, area)
        if "households" in proj.columns:
            bh = pd.to_numeric(proj["households"], errors="coerce").to_numpy(
                dtype=float
            )
            if np.nansum(bh) > 0:
                weight = np.where(np.isfinite(bh), np.clip(bh, 0, None), 0.0)
        group = (
            proj["compound_id"].to_numpy(dtype=object)
            if "compound_id" in proj.columns
            else np.full(len(foot), None, dtype=object)
        )
        pts = shapely.point_on_surface(foot)
        tree = shapely.STRtree(block_geoms)
        b_idx, blk = tree.query(pts, predicate="within")
        by_block: dict[int, np.ndarray] = {}
        if len(b_idx):
            order = np.lexsort((b_idx, blk))
            blk, b_idx = blk[order], b_idx[order]
            # a building inside two overlapping blocks: keep the first
            _, first = np.unique(b_idx, return_index=True)
            keep = np.zeros(len(b_idx), dtype=bool)
            keep[first] = True
            blk, b_idx = blk[keep], b_idx[keep]
            splits = np.flatnonzero(np.diff(blk)) + 1
            for chunk_b, chunk_blk in zip(
                np.split(b_idx, splits), np.split(blk, splits), strict=True
            ):
                by_block[int(chunk_blk[0])] = chunk_b
        return cls(foot, weight, group, by_block)


@dataclass
class _UnitBuilder:
    pos: np.ndarray
    geoms: np.ndarray
    hh_all: np.ndarray
    ids: np.ndarray
    compounds: np.ndarray | None
    bld: _Buildings
    roads: np.ndarray | None
    road_tree: shapely.STRtree | None
    lo: int
    hi: int
    part_target: int
    _base: list[tuple[list[int], str]] | None = None

    def _whole_units(self) -> list[tuple[list[int], str]]:
        """Groups of local block positions: compounds (<= max) or single blocks."""
        if self._base is not None:
            return self._base
        n = len(self.pos)
        groups: list[tuple[list[int], str]] = []
        taken = np.zeros(n, dtype=bool)
        if self.compounds is not None:
            keys = self.compounds[self.pos]
            present = pd.notna(keys)
            if present.any():
                local = self.geoms[self.pos]
                edges = shared_edges(local)
                nb: list[list[int]] = [[] for _ in range(n)]
                for i, j in zip(edges["i"], edges["j"], strict=True):
                    nb[int(i)].append(int(j))
                    nb[int(j)].append(int(i))
                for key in pd.unique(keys[present]):
                    members = np.flatnonzero(present & (keys == key))
                    if int(self.hh_all[self.pos[members]].sum()) > self.hi:
                        continue  # a compound above max is handled block by block
                    mset = set(members.tolist())
                    seen: set[int] = set()
                    for s in members:
                        if s in seen:
                            continue
                        comp, stack = [int(s)], [int(s)]
                        seen.add(int(s))
                        while stack:
                            x = stack.pop()
                            for v in nb[x]:
                                if v in mset and v not in seen:
                                    seen.add(v)
                                    comp.append(v)
                                    stack.append(v)
                        if len(comp) > 1:
                            groups.append((sorted(comp), "compound"))
                            taken[comp] = True
        for p in range(n):
            if not taken[p]:
                groups.append(([p], "block"))
        groups.sort(key=lambda g: g[0][0])
        self._base = groups
        return groups

    def can_split_lumpy(self, units: _Units) -> bool:
        return any(
            kind == "block"
            and self.hh_all[self.pos[b[0]]] > self.part_target
            and len(self.bld.by_block.get(int(self.pos[b[0]]), ())) >= 2
            for b, kind in zip(units.blocks, units.kind, strict=True)
        )

    def units(
        self,
        *,
        lumpy: bool,
        split_compounds: bool = False,
        part_target: int | None = None,
    ) -> _Units:
        target = self.part_target if part_target is None else part_target
        u = _Units([], [], [], [], [], [], [], [])
        for members, kind in self._whole_units():
            if kind == "compound":
                gpos = self.pos[members]
                u.geom.append(shapely.union_all(self.geoms[gpos]))
                u.hh.append(int(self.hh_all[gpos].sum()))
                u.blocks.append(tuple(members))
                u.kind.append("compound")
                u.origin.append(-1)
                u.label.append(
                    f"compound {self.compounds[gpos[0]]} ({len(members)} blocks)"
                    if self.compounds is not None
                    else "compound"
                )
                u.splittable.append(False)
                u.unsplittable_reason.append("")
                continue
            p = members[0]
            gp = int(self.pos[p])
            h = int(self.hh_all[gp])
            b_idx = self.bld.by_block.get(gp)
            want = h > self.hi or (
                lumpy and h > target and b_idx is not None and len(b_idx) >= 2
            )
            if want:
                roads = None
                if h > self.hi and self.road_tree is not None:
                    hits = self.road_tree.query(self.geoms[gp], predicate="intersects")
                    roads = self.roads[hits] if len(hits) else None
                has_b = b_idx is not None and len(b_idx) > 0
                res = split_block(
                    self.geoms[gp],
                    h,
                    buildings=self.bld.foot[b_idx] if has_b else None,
                    building_weights=self.bld.weight[b_idx] if has_b else None,
                    building_groups=(
                        self.bld.group[b_idx] if has_b and not split_compounds else None
                    ),
                    internal_roads=roads,
                    part_households=target,
                    max_households=self.hi,
                    use_roads=h > self.hi,
                )
                if res.method != "none":
                    why = (
                        f"{h} households > max {self.hi}"
                        if h > self.hi
                        else "lumpiness: no whole-block plan within bounds"
                    )
                    if split_compounds and h <= self.hi:
                        why += " (compounds split by buildings: split_compounds=True)"

                    u.split_method[p] = res.method
                    u.split_reason[p] = why
                    for k, (g, ph) in enumerate(
                        zip(res.parts, res.households, strict=True)
                    ):
                        u.geom.append(g)
                        u.hh.append(int(ph))
                        u.blocks.append((p,))
                        u.kind.append("part")
                        u.origin.append(p)
                        u.label.append(f"{self.ids[gp]}/part{k + 1}")
                        u.splittable.append(False)
                        u.unsplittable_reason.append(res.reason)
                    continue
                reason = res.reason
            else:
                reason = ""
            u.geom.append(self.geoms[gp])
            u.hh.append(h)
            u.blocks.append((p,))
            u.kind.append("block")
            u.origin.append(-1)
            u.label.append(f"block {self.ids[gp]}")
            u.splittable.append(False)
            u.unsplittable_reason.append(reason)
        return u


# -------------------------------------------------------------------- collecting


@dataclass
class _Collector:
    ids: np.ndarray
    index: pd.Index
    hh_all: np.ndarray
    lo: int
    hi: int
    code_scheme: str
    grid_rows: list[dict[str, Any]] = field(default_factory=list)
    grid_geoms: list[shapely.Geometry] = field(default_factory=list)
    assign_rows: list[dict[str, Any]] = field(default_factory=list)
    assign_index: list[Any] = field(default_factory=list)
    diag_rows: list[dict[str, Any]] = field(default_factory=list)
    dev_rows: list[dict[str, Any]] = field(default_factory=list)
    dev_geoms: list[shapely.Geometry] = field(default_factory=list)
    cut_length: float = 0.0

    def add_community(
        self,
        code: str,
        pos: np.ndarray,
        plan: _Plan,
        whole_plan: _Plan,
        geoms: np.ndarray,
    ) -> None:
        units, graph, lo, hi = plan.units, plan.graph, self.lo, self.hi
        k = len(plan.pieces)
        grid_of = np.empty(graph.n, dtype=np.int64)
        for gi, piece in enumerate(plan.pieces):
            grid_of[piece] = gi
        # Which grids each split block's parts went to.
        part_grids: dict[int, set[int]] = {}
        for un in range(graph.n):
            if units.kind[un] == "part":
                part_grids.setdefault(units.origin[un], set()).add(int(grid_of[un]))
        divided = {b for b, gs in part_grids.items() if len(gs) > 1}

        # Cells of the community: whole blocks, and the parts of divided blocks.
        cells: list[shapely.Geometry] = []
        cell_grid: list[int] = []
        cell_unit: list[int] = []  # part unit of a cell, -1 for a whole block
        for gi, piece in enumerate(plan.pieces):
            whole: list[int] = []
            for un in piece:
                if units.kind[un] == "part" and units.origin[un] in divided:
                    cells.append(units.geom[un])
                    cell_grid.append(gi)
                    cell_unit.append(un)
                elif units.kind[un] == "part":
                    b = int(pos[units.origin[un]])
                    if b not in whole:
                        whole.append(b)
                else:
                    whole.extend(int(pos[b]) for b in units.blocks[un])
            for w in whole:
                cells.append(geoms[w])
                cell_grid.append(gi)
                cell_unit.append(-1)
        cells = _clean_cells(cells)
        grid_geoms = _dissolve(cells, cell_grid, len(plan.pieces))
        block_union = shapely.union_all(geoms[pos])
        grid_geoms = _inside_community(grid_geoms, block_union)
        unit_cell = {un: c for c, un in enumerate(cell_unit) if un >= 0}
        codes = assign_grid_codes(code, grid_geoms, code_scheme=self.code_scheme)

        # --- verification: bounds, contiguity, cover, households --------------
        hh_grid = [sum(units.hh[u] for u in piece) for piece in plan.pieces]
        contiguous = [_is_connected(piece, graph) for piece in plan.pieces]
        grid_union = shapely.union_all(np.asarray(grid_geoms))
        area_b = float(block_union.area)
        gap = float(shapely.difference(block_union, grid_union).area)
        extra = float(shapely.difference(grid_union, block_union).area)
        overlap = max(
            float(sum(g.area for g in grid_geoms)) - float(grid_union.area), 0.0
        )
        # grids are snapped to a _GRID_M grid: allow that band along the boundary
        tol = 1e-6 * area_b + 0.01 + _GRID_M * float(block_union.length)
        try:
            edges_ok = bool(shapely.coverage_is_valid(np.asarray(grid_geoms)))
        except shapely.errors.GEOSException:
            edges_ok = False
        cover_ok = gap <= tol and extra <= tol and overlap <= tol and edges_ok
        conserved = sum(hh_grid) == int(self.hh_all[pos].sum())

        n_viol = 0
        for gi, piece in enumerate(plan.pieces):
            flags: list[str] = []
            h = hh_grid[gi]
            if h < lo:
                flags.append(f"below_min: {h} < {lo}")
            elif h > hi:
                flags.append(f"above_max: {h} > {hi}")
            if flags and plan.causes[gi]:
                flags[-1] += f" ({plan.causes[gi]})"
            if not contiguous[gi]:
                flags.append("not_contiguous: its blocks share no street edge chain")
            if not cover_ok:
                flags.append(
                    f"cover: community gap {gap:.1f} m², overlap {overlap:.1f} m²"
                )
            if not conserved:
                flags.append("households_not_conserved")
            if flags:
                n_viol += 1
            gm = grid_geoms[gi]
            pp = float(polsby_popper(gm))
            split_here = sorted(
                self.ids[pos[b]] for b in divided if gi in part_grids.get(b, set())
            )
            self.grid_rows.append(
                {
                    "grid_code": codes[gi],
                    "community_code": code,
                    "households": int(h),
                    "n_blocks": len({b for un in piece for b in units.blocks[un]}),
                    "polsby_popper": pp,
                    "split_blocks": ",".join(split_here),
                    "flags": "; ".join(flags),
                }
            )
            self.grid_geoms.append(gm)

        # --- assignments and deviations --------------------------------------
        per_block: dict[int, dict[int, int]] = {}
        for un in range(graph.n):
            gi = int(grid_of[un])
            for b in units.blocks[un]:
                share = (
                    units.hh[un]
                    if units.kind[un] == "part"
                    else int(self.hh_all[pos[b]])
                )
                d = per_block.setdefault(b, {})
                d[gi] = d.get(gi, 0) + share
        for b in range(len(pos)):
            gp = int(pos[b])
            kind = "block"
            for un in range(graph.n):
                if b in units.blocks[un] and units.kind[un] == "compound":
                    kind = "compound"
                    break
            for n_part, (gi, share) in enumerate(sorted(per_block[b].items())):
                self.assign_rows.append(
                    {
                        "block_id": self.ids[gp],
                        "grid_code": codes[gi],
                        "community_code": code,
                        "households": int(share),
                        "part_id": (
                            f"{self.ids[gp]}/{n_part + 1}" if b in divided else None
                        ),
                        "unit": "part" if b in divided else kind,
                    }
                )
                self.assign_index.append(self.index[gp])
        for b in sorted(divided, key=lambda x: self.ids[pos[x]]):
            gp = int(pos[b])
            for n_part, gi in enumerate(sorted(part_grids[b])):
                members = [
                    un
                    for un in range(graph.n)
                    if units.kind[un] == "part"
                    and units.origin[un] == b
                    and grid_of[un] == gi
                ]
                self.dev_rows.append(
                    {
                        "block_id": self.ids[gp],
                        "part_id": f"{self.ids[gp]}/{n_part + 1}",
                        "grid_code": codes[gi],
                        "community_code": code,
                        "households": int(sum(units.hh[u] for u in members)),
                        "method": units.split_method.get(b, "buildings"),
                        "reason": units.split_reason.get(b, ""),
                    }
                )
                self.dev_geoms.append(
                    _dissolve(
                        [cells[unit_cell[u]] for u in members], [0] * len(members), 1
                    )[0]
                )

        # --- cut length --------------------------------------------------------
        for u in range(graph.n):
            for v, length, _ in graph.nbrs[u]:
                if u < v and grid_of[u] != grid_of[v]:
                    self.cut_length += length

        # --- diagnostics -------------------------------------------------------
        feas = plan.feas
        reasons = list(feas.reasons)
        notes = list(feas.notes)
        if plan is not whole_plan:
            notes.append(
                f"lumpiness: no whole-block plan within {lo}–{hi}; {len(divided)} "
                "block(s) split between grids by whole buildings"
            )
        cmp_split = sorted(
            self.ids[pos[b]]
            for b in divided
            if "split_compounds" in units.split_reason.get(b, "")
        )
        if cmp_split:
            notes.append(
                "compounds split by whole buildings as a last resort for lumpiness "
                "(split_compounds=True) in block(s): " + ", ".join(cmp_split)
            )
        oversize_split = [
            self.ids[pos[b]] for b, why in units.split_reason.items() if "> max" in why
        ]
        if oversize_split:
            notes.append("split above max: " + ", ".join(sorted(oversize_split)))
        if n_viol:
            for c in dict.fromkeys(c for c in plan.causes if c):
                label = c.split(" alone has ")[0].removeprefix("unit ")
                if c.startswith("unit ") and any(label in r for r in reasons):
                    continue  # the feasibility reason already names this unit
                if not any(c in r for r in reasons):
                    reasons.append(c)
            if not reasons:
                reasons.append("no plan within bounds was found")
        if not cover_ok:
            reasons.append(
                f"cover check failed: gap {gap:.2f} m², outside {extra:.2f} m², "
                f"overlap {overlap:.2f} m²"
                + ("" if edges_ok else "; neighbouring grids' edges do not match")
            )
        if n_viol and plan.proven:
            status = "infeasible"
        elif n_viol:
            status = "unsolved"
        elif divided:
            status = "split"
        else:
            status = "ok"
        self.diag_rows.append(
            {
                "community_code": code,
                "households": int(self.hh_all[pos].sum()),
                "n_blocks": len(pos),
                "n_units": graph.n,
                "k_min": whole_plan.feas.k_min,
                "k_max": whole_plan.feas.k_max,
                "k": k,
                "status": status,
                "feasible": not (n_viol and plan.proven),
                "reasons": "; ".join(reasons),
                "notes": "; ".join(notes),
                "violations": n_viol,
                "split_blocks": len(divided),
                "islands": max(len(feas.components) - 1, 0),
                "choke_points": len(feas.choke_points),
                "gap_m2": round(gap, 3),
                "overlap_m2": round(overlap, 3),
                "cover_ok": cover_ok,
            }
        )

    def finish(
        self,
        *,
        blocks: gpd.GeoDataFrame,
        geoms: np.ndarray,
        in_crs: CRS,
        crs: CRS,
        same_crs: bool,
    ) -> PartitionResult:
        if same_crs:
            out_geoms = list(self.grid_geoms)
            dev_geoms = list(self.dev_geoms)
        else:
            # Whole grids go back vertex by vertex, so neighbours that share an
            # edge in the working CRS still share it in the input CRS.
            out_geoms = _back(self.grid_geoms, crs, in_crs)
            dev_geoms = _back(self.dev_geoms, crs, in_crs)
        grid_cols = [
            "grid_code",
            "community_code",
            "households",
            "n_blocks",
            "polsby_popper",
            "split_blocks",
            "flags",
        ]
        grids = gpd.GeoDataFrame(
            pd.DataFrame(self.grid_rows, columns=grid_cols),
            geometry=gpd.GeoSeries(out_geoms, crs=in_crs),
            crs=in_crs,
        )
        assign_cols = [
            "block_id",
            "grid_code",
            "community_code",
            "households",
            "part_id",
            "unit",
        ]
        assignments = pd.DataFrame(
            self.assign_rows,
            columns=assign_cols,
            index=pd.Index(self.assign_index, name=blocks.index.name),
        )
        diagnostics = pd.DataFrame(self.diag_rows)
        dev_cols = [
            "block_id",
            "part_id",
            "grid_code",
            "community_code",
            "households",
            "method",
            "reason",
        ]
        deviations = gpd.GeoDataFrame(
            pd.DataFrame(self.dev_rows, columns=dev_cols),
            geometry=gpd.GeoSeries(dev_geoms, crs=in_crs),
            crs=in_crs,
        )
        within = (grids["households"] >= self.lo) & (grids["households"] <= self.hi)
        ok_grid = grids["flags"] == ""
        feasible = diagnostics["feasible"] if len(diagnostics) else pd.Series([])
        feasible_ok = [
            bool(ok_grid[grids["community_code"] == c].all())
            for c in diagnostics.loc[feasible.astype(bool), "community_code"]
        ]
        metrics: dict[str, Any] = {
            "communities": len(diagnostics),
            "grids": len(grids),
            "grids_within_bounds": int(within.sum()),
            "share_grids_within_bounds": float(within.mean()) if len(grids) else 1.0,
            "feasible_communities": int(feasible.sum()) if len(diagnostics) else 0,
            "share_feasible_communities_within_bounds": (
                float(np.mean(feasible_ok)) if feasible_ok else 1.0
            ),
            "infeasible_communities": int((~feasible.astype(bool)).sum()),
            "unsolved_communities": int((diagnostics["status"] == "unsolved").sum())
            if len(diagnostics)
            else 0,
            "mean_polsby_popper": float(grids["polsby_popper"].mean())
            if len(grids)
            else 0.0,
            "cut_length_m": round(self.cut_length, 1),
            "split_blocks": len(deviations["block_id"].unique()),
            "households": int(self.hh_all.sum()),
        }
        return PartitionResult(
            grids=grids,
            assignments=assignments,
            diagnostics=diagnostics,
            deviations=deviations,
            metrics=metrics,
            parameters={},
        )


_GRID_M = 0.05  # snapping distance when cleaning grid cells (working CRS, m)


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """The valid polygonal part of ``geom`` (lines and points left by repair dropped)."""
    if geom is None or geom.is_empty:
        return geom
    if not geom.is_valid:
        geom = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    polys = [p for p in shapely.get_parts(geom) if p.geom_type in POLYGONAL]
    if not polys:
        return shapely.Polygon()
    return shapely.make_valid(
        shapely.MultiPolygon(
            [q for p in polys for q in shapely.get_parts(p) if not q.is_empty]
        ),
        method="structure",
        keep_collapsed=False,
    )


def _clean_cells(cells: list[shapely.Geometry]) -> list[shapely.Geometry]:
    """Make a community's cells (blocks, parts) one valid polygonal coverage.

    Blocks of one community share their vertices, but the parts of split blocks
    come from separate overlay operations and may overlap by a hair, leave slivers
    or carry zero-width spikes. When the cells are not a valid coverage, GEOS
    coverage cleaning snaps vertices within ``_GRID_M`` and rebuilds the cells so
    that shared edges are identical; dissolving them then gives grids without
    spikes that would turn invalid once converted to a geographic CRS.
    """
    arr = np.asarray([_polygonal(c) for c in cells], dtype=object)
    try:
        if shapely.coverage_is_valid(arr):
            return list(arr)
    except shapely.errors.GEOSException:
        pass
    err: Exception | None = None
    # GEOS coverage cleaning; if it fails, snap to a common grid first and retry
    for pre in (None, _GRID_M / 5):
        try:
            src = arr
            if pre is not None:
                src = shapely.set_precision(arr, pre, mode="valid_output")
                lost = shapely.is_empty(src) & ~shapely.is_empty(arr)
                src[lost] = arr[lost]
            cleaned = shapely.coverage_clean(src, snapping_distance=_GRID_M)
            cleaned = np.asarray([_polygonal(c) for c in cleaned], dtype=object)
        except shapely.errors.GEOSException as exc:
            err = exc
            continue
        gone = shapely.is_empty(cleaned) & ~shapely.is_empty(src)
        cleaned[gone] = src[gone]
        return list(cleaned)
    log.warning("cleaning grid cells failed (%s); dissolving them as they are", err)
    return list(arr)


def _inside_community(
    grids: list[shapely.Geometry], region: shapely.Geometry
) -> list[shapely.Geometry]:
    """Grids clipped to their community's blocks, still one valid coverage.

    Cleaning snaps vertices within ``_GRID_M``, which can push hairlines of a
    grid over the community's edge, where the next community's grids (cleaned
    on their own) already are: on Nanjing, overlaps of 1-2 m². Clipping to the
    community's own blocks removes them; a clip can leave the nodes of two
    neighbouring grids a hair apart, so the clipped grids are cleaned again with a
    1 mm snap.
    """
    clipped = np.asarray(
        [
            g
            if shapely.covered_by(g, region)
            else _polygonal(shapely.intersection(g, region))
            for g in grids
        ],
        dtype=object,
    )
    try:
        if shapely.coverage_is_valid(clipped):
            return list(clipped)
        fixed = shapely.coverage_clean(clipped, snapping_distance=1e-3)
    except shapely.errors.GEOSException:
        return list(clipped)
    fixed = np.asarray([_polygonal(c) for c in fixed], dtype=object)
    gone = shapely.is_empty(fixed) & ~shapely.is_empty(clipped)
    fixed[gone] = clipped[gone]
    return list(fixed)


def _dissolve(
    cells: list[shapely.Geometry], cell_grid: list[int], k: int
) -> list[shapely.Geometry]:
    """Union the cells of each of ``k`` grids (cells cleaned by :func:`_clean_cells`)."""
    groups: list[list[shapely.Geometry]] = [[] for _ in range(k)]
    for cell, gi in zip(cells, cell_grid, strict=True):
        groups[gi].append(cell)
    out = []
    for grp in groups:
        arr = np.asarray(grp, dtype=object)
        try:
            if shapely.coverage_is_valid(arr):
                geom = shapely.coverage_union_all(arr)
            else:
                geom = shapely.union_all(arr, grid_size=_GRID_M)
        except shapely.errors.GEOSException:
            geom = shapely.union_all(shapely.make_valid(arr), grid_size=_GRID_M)
        out.append(_polygonal(geom))
    return out


def _back(geoms: list[shapely.Geometry], crs: CRS, in_crs: CRS) -> list:
    """Geometries from the working CRS back to the input CRS, kept valid."""
    if not geoms:
        return []
    out = np.asarray(gpd.GeoSeries(geoms, crs=crs).to_crs(in_crs).values, dtype=object)
    bad = ~shapely.is_valid(out)
    if bad.any():
        # keep the polygonal part only (repair may leave collapsed lines)
        out[bad] = [_polygonal(g) for g in out[bad]]
    if in_crs.is_geographic:
        # Deliverables carry 7 decimals (~1 cm); a grid that would turn invalid
        # when rounded so is snapped to that precision here (valid by construction).
        rounded = shapely.set_precision(out, 1e-7, mode="pointwise")
        fragile = ~shapely.is_valid(rounded)
        if fragile.any():
            out[fragile] = shapely.set_precision(out[fragile], 1e-7)
    return list(out)


def _connected_set(nodes: list[int], nb: list[list[int]]) -> bool:
    if not nodes:
        return False
    members = set(nodes)
    seen = {nodes[0]}
    stack = [nodes[0]]
    while stack:
        x = stack.pop()
        for v in nb[x]:
            if v in members and v not in seen:
                seen.add(v)
                stack.append(v)
    return len(seen) == len(members)


def _is_connected(piece: list[int], graph: _Graph) -> bool:
    members = set(piece)
    seen = {piece[0]}
    stack = [piece[0]]
    while stack:
        x = stack.pop()
        for v, _, _ in graph.nbrs[x]:
            if v in members and v not in seen:
                seen.add(v)
                stack.append(v)
    return len(seen) == len(members)
