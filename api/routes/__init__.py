"""Route modules, one resource each; every module exposes ``router``.

To add a resource, write ``api/routes/<name>.py`` with ``router = APIRouter(...)``
and add ``"<name>"`` to :data:`ROUTE_MODULES`; :func:`api.main.create_app`
includes them in this order.
"""

from __future__ import annotations

ROUTE_MODULES: tuple[str, ...] = (
    "health",
    "locate",  # first: the hot single-point lookups match after one router
    "layers",
    "adjust",
    "plans",
    "coverage",
    "incidents",
    "open311",
    "kpi",
    "maps",
)
