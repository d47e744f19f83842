"""Chinese addresses → points, against the city's door-plate gazetteer.

The gazetteer is the City ``addresses`` layer: door plates (门牌, ``kind="door"``:
road + number) and building plates (楼栋牌, ``kind="building"``: compound +
building [+ unit]). :class:`Gazetteer` indexes it once; :func:`geocode_addresses`
resolves many queries and :meth:`Gazetteer.reverse` finds the nearest plate.

Matching, per query:

1. :func:`spatialgrid.address.parse_address` normalises and splits the query into
   GB/T 37149 levels.
2. Known road and compound names are found in the text (longest first); names the
   text misspells are found by fuzzy scoring (rapidfuzz ``WRatio``) of the parsed
   road/compound against the gazetteer's names.
3. The most specific plate wins: a building plate (compound + building [+ unit]),
   else a door plate (road + number), else the compound, road or community as a
   whole (the centroid of its plates or polygon), each with its ``level``.
4. When two different places fit about equally well (a misspelt name close to two
   compounds, a door number that exists on two roads of the same name, a building
   number without its compound) the row's status is ``"ambiguous"`` and the
   candidates are returned without a point: never a guess dressed as a fact.

Confidence is the product of the fuzzy scores used (1.0 for exact names) and a
level factor (door/building 1.0, compound 0.7, road 0.5, community 0.3).
Failures are row statuses, not exceptions (like geopandas' geocode).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import geopandas as gpd
import shapely
from pyproj import CRS

from spatialgrid.address import ParsedAddress, normalize_address, parse_address
from spatialgrid.coords import normalize_crs, to_projected
from spatialgrid.crs import STORAGE_EPSG, require_crs, transformer, working_crs
from spatialgrid.errors import EmptyInputError, InputError
from spatialgrid.progress import ProgressCallback, report
from spatialgrid.validate import require_frame

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from spatialgrid.locate import GridIndex

logger = logging.getLogger(__name__)

#: Per-row ``status`` values of :func:`geocode_addresses`.
STATUSES: tuple[str, ...] = ("matched", "partial", "ambiguous", "not_found", "invalid")
#: ``level`` values, most specific first.
LEVEL_FACTOR: dict[str, float] = {
    "building": 1.0,
    "door": 1.0,
    "compound": 0.7,
    "road": 0.5,
    "community": 0.3,
}
_REQUIRED = ("address", "road", "number", "compound", "building", "kind")
_HAS_WORD = re.compile(r"[\u4e00-\u9fff]")
_NUMBER_AFTER = re.compile(r"(\d++(?:-\d++)?)(?!栋|单元)号?")


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if value is pd.NA:
        return None
    text = str(value).strip()
    if not text or text.lower() in ("none", "nan", "<na>"):
        return None
    return text


def _num(value: Any) -> str | None:
    text = _clean(value)
    if text is None:
        return None
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    text = normalize_address(text)
    return text.rstrip("号栋") or None


@dataclass
class _Match:
    rows: list[int]
    level: str
    score: float
    note: str = ""
    alternatives: list[tuple[list[int], str, float]] = field(default_factory=list)


class Gazetteer:
    """A searchable door-plate gazetteer built from an ``addresses`` layer.

    Parameters
    ----------
    addresses
        Point GeoDataFrame with the City ``addresses`` columns ``address``, ``road``,
        ``number``, ``compound``, ``building``, ``kind`` (``unit`` and
        ``address_id`` used when present). Any CRS.
    communities
        Optional community polygons (``community_code``, ``name``) so that a query
        naming only a community resolves at community level.
    fuzzy_cutoff
        Smallest rapidfuzz score (0–100) accepted for a misspelt road or compound.
    ambiguity_margin
        Two names scoring within this many points of each other are ambiguous.

    Raises
    ------
    MissingCRSError, MissingColumnError, EmptyInputError, InvalidGeometryError
        When ``addresses`` breaks the input contract.
    """

    def __init__(
        self,
        addresses: gpd.GeoDataFrame,
        *,
        communities: gpd.GeoDataFrame | None = None,
        fuzzy_cutoff: float = 75.0,
        ambiguity_margin: float = 3.0,
    ) -> None:
        require_frame(
            addresses, "addresses", columns=_REQUIRED, geometry_types=("Point",)
        )
        try:
            from rapidfuzz import fuzz, process
        except ImportError as err:  # pragma: no cover - rapidfuzz is installed here
            msg = "geocoding needs rapidfuzz: pip install 'spatialgrid[geocode]'"
            raise ImportError(msg) from err
        self._fuzz, self._process = fuzz, process
        self.fuzzy_cutoff = float(fuzzy_cutoff)
        self.ambiguity_margin = float(ambiguity_margin)
        self.addresses = addresses.reset_index(drop=True)
        self.crs = require_crs(addresses, "addresses")
        self.working_crs = working_crs(self.addresses)
        self._working_name = normalize_crs(self.working_crs)
        pts = self.addresses.geometry.values
        self.x = np.asarray(shapely.get_x(pts), dtype=np.float64)
        self.y = np.asarray(shapely.get_y(pts), dtype=np.float64)
        proj = self.addresses.geometry.to_crs(self.working_crs).values
        self._px = np.asarray(shapely.get_x(proj))
        self._py = np.asarray(shapely.get_y(proj))
        self._tree = shapely.STRtree(proj)
        lon, lat = transformer(self.crs, STORAGE_EPSG).transform(self.x, self.y)
        self.lon, self.lat = np.asarray(lon), np.asarray(lat)
        n = len(self.addresses)
        self.ids = (
            self.addresses["address_id"].astype(str).to_numpy(object)
            if "address_id" in self.addresses.columns
            else np.array([str(i) for i in range(n)], dtype=object)
        )
        self.labels = self.addresses["address"].astype(str).to_numpy(object)
        kinds = self.addresses["kind"].astype(str).to_numpy(object)
        roads = [_clean(v) for v in self.addresses["road"]]
        roads = [normalize_address(r) if r else None for r in roads]
        comps = [_clean(v) for v in self.addresses["compound"]]
        comps = [normalize_address(c) if c else None for c in comps]
        numbers = [_num(v) for v in self.addresses["number"]]
        buildings = [_num(v) for v in self.addresses["building"]]
        units = (
            [_num(v) for v in self.addresses["unit"]]
            if "unit" in self.addresses.columns
            else [None] * n
        )
        self._door: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._building: dict[tuple[str, str, str | None], list[int]] = defaultdict(list)
        self._building_any: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._compound: dict[str, list[int]] = defaultdict(list)
        self._compound_gate: dict[str, list[int]] = defaultdict(list)
        self._road: dict[str, list[int]] = defaultdict(list)
        self._road_numbers: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self._by_address: dict[str, list[int]] = defaultdict(list)
        for i in range(n):
            road, comp, num, bld, unit = (
                roads[i],
                comps[i],
                numbers[i],
                buildings[i],
                units[i],
            )
            self._by_address[normalize_address(self.labels[i])].append(i)
            if kinds[i] == "building" and comp and bld:
                self._building[(comp, bld, unit)].append(i)
                self._building_any[(comp, bld)].append(i)
            if kinds[i] == "door" and road and num:
                self._door[(road, num)].append(i)
                if num.isdigit():
                    self._road_numbers[road].append((int(num), i))
                if comp:
                    self._compound_gate[comp].append(i)
            if comp:
                self._compound[comp].append(i)
            if road:
                self._road[road].append(i)
        self.road_names = sorted(self._road, key=len, reverse=True)
        self.compound_names = sorted(self._compound, key=len, reverse=True)
        self._name_re = _alternation(self.road_names + self.compound_names)
        self.communities = self._prepare_communities(communities)
        logger.info(
            "Gazetteer: %d plates, %d roads, %d compounds",
            n,
            len(self.road_names),
            len(self.compound_names),
        )

    def _prepare_communities(
        self, communities: gpd.GeoDataFrame | None
    ) -> dict[str, tuple[str, float, float]]:
        if communities is None or len(communities) == 0:
            return {}
        require_frame(communities, "communities", columns=("community_code", "name"))
        com = communities.to_crs(self.crs)
        reps = shapely.point_on_surface(com.geometry.values)
        out: dict[str, tuple[str, float, float]] = {}
        for code, name, p in zip(com["community_code"], com["name"], reps, strict=True):
            if _clean(name):
                key = normalize_address(str(name))
                out[key] = (str(code), float(shapely.get_x(p)), float(shapely.get_y(p)))
        return out

    def __len__(self) -> int:
        return len(self.labels)

    # ------------------------------------------------------------------ lookup
    def _fuzzy(self, text: str | None, names: list[str]) -> list[tuple[str, float]]:
        """Names scoring within the ambiguity margin of the best (≥ cutoff)."""
        if not text or not names:
            return []
        found = self._process.extract(
            text,
            names,
            scorer=self._fuzz.ratio,
            score_cutoff=self.fuzzy_cutoff,
            limit=5,
        )
        if not found:
            return []
        best = found[0][1]
        return [
            (name, score / 100.0)
            for name, score, _ in found
            if score >= best - self.ambiguity_margin
        ]

    def _names_in(
        self, text: str
    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Known road and compound names in ``text`` with the position after each."""
        roads: list[tuple[str, int]] = []
        comps: list[tuple[str, int]] = []
        if self._name_re is None:
            return roads, comps
        for m in self._name_re.finditer(text):
            name = m.group(0)
            if name in self._road:
                roads.append((name, m.end()))
            if name in self._compound:
                comps.append((name, m.end()))
        return roads, comps

    def _resolve(self, parsed: ParsedAddress) -> _Match | None:
        text = parsed.normalized
        exact = self._by_address.get(text)
        if exact:
            return self._pick([_Match(exact, self._level_of(exact[0]), 1.0)])
        roads_in, comps_in = self._names_in(text)
        number, building, unit = parsed.number, parsed.building, parsed.unit
        # Known names found in the text beat the parser's guesses, and what
        # follows them is read again (the parser may have mistaken a road such as
        # 沙市街 for the district 沙市 + 街).
        if roads_in:
            m = _NUMBER_AFTER.match(text, roads_in[0][1])
            if m:
                number = m.group(1)
        if comps_in:
            tail = parse_address(text[comps_in[0][1] :])
            if tail.building:
                building, unit = tail.building, tail.unit
        if comps_in:
            comp_opts = [(comps_in[0][0], 1.0)]
        else:
            guess = parsed.compound or parsed.rest
            if guess and parsed.road is None and guess.endswith(("路", "街", "道")):
                guess = None
            comp_opts = self._fuzzy(guess, self.compound_names)
        if roads_in:
            road_opts = [(roads_in[0][0], 1.0)]
        else:
            road_opts = self._fuzzy(parsed.road, self.road_names)

        matches: list[_Match] = []
        if building:
            for comp, score in comp_opts:
                rows = self._building.get((comp, building, unit)) if (unit) else None
                if rows:
                    matches.append(_Match(rows, "building", score))
                    continue
                rows = self._building_any.get((comp, building))
                if rows:
                    # whole building: unit missing or unknown
                    penalty = 0.95 if unit is None else 0.85
                    matches.append(
                        _Match(
                            rows, "building", score * penalty, note="unit not matched"
                        )
                    )
            if matches:
                return self._pick(matches)
            if not comp_opts and not road_opts:
                # a building number without any known compound: list the options
                keys = [k for k in self._building_any if k[1] == building]
                for comp, bld in keys[:10]:
                    rows = (
                        self._building.get((comp, bld, unit))
                        or (self._building_any[(comp, bld)])
                    )
                    matches.append(_Match(rows, "building", 0.5))
                if len(matches) == 1:
                    matches[0].note = "compound missing; the only building numbered so"
                    return matches[0]
                if matches:
                    return self._pick(matches)
        if number:
            for road, score in road_opts:
                rows = self._door.get((road, number))
                if rows:
                    matches.append(_Match(rows, "door", score))
            if matches:
                return self._pick(matches)
        if comp_opts:
            matches = [
                _Match(self._compound_gate.get(c) or self._compound[c], "compound", s)
                for c, s in comp_opts
            ]
            return self._pick(matches)
        if road_opts:
            matches = []
            for road, score in road_opts:
                rows = self._road[road]
                note = ""
                if number and number.isdigit():
                    rows, note = self._nearest_numbers(road, int(number))
                matches.append(_Match(rows, "road", score, note=note))
            return self._pick(matches)
        if parsed.community or self.communities:
            key = parsed.community or ""
            if key in self.communities:
                return _Match([], "community", 1.0, note=key)
            opts = self._fuzzy(parsed.community or text, list(self.communities))
            if opts:
                ms = [_Match([], "community", s, note=c) for c, s in opts]
                return self._pick(ms)
        return None

    def _nearest_numbers(self, road: str, number: int) -> tuple[list[int], str]:
        """Plates on ``road`` whose numbers bracket ``number`` (same parity first)."""
        plates = self._road_numbers.get(road)
        if not plates:
            return self._road[road], "number not on road"
        same = [p for p in plates if p[0] % 2 == number % 2] or plates
        best = min(same, key=lambda p: abs(p[0] - number))
        return [best[1]], f"number {number} not found; nearest {best[0]}"

    def _pick(self, matches: list[_Match]) -> _Match:
        # One plate key found in places far apart (the same road name and number
        # in two districts) is several candidates, not one.
        split: list[_Match] = []
        for m in matches:
            if m.level in ("door", "building") and len(m.rows) > 1:
                split.extend(
                    _Match(g, m.level, m.score, m.note) for g in self._places(m.rows)
                )
            else:
                split.append(m)
        matches = split
        matches.sort(key=lambda m: -m.score)
        best = matches[0]
        others = [
            m
            for m in matches[1:]
            if m.score >= best.score - self.ambiguity_margin / 100.0
            and not self._same_place(m.rows, best.rows)
        ]
        if others:
            best.alternatives = [(m.rows, m.level, m.score) for m in others]
        return best

    def _places(self, rows: list[int], tol_m: float = 100.0) -> list[list[int]]:
        """Group plates into places: rows within ``tol_m`` of a group's first row."""
        groups: list[list[int]] = []
        for i in rows:
            for g in groups:
                if (
                    np.hypot(self._px[i] - self._px[g[0]], self._py[i] - self._py[g[0]])
                    <= tol_m
                ):
                    g.append(i)
                    break
            else:
                groups.append([i])
        return groups

    def _same_place(self, a: list[int], b: list[int], tol_m: float = 50.0) -> bool:
        if not a or not b:
            return False
        ax, ay = self._px[a].mean(), self._py[a].mean()
        bx, by = self._px[b].mean(), self._py[b].mean()
        return bool(np.hypot(ax - bx, ay - by) <= tol_m)

    def _level_of(self, row: int) -> str:
        kind = str(self.addresses["kind"].iat[row])
        return "building" if kind == "building" else "door"

    # ---------------------------------------------------------------- geocode
    def geocode(self, query: str) -> dict[str, Any]:
        """Geocode one address; see :func:`geocode_addresses` for the fields."""
        return self._geocode_one(query)

    def _geocode_one(self, query: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "query": query,
            "status": "invalid",
            "level": None,
            "confidence": 0.0,
            "address_id": None,
            "matched_address": None,
            "x": np.nan,
            "y": np.nan,
            "lon": np.nan,
            "lat": np.nan,
            "n_candidates": 0,
            "candidates": [],
            "note": "",
        }
        text = _clean(query)
        if text is None or not (_HAS_WORD.search(text) or re.search(r"\d", text)):
            row["note"] = "empty or not an address (no Chinese characters or digits)"
            return row
        parsed = parse_address(text)
        if not _HAS_WORD.search(parsed.normalized):
            row["note"] = "no place name in the query"
            return row
        match = self._resolve(parsed)
        if match is None:
            row["status"] = "not_found"
            row["note"] = "no road, compound or community of the gazetteer matches"
            return row
        if match.alternatives:
            cands = [self._candidate(match.rows, match.level, match.score)]
            cands += [self._candidate(r, lv, s) for r, lv, s in match.alternatives]
            row.update(
                status="ambiguous",
                level=None,
                confidence=0.0,
                n_candidates=len(cands),
                candidates=cands,
                note="several places fit equally well; see candidates",
            )
            return row
        cand = self._candidate(match.rows, match.level, match.score)
        factor = LEVEL_FACTOR[match.level]
        row.update(
            status="matched" if match.level in ("door", "building") else "partial",
            level=match.level,
            confidence=round(float(match.score * factor), 3),
            address_id=cand["address_id"],
            matched_address=cand["address"],
            x=cand["x"],
            y=cand["y"],
            lon=cand["lon"],
            lat=cand["lat"],
            note=match.note if match.level != "community" else "",
        )
        if match.level == "community":
            code, cx, cy = self.communities[match.note]
            lon, lat = transformer(self.crs, STORAGE_EPSG).transform(cx, cy)
            row.update(
                x=cx,
                y=cy,
                lon=float(lon),
                lat=float(lat),
                address_id=None,
                matched_address=match.note,
                note=f"community {code}",
            )
        return row

    def _candidate(self, rows: list[int], level: str, score: float) -> dict[str, Any]:
        if level == "community" and not rows:
            return {
                "address_id": None,
                "address": None,
                "level": level,
                "score": round(score, 3),
                "x": np.nan,
                "y": np.nan,
                "lon": np.nan,
                "lat": np.nan,
            }
        if len(rows) == 1:
            i = rows[0]
            return {
                "address_id": str(self.ids[i]),
                "address": str(self.labels[i]),
                "level": level,
                "score": round(float(score), 3),
                "x": float(self.x[i]),
                "y": float(self.y[i]),
                "lon": float(self.lon[i]),
                "lat": float(self.lat[i]),
            }
        # several plates of one place (units of a building, plates of a compound):
        # the plate nearest their centroid stands for the place.
        px, py = self._px[rows], self._py[rows]
        k = rows[int(np.argmin(np.hypot(px - px.mean(), py - py.mean())))]
        out = self._candidate([k], level, score)
        if level in ("compound", "road"):
            out["address"] = str(self.labels[k])
        return out

    def reverse(
        self,
        x: ArrayLike,
        y: ArrayLike,
        *,
        crs: str | int | CRS = "cgcs2000",
        max_distance_m: float | None = None,
        kind: str | None = None,
    ) -> pd.DataFrame:
        """Nearest plate to each point.

        Parameters
        ----------
        x, y
            Coordinates in ``crs`` (scalars or arrays).
        crs
            ``"wgs84"``, ``"gcj02"``, ``"bd09"``, ``"cgcs2000"`` or ``"EPSG:n"``.
        max_distance_m
            Points farther than this from every plate get status ``"not_found"``.
        kind
            Only ``"door"`` or only ``"building"`` plates; default both.

        Returns
        -------
        pandas.DataFrame
            One row per point: ``status`` ("matched" | "not_found" | "invalid"),
            ``address_id``, ``address``, ``kind``, ``distance_m``.
        """
        name = normalize_crs(crs)
        xa = np.atleast_1d(np.asarray(x, dtype=np.float64)).ravel()
        ya = np.atleast_1d(np.asarray(y, dtype=np.float64)).ravel()
        px, py = to_projected(xa, ya, src=name, dst=self._working_name)
        n = len(px)
        ok = np.isfinite(px) & np.isfinite(py)
        if kind is not None and kind not in ("door", "building"):
            msg = f"kind={kind!r} must be 'door', 'building' or None"
            raise InputError(msg)
        tree = self._tree
        ids = np.arange(len(self.labels))
        if kind is not None:
            ids = np.flatnonzero(self.addresses["kind"].astype(str).to_numpy() == kind)
            if ids.size == 0:
                msg = f"the gazetteer has no {kind!r} plates"
                raise EmptyInputError(msg)
            tree = shapely.STRtree(shapely.points(self._px[ids], self._py[ids]))
        pts = shapely.points(px[ok], py[ok])
        (src_i, tree_i), dist = tree.query_nearest(
            pts, return_distance=True, all_matches=False, max_distance=max_distance_m
        )
        best = np.full(n, -1, dtype=np.int64)
        best_d = np.full(n, np.nan)
        okpos = np.flatnonzero(ok)
        best[okpos[src_i]] = ids[tree_i]
        best_d[okpos[src_i]] = dist
        status = np.where(best >= 0, "matched", "not_found").astype(object)
        status[~ok] = "invalid"
        found = best >= 0
        out = pd.DataFrame(
            {
                "status": status,
                "address_id": np.where(found, self.ids[np.maximum(best, 0)], None),
                "address": np.where(found, self.labels[np.maximum(best, 0)], None),
                "kind": np.where(
                    found,
                    self.addresses["kind"]
                    .astype(str)
                    .to_numpy(object)[np.maximum(best, 0)],
                    None,
                ),
                "distance_m": np.round(best_d, 2),
            }
        )
        return out


def _alternation(names: list[str]) -> re.Pattern[str] | None:
    names = [n for n in names if len(n) >= 2]
    if not names:
        return None
    return re.compile("|".join(re.escape(n) for n in names))


def geocode_addresses(
    addresses: Sequence[str] | pd.Series,
    gazetteer: Gazetteer,
    *,
    index: GridIndex | None = None,
    progress: ProgressCallback | None = None,
) -> gpd.GeoDataFrame:
    """Geocode many addresses against a :class:`Gazetteer`, one row each.

    Parameters
    ----------
    addresses
        Query strings (any sequence or Series; non-strings become "invalid" rows).
    gazetteer
        The door-plate gazetteer.
    index
        Optional :class:`~spatialgrid.locate.GridIndex`: adds the grid and community
        of every located point (``grid_code``, ``community_code``).
    progress
        Optional progress callback (every 1,000 rows).

    Returns
    -------
    geopandas.GeoDataFrame
        In the gazetteer's CRS, one row per query, in order, with ``query``,
        ``status`` (:data:`STATUSES`), ``level`` (door | building | compound | road
        | community), ``confidence`` (0–1), ``address_id``, ``matched_address``,
        ``x``/``y`` (gazetteer CRS), ``lon``/``lat`` (EPSG:4490), ``n_candidates``,
        ``candidates`` (list of dicts for ambiguous rows), ``note`` and geometry
        (empty when no point).
    """
    queries = list(addresses)
    rows = []
    total = len(queries)
    for k, q in enumerate(queries):
        rows.append(gazetteer._geocode_one(q))
        if progress is not None and (k + 1) % 1000 == 0:
            report(progress, "geocode", k + 1, total)
    report(progress, "geocode", total, total)
    columns = [
        "query",
        "status",
        "level",
        "confidence",
        "address_id",
        "matched_address",
        "x",
        "y",
        "lon",
        "lat",
        "n_candidates",
        "candidates",
        "note",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    if isinstance(addresses, pd.Series):
        frame.index = addresses.index
    geom = shapely.points(frame["x"].to_numpy(float), frame["y"].to_numpy(float))
    geom = np.where(np.isfinite(frame["x"].to_numpy(float)), geom, None)
    out = gpd.GeoDataFrame(frame, geometry=list(geom), crs=gazetteer.crs)
    if index is not None:
        has = np.isfinite(out["lon"].to_numpy(float))
        res = index.locate(
            out["lon"].to_numpy(float), out["lat"].to_numpy(float), crs="cgcs2000"
        ).to_frame(attributes=())
        res.index = out.index
        out["grid_code"] = np.where(has, res["grid_code"], None)
        out["community_code"] = np.where(has, res["community_code"], None)
    return out
