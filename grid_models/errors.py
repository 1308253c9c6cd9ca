"""The exceptions of fleetcosim: one root, two branches, and the grid_models errors.

Every error the three packages raise on purpose is a :class:`FleetcosimError`, in one of
two branches:

* :class:`InputError`: what the user gave is wrong (a scenario, among others one whose
  controller cannot be loaded, a recipe, feeder file, data file, policy file, a run
  directory that cannot be used...). The ``cosim`` command exits with 2.
* :class:`RunError`: a run that started failed (its results could not be written, a
  controller raised or broke the contract while it ran...). The ``cosim`` command exits
  with 1.

The root lives here because grid_models is the lowest layer: agents and cosim import it
from ``grid_models.errors``. Every error class keeps the built-in base it always had
(``ValueError`` or ``RuntimeError``) next to its branch, so ``except ValueError`` still
catches it. Input errors name the offending field and, where the choices are finite,
list the valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable


class FleetcosimError(Exception):
    """Root of every error that fleetcosim raises on purpose (catch this for all of them)."""


class InputError(FleetcosimError):
    """The user's input is wrong (the message names the file and the field); exit code 2."""


class RunError(FleetcosimError):
    """A run failed after it started (the message says what is kept); exit code 1."""


class GridModelError(InputError, ValueError):
    """Base class of all grid_models input errors."""


class FeederError(GridModelError):
    """An unknown or unreadable feeder source."""


class SupplyError(FeederError):
    """A feeder without an in-service external grid (nothing would be energised)."""


class FeederFileError(FeederError):
    """A feeder JSON file refused before pandapower reads it (size, syntax, unsafe objects)."""


class PlacementError(GridModelError):
    """An invalid building placement (unknown bus, wrong count, ...)."""


class IslandedBusError(PlacementError):
    """Buildings placed on buses that no in-service path connects to the external grid.

    ``positions`` are the offending buildings' positions in the placement, ``buses``
    their buses and ``reasons`` one short explanation per building (same order).
    """

    def __init__(self, message: str, positions: list[int], buses: list[int],
                 reasons: list[str]) -> None:
        super().__init__(message)
        self.positions = positions
        self.buses = buses
        self.reasons = reasons


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
