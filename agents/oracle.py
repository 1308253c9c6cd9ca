"""The perfect-foresight optimum: a linear program over the whole run (scipy HiGHS).

With every profile known in advance, the minimum-cost schedule of the fleet
under the building dynamics of docs/equations.md and the district constraint:

    minimise    sum_t sum_i price_t * g_it
    subject to  b_it = b_i,t-1 + d_it - g_it - x_it              (backlog; nothing dropped)
                e_it = e_i,t-1 - x_it / eta_dis_i + eta_ch_i * ch_it   (battery)
                0 <= b_it <= B_max_i,   b_i,T-1 = 0              (all demand served by the end)
                0 <= e_it <= E_i,   0 <= x_it <= P_i dt,   0 <= ch_it <= min(s_it, P_i dt)
                x_it <= eta_dis_i * e_i,t-1     (discharge from the energy held at the step's
                                                 start: the model discharges before it charges)
                g_it >= 0
                (1/T) sum_t sum_i g_it <= c                       (the district limit, on average)

With ``limit="run_average"`` (the default) the district constraint is on the
run's average, as the dual dynamics enforce it (lambda integrates c/N - V1).
With ``limit="per_step"`` it holds in every step instead, T rows in place of one:

                sum_i g_it <= c   for every t

a tighter problem (any per-step schedule meets the average), so its cost is at
least the run-average optimum, equal when c does not bind in any step.

``OracleController`` replays the schedule through the same building model: at
step t it asks for ``g_it`` from the grid and ``x_it`` from the battery. The model
charges the battery greedily from PV, which leaves at least the planned energy in
it, so the planned discharge is always available and the replay follows the plan
(to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from agents.building import FleetParams
from agents.observation import FleetObservation

#: An LP whose optimal district average differs from c by less than this is "at the limit".
LIMIT_RTOL = 1e-6

OracleLimit = Literal["run_average", "per_step"]
#: How the district limit c constrains the schedule (``solve_oracle``'s ``limit``).
ORACLE_LIMITS: tuple[str, ...] = ("run_average", "per_step")


class OracleInfeasible(ValueError):
    """No schedule serves all demand under the district limit."""


@dataclass(frozen=True)
class OracleSchedule:
    grid_kwh: np.ndarray  # (T, N)
    battery_kwh: np.ndarray  # (T, N) delivered by the battery
    charge_kwh: np.ndarray  # (T, N) PV into the battery
    backlog_kwh: np.ndarray  # (T, N) end of step
    soc_kwh: np.ndarray  # (T, N) end of step
    cost: float
    limit_kwh: float
    limit: str = "run_average"  # ORACLE_LIMITS: c on the run's average or in every step

    @property
    def mean_district_grid_kwh(self) -> float:
        return float(self.grid_kwh.sum(axis=1).mean())

    @property
    def peak_district_grid_kwh(self) -> float:
        return float(self.grid_kwh.sum(axis=1).max())


def solve_oracle(
    params: FleetParams,
    base_demand_kwh: np.ndarray,
    solar_w_per_kw: np.ndarray,
    price_per_kwh: np.ndarray,
    limit_kwh: float,
    dt_h: float = 1.0,
    initial_soc_fraction: float | np.ndarray = 0.0,
    limit: OracleLimit = "run_average",
) -> OracleSchedule:
    """Minimum-cost schedule (see the module docstring); ``OracleInfeasible`` if none.

    ``limit``: ``"run_average"`` constrains the district's mean grid energy per step,
    ``"per_step"`` the district's grid energy of every step, to at most ``limit_kwh``.
    """
    if limit not in ORACLE_LIMITS:
        raise ValueError(f"unknown oracle limit {limit!r}; valid: {', '.join(ORACLE_LIMITS)}")
    demand = np.asarray(base_demand_kwh, float) * params.demand_scale  # (T, N)
    steps, n = demand.shape
    pv = params.pv_kw * np.maximum(np.asarray(solar_w_per_kw, float), 0.0) / 1000.0 * dt_h
    price = np.asarray(price_per_kwh, float)
    e0 = np.broadcast_to(np.asarray(initial_soc_fraction, float), (n,)) * params.capacity_kwh
    size = steps * n

    def idx(block: int) -> np.ndarray:  # variable indices of a block, (T, N)
        return block * size + np.arange(size).reshape(steps, n)

    g, x, ch, b, e = (idx(k) for k in range(5))
    n_var = 5 * size
    cost = np.zeros(n_var)
    cost[g.ravel()] = np.repeat(price, n)

    rows, cols, vals = [], [], []
    rhs = np.zeros(2 * size)

    def add(row: np.ndarray, var: np.ndarray, value: float | np.ndarray) -> None:
        rows.append(row.ravel())
        cols.append(var.ravel())
        vals.append(np.broadcast_to(value, var.shape).ravel())

    # backlog: b_t - b_{t-1} + g_t + x_t = d_t
    r_b = np.arange(size).reshape(steps, n)
    add(r_b, b, 1.0)
    add(r_b[1:], b[:-1], -1.0)
    add(r_b, g, 1.0)
    add(r_b, x, 1.0)
    rhs[:size] = demand.ravel()
    # battery: e_t - e_{t-1} + x_t / eta_dis - eta_ch ch_t = 0 (e_{-1} = e0)
    r_e = size + r_b
    add(r_e, e, 1.0)
    add(r_e[1:], e[:-1], -1.0)
    add(r_e, x, np.broadcast_to(1.0 / params.eta_discharge, (steps, n)))
    add(r_e, ch, np.broadcast_to(-params.eta_charge, (steps, n)))
    rhs[size:size + n] = e0
    a_eq = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(2 * size, n_var))
    # the district limit: one row (run average: sum_t sum_i g_it <= c T) or one per step
    # (sum_i g_it <= c); then x_t - eta_dis e_{t-1} <= 0 (x_0 <= eta_dis e0)
    per_step = limit == "per_step"
    n_lim = steps if per_step else 1
    r_lim = np.repeat(np.arange(steps), n) if per_step else np.zeros(size, dtype=int)
    r_x = n_lim + np.arange(size).reshape(steps, n)
    eta_d = np.broadcast_to(params.eta_discharge, (steps, n))
    ub_rows = [r_lim, r_x.ravel(), r_x[1:].ravel()]
    ub_cols = [g.ravel(), x.ravel(), e[:-1].ravel()]
    ub_vals = [np.ones(size), np.ones(size), -eta_d[1:].ravel()]
    a_ub = sp.csr_array((np.concatenate(ub_vals), (np.concatenate(ub_rows),
                                                   np.concatenate(ub_cols))),
                        shape=(n_lim + size, n_var))
    b_ub = np.zeros(n_lim + size)
    b_ub[:n_lim] = limit_kwh if per_step else limit_kwh * steps
    b_ub[n_lim:n_lim + n] = params.eta_discharge * e0

    energy_limit = np.broadcast_to(params.power_kw * dt_h, (steps, n))
    lower = np.zeros(n_var)
    upper = np.full(n_var, np.inf)
    upper[x.ravel()] = energy_limit.ravel()
    upper[ch.ravel()] = np.minimum(pv, energy_limit).ravel()
    cap_b = np.broadcast_to(params.backlog_cap_kwh, (steps, n)).copy()
    cap_b[-1] = 0.0  # everything served by the end of the run
    upper[b.ravel()] = cap_b.ravel()
    upper[e.ravel()] = np.broadcast_to(params.capacity_kwh, (steps, n)).ravel()

    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=rhs,
                  bounds=np.stack([lower, upper], axis=1), method="highs")
    if res.status == 2:
        if per_step:
            cap = float(np.max(params.backlog_cap_kwh))
            raise OracleInfeasible(
                f"no schedule serves all demand with at most {limit_kwh:.3f} kWh from the "
                f"grid in every one of the {steps} steps (per_step limit: the district's "
                f"demand reaches {demand.sum(axis=1).max():.3f} kWh in a step; what exceeds "
                f"c must wait in the backlogs, at most {cap:g} kWh a building and empty at "
                f"the end, or come from the batteries); a run_average limit is looser"
            )
        raise OracleInfeasible(
            f"no schedule serves all demand with a district average of at most "
            f"{limit_kwh:.3f} kWh per step over {steps} steps (total demand "
            f"{demand.sum():.1f} kWh, at most {pv.sum():.1f} kWh of PV)"
        )
    if res.status != 0:
        raise RuntimeError(f"oracle LP failed: {res.message}")
    sol = res.x
    return OracleSchedule(
        grid_kwh=np.maximum(sol[g], 0.0), battery_kwh=np.maximum(sol[x], 0.0),
        charge_kwh=sol[ch], backlog_kwh=sol[b], soc_kwh=sol[e], cost=float(res.fun),
        limit_kwh=float(limit_kwh), limit=limit,
    )


class OracleController:
    """Replays an ``OracleSchedule`` (one ``act`` call per step, in order)."""

    name = "oracle"

    def __init__(self, schedule: OracleSchedule, index: np.ndarray | None = None) -> None:
        self.grid_kwh = schedule.grid_kwh if index is None else schedule.grid_kwh[:, index]
        self.battery_kwh = (schedule.battery_kwh if index is None
                            else schedule.battery_kwh[:, index])
        self.t = 0

    def act(self, obs: FleetObservation) -> np.ndarray:
        if self.t >= self.grid_kwh.shape[0]:
            raise RuntimeError(f"the oracle's schedule holds {self.grid_kwh.shape[0]} steps")
        to_serve = obs.demand_kwh + obs.backlog_kwh
        g = np.minimum(self.grid_kwh[self.t], to_serve)
        rest = to_serve - g
        x = np.minimum(self.battery_kwh[self.t], rest)
        actions = np.empty((obs.n, 2))
        actions[:, 0] = np.divide(g, to_serve, out=np.zeros(obs.n), where=to_serve > 0)
        actions[:, 1] = np.divide(x, rest, out=np.zeros(obs.n), where=rest > 0)
        self.t += 1
        return np.clip(actions, 0.0, 1.0)

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"t": np.array(self.t, dtype=np.int64)}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        self.t = int(snap["t"])
