"""The controller contract: what any controller, shipped or a user's, must provide.

A controller acts for a fleet of N buildings (the whole fleet, or one shard of it),
one call per step::

    actions = controller.act(obs)      # obs: agents.fleet.observation.FleetObservation

- ``obs`` (:class:`agents.fleet.observation.FleetObservation`) holds arrays of shape (N,), one
  row per building in the order of :attr:`ControllerContext.names`: new demand
  ``demand_kwh`` (demand scale applied), ``backlog_kwh``, battery energy ``soc_kwh`` and
  capacity ``capacity_kwh``, ``price_per_kwh`` ($/kWh), PV yield ``pv_kwh``,
  ``hour_of_day``, the multipliers ``lam`` (lambda as the controller sees it: with grid
  constraints lambda_eff, $/kWh) and ``nu``, and ``battery_available_kwh`` (what the
  battery can deliver in this step). Read fields by name; new optional fields may be
  added.
- ``actions`` is an array of shape (N, 2), finite, each value in [0, 1]: column 0 is
  ``u_grid``, the share of the energy to serve (new demand plus backlog) bought from the
  grid, column 1 ``u_batt``, the share of the rest the battery serves
  (docs/equations.md); what neither serves is postponed to the backlog.

Optional, each checked by name:

- ``name`` (str): a short label (default: the class name);
- ``snapshot() -> dict[str, np.ndarray]`` and ``restore(snap)``: the controller's
  state, saved with every checkpoint so that ``cosim run --resume`` continues exactly;
  give both or neither;
- ``decisions() -> dict[str, pandas.DataFrame]``: tables written to ``decisions/`` at
  the end of a run (cosim.results.decisions).

A controller named in a scenario (``controller.kind: python``) is built as
``cls(context, **params)`` with a :class:`ControllerContext`; its forecast access is
``context.forecast`` (:class:`ControllerForecast`). docs/controllers.md is the guide.
Pure domain code: no mosaik.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from agents.fleet.building import FleetParams
from agents.fleet.observation import FleetObservation
from grid_models.errors import RunError

if TYPE_CHECKING:
    from agents.control.coupling import Forecast

#: Bounds of every action value; a value outside by more than ``ACTION_ATOL`` is an error.
ACTION_LOW = 0.0
ACTION_HIGH = 1.0
#: Tolerance on the action bounds (rounding of a computed share); the building model clips.
ACTION_ATOL = 1e-9
#: The columns of an action row.
ACTION_NAMES = ("u_grid", "u_batt")


@runtime_checkable
class Controller(Protocol):
    """A fleet controller: one (N, 2) array of actions in [0, 1] per observation."""

    @property
    def name(self) -> str:
        """Short label of the controller."""

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Actions ``(u_grid, u_batt)`` for every building, shape (N, 2), in [0, 1]."""


@runtime_checkable
class StatefulController(Controller, Protocol):
    """A controller with state that a checkpoint saves (``snapshot``) and sets (``restore``)."""

    def snapshot(self) -> dict[str, np.ndarray]:
        """The controller's state as named arrays."""

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the state back to a :meth:`snapshot`."""


class ControllerError(RunError, ValueError):
    """A controller that breaks the contract: its class, its actions or an exception in it."""


@dataclass(frozen=True)
class ControllerForecast:
    """Read access to the forecast of the controller's buildings (perfect: the data).

    ``window(t, horizon)`` gives ``(demand_kwh (H, N), pv_kwh (H, N), price_per_kwh (H,))``
    for run steps ``t .. t+H-1``, columns in the order of the context's names.
    """

    forecast: Forecast
    index: np.ndarray  # the controller's buildings among the forecast's

    def window(self, t: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Demand and PV (kWh per step, (H, N)) and price ($/kWh, (H,)) of steps t..t+H-1.

        Raises:
            ValueError: if the forecast does not reach that far.
        """
        demand, pv, price = self.forecast.window(t, horizon)
        return demand[:, self.index], pv[:, self.index], price

    def steps_available(self, t: int) -> int:
        """How many steps from run step ``t`` on the forecast holds."""
        return self.forecast.steps_available(t)


@dataclass(frozen=True)
class ControllerContext:
    """What a controller named in a scenario is built with (``cls(context, **params)``).

    ``names`` are its buildings' ids, in the order of the observation's rows (a shard's
    when the fleet is sharded); ``params`` their physical parameters; ``dt_h`` the step
    in hours; ``n_steps`` the run's steps; ``limit_kwh`` the district limit c (kWh per
    step, the whole fleet's); ``seed`` the scenario's seed; ``forecast`` the data ahead.
    """

    names: tuple[str, ...]
    params: FleetParams
    dt_h: float
    n_steps: int
    limit_kwh: float
    seed: int
    forecast: ControllerForecast | None = None

    @property
    def n(self) -> int:
        """Number of buildings N."""
        return len(self.names)


def controller_name(controller: object) -> str:
    """The controller's ``name``, or its class name when it has none."""
    name = getattr(controller, "name", None)
    return name if isinstance(name, str) and name else type(controller).__name__


def contract_problems(controller: object) -> list[str]:
    """What ``controller`` lacks of the contract (empty: it complies)."""
    problems = []
    if not callable(getattr(controller, "act", None)):
        problems.append("has no method act(obs) -> (N, 2) actions")
    has = [callable(getattr(controller, m, None)) for m in ("snapshot", "restore")]
    if has[0] != has[1]:
        problems.append("has only one of snapshot() and restore(snap); give both (the state "
                        "saved with each checkpoint) or neither")
    name = getattr(controller, "name", None)
    if name is not None and not isinstance(name, str):
        problems.append(f"its name must be a str, got {type(name).__name__}")
    return problems


def check_controller(controller: object, what: str = "controller") -> None:
    """Raise :class:`ControllerError` naming ``what`` if ``controller`` breaks the contract."""
    problems = contract_problems(controller)
    if problems:
        raise ControllerError(f"{what} ({type(controller).__module__}."
                              f"{type(controller).__qualname__}) " + "; ".join(problems))


def checked_actions(actions: object, names: list[str] | tuple[str, ...], step: int,
                    controller: object, bounded: bool = True) -> np.ndarray:
    """``actions`` as a float (N, 2) array, or :class:`ControllerError` naming what is wrong.

    The message names the controller, the run step and, for a bad value, the building and
    the action column. ``bounded``: values must lie in [0, 1] (within ``ACTION_ATOL``).
    """
    n = len(names)
    where = f"controller {controller_name(controller)!r} at step {step}"
    try:
        arr = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ControllerError(f"{where}: actions must be a numeric (N, 2) = ({n}, 2) array of "
                              f"(u_grid, u_batt); got {type(actions).__name__} ({exc})") from None
    if arr.shape != (n, 2):
        raise ControllerError(f"{where}: actions must have shape (N, 2) = ({n}, 2), one row "
                              f"(u_grid, u_batt) per building; got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bounded:
        bad |= (arr < ACTION_LOW - ACTION_ATOL) | (arr > ACTION_HIGH + ACTION_ATOL)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        what = "finite and in [0, 1]" if bounded else "finite"
        raise ControllerError(f"{where}: building {names[i]!r}: {ACTION_NAMES[j]} = "
                              f"{float(arr[i, j])!r}; every action must be {what} "
                              f"({int(bad.sum())} bad value(s))")
    return arr


def checked_snapshot(snap: Any, controller: object) -> dict[str, np.ndarray]:
    """A controller's snapshot as named arrays, or :class:`ControllerError`."""
    if not isinstance(snap, dict) or not all(isinstance(k, str) for k in snap):
        raise ControllerError(f"controller {controller_name(controller)!r}: snapshot() must "
                              f"return a dict of str to arrays, got {type(snap).__name__}")
    try:
        return {k: np.asarray(v) for k, v in snap.items()}
    except (TypeError, ValueError) as exc:
        raise ControllerError(f"controller {controller_name(controller)!r}: snapshot() values "
                              f"must be arrays: {exc}") from None
