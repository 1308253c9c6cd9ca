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

**Grid limits** (``grid_limits``, a :class:`agents.control.oracle_grid.LinearGridLimits`): K
linearised limits on the buildings' net feeder consumption ``p_it = (g_it - y_it) / dt``
(kW), where the export ``y_it = s_it - ch_it`` for a building that exports PV and 0 for
one that curtails it (the model's semantics: all PV not charged is exported or
curtailed, so ch_it fixes it). K rows per step:

                offset[t, k] + sum_i sens[k, i] (g_it - y_it) / dt <= upper[k]

built as one sparse block-diagonal product (kron(I_T, sens)). The model charges PV
greedily, the LP only up to it: among equally cheap plans the LP may charge later (and
export more earlier) than the model will, which moves the grid rows' values in the
replay. With grid rows the LP is therefore solved in **two stages**:

1. minimise the cost, C* (the LP above with the grid rows);
2. add ``sum_t price_t sum_i g_it <= C* + COST_RTOL_STAGE2 |C*| + COST_ATOL_STAGE2`` and
   maximise ``sum_t w_t sum_i ch_it`` with ``w_t = (T - t) / T``: for the planned g and
   x this is the model's greedy charging (charging earlier is worth more by at least
   1/T, far above HiGHS's tolerances at any T) wherever the grid rows allow it.

Without grid rows (``grid_limits=None`` or no rows) there is one solve, and the charge
does not matter to the replay. ``OracleSchedule.grid_value`` holds the planned
linearised quantities and ``replay_grid_value`` those of the model's greedy charging
under the planned g and x (what the replay will produce). They are equal (to HiGHS's
tolerances) except where a binding row truly requires holding PV back from a battery
with room: charging cuts that building's export and so raises its net consumption, and
where a row that grows with it (a loading row while the feeder imports, a ``vm >=
v_min`` row) is at its limit in that step, the cheapest plan may need that PV exported;
the model charges it anyway, and the replay's value then exceeds the plan's there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from agents.control.oracle_grid import LinearGridLimits
from agents.fleet.actions import model_actions
from agents.fleet.building import FleetParams, battery_after
from agents.fleet.observation import FleetObservation
from grid_models.errors import InputError

#: An LP whose optimal district average differs from c by less than this is "at the limit".
LIMIT_RTOL = 1e-6
#: Stage 2 (only with grid limits) keeps the cost within ``C* (1 + COST_RTOL_STAGE2) +
#: COST_ATOL_STAGE2`` of the stage-1 optimum C* (|C*| in the relative term): room for
#: HiGHS's tolerances, far below any difference of price between plans.
COST_RTOL_STAGE2 = 1e-9
#: The absolute part of stage 2's cost slack, in the price's currency.
COST_ATOL_STAGE2 = 1e-6

OracleLimit = Literal["run_average", "per_step"]
#: How the district limit c constrains the schedule (``solve_oracle``'s ``limit``).
ORACLE_LIMITS: tuple[str, ...] = ("run_average", "per_step")


class OracleInfeasible(InputError, ValueError):
    """No schedule serves all demand under the district limit."""


@dataclass(frozen=True)
class OracleSchedule:
    """A fleet schedule planned by the oracle: energies per step and building (kWh), and cost."""

    grid_kwh: np.ndarray  # (T, N)
    battery_kwh: np.ndarray  # (T, N) delivered by the battery
    charge_kwh: np.ndarray  # (T, N) PV into the battery
    backlog_kwh: np.ndarray  # (T, N) end of step
    soc_kwh: np.ndarray  # (T, N) end of step
    cost: float
    limit_kwh: float
    limit: str = "run_average"  # ORACLE_LIMITS: c on the run's average or in every step
    export_kwh: np.ndarray | None = None  # (T, N) planned PV export, s - ch where exported
    grid_limits: LinearGridLimits | None = None
    grid_value: np.ndarray | None = None  # (T, K) planned linearised quantities
    replay_grid_value: np.ndarray | None = None  # (T, K) with the model's greedy charging
    dt_h: float = 1.0

    @property
    def net_load_kw(self) -> np.ndarray:
        """Planned net feeder consumption per building, kW (T, N) (needs ``export_kwh``)."""
        if self.export_kwh is None:
            raise ValueError("this schedule holds no export_kwh")
        result: np.ndarray = (self.grid_kwh - self.export_kwh) / self.dt_h
        return result

    @property
    def grid_peak(self) -> np.ndarray:
        """Worst planned linearised value per grid limit (K,), to compare with upper."""
        if self.grid_value is None:
            raise ValueError("this schedule was planned without grid limits")
        result: np.ndarray = self.grid_value.max(axis=0)
        return result

    @property
    def grid_peak_step(self) -> np.ndarray:
        """The step of ``grid_peak`` per grid limit (K,)."""
        if self.grid_value is None:
            raise ValueError("this schedule was planned without grid limits")
        result: np.ndarray = self.grid_value.argmax(axis=0)
        return result

    @property
    def mean_district_grid_kwh(self) -> float:
        """Planned district grid energy per step, averaged over the steps, kWh."""
        return float(self.grid_kwh.sum(axis=1).mean())

    @property
    def peak_district_grid_kwh(self) -> float:
        """Largest planned district grid energy of a step, kWh."""
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
    grid_limits: LinearGridLimits | None = None,
) -> OracleSchedule:
    """Minimum-cost schedule (see the module docstring); ``OracleInfeasible`` if none.

    ``limit``: ``"run_average"`` constrains the district's mean grid energy per step,
    ``"per_step"`` the district's grid energy of every step, to at most ``limit_kwh``.
    ``grid_limits``: linearised grid limits on the net feeder consumption, in every step.
    """
    if limit not in ORACLE_LIMITS:
        raise ValueError(f"unknown oracle limit {limit!r}; valid: {', '.join(ORACLE_LIMITS)}")
    demand = np.asarray(base_demand_kwh, float) * params.demand_scale  # (T, N)
    steps, n = demand.shape
    if grid_limits is not None and (grid_limits.n_steps, grid_limits.n_buildings) != (steps, n):
        raise ValueError(f"grid_limits: offset has {grid_limits.n_steps} steps and "
                         f"sensitivity {grid_limits.n_buildings} buildings, the run "
                         f"{steps} steps and {n} buildings")
    pv = params.pv_kw * np.maximum(np.asarray(solar_w_per_kw, float), 0.0) / 1000.0 * dt_h
    price = np.asarray(price_per_kwh, float)
    e0 = np.broadcast_to(np.asarray(initial_soc_fraction, float), (n,)) * params.capacity_kwh
    size = steps * n

    def idx(block: int) -> np.ndarray:  # variable indices of a block, (T, N)
        result: np.ndarray = block * size + np.arange(size).reshape(steps, n)
        return result

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
    exports = params.export_pv.astype(float)  # y_it = exports_i * (s_it - ch_it)
    if grid_limits is not None and grid_limits.n_limits:
        # offset + sens @ (g_t - y_t) / dt <= upper, i.e. per (t, k):
        # sens/dt @ g_t + (sens * exports)/dt @ ch_t <= upper - offset + (sens*exports)/dt @ s_t
        k = grid_limits.n_limits
        s_g = sp.csr_array(grid_limits.sensitivity / dt_h)
        s_ch = sp.csr_array(grid_limits.sensitivity * exports / dt_h)
        eye = sp.eye_array(steps, format="csr")
        block_g = sp.kron(eye, s_g, format="csr")  # (T K, T N), g's (t, i) order
        block_ch = sp.kron(eye, s_ch, format="csr")
        grid_rows = sp.hstack([block_g, sp.csr_array((steps * k, size)), block_ch,
                               sp.csr_array((steps * k, 2 * size))], format="csr")
        grid_rhs = (grid_limits.upper[None, :] - grid_limits.offset
                    + pv @ (grid_limits.sensitivity * exports).T / dt_h)
        a_ub_full = sp.vstack([a_ub, grid_rows], format="csr")
        b_ub_full = np.concatenate([b_ub, grid_rhs.ravel()])
    else:
        a_ub_full, b_ub_full = a_ub, b_ub

    energy_limit = np.broadcast_to(params.power_kw * dt_h, (steps, n))
    lower = np.zeros(n_var)
    upper = np.full(n_var, np.inf)
    upper[x.ravel()] = energy_limit.ravel()
    upper[ch.ravel()] = np.minimum(pv, energy_limit).ravel()
    cap_b = np.broadcast_to(params.backlog_cap_kwh, (steps, n)).copy()
    cap_b[-1] = 0.0  # everything served by the end of the run
    upper[b.ravel()] = cap_b.ravel()
    upper[e.ravel()] = np.broadcast_to(params.capacity_kwh, (steps, n)).ravel()

    bounds = np.stack([lower, upper], axis=1)
    res = linprog(cost, A_ub=a_ub_full, b_ub=b_ub_full, A_eq=a_eq, b_eq=rhs,
                  bounds=bounds, method="highs")
    if res.status == 2 and a_ub_full is not a_ub:
        assert grid_limits is not None
        alone = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=rhs, bounds=bounds,
                        method="highs")
        if alone.status == 0:
            at_zero = np.asarray((grid_limits.offset > grid_limits.upper).any(axis=0))
            zero = [nm for nm, bad in zip(grid_limits.names, at_zero, strict=True) if bad]
            note = (f"; already exceeded at zero fleet consumption in some step: "
                    f"{', '.join(zero[:8])}" if zero else "")
            raise OracleInfeasible(
                f"no schedule serves all demand with the linearised grid limits "
                f"({grid_limits.describe()}){note}; the district limit alone "
                f"({limit}, {limit_kwh:.3f} kWh) is feasible: relax the grid limits "
                f"(a higher loading limit, a wider voltage band, fewer elements), or give "
                f"the fleet more room to shift (larger backlog caps, batteries)"
            )
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
    if a_ub_full is not a_ub:
        sol = _stage2_greedy_charge(res, cost, ch, a_ub_full, b_ub_full, a_eq, rhs, bounds)
    grid_kwh = np.maximum(sol[g], 0.0)
    battery_kwh = np.maximum(sol[x], 0.0)
    charge_kwh = np.clip(sol[ch], 0.0, upper[ch])
    export_kwh = exports * (pv - charge_kwh)
    grid_value = replay_value = None
    if grid_limits is not None:
        grid_value = grid_limits.value((grid_kwh - export_kwh) / dt_h)
        model_charge = greedy_charge_kwh(params, battery_kwh, pv, dt_h, e0)
        replay_value = grid_limits.value((grid_kwh - exports * (pv - model_charge)) / dt_h)
    return OracleSchedule(
        grid_kwh=grid_kwh, battery_kwh=battery_kwh,
        charge_kwh=charge_kwh, backlog_kwh=sol[b], soc_kwh=sol[e],
        cost=float(price @ sol[g].sum(axis=1)),
        limit_kwh=float(limit_kwh), limit=limit, export_kwh=export_kwh,
        grid_limits=grid_limits, grid_value=grid_value, replay_grid_value=replay_value,
        dt_h=float(dt_h),
    )


def _stage2_greedy_charge(stage1: Any,  # scipy's OptimizeResult (scipy ships no types)
                          cost: np.ndarray, ch: np.ndarray, a_ub: sp.csr_array,
                          b_ub: np.ndarray, a_eq: sp.csr_array, b_eq: np.ndarray,
                          bounds: np.ndarray) -> np.ndarray:
    """Stage 2: the model's greedy charging among the (near) cost-optimal plans.

    Adds ``cost @ v <= C* + max(COST_RTOL_STAGE2 |C*|, 0) + COST_ATOL_STAGE2`` and
    maximises ``sum_t w_t sum_i ch_it`` with ``w_t = (T - t) / T`` (each step's charge
    worth more than any later step's, by at least 1/T: well above HiGHS's tolerances at
    any T). Falls back to stage 1's solution (with a warning) should HiGHS fail.
    """
    steps, n = ch.shape
    c_star = float(stage1.fun)
    cap = c_star + COST_RTOL_STAGE2 * abs(c_star) + COST_ATOL_STAGE2
    a_ub2 = sp.vstack([a_ub, sp.csr_array(cost[None, :])], format="csr")
    b_ub2 = np.append(b_ub, cap)
    weight = (steps - np.arange(steps)) / steps
    objective = np.zeros_like(cost)
    objective[ch.ravel()] = -np.repeat(weight, n)
    res = linprog(objective, A_ub=a_ub2, b_ub=b_ub2, A_eq=a_eq, b_eq=b_eq, bounds=bounds,
                  method="highs")
    if res.status != 0:
        warnings.warn(f"oracle stage 2 (greedy charging) failed, keeping stage 1's plan: "
                      f"{res.message}", RuntimeWarning, stacklevel=3)
        result: np.ndarray = stage1.x
        return result
    result = res.x
    return result


def greedy_charge_kwh(params: FleetParams, battery_kwh: np.ndarray, pv_kwh: np.ndarray,
                      dt_h: float, e0: np.ndarray) -> np.ndarray:
    """PV into the battery as ``step_fleet`` charges it, given the discharges (T, N)."""
    soc = np.asarray(e0, float).copy()
    out = np.empty_like(battery_kwh)
    for t in range(battery_kwh.shape[0]):
        x = np.minimum(battery_kwh[t], soc * params.eta_discharge)
        out[t], soc = battery_after(params, soc, x, pv_kwh[t], dt_h)
    return out


class OracleController:
    """Replays an ``OracleSchedule`` (one ``act`` call per step, in order)."""

    name = "oracle"

    def __init__(self, schedule: OracleSchedule, index: np.ndarray | None = None) -> None:
        self.grid_kwh = schedule.grid_kwh if index is None else schedule.grid_kwh[:, index]
        self.battery_kwh = (schedule.battery_kwh if index is None
                            else schedule.battery_kwh[:, index])
        self.t = 0

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Actions that take the next step's planned grid and battery energy, capped by demand.

        Raises:
            RuntimeError: if the schedule has no steps left.
        """
        if self.t >= self.grid_kwh.shape[0]:
            raise RuntimeError(f"the oracle's schedule holds {self.grid_kwh.shape[0]} steps")
        to_serve = obs.demand_kwh + obs.backlog_kwh
        g = np.minimum(self.grid_kwh[self.t], to_serve)
        x = np.minimum(self.battery_kwh[self.t], to_serve - g)
        self.t += 1
        return model_actions(g, x, to_serve)

    def snapshot(self) -> dict[str, np.ndarray]:
        """The replay position, for :meth:`restore`."""
        return {"t": np.array(self.t, dtype=np.int64)}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Continue the replay from the position of a :meth:`snapshot`."""
        self.t = int(snap["t"])
