"""A deterministic sample city: realistic Chinese-style streets, blocks and households.

:func:`generate_city` builds a whole :class:`~spatialgrid.city.City` for demos, tests
and benchmarks, around Jingzhou (荆州区, admin code 421002), in CGCS2000 3-degree
Gauss–Krüger CM 111E metres (EPSG:4546):

1. **Streets.** A perturbed grid of arterials (primary/secondary; the outermost lines
   form a ring road) bounds superblocks of ~430 m. Each superblock is cut
   irregularly by tertiary streets (bent, slanted) and residential streets that
   end at T-junctions, some diagonal. Every junction is built as a shared vertex,
   so noding is exact.
2. **Blocks** are the polygonized street centre lines: neighbours share centre lines
   exactly (a valid coverage, ``shapely.coverage_is_valid``).
3. **Subdistricts and communities** are contiguous groups of blocks from recursive
   coordinate bisection plus a contiguity repair; each community gets a household
   target drawn uniformly from 0.9–1.2 × ``households_per_community`` (mean 1.05:
   92 communities of 3000 give ~290k households, like Jingzhou's 292k).
4. **Compounds (小区) and buildings (楼栋).** Each community's target is spread over its
   blocks by area and a lognormal density, lumpy on purpose (~50–1200 households per
   block, see DOMAIN "Lumpiness"). Compounds sit inside the street reserve; buildings
   are low-rise slabs (5–7 floors) or high-rise towers (18–33 floors) with
   households = floors × units × households per floor-unit. Large compounds have a
   service road crossing the block from street to street (``internal=True``), with
   its end points as vertices of the block boundary so the block splits along it.
5. **Shops (沿街商铺)** line the primary/secondary streets inside blocks; a few stand
   outside every block, beyond the outer ring road.
6. **Addresses**: door plates (``中山路128号``; odd numbers on the left, even on the
   right, increasing along the road) for shops and compound gates, and building
   plates (``幸福小区5栋2单元``) for every unit entrance.

All randomness comes from one ``numpy.random.Generator`` seeded by ``seed``: the same
seed gives identical frames.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from spatialgrid.adjacency import connected_components, shared_edges
from spatialgrid.city import City
from spatialgrid.errors import InputError
from spatialgrid.progress import report

if TYPE_CHECKING:
    from collections.abc import Callable

    from spatialgrid.progress import ProgressCallback

logger = logging.getLogger(__name__)

#: CRS the city is generated in (metres); other ``crs`` values are reprojected to.
GENERATION_CRS = "EPSG:4546"
#: Centre of the generated city in :data:`GENERATION_CRS` (~112.2E 30.33N, Jingzhou).
CENTRE = (615_000.0, 3_357_000.0)

_SUPERBLOCK_M = 430.0
_MEAN_BLOCK_HH = 430.0
_BLOCKS_PER_SUPERBLOCK = 5.5
_BLOCK_HH_MIN, _BLOCK_HH_MAX = 60.0, 1200.0
_BIG_COMPOUND_HH_MIN = 600.0

# Half carriageway widths (m) and the extra setback of compound walls behind the kerb.
_HALF_WIDTH = {
    "primary": 16.0,
    "secondary": 12.0,
    "tertiary": 8.0,
    "residential": 5.0,
    "service": 3.0,
}
_SETBACK = {"primary": 14.0, "secondary": 12.0, "tertiary": 5.0, "residential": 4.0}
_RANK = {"primary": 4, "secondary": 3, "tertiary": 2, "residential": 1, "service": 0}


# --- name pools -----------------------------------------------------------------
def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_WORDS = _split(
    "幸福 和平 友谊 团结 胜利 光明 新华 建设 文化 繁荣 富强 "
    "长青 青松 翠柏 红星 朝阳 东方 曙光 阳光 金色 银河 星光 "
    "彩虹 春晖 秋实 丰收 兴旺 吉祥 如意 安康 福泰 康宁 宁静 "
    "锦绣 锦华 华光 园林 荷花 桂花 梅园 兰亭 竹园 菊香 柳林 "
    "杨柳 松林 枫林 桃园 杏花 海棠 紫荆 玉兰 芙蓉 百合 茉莉 "
    "丁香 江津 荆江 楚都 郢都 纪南 太岳 太晖 三义 东门 南门 "
    "西门 北门 草市 碧水 清泉 明珠 翡翠 玉带 金凤 凤凰 白鹭 "
    "黄鹂 天鹅 鸿雁 龙山 虎渡 万寿 宝塔 古城 城南 城北 东岳 "
    "西湖 南湖 北湖 月湖 荆楚 楚天 长湖 梨园 果园 柑橘 菱角 "
    "莲花 荷塘 江滨 滨江 沿江 临江 望江 观澜 听涛 揽月 星河 "
    "天河 云台 逸景 御景 尚城 新城 学苑 书香 墨香 文昌 启明 "
    "育才 崇文 尚德 致远 博雅 和谐 民安 永安 长安 安居 乐居 "
    "怡和 怡景 盛世 鼎盛 恒通 顺达 中兴 振兴 复兴 春江 秋水 "
    "晓月 金桥 银杏 青年 工农 红旗 跃进"
)
_SURNAMES = _split("王 李 张 刘 陈 杨 黄 赵 周 吴 徐 孙 胡 朱 高 林 何 郭 马 罗")
_NS_ARTERIALS = _split(
    "北京路 荆州大道 江汉路 太岳路 塔桥路 豉湖路 红门路 园林路 "
    "屈原路 白云路 东方大道 楚都大道 航空路 学院路 公安路 北湖路 "
    "三湾路 武德路 西湖路 文星路"
)
_EW_ARTERIALS = _split(
    "中山路 解放大道 人民路 长江大道 沙市大道 荆沙路 文化路 "
    "复兴大道 踏歌路 江津路 关沮路 荆秘路 九龙路 龙山路 凤凰大道 "
    "纪南路 郢城路 碧路 体育路 工农路"
)
_RING = {"west": "西环路", "east": "东环路", "south": "南环路", "north": "北环路"}
_COMPOUND_SUFFIXES = _split(
    "小区 小区 小区 小区 家园 花园 苑 新村 公寓 雅居 嘉园 名苑 华庭 府 里"
)
_INSTITUTIONS = (
    ("小学", "学校"),
    ("中学", "学校"),
    ("幼儿园", "学校"),
    ("医院", "医疗"),
    ("公园", "公园"),
    ("市场", "市场"),
)
_SHOP_CATEGORIES = (
    ("餐饮", 0.30),
    ("便利店", 0.12),
    ("药店", 0.07),
    ("理发美容", 0.08),
    ("服装", 0.08),
    ("水果生鲜", 0.08),
    ("超市", 0.04),
    ("五金", 0.04),
    ("通讯", 0.04),
    ("烟酒", 0.05),
    ("洗衣", 0.03),
    ("快递", 0.03),
    ("银行", 0.02),
    ("宾馆", 0.02),
)
_DISHES = _split("热干面 牛肉面 鱼糕 锅盔 早点 烧烤 火锅 饺子 米粉 小吃 快餐 卤味 粥铺")
_BANKS = _split("中国银行 工商银行 建设银行 农业银行 荆州农商银行")


@dataclass
class _Line:
    """A street centre line under construction: vertices keyed by a parameter."""

    name: str
    highway: str
    internal: bool = False
    verts: dict[float, tuple[float, float]] = field(default_factory=dict)

    def add(self, param: float, xy: tuple[float, float]) -> None:
        self.verts[param] = xy

    def snap(
        self, param: float, xy: tuple[float, float], tol: float
    ) -> tuple[float, tuple[float, float]]:
        """Reuse an existing vertex within ``tol`` (param units), else add this one."""
        for p, q in self.verts.items():
            if abs(p - param) < tol:
                return p, q
        self.verts[param] = xy
        return param, xy

    def geometry(self) -> shapely.LineString:
        return shapely.LineString([self.verts[k] for k in sorted(self.verts)])


class _Names:
    """Unique names drawn from word × suffix pools, with a numbered fallback."""

    def __init__(self, rng: np.random.Generator, used: set[str]) -> None:
        self._rng = rng
        self.used = used

    def take(self, suffixes: tuple[str, ...] | list[str]) -> str:
        for _ in range(60):
            word = _WORDS[int(self._rng.integers(len(_WORDS)))]
            suffix = suffixes[int(self._rng.integers(len(suffixes)))]
            name = word + suffix
            if name not in self.used:
                self.used.add(name)
                return name
        k = 2
        while True:
            word = _WORDS[int(self._rng.integers(len(_WORDS)))]
            name = f"{word}{_cn_number(k)}{suffixes[0]}"
            if name not in self.used:
                self.used.add(name)
                return name
            k += 1


def _cn_number(k: int) -> str:
    digits = "零一二三四五六七八九"
    if k < 10:
        return digits[k]
    if k < 20:
        return "十" + (digits[k % 10] if k % 10 else "")
    return digits[k // 10] + "十" + (digits[k % 10] if k % 10 else "")


# --- public entry point ------------------------------------------------------------
def generate_city(
    *,
    seed: int = 0,
    n_communities: int = 10,
    households_per_community: int = 3000,
    crs: str = GENERATION_CRS,
    admin_code: str = "421002",
    name: str = "荆州区样例城区",
    progress: ProgressCallback | None = None,
) -> City:
    """Generate a deterministic, realistic Chinese-style city with every layer.

    Parameters
    ----------
    seed
        Seed of the ``numpy.random.Generator``; the same seed gives identical layers.
    n_communities
        Number of communities (社区). Subdistricts (街道) hold about ten each.
    households_per_community
        Households per community; each community's target is drawn uniformly from
        0.9–1.2 times this, and the buildings land within a few percent of it.
    crs
        CRS of the returned layers. The city is generated in EPSG:4546 (metres) and
        reprojected when another CRS is asked for.
    admin_code
        6-digit GB/T 2260 code of the district; prefix of every code.
    name
        Name of the city.
    progress
        Optional callback ``progress(stage, done, total)``.

    Returns
    -------
    City
        Layers subdistricts, communities, streets, blocks, buildings, compounds,
        addresses and pois, all in ``crs``. ``city.report`` records the seed, the
        parameters and the resulting counts and household distribution.

    Raises
    ------
    InputError
        When an argument is out of range or ``crs`` is not a CRS.

    Notes
    -----
    Block households are the sum of their buildings (``households_source =
    "buildings"``); community households are the sum of their blocks. Blocks range
    from ~50 to ~1200 households, so whole-block grids of 400–500 households are
    infeasible in some communities; that is intended (DOMAIN "Lumpiness"). Every
    city has at least one compound crossed by a service road; with
    ``households_per_community`` of about 1500 or more that compound holds more than
    500 households.

    The city is centred on :data:`CENTRE` (x = 615 km, y = 3357 km in EPSG:4546, about
    112.2°E 30.33°N, Jingzhou) and spans about 430 m per 5–6 blocks.

    Examples
    --------
    >>> city = generate_city(seed=1, n_communities=3)
    >>> city.summary()["communities"]
    3
    """
    out_crs = _check_args(
        seed=seed,
        n_communities=n_communities,
        households_per_community=households_per_community,
        crs=crs,
        admin_code=admin_code,
    )
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    names = _Names(rng, set())
    targets = np.round(
        households_per_community * rng.uniform(0.9, 1.2, size=n_communities)
    )
    total = float(targets.sum())

    report(progress, "streets", 0, 6)
    plan = _plan_streets(rng, total, n_communities, names)
    edges, blocks_geom = _polygonize(plan)
    report(progress, "blocks", 1, 6)

    internal_of_block = _locate_internal(plan.internal, blocks_geom)
    sub_label, com_label = _group_blocks(
        blocks_geom, targets, n_communities=n_communities
    )
    report(progress, "communities", 2, 6)

    budgets, nonres = _block_budgets(
        rng, blocks_geom, com_label, targets, internal_of_block
    )
    fill = _fill_blocks(
        rng, blocks_geom, edges, budgets, nonres, internal_of_block, names
    )
    report(progress, "buildings", 3, 6)

    shops = _place_shops(rng, edges, blocks_geom, fill, n_communities)
    report(progress, "shops", 4, 6)

    city = _assemble(
        rng=rng,
        plan=plan,
        edges=edges,
        blocks_geom=blocks_geom,
        sub_label=sub_label,
        com_label=com_label,
        targets=targets,
        fill=fill,
        shops=shops,
        admin_code=admin_code,
        name=name,
        names=names,
    )
    report(progress, "addresses", 5, 6)
    city = _finish_report(
        city,
        seed=seed,
        n_communities=n_communities,
        households_per_community=households_per_community,
        crs=crs,
        admin_code=admin_code,
        name=name,
        shortfall=fill.shortfall,
    )
    if not CRS.from_user_input(GENERATION_CRS).equals(out_crs):
        city = city.to_crs(out_crs)
    report(progress, "done", 6, 6)
    logger.info(
        "generated %d communities, %d blocks, %d households in %.2f s",
        n_communities,
        len(city.blocks),
        int(city.blocks["households"].sum()),
        time.perf_counter() - t0,
    )
    return city


def _check_args(
    *,
    seed: int,
    n_communities: int,
    households_per_community: int,
    crs: str,
    admin_code: str,
) -> CRS:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        msg = f"seed must be a non-negative int, got {seed!r}; pass e.g. seed=0"
        raise InputError(msg)
    if (
        isinstance(n_communities, bool)
        or not isinstance(n_communities, int | np.integer)
        or not 1 <= n_communities <= 99 * 99
    ):
        msg = (
            f"n_communities must be an int in 1..9801, got {n_communities!r}; "
            "pass e.g. n_communities=10"
        )
        raise InputError(msg)
    if (
        isinstance(households_per_community, bool)
        or not isinstance(households_per_community, int | np.integer)
        or not 300 <= households_per_community <= 20000
    ):
        msg = (
            "households_per_community must be an int in 300..20000, got "
            f"{households_per_community!r}; pass e.g. households_per_community=3000"
        )
        raise InputError(msg)
    if not (
        isinstance(admin_code, str) and len(admin_code) == 6 and admin_code.isdigit()
    ):
        msg = (
            f"admin_code must be a 6-digit GB/T 2260 code string, got {admin_code!r}; "
            "pass e.g. admin_code='421002'"
        )
        raise InputError(msg)
    try:
        return CRS.from_user_input(crs)
    except CRSError as err:
        msg = f"crs {crs!r} is not a coordinate reference system; pass e.g. 'EPSG:4490'"
        raise InputError(msg) from err


# --- 1. streets ------------------------------------------------------------------
@dataclass
class _StreetPlan:
    lines: list[_Line]
    internal: list[_Line]
    spacing_m: float


def _plan_streets(
    rng: np.random.Generator, total_hh: float, n_communities: int, names: _Names
) -> _StreetPlan:
    """Arterial grid with perturbed nodes, superblocks cut by minor streets."""
    n_super = max(
        1,
        round(total_hh / _MEAN_BLOCK_HH / _BLOCKS_PER_SUPERBLOCK),
        math.ceil(n_communities * 0.6),
    )
    nx = max(1, round(math.sqrt(n_super * 1.15)))
    ny = max(1, math.ceil(n_super / nx))
    s = _SUPERBLOCK_M
    x0 = CENTRE[0] - nx * s / 2.0
    y0 = CENTRE[1] - ny * s / 2.0
    jit = np.clip(
        rng.normal(0.0, 0.05 * s, size=(nx + 1, ny + 1, 2)), -0.1 * s, 0.1 * s
    )
    grid_x = x0 + np.arange(nx + 1)[:, None] * s + jit[:, :, 0]
    grid_y = y0 + np.arange(ny + 1)[None, :] * s + jit[:, :, 1]
    nodes = np.stack([grid_x, grid_y], axis=-1)

    names.used.update([*_NS_ARTERIALS, *_EW_ARTERIALS, *_RING.values()])
    ns_pool = list(rng.permutation(_NS_ARTERIALS))
    ew_pool = list(rng.permutation(_EW_ARTERIALS))

    def arterial_name(pool: list[str], k: int) -> str:
        return pool[k] if k < len(pool) else names.take(["大道", "路"])

    vlines: list[_Line] = []  # north-south, index i
    for i in range(nx + 1):
        if i in (0, nx):
            line = _Line(_RING["west" if i == 0 else "east"], "primary")
        else:
            line = _Line(
                arterial_name(ns_pool, i - 1), "primary" if i % 2 == 0 else "secondary"
            )
        for j in range(ny + 1):
            line.add(float(j), _xy(nodes[i, j]))
        vlines.append(line)
    hlines: list[_Line] = []  # east-west, index j
    for j in range(ny + 1):
        if j in (0, ny):
            line = _Line(_RING["south" if j == 0 else "north"], "primary")
        else:
            line = _Line(
                arterial_name(ew_pool, j - 1), "primary" if j % 2 == 0 else "secondary"
            )
        for i in range(nx + 1):
            line.add(float(i), _xy(nodes[i, j]))
        hlines.append(line)

    minor: list[_Line] = []
    cells: list[tuple[float, Callable[[], _Line]]] = []
    for i in range(nx):
        for j in range(ny):
            cells += _cut_superblock(rng, nodes, i, j, vlines, hlines, minor, names)
    # Service roads through some tall cells (large compounds); at least one.
    heights = np.array([h for h, _ in cells])
    pick = (heights >= 0.42) & (rng.random(len(cells)) < 0.15)
    if not pick.any():
        pick[int(np.argmax(heights))] = True
    internal = [cells[k][1]() for k in np.flatnonzero(pick)]
    return _StreetPlan(vlines + hlines + minor, internal, s)


def _xy(p: np.ndarray) -> tuple[float, float]:
    return (float(p[0]), float(p[1]))


def _cut_superblock(
    rng: np.random.Generator,
    nodes: np.ndarray,
    i: int,
    j: int,
    vlines: list[_Line],
    hlines: list[_Line],
    minor: list[_Line],
    names: _Names,
) -> list[tuple[float, Callable[[], _Line]]]:
    """Cut superblock (i, j) by tertiary "u-lines" and residential "v-cuts".

    Positions are in the superblock's bilinear (u, v) parameter space; every end
    point is registered as a vertex of the line it ends on, so junctions are exact.
    Returns the resulting cells as (height in v, builder of a service road across
    the cell whose end points become vertices of the cell's boundary).
    """
    a, b, c, d = nodes[i, j], nodes[i + 1, j], nodes[i + 1, j + 1], nodes[i, j + 1]

    def bil(u: float, v: float) -> tuple[float, float]:
        p = (1 - u) * (1 - v) * a + u * (1 - v) * b + u * v * c + (1 - u) * v * d
        return _xy(p)

    m = 1 if rng.random() < 0.45 else 2
    ub = (
        np.array([0.5 + rng.uniform(-0.12, 0.12)])
        if m == 1
        else np.array([1 / 3, 2 / 3]) + rng.uniform(-0.06, 0.06, size=2)
    )
    ut = ub + rng.uniform(-0.07, 0.07, size=m)
    um = (ub + ut) / 2 + rng.uniform(-0.04, 0.04, size=m)

    ulines: list[_Line] = []
    ufun: list[Callable[[float], float]] = []
    for k in range(m):
        line = _Line(names.take(["路", "街", "路"]), "tertiary")
        pb, xyb = hlines[j].snap(i + float(ub[k]), bil(float(ub[k]), 0.0), 0.04)
        pt, xyt = hlines[j + 1].snap(i + float(ut[k]), bil(float(ut[k]), 1.0), 0.04)
        ubk, utk, umk = pb - i, pt - i, float(um[k])
        line.add(0.0, xyb)
        line.add(0.5, bil(umk, 0.5))
        line.add(1.0, xyt)
        ulines.append(line)

        def f(v: float, ubk: float = ubk, umk: float = umk, utk: float = utk) -> float:
            if v <= 0.5:
                return ubk + (umk - ubk) * v / 0.5
            return umk + (utk - umk) * (v - 0.5) / 0.5

        ufun.append(f)
    minor.extend(ulines)

    def rail(g: int) -> tuple[Callable[[float], float], _Line, bool]:
        """Left rail of gap g: function u(v), the line, whether it is an arterial."""
        if g == 0:
            return (lambda v: 0.0), vlines[i], True
        if g == m + 1:
            return (lambda v: 1.0), vlines[i + 1], True
        return ufun[g - 1], ulines[g - 1], False

    def attach(g: int, v: float) -> tuple[float, tuple[float, float]]:
        fn, line, arterial = rail(g)
        if arterial:  # snap to a nearby junction to avoid 1 m jogs
            p, xy = line.snap(j + v, bil(fn(v), v), 0.04)
            return p - j, xy
        line.add(v, bil(fn(v), v))
        return v, line.verts[v]

    def service_road(g: int, lo: float, hi: float) -> _Line:
        vm = (lo + hi) / 2 + rng.uniform(-0.04, 0.04)
        _, xyl = attach(g, vm)
        _, xyr = attach(g + 1, vm)
        road = _Line("", "service", internal=True)
        road.add(0.0, xyl)
        road.add(1.0, xyr)
        return road

    cells: list[tuple[float, Callable[[], _Line]]] = []
    for g in range(m + 1):
        count = int(rng.choice([0, 1, 2], p=[0.15, 0.55, 0.30]))
        if count == 1:
            vs = [0.5 + rng.uniform(-0.15, 0.15)]
        elif count == 2:
            vs = list(np.array([1 / 3, 2 / 3]) + rng.uniform(-0.07, 0.07, size=2))
        else:
            vs = []
        cuts: list[tuple[float, float]] = []
        for v in vs:
            vl = float(v)
            slant = 0.2 if (count == 1 and rng.random() < 0.2) else 0.05
            vr = float(np.clip(vl + rng.uniform(-slant, slant), 0.15, 0.85))
            vl, xyl = attach(g, vl)
            vr, xyr = attach(g + 1, vr)
            line = _Line(names.take(["巷", "街", "路"]), "residential")
            line.add(0.0, xyl)
            if rng.random() < 0.3:  # a bend in the middle
                vm = (vl + vr) / 2 + rng.uniform(-0.03, 0.03)
                um_ = (rail(g)[0](vm) + rail(g + 1)[0](vm)) / 2
                line.add(0.5, bil(um_, vm))
            line.add(1.0, xyr)
            minor.append(line)
            cuts.append((vl, vr))
        bounds = [0.0] + [max(c) for c in cuts]
        tops = [min(c) for c in cuts] + [1.0]
        for lo, hi in zip(bounds, tops, strict=True):
            cells.append((hi - lo, partial(service_road, g, lo, hi)))
    return cells


def _polygonize(plan: _StreetPlan) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Node the centre lines into edges and polygonize them into blocks."""
    sources = np.array([ln.geometry() for ln in plan.lines], dtype=object)
    noded = shapely.get_parts(shapely.node(shapely.multilinestrings(sources)))
    polys, cuts, dangles, invalid = shapely.polygonize_full(noded)
    if not (
        shapely.is_empty(cuts)
        and shapely.is_empty(dangles)
        and shapely.is_empty(invalid)
    ):
        # Cannot happen by construction; keep a loud guard rather than silent gaps.
        msg = "sample street network is not closed (dangles or cuts after noding)"
        raise RuntimeError(msg)
    blocks = shapely.get_parts(polys)
    tree = shapely.STRtree(sources)
    mids = shapely.line_interpolate_point(noded, 0.5, normalized=True)
    src = tree.query_nearest(mids, all_matches=False)[1]
    edges = gpd.GeoDataFrame(
        {
            "source": src,
            "name": [plan.lines[k].name for k in src],
            "highway": [plan.lines[k].highway for k in src],
        },
        geometry=noded,
        crs=GENERATION_CRS,
    )
    edges["half_width"] = edges["highway"].map(_HALF_WIDTH).astype(float)
    # Spatial order: north to south in bands, then west to east.
    cen = shapely.get_coordinates(shapely.centroid(blocks))
    order = np.lexsort((cen[:, 0], -np.floor(cen[:, 1] / 150.0)))
    return edges, blocks[order]


def _locate_internal(
    internal: list[_Line], blocks: np.ndarray
) -> dict[int, shapely.LineString]:
    """Which block each internal road crosses (by its midpoint)."""
    tree = shapely.STRtree(blocks)
    out: dict[int, shapely.LineString] = {}
    for road in internal:
        geom = road.geometry()
        mid = shapely.line_interpolate_point(geom, 0.5, normalized=True)
        hit = tree.query(mid, predicate="within")
        if len(hit) == 1 and int(hit[0]) not in out:
            out[int(hit[0])] = geom
    return out


# --- 2. communities ----------------------------------------------------------------
def _bisect(
    idx: np.ndarray, xy: np.ndarray, weight: np.ndarray, targets: list[float]
) -> list[np.ndarray]:
    """Recursive coordinate bisection of ``idx`` into len(targets) weighted parts."""
    if len(targets) == 1:
        return [idx]
    k1 = len(targets) // 2
    frac = sum(targets[:k1]) / sum(targets)
    pts = xy[idx]
    ext = pts.max(axis=0) - pts.min(axis=0)
    axis = 0 if ext[0] >= ext[1] else 1
    order = idx[np.argsort(pts[:, axis], kind="stable")]
    cum = np.cumsum(weight[order])
    cut = int(np.argmin(np.abs(cum - frac * cum[-1]))) + 1
    cut = min(max(cut, k1), len(idx) - (len(targets) - k1))
    return _bisect(order[:cut], xy, weight, targets[:k1]) + _bisect(
        order[cut:], xy, weight, targets[k1:]
    )


def _make_contiguous(
    labels: np.ndarray,
    edges: pd.DataFrame,
    weight: np.ndarray,
    parent: np.ndarray | None = None,
) -> np.ndarray:
    """Move stray pieces of a group to the neighbouring group with the longest border."""
    labels = labels.copy()
    n = len(labels)
    ei, ej, el = (edges[c].to_numpy() for c in ("i", "j", "length_m"))
    for _ in range(50):
        same = labels[ei] == labels[ej]
        comp = connected_components(n, edges.loc[same])
        frame = pd.DataFrame({"label": labels, "comp": comp, "w": weight})
        sizes = frame.groupby(["label", "comp"])["w"].sum().reset_index()
        keep = sizes.sort_values(
            ["label", "w"], ascending=[True, False]
        ).drop_duplicates("label")
        stray = sorted(set(sizes["comp"]) - set(keep["comp"]))
        if not stray:
            break
        moved = False
        for cid in stray:
            members = np.flatnonzero(comp == cid)
            inside = np.zeros(n, dtype=bool)
            inside[members] = True
            border = inside[ei] ^ inside[ej]
            other = np.where(inside[ei[border]], ej[border], ei[border])
            lengths = el[border]
            if parent is not None:
                ok = parent[other] == parent[members[0]]
                other, lengths = other[ok], lengths[ok]
            if len(other) == 0:
                continue
            per = pd.Series(lengths).groupby(labels[other]).sum()
            labels[members] = int(per.idxmax())
            moved = True
        if not moved:
            break
    return labels


def _group_blocks(
    blocks: np.ndarray,
    targets: np.ndarray,
    *,
    n_communities: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Subdistrict and community label per block: contiguous, sized by target."""
    xy = shapely.get_coordinates(shapely.centroid(blocks))
    area = shapely.area(blocks)
    edges = shared_edges(blocks)
    n_sub = min(99, max(1, round(n_communities / 10)))
    counts = [len(a) for a in np.array_split(np.arange(n_communities), n_sub)]
    bounds = np.cumsum([0, *counts])
    sub_targets = [
        float(targets[bounds[k] : bounds[k + 1]].sum()) for k in range(n_sub)
    ]
    sub_parts = _bisect(np.arange(len(blocks)), xy, area, sub_targets)
    sub = np.empty(len(blocks), dtype=int)
    for k, part in enumerate(sub_parts):
        sub[part] = k
    sub = _make_contiguous(sub, edges, area)
    com = np.empty(len(blocks), dtype=int)
    for k in range(n_sub):
        members = np.flatnonzero(sub == k)
        parts = _bisect(members, xy, area, list(targets[bounds[k] : bounds[k + 1]]))
        for c, part in enumerate(parts):
            com[part] = bounds[k] + c
    com = _make_contiguous(com, edges, area, parent=sub)
    if len(np.unique(com)) != len(targets):  # cannot happen: >= 3 blocks per community
        msg = "sample city has a community without blocks"
        raise RuntimeError(msg)
    return sub, com


# --- 3. households -----------------------------------------------------------------
def _block_budgets(
    rng: np.random.Generator,
    blocks: np.ndarray,
    com: np.ndarray,
    targets: np.ndarray,
    internal_of_block: dict[int, shapely.LineString],
) -> tuple[np.ndarray, np.ndarray]:
    """Household target per block: lumpy, summing to the community targets."""
    n = len(blocks)
    area = shapely.area(blocks)
    budget = np.zeros(n)
    nonres = np.zeros(n, dtype=bool)
    is_internal = np.zeros(n, dtype=bool)
    is_internal[list(internal_of_block)] = True
    weight = area * rng.lognormal(0.0, 0.45, size=n) * np.where(is_internal, 2.0, 1.0)
    for c in range(len(targets)):
        members = np.flatnonzero(com == c)
        if len(members) >= 4 and rng.random() < 0.45:
            cand = members[~is_internal[members]]
            if len(cand):
                k = int(cand[int(rng.integers(len(cand)))])
                nonres[k] = True
                budget[k] = float(rng.integers(50, 100))
        res = members[~nonres[members]]
        remaining = targets[c] - budget[members].sum()
        n_big = max(1, int(is_internal[res].sum()))
        big = min(_BIG_COMPOUND_HH_MIN, 0.75 * remaining / n_big)
        lo = np.where(is_internal[res], big, _BLOCK_HH_MIN)
        b = remaining * weight[res] / weight[res].sum()
        for _ in range(30):  # clip, then rescale the unclipped ones
            b = np.clip(b, lo, _BLOCK_HH_MAX)
            free = (b > lo) & (b < _BLOCK_HH_MAX)
            gap = remaining - b.sum()
            if abs(gap) < 1 or not free.any():
                break
            b[free] += gap * weight[res][free] / weight[res][free].sum()
        budget[res] = b
    return budget, nonres


@dataclass
class _Fill:
    compounds: list[dict[str, Any]]
    buildings: list[dict[str, Any]]
    units: list[dict[str, Any]]  # building plate points
    internal: list[dict[str, Any]]  # internal roads
    institutions: list[dict[str, Any]]
    shortfall: float


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _block_angle(block: shapely.Polygon) -> float:
    """Orientation (rad, in (-pi/4, pi/4]) of the block's minimum rotated rectangle."""
    ring = shapely.get_coordinates(shapely.minimum_rotated_rectangle(block))
    dx, dy = ring[1] - ring[0]
    ang = math.atan2(dy, dx)
    return (ang + math.pi / 4) % (math.pi / 2) - math.pi / 4


def _fill_blocks(
    rng: np.random.Generator,
    blocks: np.ndarray,
    edges: gpd.GeoDataFrame,
    budgets: np.ndarray,
    nonres: np.ndarray,
    internal_of_block: dict[int, shapely.LineString],
    names: _Names,
) -> _Fill:
    """Compounds inside the street reserve, buildings inside compounds."""
    egeom = edges.geometry.values
    reserve = shapely.buffer(
        egeom,
        edges["half_width"].to_numpy() + edges["highway"].map(_SETBACK).to_numpy(float),
        quad_segs=4,
    )
    etree = shapely.STRtree(egeom)
    out = _Fill([], [], [], [], [], 0.0)
    for k, block in enumerate(blocks):
        near = etree.query(block, predicate="intersects")
        buildable = shapely.difference(block, shapely.union_all(reserve[near]))
        parts = [p for p in shapely.get_parts(buildable) if p.area > 600.0]
        if not parts:
            out.shortfall += budgets[k]
            continue
        main = max(parts, key=lambda p: p.area)
        theta = _block_angle(block)
        origin = np.asarray(block.centroid.coords[0])
        rot = _rotation(theta)

        def to_frame(g: Any, origin: np.ndarray = origin, rot: np.ndarray = rot) -> Any:
            return shapely.transform(g, lambda xy: (xy - origin) @ rot)

        def to_world(g: Any, origin: np.ndarray = origin, rot: np.ndarray = rot) -> Any:
            return shapely.transform(g, lambda xy: xy @ rot.T + origin)

        main_f = to_frame(main)
        road = internal_of_block.get(k)
        avoid_f = None
        if road is not None:
            avoid_f = to_frame(shapely.buffer(road, _HALF_WIDTH["service"] + 5.0))

        if nonres[k]:
            pieces_f, shares = _split_frame(main_f, 2, rng, gap=8.0)
            inst = _INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))]
            inst_name = _WORDS[int(rng.integers(len(_WORDS)))] + inst[0]
            if len(pieces_f) > 1:
                out.institutions.append(
                    {
                        "name": inst_name,
                        "category": inst[1],
                        "block": k,
                        "geometry": to_world(pieces_f[1].point_on_surface()),
                    }
                )
            pieces_f, shares = pieces_f[:1], np.array([1.0])
            compound_names = [inst_name + "家属院"]
            styles = ["low"]
        else:
            area = main.area
            if road is not None or area < 18_000:
                n_comp = 1
            elif area < 35_000:
                n_comp = int(rng.choice([1, 2]))
            else:
                n_comp = int(rng.choice([2, 3]))
            if road is None and budgets[k] > 500 and rng.random() < 0.85:
                n_comp = max(n_comp, math.ceil(budgets[k] / 450))
            pieces_f, shares = _split_frame(main_f, n_comp, rng, gap=8.0)
            compound_names = [names.take(_COMPOUND_SUFFIXES) for _ in pieces_f]
            styles = []
            for piece, share in zip(pieces_f, shares, strict=True):
                dens = budgets[k] * share / max(piece.area, 1.0)
                if road is not None or dens > 0.016:
                    styles.append("high")
                elif dens < 0.010:
                    styles.append("low")
                else:
                    styles.append("high" if rng.random() < 0.5 else "low")
        placed_total = 0.0
        for piece_f, share, cname, style in zip(
            pieces_f, shares, compound_names, styles, strict=True
        ):
            cid = len(out.compounds)
            target = budgets[k] * share
            blds = _place_buildings(rng, piece_f, target, style, avoid_f)
            hh = int(sum(b["households"] for b in blds))
            placed_total += hh
            if not blds:
                continue
            out.compounds.append(
                {
                    "cidx": cid,
                    "name": cname,
                    "block": k,
                    "households": hh,
                    "rise": "high-rise" if blds[0]["levels"] >= 18 else "low-rise",
                    "internal_road": road is not None,
                    "geometry": to_world(piece_f),
                }
            )
            foot = to_world(np.array([b["geometry"] for b in blds], dtype=object))
            for no, (b, g) in enumerate(zip(blds, foot, strict=True), start=1):
                out.buildings.append(
                    {
                        "cidx": cid,
                        "block": k,
                        "number": no,
                        "levels": b["levels"],
                        "units": b["units"],
                        "households_per_floor_unit": b["hpf"],
                        "households": b["households"],
                        "geometry": g,
                    }
                )
                pts = to_world(shapely.points(b["unit_xy"]))
                for u, p in enumerate(pts, start=1):
                    out.units.append(
                        {
                            "cidx": cid,
                            "block": k,
                            "building": no,
                            "unit": u,
                            "geometry": p,
                        }
                    )
        if road is not None and any(c["block"] == k for c in out.compounds[-1:]):
            out.internal.append(
                {"block": k, "cidx": out.compounds[-1]["cidx"], "geometry": road}
            )
        out.shortfall += max(0.0, budgets[k] - placed_total)
    return out


def _split_frame(
    poly: shapely.Polygon, n: int, rng: np.random.Generator, *, gap: float
) -> tuple[list[shapely.Polygon], np.ndarray]:
    """Cut a frame-aligned polygon into ``n`` pieces across its longer side."""
    if n <= 1:
        return [poly], np.array([1.0])
    minx, miny, maxx, maxy = poly.bounds
    along_x = (maxx - minx) >= (maxy - miny)
    lo, hi = (minx, maxx) if along_x else (miny, maxy)
    cuts = lo + (hi - lo) * (np.arange(1, n) / n + rng.uniform(-0.06, 0.06, size=n - 1))
    edges = [lo - 1.0, *cuts, hi + 1.0]
    pieces = []
    for a, b in pairwise(edges):
        a2 = a + gap / 2 if a > lo else a
        b2 = b - gap / 2 if b < hi else b
        box = (
            shapely.box(a2, miny - 1, b2, maxy + 1)
            if along_x
            else shapely.box(minx - 1, a2, maxx + 1, b2)
        )
        parts = [
            p for p in shapely.get_parts(shapely.intersection(poly, box)) if p.area > 0
        ]
        if parts:
            best = max(parts, key=lambda p: p.area)
            if best.area > 1500.0:
                pieces.append(best)
    if not pieces:
        return [poly], np.array([1.0])
    w = np.array([p.area for p in pieces]) * rng.uniform(0.75, 1.25, size=len(pieces))
    return pieces, w / w.sum()


def _slots(
    poly: shapely.Polygon,
    length: float,
    depth: float,
    dx: float,
    dy: float,
    avoid: Any,
) -> np.ndarray:
    """Lower-left corners of footprints that fit, rows north to south, west to east."""
    inner = shapely.buffer(poly, -3.0)
    if inner.is_empty:
        return np.zeros((0, 2))
    minx, miny, maxx, maxy = inner.bounds
    nxs = int((maxx - minx - length) // dx) + 1
    nys = int((maxy - miny - depth) // dy) + 1
    if nxs <= 0 or nys <= 0:
        return np.zeros((0, 2))
    ox = minx + ((maxx - minx - length) - (nxs - 1) * dx) / 2
    oy = miny + ((maxy - miny - depth) - (nys - 1) * dy) / 2
    xs = ox + np.arange(nxs) * dx
    ys = (oy + np.arange(nys) * dy)[::-1]
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    rects = shapely.box(gx, gy, gx + length, gy + depth)
    shapely.prepare(inner)
    ok = shapely.contains(inner, rects)
    if avoid is not None:
        ok &= ~shapely.intersects(avoid, rects)
    return np.column_stack([gx[ok], gy[ok]])


def _place_buildings(
    rng: np.random.Generator,
    poly: shapely.Polygon,
    target: float,
    style: str,
    avoid: Any,
) -> list[dict[str, Any]]:
    """Buildings (in the block frame) whose households add up to about ``target``."""
    for attempt in (style,) + (("high", "tiny") if style == "low" else ("tiny",)):
        if attempt == "low":
            units = int(rng.choice([2, 3, 3, 4]))
            hpf = 2
            length, depth = 13.0 * units, 11.0
            slots = _slots(poly, length, depth, length + 10.0, depth + 18.0, avoid)
            per = 6 * units * hpf
            n = max(1, round(target / per))
            if len(slots) < n and target > 100:
                continue  # too dense for walk-ups: go high-rise
        elif attempt == "high":
            units, hpf, slots = _tower_type(rng, poly, target, avoid)
            length, depth = 18.0 * units, 18.0
            per_tower = int(rng.integers(24, 34)) * units * hpf
            n = max(1, math.ceil(target / per_tower))
            while n > 1 and target / n < 18 * units * hpf:
                n -= 1
        else:  # a single small walk-up where nothing else fits
            units, hpf = 1, 2
            length, depth = 13.0, 11.0
            slots = _slots(poly, length, depth, 18.0, 20.0, avoid)
            n = max(1, round(target / 12))
        if len(slots) == 0:
            continue
        n = min(n, len(slots))
        pick = np.unique(np.round(np.linspace(0, len(slots) - 1, n)).astype(int))
        out: list[dict[str, Any]] = []
        remaining = target
        floor_min = {"high": 18, "low": 5, "tiny": 3}[attempt]
        for q, s_idx in enumerate(pick):
            if q and remaining < 0.5 * floor_min * units * hpf:
                break  # one more building would overshoot the target by over half
            left = len(pick) - q
            per_b = remaining / left
            if attempt == "high":
                levels = round(per_b / (units * hpf))
                if left > 1:
                    levels += int(rng.integers(-2, 3))
                levels = int(np.clip(levels, 18, 33))
            elif attempt == "low":
                levels = int(np.clip(round(per_b / (units * hpf)), 5, 7))
            else:
                levels = int(np.clip(round(per_b / (units * hpf)), 3, 7))
            hh = levels * units * hpf
            remaining -= hh
            x, y = slots[s_idx]
            unit_xy = np.column_stack(
                [x + (np.arange(units) + 0.5) * length / units, np.full(units, y + 1.0)]
            )
            out.append(
                {
                    "levels": levels,
                    "units": units,
                    "hpf": hpf,
                    "households": hh,
                    "unit_xy": unit_xy,
                    "geometry": shapely.box(x, y, x + length, y + depth),
                }
            )
        return out
    return []


def _tower_type(
    rng: np.random.Generator, poly: shapely.Polygon, target: float, avoid: Any
) -> tuple[int, int, np.ndarray]:
    """Units per tower, households per floor-unit and slots: enough room for target.

    Picks at random among the tower types whose capacity (30 floors in every slot)
    covers ``target`` and whose smallest building (18 floors) does not exceed it;
    else the largest capacity among those modest types; else the largest capacity.
    """
    slots = {
        u: _slots(poly, 18.0 * u, 18.0, 18.0 * u + 12.0, 18.0 + 30.0, avoid)
        for u in (1, 2, 3)
    }
    types = [(u, h) for u in (1, 2, 3) for h in (2, 3, 4)]
    cap = np.array([len(slots[u]) * 30 * u * h for u, h in types], dtype=float)
    small = np.array([18 * u * h for u, h in types], dtype=float)
    modest = small <= max(target, 36.0)
    ok = (cap >= target) & modest
    if ok.any():
        choice = rng.choice(np.flatnonzero(ok))
    elif (modest & (cap > 0)).any():
        choice = int(np.argmax(np.where(modest, cap, -1.0)))
    else:
        choice = int(np.argmax(cap))
    u, h = types[int(choice)]
    return u, h, slots[u]


# --- 4. shops ------------------------------------------------------------------
def _shop_name(rng: np.random.Generator, category: str) -> str:
    word = _WORDS[int(rng.integers(len(_WORDS)))]
    sur = _SURNAMES[int(rng.integers(len(_SURNAMES)))]
    pick = int(rng.integers(3))
    if category == "餐饮":
        dish = _DISHES[int(rng.integers(len(_DISHES)))]
        return f"{sur}记{dish}" if pick else f"{word}{dish}馆"
    if category == "药店":
        return ("益丰大药房", "老百姓大药房", f"{word}药店")[pick]
    if category == "通讯":
        return ("中国移动营业厅", "中国电信营业厅", f"{word}手机店")[pick]
    if category == "银行":
        return f"{_BANKS[int(rng.integers(len(_BANKS)))]}{word}支行"
    if category == "快递":
        return ("菜鸟驿站", f"{word}快递点", "丰巢驿站")[pick]
    suffix = {
        "便利店": "便利店",
        "理发美容": "美发",
        "服装": "服饰",
        "水果生鲜": "水果店",
        "超市": "超市",
        "五金": "五金店",
        "烟酒": "烟酒行",
        "洗衣": "干洗店",
        "宾馆": "宾馆",
    }[category]
    return f"{word if pick else sur + '记'}{suffix}"


def _place_shops(
    rng: np.random.Generator,
    edges: gpd.GeoDataFrame,
    blocks: np.ndarray,
    fill: _Fill,
    n_communities: int,
) -> pd.DataFrame:
    """Street-front shops just inside blocks on main roads, plus a few outside."""
    egeom = edges.geometry.values
    half = edges["half_width"].to_numpy()
    main = np.flatnonzero(edges["highway"].isin(["primary", "secondary"]).to_numpy())
    rows_e, rows_p = [], []
    for e in main:
        line = egeom[e]
        length = line.length
        spacing = rng.uniform(18.0, 30.0)
        s = np.arange(rng.uniform(8.0, 20.0), length - 8.0, spacing)
        if len(s) == 0:
            continue
        s = np.clip(s, 1.0, length - 1.0)
        p0 = shapely.get_coordinates(shapely.line_interpolate_point(line, s))
        pa = shapely.get_coordinates(shapely.line_interpolate_point(line, s - 0.5))
        pb = shapely.get_coordinates(shapely.line_interpolate_point(line, s + 0.5))
        t = pb - pa
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        normal = np.column_stack([-t[:, 1], t[:, 0]])
        for side in (1.0, -1.0):
            keep = rng.random(len(s)) < 0.5
            off = half[e] + rng.uniform(3.0, 7.0, size=len(s))
            pts = p0 + side * normal * off[:, None]
            rows_e.append(np.full(int(keep.sum()), e))
            rows_p.append(pts[keep])
    edge_idx = np.concatenate(rows_e) if rows_e else np.zeros(0, dtype=int)
    pts = (
        shapely.points(np.concatenate(rows_p)) if rows_p else np.zeros(0, dtype=object)
    )

    ok = np.ones(len(pts), dtype=bool)
    etree = shapely.STRtree(egeom)
    pi, ej = etree.query(pts, predicate="dwithin", distance=float(half.max()) + 3.0)
    dist = shapely.distance(pts[pi], egeom[ej])
    ok[pi[dist < half[ej] + 2.0]] = False
    if fill.compounds:
        ctree = shapely.STRtree(np.array([c["geometry"] for c in fill.compounds]))
        pi, _ = ctree.query(pts, predicate="dwithin", distance=2.0)
        ok[pi] = False
    if fill.internal:
        rtree = shapely.STRtree(np.array([r["geometry"] for r in fill.internal]))
        pi, _ = rtree.query(
            pts, predicate="dwithin", distance=_HALF_WIDTH["service"] + 2.0
        )
        ok[pi] = False
    btree = shapely.STRtree(blocks)
    pi, bj = btree.query(pts, predicate="within")
    block_of = np.full(len(pts), -1)
    block_of[pi] = bj
    ok &= block_of >= 0
    inside = pd.DataFrame(
        {
            "edge": edge_idx[ok],
            "block": block_of[ok],
            "geometry": pts[ok],
            "outside": False,
        }
    )

    # A few shops beyond the outermost street, outside every block.
    n_out = 3 + n_communities // 15
    city = shapely.coverage_union_all(blocks)
    ring = shapely.LineString(shapely.get_exterior_ring(city))
    s = np.sort(rng.uniform(1.0, ring.length - 1.0, size=n_out))
    p0 = shapely.get_coordinates(shapely.line_interpolate_point(ring, s))
    pa = shapely.get_coordinates(shapely.line_interpolate_point(ring, s - 0.5))
    pb = shapely.get_coordinates(shapely.line_interpolate_point(ring, s + 0.5))
    t = pb - pa
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    normal = np.column_stack([-t[:, 1], t[:, 0]])
    off = rng.uniform(5.0, 15.0, size=n_out)[:, None]
    out_pts = shapely.points(p0 + normal * off)
    flip = shapely.intersects(city, out_pts)
    out_pts[flip] = shapely.points((p0 - normal * off)[flip])
    out_edge = etree.query_nearest(out_pts, all_matches=False)[1]
    outside = pd.DataFrame(
        {"edge": out_edge, "block": -1, "geometry": out_pts, "outside": True}
    )
    shops = pd.concat([inside, outside], ignore_index=True)
    cats = [c for c, _ in _SHOP_CATEGORIES]
    probs = np.array([p for _, p in _SHOP_CATEGORIES])
    shops["category"] = rng.choice(cats, size=len(shops), p=probs / probs.sum())
    shops["name"] = [_shop_name(rng, c) for c in shops["category"]]
    return shops


# --- 5. addresses and assembly -------------------------------------------------------
def _number_plates(plates: pd.DataFrame, lines: list[shapely.LineString]) -> np.ndarray:
    """Door numbers: odd on the left, even on the right, increasing along the road."""
    numbers = np.zeros(len(plates), dtype=int)
    for src, grp in plates.groupby("source", sort=True):
        line = lines[int(src)]
        pts = grp["geometry"].to_numpy()
        s = shapely.line_locate_point(line, pts)
        pa = shapely.get_coordinates(shapely.line_interpolate_point(line, s - 1.0))
        pb = shapely.get_coordinates(shapely.line_interpolate_point(line, s + 1.0))
        p0 = shapely.get_coordinates(shapely.line_interpolate_point(line, s))
        xy = shapely.get_coordinates(pts)
        t = pb - pa
        cross = t[:, 0] * (xy[:, 1] - p0[:, 1]) - t[:, 1] * (xy[:, 0] - p0[:, 0])
        left = cross > 0
        pos = np.flatnonzero(np.ones(len(grp), dtype=bool))
        for side in (True, False):
            sel = pos[left == side]
            order = sel[np.argsort(s[sel], kind="stable")]
            prev = -1
            parity = 1 if side else 2
            for q in order:
                num = 2 * int(s[q] // 15.0) + parity
                num = max(num, prev + 2)
                numbers[grp.index[q]] = num
                prev = num
    return numbers


def _assemble(
    *,
    rng: np.random.Generator,
    plan: _StreetPlan,
    edges: gpd.GeoDataFrame,
    blocks_geom: np.ndarray,
    sub_label: np.ndarray,
    com_label: np.ndarray,
    targets: np.ndarray,
    fill: _Fill,
    shops: pd.DataFrame,
    admin_code: str,
    name: str,
    names: _Names,
) -> City:
    crs = GENERATION_CRS
    n_blocks = len(blocks_geom)
    block_ids = np.array([f"B{k + 1:05d}" for k in range(n_blocks)], dtype=object)

    # Codes in spatial order: north to south in bands, then west to east.
    def spatial_order(geoms: np.ndarray) -> np.ndarray:
        cen = shapely.get_coordinates(shapely.centroid(geoms))
        return np.lexsort((cen[:, 0], -np.floor(cen[:, 1] / plan.spacing_m)))

    n_sub = int(sub_label.max()) + 1
    sub_geoms = np.array(
        [shapely.coverage_union_all(blocks_geom[sub_label == k]) for k in range(n_sub)]
    )
    sub_rank = np.empty(n_sub, dtype=int)
    sub_rank[spatial_order(sub_geoms)] = np.arange(n_sub)
    sub_codes = np.array([f"{admin_code}{r + 1:03d}" for r in sub_rank], dtype=object)
    sub_names = [names.take(["街道"]) for _ in range(n_sub)]

    n_com = len(targets)
    com_geoms = np.array(
        [shapely.coverage_union_all(blocks_geom[com_label == c]) for c in range(n_com)]
    )
    com_sub = np.array(
        [int(sub_label[np.flatnonzero(com_label == c)[0]]) for c in range(n_com)]
    )
    com_codes = np.empty(n_com, dtype=object)
    for k in range(n_sub):
        members = np.flatnonzero(com_sub == k)
        order = members[spatial_order(com_geoms[members])]
        for r, c in enumerate(order):
            com_codes[c] = f"{sub_codes[k]}{r + 1:03d}"
    com_names = [names.take(["社区"]) for _ in range(n_com)]

    # Buildings, compounds.
    comp = pd.DataFrame(fill.compounds)
    comp_ids = np.array([f"C{k + 1:05d}" for k in range(len(comp))], dtype=object)
    bld = pd.DataFrame(fill.buildings)
    block_hh = np.bincount(
        bld["block"].to_numpy(),
        weights=bld["households"].to_numpy(),
        minlength=n_blocks,
    ).astype(int)
    com_hh = np.bincount(com_label, weights=block_hh, minlength=n_com).astype(int)
    sub_hh = np.bincount(com_sub, weights=com_hh, minlength=n_sub).astype(int)

    # Streets: centre-line edges plus internal compound roads.
    street_rows = {
        "name": list(edges["name"]),
        "highway": list(edges["highway"]),
        "internal": [False] * len(edges),
        "compound_id": [None] * len(edges),
        "geometry": list(edges.geometry.values),
    }
    for service in fill.internal:
        street_rows["name"].append(comp.loc[service["cidx"], "name"] + "内部路")
        street_rows["highway"].append("service")
        street_rows["internal"].append(True)
        street_rows["compound_id"].append(comp_ids[service["cidx"]])
        street_rows["geometry"].append(service["geometry"])
    streets = gpd.GeoDataFrame(street_rows, geometry="geometry", crs=crs)
    streets.insert(0, "street_id", [f"S{k + 1:05d}" for k in range(len(streets))])

    # Door plates: shops and compound gates; numbered per road.
    source_lines = [ln.geometry() for ln in plan.lines]
    egeom = edges.geometry.values
    rank = edges["highway"].map(_RANK).to_numpy(dtype=int)
    etree = shapely.STRtree(egeom)
    comp_block = comp["block"].to_numpy(dtype=int)
    comp_geom = comp["geometry"].to_numpy()
    comp_name = comp["name"].to_numpy(dtype=object)
    gate_edge = np.empty(len(comp), dtype=int)
    for q in range(len(comp)):
        block = blocks_geom[comp_block[q]]
        near = etree.query(block, predicate="intersects")
        near = near[shapely.length(shapely.intersection(egeom[near], block)) > 1.0]
        best = near[rank[near] == rank[near].max()]
        gate_edge[q] = int(best[int(rng.integers(len(best)))])
    mids = shapely.line_interpolate_point(egeom[gate_edge], 0.5, normalized=True)
    gate_pts = shapely.get_point(shapely.shortest_line(comp_geom, mids), 0)
    plates = pd.DataFrame(
        {
            "edge": np.concatenate([shops["edge"].to_numpy(dtype=int), gate_edge]),
            "block": np.concatenate([shops["block"].to_numpy(dtype=int), comp_block]),
            "cidx": np.concatenate([np.full(len(shops), -1), np.arange(len(comp))]),
            "geometry": np.concatenate([shops["geometry"].to_numpy(), gate_pts]),
        }
    )
    plates["source"] = edges["source"].to_numpy()[plates["edge"].to_numpy()]
    plates["road"] = edges["name"].to_numpy()[plates["edge"].to_numpy()]
    plates["number"] = _number_plates(plates, source_lines)
    plates["address"] = plates["road"] + plates["number"].astype(str) + "号"
    n_shops = len(shops)
    gate_address = plates["address"].to_numpy(dtype=object)[n_shops:]
    gate_road = plates["road"].to_numpy(dtype=object)[n_shops:]
    gate_number = plates["number"].to_numpy(dtype="int64")[n_shops:]

    none = np.array([None], dtype=object)
    block_or_none = np.concatenate([block_ids, none])  # index -1 -> None
    plate_cidx = plates["cidx"].to_numpy()
    door = pd.DataFrame(
        {
            "address": plates["address"].to_numpy(dtype=object),
            "road": plates["road"].to_numpy(dtype=object),
            "number": plates["number"].to_numpy(dtype="int64"),
            "compound": np.where(
                plate_cidx >= 0, np.concatenate([comp_name, none])[plate_cidx], None
            ),
            "building": None,
            "unit": pd.array([pd.NA] * len(plates), dtype="Int64"),
            "kind": "door",
            "block_id": block_or_none[plates["block"].to_numpy()],
            "geometry": plates["geometry"].to_numpy(),
        }
    )
    units = pd.DataFrame(fill.units)
    u_c = units["cidx"].to_numpy(dtype=int)
    u_b = units["building"].to_numpy(dtype=int)
    u_u = units["unit"].to_numpy(dtype=int)
    plate = pd.DataFrame(
        {
            "address": [
                f"{comp_name[c]}{b}栋{u}单元"
                for c, b, u in zip(u_c, u_b, u_u, strict=True)
            ],
            "road": gate_road[u_c],
            "number": gate_number[u_c],
            "compound": comp_name[u_c],
            "building": u_b.astype(str).astype(object),
            "unit": pd.array(u_u, dtype="Int64"),
            "kind": "building",
            "block_id": block_ids[units["block"].to_numpy(dtype=int)],
            "geometry": units["geometry"].to_numpy(),
        }
    )
    addresses = gpd.GeoDataFrame(
        pd.concat([door, plate], ignore_index=True), geometry="geometry", crs=crs
    )
    addresses.insert(0, "address_id", [f"A{k + 1:06d}" for k in range(len(addresses))])

    # POIs: shops (with their door plate), community service centres, institutions.
    centre_block = np.array(
        [
            (m := np.flatnonzero(com_label == c))[
                np.argmax(shapely.area(blocks_geom[m]))
            ]
            for c in range(n_com)
        ],
        dtype=int,
    )
    inst_block = np.array([i["block"] for i in fill.institutions], dtype=int)
    pois = gpd.GeoDataFrame(
        {
            "name": [
                *shops["name"],
                *(f"{n}党群服务中心" for n in com_names),
                *(i["name"] for i in fill.institutions),
            ],
            "category": [
                *shops["category"],
                *(["社区服务"] * n_com),
                *(i["category"] for i in fill.institutions),
            ],
            "is_shop": np.concatenate(
                [np.ones(n_shops, bool), np.zeros(n_com + len(inst_block), bool)]
            ),
            "block_id": np.concatenate(
                [
                    block_or_none[shops["block"].to_numpy(dtype=int)],
                    block_ids[centre_block],
                    block_ids[inst_block],
                ]
            ),
            "address": np.concatenate(
                [
                    plates["address"].to_numpy(dtype=object)[:n_shops],
                    np.full(n_com + len(inst_block), None, dtype=object),
                ]
            ),
        },
        geometry=np.concatenate(
            [
                shops["geometry"].to_numpy(),
                shapely.point_on_surface(blocks_geom[centre_block]),
                np.array([i["geometry"] for i in fill.institutions], dtype=object),
            ]
        ),
        crs=crs,
    )
    pois.insert(0, "poi_id", [f"P{k + 1:06d}" for k in range(len(pois))])

    subdistricts = gpd.GeoDataFrame(
        {
            "subdistrict_code": sub_codes,
            "name": sub_names,
            "level": "subdistrict",
            "households": sub_hh,
        },
        geometry=sub_geoms,
        crs=crs,
    )
    communities = gpd.GeoDataFrame(
        {
            "community_code": com_codes,
            "name": com_names,
            "subdistrict_code": sub_codes[com_sub],
            "households": com_hh,
            "generated": False,
            "target_households": targets.astype(int),
            "n_blocks": np.bincount(com_label, minlength=n_com),
        },
        geometry=com_geoms,
        crs=crs,
    )
    blocks = gpd.GeoDataFrame(
        {
            "block_id": block_ids,
            "community_code": com_codes[com_label],
            "households": block_hh,
            "households_source": "buildings",
            "subdistrict_code": sub_codes[sub_label],
        },
        geometry=blocks_geom,
        crs=crs,
    )
    compounds = gpd.GeoDataFrame(
        {
            "compound_id": comp_ids,
            "name": comp["name"].to_numpy(),
            "block_id": block_ids[comp["block"].to_numpy()],
            "households": comp["households"].to_numpy(dtype="int64"),
            "rise": comp["rise"].to_numpy(),
            "internal_road": comp["internal_road"].to_numpy(dtype=bool),
            "address": gate_address,
        },
        geometry=comp["geometry"].to_numpy(),
        crs=crs,
    )
    buildings = gpd.GeoDataFrame(
        {
            "building_id": [f"BLD{k + 1:06d}" for k in range(len(bld))],
            "block_id": block_ids[bld["block"].to_numpy()],
            "compound_id": comp_ids[bld["cidx"].to_numpy()],
            "levels": bld["levels"].to_numpy(dtype="int64"),
            "households": bld["households"].to_numpy(dtype="int64"),
            "households_source": "planner",
            "name": [
                f"{comp_name[c]}{n}栋"
                for c, n in zip(bld["cidx"], bld["number"], strict=True)
            ],
            "units": bld["units"].to_numpy(dtype="int64"),
            "households_per_floor_unit": bld["households_per_floor_unit"].to_numpy(
                dtype="int64"
            ),
        },
        geometry=bld["geometry"].to_numpy(),
        crs=crs,
    )
    subdistricts = subdistricts.sort_values("subdistrict_code", ignore_index=True)
    communities = communities.sort_values("community_code", ignore_index=True)
    return City(
        subdistricts=subdistricts,
        communities=communities,
        streets=streets,
        blocks=blocks,
        buildings=buildings,
        compounds=compounds,
        addresses=addresses,
        pois=pois,
        name=name,
        admin_code=admin_code,
    )


def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return {}
    q = np.percentile(v, [0, 10, 50, 90, 100])
    keys = ("min", "p10", "median", "p90", "max")
    out = {k: round(float(x), 1) for k, x in zip(keys, q, strict=True)}
    out["mean"] = round(float(v.mean()), 1)
    return out


def _finish_report(
    city: City,
    *,
    seed: int,
    n_communities: int,
    households_per_community: int,
    crs: str,
    admin_code: str,
    name: str,
    shortfall: float,
) -> City:
    rep: dict[str, Any] = {
        "producer": "spatialgrid.sample.generate_city",
        "seed": int(seed),
        "parameters": {
            "seed": int(seed),
            "n_communities": int(n_communities),
            "households_per_community": int(households_per_community),
            "crs": str(crs),
            "admin_code": admin_code,
            "name": name,
        },
        "generated_in": GENERATION_CRS,
        "counts": {n: len(g) for n, g in city.layers().items()},
        "households": int(city.blocks["households"].sum()),
        "block_households": _stats(city.blocks["households"].to_numpy()),
        "community_households": _stats(city.communities["households"].to_numpy()),
        "compounds_over_500": int((city.compounds["households"] > 500).sum()),
        "internal_roads": int(city.streets["internal"].sum()),
        "shops": int(city.pois["is_shop"].sum()),
        "shops_outside_blocks": int(
            (city.pois["is_shop"] & city.pois["block_id"].isna()).sum()
        ),
        "households_shortfall_vs_targets": round(float(shortfall), 1),
        "estimated": [],
        "dropped": [],
        "notes": [
            "synthetic city: every layer is generated; households come from "
            "buildings (floors x units x households per floor-unit)",
            "block households are lumpy (~50-1200); some communities cannot be "
            "partitioned into 400-500 grids from whole blocks",
        ],
    }
    return City(
        **{
            **city.layers(),
            "name": city.name,
            "admin_code": city.admin_code,
            "report": rep,
        }
    )
