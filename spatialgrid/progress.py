"""Progress reporting for long work, without printing from the library.

Long-running library functions take ``progress: ProgressCallback | None``; they call
it as ``progress(stage, done, total)`` (``total`` may be ``None`` when unknown). The
CLI turns these calls into rich progress bars; notebooks may pass ``None``.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, "int | None"], None]


def report(
    progress: ProgressCallback | None, stage: str, done: int, total: int | None
) -> None:
    """Call ``progress`` if given; a no-op otherwise."""
    if progress is not None:
        progress(stage, done, total)
