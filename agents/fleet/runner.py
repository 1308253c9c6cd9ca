"""The plain-loop runner: buildings, controllers and duals for T steps, no mosaik.

It is the reference the co-simulation must reproduce and the fast path for
studies. One step, for the whole fleet at once::

    obs     = fleet_observation(params, state, d[t], s[t], p[t], hour, lambda, nu)
    actions = controller.act(obs)                       # (N, 2): u_grid, u_batt
    state, r = step_fleet(params, state, d[t], s[t], p[t], u_grid, u_batt)
    duals.update(r.grid_kwh, r.served_kwh - r.demand_kwh)

The result is the results contract's ``buildings.parquet`` table (docs/results_contract.md):
long format, one row per building per step, columns ``RESULT_COLUMNS``.
``backlog_kwh`` and ``soc_kwh`` are the states at the END of the step;
``lambda``, ``mu`` and ``nu`` the values the agent used in the step (before the
dual update that follows it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from agents.consensus.duals import DualDynamics
from agents.control.contract import (
    Controller,
    ControllerError,
    checked_actions,
    checked_snapshot,
    controller_name,
)
from agents.fleet.building import FleetParams, FleetState, step_fleet
from agents.fleet.data import CityLearnData, load_citylearn
from agents.fleet.observation import PRICE_AHEAD_H, FleetObservation, fleet_observation
from agents.fleet.records import RESULT_COLUMNS, VALUE_COLUMNS

NO_BUS = -1
#: (lambda, mu, nu) or (lambda, mu, nu, lambda_eff); arrays (N,) or scalars
Multipliers = tuple[np.ndarray | float, ...]


@dataclass(frozen=True)
class FleetSetup:
    """Everything a run needs besides the controller and the duals.

    ``start_hour`` is the hour of step 0 counted from the data's first row; for
    the hourly CityLearn data it is the data row, and since row 0 is hour 24 = 0,
    the hour of day at step t is ``(start_hour + t * dt_h) % 24``.
    """

    names: list[str]  # building ids
    params: FleetParams
    bus: np.ndarray  # feeder bus per building (int), NO_BUS = -1 if none
    base_demand_kwh: np.ndarray  # (T, N), before each building's demand scale
    solar_w_per_kw: np.ndarray  # (T, N)
    price_per_kwh: np.ndarray  # (T,)
    start_hour: int = 0
    dt_h: float = 1.0
    initial_soc_fraction: float | np.ndarray = field(default=0.0)
    # the published tariff from step 0 to PRICE_AHEAD_H steps past the last, (T + H,);
    # None: the run's prices, continued past its end by repeating their last day
    price_outlook_per_kwh: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = [str(x) for x in self.names]
        n = len(names)
        if n == 0 or len(set(names)) != n:
            raise ValueError(f"FleetSetup.names: need distinct building ids, got {names}")
        if self.params.n != n:
            raise ValueError(f"FleetSetup.params: {self.params.n} buildings, names: {n}")
        object.__setattr__(self, "names", names)
        bus = np.asarray(self.bus)
        if bus.ndim == 0:
            bus = np.full(n, bus)
        if bus.shape != (n,) or not np.issubdtype(bus.dtype, np.integer) or (bus < NO_BUS).any():
            raise ValueError(f"FleetSetup.bus: need {n} integer bus ids (-1: none), got {bus}")
        object.__setattr__(self, "bus", bus.astype(np.int64))
        for name in ("base_demand_kwh", "solar_w_per_kw"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] < 1:
                raise ValueError(f"FleetSetup.{name}: expected shape (T, {n}), got {arr.shape}")
            object.__setattr__(self, name, arr)
        t = self.base_demand_kwh.shape[0]
        price = np.asarray(self.price_per_kwh, dtype=np.float64)
        if self.solar_w_per_kw.shape[0] != t or price.shape != (t,):
            raise ValueError(
                f"FleetSetup: base_demand_kwh has {t} steps but solar_w_per_kw has "
                f"{self.solar_w_per_kw.shape[0]} and price_per_kwh shape {price.shape}"
            )
        object.__setattr__(self, "price_per_kwh", price)
        object.__setattr__(self, "price_outlook_per_kwh",
                           _price_outlook(price, self.price_outlook_per_kwh, self.dt_h))
        for name in ("base_demand_kwh", "solar_w_per_kw", "price_per_kwh",
                     "price_outlook_per_kwh"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"FleetSetup.{name}: every value must be finite")
        if (self.base_demand_kwh < 0).any():
            raise ValueError("FleetSetup.base_demand_kwh: demand must be >= 0")
        if not (np.isfinite(self.dt_h) and self.dt_h > 0):
            raise ValueError(f"FleetSetup.dt_h must be > 0, got {self.dt_h}")
        if int(self.start_hour) != self.start_hour or self.start_hour < 0:
            raise ValueError(
                f"FleetSetup.start_hour must be an integer >= 0, got {self.start_hour}"
            )
        object.__setattr__(self, "start_hour", int(self.start_hour))

    @property
    def n(self) -> int:
        """Number of buildings N."""
        return len(self.names)

    @property
    def n_steps(self) -> int:
        """Number of steps T in the data."""
        return int(self.base_demand_kwh.shape[0])

    def select(self, index: np.ndarray | Sequence[int]) -> FleetSetup:
        """The buildings ``index`` (a shard) with their own data; same hours and price."""
        idx = np.asarray(index, dtype=np.int64)
        soc = self.initial_soc_fraction
        soc = soc if np.ndim(soc) == 0 else np.asarray(soc)[idx]
        return FleetSetup([self.names[i] for i in idx], self.params.select(idx), self.bus[idx],
                          self.base_demand_kwh[:, idx], self.solar_w_per_kw[:, idx],
                          self.price_per_kwh, start_hour=self.start_hour, dt_h=self.dt_h,
                          initial_soc_fraction=soc,
                          price_outlook_per_kwh=self.price_outlook_per_kwh)

    def hour_of_day(self, t: int) -> float:
        """Hour of day at the start of step ``t``, in [0, 24)."""
        return float((self.start_hour + t * self.dt_h) % 24)

    def demand_kwh(self) -> np.ndarray:
        """New demand per step and building, demand scale applied, (T, N)."""
        result: np.ndarray = self.base_demand_kwh * self.params.demand_scale
        return result

    @classmethod
    def from_citylearn(
        cls,
        names: Sequence[str],
        start: int,
        steps: int,
        *,
        demand_scale: Sequence[float] | float = 1.0,
        backlog_cap_kwh: Sequence[float] | float = np.inf,
        export_pv: Sequence[bool] | bool = True,
        bus: Sequence[int] | int = NO_BUS,
        initial_soc_fraction: float = 0.0,
        data: CityLearnData | None = None,
    ) -> FleetSetup:
        """CityLearn 2022 buildings ``names`` for hours ``start .. start+steps-1``."""
        data = data or load_citylearn()
        names = list(names)
        params = FleetParams.from_buildings(
            [data.building(x) for x in names], demand_scale=demand_scale,
            backlog_cap_kwh=backlog_cap_kwh, export_pv=export_pv,
        )
        demand, solar, price = data.window(names, start, steps)
        return cls(names, params, np.asarray(bus), demand, solar, price, start_hour=start,
                   dt_h=data.hours_per_step, initial_soc_fraction=initial_soc_fraction,
                   price_outlook_per_kwh=data.price_outlook(start, steps))


def _price_outlook(price: np.ndarray, outlook: np.ndarray | None, dt_h: float) -> np.ndarray:
    """The tariff from step 0 to ``PRICE_AHEAD_H`` steps past the run's last, (T + H,).

    Without one given, the run's prices continued by repeating their last day (a daily
    tariff's persistence; the last price alone for a run shorter than a day).
    """
    t = price.shape[0]
    if outlook is not None:
        arr = np.asarray(outlook, dtype=np.float64)
        if arr.shape != (t + PRICE_AHEAD_H,):
            raise ValueError(f"FleetSetup.price_outlook_per_kwh: expected shape "
                             f"({t + PRICE_AHEAD_H},) (the run's {t} steps and "
                             f"{PRICE_AHEAD_H} after), got {arr.shape}")
        if not np.array_equal(arr[:t], price):
            raise ValueError("FleetSetup.price_outlook_per_kwh must start with price_per_kwh")
        return arr
    day = max(1, int(round(24.0 / dt_h))) if np.isfinite(dt_h) and dt_h > 0 else 1
    extra = np.arange(t, t + PRICE_AHEAD_H)
    back = extra - day * ((extra - t) // day + 1)
    rows = np.where(back >= 0, back, t - 1)
    return np.concatenate([price, price[rows]])


def district_limit_kwh(setup: FleetSetup, fraction: float, steps: int | None = None) -> float:
    """c = ``fraction`` x the peak over the run of the district's aggregated demand.

    The aggregated demand of a step is ``sum_i demand_scale_i * base_demand_i`` (kWh
    per step, docs/equations.md; the paper uses 27 % of the peak). ``steps`` limits
    the run to its first steps (default: all of the setup's).
    """
    fraction = float(fraction)
    if not (np.isfinite(fraction) and fraction >= 0):
        raise ValueError(f"fraction must be finite and >= 0, got {fraction}")
    steps = setup.n_steps if steps is None else int(steps)
    if not 1 <= steps <= setup.n_steps:
        raise ValueError(f"steps must lie in 1..{setup.n_steps}, got {steps}")
    return fraction * district_peak_kwh(setup.base_demand_kwh[:steps], setup.params.demand_scale)


def district_peak_kwh(base_demand_kwh: np.ndarray, demand_scale: np.ndarray) -> float:
    """The peak over the rows of ``base_demand_kwh`` (T, N) of the district's demand
    ``sum_i demand_scale_i * base_demand_i``, kWh per step."""
    return float((np.asarray(base_demand_kwh) * demand_scale).sum(axis=1).max())


class GridConstraints(Protocol):
    """What :class:`FleetLoop` needs of its grid constraints (see there)."""

    def effective_lambda(self, lam: np.ndarray) -> np.ndarray:
        """The lambda the controller sees in place of ``lam`` (N,)."""

    def snapshot(self) -> dict[str, np.ndarray]:
        """The multiplier state, for a checkpoint."""

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Set the multiplier state back to a :meth:`snapshot`."""


class FleetLoop:
    """The fleet engine: one step of a fleet at a time (observation, controller, building
    model, duals). The plain loop, the mosaik fleet simulator, the gym env and the
    evaluator all step a fleet through it.

    Without ``duals`` the multipliers come from outside (``step(multipliers=...)``, as
    the mosaik fleet simulator gets them from the duals simulator) or are zero. With
    ``grid_constraints`` (an object with ``effective_lambda(lam)``, ``snapshot`` and
    ``restore``, e.g. :class:`cosim.scenario.grid_constraints.GridConstraintSet`) the controller
    sees ``lambda_eff = grid_constraints.effective_lambda(lambda)`` in place of lambda;
    the grid multipliers themselves are updated by the engine after the power flow. The
    state between steps (building states, duals, a stateful controller's position)
    can be saved with :meth:`snapshot` and set with :meth:`restore`, so that a run
    continues from a saved step exactly as if never stopped.
    """

    def __init__(self, setup: FleetSetup, controller: Controller | None,
                 duals: DualDynamics | None,
                 grid_constraints: GridConstraints | None = None) -> None:
        if duals is not None and duals.n != setup.n:
            raise ValueError(f"duals are for {duals.n} agents, the fleet has {setup.n} buildings")
        self.setup, self.controller, self.duals = setup, controller, duals
        self.grid_constraints = grid_constraints
        self.state = FleetState.initial(setup.params, setup.initial_soc_fraction)
        self.t = 0

    def _multipliers(self, multipliers: Multipliers | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lambda, mu, nu, lambda_eff) of the step, each (N,)."""
        if multipliers is not None:
            if len(multipliers) not in (3, 4):
                raise ValueError("multipliers must be (lambda, mu, nu) or (lambda, mu, nu, "
                                 f"lambda_eff), got {len(multipliers)} values")
            arrays = [np.broadcast_to(np.asarray(m, dtype=np.float64), (self.setup.n,))
                      for m in multipliers]
            lam, mu, nu = arrays[:3]
            if len(arrays) == 4:
                return lam, mu, nu, arrays[3]
        elif self.duals is not None:
            current = self.duals.state
            lam, mu, nu = current.lam, current.mu, current.nu
        else:
            lam = mu = nu = np.zeros(self.setup.n)
        eff = lam if self.grid_constraints is None else \
            self.grid_constraints.effective_lambda(lam)
        return lam, mu, nu, eff

    def _base_demand(self, extra_demand_kwh: np.ndarray | None) -> np.ndarray:
        """Base demand of step ``self.t`` (before the demand scale), extra demand included."""
        demand_t = self.setup.base_demand_kwh[self.t]
        if extra_demand_kwh is None:
            result: np.ndarray = demand_t
            return result
        result = demand_t + np.asarray(extra_demand_kwh) / self.setup.params.demand_scale
        return result

    def _observation(self, demand_t: np.ndarray, lam: np.ndarray,
                     nu: np.ndarray) -> FleetObservation:
        setup, t = self.setup, self.t
        assert setup.price_outlook_per_kwh is not None  # FleetSetup fills it in
        return fleet_observation(setup.params, self.state, demand_t, setup.solar_w_per_kw[t],
                                 setup.price_per_kwh[t], setup.hour_of_day(t), lam, nu,
                                 setup.dt_h,
                                 setup.price_outlook_per_kwh[t + 1:t + 1 + PRICE_AHEAD_H])

    def observe(self, multipliers: Multipliers | None = None,
                extra_demand_kwh: np.ndarray | None = None) -> FleetObservation:
        """What the controller sees at step ``self.t`` (see :meth:`step` for the arguments)."""
        _, _, nu, eff = self._multipliers(multipliers)
        return self._observation(self._base_demand(extra_demand_kwh), eff, nu)

    def step(self, multipliers: Multipliers | None = None,
             extra_demand_kwh: np.ndarray | None = None,
             actions: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Step ``self.t``; the record values of every building (``VALUE_COLUMNS``) plus
        ``r2_kwh`` (served - demand, the duals' input) and ``p_kw`` (net feeder load).

        ``multipliers`` (lambda, mu, nu and optionally lambda_eff; arrays or scalars)
        replace the duals' (mosaik: from the duals simulator; evaluation and training:
        held fixed) and leave the duals untouched; ``extra_demand_kwh`` adds demand of
        the step to some buildings (a third-party simulator attached to one building),
        after the demand scale;
        ``actions`` (N, 2) replace the controller's (the gym env: the learner acts).
        """
        setup, t = self.setup, self.t
        lam, mu, nu, eff = self._multipliers(multipliers)
        demand_t = self._base_demand(extra_demand_kwh)
        solar_t, price_t = setup.solar_w_per_kw[t], setup.price_per_kwh[t]
        if actions is None:
            if self.controller is None:
                raise ValueError("this FleetLoop has no controller; pass actions=")
            act = checked_actions(self._act(self._observation(demand_t, eff, nu)),
                                  setup.names, t, self.controller)
        else:  # a learner's raw actions: the building model clips them to [0, 1]
            act = checked_actions(actions, setup.names, t, self.controller, bounded=False)
        self.state, r = step_fleet(setup.params, self.state, demand_t, solar_t, price_t,
                                   act[:, 0], act[:, 1], setup.dt_h)
        values = {
            "demand_kwh": r.demand_kwh, "backlog_kwh": r.backlog_kwh, "grid_kwh": r.grid_kwh,
            "battery_kwh": r.battery_kwh, "unmet_kwh": r.unmet_kwh, "dropped_kwh": r.dropped_kwh,
            "soc_kwh": r.soc_kwh, "pv_kwh": r.pv_kwh, "export_kwh": r.export_kwh,
            "price": r.price_per_kwh, "cost": r.cost, "lambda": lam, "mu": mu, "nu": nu,
            "lambda_eff": eff,
            "r2_kwh": r.served_kwh - r.demand_kwh, "p_kw": r.net_load_kw(setup.dt_h),
        }
        if self.duals is not None and multipliers is None:
            self.duals.update(r.grid_kwh, values["r2_kwh"])
        self.t += 1
        return values

    def _act(self, obs: FleetObservation) -> object:
        """The controller's answer to ``obs``; an exception in it becomes a
        :class:`ControllerError` that names the controller and the step."""
        try:
            return self.controller.act(obs)  # type: ignore[union-attr]  # step() checked it
        except ControllerError:
            raise
        except Exception as exc:
            raise ControllerError(
                f"controller {controller_name(self.controller)!r} raised at step {self.t} "
                f"(buildings {self.setup.names[0]}..{self.setup.names[-1]}): "
                f"{type(exc).__name__}: {exc}") from exc

    def snapshot(self) -> dict[str, np.ndarray]:
        """The state before step ``self.t`` as named arrays (see :meth:`restore`)."""
        snap = {"t": np.array(self.t, dtype=np.int64),
                "backlog_kwh": self.state.backlog_kwh.copy(), "soc_kwh": self.state.soc_kwh.copy()}
        if self.duals is not None:
            snap.update({f"duals_{k}": v for k, v in self.duals.snapshot().items()})
        if self.grid_constraints is not None:
            snap.update({f"gridmu_{k}": v for k, v in self.grid_constraints.snapshot().items()})
        if self.controller is not None and hasattr(self.controller, "snapshot"):
            state = checked_snapshot(self.controller.snapshot(), self.controller)
            snap.update({f"controller_{k}": v for k, v in state.items()})
        return snap

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Resume from a :meth:`snapshot`: fleet state, step, multipliers and controller.

        Raises:
            ValueError: if the snapshot is for a different number of buildings.
        """
        n = self.setup.n
        backlog = np.array(snap["backlog_kwh"], dtype=np.float64)
        soc = np.array(snap["soc_kwh"], dtype=np.float64)
        if backlog.shape != (n,) or soc.shape != (n,):
            raise ValueError(f"fleet snapshot for {backlog.shape[0]} buildings, the fleet has {n}")
        self.state = FleetState(backlog, soc)
        self.t = int(snap["t"])
        if self.duals is not None:
            self.duals.restore({k.removeprefix("duals_"): v for k, v in snap.items()
                                if k.startswith("duals_")})
        if self.grid_constraints is not None:
            self.grid_constraints.restore({k.removeprefix("gridmu_"): v for k, v in snap.items()
                                           if k.startswith("gridmu_")})
        if self.controller is not None and hasattr(self.controller, "restore"):
            self.controller.restore({k.removeprefix("controller_"): v for k, v in snap.items()
                                     if k.startswith("controller_")})


def run_plain(
    setup: FleetSetup,
    controller: Controller,
    duals: DualDynamics | None,
    steps: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Run ``steps`` steps (default: all of the setup's); the results-contract table.

    The duals start from their current state (a fresh ``DualDynamics`` is all
    zeros) and are updated in place; with ``duals=None`` lambda = mu = nu = 0.
    """
    n = setup.n
    steps = setup.n_steps if steps is None else int(steps)
    if not 1 <= steps <= setup.n_steps:
        raise ValueError(f"steps must lie in 1..{setup.n_steps}, got {steps}")
    loop = FleetLoop(setup, controller, duals)
    cols = {name: np.empty((steps, n)) for name in VALUE_COLUMNS}
    iterator: Iterable[int] = range(steps)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="plain run", unit="step")
    for t in iterator:
        values = loop.step()
        for name in VALUE_COLUMNS:
            cols[name][t] = values[name]

    frame = {
        "time": np.repeat(np.arange(steps, dtype=np.int64), n),
        "building": np.tile(np.asarray(setup.names, dtype=object), steps),
        "bus": np.tile(setup.bus, steps),
    }
    frame.update({name: cols[name].reshape(-1) for name in VALUE_COLUMNS})
    return pd.DataFrame(frame, columns=list(RESULT_COLUMNS))
