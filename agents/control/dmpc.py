"""Distributed MPC by dual decomposition (``controller.kind: dmpc``).

After Esfahani & Velni, *Cooperative Multi-Agent Q-Learning using Distributed MPC*:
every building solves its own receding-horizon problem, and the buildings negotiate the
multipliers of the constraints that couple them (:class:`agents.control.coupling.CouplingRows`)
by column generation with a coordinator, or by a projected subgradient method under
consensus. Pure domain code (numpy, HiGHS through highspy and scipy, networkx).

**Local problem of building i at step t** (horizon k = 0..H-1; d, s, price from the
forecast, with the step's own demand and PV as observed; b0, e0 the observed state)::

    minimise   sum_k (price_k + sum_r mu_rk w_grid_ri) g_k
             + sum_k sum_r mu_rk w_export_ri export_i ch_k
             - soc_value_i e_H-1 + backlog_value b_H-1
    s.t.       b_k = b_k-1 + d_k - g_k - x_k              (b_-1 = b0)
               e_k = e_k-1 - x_k / eta_dis + eta_ch ch_k   (e_-1 = e0)
               x_k <= eta_dis e_k-1                        (discharge before charge)
               0 <= b_k <= B_max, 0 <= e_k <= E, 0 <= x_k <= P dt,
               0 <= ch_k <= min(s_k, P dt), g_k >= 0

the oracle's dynamics (:mod:`agents.control.oracle`) over H steps, with the value of the energy
left in the battery and the cost of the backlog left at the horizon's end in place of
the oracle's "all served by the end". The export is ``y = export_pv (s - ch)``, so the
multiplier of a row that counts export prices the PV charged (``-w_export y`` is
``w_export export_pv ch`` plus a constant). Defaults: ``soc_value_i = eta_dis_i x`` the
horizon's mean price (a stored kWh saves about that much later), ``backlog_value = 1.05
x`` its highest price (postponing past the horizon never pays).

**Negotiation** (each step; multipliers mu (R, H) >= 0, warm-started from the previous
step's, shifted by one step). Iteration j = 1, 2, ...:

1. every building solves its local problem with the current mu;
2. the coupling values ``v_kr = offset_kr + sum_i (w_grid_ri g_ik - w_export_ri y_ik)``
   and relative excess ``e_kr = (v_kr - upper_r) / max(|upper_r|, 1e-9)``; the dual
   function ``D(mu)`` (the Lagrangian at the buildings' answers) is a lower bound on the
   horizon's optimum;
3. with a **coordinator** (column generation, Dantzig-Wolfe): the plans join the
   restricted master problem (below), whose optimum is the recovered plan's cost with any
   excess at a penalty and whose row duals are the next prices; the next mu is
   ``smoothing x`` the multipliers of the best bound so far ``+ (1 - smoothing) x``
   those prices (Wentges smoothing). It stops once the master's optimum is within
   ``tolerance`` of the best bound (a certificate of near-optimality), or after
   ``iterations``. Under **consensus** there is no master: ``mu <- max(0, mu + step /
   sqrt(j) x e^T)`` with each agent's own estimate of e, stopping once the ergodic
   average of the plans (below) exceeds no row by more than ``tolerance`` and its cost
   is within ``tolerance`` of the best bound.

The sum is obtained by a **coordinator** (each building sends its plan's contribution
and receives mu: 2N messages per iteration) or by **consensus** on the communication
graph: each agent starts from its own contribution, ``consensus_rounds`` rounds of
Metropolis-Hastings averaging (2 x edges messages a round) give each its estimate of the
mean, N times which is its estimate of the sum; each agent then updates its own copy of
mu and plans with it.

**Primal recovery.** A linear local problem answers a price with a corner of its
feasible set, so the plans of one iteration jump over the limit and back (all buildings
move their load to the same hour together). The coordinator recovers the plan from the
buildings' proposals: per building, the least-cost convex combination of the plans it
proposed so far that keeps the coupling rows (the restricted master LP, :class:`_Master`,
kept in HiGHS through the step and re-solved from its last basis; excess is allowed at
``RECOVERY_PENALTY`` x the highest price per kWh moved, used only where no combination
fits; each building's combination is feasible for its own dynamics). The master starts
each step with the last step's chosen plans one step on (:meth:`DmpcController._seed`).
Under consensus, with no coordinator, the plan is the ergodic average of the iterations'
plans (Nedic & Ozdaglar 2009). Only the first step is applied: ``g_0`` and ``x_0``
become the model's actions (capped by what there is to serve, as the oracle's replay
does).

**Batching.** The local problems are independent; for speed, up to ``chunk`` of them
go to HiGHS together as one block-diagonal program (no row couples two blocks, so its
solution is each building's own optimum), and buildings whose local problems are
identical (same parameters, state, forecast and prices; e.g. generated fleets that
cycle a few profiles) are solved once (``dedupe``). Each block keeps its HiGHS model
through the run (``local_solver: persistent``): a new iteration changes its costs, a new
step its bounds, and HiGHS starts from the block's last basis within a step (cold at a
step's start, so a step's plans do not depend on earlier steps' bases and a restored
controller continues identically). ``threads`` blocks are solved at once (HiGHS runs
outside Python's lock; each block its own model, so the plans do not depend on the
threads). ``timing`` accumulates the wall seconds of the local problems (``solve_s``),
of the master problem (``master_s``) and of the rest of the negotiation
(``negotiation_s``).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import highspy
import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linprog

from agents.consensus.metropolis import metropolis_matrix
from agents.control.coupling import CouplingRows, Forecast
from agents.fleet.actions import model_actions
from agents.fleet.building import FleetParams
from agents.fleet.observation import FleetObservation
from grid_models.support.settings import check_settings, setting

NEGOTIATIONS = ("coordinator", "consensus")
#: How the local problems are solved (:class:`LocalProblems`).
LOCAL_SOLVERS = ("persistent", "linprog")
#: Persistent HiGHS models kept per controller (one per block of buildings and horizon).
MAX_MODELS = 256
#: The smallest |upper| a relative excess divides by.
UPPER_FLOOR = 1e-9
#: Primal recovery allows excess over a coupling row at this many times the horizon's
#: highest price per kWh moved (:meth:`DmpcController._penalty`; it is used only where no
#: combination fits), which also caps the coordinator's prices.
RECOVERY_PENALTY = 100.0
#: The smallest |primal cost| ($) the duality gap is compared with.
GAP_FLOOR = 1e-6
#: A seed plan (:meth:`DmpcController._seed`) may break its building's bounds by this many
#: kWh (HiGHS's tolerances on the plan it came from).
SEED_ATOL = 1e-7
#: The default terminal cost of backlog is this times the horizon's highest price.
BACKLOG_VALUE_FACTOR = 1.05
#: HiGHS without presolve: a third faster on these small blocks (measured), same optimum.
HIGHS_OPTIONS = {"presolve": False}
#: HiGHS's ``simplex_strategy`` value of the primal simplex.
PRIMAL_SIMPLEX = 4
#: Variables of a building per horizon step: grid, battery out, PV charge, backlog, energy.
N_KINDS = 5
G, X, CH, B, E = range(N_KINDS)


@dataclass(frozen=True)
class DmpcConfig:
    """The settings of a DMPC controller (module docstring; scenario ``controller.dmpc_*``)."""

    horizon: int = setting(24, ge=1, integer=True, doc="hours each building plans ahead")
    iterations: int = setting(30, ge=1, integer=True,
                              doc="most negotiation iterations per step")
    tolerance: float = setting(0.01, gt=0, doc="relative gap to the dual bound (and, under "
                               "consensus, relative excess) at which negotiation stops")
    step: float = setting(0.05, gt=0, doc="consensus: subgradient step, $/kWh per unit of "
                          "relative excess")
    smoothing: float = setting(0.5, ge=0, le=0.9, doc="coordinator: share of the best-bound "
                               "multipliers in the next prices (Wentges smoothing)")
    negotiation: str = setting("coordinator", doc="how the fleet's sum is obtained: "
                               "coordinator, or consensus on the communication graph")
    consensus_rounds: int = setting(10, ge=1, integer=True,
                                    doc="averaging rounds per negotiation iteration")
    soc_value: float | None = setting(None, ge=0, doc="$/kWh of stored energy at the "
                                      "horizon's end; none: eta x the horizon's mean price")
    backlog_value: float | None = setting(None, ge=0, doc="$/kWh of backlog at the horizon's "
                                          "end; none: 1.05 x the horizon's highest price")
    chunk: int = setting(64, ge=1, integer=True, doc="local problems solved per LP")
    dedupe: bool = True
    threads: int = setting(1, ge=1, integer=True, doc="threads solving blocks of local "
                           "problems at once (HiGHS runs outside Python's lock)")
    master_groups: int | None = setting(None, ge=1, integer=True, doc="coordinator: at "
                                        "most this many weight groups in the master "
                                        "problem; none: one per distinct building")
    local_solver: str = setting("persistent", doc="persistent: each block's HiGHS model "
                                "kept alive, only costs and bounds change; linprog: a "
                                "fresh model per call")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.negotiation not in NEGOTIATIONS:
            raise ValueError(f"negotiation must be one of {', '.join(NEGOTIATIONS)}, got "
                             f"{self.negotiation!r}")
        if self.local_solver not in LOCAL_SOLVERS:
            raise ValueError(f"local_solver must be one of {', '.join(LOCAL_SOLVERS)}, got "
                             f"{self.local_solver!r}")


@dataclass(frozen=True)
class LocalPlans:
    """The local problems' solutions, one row per building, (N, H) each (kWh)."""

    grid_kwh: np.ndarray
    battery_kwh: np.ndarray
    charge_kwh: np.ndarray
    backlog_kwh: np.ndarray
    soc_kwh: np.ndarray

    def average(self, other: LocalPlans, weight: float) -> LocalPlans:
        """``(1 - weight) self + weight other``, plan by plan."""
        return LocalPlans(*[(1.0 - weight) * a + weight * b for a, b in
                            zip(self.arrays(), other.arrays(), strict=True)])

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The five arrays in field order."""
        return (self.grid_kwh, self.battery_kwh, self.charge_kwh, self.backlog_kwh,
                self.soc_kwh)


@dataclass
class DmpcStep:
    """The negotiation of one step."""

    plans: LocalPlans
    mu: np.ndarray  # (R, H) coordinator, (N, R, H) consensus: the last multipliers used
    iterations: int
    converged: bool
    max_rel_excess: float
    messages: int
    cost_planned: float
    dual_bound: float = -math.inf  # the best dual function value seen (a lower bound)
    objective: float = math.nan  # the chosen plans' local objectives, summed ($)


@dataclass
class LocalProblems:
    """Every building's local problem over the horizon, solved with HiGHS (module docstring).

    ``solve`` takes per-building costs and the step's data. The constraint matrix of a
    block of buildings depends only on their parameters and the horizon. ``solver``:

    - ``persistent`` (default): each block's HiGHS model (highspy) is built once and kept
      alive; later calls change only its costs, bounds and right-hand sides and HiGHS
      restarts from the block's last optimal basis (a few pivots where a few prices moved);
    - ``linprog``: a fresh model per call through scipy's ``linprog`` (the earlier path).
    """

    params: FleetParams
    dt_h: float = 1.0
    chunk: int = 64
    timing: dict[str, float] = field(default_factory=lambda: {"solve_s": 0.0})
    solver: str = "persistent"
    threads: int = 1
    models: dict[tuple[int, bytes], _Block] = field(default_factory=dict)
    pool: ThreadPoolExecutor | None = None

    def solve(self, cost_grid: np.ndarray, cost_charge: np.ndarray, demand_kwh: np.ndarray,
              pv_kwh: np.ndarray, backlog0_kwh: np.ndarray, soc0_kwh: np.ndarray,
              soc_value: np.ndarray, backlog_value: np.ndarray,
              index: np.ndarray) -> LocalPlans:
        """The optimal plans of the buildings ``index`` (M,): costs (M, H) on g and ch,
        data (M, H), initial states and terminal values (M,)."""
        t0 = time.perf_counter()
        blocks = [slice(lo, lo + self.chunk) for lo in range(0, len(index), self.chunk)]
        if self.solver == "persistent":  # models made here, in order: threads only solve
            for sl in blocks:
                self._model(index[sl], demand_kwh.shape[1])

        def block(sl: slice) -> LocalPlans:
            return self._solve_block(cost_grid[sl], cost_charge[sl], demand_kwh[sl],
                                     pv_kwh[sl], backlog0_kwh[sl], soc0_kwh[sl],
                                     soc_value[sl], backlog_value[sl], index[sl])

        if self.threads > 1 and len(blocks) > 1:
            # HiGHS releases the GIL while it solves; each block has its own model, so
            # the plans do not depend on the threads' order
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dmpc")
            parts = list(self.pool.map(block, blocks))
        else:
            parts = [block(sl) for sl in blocks]
        self.timing["solve_s"] += time.perf_counter() - t0
        return LocalPlans(*[np.concatenate([p.arrays()[k] for p in parts])
                            for k in range(N_KINDS)])

    def _solve_block(self, cost_grid: np.ndarray, cost_charge: np.ndarray,
                     demand_kwh: np.ndarray, pv_kwh: np.ndarray, backlog0_kwh: np.ndarray,
                     soc0_kwh: np.ndarray, soc_value: np.ndarray, backlog_value: np.ndarray,
                     index: np.ndarray) -> LocalPlans:
        m, h = demand_kwh.shape
        p = self.params
        eta_d = p.eta_discharge[index]
        per = N_KINDS * h  # variables of one building: [g, x, ch, b, e] x H
        var = _variables(m, h)
        g, x, ch, b, e = var
        b_eq = np.zeros(2 * m * h)
        rhs_b = demand_kwh.copy()
        rhs_b[:, 0] += backlog0_kwh
        b_eq[:m * h] = rhs_b.ravel()
        b_eq[m * h:].reshape(m, h)[:, 0] = soc0_kwh
        b_ub = np.zeros(m * h)
        b_ub.reshape(m, h)[:, 0] = eta_d * soc0_kwh
        energy = (p.power_kw[index] * self.dt_h)[:, None] * np.ones((m, h))
        upper = np.full(m * per, np.inf)
        upper[x.ravel()] = energy.ravel()
        upper[ch.ravel()] = np.minimum(pv_kwh, energy).ravel()
        upper[b.ravel()] = np.repeat(p.backlog_cap_kwh[index], h)
        upper[e.ravel()] = np.repeat(p.capacity_kwh[index], h)
        cost = np.zeros(m * per)
        cost[g.ravel()] = cost_grid.ravel()
        cost[ch.ravel()] = cost_charge.ravel()
        cost[e[:, -1]] -= soc_value
        cost[b[:, -1]] += backlog_value
        if self.solver == "persistent":
            sol = self._model(index, h).solve(cost, upper, b_eq, b_ub)
        else:
            a_eq, a_ub = self._matrices(index, h)
            res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                          bounds=np.stack([np.zeros(m * per), upper], axis=1),
                          method="highs", options=HIGHS_OPTIONS)
            if res.status != 0:
                raise RuntimeError(f"a DMPC local problem failed in HiGHS: {res.message}")
            sol = np.asarray(res.x)
        return LocalPlans(np.maximum(sol[g], 0.0), np.maximum(sol[x], 0.0),
                          np.clip(sol[ch], 0.0, upper[ch]), np.maximum(sol[b], 0.0),
                          np.maximum(sol[e], 0.0))

    def _model(self, index: np.ndarray, h: int) -> _Block:
        """The kept HiGHS model of the buildings ``index`` over ``h`` steps (made when
        missing; the oldest of :data:`MAX_MODELS` is dropped)."""
        key = (h, np.ascontiguousarray(index).tobytes())
        block = self.models.get(key)
        if block is None:
            if len(self.models) >= MAX_MODELS:
                self.models.pop(next(iter(self.models)))
            block = self.models[key] = _Block(self._matrices(index, h),
                                              len(index) * N_KINDS * h)
        return block

    def forget_bases(self) -> None:
        """Start every kept model's next solve cold (at each step: a step's plans then do
        not depend on the steps before it, so a restored controller continues identically)."""
        for block in self.models.values():
            block.highs.clearSolver()

    def _matrices(self, index: np.ndarray, h: int) -> tuple[sp.csr_array, sp.csr_array]:
        """The equality (backlog and battery balances) and inequality (discharge before
        charge) matrices of the buildings ``index`` over ``h`` steps, block-diagonal."""
        m = len(index)
        eta_d = self.params.eta_discharge[index]
        eta_c = self.params.eta_charge[index]
        per = N_KINDS * h
        g, x, ch, b, e = _variables(m, h)
        rows_b = np.arange(m * h).reshape(m, h)  # backlog balance rows
        rows_e = m * h + rows_b  # battery balance rows
        ones = np.ones((m, h))
        eq_r = [rows_b, rows_b[:, 1:], rows_b, rows_b, rows_e, rows_e[:, 1:], rows_e, rows_e]
        eq_c = [b, b[:, :-1], g, x, e, e[:, :-1], x, ch]
        eq_v = [ones, -ones[:, 1:], ones, ones, ones, -ones[:, 1:],
                ones / eta_d[:, None], -ones * eta_c[:, None]]
        a_eq = sp.csr_array((np.concatenate([v.ravel() for v in eq_v]),
                             (np.concatenate([r.ravel() for r in eq_r]),
                              np.concatenate([c.ravel() for c in eq_c]))),
                            shape=(2 * m * h, m * per))
        # x_k - eta_dis e_k-1 <= 0 (k >= 1); x_0 <= eta_dis e0
        rows_x = np.arange(m * h).reshape(m, h)
        a_ub = sp.csr_array((np.concatenate([ones.ravel(), -(ones[:, 1:] * eta_d[:, None])
                                             .ravel()]),
                             (np.concatenate([rows_x.ravel(), rows_x[:, 1:].ravel()]),
                              np.concatenate([x.ravel(), e[:, :-1].ravel()]))),
                            shape=(m * h, m * per))
        return a_eq, a_ub


def _variables(m: int, h: int) -> tuple[np.ndarray, ...]:
    """The (M, H) variable indices of each kind in a block of ``m`` buildings."""
    per = N_KINDS * h
    return tuple(np.arange(m)[:, None] * per + kind * h + np.arange(h)
                 for kind in range(N_KINDS))


def _silent_highs() -> Any:
    """A HiGHS instance that prints nothing: highspy's callback-free base class
    (``highspy.Highs`` prints HiGHS's banner on stdout when the first one is made, which
    would land in ``cosim``'s output), with ``output_flag`` off."""
    hs = highspy._Highs()  # type: ignore[attr-defined]
    hs.setOptionValue("output_flag", False)
    return hs


class _Block:
    """One block's HiGHS model (highspy), kept alive between calls: the matrix is fixed,
    costs, column bounds and row bounds change, the last optimal basis is HiGHS's start."""

    def __init__(self, matrices: tuple[sp.csr_array, sp.csr_array], n_col: int) -> None:
        a = sp.vstack(matrices, format="csc")
        self.n_col, self.n_eq, self.n_row = n_col, matrices[0].shape[0], a.shape[0]
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n_col, self.n_row
        lp.col_cost_ = np.zeros(n_col)
        lp.col_lower_ = np.zeros(n_col)
        lp.col_upper_ = np.full(n_col, np.inf)
        lp.row_lower_ = np.zeros(self.n_row)
        lp.row_upper_ = np.zeros(self.n_row)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = a.indptr
        lp.a_matrix_.index_ = a.indices
        lp.a_matrix_.value_ = a.data
        self.highs = _silent_highs()
        for name, value in HIGHS_OPTIONS.items():
            self.highs.setOptionValue(name, "off" if value is False else value)
        self.highs.passModel(lp)
        self.cols = np.arange(n_col, dtype=np.int32)
        self.rows = np.arange(self.n_row, dtype=np.int32)
        self.row_lower = np.zeros(self.n_row)
        self.row_lower[self.n_eq:] = -np.inf
        self.zeros = np.zeros(n_col)

    def solve(self, cost: np.ndarray, upper: np.ndarray, b_eq: np.ndarray,
              b_ub: np.ndarray) -> np.ndarray:
        """The optimal solution with these costs, upper bounds and right-hand sides."""
        hs = self.highs
        hs.changeColsCost(self.n_col, self.cols, cost)
        hs.changeColsBounds(self.n_col, self.cols, self.zeros, upper)
        self.row_lower[:self.n_eq] = b_eq
        hs.changeRowsBounds(
            self.n_row, self.rows, self.row_lower, np.concatenate([b_eq, b_ub]))
        hs.run()
        status = hs.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise RuntimeError(f"a DMPC local problem failed in HiGHS: "
                               f"{hs.modelStatusToString(status)}")
        return np.asarray(hs.getSolution().col_value)


class _Master:
    """The coordinator's restricted master problem of one step, a HiGHS model (highspy)
    that grows by one column per group of buildings each iteration and is re-solved from
    its last optimal basis (the new columns enter at zero).

    ``group`` (N,): each building's group; the members of a group share their weights
    (every building's plan is still a convex combination of its own plans, so it keeps
    the building's dynamics). Variables: the weights ``w_gj >= 0`` of group g's plans of
    iteration j and the excess ``s_kr >= 0`` of each coupling row at each horizon step.
    Rows: ``sum_j w_gj = 1`` per group; ``sum_gj contribution_gjkr w_gj - s_kr <= upper_r
    - offset_kr``. Costs: the group's local costs and ``penalty_r`` per unit of excess;
    a group's cost and contribution are its members' sums.
    """

    def __init__(self, group: np.ndarray, room: np.ndarray, penalty: np.ndarray) -> None:
        h, r = room.shape
        self.group = group
        self.n_groups = int(group.max()) + 1
        n = group.shape[0]
        self.summing = sp.csr_array((np.ones(n), (group, np.arange(n))),
                                    shape=(self.n_groups, n))
        self.n_coupling, self.penalty = h * r, penalty
        self.shape = (h, r)
        self.iterations = 0
        hs = self.highs = _silent_highs()
        # primal simplex: new columns keep the last basis primal feasible (measured: the
        # master a third of the time of HiGHS's default dual simplex at 1,000 buildings)
        hs.setOptionValue("simplex_strategy", PRIMAL_SIMPLEX)
        n_rows = self.n_groups + self.n_coupling
        lower = np.concatenate([np.ones(self.n_groups), np.full(self.n_coupling, -np.inf)])
        upper = np.concatenate([np.ones(self.n_groups), room.ravel()])
        hs.addRows(n_rows, lower, upper, 0, np.zeros(n_rows, np.int32),
                   np.zeros(0, np.int32), np.zeros(0))
        # the excess columns, one per coupling row (k, r), -1 in that row
        hs.addCols(self.n_coupling, np.tile(penalty, h), np.zeros(self.n_coupling),
                   np.full(self.n_coupling, np.inf), self.n_coupling,
                   np.arange(self.n_coupling, dtype=np.int32),
                   (self.n_groups + np.arange(self.n_coupling)).astype(np.int32),
                   -np.ones(self.n_coupling))

    def add(self, costs: np.ndarray, contributions: np.ndarray) -> None:
        """One column per group from the buildings' plans: their local costs (N,) and
        coupling values (N, H, R), summed over each group's members."""
        g = self.n_groups
        costs = self.summing @ costs
        coupling = self.summing @ contributions.reshape(contributions.shape[0], -1)
        nonzero = coupling != 0.0
        counts = 1 + nonzero.sum(axis=1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
        rows = np.empty(int(counts.sum()), dtype=np.int32)
        values = np.empty(rows.shape[0])
        rows[starts] = np.arange(g)
        values[starts] = 1.0
        mask = np.ones(rows.shape[0], dtype=bool)
        mask[starts] = False
        gi, ki = np.nonzero(nonzero)  # row-major: by group, then by coupling row
        rows[mask] = (g + ki).astype(np.int32)
        values[mask] = coupling[gi, ki]
        self.highs.addCols(g, costs, np.zeros(g), np.full(g, np.inf), rows.shape[0],
                           starts, rows, values)
        self.iterations += 1

    def solve(self) -> tuple[np.ndarray, float, np.ndarray]:
        """The weights (G, J), the optimum ($) and the coupling rows' prices (R, H), $/kWh:
        minus the duals of the <= rows, at most the excess penalty."""
        hs = self.highs
        hs.run()
        status = hs.getModelStatus()
        if status != highspy.HighsModelStatus.kOptimal:
            raise RuntimeError(f"the DMPC primal recovery failed in HiGHS: "
                               f"{hs.modelStatusToString(status)}")
        sol = hs.getSolution()
        col = np.asarray(sol.col_value)[self.n_coupling:]
        w = col.reshape(self.iterations, self.n_groups).T
        dual = np.asarray(sol.row_dual)[self.n_groups:].reshape(self.shape)
        prices = np.clip(-dual.T, 0.0, self.penalty[:, None])
        return np.maximum(w, 0.0), float(hs.getInfo().objective_function_value), prices


def _same_rows(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of identical rows of ``key`` (M, K): the first row of each group, in order of
    appearance, and each row's group (a dict of the rows' bytes: far faster than sorting)."""
    rows = np.ascontiguousarray(key, dtype=np.float64)
    seen: dict[bytes, int] = {}
    group = np.empty(rows.shape[0], dtype=np.int64)
    first: list[int] = []
    for i in range(rows.shape[0]):
        g = seen.setdefault(rows[i].tobytes(), len(first))
        if g == len(first):
            first.append(i)
        group[i] = g
    return np.asarray(first, dtype=np.int64), group


def _padded(mu: np.ndarray, horizon: int) -> np.ndarray:
    """``mu`` over ``horizon`` steps: its last step repeated when it is shorter."""
    short = horizon - mu.shape[-1]
    if short <= 0:
        return mu
    result: np.ndarray = np.concatenate([mu, np.repeat(mu[..., -1:], short, axis=-1)],
                                        axis=-1)
    return result


class DmpcController:
    """Distributed MPC by dual decomposition for the whole fleet (module docstring)."""

    name = "dmpc"

    def __init__(self, params: FleetParams, forecast: Forecast, rows: CouplingRows,
                 config: DmpcConfig, steps: int, graph: nx.Graph[int] | None = None) -> None:
        if forecast.n != params.n or rows.w_grid.shape[1] != params.n:
            raise ValueError(f"forecast ({forecast.n}) and coupling rows "
                             f"({rows.w_grid.shape[1]}) must cover the {params.n} buildings")
        if config.negotiation == "consensus" and graph is None:
            raise ValueError("negotiation 'consensus' needs the communication graph")
        self.params, self.forecast, self.rows, self.config = params, forecast, rows, config
        self.steps = int(steps)
        self.n, self.r = params.n, rows.n_rows
        self.export = params.export_pv.astype(float)
        self.local = LocalProblems(params, forecast.dt_h, config.chunk,
                                   solver=config.local_solver, threads=config.threads)
        self.timing = self.local.timing
        self.timing.update(master_s=0.0, negotiation_s=0.0, calls=0.0)
        self.weights = metropolis_matrix(graph, self.n) if graph is not None else None
        self.edges = graph.number_of_edges() if graph is not None else 0
        self.t = 0
        shape = ((self.n, self.r, config.horizon) if config.negotiation == "consensus"
                 else (self.r, config.horizon))
        self.mu = np.zeros(shape)
        self.last_plans: LocalPlans | None = None  # the coordinator's last chosen plans
        # kWh the building with each row's smallest nonzero weight moves per unit of the
        # row (1 where a row has no weights), for the master's excess penalty
        w = np.abs(np.concatenate([rows.w_grid, rows.w_export], axis=1))
        smallest = np.where(w > 0, w, np.inf).min(axis=1, initial=np.inf)
        self.kwh_per_row_unit = np.where(np.isfinite(smallest), 1.0 / smallest, 1.0)
        self.log_steps = np.full((self.steps, 5), np.nan)  # iterations, converged, excess, ...
        self.log_mu = np.full((self.steps, self.r, 3), np.nan)  # mu_now, mu_max, spread

    # --- one step ----------------------------------------------------------------------

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Negotiate at step ``self.t`` and apply the first step of the plans, (N, 2).

        Raises:
            RuntimeError: past the run's last step.
        """
        if self.t >= self.steps:
            raise RuntimeError(f"the DMPC controller was made for {self.steps} steps")
        t0 = time.perf_counter()
        solve0 = self.timing["solve_s"] + self.timing["master_s"]
        step = self.plan(self.t, obs.backlog_kwh, obs.soc_kwh, obs.demand_kwh, obs.pv_kwh)
        self._log(self.t, step)
        to_serve = obs.demand_kwh + obs.backlog_kwh
        g = np.minimum(step.plans.grid_kwh[:, 0], to_serve)
        x = np.minimum(step.plans.battery_kwh[:, 0], to_serve - g)
        self.t += 1
        self.timing["calls"] += 1
        self.timing["negotiation_s"] += (time.perf_counter() - t0) - (
            self.timing["solve_s"] + self.timing["master_s"] - solve0)
        return model_actions(g, x, to_serve)

    def plan(self, t: int, backlog0_kwh: np.ndarray, soc0_kwh: np.ndarray,
             demand_now_kwh: np.ndarray | None = None,
             pv_now_kwh: np.ndarray | None = None) -> DmpcStep:
        """The negotiation of step ``t`` from the state ``(backlog0, soc0)``; the demand and
        PV of the step itself replace the forecast's when given (they are measured)."""
        cfg = self.config
        h = min(cfg.horizon, self.forecast.steps_available(t))
        demand, pv, price = self.forecast.window(t, h)
        if demand_now_kwh is not None:
            demand[0] = demand_now_kwh
        if pv_now_kwh is not None:
            pv[0] = pv_now_kwh
        soc_value = (np.full(self.n, cfg.soc_value) if cfg.soc_value is not None
                     else self.params.eta_discharge * float(price.mean()))
        backlog_value = np.full(self.n, cfg.backlog_value if cfg.backlog_value is not None
                                else BACKLOG_VALUE_FACTOR * float(price.max()))
        offset = self.rows.offset_window(t, h)  # (H, R)
        scale = np.maximum(np.abs(self.rows.upper), UPPER_FLOOR)  # (R,)
        consensus = cfg.negotiation == "consensus"
        # multipliers above the excess penalty would price the rows above what an
        # excess costs the coordinator's master (and overstate the dual bound)
        penalty = self._penalty(price)
        mu = np.minimum(self._warm_start(h), penalty[:, None])
        center = mu
        # the coordinator's buildings all see one mu: identical problems stay identical
        # through the step (under consensus each agent prices with its own mu)
        same = None if consensus else self._groups(backlog0_kwh, soc0_kwh, soc_value,
                                                   backlog_value, demand, pv)
        master = None if same is None else _Master(
            self._master_groups(same[1]), (self.rows.upper[None, :] - offset), penalty)
        self.local.forget_bases()
        proposals: list[LocalPlans] = []
        local_costs: list[np.ndarray] = []  # (N,) per iteration, without multipliers
        contributions: list[np.ndarray] = []  # (N, H, R) per iteration
        best_dual = -math.inf
        messages, converged, j = 0, False, 0
        mu_used = mu
        chosen: LocalPlans | None = None
        excess_max = math.inf
        if master is not None and self.last_plans is not None:
            # the last step's plan, one step on: a column the master starts with
            seed = self._seed(self.last_plans, backlog0_kwh, soc0_kwh, demand, pv)
            proposals.append(seed)
            local_costs.append(self._local_costs(seed, price, soc_value, backlog_value))
            contributions.append(self._contributions(seed, pv))
            master.add(local_costs[0], contributions[0])
        for j in range(1, cfg.iterations + 1):
            plans = self._solve(mu, price, demand, pv, backlog0_kwh, soc0_kwh, soc_value,
                                backlog_value, same)
            contrib = self._contributions(plans, pv)  # (N, H, R)
            local = self._local_costs(plans, price, soc_value, backlog_value)
            proposals.append(plans)
            local_costs.append(local)
            contributions.append(contrib)
            value = offset + contrib.sum(axis=0)  # (H, R), the true coupling values
            # the dual function at mu: these plans minimise the Lagrangian (a lower bound
            # on the horizon's optimum); consensus agents hold their own mu, take the mean
            mean_mu = mu.mean(axis=0) if consensus else mu
            dual_now = float(local.sum() + (mean_mu * (value - self.rows.upper).T).sum())
            if dual_now > best_dual:
                best_dual, center = dual_now, mu
            if consensus:
                assert self.weights is not None  # checked in __init__
                estimate = self._consensus_sum(contrib) + offset[None]  # (N, H, R)
                rel_t = np.transpose((estimate - self.rows.upper) / scale, (0, 2, 1))
                messages += 2 * self.edges * cfg.consensus_rounds
                # no coordinator: the ergodic average of the iterations' plans
                chosen = plans if chosen is None else chosen.average(plans, 1.0 / j)
                chosen_cost = float(np.mean([lc.sum() for lc in local_costs]))
                chosen_value = offset + self._contributions(chosen, pv).sum(axis=0)
            else:
                rel_t = ((value - self.rows.upper) / scale).T
                messages += 2 * self.n
                assert master is not None  # made for the coordinator
                chosen, chosen_cost, chosen_value, objective, prices = self._recover(
                    master, proposals, local_costs, contributions, offset)
            excess_max = float(np.maximum((chosen_value - self.rows.upper) / scale, 0.0)
                               .max(initial=0.0))
            mu_used = mu
            if consensus:
                mu = np.maximum(mu + cfg.step / math.sqrt(j) * rel_t, 0.0)
                done = excess_max <= cfg.tolerance and chosen_cost - best_dual <= \
                    cfg.tolerance * max(abs(chosen_cost), GAP_FLOOR)
            else:
                # the coordinator prices the rows at the restricted master's duals (column
                # generation: a cutting-plane step on the dual); certificate: the master's
                # optimum (the recovered plan's cost, excess at its penalty) within
                # tolerance of the best dual bound, i.e. the plan is within tolerance of
                # the optimum of the horizon's problem with excess allowed at that
                # penalty, which exceeds the rows only where no plan of the horizon fits
                # Wentges smoothing towards the multipliers of the best bound so far
                mu = cfg.smoothing * center + (1.0 - cfg.smoothing) * prices
                done = objective - best_dual <= cfg.tolerance * max(abs(objective),
                                                                    GAP_FLOOR)
            if done:
                converged = True
                break
        assert chosen is not None  # iterations >= 1
        self.mu = _padded(mu, cfg.horizon)
        if master is not None:
            self.last_plans = chosen
        cost = float((chosen.grid_kwh.sum(axis=0) * price).sum())
        return DmpcStep(chosen, mu_used, j, converged, excess_max, messages, cost, best_dual,
                        chosen_cost)

    def _recover(self, master: _Master, proposals: list[LocalPlans],
                 local_costs: list[np.ndarray], contributions: list[np.ndarray],
                 offset: np.ndarray) -> tuple[LocalPlans, float, np.ndarray, float, np.ndarray]:
        """Primal recovery by the coordinator: per building, the convex combination of the
        plans it proposed so far that costs the fleet least within the coupling rows.

        The restricted master problem (:class:`_Master`) gets this iteration's plans as new
        columns and is solved from its last basis. Returns the plans, their local cost,
        their coupling values (H, R), the master's optimum and the rows' prices (R, H).
        """
        t0 = time.perf_counter()
        master.add(local_costs[-1], contributions[-1])
        w_groups, objective, prices = master.solve()
        self.timing["master_s"] += time.perf_counter() - t0
        w = w_groups[master.group]  # (N, J)
        plans = LocalPlans(*[np.einsum("nj,jnh->nh", w, np.stack([p.arrays()[k]
                                                                  for p in proposals]))
                             for k in range(N_KINDS)])
        cost = float((w * np.stack(local_costs).T).sum())
        value = offset + np.einsum("nj,jnhr->hr", w, np.stack(contributions))
        return plans, cost, value, objective, prices

    def _penalty(self, price: np.ndarray) -> np.ndarray:
        """The master's price of a unit of excess over each row (R,): ``RECOVERY_PENALTY``
        x the horizon's highest price per kWh that the building with the row's smallest
        weight would have to move to take one unit off the row (for the district limit,
        whose weights are 1: 100 x the highest price per kWh of excess, whatever the
        fleet's size)."""
        result: np.ndarray = RECOVERY_PENALTY * float(price.max()) * self.kwh_per_row_unit
        return result

    @staticmethod
    def _local_costs(plans: LocalPlans, price: np.ndarray, soc_value: np.ndarray,
                     backlog_value: np.ndarray) -> np.ndarray:
        """Each building's local objective without multipliers ($), (N,)."""
        result: np.ndarray = (plans.grid_kwh @ price - soc_value * plans.soc_kwh[:, -1]
                              + backlog_value * plans.backlog_kwh[:, -1])
        return result

    def _warm_start(self, h: int) -> np.ndarray:
        """Last step's multipliers shifted by one step, cut to ``h`` steps."""
        prev = self.mu
        shifted = np.concatenate([prev[..., 1:], prev[..., -1:]], axis=-1)
        result: np.ndarray = shifted[..., :h].copy()
        return result

    def _solve(self, mu: np.ndarray, price: np.ndarray, demand: np.ndarray, pv: np.ndarray,
               backlog0: np.ndarray, soc0: np.ndarray, soc_value: np.ndarray,
               backlog_value: np.ndarray,
               same: tuple[np.ndarray, np.ndarray] | None = None) -> LocalPlans:
        """Every building's local problem under ``mu`` ((R, H) or per agent (N, R, H)),
        each group of identical problems solved once: ``same`` (each group's first
        building, each building's group), else found from the problems' costs."""
        if mu.ndim == 2:  # coordinator: every building sees the same mu
            cost_grid = price[None, :] + self.rows.w_grid.T @ mu  # (N, H)
            cost_charge = (self.rows.w_export.T * self.export[:, None]) @ mu
        else:
            cost_grid = price[None, :] + np.einsum("ri,irh->ih", self.rows.w_grid, mu)
            cost_charge = np.einsum("ri,irh->ih", self.rows.w_export, mu) \
                * self.export[:, None]
        demand_b, pv_b = demand.T, pv.T  # (N, H)
        if not self.config.dedupe:
            index = np.arange(self.n)
            return self.local.solve(cost_grid, cost_charge, demand_b, pv_b, backlog0, soc0,
                                    soc_value, backlog_value, index)
        first, inverse = same if same is not None else _same_rows(np.hstack([
            self._state_columns(backlog0, soc0, soc_value, backlog_value), cost_grid,
            cost_charge, demand_b, pv_b]))
        unique = self.local.solve(cost_grid[first], cost_charge[first], demand_b[first],
                                  pv_b[first], backlog0[first], soc0[first], soc_value[first],
                                  backlog_value[first], first)
        return LocalPlans(*[a[inverse] for a in unique.arrays()])

    def _seed(self, last: LocalPlans, backlog0: np.ndarray, soc0: np.ndarray,
              demand: np.ndarray, pv: np.ndarray) -> LocalPlans:
        """The last step's chosen plans one step on (the grid serving each step's new
        demand where the last horizon ended), re-run from the state ``(backlog0, soc0)``
        on this step's data; where that breaks a bound of a building's own problem (its
        state or data differ from what the plan expected), the plan that serves all from
        the grid at once and leaves the battery alone. Feasible for every building."""
        h, p = demand.shape[0], self.params
        d, s = demand.T, pv.T  # (N, H)

        def shifted(a: np.ndarray, fill: np.ndarray) -> np.ndarray:
            out: np.ndarray = fill.copy()
            k = min(h, a.shape[1] - 1)
            out[:, :k] = a[:, 1:k + 1]
            return out

        zero = np.zeros_like(d)
        g = shifted(last.grid_kwh, d)
        x = shifted(last.battery_kwh, zero)
        ch = shifted(last.charge_kwh, zero)
        b = backlog0[:, None] + np.cumsum(d - g - x, axis=1)
        e = soc0[:, None] + np.cumsum(p.eta_charge[:, None] * ch
                                      - x / p.eta_discharge[:, None], axis=1)
        e_before = np.concatenate([soc0[:, None], e[:, :-1]], axis=1)
        energy = (p.power_kw * self.forecast.dt_h)[:, None]
        tol = SEED_ATOL
        ok = ((b >= -tol).all(axis=1) & (b <= p.backlog_cap_kwh[:, None] + tol).all(axis=1)
              & (e <= p.capacity_kwh[:, None] + tol).all(axis=1)
              & (x <= p.eta_discharge[:, None] * e_before + tol).all(axis=1)
              & (x <= energy + tol).all(axis=1)
              & (ch <= np.minimum(s, energy) + tol).all(axis=1)
              & (g >= -tol).all(axis=1) & (x >= -tol).all(axis=1) & (ch >= -tol).all(axis=1))
        grid_only = d.copy()
        grid_only[:, 0] += backlog0
        keep = ok[:, None]
        return LocalPlans(np.where(keep, g, grid_only), np.where(keep, x, 0.0),
                          np.where(keep, ch, 0.0), np.where(keep, np.maximum(b, 0.0), 0.0),
                          np.where(keep, np.maximum(e, 0.0), soc0[:, None]))

    def _master_groups(self, group: np.ndarray) -> np.ndarray:
        """Each building's group in the master (N,): buildings with identical problems
        (``group``) share one (their plans are the same), and with ``master_groups`` set,
        groups are merged (by number, modulo ``master_groups``) into at most that many."""
        if self.config.master_groups is not None:
            group = group % self.config.master_groups
            _, group = np.unique(group, return_inverse=True)
        result: np.ndarray = group
        return result

    def _groups(self, backlog0: np.ndarray, soc0: np.ndarray, soc_value: np.ndarray,
                backlog_value: np.ndarray, demand: np.ndarray, pv: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Groups of buildings whose local problems are the same under every common mu
        (parameters, state, terminal values, data and coupling weights; ``dedupe``): each
        group's first building and each building's group (N,). Without ``dedupe``, every
        building is its own group."""
        if not self.config.dedupe:
            every = np.arange(self.n)
            return every, every
        return _same_rows(np.hstack([
            self._state_columns(backlog0, soc0, soc_value, backlog_value),
            self.rows.w_grid.T, self.rows.w_export.T * self.export[:, None], demand.T,
            pv.T]))

    def _state_columns(self, backlog0: np.ndarray, soc0: np.ndarray, soc_value: np.ndarray,
                       backlog_value: np.ndarray) -> np.ndarray:
        """What makes two buildings' local problems differ besides their costs and data:
        parameters, state and terminal values, (N, 9)."""
        p = self.params
        result: np.ndarray = np.column_stack([p.capacity_kwh, p.power_kw, p.eta_charge,
                                              p.eta_discharge, p.backlog_cap_kwh, backlog0,
                                              soc0, soc_value, backlog_value])
        return result

    def _contributions(self, plans: LocalPlans, pv: np.ndarray) -> np.ndarray:
        """Each building's part of each coupling row, (N, H, R)."""
        export = self.export[:, None] * np.maximum(pv.T - plans.charge_kwh, 0.0)  # (N, H)
        result: np.ndarray = (plans.grid_kwh[:, :, None] * self.rows.w_grid.T[:, None, :]
                              - export[:, :, None] * self.rows.w_export.T[:, None, :])
        return result

    def _consensus_sum(self, contrib: np.ndarray) -> np.ndarray:
        """Each agent's estimate of the fleet's sum by averaging rounds, (N, H, R)."""
        assert self.weights is not None
        z = contrib.reshape(self.n, -1)
        for _ in range(self.config.consensus_rounds):
            z = self.weights @ z
        result: np.ndarray = (self.n * z).reshape(contrib.shape)
        return result

    # --- records -----------------------------------------------------------------------

    def _log(self, t: int, step: DmpcStep) -> None:
        self.log_steps[t] = (step.iterations, float(step.converged), step.max_rel_excess,
                             step.messages, step.cost_planned)
        mu = step.mu
        if mu.ndim == 3:  # consensus: per agent
            now = mu[:, :, 0]
            self.log_mu[t, :, 0] = now.mean(axis=0)
            self.log_mu[t, :, 1] = mu.mean(axis=0).max(axis=1)
            self.log_mu[t, :, 2] = now.max(axis=0) - now.min(axis=0)
        else:
            self.log_mu[t, :, 0] = mu[:, 0]
            self.log_mu[t, :, 1] = mu.max(axis=1)
            self.log_mu[t, :, 2] = 0.0

    def decisions(self) -> dict[str, pd.DataFrame]:
        """The negotiation of every step done: ``dmpc_steps`` and ``dmpc_multipliers``."""
        done = self.t
        log = self.log_steps[:done]
        steps = pd.DataFrame({
            "time": np.arange(done, dtype=np.int64),
            "iterations": log[:, 0].astype(np.int64),
            "converged": log[:, 1].astype(bool),
            "max_rel_excess": log[:, 2],
            "messages": log[:, 3].astype(np.int64),
            "cost_planned": log[:, 4],
        })
        mu = self.log_mu[:done]
        multipliers = pd.DataFrame({
            "time": np.repeat(np.arange(done, dtype=np.int64), self.r),
            "constraint": np.tile(np.asarray(self.rows.names, dtype=object), done),
            "mu_now": mu[:, :, 0].ravel(),
            "mu_max_horizon": mu[:, :, 1].ravel(),
            "mu_spread": mu[:, :, 2].ravel(),
        })
        return {"dmpc_steps": steps, "dmpc_multipliers": multipliers}

    def snapshot(self) -> dict[str, np.ndarray]:
        """Step, warm-start multipliers, the last chosen plans (the master's first column
        at the next step) and the decision log, for :meth:`restore`."""
        last = (np.stack(self.last_plans.arrays()) if self.last_plans is not None
                else np.zeros((N_KINDS, 0, 0)))
        return {"t": np.array(self.t, dtype=np.int64), "mu": self.mu.copy(),
                "log_steps": self.log_steps.copy(), "log_mu": self.log_mu.copy(),
                "last_plans": last}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Continue from a :meth:`snapshot`.

        Raises:
            ValueError: if the snapshot is of another fleet, horizon or run length.
        """
        if snap["mu"].shape != self.mu.shape or snap["log_steps"].shape != \
                self.log_steps.shape:
            raise ValueError(f"DMPC snapshot of multipliers {snap['mu'].shape} and "
                             f"{snap['log_steps'].shape[0]} steps; this controller has "
                             f"{self.mu.shape} and {self.steps}")
        self.t = int(snap["t"])
        self.mu = np.array(snap["mu"], dtype=float)
        self.log_steps = np.array(snap["log_steps"], dtype=float)
        self.log_mu = np.array(snap["log_mu"], dtype=float)
        last = np.array(snap["last_plans"], dtype=float)
        self.last_plans = LocalPlans(*last) if last.size else None
