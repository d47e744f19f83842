"""API key roles: who may do what.

Roles are a set per endpoint, not a ladder (a planner may read everything, but a
grid worker's key must not redraw grids):

- ``planner``: imports cities, runs partitions, drafts and activates grid plans.
- ``operator``: command-centre staff; registers, dispatches and closes incidents.
- ``worker``: a grid worker (网格员) reporting incidents from the field.
- ``consumer``: read-only integrations (dashboards, other city systems).
"""

from __future__ import annotations

from typing import Final

ROLES: Final[tuple[str, ...]] = ("planner", "operator", "worker", "consumer")
"""Every role an API key may carry."""
