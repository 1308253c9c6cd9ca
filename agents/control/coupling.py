"""What the model-based controllers (DMPC, EPOS) plan with: forecasts and coupling rows.

**Forecasts** (:class:`Forecast`). A controller that plans ahead at step t needs the
fleet's demand, PV and price for the steps ``t .. t+H-1``. The forecast holds the data
rows from ``history`` steps before the run's first step to ``horizon`` steps after its
last (CityLearn rows wrap around the year, as the calendar does), and answers

- ``perfect``: the data themselves;
- ``persistence``: demand and PV of step ``tau`` are those of ``tau - 24 m`` for the
  smallest ``m >= 1`` with ``tau - 24 m < t`` (the latest day already seen: yesterday's
  profile for a horizon of at most 24 h). Before the run's start these are the data rows
  before it. The price is a published tariff and is known in both modes.

**Coupling rows** (:class:`CouplingRows`). The constraints that tie the buildings
together, R rows, each linear in the buildings' grid energy ``g_i`` and PV export
``y_i`` (kWh per step)::

    value[t, r] = offset[t, r] + sum_i (w_grid[r, i] g_it - w_export[r, i] y_it) <= upper[r]

- the district limit: ``w_grid = 1``, ``w_export = 0``, ``offset = 0``, ``upper = c``
  (c per step: the model-based controllers hold it in every step);
- a linearised grid limit of the oracle (:class:`agents.control.oracle_grid.LinearGridLimits`,
  on the net consumption ``p = (g - y) / dt``): ``w_grid = w_export = sensitivity /
  dt`` and its offsets.

Pure domain code: no mosaik, no solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from agents.control.oracle_grid import LinearGridLimits
from agents.fleet.building import FleetParams
from agents.fleet.data import CityLearnData

ForecastMode = Literal["perfect", "persistence"]
#: The forecasts a controller may plan with.
FORECAST_MODES: tuple[str, ...] = ("perfect", "persistence")
#: Steps of a day (hourly data).
DAY_STEPS = 24


def history_steps(horizon: int) -> int:
    """Steps before the run that a persistence forecast of ``horizon`` steps reads."""
    return DAY_STEPS * max(1, -(-int(horizon) // DAY_STEPS))


@dataclass(frozen=True)
class Forecast:
    """Demand, PV and price over a planning horizon (module docstring).

    ``base_demand_kwh`` and ``solar_w_per_kw`` (rows, N) and ``price_per_kwh`` (rows,)
    hold ``history`` rows before the run's step 0, then the run's steps and at least
    ``horizon - 1`` rows after its last; ``params`` scales demand and converts solar.
    """

    params: FleetParams
    base_demand_kwh: np.ndarray
    solar_w_per_kw: np.ndarray
    price_per_kwh: np.ndarray
    history: int
    mode: ForecastMode = "perfect"
    dt_h: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in FORECAST_MODES:
            raise ValueError(f"unknown forecast {self.mode!r}; valid: "
                             f"{', '.join(FORECAST_MODES)}")
        rows = self.base_demand_kwh.shape[0]
        if (self.base_demand_kwh.shape != self.solar_w_per_kw.shape
                or self.base_demand_kwh.shape[1:] != (self.params.n,)
                or self.price_per_kwh.shape != (rows,)):
            raise ValueError(f"Forecast: demand {self.base_demand_kwh.shape}, solar "
                             f"{self.solar_w_per_kw.shape} and price "
                             f"{self.price_per_kwh.shape} must be (rows, {self.params.n}), "
                             f"(rows, {self.params.n}) and (rows,)")
        if not 0 <= self.history < rows:
            raise ValueError(f"Forecast.history must lie in 0..{rows - 1}, got {self.history}")

    @classmethod
    def from_citylearn(cls, data: CityLearnData, profiles: list[str], params: FleetParams,
                       start: int, steps: int, horizon: int, mode: ForecastMode = "perfect",
                       dt_h: float = 1.0) -> Forecast:
        """The forecast of a run of ``steps`` from data row ``start`` for buildings of the
        CityLearn ``profiles``, planning ``horizon`` steps ahead (rows wrap the year)."""
        history = history_steps(horizon)
        rows = wrapped_rows(start - history, history + steps + horizon, data.n_steps)
        chosen = [data.building(p) for p in profiles]
        return cls(params, np.stack([b.demand_kwh[rows] for b in chosen], axis=1),
                   np.stack([b.solar_w_per_kw[rows] for b in chosen], axis=1),
                   np.asarray(data.price_per_kwh)[rows], history, mode, dt_h)

    @property
    def n(self) -> int:
        """Number of buildings N."""
        return self.params.n

    def steps_available(self, t: int) -> int:
        """How many steps from run step ``t`` on the forecast holds."""
        return int(self.base_demand_kwh.shape[0] - self.history - t)

    def window(self, t: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(demand_kwh (H, N), pv_kwh (H, N), price_per_kwh (H,))`` for run steps
        ``t .. t+H-1``: demand with each building's scale, PV yield per step.

        Raises:
            ValueError: if the forecast does not reach that far (back or ahead).
        """
        if horizon < 1 or t < 0 or horizon > self.steps_available(t):
            raise ValueError(f"the forecast holds run steps {-self.history}.."
                             f"{self.steps_available(0) - 1}; asked for {t}..{t + horizon - 1}")
        rows = self.history + t + np.arange(horizon)
        if self.mode == "persistence":
            lag = DAY_STEPS * (np.arange(horizon) // DAY_STEPS + 1)
            if int(lag.max()) > self.history + t:
                raise ValueError(f"a persistence forecast of {horizon} steps needs "
                                 f"{int(lag.max())} steps of history; it holds "
                                 f"{self.history + t} at step {t}")
            past = rows - lag
        else:
            past = rows
        demand = self.base_demand_kwh[past] * self.params.demand_scale
        pv = (self.params.pv_kw * np.maximum(self.solar_w_per_kw[past], 0.0) / 1000.0
              * self.dt_h)
        return demand, pv, self.price_per_kwh[rows].copy()


def wrapped_rows(first: int, count: int, n_rows: int) -> np.ndarray:
    """Data rows ``first .. first+count-1`` wrapped around a year of ``n_rows`` rows."""
    result: np.ndarray = (int(first) + np.arange(int(count))) % int(n_rows)
    return result


@dataclass(frozen=True)
class CouplingRows:
    """R constraints linear in the buildings' grid energy and export (module docstring).

    ``w_grid`` and ``w_export`` (R, N); ``offset`` (steps, R) per run step (rows past the
    run repeat its last day); ``upper`` (R,); ``names`` (R,).
    """

    names: list[str]
    w_grid: np.ndarray
    w_export: np.ndarray
    offset: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        r = len(self.names)
        if self.w_grid.shape != self.w_export.shape or self.w_grid.shape[0] != r:
            raise ValueError(f"CouplingRows: w_grid {self.w_grid.shape} and w_export "
                             f"{self.w_export.shape} must both be ({r}, N)")
        if self.offset.ndim != 2 or self.offset.shape[1] != r or self.upper.shape != (r,):
            raise ValueError(f"CouplingRows: offset {self.offset.shape} must be (steps, {r}) "
                             f"and upper {self.upper.shape} ({r},)")

    @property
    def n_rows(self) -> int:
        """Number of coupling rows R."""
        return len(self.names)

    def offset_window(self, t: int, horizon: int) -> np.ndarray:
        """Offsets of run steps ``t .. t+H-1`` (H, R); past the table, a day earlier."""
        steps = self.offset.shape[0]
        rows = t + np.arange(horizon)
        while (rows >= steps).any():
            rows = np.where(rows >= steps, rows - DAY_STEPS, rows)
        rows = np.maximum(rows, 0)
        result: np.ndarray = self.offset[rows]
        return result

    def value(self, t: int, grid_kwh: np.ndarray, export_kwh: np.ndarray) -> np.ndarray:
        """The rows' values (H, R) for plans ``grid_kwh`` and ``export_kwh`` (H, N) from ``t``."""
        h = grid_kwh.shape[0]
        result: np.ndarray = (self.offset_window(t, h) + grid_kwh @ self.w_grid.T
                              - export_kwh @ self.w_export.T)
        return result

    @classmethod
    def district(cls, n: int, limit_kwh: float, steps: int) -> CouplingRows:
        """The district limit ``sum_i g_it <= limit_kwh`` alone."""
        return cls(["district grid <= c"], np.ones((1, n)), np.zeros((1, n)),
                   np.zeros((steps, 1)), np.array([float(limit_kwh)]))

    def with_grid_limits(self, limits: LinearGridLimits, dt_h: float) -> CouplingRows:
        """These rows followed by the linearised grid limits (on ``p = (g - y) / dt``)."""
        sens = np.asarray(limits.sensitivity) / dt_h
        steps = self.offset.shape[0]
        offset = np.asarray(limits.offset)
        if offset.shape[0] != steps:
            raise ValueError(f"grid limits hold {offset.shape[0]} steps, the rows {steps}")
        return CouplingRows(self.names + list(limits.names),
                            np.vstack([self.w_grid, sens]), np.vstack([self.w_export, sens]),
                            np.hstack([self.offset, offset]),
                            np.concatenate([self.upper, np.asarray(limits.upper)]))
