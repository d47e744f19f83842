"""Exception and warning hierarchy of spatialgrid.

Every exception derives from :class:`SpatialgridError` *and* from the matching
built-in, so callers may catch either. No web or database imports here: the API
maps these classes to HTTP statuses in ``api/errors.py``.
"""

from __future__ import annotations


class SpatialgridError(Exception):
    """Base class of every error raised by spatialgrid."""


class InputError(SpatialgridError, ValueError):
    """Input data that breaks a documented contract."""


class MissingCRSError(InputError):
    """A GeoDataFrame or geometry came without a coordinate reference system."""


class CRSMismatchError(InputError):
    """Inputs that must share a CRS do not."""


class CoordinateRangeError(InputError):
    """Coordinates outside the valid range of their CRS (e.g. a lat/lon swap)."""


class InvalidGeometryError(InputError):
    """Geometries that are empty, invalid or of the wrong type."""


class MissingColumnError(SpatialgridError, KeyError):
    """A required column (or a column named in a mapping) is absent."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class EmptyInputError(InputError):
    """An input that must hold at least one feature is empty."""


class DataFormatError(SpatialgridError, ValueError):
    """A file that cannot be parsed (corrupt OSM, unreadable layer)."""


class InfeasiblePartitionError(SpatialgridError, ValueError):
    """A partition that cannot satisfy its hard rules and was asked to be strict."""


class CodeOverflowError(SpatialgridError, ValueError):
    """A grid sequence number does not fit the code scheme's width."""


class GeocodingError(SpatialgridError, RuntimeError):
    """A geocoding provider is misconfigured or unreachable."""


class NotFoundError(SpatialgridError, LookupError):
    """A requested object (plan, grid, incident, key) does not exist."""


class ConflictError(SpatialgridError, ValueError):
    """The request conflicts with the stored state (e.g. activating a retired plan)."""


class TransitionError(ConflictError):
    """An incident lifecycle transition that is not allowed from its current stage."""


class DatabaseError(SpatialgridError, RuntimeError):
    """The database cannot be reached, started or upgraded."""


class AuthError(SpatialgridError, PermissionError):
    """An API key is missing, unknown or revoked."""


class SpatialgridWarning(UserWarning):
    """Base class of spatialgrid warnings (data-quality issues; result still usable)."""


class DataQualityWarning(SpatialgridWarning):
    """Input data was usable but something was estimated, dropped or repaired."""


class InsufficientDataError(InputError):
    """Too few features for a statistic to mean anything (e.g. hot spots below 30 grids)."""


class AssetError(SpatialgridError, RuntimeError):
    """A map needs a front-end asset (script, style, font) that spatialgrid does not ship."""
