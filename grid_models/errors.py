"""Exceptions of the grid_models package.

Every error is a ``ValueError`` subclass that names the offending field and, where the
choices are finite, lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable


class GridModelError(ValueError):
    """Base class of all grid_models input errors."""


class FeederError(GridModelError):
    """An unknown or unreadable feeder source."""


class PlacementError(GridModelError):
    """An invalid building placement (unknown bus, wrong count, ...)."""


class BackgroundError(GridModelError):
    """Background profiles that cannot be built for this feeder or time window."""


class ConversionError(GridModelError):
    """A pandapower net holds elements that a backend cannot represent."""


class BackendError(GridModelError):
    """An unknown power-flow backend or backend option."""


class PowerFlowInputError(GridModelError):
    """Injections of the wrong shape or with non-finite values."""


def format_choices(choices: Iterable[object], limit: int = 60) -> str:
    """Render a list of valid choices for an error message, shortened when very long."""
    items = [str(c) for c in choices]
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"
