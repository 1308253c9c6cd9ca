"""The EPOS controller (``controller.kind: epos``, :mod:`agents.control.epos`): once a day,
candidate plans and their I-EPOS selection; the day follows the selected plan.

**Execution** (:class:`EposController`): the rest of the day follows the selected plan:
``g = min(planned g, D)`` with ``D`` the demand plus backlog now, then the battery serves
what it can of ``D - g``, and the rest waits in the backlog (the model drops what exceeds
its cap). Deviations from the forecast thus go to the battery and the backlog, and the
grid energy never exceeds the plan: a bound the plan holds, operation holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents.control.coupling import CouplingRows, Forecast
from agents.control.epos.plans import CAP_FACTORS, candidate_plans, serving_plans
from agents.control.epos.problem import HardBounds
from agents.control.epos.selection import select_plans
from agents.control.epos.tree import _post_order
from agents.fleet.actions import model_actions
from agents.fleet.building import FleetParams
from agents.fleet.observation import FleetObservation
from grid_models.support.settings import check_settings, setting


@dataclass(frozen=True)
class EposConfig:
    """Settings of an EPOS controller (scenario ``controller.epos_*``)."""

    plans: int = setting(16, ge=1, integer=True, doc="candidate day plans per building")
    iterations: int = setting(20, ge=1, integer=True, doc="I-EPOS iterations per day")
    alpha: float = setting(0.0, ge=0, le=1, doc="weight of unfairness")
    beta: float = setting(0.1, ge=0, le=1, doc="weight of discomfort")
    reorganisations: int = setting(5, ge=0, integer=True,
                                   doc="restarts on a shuffled tree after a violation")
    day_steps: int = setting(24, ge=1, integer=True, doc="steps of a day plan")

    def __post_init__(self) -> None:
        check_settings(self)
        problem = weights_problem(self.alpha, self.beta)
        if problem:
            raise ValueError(problem)


def weights_problem(alpha: float, beta: float, names: tuple[str, str] = ("alpha", "beta")) -> str:
    """Why the weights of unfairness and discomfort do not fit ("" if they do): the global
    cost's weight ``1 - alpha - beta`` may not be negative (``names``: how to call them)."""
    if alpha + beta <= 1:
        return ""
    return (f"{names[0]} + {names[1]} must be <= 1 (the global cost's weight is "
            f"1 - alpha - beta), got {alpha:g} + {beta:g}")


class EposController:
    """Once a day, I-EPOS selects a plan per building; the day follows it (module docstring)."""

    name = "epos"

    def __init__(self, params: FleetParams, forecast: Forecast, rows: CouplingRows | None,
                 config: EposConfig, parent: np.ndarray, steps: int, seed: int = 0) -> None:
        if forecast.n != params.n or parent.shape != (params.n,):
            raise ValueError(f"forecast ({forecast.n}) and overlay ({parent.shape}) must "
                             f"cover the {params.n} buildings")
        _post_order(parent)  # a single tree, or ValueError
        self.params, self.forecast, self.rows, self.config = params, forecast, rows, config
        self.parent = parent
        self.steps, self.seed = int(steps), int(seed)
        self.n = params.n
        self.t = 0
        self.plan_kwh = np.zeros((self.n, config.day_steps))
        days = -(-self.steps // config.day_steps)
        self.log_days = np.full((days, 10), np.nan)
        self.log_plan = np.full((days, self.n), -1, dtype=np.int64)
        self.log_discomfort = np.full((days, self.n), np.nan)
        self.timing = {"plans_s": 0.0, "select_s": 0.0, "calls": 0.0}

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Plan the day at its first step; follow the plan (module docstring), (N, 2).

        Raises:
            RuntimeError: past the run's last step.
        """
        if self.t >= self.steps:
            raise RuntimeError(f"the EPOS controller was made for {self.steps} steps")
        hour = self.t % self.config.day_steps
        if hour == 0:
            self._plan_day(obs)
        to_serve = obs.demand_kwh + obs.backlog_kwh
        g = np.minimum(self.plan_kwh[:, hour], to_serve)
        x = np.minimum(to_serve - g, obs.battery_available_kwh)
        self.t += 1
        self.timing["calls"] += 1
        return model_actions(g, x, to_serve)

    def _plan_day(self, obs: FleetObservation) -> None:
        cfg = self.config
        day = self.t // cfg.day_steps
        h = min(cfg.day_steps, self.steps - self.t, self.forecast.steps_available(self.t))
        demand, pv, _ = self.forecast.window(self.t, h)
        demand[0], pv[0] = obs.demand_kwh, obs.pv_kwh  # the step itself is measured
        rng = np.random.default_rng([self.seed, day])
        t0 = time.perf_counter()
        plans = candidate_plans(self.params, obs.backlog_kwh, obs.soc_kwh, demand, pv,
                                cfg.plans, rng, self.forecast.dt_h, self._caps(demand))
        plans = serving_plans(plans)
        t1 = time.perf_counter()
        hard = None
        if self.rows is not None:
            w_g, w_e = self.rows.w_grid.T, self.rows.w_export.T  # (N, R)
            contribution = (plans.grid_kwh[:, :, None, :] * w_g[:, None, :, None]
                            - plans.export_kwh[:, :, None, :] * w_e[:, None, :, None])
            hard = HardBounds(contribution, self.rows.offset_window(self.t, h).T,
                              self.rows.upper)
        sel = select_plans(plans.grid_kwh, plans.discomfort, self.parent, alpha=cfg.alpha,
                           beta=cfg.beta, iterations=cfg.iterations, hard=hard,
                           reorganisations=cfg.reorganisations, rng=rng)
        self.timing["plans_s"] += t1 - t0
        self.timing["select_s"] += time.perf_counter() - t1
        rows = np.arange(self.n)
        self.plan_kwh = np.zeros((self.n, cfg.day_steps))
        self.plan_kwh[:, :h] = plans.grid_kwh[rows, sel.index]
        self.log_days[day] = (self.t, sel.iterations, sel.reorganisations, sel.global_cost,
                              sel.local_cost, sel.unfairness, float(sel.global_kwh.max()),
                              sel.violation_kwh, sel.messages,
                              0 if hard is None else int((~hard.feasible()).sum()))
        self.log_plan[day] = sel.index
        self.log_discomfort[day] = plans.discomfort[rows, sel.index]

    def _caps(self, demand_kwh: np.ndarray) -> np.ndarray | None:
        """Caps of the capped plans from the district limit: ``CAP_FACTORS`` x c x the
        building's share of the day's forecast demand (everyone on factor 1 meets c in
        every hour); None without a district row (then shares of the building's peak)."""
        rows = self.rows
        if rows is None or not rows.n_rows or not (rows.w_grid[0] == 1).all() \
                or (rows.w_export[0] != 0).any():
            return None
        total = demand_kwh.sum(axis=0)
        share = total / total.sum() if total.sum() > 0 else np.full(self.n, 1.0 / self.n)
        result: np.ndarray = rows.upper[0] * share[:, None] * np.asarray(CAP_FACTORS)[None, :]
        return result

    def decisions(self) -> dict[str, pd.DataFrame]:
        """``epos_days`` (one row per day planned) and ``epos_selection`` (per building)."""
        days = int(np.isfinite(self.log_days[:, 0]).sum())
        log = self.log_days[:days]
        day_table = pd.DataFrame({
            "day": np.arange(days, dtype=np.int64), "time": log[:, 0].astype(np.int64),
            "iterations": log[:, 1].astype(np.int64),
            "reorganisations": log[:, 2].astype(np.int64), "global_cost": log[:, 3],
            "local_cost": log[:, 4], "unfairness": log[:, 5], "planned_peak_kwh": log[:, 6],
            "violation_kwh": log[:, 7], "messages": log[:, 8].astype(np.int64),
            "unreachable_hours": log[:, 9].astype(np.int64)})
        selection = pd.DataFrame({
            "day": np.repeat(np.arange(days, dtype=np.int64), self.n),
            "building": np.tile(np.arange(self.n, dtype=np.int64), days),
            "plan": self.log_plan[:days].ravel(),
            "discomfort": self.log_discomfort[:days].ravel()})
        return {"epos_days": day_table, "epos_selection": selection}

    def snapshot(self) -> dict[str, np.ndarray]:
        """Step, the day's plan and the decision log, for :meth:`restore`."""
        return {"t": np.array(self.t, dtype=np.int64), "plan_kwh": self.plan_kwh.copy(),
                "log_days": self.log_days.copy(), "log_plan": self.log_plan.copy(),
                "log_discomfort": self.log_discomfort.copy()}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Continue from a :meth:`snapshot`.

        Raises:
            ValueError: if the snapshot is of another fleet or run length.
        """
        if snap["log_plan"].shape != self.log_plan.shape:
            raise ValueError(f"EPOS snapshot for {snap['log_plan'].shape}, this controller "
                             f"holds {self.log_plan.shape} (days, buildings)")
        self.t = int(snap["t"])
        self.plan_kwh = np.array(snap["plan_kwh"], dtype=float)
        self.log_days = np.array(snap["log_days"], dtype=float)
        self.log_plan = np.array(snap["log_plan"], dtype=np.int64)
        self.log_discomfort = np.array(snap["log_discomfort"], dtype=float)
