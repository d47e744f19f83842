"""Route modules, one resource each; every module exposes ``router``.

To add a resource, write ``api/routes/<name>.py`` with ``router = APIRouter(...)``
and add ``"<name>"`` to :data:`ROUTE_MODULES`; :func:`api.main.create_app`
includes them in this order.
"""

from __future__ import annotations

ROUTE_MODULES: tuple[str, ...] = (
    "health",
    "layers",
    "adjust",
    "plans",
    "coverage",
    "locate",
    "incidents",
    "open311",
    "kpi",
    "maps",
)
