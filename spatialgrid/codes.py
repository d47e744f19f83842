"""Grid codes: fixed-width digit strings, numbered west→east, north→south.

A grid code is the 12-digit community code (6-digit GB/T 2260 admin code + 3-digit
subdistrict + 3-digit community) followed by a sequence number:

- ``"cjt213"`` (CJ/T 213): 2 digits, 14 in all, sequence 01–99;
- ``"db11"`` (Beijing DB11/T 2157-2023): 3 digits, 15 in all, sequence 001–999.

Sequence numbers run north→south by row band, west→east inside a band, so the same
grids always get the same codes. Running out of numbers is a
:class:`~spatialgrid.errors.CodeOverflowError`, never a wrap-around.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

import shapely

from spatialgrid.errors import CodeOverflowError, InputError

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Digits of the sequence number per scheme.
SCHEMES: dict[str, int] = {"cjt213": 2, "db11": 3}
COMMUNITY_CODE_DIGITS = 12


def sequence_digits(code_scheme: str) -> int:
    """Width of the sequence number of ``code_scheme`` (``"cjt213"`` or ``"db11"``)."""
    try:
        return SCHEMES[code_scheme]
    except KeyError:
        msg = (
            f"code_scheme={code_scheme!r} is unknown; use 'cjt213' (14-digit CJ/T 213 "
            "codes) or 'db11' (15-digit DB11/T 2157 codes)"
        )
        raise InputError(msg) from None


def check_community_code(community_code: str) -> str:
    """Return ``community_code`` if it is 12 digits, else raise :class:`InputError`."""
    code = str(community_code)
    if len(code) != COMMUNITY_CODE_DIGITS or not code.isdigit():
        msg = (
            f"community code {code!r} is not 12 digits (6-digit admin code + 3-digit "
            "subdistrict + 3-digit community); grid codes need it. Fix the community "
            "column or map your community ids to 12-digit codes first."
        )
        raise InputError(msg)
    return code


def spatial_order(geometries: Sequence[shapely.Geometry] | np.ndarray) -> np.ndarray:
    """Positions of ``geometries`` ordered north→south by row band, west→east in it.

    Each geometry is represented by its representative point (always inside). The
    row band height is the median height of the geometries' bounding boxes, counted
    down from the northernmost point, so grids of one "row" share a band even when
    their points wobble. Ties break on x, then y (north first), then position.

    Parameters
    ----------
    geometries
        Polygons in any CRS with y growing north (projected or lon/lat).

    Returns
    -------
    numpy.ndarray
        Integer positions in code order.
    """
    geoms = np.asarray(geometries, dtype=object)
    n = len(geoms)
    if n == 0:
        return np.zeros(0, dtype=int)
    pts = shapely.point_on_surface(geoms)
    x = shapely.get_x(pts)
    y = shapely.get_y(pts)
    bounds = shapely.bounds(geoms)
    heights = bounds[:, 3] - bounds[:, 1]
    band = float(np.median(heights)) if n > 1 else 1.0
    if not math.isfinite(band) or band <= 0:
        band = 1.0
    top = float(np.max(y))
    rows = np.floor((top - y) / band + 1e-9).astype(int)
    return np.lexsort((np.arange(n), -y, x, rows))


def grid_codes(
    community_code: str, n_grids: int, *, code_scheme: str = "cjt213"
) -> list[str]:
    """The codes of ``n_grids`` grids of one community, sequence 1..n.

    Raises
    ------
    CodeOverflowError
        When ``n_grids`` exceeds the scheme's last sequence number (99 or 999).
    InputError
        When ``community_code`` is not 12 digits or the scheme is unknown.
    """
    digits = sequence_digits(code_scheme)
    code = check_community_code(community_code)
    last = 10**digits - 1
    if n_grids > last:
        msg = (
            f"community {code} has {n_grids} grids but code_scheme={code_scheme!r} "
            f"numbers at most {last}; use code_scheme='db11' (3 digits) or raise "
            "max_households so fewer grids are needed"
        )
        raise CodeOverflowError(msg)
    return [f"{code}{seq:0{digits}d}" for seq in range(1, n_grids + 1)]


def assign_grid_codes(
    community_code: str,
    geometries: Sequence[shapely.Geometry] | np.ndarray,
    *,
    code_scheme: str = "cjt213",
) -> list[str]:
    """Codes for the grids of one community, aligned with ``geometries``.

    The grid first in :func:`spatial_order` (north-west) gets sequence 1.
    """
    order = spatial_order(geometries)
    codes = grid_codes(community_code, len(order), code_scheme=code_scheme)
    out = [""] * len(order)
    for seq, pos in enumerate(order):
        out[int(pos)] = codes[seq]
    return out
