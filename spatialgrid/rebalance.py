"""Rebalance a grid plan after the data changed, moving as few households as possible.

Cities change: a compound adds 600 households, a block is demolished. A planner then
needs a *draft* plan that obeys the bounds again while leaving residents where they
are: every re-assigned resident household gets a new grid worker and a relabelled
record. A *newcomer* (a household of a new compound) gets its first grid worker
wherever it goes, so it costs nothing to place: what the repair minimises is the
households that lived there before the change and change grid
(``existing_households_moved``), then the grids touched (``touch_weight``
households per grid). Given the plan in force (grids + assignments) and the changed
data (households per block; optionally buildings with ``households_before``; new
and removed blocks), :func:`rebalance_plan`:

1. recomputes every grid's households from the new data (a block split between
   grids shares its new total by the buildings standing in each part when they
   account for the block, else in the plan's proportions); grids of communities
   whose data did not change are copied untouched;
2. in each changed community, assigns new blocks to the neighbouring grid with the
   fewest households and hands the stranded pieces of a grid cut in two by a
   removed block to their neighbours;
3. lets several repairs compete, each with whole blocks and with blocks split
   into parts of whole buildings (compounds whole first, then split too):

   - the *least-change assignment* of the violating grids and their neighbours,
     ring by ring up to three rings, solved exactly with OR-Tools CP-SAT
     (:mod:`spatialgrid.minmove`): every grid contiguous and within the bounds,
     grids may empty, one new grid may open; costs count against the plan
     before the change (a piece handed to a neighbour in step 2 may go back
     for free); the region that worked is tried again cut into single
     buildings;
   - *small regions* (the violating grids with one or two neighbours) repaired
     by a beam search over moves of boundary units;
   - a *new grid carved out* of a grid above max (alone, or with up to three
     neighbours), grown from its cheapest parts (a new compound first);
   - the beam search over the whole community (ejection chains A→B→C);

   then sends moved units back where nothing breaks, and the cheapest plan
   within the bounds wins (households moved + ``touch_weight`` per grid);
4. when none reaches the bounds (or a grid has grown to twice min, where a split
   may be cheaper), re-partitions a region with
   :func:`spatialgrid.partition.partition_blocks` — the violating grids alone,
   then with one neighbour, with all neighbours, then ring by ring up to the whole
   community, smallest successful tier first — and gives its grids the old codes
   they overlap most (Hungarian matching on shared households).

Each community's repair keeps to a time budget (about 1.7 s at most on the
generated city). With ``exhaustive_seconds`` a planner who can wait also gets
the exact least-change plan of each changed community as a whole (building
parts, then single buildings, any unit to any grid), competing with the fast
repairs. A block alone above max that cannot be split (no buildings) keeps its
surplus as an unavoidable, flagged violation instead of churning its
neighbours. By default a grid that broke the bounds before the change keeps its
old flaw as a tolerance in its own direction (``repair_all`` repairs those too).
Locked grids never change: their rows (geometry and assignments) are copied as
they are. Grids whose blocks did not change keep their code and geometry. New
grids get sequence numbers above every code ever used in their community
(``used_codes``: pass the codes of every stored plan), so a retired code is never
reused.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from dataclasses import replace as _dc_replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely
from pyproj import CRS

from spatialgrid.adjacency import pieces as unit_pieces
from spatialgrid.adjacency import polsby_popper, shared_edges
from spatialgrid.codes import check_community_code, sequence_digits
from spatialgrid.crs import require_same_crs
from spatialgrid.crs import working_crs as _working_crs
from spatialgrid.errors import CodeOverflowError, InputError
from spatialgrid.feasibility import has_valid_k
from spatialgrid.progress import report
from spatialgrid.split import allocate_households, split_block
from spatialgrid.validate import require_columns

if TYPE_CHECKING:
    from collections.abc import Iterable

    from spatialgrid.progress import ProgressCallback

__all__ = [
    "RebalanceResult",
    "apply_household_changes",
    "next_grid_codes",
    "rebalance_plan",
]

log = logging.getLogger(__name__)

_BIG = 10**9
_NEW = "\x00new"  # placeholder prefix of grids that still need a code


@dataclass(frozen=True)
class RebalanceResult:
    """A draft plan repaired with minimal change, and what changed.

    Attributes
    ----------
    grids
        One row per grid (columns of :class:`~spatialgrid.partition.PartitionResult`
        ``grids`` plus any extra columns of the input grids), input CRS. Untouched
        grids are the input rows with households updated.
    assignments
        ``block_id``, ``grid_code``, ``community_code``, ``households``,
        ``part_id``, ``unit`` per block or block part.
    moves
        Units that changed grid: ``block_id``, ``from_grid``, ``to_grid``,
        ``households``, ``community_code``. ``from_grid`` is empty for new blocks.
    communities
        One row per community that was examined: ``community_code``, ``status``
        (``"unchanged"``, ``"ok"``, ``"repaired"``, ``"violations"``), ``method``
        (``"none"``, ``"exact"``, ``"moves"``, ``"carve"``, ``"exhaustive"`` —
        each also with ``"+parts"`` when blocks were split by whole buildings —
        or ``"repartition"``),
        ``violations_before``, ``violations_after``, ``households_moved``,
        ``existing_households_moved``, ``grids_touched``, ``feasible`` (a valid
        grid count exists), ``notes``.
    summary
        ``households_moved`` (households of the units that changed grid, counted
        as :func:`spatialgrid.plandiff.diff_plans` counts them),
        ``existing_households_moved`` (of those, households that lived there
        before the change: the residents who get a new grid worker; newcomers
        get their first one wherever they go — this is what the repair
        minimises), ``households_new`` (new blocks placed),
        ``grids_touched`` (codes whose blocks changed, created or retired),
        ``n_grids_touched``, ``codes_created``, ``codes_retired``,
        ``violations_before``, ``violations_after``, ``locked``, ``seconds``.
    """

    grids: gpd.GeoDataFrame
    assignments: pd.DataFrame
    moves: pd.DataFrame
    communities: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every grid of the draft lies within the bounds."""
        return int(self.summary.get("violations_after", 0)) == 0


# ------------------------------------------------------------------------ codes


def next_grid_codes(
    community_code: str,
    n: int,
    *,
    used_codes: Iterable[str] = (),
    code_scheme: str = "cjt213",
) -> list[str]:
    """``n`` fresh grid codes for a community: never a code that was ever used.

    New sequence numbers continue after the highest number ever used in the
    community; when that runs past the scheme's width, the lowest numbers never
    used are taken instead.

    Parameters
    ----------
    community_code
        12-digit community code.
    n
        How many codes.
    used_codes
        Every grid code ever used (all stored plans), any community.
    code_scheme
        ``"cjt213"`` (2-digit sequence) or ``"db11"`` (3-digit sequence).

    Raises
    ------
    CodeOverflowError
        The community has fewer than ``n`` never-used sequence numbers left.
    """
    digits = sequence_digits(code_scheme)
    code = check_community_code(community_code)
    last = 10**digits - 1
    used = {
        int(c[len(code) :])
        for c in map(str, used_codes)
        if c.startswith(code) and len(c) == len(code) + digits and c.isdigit()
    }
    top = max(used, default=0)
    free = list(range(top + 1, last + 1))
    if len(free) < n:
        free += [s for s in range(1, top) if s not in used]
    if len(free) < n:
        msg = (
            f"community {code} needs {n} new grid code(s) but only {len(free)} "
            f"sequence numbers of code_scheme={code_scheme!r} were never used; use "
            "code_scheme='db11' (3 digits) or re-code the community in a new plan"
        )
        raise CodeOverflowError(msg)
    return [f"{code}{s:0{digits}d}" for s in free[:n]]


# ------------------------------------------------------------------ data changes


def apply_household_changes(
    blocks: gpd.GeoDataFrame,
    changes: pd.DataFrame | dict[str, int],
    *,
    id_col: str = "block_id",
    households_col: str = "households",
    mode: str = "delta",
) -> gpd.GeoDataFrame:
    """A copy of ``blocks`` with household counts changed.

    Parameters
    ----------
    blocks
        Street blocks with ``id_col`` and ``households_col``.
    changes
        ``{block_id: value}`` or a frame with ``block_id`` and ``households``.
    mode
        ``"delta"`` adds the values (negative removes households; never below 0),
        ``"set"`` replaces them.

    Raises
    ------
    InputError
        An unknown block id or mode.
    """
    if mode not in ("delta", "set"):
        msg = f"mode={mode!r} is unknown; use 'delta' or 'set'"
        raise InputError(msg)
    if isinstance(changes, pd.DataFrame):
        require_columns(changes, ("block_id", "households"), "changes")
        items = dict(
            zip(
                changes["block_id"].astype(str),
                changes["households"].astype(int),
                strict=True,
            )
        )
    else:
        items = {str(k): int(v) for k, v in changes.items()}
    out = blocks.copy()
    ids = out[id_col].astype(str)
    unknown = sorted(set(items) - set(ids))
    if unknown:
        msg = f"changes name block ids {unknown[:5]} that are not in blocks[{id_col!r}]"
        raise InputError(msg)
    pos = {b: i for i, b in enumerate(ids)}
    values = out[households_col].astype("int64").to_numpy().copy()
    for b, v in items.items():
        i = pos[b]
        values[i] = max(0, values[i] + v) if mode == "delta" else max(0, v)
    out[households_col] = values
    return out


# -------------------------------------------------------------------- community


def _viol(h: int, lo: int, hi: int) -> int:
    return lo - h if h < lo else (h - hi if h > hi else 0)


class _Violation:
    """Households outside the bounds per grid, less what the grid may keep.

    A grid that already broke the bounds before the data changed keeps its old
    violation as a tolerance (unless ``repair_all``): the rebalance repairs what
    the change broke, not every old flaw.
    The tolerance is signed and holds in its own direction only: ``+t`` lets a
    grid hold up to ``max + t`` households, ``-t`` down to ``min - t``; a grid
    above max that drops below min violates like any other.
    """

    def __init__(self, lo: int, hi: int, tol: dict[str, int]) -> None:
        self.lo, self.hi, self.tol = lo, hi, tol

    def __call__(self, grid: str, h: int) -> int:
        v = _viol(h, self.lo, self.hi)
        if not v:
            return 0
        t = self.tol.get(grid, 0)
        if (t > 0 and h > self.hi) or (t < 0 and h < self.lo):
            return max(0, v - abs(t))
        return v


def _polys(geom: shapely.Geometry | None) -> shapely.Geometry | None:
    """Only the polygonal part of ``geom`` (intersections may add lines/points)."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon"]
    if not parts:
        return None
    return shapely.union_all(np.asarray(parts, dtype=object))


@dataclass
class _Community:
    """Units (blocks or block parts) of one community and their grids."""

    code: str
    block_id: list[str]
    hh: list[int]
    geom_w: list[Any]  # working CRS
    geom_in: list[Any]  # input CRS, None for pieces made here (transformed later)
    orig: list[str | None]  # grid before the repair (None: new block)
    grid: list[str | None]
    fixed: list[bool]  # in a locked grid
    stay: list[int]  # households that lived in the unit before the change
    nbrs: list[set[int]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.hh)

    def build_graph(self) -> None:
        edges = shared_edges(np.asarray(self.geom_w, dtype=object))
        self.nbrs = [set() for _ in range(self.n)]
        for i, j in zip(edges["i"].to_numpy(), edges["j"].to_numpy(), strict=True):
            self.nbrs[int(i)].add(int(j))
            self.nbrs[int(j)].add(int(i))

    def members(self) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for u, g in enumerate(self.grid):
            if g is not None:
                out.setdefault(g, set()).add(u)
        return out

    def grid_hh(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for u, g in enumerate(self.grid):
            if g is not None:
                out[g] = out.get(g, 0) + self.hh[u]
        return out

    def components(self, units: set[int]) -> list[set[int]]:
        return unit_pieces(units, self.nbrs)

    def neighbour_grids(self, grids: set[str], locked: set[str]) -> set[str]:
        out: set[str] = set()
        for u, g in enumerate(self.grid):
            if g in grids:
                for v in self.nbrs[u]:
                    gv = self.grid[v]
                    if gv is not None and gv not in grids and gv not in locked:
                        out.add(gv)
        return out


def _connected_without(members: set[int], u: int, nbrs: list[set[int]]) -> bool:
    """Whether ``members - {u}`` is non-empty and connected."""
    rest = members - {u}
    return bool(rest) and len(unit_pieces(rest, nbrs)) == 1


@dataclass
class _State:
    grid: list[str | None]
    hh: dict[str, int]
    members: dict[str, set[int]]
    viol: int
    moved: int
    touched: frozenset[str]
    key: frozenset[tuple[int, str | None]]

    def cost(self, touch_weight: int) -> int:
        return self.moved + touch_weight * len(self.touched)


def _moved_cost(com: _Community, u: int, a: str | None, b: str | None) -> int:
    """Change of moved households when unit ``u`` goes from grid a to grid b.

    Only households that lived in the unit before the change count: a new
    household gets its first grid worker wherever it goes, nobody is re-assigned.
    """
    if com.orig[u] is None:
        return 0  # a new block: nobody is re-assigned
    if com.orig[u] == a:
        return com.stay[u]
    if com.orig[u] == b:
        return -com.stay[u]
    return 0


def _dissolve(
    com: _Community, st: _State, a: str, *, vf: _Violation, locked: set[str]
) -> tuple[list[str | None], dict[str, int], int, int, set[str]] | None:
    """Hand every unit of grid ``a`` (below min) to neighbouring grids, greedily."""
    grid = list(st.grid)
    hh = dict(st.hh)
    left = set(st.members[a])
    moved = 0
    touched = {a}
    while left:
        best = None
        for u in left:
            h = com.hh[u]
            for v in com.nbrs[u]:
                b = grid[v]
                if b is None or b == a or b in locked:
                    continue
                score = (vf(b, hh[b] + h) - vf(b, hh[b]), hh[b], b, u)
                if best is None or score < best[0]:
                    best = (score, u, b)
        if best is None:
            return None  # the rest touches no other grid
        _, u, b = best
        grid[u] = b
        hh[b] += com.hh[u]
        hh[a] -= com.hh[u]
        moved += _moved_cost(com, u, a, b)
        touched.add(b)
        left.discard(u)
    return grid, hh, moved, sum(vf(g, hh[g]) for g in touched if g != a), touched


def _search(
    com: _Community,
    *,
    lo: int,
    hi: int,
    locked: set[str],
    beam_width: int,
    max_moves: int,
    touch_weight: int,
    tol: dict[str, int],
) -> _State:
    """Beam search over unit moves (and dissolving grids below min); the best state.

    A move sends one boundary unit from grid A to a neighbouring grid B when A is
    above max or B below min, never raising the total violation and never
    splitting A. Moves of units no larger than A's surplus never raise the total,
    so ejection chains (A→B→C) come out naturally. A grid far below min may
    instead be dissolved into its neighbours (its code is then retired).
    """

    vf = _Violation(lo, hi, tol)

    def total(hh: dict[str, int], members: dict[str, set[int]]) -> int:
        return sum(
            vf(g, h) for g, h in hh.items() if g not in locked and members.get(g)
        )

    members = com.members()
    hh = com.grid_hh()
    start = _State(
        grid=list(com.grid),
        hh=hh,
        members=members,
        viol=total(hh, members),
        moved=0,
        touched=frozenset(),
        key=frozenset(),
    )
    best = start
    if start.viol == 0:
        return best
    beam = [start]
    seen = {start.key}
    solved_at = None
    for depth in range(max_moves):
        if solved_at is not None and depth > solved_at + 2:
            break
        cands: list[tuple[int, int, int, _State, int, str | None]] = []
        macros: list[_State] = []
        for st in beam:
            for a, units in st.members.items():
                if a in locked or not units:
                    continue
                ha = st.hh[a]
                a_over = ha > hi
                if ha < lo:
                    res = _dissolve(com, st, a, vf=vf, locked=locked)
                    if res is not None:
                        grid, hh2, dm, v_after, touched = res
                        v_new = (
                            st.viol
                            - vf(a, ha)
                            + v_after
                            - sum(vf(g, st.hh[g]) for g in touched if g != a)
                        )
                        if v_new < st.viol:
                            mem = dict(st.members)
                            for g in touched:
                                mem[g] = {u for u in st.members[g] if grid[u] == g} | {
                                    u for u in units if grid[u] == g
                                }
                            key = frozenset(
                                (u, g) for u, g in enumerate(grid) if g != com.orig[u]
                            )
                            macros.append(
                                _State(
                                    grid=grid,
                                    hh=hh2,
                                    members=mem,
                                    viol=v_new,
                                    moved=st.moved + dm,
                                    touched=st.touched | touched,
                                    key=key,
                                )
                            )
                for u in units:
                    if com.fixed[u]:
                        continue
                    h = com.hh[u]
                    targets = {
                        st.grid[v]
                        for v in com.nbrs[u]
                        if st.grid[v] is not None and st.grid[v] != a
                    }
                    for b in targets:
                        if b in locked:
                            continue
                        hb = st.hh[b]
                        if not (a_over or hb < lo):
                            continue
                        dv = vf(a, ha - h) + vf(b, hb + h) - vf(a, ha) - vf(b, hb)
                        if dv > 0:
                            continue
                        dm = _moved_cost(com, u, a, b)
                        n_touched = len(st.touched | {a, b})
                        cost = st.moved + dm + touch_weight * n_touched
                        if best.viol == 0 and cost >= best.cost(touch_weight):
                            continue
                        cands.append((st.viol + dv, cost, u, st, dv, b))
        cands.sort(key=lambda c: (c[0], c[1]))
        nxt: list[_State] = []
        for m in macros:
            if m.key not in seen:
                seen.add(m.key)
                nxt.append(m)
        n_single = 0
        for v_new, _cost, u, st, _dv, b in cands:
            if n_single >= beam_width:
                break
            a = st.grid[u]
            assert a is not None
            assert b is not None
            if not _connected_without(st.members[a], u, com.nbrs):
                continue
            key = frozenset(
                {(x, g) for x, g in st.key if x != u}
                | ({(u, b)} if com.orig[u] != b else set())
            )
            if key in seen:
                continue
            seen.add(key)
            grid = list(st.grid)
            grid[u] = b
            hh2 = dict(st.hh)
            hh2[a] -= com.hh[u]
            hh2[b] += com.hh[u]
            mem = dict(st.members)
            mem[a] = st.members[a] - {u}
            mem[b] = st.members[b] | {u}
            nxt.append(
                _State(
                    grid=grid,
                    hh=hh2,
                    members=mem,
                    viol=v_new,
                    moved=st.moved + _moved_cost(com, u, a, b),
                    touched=st.touched | {a, b},
                    key=key,
                )
            )
            n_single += 1
        if not nxt:
            break
        for new in nxt:
            if (new.viol, new.cost(touch_weight)) < (
                best.viol,
                best.cost(touch_weight),
            ):
                best = new
                if new.viol == 0 and solved_at is None:
                    solved_at = depth
        nxt.sort(key=lambda s: (s.viol, s.cost(touch_weight)))
        beam = [s for s in nxt if s.viol > 0][:beam_width]
        if not beam:
            break
    return best


# ---------------------------------------------------------------------- engine


@dataclass
class _Buildings:
    foot: np.ndarray  # working CRS
    weight: np.ndarray
    group: np.ndarray
    tree: shapely.STRtree
    points: np.ndarray
    before: np.ndarray | None = None  # households before the change, if known

    @classmethod
    def build(
        cls, buildings: gpd.GeoDataFrame | None, crs: CRS, bbox: Any
    ) -> _Buildings | None:
        if buildings is None or len(buildings) == 0:
            return None
        sub = buildings.cx[bbox[0] : bbox[2], bbox[1] : bbox[3]]
        if len(sub) == 0:
            return None
        proj = sub.to_crs(crs)
        foot = np.asarray(proj.geometry.values, dtype=object)
        if "households" in proj.columns:
            weight = pd.to_numeric(proj["households"], errors="coerce").to_numpy(float)
        else:
            weight = np.asarray(shapely.area(foot), dtype=float)
        weight = np.nan_to_num(weight, nan=0.0)
        group = (
            proj["compound_id"].to_numpy(dtype=object)
            if "compound_id" in proj.columns
            else np.full(len(proj), None, dtype=object)
        )
        before = None
        if "households_before" in proj.columns:
            before = pd.to_numeric(proj["households_before"], errors="coerce")
            before = np.nan_to_num(before.to_numpy(float), nan=0.0)
        points = shapely.point_on_surface(foot)
        return cls(foot, weight, group, shapely.STRtree(points), points, before)

    def inside(self, geom: shapely.Geometry) -> np.ndarray:
        return self.tree.query(geom, predicate="contains")


def _share_stay(
    stay: int, hh: list[int], geoms: list[Any], bld: _Buildings | None
) -> list[int]:
    """Share a unit's earlier households over its pieces.

    By the buildings' ``households_before`` when known (a new compound's
    buildings hold none of them), else in proportion to the pieces' households.
    """
    if stay <= 0:
        return [0] * len(hh)
    w = None
    if bld is not None and bld.before is not None:
        w = np.asarray([bld.before[bld.inside(g)].sum() for g in geoms], dtype=float)
        if w.sum() <= 0:
            w = None
    if w is None:
        w = np.asarray(hh, dtype=float)
    out = allocate_households(int(stay), w)
    return [int(min(s, h)) for s, h in zip(out, hh, strict=True)]


@dataclass
class _Engine:
    lo: int
    hi: int
    locked: set[str]
    crs: CRS
    buildings: _Buildings | None
    part_households: int
    beam_width: int
    max_moves: int
    touch_weight: int
    seed: int
    code_scheme: str
    max_single: int = 4
    time_budget_s: float = 1.0
    exhaustive_s: float = 0.0  # > 0: also solve the whole community exactly
    deadline: float = math.inf  # perf_counter() by which a community should be done
    vf: _Violation = field(default_factory=lambda: _Violation(0, 0, {}))

    def refine(self, com: _Community, grids: set[str], *, keep_groups: bool) -> int:
        """Split the units of ``grids`` into parts of whole buildings.

        With ``keep_groups`` the buildings of one compound stay in one part
        (compounds stay whole); without, compounds may be split too (DOMAIN
        "Lumpiness": grid offices split large compounds by whole buildings).
        """
        if self.buildings is None:
            return 0
        bld = self.buildings
        new_units: dict[int, list[tuple[Any, int]]] = {}
        for u in range(com.n):
            if com.grid[u] not in grids or com.fixed[u]:
                continue
            if com.hh[u] <= self.part_households:
                continue
            inside = bld.inside(com.geom_w[u])
            if len(inside) < 2:
                continue
            res = split_block(
                com.geom_w[u],
                com.hh[u],
                buildings=bld.foot[inside],
                building_weights=bld.weight[inside],
                building_groups=bld.group[inside] if keep_groups else None,
                part_households=self.part_households,
                max_households=self.hi,
                use_roads=False,
            )
            if res.n_parts > 1:
                hh = [int(h) for h in res.households]
                parts = list(res.parts)
                stay = _share_stay(com.stay[u], hh, parts, bld)
                new_units[u] = list(zip(parts, hh, stay, strict=True))
        if not new_units:
            return 0
        fields: dict[str, list[Any]] = {
            k: []
            for k in ("block_id", "hh", "geom_w", "geom_in", "orig", "grid", "stay")
        }
        fixed: list[bool] = []
        for u in range(com.n):
            pieces = new_units.get(u, [(com.geom_w[u], com.hh[u], com.stay[u])])
            for geom, h, st in pieces:
                fields["block_id"].append(com.block_id[u])
                fields["hh"].append(h)
                fields["stay"].append(st)
                fields["geom_w"].append(geom)
                fields["geom_in"].append(com.geom_in[u] if u not in new_units else None)
                fields["orig"].append(com.orig[u])
                fields["grid"].append(com.grid[u])
                fixed.append(com.fixed[u])
        com.block_id = fields["block_id"]
        com.hh = fields["hh"]
        com.stay = fields["stay"]
        com.geom_w = fields["geom_w"]
        com.geom_in = fields["geom_in"]
        com.orig = fields["orig"]
        com.grid = fields["grid"]
        com.fixed = fixed
        com.build_graph()
        return len(new_units)

    def violating(self, com: _Community) -> set[str]:
        return {
            g
            for g, h in com.grid_hh().items()
            if g not in self.locked and self.vf(g, h) > 0
        }

    def place_loose(self, com: _Community, notes: list[str]) -> None:
        """Give new blocks and stranded pieces a grid (neighbour with fewest hh)."""
        # Pieces of a grid cut in two (a removed block): keep the largest piece.
        for g, units in com.members().items():
            if g in self.locked:
                continue
            comps = com.components(units)
            if len(comps) > 1:
                comps.sort(key=lambda c: -sum(com.hh[u] for u in c))
                for comp in comps[1:]:
                    for u in comp:
                        com.grid[u] = None
                notes.append(
                    f"grid {g} was cut in two; {len(comps) - 1} piece(s) moved"
                )
        loose = [u for u in range(com.n) if com.grid[u] is None]
        while loose:
            hh = com.grid_hh()
            progress = False
            for u in sorted(loose, key=lambda x: -com.hh[x]):
                opts = {
                    com.grid[v]
                    for v in com.nbrs[u]
                    if com.grid[v] is not None and com.grid[v] not in self.locked
                }
                if not opts:
                    continue
                best = min(opts, key=lambda g: (hh[g] > self.hi, hh[g], g))
                com.grid[u] = best
                hh[best] += com.hh[u]
                progress = True
            loose = [u for u in range(com.n) if com.grid[u] is None]
            if not progress and loose:
                # No grid next to it: a grid of its own (one per connected group).
                for k, comp in enumerate(com.components(set(loose))):
                    label = f"{_NEW}:{com.code}:{k}:{min(comp)}"
                    for u in comp:
                        com.grid[u] = label
                notes.append(f"{len(loose)} unit(s) touch no grid: new grid(s)")
                loose = []

    def repartition(self, com: _Community, region: set[str]) -> list[str | None] | None:
        """Re-partition the units of ``region``; new grid labels per unit."""
        from spatialgrid.partition import partition_blocks

        units = [u for u in range(com.n) if com.grid[u] in region]
        total = sum(com.hh[u] for u in units)
        if not units or not has_valid_k(
            total, min_households=self.lo, max_households=self.hi
        ):
            return None
        pseudo = gpd.GeoDataFrame(
            {
                "uid": [f"u{u}" for u in units],
                "community_code": com.code,
                "households": [com.hh[u] for u in units],
            },
            geometry=gpd.GeoSeries([com.geom_w[u] for u in units], crs=self.crs),
            crs=self.crs,
        )
        bld = None
        if self.buildings is not None:
            region_geom = shapely.union_all(np.asarray(pseudo.geometry.values))
            inside = self.buildings.inside(region_geom)
            if len(inside):
                bld = gpd.GeoDataFrame(
                    {
                        "households": self.buildings.weight[inside],
                        "compound_id": self.buildings.group[inside],
                    },
                    geometry=gpd.GeoSeries(self.buildings.foot[inside], crs=self.crs),
                    crs=self.crs,
                )
        res = partition_blocks(
            pseudo,
            id_col="uid",
            buildings=bld,
            min_households=self.lo,
            max_households=self.hi,
            code_scheme=self.code_scheme,
            seed=self.seed,
            working_crs=self.crs,
        )
        temp_geom = dict(
            zip(res.grids["grid_code"], res.grids.geometry.values, strict=True)
        )
        # Rebuild the region's units from the result (split pseudo-blocks).
        rows = res.assignments
        by_uid: dict[str, list[tuple[str, int]]] = {}
        for uid, code, h in zip(
            rows["block_id"].astype(str),
            rows["grid_code"].astype(str),
            rows["households"].astype(int),
            strict=True,
        ):
            by_uid.setdefault(uid, []).append((code, int(h)))
        # Temp grid ↔ old grid overlap (households), matched one to one.
        from scipy.optimize import linear_sum_assignment

        temps = sorted(temp_geom)
        olds = sorted(region)
        w = np.zeros((len(temps), len(olds)))
        for u in units:
            for code, h in by_uid.get(f"u{u}", []):
                o = com.orig[u]
                if o in region:
                    w[temps.index(code), olds.index(o)] += h
        r, c = linear_sum_assignment(w, maximize=True)
        label = {temps[i]: olds[j] for i, j in zip(r, c, strict=True)}
        for k, t in enumerate(temps):
            label.setdefault(t, f"{_NEW}:{com.code}:r{k}:{len(region)}")
        new_units: dict[int, list[tuple[Any, int, str]]] = {}
        for u in units:
            pieces = by_uid.get(f"u{u}", [])
            if len(pieces) == 1:
                com.grid[u] = label[pieces[0][0]]
                continue
            parts = []
            for code, h in pieces:
                geom = _polys(shapely.intersection(com.geom_w[u], temp_geom[code]))
                if geom is not None:
                    parts.append((geom, h, label[code]))
            if len(parts) < 2:
                top = max(pieces, key=lambda p: p[1])
                com.grid[u] = label[top[0]]
                continue
            stay = _share_stay(
                com.stay[u],
                [p[1] for p in parts],
                [p[0] for p in parts],
                self.buildings,
            )
            new_units[u] = [(*p, st) for p, st in zip(parts, stay, strict=True)]
        if new_units:
            bid, hh, gw, gi, orig, grid, fixed, stays = [], [], [], [], [], [], [], []
            for u in range(com.n):
                pieces = new_units.get(u)
                if pieces is None:
                    pieces = [(com.geom_w[u], com.hh[u], com.grid[u], com.stay[u])]
                for geom, h, g, st in pieces:
                    bid.append(com.block_id[u])
                    hh.append(h)
                    stays.append(st)
                    gw.append(geom)
                    gi.append(com.geom_in[u] if u not in new_units else None)
                    orig.append(com.orig[u])
                    grid.append(g)
                    fixed.append(com.fixed[u])
            com.block_id, com.hh, com.geom_w, com.geom_in = bid, hh, gw, gi
            com.orig, com.grid, com.fixed, com.stay = orig, grid, fixed, stays
            com.build_graph()
        return com.grid

    def repair(self, com: _Community, notes: list[str]) -> str:
        """Repair ``com`` in place; the method that was used."""
        self.deadline = time.perf_counter() + 1.7 * self.time_budget_s
        self.place_loose(com, notes)
        if not self.violating(com):
            return "none"
        self._tolerate_oversize(com, notes)
        if not self.violating(com):
            return "none"
        # Every way that reaches the bounds competes on households moved and
        # grids touched: the exact least-change search, small regions of
        # moves, a new grid carved out, the move search over the community.
        whole = self._whole_exact(com)
        # The fast searches keep their own budget after an exhaustive search.
        self.deadline = time.perf_counter() + 1.7 * self.time_budget_s
        cands: list[tuple[tuple[int, int], _Community, str, str]] = []
        for found, name, text in (
            (whole, "exhaustive", "least-change repair of"),
            (self._exact_search(com), "exact", "least-change repair within"),
            (self._small_region_search(com), "moves", "repaired within"),
            (self._carve_search(com), "carve", "new grid carved out of"),
        ):
            if found is not None and found[0][0] == 0:
                score, trial, region, refined = found
                cands.append(
                    (
                        score,
                        trial,
                        name + ("+parts" if refined else ""),
                        f"{text} {len(region)} grid(s)"
                        + (", block(s) split by whole buildings" if refined else ""),
                    )
                )
        work = _copy(com)
        method = "moves"
        state = self._search(work)
        split_note = ""
        if state.viol > 0 and self.buildings is not None:
            area = self.violating(work)
            area |= work.neighbour_grids(area, self.locked)
            for keep_groups in (True, False):
                if self.refine(work, area, keep_groups=keep_groups):
                    method = "moves+parts"
                    state = self._search(work)
                    if state.viol == 0:
                        if not keep_groups:
                            split_note = "compound(s) split by whole buildings"
                        break
        base = _copy(work)  # the units refined, the grids as they were
        work.grid = list(state.grid)
        moves_score = self._score(work)
        if moves_score[0] == 0:
            cands.append((moves_score, work, method, split_note))
        spent = time.perf_counter() - (self.deadline - 1.7 * self.time_budget_s)
        if self.exhaustive_s <= 0 and (not cands or spent < 0.5 * self.time_budget_s):
            # Nothing within the rings, or the repairs were quick: the whole
            # community's exact program (any unit to any grid) with a short
            # share of the time left, before a region is re-partitioned.
            left = self.deadline - time.perf_counter() - 0.5 * self.time_budget_s
            if left > 0.05:
                quick = self._whole_exact(
                    com, quick=min(left, 0.3 * self.time_budget_s)
                )
                if quick is not None and quick[0][0] == 0:
                    score, trial, region, refined = quick
                    cands.append(
                        (
                            score,
                            trial,
                            "exact" + ("+parts" if refined else ""),
                            f"least-change repair of all {len(region)} grid(s)",
                        )
                    )
        core = self.violating(com)
        hh = com.grid_hh()
        if cands:
            # A grid far above max may be cheaper to split than to spread out.
            if any(hh[g] >= 2 * self.lo for g in core):
                rep = self._repartition_regions(base, 1, max_tiers=2)
                if rep is not None and rep[0][0] == 0:
                    text = f"re-partitioned {rep[2]} grid(s)"
                    cands.append((rep[0], rep[1], "repartition", text))
            for cand in cands:
                self._polish(cand[1])
            cands = [(self._score(c[1]), *c[1:]) for c in cands]
            log.debug(
                "community %s candidates: %s",
                com.code,
                [(c[2], c[0]) for c in cands],
            )
            score, trial, method, text = min(cands, key=lambda c: c[0])
            _assign(com, trial)
            if text:
                notes.append(text)
            return method
        # Last resort: re-partition a region; smallest regions first.
        best = self._repartition_regions(base, moves_score[0])
        if best is None or moves_score <= best[0]:
            if moves_score[0] < self._score(com)[0]:
                _assign(com, work)
            if moves_score[0] > 0:
                notes.append("no plan within bounds found for the repair region")
            return method
        self._polish(best[1])
        _assign(com, best[1])
        notes.append(f"re-partitioned {best[2]} grid(s)")
        return "repartition"

    def _polish(self, com: _Community) -> int:
        """Send moved units back to their old grid where nothing breaks.

        A unit goes back when both grids stay within the bounds (no violation
        grows), the grid it leaves stays in one piece and it borders its old
        grid; most earlier households first, until nothing more can go back.
        Returns the earlier households saved.
        """
        saved = 0
        hh = com.grid_hh()
        members = com.members()
        changed = True
        while changed:
            changed = False
            moved = sorted(
                (
                    u
                    for u in range(com.n)
                    if com.orig[u] is not None
                    and com.grid[u] != com.orig[u]
                    and com.stay[u] > 0
                ),
                key=lambda u: (-com.stay[u], u),
            )
            for u in moved:
                a, b = com.grid[u], com.orig[u]
                if a is None or b is None or b in self.locked:
                    continue
                if b not in members or not (com.nbrs[u] & members[b]):
                    continue
                h = com.hh[u]
                before = self.vf(a, hh[a]) + self.vf(b, hh[b])
                after = self.vf(a, hh[a] - h) + self.vf(b, hh[b] + h)
                if after > before or self.vf(a, hh[a] - h) > self.vf(a, hh[a]):
                    continue
                if self.vf(b, hh[b] + h) > self.vf(b, hh[b]):
                    continue
                if not _connected_without(members[a], u, com.nbrs):
                    continue
                com.grid[u] = b
                members[a].discard(u)
                members[b].add(u)
                hh[a] -= h
                hh[b] += h
                saved += com.stay[u]
                changed = True
        return saved

    def _exact_search(
        self, com: _Community, *, rings: int = 3
    ) -> tuple[tuple[int, int], _Community, set[str], bool] | None:
        """Least-change assignment inside the violating grids and their neighbours.

        Solved exactly (:func:`spatialgrid.minmove.min_move_assignment`): the
        units of the region (whole blocks, then parts of whole buildings with
        compounds whole, then not) go to grids so that every grid is within the
        bounds (an old flaw keeps its tolerance), as few earlier households
        move as possible and as few grids as possible are touched; grids may be
        emptied and, when one is above max, one new grid may open. Each unit
        granularity is tried, the cheapest plan wins; a region that reaches
        the bounds is tried once more cut into single buildings. Then the
        region grows by the next ring of neighbours (``rings``) while the time
        lasts, even after a plan within the bounds was found (a wider ring may
        move fewer households).
        """
        core = self.violating(com)
        if not core:
            return None
        region = set(core)
        deadline = time.perf_counter() + 0.8 * self.time_budget_s
        best: tuple[tuple[int, int], _Community, set[str], bool] | None = None
        single = _dc_replace(self, part_households=1)
        for ring in range(rings):
            wider = region | com.neighbour_grids(region, self.locked)
            if wider == region:
                break
            region = wider
            found = self._exact_in(
                com, core, region, deadline, later_rings=rings - ring - 1
            )
            if found is None or found[0][0] > 0:
                if found is not None and (best is None or found[0] < best[0]):
                    best = found
                continue
            # A plan within the bounds: single buildings, compounds split, in
            # the same region often move less; then the next ring may still
            # hold a cheaper plan (its program contains this one's), tried
            # while the time lasts.
            finer = single._exact_in(
                com,
                core,
                region,
                deadline,
                granularities=((True, False),),
                later_rings=rings - ring - 1,
            )
            for cand in (found, finer):
                if cand is not None and (best is None or cand[0] < best[0]):
                    best = cand
        return best

    def _whole_exact(
        self, com: _Community, *, quick: float = 0.0
    ) -> tuple[tuple[int, int], _Community, set[str], bool] | None:
        """The exact least-change plan of the whole community (exhaustive mode).

        Every unlocked grid is in the region, every unit split into building
        parts and then into single buildings (compounds too), a unit may join
        any grid, and CP-SAT gets ``exhaustive_s`` seconds in all: the best
        plan this unit model allows, for planners who can wait (and the
        reference the fast repairs are measured against). With ``quick``
        seconds instead, single buildings only: the fast repair's short try of
        the whole community. None when off or when nothing was found in time.
        """
        seconds = quick if quick > 0 else self.exhaustive_s
        if seconds <= 0:
            return None
        core = self.violating(com)
        if not core:
            return None
        region = {g for g in com.members() if g not in self.locked}
        end = time.perf_counter() + seconds
        best = None
        # The usual building parts first (smaller model, solved sooner), then
        # single buildings with the time that is left.
        single = _dc_replace(self, part_households=1)
        for engine in (single,) if quick > 0 else (self, single):
            left = end - time.perf_counter()
            found = engine._exact_in(
                com,
                core,
                region,
                end,
                granularities=((True, False),),
                reach=com.n,
                per_call=left if engine is not self else left / 2,
            )
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        return best

    def _exact_in(
        self,
        com: _Community,
        core: set[str],
        region: set[str],
        deadline: float,
        *,
        granularities: tuple[tuple[bool, bool], ...] = (
            (False, True),
            (True, True),
            (True, False),
        ),
        reach: int = 2,
        per_call: float | None = None,
        later_rings: int = 0,
    ) -> tuple[tuple[int, int], _Community, set[str], bool] | None:
        """Exact repair of ``region``: per unit granularity (refined, compounds
        kept whole) in ``granularities``, units joining grids up to ``reach``
        steps away, each solve within ``per_call`` seconds (default a quarter
        of the time budget, and leaving 15 % of the budget for each of
        ``later_rings`` wider rings still to come, so one solve that runs out
        of time cannot starve them); the cheapest plan or None."""
        from spatialgrid.minmove import min_move_assignment

        hh0 = com.grid_hh()
        n_new = 1 if any(hh0[g] > self.hi for g in core) else 0
        grids = sorted(region)
        gi = {g: i for i, g in enumerate(grids)}
        lo_g, hi_g = [], []
        for g in grids:
            t = self.vf.tol.get(g, 0)
            lo_g.append(self.lo + t if t < 0 else self.lo)
            hi_g.append(self.hi + t if t > 0 else self.hi)
        best: tuple[tuple[int, int], _Community, set[str], bool] | None = None
        per = 0.25 * self.time_budget_s if per_call is None else per_call
        reserve = 0.15 * self.time_budget_s * later_rings
        for refined, keep in granularities:
            left = deadline - time.perf_counter()
            if left <= 0.02:
                break
            trial = _copy(com)
            if refined and not self.refine(trial, region, keep_groups=keep):
                continue
            units = [u for u in range(trial.n) if trial.grid[u] in region]
            local = {u: k for k, u in enumerate(units)}
            # Costs against the plan before the change: a piece that the loose
            # placement handed to a neighbour may go back for free. A unit new
            # to the plan, or from a grid outside the region, moves anyway.
            home = [trial.orig[u] in gi for u in units]
            res = min_move_assignment(
                [trial.hh[u] for u in units],
                [trial.stay[u] if h else 0 for u, h in zip(units, home, strict=True)],
                [
                    gi[trial.orig[u] if h else trial.grid[u]]
                    for u, h in zip(units, home, strict=True)
                ],
                [{local[v] for v in trial.nbrs[u] if v in local} for u in units],
                lo_g,
                hi_g,
                fixed=[trial.fixed[u] for u in units],
                n_new=n_new,
                new_lo=self.lo,
                new_hi=self.hi,
                touch_weight=self.touch_weight,
                reach=reach,
                time_limit=min(per, max(left - reserve, 0.05)),
                max_rounds=200 if per_call is not None else 30,
                stop_if_outside=True,
            )
            if res is None:
                continue
            for k, u in enumerate(units):
                g = int(res.grid[k])
                trial.grid[u] = grids[g] if g < len(grids) else f"{_NEW}:{com.code}:m"
            score = self._score(trial)
            if best is None or score < best[0]:
                best = (score, trial, region, refined)
        return best

    def _carve_search(
        self, com: _Community, *, n_seeds: int = 10, max_nbrs: int = 6
    ) -> tuple[tuple[int, int], _Community, set[str], bool] | None:
        """Repair a grid above max by carving a new grid out of it and neighbours.

        For each grid above max, the regions are the grid alone and with one,
        two or three of its neighbours whose households are enough for one grid
        more than the region holds (most spare households first, smallest
        regions first). The units are the region's blocks, then parts of whole
        buildings (compounds whole, then not). A new grid grows from a seed
        part by adding neighbouring parts, cheapest first (those whose earlier
        households are fewest: a new compound's buildings cost nothing), never
        taking a grid below min or cutting it in two, until the new grid and
        every grid of the region are within the bounds. The cheapest plan
        (violation, households moved + ``touch_weight`` per grid touched) wins;
        None when no carve works.
        """
        from itertools import combinations

        hh = com.grid_hh()
        viol = self.violating(com)
        over = sorted(g for g in viol if hh[g] > self.hi)
        if not over:
            return None
        others = sum(self.vf(g, h) for g, h in hh.items() if g in viol - set(over))
        t0 = time.perf_counter()
        best: tuple[tuple[int, int], _Community, set[str], bool] | None = None
        for a in over:
            nbrs = sorted(
                com.neighbour_grids({a}, self.locked), key=lambda g: (-hh[g], g)
            )[:max_nbrs]
            regions: list[set[str]] = []
            for size in range(4):
                for extra in combinations(nbrs, size):
                    total = hh[a] + sum(hh[g] for g in extra)
                    k = size + 2  # grids after the carve
                    if k * self.lo <= total <= k * self.hi:
                        regions.append({a, *extra})
            regions = regions[:12]
            if not regions:
                continue
            area = {a, *nbrs}
            for refined, keep in ((False, True), (True, True), (True, False)):
                trial = _copy(com)
                if refined and not self.refine(trial, area, keep_groups=keep):
                    continue
                found = False
                for reg in regions:
                    if time.perf_counter() - t0 > 0.3 * self.time_budget_s:
                        return best
                    grid = self._carve(trial, reg, n_seeds=n_seeds)
                    if grid is None:
                        continue
                    cand = _copy(trial)
                    cand.grid = grid
                    score = self._score(cand)
                    if score[0] > others:
                        continue
                    found = True
                    if best is None or score < best[0]:
                        best = (score, cand, reg, refined)
                if found and refined:
                    break  # compounds split only when whole ones would not do
        return best

    def _carve(
        self, com: _Community, region: set[str], *, n_seeds: int
    ) -> list[str | None] | None:
        """Unit grids with a new grid grown inside ``region``; None if none fits."""
        units = [u for u in range(com.n) if com.grid[u] in region and not com.fixed[u]]
        if not units:
            return None
        in_region = set(units)
        base_members = {g: set() for g in region}
        for u in units:
            base_members[com.grid[u]].add(u)
        base_hh = {g: sum(com.hh[u] for u in m) for g, m in base_members.items()}

        def cost(u: int) -> float:
            return com.stay[u] / max(com.hh[u], 1)

        seeds = sorted(units, key=lambda u: (cost(u), -com.hh[u], u))[:n_seeds]
        best: tuple[int, set[int]] | None = None
        for seed in seeds:
            grown = self._grow(com, seed, base_members, base_hh, in_region)
            if grown is not None and (best is None or grown[0] < best[0]):
                best = grown
        if best is None:
            return None
        label = f"{_NEW}:{com.code}:c{min(units)}"
        grid = list(com.grid)
        for u in best[1]:
            grid[u] = label
        return grid

    def _grow(
        self,
        com: _Community,
        seed: int,
        base_members: dict[str, set[int]],
        base_hh: dict[str, int],
        in_region: set[int],
    ) -> tuple[int, set[int]] | None:
        """Grow a new grid from ``seed``: (households moved, its units) or None."""
        lo, hi = self.lo, self.hi
        members = {g: set(m) for g, m in base_members.items()}
        ghh = dict(base_hh)
        s_set: set[int] = set()
        s_hh = moved = 0
        u = seed
        if com.hh[u] > hi or not _connected_without(members[com.grid[u]], u, com.nbrs):
            return None
        while True:
            g = com.grid[u]
            members[g].discard(u)
            ghh[g] -= com.hh[u]
            s_set.add(u)
            s_hh += com.hh[u]
            moved += com.stay[u]
            if lo <= s_hh <= hi and all(self.vf(g, h) == 0 for g, h in ghh.items()):
                return moved, s_set
            options = []
            for x in s_set:
                for v in com.nbrs[x]:
                    if v not in in_region or v in s_set:
                        continue
                    gv = com.grid[v]
                    h = com.hh[v]
                    if s_hh + h > hi or ghh[gv] - h < lo:
                        continue
                    adj = len(com.nbrs[v] & s_set)
                    options.append((ghh[gv] <= hi, com.stay[v] - 20 * adj, -h, v))
            options.sort()
            nxt = next(
                (
                    v
                    for *_, v in options
                    if _connected_without(members[com.grid[v]], v, com.nbrs)
                ),
                None,
            )
            if nxt is None:
                return None
            u = nxt

    def _small_region_search(
        self, com: _Community, *, max_region: int = 3
    ) -> tuple[tuple[int, int], _Community, set[str], bool] | None:
        """Repair with moves inside the smallest region of grids; None if none works.

        Regions grow from the violating grids: with one neighbour, then with
        two (two neighbours, or a neighbour and one of its own: a chain), up to
        ``max_region`` grids in all; every other grid is held fixed. Each region
        is tried with whole units and with the units of the region split into
        parts of whole buildings (smaller pieces often move fewer households).
        The first size that yields a plan within the bounds wins (its cheapest
        region and units).
        """
        core = self.violating(com)
        if not core or len(core) >= max_region:
            return None
        t0 = time.perf_counter()
        all_grids = set(com.members())
        seen: set[frozenset[str]] = set()
        frontier: list[set[str]] = [set(core)]
        for _size in range(len(core) + 1, max_region + 1):
            regions: list[set[str]] = []
            for reg in frontier:
                for nb in sorted(com.neighbour_grids(reg, self.locked)):
                    key = frozenset(reg | {nb})
                    if key not in seen:
                        seen.add(key)
                        regions.append(set(key))
            best: tuple[tuple[int, int], _Community, set[str], bool] | None = None
            for refine in (False, True):
                if refine and self.buildings is None:
                    break
                for reg in regions:
                    if time.perf_counter() - t0 > 0.25 * self.time_budget_s:
                        break
                    trial = _copy(com)
                    if refine and not self.refine(trial, reg, keep_groups=False):
                        continue
                    state = self._search(trial, hold=all_grids - reg)
                    if state.viol > 0:
                        continue
                    trial.grid = list(state.grid)
                    score = self._score(trial)
                    if score[0] == 0 and (best is None or score < best[0]):
                        best = (score, trial, reg, refine)
            if best is not None:
                return best
            frontier = regions
        return None

    def _tolerate_oversize(self, com: _Community, notes: list[str]) -> None:
        """Units above max that cannot be split: their surplus is unavoidable.

        They are split by whole buildings first; what stays above max (one
        building, no buildings known) is tolerated in its grid instead of
        churning the neighbourhood for a violation no plan can remove.
        """
        big = {com.grid[u] for u in range(com.n) if com.hh[u] > self.hi}
        big = {g for g in big if g is not None and g not in self.locked}
        if not big:
            return
        self.refine(com, big, keep_groups=False)
        for u in range(com.n):
            g = com.grid[u]
            if com.hh[u] > self.hi and g is not None and g not in self.locked:
                self.vf.tol[g] = self.vf.tol.get(g, 0) + com.hh[u] - self.hi
                notes.append(
                    f"block {com.block_id[u]} alone holds {com.hh[u]} > {self.hi} "
                    "households and cannot be split (no buildings to split by)"
                )

    def _score(self, com: _Community) -> tuple[int, int]:
        hh = com.grid_hh()
        v = sum(self.vf(g, h) for g, h in hh.items() if g not in self.locked)
        touched = {
            g
            for u in range(com.n)
            if com.grid[u] != com.orig[u]
            for g in (com.grid[u], com.orig[u])
            if g is not None
        }
        moved = sum(
            com.stay[u]
            for u in range(com.n)
            if com.orig[u] is not None and com.grid[u] != com.orig[u]
        )
        return v, moved + self.touch_weight * len(touched)

    def _repartition_regions(
        self, com: _Community, base_viol: int, *, max_tiers: int | None = None
    ) -> tuple[tuple[int, int], _Community, int] | None:
        """Try regions tier by tier: the violating grids, plus one neighbour, plus
        all neighbours, then ring by ring; the first tier with a plan within bounds
        wins (its cheapest region), within ``time_budget_s``."""
        t0 = time.perf_counter()
        unlocked = {g for g in com.members() if g not in self.locked}
        core = self.violating(com)
        hh = com.grid_hh()
        over = sum(hh[g] for g in core) > self.hi * len(core)
        nbrs = sorted(
            com.neighbour_grids(core, self.locked),
            key=lambda g: (hh[g] if over else -hh[g], g),
        )
        tiers: list[list[set[str]]] = [[set(core)]]
        tiers.append([core | {n} for n in nbrs[: self.max_single]])
        region = core | set(nbrs)
        tiers.append([region])
        while not region >= unlocked:
            wider = region | com.neighbour_grids(region, self.locked)
            if wider == region:
                break
            region = wider
            tiers.append([region])
        best: tuple[tuple[int, int], _Community, int] | None = None
        for tier in tiers[:max_tiers]:
            for reg in tier:
                now = time.perf_counter()
                late = now - t0 > self.time_budget_s or now > self.deadline
                if late and best is not None:
                    return best
                trial = _copy(com)
                if self.repartition(trial, reg) is None:
                    continue
                if self._score(trial)[0] > 0:  # tidy up what the cut left
                    trial.grid = list(self._search(trial).grid)
                if self._score(trial)[0] > 0 and self.buildings is not None:
                    area = self.violating(trial)
                    area |= trial.neighbour_grids(area, self.locked)
                    if self.refine(trial, area, keep_groups=False):
                        trial.grid = list(self._search(trial).grid)
                score = self._score(trial)
                if score[0] < base_viol and (best is None or score < best[0]):
                    best = (score, trial, len(reg))
            if best is not None and best[0][0] == 0:
                return best
        return best

    def _search(self, com: _Community, *, hold: Iterable[str] = ()) -> _State:
        """The move search with this engine's settings; ``hold`` grids stay put."""
        return _search(
            com,
            lo=self.lo,
            hi=self.hi,
            locked=self.locked | set(hold),
            beam_width=self.beam_width,
            max_moves=self.max_moves,
            touch_weight=self.touch_weight,
            tol=self.vf.tol,
        )


def _copy(com: _Community) -> _Community:
    return _Community(
        code=com.code,
        block_id=list(com.block_id),
        hh=list(com.hh),
        geom_w=list(com.geom_w),
        geom_in=list(com.geom_in),
        orig=list(com.orig),
        grid=list(com.grid),
        fixed=list(com.fixed),
        stay=list(com.stay),
        nbrs=[set(s) for s in com.nbrs],
    )


def _assign(com: _Community, other: _Community) -> None:
    for name in (
        "block_id",
        "hh",
        "geom_w",
        "geom_in",
        "orig",
        "grid",
        "fixed",
        "stay",
        "nbrs",
    ):
        setattr(com, name, getattr(other, name))


# ----------------------------------------------------------------------- public


def _flag_text(h: int, lo: int, hi: int, contiguous: bool = True) -> str:
    flags = []
    if h < lo:
        flags.append(f"below_min: {h} < {lo}")
    elif h > hi:
        flags.append(f"above_max: {h} > {hi}")
    if not contiguous:
        flags.append("not_contiguous: its blocks share no street edge chain")
    return "; ".join(flags)


def _flags_as_text(value: Any) -> str:
    if isinstance(value, list | tuple | np.ndarray):
        return "; ".join(str(v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def rebalance_plan(
    blocks: gpd.GeoDataFrame,
    grids: gpd.GeoDataFrame,
    assignments: pd.DataFrame,
    *,
    buildings: gpd.GeoDataFrame | None = None,
    locked: Iterable[str] = (),
    used_codes: Iterable[str] = (),
    households_col: str = "households",
    community_col: str = "community_code",
    id_col: str = "block_id",
    min_households: int = 400,
    max_households: int = 500,
    code_scheme: str = "cjt213",
    seed: int = 0,
    working_crs: Any = None,
    repair_all: bool = False,
    part_households: int | None = None,
    beam_width: int = 12,
    max_moves: int = 12,
    touch_weight: int = 100,
    exhaustive_seconds: float = 0.0,
    progress: ProgressCallback | None = None,
) -> RebalanceResult:
    """Repair a plan after the data changed, moving as few households as possible.

    Parameters
    ----------
    blocks
        The *current* street blocks (changed households, new blocks added,
        removed blocks absent) with ``id_col``, ``households_col``,
        ``community_col`` and polygon geometry.
    grids, assignments
        The plan in force: grids (``grid_code``, ``community_code``,
        ``households``, geometry; same CRS as ``blocks``) and its assignments
        (``block_id``, ``grid_code``, ``households`` per block or part).
    buildings
        Optional building footprints after the change (``households``,
        ``compound_id``, optionally ``households_before``: households that lived
        in the building before the change, 0 for a new building); enable moving
        parts of blocks (whole buildings) when whole blocks are too lumpy, tell
        which part of a split block gained or lost households, and which parts
        hold newcomers (cheap to move). Without ``households_before`` a block's
        earlier households are ``min(old, new)`` of its plan figure, shared over
        its parts by households.
    locked
        Grid codes that must stay exactly as they are.
    used_codes
        Every grid code ever used (all stored plans); new grids never get one.
        The codes of ``grids`` are always included.
    households_col, community_col, id_col
        Column names in ``blocks``.
    min_households, max_households
        Bounds per grid.
    code_scheme
        ``"cjt213"`` or ``"db11"``, for new codes.
    seed
        Seed of the last-resort re-partition.
    working_crs
        Projected CRS for metric work (default: the blocks' own when projected,
        else CGCS2000 Gauss–Krüger / UTM).
    repair_all
        Also repair grids that already broke the bounds before the change. By
        default such a grid keeps its old violation as a tolerance, in its own
        direction (a grid that held 621 households may hold up to 621 again, a
        grid that held 380 no fewer than 380, whether or not the change reached
        it): the rebalance repairs what the change broke, without churning
        around old flaws; communities whose data did not change are copied
        untouched.
    part_households
        Target households of the building parts units are refined into when
        whole units cannot be moved (default ``(max - min) // 2``).
    beam_width, max_moves
        Breadth and depth of the move search.
    touch_weight
        Households a touched grid is worth in the search's cost (moving fewer
        households vs. touching fewer grids).
    exhaustive_seconds
        Above 0: also solve each changed community whole and exactly — every
        unit split into single buildings, a unit may join any grid — for up to
        this many seconds per community, and let that plan compete with the
        fast repairs (which keep their ~2 s). For planners who can wait; the
        default 0 keeps the interactive speed.
    progress
        Called as ``progress("rebalance", done, total)`` per changed community.

    Returns
    -------
    RebalanceResult

    Raises
    ------
    MissingColumnError, MissingCRSError, CRSMismatchError
        On broken input contracts.
    InputError
        A locked code that is not in ``grids``; bounds out of order.
    CodeOverflowError
        A community runs out of never-used sequence numbers.

    Notes
    -----
    Adjacency and splitting run in ``working_crs``; output geometries are in the
    input CRS. Untouched and locked grids keep their input geometry objects.
    """
    t0 = time.perf_counter()
    lo, hi = int(min_households), int(max_households)
    if not 0 < lo <= hi:
        msg = f"min_households={lo} and max_households={hi} need 0 < min <= max"
        raise InputError(msg)
    try:
        exhaustive = float(exhaustive_seconds)
    except (TypeError, ValueError):
        exhaustive = math.nan
    if not (math.isfinite(exhaustive) and exhaustive >= 0):
        msg = f"exhaustive_seconds={exhaustive_seconds!r} must be a number >= 0"
        raise InputError(msg)
    require_columns(blocks, (id_col, households_col, community_col), "blocks")
    require_columns(grids, ("grid_code",), "grids")
    require_columns(assignments, ("block_id", "grid_code"), "assignments")
    in_crs = CRS.from_user_input(
        require_same_crs(blocks=blocks, grids=grids, buildings=buildings)
    )
    crs = _working_crs(blocks, working_crs)
    same_crs = crs.equals(in_crs)
    locked_set = {str(c) for c in locked}
    codes = grids["grid_code"].astype(str).to_numpy()
    unknown = sorted(locked_set - set(codes))
    if unknown:
        msg = f"locked grid codes {unknown[:5]} are not in grids['grid_code']"
        raise InputError(msg)
    used = set(map(str, used_codes)) | set(codes)
    grid_comm = (
        dict(zip(codes, grids["community_code"].astype(str), strict=True))
        if "community_code" in grids.columns
        else {c: c[:12] for c in codes}
    )

    ids = blocks[id_col].astype(str).to_numpy()
    if len(set(ids)) != len(ids):
        msg = f"blocks[{id_col!r}] has duplicate ids; block ids must be unique"
        raise InputError(msg)
    bhh = dict(zip(ids, blocks[households_col].astype("int64"), strict=True))
    bcomm = dict(zip(ids, blocks[community_col].astype(str), strict=True))
    bpos = {b: i for i, b in enumerate(ids)}

    a_bid = assignments["block_id"].astype(str).to_numpy()
    a_code = assignments["grid_code"].astype(str).to_numpy()
    bad = sorted(set(a_code) - set(codes))
    if bad:
        msg = f"assignments name grid codes {bad[:5]} that are not in grids"
        raise InputError(msg)
    if "households" in assignments.columns:
        a_w = pd.to_numeric(assignments["households"], errors="coerce").to_numpy(float)
    else:
        a_w = np.full(len(a_bid), np.nan)
    rows_of: dict[str, list[int]] = {}
    for r, b in enumerate(a_bid):
        rows_of.setdefault(b, []).append(r)

    # New households per assignment row.
    grids_geom = dict(zip(codes, grids.geometry.values, strict=True))
    bld_index = None  # built on the first changed split block, if any
    row_hh = np.zeros(len(a_bid), dtype=np.int64)
    for b, rows in rows_of.items():
        total = bhh.get(b)
        if total is None:
            continue  # removed block
        if len(rows) == 1:
            row_hh[rows[0]] = total
        else:
            w = a_w[rows]
            if not np.isfinite(w).all() or w.sum() <= 0:
                w = np.ones(len(rows))
            if (
                buildings is not None
                and int(total) != int(np.nansum(a_w[rows]))
                and len({a_code[r] for r in rows}) == len(rows)
            ):
                # Where in a split block did households come or go? Its
                # buildings say, when they account for the block's households.
                if bld_index is None:
                    bld_index = _building_index(buildings)
                w = _part_weights_from_buildings(
                    blocks.geometry.values[bpos[b]],
                    [grids_geom[str(a_code[r])] for r in rows],
                    w,
                    int(total),
                    bld_index,
                )
            row_hh[rows] = allocate_households(int(total), w)
    # Households per row that lived there before the change (the plan's figure,
    # or fewer when the block lost households); they are the ones a move re-assigns.
    row_stay = np.where(
        np.isfinite(a_w), np.minimum(np.nan_to_num(a_w), row_hh), row_hh
    ).astype(np.int64)
    grid_new = pd.Series(row_hh).groupby(a_code).sum().reindex(codes, fill_value=0)
    old_hh = (
        pd.to_numeric(grids["households"], errors="coerce").to_numpy()
        if "households" in grids.columns
        else np.full(len(codes), np.nan)
    )
    removed = sorted(set(rows_of) - set(bhh))
    added = sorted(set(bhh) - set(rows_of))
    changed_grids = {
        c
        for c, o, n in zip(codes, old_hh, grid_new.to_numpy(), strict=True)
        if not (np.isfinite(o) and int(o) == int(n))
    }
    changed_grids |= {a_code[r] for b in removed for r in rows_of[b]}
    communities = {grid_comm[g] for g in changed_grids} | {bcomm[b] for b in added}
    viol_before = {
        c: _viol(int(h), lo, hi) > 0 for c, h in zip(codes, grid_new, strict=True)
    }
    if repair_all:
        communities |= {
            grid_comm[c] for c, v in viol_before.items() if v and c not in locked_set
        }
    bad_comm = sorted(
        {bcomm[b] for b in rows_of if b in bcomm} - set(grid_comm.values())
    )
    if bad_comm:
        log.warning("blocks of communities %s have no grid in the plan", bad_comm[:5])

    # Old flaws are tolerated in their own direction (see _Violation): a grid
    # that held 621 keeps up to 621 after a compound joined it, but no more.
    old_viol = {  # signed: + above max, - below min
        c: (int(o) - hi if o > hi else -(lo - int(o)) if o < lo else 0)
        if np.isfinite(o)
        else 0
        for c, o in zip(codes, old_hh, strict=True)
    }
    vf = _Violation(
        lo,
        hi,
        {} if repair_all else {c: v for c, v in old_viol.items() if v},
    )
    # Which communities need geometry work (violations, new or removed blocks).
    work = sorted(
        c
        for c in communities
        if any(
            vf(g, int(grid_new[g])) and g not in locked_set
            for g in codes
            if grid_comm[g] == c
        )
        or any(bcomm[b] == c for b in added)
        or any(grid_comm[a_code[r]] == c for b in removed for r in rows_of[b])
    )
    engine = _Engine(
        lo=lo,
        hi=hi,
        locked=locked_set,
        crs=crs,
        buildings=None,
        part_households=int(part_households or max((hi - lo) // 2, 10)),
        beam_width=int(beam_width),
        max_moves=int(max_moves),
        touch_weight=int(touch_weight),
        seed=int(seed),
        code_scheme=code_scheme,
        vf=vf,
        exhaustive_s=exhaustive,
    )
    grid_geom_in = dict(zip(codes, grids.geometry.values, strict=True))
    results: dict[str, _Community] = {}
    comm_rows: list[dict[str, Any]] = []
    report(progress, "rebalance", 0, len(work))
    if work:
        # Load the solvers before any community's clock starts: the first
        # import of OR-Tools alone takes most of a second.
        from ortools.sat.python import cp_model  # noqa: F401
        from scipy.optimize import linear_sum_assignment  # noqa: F401

        mask = np.isin(blocks[community_col].astype(str).to_numpy(), work)
        sub_blocks = blocks[mask]
        if buildings is not None and len(sub_blocks):
            engine.buildings = _Buildings.build(buildings, crs, sub_blocks.total_bounds)
        sub_w = sub_blocks if same_crs else sub_blocks.to_crs(crs)
        bw = dict(
            zip(sub_blocks[id_col].astype(str), sub_w.geometry.values, strict=True)
        )
        work_grids = [g for g in codes if grid_comm[g] in work]
        gw_series = grids.geometry[np.isin(codes, work_grids)]
        gw = gw_series if same_crs else gw_series.to_crs(crs)
        grid_geom_w = dict(
            zip(codes[np.isin(codes, work_grids)], gw.values, strict=True)
        )
    for ci, comm in enumerate(work):
        com = _build_community(
            comm,
            ids=[b for b in ids if bcomm[b] == comm],
            blocks_in=blocks.geometry.values,
            bpos=bpos,
            bw=bw,
            rows_of=rows_of,
            a_code=a_code,
            row_hh=row_hh,
            row_stay=row_stay,
            grid_geom_in=grid_geom_in,
            grid_geom_w=grid_geom_w,
            locked=locked_set,
            bhh=bhh,
        )
        notes: list[str] = []
        before = sum(
            1
            for g, h in com.grid_hh().items()
            if g not in locked_set and _viol(h, lo, hi)
        )
        method = engine.repair(com, notes)
        hh_after = com.grid_hh()
        after = sum(
            1 for g, h in hh_after.items() if g not in locked_set and _viol(h, lo, hi)
        )
        total = sum(com.hh)
        moved_units = [
            u
            for u in range(com.n)
            if com.orig[u] is not None and com.grid[u] != com.orig[u]
        ]
        moved = sum(com.hh[u] for u in moved_units)
        touched = {
            g
            for u in range(com.n)
            if com.grid[u] != com.orig[u]
            for g in (com.grid[u], com.orig[u])
            if g is not None
        }
        results[comm] = com
        comm_rows.append(
            {
                "community_code": comm,
                "status": "ok"
                if before == 0 and after == 0
                else ("repaired" if after == 0 else "violations"),
                "method": method,
                "violations_before": before,
                "violations_after": after,
                "households_moved": int(moved),
                "existing_households_moved": int(sum(com.stay[u] for u in moved_units)),
                "grids_touched": len(touched),
                "feasible": has_valid_k(total, min_households=lo, max_households=hi),
                "notes": "; ".join(notes),
            }
        )
        report(progress, "rebalance", ci + 1, len(work))

    out = _assemble(
        grids=grids,
        codes=codes,
        grid_comm=grid_comm,
        grid_new=grid_new,
        assignments=assignments,
        a_bid=a_bid,
        a_code=a_code,
        row_hh=row_hh,
        bcomm=bcomm,
        results=results,
        blocks=blocks,
        bpos=bpos,
        locked=locked_set,
        used=used,
        lo=lo,
        hi=hi,
        crs=crs,
        in_crs=in_crs,
        same_crs=same_crs,
        code_scheme=code_scheme,
    )
    new_grids, new_assign, moves, created, retired = out
    for row in comm_rows:  # net numbers, as plandiff counts them
        mine = moves[moves["community_code"] == row["community_code"]]
        row["households_moved"] = int(
            mine.loc[mine["from_grid"].notna(), "households"].sum()
        )
        row["grids_touched"] = len(
            (set(mine["from_grid"].dropna()) | set(mine["to_grid"]))
            | {
                c
                for c in (*created, *retired)
                if grid_comm.get(c, c[:12]) == row["community_code"]
            }
        )
    touched_codes = sorted(
        set(moves["from_grid"].dropna())
        | set(moves["to_grid"])
        | set(created)
        | set(retired)
    )
    touched_codes = [c for c in touched_codes if c]
    within = new_grids["households"].between(lo, hi)
    summary = {
        "households_moved": int(
            moves.loc[moves["from_grid"].notna(), "households"].sum()
        ),
        "existing_households_moved": int(
            sum(r["existing_households_moved"] for r in comm_rows)
        ),
        "households_new": int(moves.loc[moves["from_grid"].isna(), "households"].sum()),
        "grids_touched": touched_codes,
        "n_grids_touched": len(touched_codes),
        "codes_created": created,
        "codes_retired": retired,
        "communities_changed": sorted(communities),
        "communities_repaired": work,
        "violations_before": int(
            sum(1 for c, v in viol_before.items() if v and c not in locked_set)
        ),
        "violations_after": int(
            (~within & ~new_grids["grid_code"].isin(locked_set)).sum()
        ),
        "blocks_added": added,
        "blocks_removed": removed,
        "locked": sorted(locked_set),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    communities_frame = pd.DataFrame(
        comm_rows,
        columns=[
            "community_code",
            "status",
            "method",
            "violations_before",
            "violations_after",
            "households_moved",
            "existing_households_moved",
            "grids_touched",
            "feasible",
            "notes",
        ],
    )
    log.info(
        "rebalanced %d communities: %d households moved, %d grids touched",
        len(work),
        summary["households_moved"],
        len(touched_codes),
    )
    return RebalanceResult(
        grids=new_grids,
        assignments=new_assign,
        moves=moves,
        communities=communities_frame,
        summary=summary,
    )


def _building_index(buildings: gpd.GeoDataFrame) -> tuple[shapely.STRtree, np.ndarray]:
    """Buildings' representative points (input CRS) and households, for lookups."""
    pts = shapely.point_on_surface(np.asarray(buildings.geometry.values, dtype=object))
    if "households" in buildings.columns:
        w = pd.to_numeric(buildings["households"], errors="coerce").to_numpy(float)
    else:
        w = np.zeros(len(buildings))
    return shapely.STRtree(pts), np.nan_to_num(w, nan=0.0)


def _part_weights_from_buildings(
    block: shapely.Geometry,
    grid_geoms: list[Any],
    fallback: np.ndarray,
    total: int,
    index: tuple[shapely.STRtree, np.ndarray] | None,
) -> np.ndarray:
    """Weights of a split block's rows from the buildings in each part.

    Used when the block's households changed: a new compound adds its households
    to the part it stands in, not to every part in the plan's proportions. Falls
    back to ``fallback`` when the buildings do not account for the block's
    households (within 1 %) or a part cannot be located.
    """
    if index is None:
        return fallback
    tree, hh = index
    in_block = tree.query(block, predicate="contains")
    if not len(in_block) or abs(hh[in_block].sum() - total) > max(1.0, 0.01 * total):
        return fallback
    out = np.zeros(len(grid_geoms))
    for k, g in enumerate(grid_geoms):
        part = _polys(shapely.intersection(block, g))
        if part is None:
            return fallback
        out[k] = hh[tree.query(part, predicate="contains")].sum()
    if abs(out.sum() - total) > max(1.0, 0.01 * total):
        return fallback
    return out


def _build_community(
    comm: str,
    *,
    ids: list[str],
    blocks_in: Any,
    bpos: dict[str, int],
    bw: dict[str, Any],
    rows_of: dict[str, list[int]],
    a_code: np.ndarray,
    row_hh: np.ndarray,
    row_stay: np.ndarray,
    grid_geom_in: dict[str, Any],
    grid_geom_w: dict[str, Any],
    locked: set[str],
    bhh: dict[str, int],
) -> _Community:
    com = _Community(
        code=comm,
        block_id=[],
        hh=[],
        geom_w=[],
        geom_in=[],
        orig=[],
        grid=[],
        fixed=[],
        stay=[],
    )
    for b in ids:
        rows = rows_of.get(b, [])
        g_in = blocks_in[bpos[b]]
        g_w = bw[b]
        grids_b: dict[str, int] = {}
        for r in rows:
            grids_b[str(a_code[r])] = grids_b.get(str(a_code[r]), 0) + int(row_hh[r])
        pieces: list[tuple[Any, Any, int, str | None]] = []
        if len(grids_b) <= 1:
            g = next(iter(grids_b), None)
            pieces.append((g_in, g_w, int(sum(grids_b.values())) if g else -1, g))
        else:
            for g, h in sorted(grids_b.items()):
                pw = _polys(shapely.intersection(g_w, grid_geom_w[g]))
                pi = _polys(shapely.intersection(g_in, grid_geom_in[g]))
                if pw is None or pi is None or pw.area <= 1e-6 * max(g_w.area, 1.0):
                    continue
                pieces.append((pi, pw, h, g))
            if len(pieces) != len(grids_b):  # parts that no longer intersect
                top = max(grids_b.items(), key=lambda kv: kv[1])[0]
                pieces = [(g_in, g_w, int(sum(grids_b.values())), top)]
                log.warning("block %s: its parts do not match their grids", b)
        stay_b: dict[str, int] = {}
        for r in rows:
            c = str(a_code[r])
            stay_b[c] = stay_b.get(c, 0) + int(row_stay[r])
        for pi, pw, h, g in pieces:
            com.block_id.append(b)
            com.hh.append(h if h >= 0 else 0)
            com.stay.append(
                min(stay_b.get(g, 0), h)
                if len(pieces) == len(grids_b)
                else min(sum(stay_b.values()), max(h, 0))
            )
            com.geom_in.append(pi)
            com.geom_w.append(pw)
            com.orig.append(g)
            com.grid.append(g)
            com.fixed.append(g in locked)
    for u in range(com.n):  # new blocks: households from the block itself
        if com.orig[u] is None:
            com.hh[u] = int(bhh[com.block_id[u]])
    com.build_graph()
    return com


def _union_valid(parts: list[Any]) -> shapely.Geometry:
    """Union of polygon parts that may have come back from a reprojection invalid.

    A part made in the working CRS and projected back to degrees can pinch into
    a self-touching ring; such parts are made valid (polygonal part only) before
    the union, and the union itself is checked the same way.
    """
    fixed = []
    for p in parts:
        if p is None or p.is_empty:
            continue
        if not shapely.is_valid(p):
            p = _polys(shapely.make_valid(p))
            if p is None:
                continue
        fixed.append(p)
    geom = shapely.union_all(np.asarray(fixed, dtype=object))
    if not shapely.is_valid(geom):
        geom = _polys(shapely.make_valid(geom)) or geom
    return geom


def _assemble(
    *,
    grids: gpd.GeoDataFrame,
    codes: np.ndarray,
    grid_comm: dict[str, str],
    grid_new: pd.Series,
    assignments: pd.DataFrame,
    a_bid: np.ndarray,
    a_code: np.ndarray,
    row_hh: np.ndarray,
    bcomm: dict[str, str],
    results: dict[str, _Community],
    blocks: gpd.GeoDataFrame,
    bpos: dict[str, int],
    locked: set[str],
    used: set[str],
    lo: int,
    hi: int,
    crs: CRS,
    in_crs: CRS,
    same_crs: bool,
    code_scheme: str,
) -> tuple[gpd.GeoDataFrame, pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """The draft plan's grids, assignments and moves from the repaired communities."""
    from spatialgrid.codes import spatial_order

    # 1. Codes for new grids: never-used sequence numbers, west→east north→south.
    created: list[str] = []
    for comm, com in sorted(results.items()):
        labels = sorted({g for g in com.grid if g is not None and g.startswith(_NEW)})
        if not labels:
            continue
        geoms = [
            shapely.union_all(
                np.asarray([com.geom_w[u] for u in range(com.n) if com.grid[u] == lab])
            )
            for lab in labels
        ]
        order = spatial_order(geoms)
        fresh = next_grid_codes(
            comm, len(labels), used_codes=used, code_scheme=code_scheme
        )
        rename = {labels[int(p)]: fresh[k] for k, p in enumerate(order)}
        used.update(fresh)
        created.extend(fresh)
        com.grid = [rename.get(g, g) if g is not None else None for g in com.grid]

    # 2. Which grids changed membership.
    old_blocks: dict[str, set[str]] = {}
    for b, c in zip(a_bid, a_code, strict=True):
        old_blocks.setdefault(str(c), set()).add(str(b))
    touched: set[str] = set()
    final_members: dict[str, list[tuple[_Community, int]]] = {}
    for com in results.values():
        new_blocks: dict[str, set[str]] = {}
        for u in range(com.n):
            g = com.grid[u]
            if g is None:
                continue
            final_members.setdefault(g, []).append((com, u))
            new_blocks.setdefault(g, set()).add(com.block_id[u])
            if g != com.orig[u]:
                touched.add(g)
                if com.orig[u] is not None:
                    touched.add(com.orig[u])
        for g in {c for c in codes if grid_comm[c] == com.code}:
            if old_blocks.get(g, set()) != new_blocks.get(g, set()):
                touched.add(g)
    touched -= locked
    repaired = set(results)
    retired = sorted(
        c
        for c in codes
        if grid_comm[c] in repaired and c not in final_members and c not in locked
    )

    # 3. Grid rows.
    in_geoms = np.asarray(blocks.geometry.values, dtype=object)
    base = grids.copy()
    base["grid_code"] = base["grid_code"].astype(str)
    if "flags" in base.columns:
        base["flags"] = [_flags_as_text(f) for f in base["flags"]]
    else:
        base["flags"] = ""
    hh_old = (
        pd.to_numeric(base["households"], errors="coerce")
        if "households" in base.columns
        else pd.Series(np.nan, index=base.index)
    )
    new_hh = grid_new.reindex(base["grid_code"]).to_numpy()
    base["households"] = new_hh.astype("int64")
    for i, (h_old, h_new) in enumerate(zip(hh_old.to_numpy(), new_hh, strict=True)):
        if not (np.isfinite(h_old) and int(h_old) == int(h_new)):
            other = [
                f
                for f in str(base["flags"].iat[i]).split("; ")
                if f and not f.startswith(("below_min", "above_max"))
            ]
            bound = _flag_text(int(h_new), lo, hi)
            base.iloc[i, base.columns.get_loc("flags")] = "; ".join(
                ([bound] if bound else []) + other
            )
    keep = ~base["grid_code"].isin(touched | set(retired))
    kept = base[keep]

    # Geometry of touched grids: whole blocks as they are, pieces unioned.
    todo = sorted(g for g in touched if g in final_members)
    piece_w: list[Any] = []
    piece_slot: list[tuple[_Community, int]] = []
    for g in todo:
        for com, u in final_members[g]:
            if com.geom_in[u] is None:
                piece_w.append(com.geom_w[u])
                piece_slot.append((com, u))
    if piece_w:
        back = (
            piece_w
            if same_crs
            else list(gpd.GeoSeries(piece_w, crs=crs).to_crs(in_crs).values)
        )
        for (com, u), geom in zip(piece_slot, back, strict=True):
            com.geom_in[u] = geom
    grids_of_block: dict[str, set[str]] = {}
    for b, c in zip(a_bid, a_code, strict=True):
        if str(c) not in touched and str(c) not in retired:
            grids_of_block.setdefault(str(b), set()).add(str(c))
    for g in todo:
        for com, u in final_members[g]:
            grids_of_block.setdefault(com.block_id[u], set()).add(g)
    new_rows: list[dict[str, Any]] = []
    new_geoms: list[Any] = []
    for g in todo:
        members = final_members[g]
        com = members[0][0]
        by_block: dict[str, list[int]] = {}
        for _, u in members:
            by_block.setdefault(com.block_id[u], []).append(u)
        parts = []
        for b, us in by_block.items():
            whole = grids_of_block.get(b, set()) == {g}
            parts.extend([in_geoms[bpos[b]]] if whole else [com.geom_in[u] for u in us])
        geom = _union_valid(parts)
        geom_w = shapely.union_all(np.asarray([com.geom_w[u] for _, u in members]))
        pp = float(polsby_popper(geom_w))
        h = sum(com.hh[u] for _, u in members)
        contiguous = len(com.components({u for _, u in members})) == 1
        row = {
            "grid_code": g,
            "community_code": com.code,
            "households": int(h),
            "n_blocks": len(by_block),
            "polsby_popper": pp,
            "split_blocks": ",".join(
                sorted(b for b in by_block if len(grids_of_block.get(b, ())) > 1)
            ),
            "flags": _flag_text(int(h), lo, hi, contiguous),
        }
        old = base[base["grid_code"] == g]
        if len(old):  # extra columns (worker, names...) stay with the code
            for col in base.columns:
                if col not in row and col != base.geometry.name:
                    row[col] = old[col].iat[0]
        new_rows.append(row)
        new_geoms.append(geom)
    geo_name = base.geometry.name
    cols = [c for c in base.columns if c != geo_name]
    for extra in ("n_blocks", "polsby_popper", "split_blocks"):
        if extra not in cols:
            cols.append(extra)
    fresh = gpd.GeoDataFrame(
        pd.DataFrame(new_rows, columns=cols),
        geometry=gpd.GeoSeries(new_geoms, crs=in_crs),
        crs=in_crs,
    )
    if geo_name != "geometry":
        fresh = fresh.rename_geometry(geo_name)
    kept = kept.reindex(columns=[*cols, geo_name])
    out_grids = gpd.GeoDataFrame(
        pd.concat([kept, fresh], ignore_index=True), geometry=geo_name, crs=in_crs
    )
    out_grids = out_grids.sort_values("grid_code", kind="stable").reset_index(drop=True)

    # 4. Assignments: untouched rows copied, touched grids regenerated.
    a = assignments.copy()
    a["block_id"] = a["block_id"].astype(str)
    a["grid_code"] = a["grid_code"].astype(str)
    a["households"] = row_hh
    if "community_code" not in a.columns:
        a["community_code"] = [grid_comm[c] for c in a["grid_code"]]
    for col in ("part_id", "unit"):
        if col not in a.columns:
            a[col] = None
    keep_rows = ~a["grid_code"].isin(touched | set(retired))
    copied = a[keep_rows]
    used_parts: dict[str, set[str]] = {}
    for b, p in zip(copied["block_id"], copied["part_id"], strict=True):
        if isinstance(p, str) and p:
            used_parts.setdefault(b, set()).add(p)
    gen_rows: list[dict[str, Any]] = []
    gen_index: list[Any] = []
    for g in todo:
        agg: dict[str, int] = {}
        com = final_members[g][0][0]
        for _, u in final_members[g]:
            agg[com.block_id[u]] = agg.get(com.block_id[u], 0) + com.hh[u]
        for b, h in sorted(agg.items()):
            split = len(grids_of_block.get(b, ())) > 1
            part = None
            if split:
                k = 1
                while f"{b}/{k}" in used_parts.get(b, set()):
                    k += 1
                part = f"{b}/{k}"
                used_parts.setdefault(b, set()).add(part)
            gen_rows.append(
                {
                    "block_id": b,
                    "grid_code": g,
                    "community_code": com.code,
                    "households": int(h),
                    "part_id": part,
                    "unit": "part" if split else "block",
                }
            )
            gen_index.append(blocks.index[bpos[b]])
    generated = pd.DataFrame(
        gen_rows, columns=list(a.columns), index=pd.Index(gen_index, name=a.index.name)
    )
    # Copied rows of blocks that became split (or whole) keep their part state.
    out_assign = pd.concat([copied, generated]) if len(generated) else copied.copy()
    nparts = out_assign.groupby("block_id")["grid_code"].transform("nunique")
    whole_again = (nparts == 1) & out_assign["part_id"].notna()
    whole_again &= ~out_assign["grid_code"].isin(locked)
    out_assign.loc[whole_again, "part_id"] = None
    out_assign.loc[whole_again, "unit"] = "block"

    # 5. Moves: net flows per block (parts swapping back and forth cancel out).
    from spatialgrid.plandiff import block_flows

    move_rows: list[dict[str, Any]] = []
    for com in results.values():
        old_d: dict[str, dict[str, int]] = {}
        new_d: dict[str, dict[str, int]] = {}
        for u in range(com.n):
            b, g, o = com.block_id[u], com.grid[u], com.orig[u]
            if g is None:
                continue
            nd = new_d.setdefault(b, {})
            nd[g] = nd.get(g, 0) + com.hh[u]
            if o is not None:
                od = old_d.setdefault(b, {})
                od[o] = od.get(o, 0) + com.hh[u]
        for b in sorted(new_d):
            if b in old_d:
                flows = block_flows(old_d[b], new_d[b])[1]
            else:
                flows = [(None, g, h) for g, h in sorted(new_d[b].items())]
            for frm, to, h in flows:
                move_rows.append(
                    {
                        "block_id": b,
                        "from_grid": frm,
                        "to_grid": to,
                        "households": int(h),
                        "community_code": com.code,
                    }
                )
    moves = pd.DataFrame(
        move_rows,
        columns=["block_id", "from_grid", "to_grid", "households", "community_code"],
    )
    return out_grids, out_assign, moves, created, retired
