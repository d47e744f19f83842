"""Rows <-> GeoDataFrames: save and load cities, grid plans, workers and API keys.

Every function takes the SQLAlchemy ``session`` keyword-only and never commits:
the caller (API request, CLI command, notebook) owns the transaction, so a
:func:`save_city` that fails half way leaves the database as it was once the
caller rolls back (:func:`spatialgrid.db.engine.session_scope` does).

Geometries are stored in EPSG:4490 (:data:`spatialgrid.crs.STORAGE_EPSG`) and
loaded back in EPSG:4490. Bulk writes use PostgreSQL ``COPY`` with hex EWKB on
psycopg2 (about 100k rows per second); other drivers fall back to
``executemany``. Natural ids and codes are stored as text; extra columns of a
layer travel in the JSONB ``properties`` column and come back as columns.

Raises, throughout: :class:`~spatialgrid.errors.NotFoundError` for a missing plan,
key or layer; :class:`~spatialgrid.errors.ConflictError` for duplicate ids and
illegal plan transitions; :class:`~spatialgrid.errors.InputError` for values that
do not fit a column; :class:`~spatialgrid.errors.AuthError` for bad API keys.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    LargeBinary,
    Table,
    Text,
    cast,
    false,
    func,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError

import geopandas as gpd
import shapely

from spatialgrid.city import LAYER_COLUMNS, LAYERS, City
from spatialgrid.crs import STORAGE_EPSG, epsg_or_wkt, require_crs
from spatialgrid.db.models import (
    LAYER_MODELS,
    ApiKey,
    CityInfo,
    Grid,
    GridPlan,
    GridWorker,
    PlanAssignment,
)
from spatialgrid.errors import (
    AuthError,
    ConflictError,
    DatabaseError,
    InputError,
    InvalidGeometryError,
    MissingColumnError,
    NotFoundError,
)
from spatialgrid.roles import ROLES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from spatialgrid.progress import ProgressCallback

__all__ = [
    "ROLES",
    "ApiKeyInfo",
    "activate_plan",
    "active_plan_id",
    "assign_worker",
    "authenticate_api_key",
    "count_layer",
    "count_plan_grids",
    "create_api_key",
    "create_plan",
    "create_worker",
    "get_plan",
    "list_api_keys",
    "list_plans",
    "list_workers",
    "load_city",
    "load_layer",
    "load_plan_assignments",
    "load_plan_grids",
    "revoke_api_key",
    "save_city",
]

log = logging.getLogger(__name__)

_STORAGE_CRS = f"EPSG:{STORAGE_EPSG}"
_KEY_PREFIX = "sg"
_SKIP = ("id", "properties", "geom")

# ------------------------------------------------------------------ value conversion

_NULL = "\\N"  # NULL in COPY text format


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _kind(column: Any) -> str:
    if isinstance(column.type, Boolean):
        return "bool"
    if isinstance(column.type, Integer):
        return "int"
    if isinstance(column.type, Float):
        return "float"
    return "text"


def _typed_columns(table: Table) -> dict[str, str]:
    """Column name -> kind for the plain (non-id, non-JSON, non-geometry) columns."""
    return {c.name: _kind(c) for c in table.columns if c.name not in _SKIP}


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0", ""}
_EXPECTED = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true/false",
    "text": "text",
}


def _bad_value(value: Any, kind: str, where: str) -> InputError:
    msg = (
        f"{where} holds {value!r}, which is not {_EXPECTED[kind]}; fix the value "
        "(or drop the row) before saving"
    )
    return InputError(msg)


def _bool_value(value: Any, where: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _bad_value(value, "bool", where)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escape(strings: pd.Series) -> pd.Series:
    """COPY text-format escaping of a string Series (backslash, tab, newlines)."""
    values = strings.tolist()
    joined = "".join(values)
    if not any(ch in joined for ch in "\\\t\n\r"):
        return pd.Series(values, index=strings.index, dtype=object)
    return pd.Series(
        [v.translate(_ESCAPES) for v in values], index=strings.index, dtype=object
    )


def _copy_column(values: pd.Series, kind: str, where: str) -> list[str]:
    """One column as COPY text values, checked against the column's kind.

    Vectorised with pandas: about a million values per second.
    """
    series = pd.Series(values.to_numpy(dtype=object), dtype=object)
    missing = pd.isna(series).to_numpy()
    present = series[~missing]
    if kind == "text":
        if pd.api.types.is_float_dtype(values.dtype):
            # ids that went through a float column (NaN elsewhere): 12.0 -> "12"
            present = present.map(lambda v: int(v) if float(v).is_integer() else v)
        out = _escape(present.astype(str))
    elif kind in ("int", "float"):
        if present.map(lambda v: isinstance(v, bool | np.bool_)).any():
            bad = present[present.map(lambda v: isinstance(v, bool | np.bool_))]
            raise _bad_value(bad.iloc[0], kind, where)
        numbers = pd.to_numeric(present, errors="coerce")
        bad = numbers.isna()
        if kind == "int":
            bad |= numbers.notna() & (numbers % 1 != 0)
        if bad.any():
            raise _bad_value(present[bad].iloc[0], kind, where)
        if kind == "int":
            out = numbers.astype("int64").astype(str)
        else:
            out = numbers.astype("float64").map(repr)
    else:
        out = present.map(lambda v: "t" if _bool_value(v, where) else "f")
    result = pd.Series(_NULL, index=series.index, dtype=object)
    result[~missing] = out.to_numpy(dtype=object)
    return result.tolist()


def _jsonable(value: Any) -> Any:
    """A JSON-serialisable copy of ``value`` (NaN -> null, numpy -> python...)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | np.ndarray | pd.Series):
        return [_jsonable(v) for v in value]
    if _missing(value):
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, shapely.Geometry):
        return value.wkt
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, allow_nan=False)


def _json_column(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` as one JSON object per row, COPY-escaped."""
    if frame.shape[1] == 0:
        return ["{}"] * len(frame)
    objects = [c for c in frame.columns if frame[c].dtype == object]
    simple = not any(
        frame[c]
        .map(lambda v: isinstance(v, dict | list | tuple | shapely.Geometry))
        .any()
        for c in objects
    )
    if simple:
        # pandas' C serialiser: NaN -> null, numpy scalars, ISO dates; ~10x json.
        text_ = frame.reset_index(drop=True).to_json(
            orient="records",
            lines=True,
            force_ascii=False,
            date_format="iso",
            double_precision=15,
            default_handler=str,
        )
        lines = pd.Series(text_.splitlines(), dtype=object)
    else:
        lines = pd.Series([_json(r) for r in frame.to_dict("records")], dtype=object)
    return _escape(lines).tolist()


def _hex_ewkb(geoms: Sequence[Any], where: str, *, nullable: bool) -> list[str]:
    arr = np.array(geoms, dtype=object, copy=True)  # never touch the caller's data
    empty = shapely.is_missing(arr) | shapely.is_empty(arr)
    if empty.any() and not nullable:
        msg = (
            f"{where} has {int(empty.sum())} missing or empty geometries; drop or "
            "repair those rows before saving"
        )
        raise InvalidGeometryError(msg)
    arr[empty] = None
    wkb = shapely.to_wkb(
        shapely.set_srid(arr, STORAGE_EPSG), hex=True, include_srid=True
    )
    return [_NULL if e else w for e, w in zip(empty, wkb, strict=True)]


def _to_storage(frame: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    crs = require_crs(frame, name)
    if crs.to_epsg() == STORAGE_EPSG:
        return frame
    return frame.to_crs(STORAGE_EPSG)


# -------------------------------------------------------------------------- bulk I/O


def _translate_db_error(err: Exception, where: str) -> Exception:
    """A spatialgrid error for a driver error raised while writing ``where``."""
    orig = getattr(err, "orig", err)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    detail = (getattr(diag, "message_detail", None) or "").strip()
    primary = (getattr(diag, "message_primary", None) or str(orig)).strip()
    text_ = f"{primary} {detail}".strip()
    if code == "23505":
        msg = f"{where}: duplicate id ({text_}); ids must be unique"
        return ConflictError(msg)
    if code == "23514":
        msg = f"{where}: a value breaks a rule of the table ({text_})"
        return InvalidGeometryError(msg) if "geom" in text_ else InputError(msg)
    if code is not None and code.startswith(("22", "23")):
        msg = f"{where}: invalid value ({text_})"
        return InputError(msg)
    msg = f"{where}: the database refused the write ({text_})"
    return DatabaseError(msg)


def _bulk_insert(
    session: Session,
    table: Table,
    columns: Sequence[str],
    data: Sequence[Sequence[str]],
    *,
    where: str,
) -> None:
    """COPY column-major, already COPY-escaped ``data`` into ``table``.

    Uses the session's own connection, hence the caller's transaction.
    """
    if not data or not data[0]:
        return
    session.flush()
    dbapi = session.connection().connection.driver_connection
    payload = "\n".join(map("\t".join, zip(*data, strict=True))) + "\n"
    cols = ", ".join(f'"{c}"' for c in columns)
    sql = f'COPY "{table.name}" ({cols}) FROM STDIN'
    cursor = dbapi.cursor()  # type: ignore[union-attr]
    try:
        if hasattr(cursor, "copy_expert"):  # psycopg2
            cursor.copy_expert(sql, io.StringIO(payload))
        elif hasattr(cursor, "copy"):  # psycopg 3
            with cursor.copy(sql) as copy:
                copy.write(payload)
        else:
            msg = (
                "saving layers needs a driver with COPY support; use a "
                "postgresql+psycopg2:// (or +psycopg) URL"
            )
            raise DatabaseError(msg)
    except DatabaseError:
        raise
    except Exception as err:
        if hasattr(err, "pgcode") or hasattr(err, "sqlstate"):
            raise _translate_db_error(err, where) from err
        raise
    finally:
        cursor.close()


def _frame_rows(
    frame: gpd.GeoDataFrame | pd.DataFrame,
    typed: dict[str, str],
    *,
    where: str,
    geometry: bool = True,
    nullable_geometry: bool = False,
    fixed: dict[str, Any] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """Column names and column-major COPY text for :func:`_bulk_insert`."""
    fixed = fixed or {}
    n = len(frame)
    geom_name = frame.geometry.name if geometry else None
    present = [c for c in typed if c in frame.columns and c not in fixed]
    extras = [c for c in frame.columns if c not in typed and c != geom_name]
    data = [[str(v)] * n for v in fixed.values()]
    data += [_copy_column(frame[c], typed[c], f"{where} column {c!r}") for c in present]
    data.append(_json_column(pd.DataFrame(frame[extras])))
    columns = [*fixed, *present, "properties"]
    if geometry:
        geoms = frame.geometry.to_numpy()
        data.append(_hex_ewkb(geoms, where, nullable=nullable_geometry))
        columns.append("geom")
    return columns, data


def _frame_from_rows(
    rows: Sequence[Any],
    typed: dict[str, str],
    order: Sequence[str],
    *,
    geometry: bool = True,
) -> pd.DataFrame | gpd.GeoDataFrame:
    """Rows of ``typed`` columns (+ properties, + wkb) back to a (Geo)DataFrame."""
    columns: dict[str, Any] = {}
    names = [*order, *[c for c in typed if c not in order]]
    for i, name in enumerate(typed):
        values = [r[i] for r in rows]
        kind = typed[name]
        has_null = any(v is None for v in values)
        if kind == "int":
            columns[name] = pd.array(values, dtype="Int64" if has_null else "int64")
        elif kind == "bool":
            columns[name] = pd.array(values, dtype="boolean" if has_null else "bool")
        elif kind == "float":
            columns[name] = pd.array(
                [np.nan if v is None else v for v in values], dtype="float64"
            )
        else:
            columns[name] = pd.array(values, dtype=object)
    n_typed = len(typed)
    props = [r[n_typed] or "{}" for r in rows]  # JSON text (properties::text)
    if any(p != "{}" for p in props):
        # One C-parsed JSON-lines read instead of json.loads per row.
        extras = pd.read_json(
            io.StringIO("\n".join(props)),
            lines=True,
            orient="records",
            dtype=False,
            precise_float=True,
        )
        for key in extras.columns:
            if str(key) not in columns:
                columns[str(key)] = extras[key].to_numpy()
                names.append(str(key))
    frame = pd.DataFrame({n: columns[n] for n in names}, index=pd.RangeIndex(len(rows)))
    if not geometry:
        return frame
    wkb = [None if r[n_typed + 1] is None else bytes(r[n_typed + 1]) for r in rows]
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object))
    return gpd.GeoDataFrame(
        frame, geometry=gpd.GeoSeries(geoms, crs=_STORAGE_CRS), crs=_STORAGE_CRS
    )


# ------------------------------------------------------------------------ city layers


def _layer_table(layer: str) -> Table:
    if layer not in LAYER_MODELS:
        msg = f"layer {layer!r} does not exist; choose one of {list(LAYERS)}"
        raise NotFoundError(msg)
    return LAYER_MODELS[layer].__table__  # type: ignore[return-value]


def _check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
    except (TypeError, ValueError) as err:
        msg = f"bbox {bbox!r} must be four numbers (min_lon, min_lat, max_lon, max_lat)"
        raise InputError(msg) from err
    if not (minx <= maxx and miny <= maxy):
        msg = f"bbox {bbox!r} has min > max; order is (min_lon, min_lat, max_lon, max_lat)"
        raise InputError(msg)
    return minx, miny, maxx, maxy


def _bbox_filter(table: Table, bbox: Sequence[float]) -> Any:
    minx, miny, maxx, maxy = _check_bbox(bbox)
    envelope = func.ST_MakeEnvelope(minx, miny, maxx, maxy, STORAGE_EPSG)
    return func.ST_Intersects(table.c.geom, envelope)


def save_city(
    city: City,
    *,
    session: Session,
    replace: bool = True,
    progress: ProgressCallback | None = None,
) -> dict[str, int]:
    """Store every layer of ``city`` (reprojected to EPSG:4490).

    Parameters
    ----------
    city
        The city; validated first (required columns, one CRS).
    session
        The caller's session; nothing is committed here.
    replace
        Delete the stored city first (grid plans are kept). With ``False`` the
        layers are appended and duplicate ids raise :class:`ConflictError`.
    progress
        Called as ``progress("save city", layers_done, n_layers)``.

    Returns
    -------
    dict
        Rows written per layer.

    Raises
    ------
    InputError, InvalidGeometryError, ConflictError
        A value does not fit its column, a geometry is of the wrong type or
        missing, or an id is duplicated. The caller must roll back; what was
        written before the failure is then undone.
    """
    city.validate()
    counts: dict[str, int] = {}
    if replace:
        # TRUNCATE is transactional in PostgreSQL (undone by the caller's
        # rollback) and, unlike DELETE, leaves no dead rows behind; it locks the
        # layer tables until the caller commits, which suits a rare import.
        tables = ", ".join(f'"{_layer_table(layer).name}"' for layer in LAYERS)
        session.execute(text(f'TRUNCATE {tables}, "city_info"'))
    for i, (layer, frame) in enumerate(city.layers().items()):
        table = _layer_table(layer)
        stored = _to_storage(frame, layer)
        geom = table.c.geom
        columns, data = _frame_rows(
            stored,
            _typed_columns(table),
            where=f"layer {layer!r}",
            nullable_geometry=bool(geom.nullable),
        )
        _bulk_insert(session, table, columns, data, where=f"layer {layer!r}")
        counts[layer] = len(stored)
        if progress is not None:
            progress("save city", i + 1, len(LAYERS))
    info = {
        "name": city.name,
        "admin_code": city.admin_code,
        "source_crs": epsg_or_wkt(city.crs) if city.crs is not None else None,
        "report": _jsonable(city.report),
        "saved_at": datetime.now(UTC),
    }
    existing = session.get(CityInfo, 1)
    if existing is None:
        session.add(CityInfo(id=1, **info))
    else:
        for key, value in info.items():
            setattr(existing, key, value)
    session.flush()
    log.info("saved city %r: %s", city.name, counts)
    return counts


def load_layer(
    layer: str,
    *,
    session: Session,
    bbox: tuple[float, float, float, float] | None = None,
    limit: int | None = None,
    offset: int = 0,
    equals: dict[str, Any] | None = None,
) -> gpd.GeoDataFrame:
    """One stored layer as a GeoDataFrame in EPSG:4490.

    Parameters
    ----------
    layer
        A name from :data:`spatialgrid.city.LAYERS`.
    session
        The caller's session.
    bbox
        ``(min_lon, min_lat, max_lon, max_lat)`` in EPSG:4490; features whose
        geometry intersects it.
    limit, offset
        Paging, in insertion order.
    equals
        ``{column: value}``: only features whose stored column equals the value
        (filtered in the database), e.g. ``{"community_code": "421002001001"}``;
        a list, tuple or set of values matches any of them (an empty one
        matches nothing).

    Returns
    -------
    geopandas.GeoDataFrame
        The :data:`~spatialgrid.city.LAYER_COLUMNS` of the layer first, then other
        stored columns and the extra columns saved in ``properties``.

    Raises
    ------
    InputError
        ``equals`` names a column the layer does not store as a column.
    """
    table = _layer_table(layer)
    typed = _typed_columns(table)
    for col in equals or {}:
        if col not in typed:
            msg = f"layer {layer!r} cannot be filtered on {col!r}; columns: {typed}"
            raise InputError(msg)
    stmt = select(
        *[table.c[c] for c in typed],
        cast(table.c.properties, Text),
        type_coerce(func.ST_AsEWKB(table.c.geom), LargeBinary),
    ).order_by(table.c.id)
    if bbox is not None:
        stmt = stmt.where(_bbox_filter(table, bbox))
    for col, value in (equals or {}).items():
        many = isinstance(value, (list, tuple, set, frozenset))
        # PostgreSQL text never holds NUL: such a value matches nothing.
        values = [
            v
            for v in (value if many else [value])
            if not (isinstance(v, str) and "\x00" in v)
        ]
        if not values:
            stmt = stmt.where(false())
        elif many:
            stmt = stmt.where(table.c[col].in_(values))
        else:
            stmt = stmt.where(table.c[col] == values[0])
    if offset:
        stmt = stmt.offset(int(offset))
    if limit is not None:
        stmt = stmt.limit(int(limit))
    rows = session.execute(stmt).all()
    frame = _frame_from_rows(rows, typed, LAYER_COLUMNS[layer])
    assert isinstance(frame, gpd.GeoDataFrame)
    return frame


def count_layer(
    layer: str,
    *,
    session: Session,
    bbox: tuple[float, float, float, float] | None = None,
) -> int:
    """Number of stored features of ``layer`` (intersecting ``bbox`` if given)."""
    table = _layer_table(layer)
    stmt = select(func.count()).select_from(table)
    if bbox is not None:
        stmt = stmt.where(_bbox_filter(table, bbox))
    return int(session.execute(stmt).scalar_one())


def load_city(*, session: Session) -> City:
    """The stored city, every layer in EPSG:4490.

    Raises
    ------
    NotFoundError
        No city was saved.
    """
    info = session.get(CityInfo, 1)
    if info is None:
        msg = (
            "no city is stored in the database; import one first "
            "(`spatialgrid import osm FILE` or repository.save_city)"
        )
        raise NotFoundError(msg)
    layers = {layer: load_layer(layer, session=session) for layer in LAYERS}
    return City(
        **layers,
        name=info.name,
        admin_code=info.admin_code,
        report=dict(info.report or {}),
    )


# ------------------------------------------------------------------------ grid plans


def _aware(moment: datetime | None) -> datetime:
    """``moment`` as an aware datetime; naive values are taken as UTC."""
    if moment is None:
        return datetime.now(UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _get_plan(plan_id: int, session: Session, *, lock: bool = False) -> GridPlan:
    plan = session.get(GridPlan, int(plan_id), with_for_update=lock)
    if plan is None:
        msg = f"grid plan {plan_id} does not exist; list plans with list_plans()"
        raise NotFoundError(msg)
    return plan


def _multipolygons(geoms: Sequence[Any], where: str) -> list[Any]:
    out = []
    for geom in geoms:
        if geom is not None and geom.geom_type == "Polygon":
            out.append(shapely.MultiPolygon([geom]))
        elif geom is None or geom.geom_type == "MultiPolygon":
            out.append(geom)
        else:
            msg = f"{where} has a {geom.geom_type}; grids must be (Multi)Polygons"
            raise InvalidGeometryError(msg)
    return out


def create_plan(
    grids: gpd.GeoDataFrame,
    assignments: pd.DataFrame,
    *,
    session: Session,
    name: str,
    parameters: dict[str, Any],
    diagnostics: pd.DataFrame | None = None,
    metrics: dict[str, Any] | None = None,
) -> int:
    """Store a partition result as a new ``draft`` plan; return its id.

    Parameters
    ----------
    grids
        ``grid_code`` (unique) plus, usually, ``community_code``, ``households``,
        ``n_blocks``, ``flags`` and polygon geometry, in any CRS.
    assignments
        ``block_id`` and ``grid_code`` per block (or block part: ``part_id``);
        other columns are kept.
    session
        The caller's session.
    name
        Human name of the plan.
    parameters
        The partition parameters (JSON-serialisable), recorded with the plan.
    diagnostics
        Per-community diagnostics (feasibility, reasons), stored as JSON records.
    metrics
        Summary numbers of the run.

    Raises
    ------
    MissingColumnError
        ``grids`` lacks ``grid_code`` or ``assignments`` lacks its columns.
    InputError
        An assignment names a grid code that is not in ``grids``.
    ConflictError
        A grid code appears twice.
    """
    for frame, cols, label in (
        (grids, ("grid_code",), "grids"),
        (assignments, ("block_id", "grid_code"), "assignments"),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            msg = f"{label!r} lacks column(s) {missing}; it has {list(frame.columns)}"
            raise MissingColumnError(msg)
    known = set(grids["grid_code"].astype(str))
    unknown = sorted(set(assignments["grid_code"].astype(str)) - known)
    if unknown:
        msg = (
            f"assignments name grid codes {unknown[:5]} that are not in 'grids'; "
            "pass the grids and assignments of the same partition result"
        )
        raise InputError(msg)
    plan = GridPlan(
        name=name,
        status="draft",
        parameters=_jsonable(dict(parameters)),
        diagnostics=_jsonable(
            [] if diagnostics is None else diagnostics.to_dict("records")
        ),
        metrics=_jsonable(dict(metrics or {})),
    )
    session.add(plan)
    session.flush()
    stored = _to_storage(grids, "grids").copy()
    stored = stored.set_geometry(
        _multipolygons(stored.geometry.tolist(), "'grids'"), crs=_STORAGE_CRS
    )
    grid_table: Table = Grid.__table__  # type: ignore[assignment]
    typed = {k: v for k, v in _typed_columns(grid_table).items() if k not in ("flags",)}
    if "flags" not in stored.columns:
        stored["flags"] = [[] for _ in range(len(stored))]
    flags = pd.Series(
        [_json([] if _missing_obj(f) else f) for f in stored["flags"]], dtype=object
    )
    columns, data = _frame_rows(
        stored.drop(columns=["flags"]),
        typed,
        where="'grids'",
        fixed={"plan_id": plan.id},
    )
    columns.append("flags")
    data.append(_escape(flags).tolist())
    _bulk_insert(session, grid_table, columns, data, where="'grids'")
    assign_table: Table = PlanAssignment.__table__  # type: ignore[assignment]
    columns, data = _frame_rows(
        assignments,
        _typed_columns(assign_table),
        where="'assignments'",
        geometry=False,
        fixed={"plan_id": plan.id},
    )
    _bulk_insert(session, assign_table, columns, data, where="'assignments'")
    log.info("created draft plan %d (%s): %d grids", plan.id, name, len(grids))
    return int(plan.id)


def _missing_obj(value: Any) -> bool:
    return not isinstance(value, list | dict | tuple | np.ndarray) and _missing(value)


def activate_plan(
    plan_id: int, *, session: Session, effective_from: datetime | None = None
) -> None:
    """Put a draft plan in force; the plan in force until then is retired.

    Parameters
    ----------
    plan_id
        A ``draft`` plan.
    session
        The caller's session.
    effective_from
        When the plan takes effect (default: now; naive datetimes are UTC). The
        previously active plan gets ``effective_to = effective_from``.

    Raises
    ------
    NotFoundError
        No such plan.
    ConflictError
        The plan is not a draft, or ``effective_from`` lies before the start of
        the plan currently in force.
    """
    start = _aware(effective_from)
    plan = _get_plan(plan_id, session, lock=True)
    if plan.status != "draft":
        msg = (
            f"grid plan {plan_id} is {plan.status}; only draft plans can be "
            "activated (create a new plan to bring old boundaries back)"
        )
        raise ConflictError(msg)
    current = session.execute(
        select(GridPlan).where(GridPlan.status == "active").with_for_update()
    ).scalar_one_or_none()
    if current is not None:
        if current.effective_from is not None and start < current.effective_from:
            msg = (
                f"effective_from {start.isoformat()} lies before the start "
                f"{current.effective_from.isoformat()} of active plan {current.id}; "
                "pick a later date"
            )
            raise ConflictError(msg)
        session.execute(
            update(GridPlan)
            .where(GridPlan.id == current.id)
            .values(status="retired", effective_to=start)
        )
    try:
        session.execute(
            update(GridPlan)
            .where(GridPlan.id == plan.id)
            .values(status="active", effective_from=start, effective_to=None)
        )
    except IntegrityError as err:  # a concurrent activation won the race
        msg = f"another plan was activated at the same time as plan {plan_id}; retry"
        raise ConflictError(msg) from err
    session.expire_all()
    log.info("activated plan %d from %s", plan_id, start.isoformat())


def active_plan_id(*, session: Session, at: datetime | None = None) -> int:
    """Id of the plan in force at ``at`` (default: now).

    Raises
    ------
    NotFoundError
        No plan was in force then.
    """
    moment = _aware(at)
    stmt = (
        select(GridPlan.id)
        .where(
            GridPlan.status.in_(("active", "retired")),
            GridPlan.effective_from <= moment,
            (GridPlan.effective_to.is_(None)) | (GridPlan.effective_to > moment),
        )
        .order_by(GridPlan.effective_from.desc(), GridPlan.id.desc())
        .limit(1)
    )
    found = session.execute(stmt).scalar_one_or_none()
    if found is None:
        msg = (
            f"no grid plan was in force at {moment.isoformat()}; activate one with "
            "activate_plan() (or `spatialgrid plans activate`)"
        )
        raise NotFoundError(msg)
    return int(found)


def list_plans(*, session: Session) -> pd.DataFrame:
    """All plans, oldest first: id, name, status, dates, grid count, households."""
    counts = (
        select(
            Grid.plan_id,
            func.count().label("n_grids"),
            func.coalesce(func.sum(Grid.households), 0).label("households"),
        )
        .group_by(Grid.plan_id)
        .subquery()
    )
    stmt = (
        select(
            GridPlan.id,
            GridPlan.name,
            GridPlan.status,
            GridPlan.created_at,
            GridPlan.effective_from,
            GridPlan.effective_to,
            func.coalesce(counts.c.n_grids, 0).label("n_grids"),
            func.coalesce(counts.c.households, 0).label("households"),
            GridPlan.parameters,
        )
        .outerjoin(counts, counts.c.plan_id == GridPlan.id)
        .order_by(GridPlan.id)
    )
    rows = session.execute(stmt).all()
    columns = [
        "id",
        "name",
        "status",
        "created_at",
        "effective_from",
        "effective_to",
        "n_grids",
        "households",
        "parameters",
    ]
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
    for col in ("id", "n_grids", "households"):
        frame[col] = frame[col].astype("int64")
    return frame


@dataclass(frozen=True)
class PlanInfo:
    """A plan's metadata, parameters and diagnostics."""

    id: int
    name: str
    status: str
    created_at: datetime
    effective_from: datetime | None
    effective_to: datetime | None
    parameters: dict[str, Any]
    diagnostics: pd.DataFrame
    metrics: dict[str, Any]


def get_plan(plan_id: int, *, session: Session) -> PlanInfo:
    """One plan's metadata (:class:`PlanInfo`); NotFoundError if absent."""
    plan = _get_plan(plan_id, session)
    return PlanInfo(
        id=int(plan.id),
        name=plan.name,
        status=plan.status,
        created_at=plan.created_at,
        effective_from=plan.effective_from,
        effective_to=plan.effective_to,
        parameters=dict(plan.parameters or {}),
        diagnostics=pd.DataFrame(list(plan.diagnostics or [])),
        metrics=dict(plan.metrics or {}),
    )


def _plan_grid_filters(
    table: Table,
    plan_id: int,
    bbox: Sequence[float] | None,
    community: str | None,
) -> list[Any]:
    where = [table.c.plan_id == int(plan_id)]
    if bbox is not None:
        where.append(_bbox_filter(table, bbox))
    if community is not None:
        if "\x00" in community:
            where.append(false())  # PostgreSQL text never holds NUL
        else:
            where.append(table.c.community_code == community)
    return where


def load_plan_grids(
    plan_id: int,
    *,
    session: Session,
    bbox: Sequence[float] | None = None,
    community: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> gpd.GeoDataFrame:
    """The grids of a plan (EPSG:4490, MultiPolygons), ordered by grid code.

    Columns: grid_code, community_code, households, n_blocks, flags, worker_id,
    any extra columns saved with them, geometry. ``bbox`` (lon/lat in
    EPSG:4490), ``community`` and ``limit``/``offset`` select in the database.
    """
    _get_plan(plan_id, session)
    table: Table = Grid.__table__  # type: ignore[assignment]
    typed = {
        k: v for k, v in _typed_columns(table).items() if k not in ("plan_id", "flags")
    }
    stmt = (
        select(
            *[table.c[c] for c in typed],
            cast(table.c.properties, Text),
            type_coerce(func.ST_AsEWKB(table.c.geom), LargeBinary),
            table.c.flags,
        )
        .where(*_plan_grid_filters(table, plan_id, bbox, community))
        .order_by(table.c.grid_code)
    )
    if offset:
        stmt = stmt.offset(int(offset))
    if limit is not None:
        stmt = stmt.limit(int(limit))
    rows = session.execute(stmt).all()
    frame = _frame_from_rows(
        rows, typed, ("grid_code", "community_code", "households", "n_blocks")
    )
    frame.insert(4, "flags", pd.array([r[-1] for r in rows], dtype=object))
    assert isinstance(frame, gpd.GeoDataFrame)
    return frame


def count_plan_grids(
    plan_id: int,
    *,
    session: Session,
    bbox: Sequence[float] | None = None,
    community: str | None = None,
) -> int:
    """Number of grids of a plan (intersecting ``bbox``, of ``community``)."""
    _get_plan(plan_id, session)
    table: Table = Grid.__table__  # type: ignore[assignment]
    stmt = (
        select(func.count())
        .select_from(table)
        .where(*_plan_grid_filters(table, plan_id, bbox, community))
    )
    return int(session.execute(stmt).scalar_one())


def load_plan_assignments(plan_id: int, *, session: Session) -> pd.DataFrame:
    """Block -> grid assignments of a plan: block_id, grid_code, part_id, extras."""
    _get_plan(plan_id, session)
    table: Table = PlanAssignment.__table__  # type: ignore[assignment]
    typed = {k: v for k, v in _typed_columns(table).items() if k != "plan_id"}
    stmt = (
        select(*[table.c[c] for c in typed], cast(table.c.properties, Text))
        .where(table.c.plan_id == int(plan_id))
        .order_by(table.c.id)
    )
    rows = session.execute(stmt).all()
    return _frame_from_rows(
        rows, typed, ("block_id", "grid_code", "part_id"), geometry=False
    )


# ----------------------------------------------------------------------- grid workers


def create_worker(
    *,
    session: Session,
    name: str,
    phone: str | None = None,
    employee_no: str | None = None,
) -> int:
    """Register a grid worker (网格员); return the id."""
    worker = GridWorker(name=name, phone=phone, employee_no=employee_no)
    try:
        with session.begin_nested():  # a duplicate must not spoil the caller's txn
            session.add(worker)
    except IntegrityError as err:
        msg = f"a grid worker with employee_no {employee_no!r} already exists"
        raise ConflictError(msg) from err
    return int(worker.id)


def list_workers(*, session: Session) -> pd.DataFrame:
    """All grid workers: id, name, phone, employee_no, active."""
    rows = session.execute(
        select(
            GridWorker.id,
            GridWorker.name,
            GridWorker.phone,
            GridWorker.employee_no,
            GridWorker.active,
        ).order_by(GridWorker.id)
    ).all()
    return pd.DataFrame(
        [tuple(r) for r in rows],
        columns=["id", "name", "phone", "employee_no", "active"],
    )


def assign_worker(
    plan_id: int, grid_code: str, worker_id: int | None, *, session: Session
) -> None:
    """Make ``worker_id`` responsible for grid ``grid_code`` of a plan (None clears)."""
    _get_plan(plan_id, session)
    if worker_id is not None and session.get(GridWorker, int(worker_id)) is None:
        msg = f"grid worker {worker_id} does not exist"
        raise NotFoundError(msg)
    result = session.execute(
        update(Grid)
        .where(Grid.plan_id == int(plan_id), Grid.grid_code == str(grid_code))
        .values(worker_id=worker_id)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        msg = f"grid {grid_code!r} is not part of plan {plan_id}"
        raise NotFoundError(msg)


# -------------------------------------------------------------------------- API keys


@dataclass(frozen=True)
class ApiKeyInfo:
    """Who an API key belongs to (never the key itself)."""

    id: int
    name: str
    role: str
    created_at: datetime | None = None
    revoked_at: datetime | None = None


def _hash_key(salt: str, key: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + key.encode()).hexdigest()


def _info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=int(row.id),
        name=row.name,
        role=row.role,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_api_key(*, session: Session, role: str, name: str) -> str:
    """Create an API key for ``role``; return the plaintext key (shown only once).

    The key looks like ``sg_<12 hex prefix>_<43-char secret>``. Only the prefix
    (for lookup) and a salted SHA-256 of the whole key are stored.

    Raises
    ------
    InputError
        ``role`` is not one of :data:`spatialgrid.roles.ROLES` or ``name`` is empty.
    """
    if role not in ROLES:
        msg = f"role {role!r} is not one of {list(ROLES)}"
        raise InputError(msg)
    if not name or not name.strip():
        msg = "name must be a non-empty label for the key (e.g. the person's name)"
        raise InputError(msg)
    prefix = secrets.token_hex(6)
    key = f"{_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    session.add(
        ApiKey(
            name=name.strip(),
            role=role,
            prefix=prefix,
            salt=salt,
            key_hash=_hash_key(salt, key),
        )
    )
    session.flush()
    return key


def authenticate_api_key(key: str, *, session: Session) -> ApiKeyInfo:
    """The owner of ``key``.

    Raises
    ------
    AuthError
        The key is malformed, unknown or revoked.
    """
    parts = (key or "").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != _KEY_PREFIX:
        msg = "malformed API key; keys look like sg_<prefix>_<secret>"
        raise AuthError(msg)
    row = session.execute(
        select(ApiKey).where(ApiKey.prefix == parts[1])
    ).scalar_one_or_none()
    if row is None or not hmac.compare_digest(
        row.key_hash, _hash_key(row.salt, key.strip())
    ):
        msg = "unknown API key"
        raise AuthError(msg)
    if row.revoked_at is not None:
        msg = f"API key {row.id} ({row.name}) was revoked at {row.revoked_at:%Y-%m-%d %H:%M}"
        raise AuthError(msg)
    return _info(row)


def list_api_keys(*, session: Session) -> list[ApiKeyInfo]:
    """Every API key (including revoked ones), oldest first."""
    rows = session.execute(select(ApiKey).order_by(ApiKey.id)).scalars().all()
    return [_info(r) for r in rows]


def revoke_api_key(key_id: int, *, session: Session) -> None:
    """Revoke a key from now on (revoking twice keeps the first time).

    Raises
    ------
    NotFoundError
        No key has this id.
    """
    row = session.get(ApiKey, int(key_id))
    if row is None:
        msg = f"API key {key_id} does not exist; see `spatialgrid keys list`"
        raise NotFoundError(msg)
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
