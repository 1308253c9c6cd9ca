"""Building dynamics of docs/equations.md, vectorised over N buildings.

One call of :func:`step_fleet` steps the whole fleet with numpy. Energies are
kWh per step, powers kW, ``dt_h`` is the step length in hours. Pure domain
code: no mosaik, no torch.

Per building and step::

    d  = demand_scale * base_demand_kwh            new demand
    s  = pv_kw * solar_w_per_kw / 1000 * dt_h        PV yield
    D  = d + b                                       demand to serve now
    g  = u_grid * D                                  from the grid
    x  = min(u_batt * (D - g), e * eta_dis, P * dt)  from the battery
    unmet = D - g - x;  b' = min(unmet, B_max);  dropped = unmet - b'
    c  = min(s, P * dt, (E_max - (e - x / eta_dis)) / eta_ch)   PV into the battery
    e' = min(E_max, e - x / eta_dis + eta_ch * c)
    PV not stored is exported (negative feeder load) or curtailed.

Invariant: ``d + b == g + x + b' + dropped`` (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from agents.fleet.data import BuildingData


def _as_fleet_array(name: str, value: object, n: int, dtype: type = np.float64) -> np.ndarray:
    arr: np.ndarray = np.asarray(value, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(n, arr, dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected a scalar or {n} values, got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class FleetParams:
    """Per-building parameters, each an array of shape (N,)."""

    capacity_kwh: np.ndarray
    power_kw: np.ndarray
    eta_charge: np.ndarray
    eta_discharge: np.ndarray
    pv_kw: np.ndarray
    demand_scale: np.ndarray
    backlog_cap_kwh: np.ndarray  # may be inf: no cap, nothing is ever dropped
    export_pv: np.ndarray  # bool: True exports surplus PV, False curtails it

    def __post_init__(self) -> None:
        n = int(np.asarray(self.capacity_kwh).reshape(-1).shape[0])
        for f in fields(self):
            dtype = bool if f.name == "export_pv" else np.float64
            arr = _as_fleet_array(f.name, getattr(self, f.name), n, dtype)
            object.__setattr__(self, f.name, arr)
            if dtype is bool:
                continue
            finite = np.isfinite(arr) | ((arr == np.inf) & (f.name == "backlog_cap_kwh"))
            if not finite.all() or (arr < 0).any():
                raise ValueError(f"{f.name}: every value must be finite and >= 0, got {arr}")
        for name in ("eta_charge", "eta_discharge"):
            eta = getattr(self, name)
            if ((eta <= 0) | (eta > 1)).any():
                raise ValueError(f"{name}: every value must lie in (0, 1], got {eta}")

    @property
    def n(self) -> int:
        """Number of buildings N."""
        return int(self.capacity_kwh.shape[0])

    @classmethod
    def uniform(cls, n: int, **values: object) -> FleetParams:
        """N identical buildings (CityLearn 2022 defaults unless overridden)."""
        defaults: dict[str, object] = dict(
            capacity_kwh=6.4,
            power_kw=5.0,
            eta_charge=0.9**0.5,
            eta_discharge=0.9**0.5,
            pv_kw=4.0,
            demand_scale=1.0,
            backlog_cap_kwh=np.inf,
            export_pv=True,
        )
        unknown = set(values) - set(defaults)
        if unknown:
            raise TypeError(f"unknown parameter(s) {sorted(unknown)}; valid: {sorted(defaults)}")
        defaults.update(values)
        return cls(**{k: _as_fleet_array(k, v, n, bool if k == "export_pv" else np.float64)
                      for k, v in defaults.items()})

    @classmethod
    def from_buildings(
        cls,
        buildings: Sequence[BuildingData],
        demand_scale: Sequence[float] | np.ndarray | float = 1.0,
        backlog_cap_kwh: Sequence[float] | float = np.inf,
        export_pv: Sequence[bool] | bool = True,
    ) -> FleetParams:
        """Parameters from CityLearn ``schema.json`` values.

        CityLearn's battery ``efficiency`` is a round-trip figure that it applies
        as its square root on charge and on discharge; so do we.
        """
        n = len(buildings)
        eta = np.array([b.battery.efficiency for b in buildings]) ** 0.5
        return cls(
            capacity_kwh=np.array([b.battery.capacity_kwh for b in buildings]),
            power_kw=np.array([b.battery.power_kw for b in buildings]),
            eta_charge=eta,
            eta_discharge=eta.copy(),
            pv_kw=np.array([b.pv_kw for b in buildings]),
            demand_scale=_as_fleet_array("demand_scale", demand_scale, n),
            backlog_cap_kwh=_as_fleet_array("backlog_cap_kwh", backlog_cap_kwh, n),
            export_pv=_as_fleet_array("export_pv", export_pv, n, bool),
        )

    def select(self, index: np.ndarray | slice | Sequence[int]) -> FleetParams:
        """The parameters of a sub-fleet (used to compare fleet and single steps)."""
        return replace(self, **{f.name: np.atleast_1d(getattr(self, f.name)[index])
                                for f in fields(self)})


@dataclass(frozen=True)
class FleetState:
    """State at the start of a step: backlog and battery energy, shape (N,)."""

    backlog_kwh: np.ndarray
    soc_kwh: np.ndarray

    @classmethod
    def initial(cls, params: FleetParams, soc_fraction: float | np.ndarray = 0.0) -> FleetState:
        """Empty backlogs and batteries holding ``soc_fraction`` of their capacity.

        Raises:
            ValueError: if ``soc_fraction`` is neither a scalar nor N values, or a fraction
                lies outside [0, 1].
        """
        frac = _as_fleet_array("soc_fraction", soc_fraction, params.n)
        if ((frac < 0) | (frac > 1)).any():
            raise ValueError(f"soc_fraction must lie in [0, 1], got {frac}")
        return cls(np.zeros(params.n), frac * params.capacity_kwh)

    def select(self, index: np.ndarray | slice | Sequence[int]) -> FleetState:
        """The state of the buildings picked by ``index`` (always 1-D arrays)."""
        return FleetState(
            np.atleast_1d(self.backlog_kwh[index]), np.atleast_1d(self.soc_kwh[index])
        )


@dataclass(frozen=True)
class StepResult:
    """What one step did, per building (arrays of shape (N,)).

    ``backlog_kwh`` and ``soc_kwh`` are the states at the END of the step.
    """

    demand_kwh: np.ndarray  # new demand d
    grid_kwh: np.ndarray  # g
    battery_kwh: np.ndarray  # x, delivered by the battery
    unmet_kwh: np.ndarray  # D - g - x = backlog + dropped
    dropped_kwh: np.ndarray  # unmet above the backlog cap
    backlog_kwh: np.ndarray  # b'
    soc_kwh: np.ndarray  # e'
    pv_kwh: np.ndarray  # s
    pv_to_battery_kwh: np.ndarray  # PV energy taken by the battery (before losses)
    export_kwh: np.ndarray  # PV exported to the feeder
    curtailed_kwh: np.ndarray  # PV neither stored nor exported
    price_per_kwh: np.ndarray
    cost: np.ndarray  # price * g

    @property
    def served_kwh(self) -> np.ndarray:
        """Demand served this step, grid plus battery, kWh."""
        result: np.ndarray = self.grid_kwh + self.battery_kwh
        return result

    def net_load_kw(self, dt_h: float) -> np.ndarray:
        """Net consumption on the feeder, kW (negative when exporting)."""
        result: np.ndarray = (self.grid_kwh - self.export_kwh) / dt_h
        return result


def exogenous_kwh(
    params: FleetParams, base_demand_kwh: np.ndarray, solar_w_per_kw: np.ndarray, dt_h: float
) -> tuple[np.ndarray, np.ndarray]:
    """New demand ``d`` and PV yield ``s`` of this step, kWh, shape (N,)."""
    demand = params.demand_scale * _as_fleet_array("base_demand_kwh", base_demand_kwh, params.n)
    solar = _as_fleet_array("solar_w_per_kw", solar_w_per_kw, params.n)
    pv = params.pv_kw * np.maximum(solar, 0.0) / 1000.0 * dt_h
    return demand, pv


def battery_after(params: FleetParams, soc_kwh: np.ndarray, battery_kwh: np.ndarray,
                  pv_kwh: np.ndarray, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """The battery's step after it delivered ``battery_kwh``: PV taken greedily (before
    losses) and the energy held at the end, ``(pv_to_battery, e')``, kWh."""
    soc_after_discharge = np.maximum(soc_kwh - battery_kwh / params.eta_discharge, 0.0)
    room = np.maximum(params.capacity_kwh - soc_after_discharge, 0.0) / params.eta_charge
    pv_to_battery = np.minimum(np.minimum(pv_kwh, params.power_kw * dt_h), room)
    soc = np.minimum(params.capacity_kwh, soc_after_discharge + params.eta_charge * pv_to_battery)
    return pv_to_battery, soc


def step_fleet(
    params: FleetParams,
    state: FleetState,
    base_demand_kwh: np.ndarray,
    solar_w_per_kw: np.ndarray,
    price_per_kwh: np.ndarray | float,
    u_grid: np.ndarray,
    u_batt: np.ndarray,
    dt_h: float = 1.0,
) -> tuple[FleetState, StepResult]:
    """Step N buildings at once. Actions are clipped to [0, 1]."""
    n = params.n
    price = _as_fleet_array("price_per_kwh", price_per_kwh, n)
    ug = np.clip(_as_fleet_array("u_grid", u_grid, n), 0.0, 1.0)
    ub = np.clip(_as_fleet_array("u_batt", u_batt, n), 0.0, 1.0)
    if dt_h <= 0:
        raise ValueError(f"dt_h must be > 0, got {dt_h}")

    demand, pv = exogenous_kwh(params, base_demand_kwh, solar_w_per_kw, dt_h)
    to_serve = demand + state.backlog_kwh
    grid = ug * to_serve
    energy_limit = params.power_kw * dt_h
    battery = np.minimum(
        np.minimum(ub * (to_serve - grid), state.soc_kwh * params.eta_discharge), energy_limit
    )
    unmet = to_serve - grid - battery
    backlog = np.minimum(unmet, params.backlog_cap_kwh)
    dropped = unmet - backlog

    pv_to_battery, soc = battery_after(params, state.soc_kwh, battery, pv, dt_h)
    surplus = pv - pv_to_battery
    export = np.where(params.export_pv, surplus, 0.0)
    curtailed = surplus - export

    result = StepResult(
        demand_kwh=demand,
        grid_kwh=grid,
        battery_kwh=battery,
        unmet_kwh=unmet,
        dropped_kwh=dropped,
        backlog_kwh=backlog,
        soc_kwh=soc,
        pv_kwh=pv,
        pv_to_battery_kwh=pv_to_battery,
        export_kwh=export,
        curtailed_kwh=curtailed,
        price_per_kwh=price,
        cost=price * grid,
    )
    return FleetState(backlog, soc), result
