"""The feeder of a run: power flow, building buses, background on the data's calendar.

A :class:`GridModel` turns the buildings' net consumption into bus injections (Q from a
power factor, every building's power times ``fleet_scale``), sets the background of the
step and solves the AC power flow, one step (:meth:`GridModel.solve`) or many steps at
once (:meth:`GridModel.solve_batch`). Both give the same numbers to the solver's
tolerance (pandapower: identical, it is the same warm-started sequence of ``runpp``;
power-grid-model: one batch calculation, flat start per step like a single step).

Steps are positions in the run: step ``t`` is data row ``start_row + t`` and uses row
``t`` of :attr:`GridModel.background`.

The calendar: the CityLearn 2022 files start at "Month 7, Hour 24" (the last hour of 31
July); row ``r`` is hour :func:`hour_of_year` ``(r)`` of a non-leap year, and SimBench
background profiles are taken for the same hours, wrapping around the end of the year
(:func:`calendar_background`).

Pure domain code: no mosaik, no ``cosim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from grid_models.background import BackgroundProfiles, background_profiles
from grid_models.errors import BackgroundError, GridModelError, PlacementError
from grid_models.placement import sum_by_bus
from grid_models.powerflow.interface import BatchGridResult, GridResult, PowerFlow, make_powerflow

if TYPE_CHECKING:
    from pandapower.auxiliary import pandapowerNet

HOURS_PER_YEAR = 8760
#: CityLearn 2022 row 0 is "Month 7, Hour 24" (the last hour of 31 July, 0-based
#: hour-of-year 5087 of a non-leap year); background profiles follow the same hours.
CITYLEARN_ROW0_HOUR_OF_YEAR = 212 * 24 - 1

_BACKGROUND_FIELDS = ("load_p_mw", "load_q_mvar", "sgen_p_mw", "sgen_q_mvar")


def hour_of_year(row: int) -> int:
    """0-based hour of a non-leap year of CityLearn data row ``row``."""
    return (CITYLEARN_ROW0_HOUR_OF_YEAR + int(row)) % HOURS_PER_YEAR


def calendar_background(
    net: pandapowerNet,
    start_row: int,
    n_steps: int,
    *,
    dt_h: float = 1.0,
    mode: str = "simbench",
    scale: float = 1.0,
) -> BackgroundProfiles:
    """Background of data rows ``start_row .. start_row + n_steps - 1`` (row t = step t).

    ``"simbench"`` takes SimBench's profiles for the rows' hours of the year
    (:func:`hour_of_year`), stitched over the end of the year when the run crosses it;
    ``"nominal"`` and ``"off"`` do not depend on the hour.

    Raises:
        BackgroundError: an unknown mode, a feeder without SimBench profiles, bad counts.
    """
    if mode != "simbench":
        return background_profiles(net, n_steps, dt_h=dt_h, mode=mode, scale=scale)
    if not (isinstance(n_steps, (int, np.integer)) and not isinstance(n_steps, bool)
            and n_steps >= 1):
        raise BackgroundError(f"n_steps must be a positive integer, got {n_steps!r}")
    pieces = []
    t = 0
    while t < n_steps:  # the run may wrap around the end of the year
        h0 = hour_of_year(start_row + t)
        n = min(n_steps - t, HOURS_PER_YEAR - h0)
        pieces.append(background_profiles(net, n, start=h0, dt_h=dt_h, mode="simbench",
                                          scale=scale))
        t += n
    if len(pieces) == 1:
        return pieces[0]
    first = pieces[0]
    load_p, load_q, sgen_p, sgen_q = (np.concatenate([getattr(p, f) for p in pieces])
                                      for f in _BACKGROUND_FIELDS)
    return BackgroundProfiles(load_p, load_q, sgen_p, sgen_q, first.load_ids, first.sgen_ids,
                              first.dt_h, first.start, first.mode)


def q_per_p_of(power_factor: float) -> float:
    """tan(acos(power_factor)): kvar per kW of a load with this (lagging) power factor."""
    pf = float(power_factor)
    if not (0.0 < pf <= 1.0):
        raise GridModelError(f"power_factor must be in (0, 1], got {power_factor!r}")
    return math.tan(math.acos(pf))


@dataclass(eq=False)
class GridModel:
    """A feeder with its power flow, building buses and per-step background.

    Build one with :meth:`GridModel.build` (plain parameters). Fields:

    * ``net``: the power flow's own pandapower net (feeder + one injection load per bus);
    * ``powerflow``: the :class:`~grid_models.powerflow.interface.PowerFlow`;
    * ``building_bus``: bus index of each building, shape (N,);
    * ``background``: the feeder's own loads/sgens per step of the run (T rows);
    * ``q_per_p``: tan(phi) of the buildings' power factor;
    * ``fleet_scale``: factor on every building's power;
    * ``feeder``: the pandapower net it was built from (not modified; for linearisations).
    """

    net: Any  # a pandapower net (pandapower ships no types)
    powerflow: PowerFlow
    building_bus: np.ndarray
    background: BackgroundProfiles
    q_per_p: float
    fleet_scale: float
    feeder: Any = field(default=None, repr=False)  # the pandapower net it was built from
    _bus_pos: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.building_bus = np.asarray(self.building_bus, dtype=np.int64)
        if self.building_bus.ndim != 1 or len(self.building_bus) == 0:
            raise PlacementError(f"building_bus must list one bus per building (N >= 1), got "
                                 f"shape {self.building_bus.shape}")
        bus_ids = np.asarray(self.powerflow.bus_ids)
        position = {int(b): i for i, b in enumerate(bus_ids)}
        missing = sorted({int(b) for b in self.building_bus} - set(position))
        if missing:
            raise PlacementError(f"building buses {missing[:10]} are not buses of the feeder")
        self._bus_pos = np.array([position[int(b)] for b in self.building_bus], dtype=np.int64)
        if not (np.array_equal(np.asarray(self.background.load_ids), self.powerflow.load_ids)
                and np.array_equal(np.asarray(self.background.sgen_ids),
                                   self.powerflow.sgen_ids)):
            raise BackgroundError("background profiles do not match the power flow's load/"
                                  "sgen tables (built for another feeder?)")
        self.q_per_p = float(self.q_per_p)
        self.fleet_scale = float(self.fleet_scale)

    @classmethod
    def build(
        cls,
        feeder: pandapowerNet,
        *,
        building_bus: np.ndarray | list[int],
        n_steps: int,
        backend: str = "power-grid-model",
        start_row: int = 0,
        dt_h: float = 1.0,
        background_mode: str = "off",
        background_scale: float = 1.0,
        power_factor: float = 1.0,
        fleet_scale: float = 1.0,
        nonfinite: str = "unknown",
        **backend_options: Any,
    ) -> GridModel:
        """The grid model of a run of ``n_steps`` steps from data row ``start_row``.

        Args:
            feeder: the pandapower net (not modified; see :func:`grid_models.feeders.load_feeder`).
            building_bus: bus of each building (see :mod:`grid_models.placement`).
            n_steps: steps of the run (rows of the background).
            backend: ``"power-grid-model"`` or ``"pandapower"``.
            start_row: data row of step 0 (calendar: :func:`hour_of_year`).
            dt_h: step length in hours.
            background_mode: one of :data:`grid_models.background.BACKGROUND_MODES`.
            background_scale: factor on the background loads.
            power_factor: the buildings' (lagging) power factor, in (0, 1].
            fleet_scale: factor on every building's power.
            nonfinite: ``"unknown"`` (default: a step with non-finite inputs is an unknown
                step, the run goes on) or ``"raise"``.
            **backend_options: passed to :func:`grid_models.powerflow.interface.make_powerflow`.

        Raises:
            BackgroundError: the background cannot be built (mode, profiles, window).
            GridModelError: any other problem (backend, conversion, supply, placement,
                power factor), as the subclass that says which.
        """
        q_per_p = q_per_p_of(power_factor)
        if not (math.isfinite(float(fleet_scale)) and float(fleet_scale) >= 0):
            raise GridModelError(f"fleet_scale must be finite and >= 0, got {fleet_scale!r}")
        pf = make_powerflow(feeder, backend, nonfinite=nonfinite, **backend_options)
        background = calendar_background(feeder, start_row, n_steps, dt_h=dt_h,
                                         mode=background_mode, scale=background_scale)
        return cls(pf.net, pf, np.asarray(building_bus, dtype=np.int64), background, q_per_p,
                   fleet_scale, feeder)

    # -- what the model holds ---------------------------------------------------------

    @property
    def n_steps(self) -> int:
        """Steps of the run (rows of the background)."""
        return len(self.background)

    @property
    def n_buildings(self) -> int:
        """Number of buildings N."""
        return len(self.building_bus)

    @property
    def bus_ids(self) -> np.ndarray:
        """Bus indices, the order of the power flow's bus arrays."""
        return self.powerflow.bus_ids

    @property
    def line_ids(self) -> np.ndarray:
        """Line indices, the order of the power flow's line arrays."""
        return self.powerflow.line_ids

    @property
    def trafo_ids(self) -> np.ndarray:
        """Transformer indices, the order of the power flow's transformer arrays."""
        return self.powerflow.trafo_ids

    def warm_start_state(self) -> dict[str, np.ndarray]:
        """The power flow's warm start (see ``PowerFlow.warm_start_state``), for resume."""
        result: dict[str, np.ndarray] = self.powerflow.warm_start_state()
        return result

    def set_warm_start_state(self, state: dict[str, np.ndarray]) -> None:
        """Start the next power flow from a saved :meth:`warm_start_state`."""
        self.powerflow.set_warm_start_state(state)

    # -- solving ----------------------------------------------------------------------

    def injections(self, p_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-bus (MW, Mvar) in ``bus_ids`` order from per-building kW, (N,) or (T, N)."""
        p = np.asarray(p_kw, dtype=float)
        if p.ndim not in (1, 2) or p.shape[-1] != len(self._bus_pos):
            raise PlacementError(f"p_kw must have shape (N,) or (T, N) with "
                                 f"N={len(self._bus_pos)}, got {p.shape}")
        n_bus = len(self.powerflow.bus_ids)
        factor = self.fleet_scale / 1000.0
        return (sum_by_bus(self._bus_pos, p, n_bus) * factor,
                sum_by_bus(self._bus_pos, p * self.q_per_p, n_bus) * factor)

    def solve(self, t: int, p_kw: np.ndarray) -> GridResult:
        """Power flow of step ``t`` (position in the run) for building loads ``p_kw`` (kW)."""
        t = self._step(t)
        p_mw, q_mvar = self.injections(p_kw)
        self.background.apply(self.powerflow, t)
        return self.powerflow.solve(p_mw, q_mvar, step=t)

    def solve_batch(self, t0: int, p_kw: np.ndarray) -> BatchGridResult:
        """Power flow of steps ``t0 .. t0 + T - 1`` for building loads ``p_kw`` of shape (T, N).

        Equal to ``[solve(t0 + i, p_kw[i]) for i in range(T)]`` to the solver's tolerance,
        including steps that do not converge or have non-finite inputs (NaN rows,
        ``converged`` False, the same warnings and counts), the state left behind (the
        background of the last step; pandapower's warm start) and the step numbers.
        """
        p = np.asarray(p_kw, dtype=float)
        if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] != len(self._bus_pos):
            raise PlacementError(f"p_kw must have shape (T, N) with T >= 1 and "
                                 f"N={len(self._bus_pos)}, got {p.shape}")
        t0 = self._step(t0)
        stop = t0 + p.shape[0]
        if stop > self.n_steps:
            raise IndexError(f"steps {t0}..{stop - 1} are outside the run's "
                             f"{self.n_steps} steps")
        p_mw, q_mvar = self.injections(p)
        batch = self.powerflow.solve_batch(p_mw, q_mvar,
                                           background=self.background.window(t0, stop),
                                           first_step=t0)
        self.background.apply(self.powerflow, stop - 1)  # as after the last solve(t)
        return batch

    def _step(self, t: int) -> int:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"step must be an integer, got {t!r}")
        if not 0 <= t < self.n_steps:
            raise IndexError(f"step {t} is outside the run's {self.n_steps} steps")
        return int(t)


GRID_SOLVE_MODES = ("batch", "per_step")


class GridFeed:
    """Feeds a :class:`GridModel` one step at a time and hands back the results when ready.

    ``"per_step"``: every step is solved when it comes (needed when something reads the
    grid's results within the run). ``"batch"``: steps are collected and solved together
    (power-grid-model's batch calculation) at every ``every``-th step and at the last,
    which gives the same numbers (``GridModel.solve_batch``) at a fraction of the cost.
    Batches end at multiples of ``every`` counted from step 0, whatever the first step
    fed, so a run resumed at a checkpoint batches exactly as an uninterrupted one.
    """

    def __init__(self, grid: GridModel, mode: str, every: int, total_steps: int) -> None:
        if mode not in GRID_SOLVE_MODES:
            raise ValueError(f"unknown grid solve mode {mode!r}; valid: {GRID_SOLVE_MODES}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.grid, self.mode, self.every, self.total_steps = grid, mode, int(every), total_steps
        self._first: int | None = None
        self._rows: list[np.ndarray] = []

    def add(self, t: int, p_kw: np.ndarray) -> list[tuple[int, GridResult]]:
        """Step ``t``'s building loads; the (step, result) pairs solved now (maybe none)."""
        if self.mode == "per_step":
            return [(t, self.grid.solve(t, p_kw))]
        if self._first is None:
            self._first = t
        elif t != self._first + len(self._rows):
            raise ValueError(f"step {t} fed after step {self._first + len(self._rows) - 1}")
        self._rows.append(np.asarray(p_kw, dtype=float))
        if (t + 1) % self.every and t + 1 != self.total_steps:
            return []
        first, rows = self._first, np.stack(self._rows)
        self._first, self._rows = None, []
        batch = self.grid.solve_batch(first, rows)
        return [(first + k, batch[k]) for k in range(rows.shape[0])]
