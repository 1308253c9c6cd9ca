"""Demonstrations for a warm start: each building's best response computed by its local LP.

The teacher of a training lane solves the building's local problem of
:mod:`agents.control.dmpc` over the next ``horizon`` steps with the lane's current
multipliers held over the horizon:

    minimise   sum_k (price_k + lambda) g_k - soc_value e_H-1 + backlog_value b_H-1

with ``soc_value = eta_dis x`` the horizon's mean price and ``backlog_value =
max(0, 1.05 x`` its highest price ``+ nu)``: postponing past the horizon never pays,
and nu, the value the Lagrangian puts on serving, raises what the backlog left at the
end costs. So more lambda means less grid energy, more nu more served demand, and a
negative lambda (a grid constraint asking for consumption) makes buying now pay.

The teacher reads the lane's demand and PV over the horizon (a perfect forecast). It is
privileged: only training uses it, and the policy that imitates it sees the causal
observation alone. Its first step becomes the policy's target action, in the policy's
action order. The demonstrations are collected on the states the teacher itself visits
(the lanes step with the teacher's actions) and, with ``mix``, on states a noisy copy
of it visits, so that the policy also learns to recover from its own mistakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from agents.control.dmpc import LocalProblems
from agents.fleet.actions import model_actions
from agents.fleet.building import FleetParams
from agents.fleet.observation import FleetObservation
from agents.learning.training_fleet import TrainingFleet


@dataclass(frozen=True)
class Demonstrations:
    """Observations (S, OBS_DIM) and the teacher's actions (S, 2) in the policy's order."""

    obs: np.ndarray
    actions: np.ndarray


def best_response(params: FleetParams, obs: FleetObservation, demand_kwh: np.ndarray,
                  pv_kwh: np.ndarray, price_per_kwh: np.ndarray,
                  dt_h: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Each building's local LP (module docstring) from the state and multipliers of
    ``obs`` over the forecast ``demand_kwh``, ``pv_kwh`` and ``price_per_kwh`` (N, H):
    the first step's ``(grid_kwh, battery_kwh)``, (N,) each, capped by what the battery
    can deliver and what there is to serve."""
    cost_grid = price_per_kwh + np.asarray(obs.lam)[:, None]
    soc_value = params.eta_discharge * price_per_kwh.mean(axis=1)
    backlog_value = np.maximum(0.0, 1.05 * price_per_kwh.max(axis=1) + obs.nu)
    plans = LocalProblems(params, dt_h).solve(
        cost_grid, np.zeros_like(cost_grid), demand_kwh, pv_kwh, obs.backlog_kwh,
        obs.soc_kwh, soc_value, backlog_value, np.arange(obs.n))
    battery = np.minimum(plans.battery_kwh[:, 0], obs.battery_available_kwh)
    grid = np.minimum(plans.grid_kwh[:, 0], obs.demand_kwh + obs.backlog_kwh - battery)
    return grid, battery


def teacher_plan(fleet: TrainingFleet, horizon: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's energies of the current step, ``(grid_kwh, battery_kwh)``, (M,) each:
    :func:`best_response` on the lanes' own demand, PV and tariff (a perfect forecast)."""
    base_d, solar, price = fleet.window(horizon)
    p = fleet.params
    demand = base_d * p.demand_scale[:, None]
    pv = p.pv_kw[:, None] * solar / 1000.0 * fleet.dt_h
    return best_response(p, fleet.observation(), demand, pv, price, fleet.dt_h)


def teacher_actions(fleet: TrainingFleet, horizon: int = 24) -> np.ndarray:
    """The teacher's actions (M, 2) in the fleet's action order (``agents.fleet.actions``)."""
    obs = fleet.observation()
    to_serve = obs.demand_kwh + obs.backlog_kwh
    grid, battery = teacher_plan(fleet, horizon)
    if fleet.action_order == "grid_first":
        return model_actions(grid, battery, to_serve)
    out = np.zeros((fleet.m, 2))
    np.divide(battery, to_serve, out=out[:, 1], where=to_serve > 0)
    rest = to_serve - battery
    np.divide(grid, rest, out=out[:, 0], where=rest > 1e-12)
    return np.clip(out, 0.0, 1.0)


def collect(fleet: TrainingFleet, steps: int, horizon: int = 24, mix: float = 0.3,
            noise: float = 0.3, progress: bool = False,
            behaviour: Callable[[np.ndarray], np.ndarray] | None = None) -> Demonstrations:
    """``steps`` x M demonstrations from the lanes (module docstring).

    A lane follows the teacher, or ``behaviour`` (actions from the observation matrix:
    the policy being trained, DAgger's rounds); with probability ``mix`` per step it takes
    that action plus Gaussian noise of std ``noise`` instead. The recorded target is
    always the teacher's. Finished lanes start new episodes.
    """
    obs_rows, act_rows = [], []
    rng = np.random.default_rng(fleet.rngs[0].integers(2**31))
    iterator: Iterable[int] = range(steps)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="demonstrations", unit="step")
    for _ in iterator:
        matrix = fleet.observe()
        obs_rows.append(matrix)
        target = teacher_actions(fleet, horizon)
        act_rows.append(target)
        taken = target.copy() if behaviour is None else np.asarray(behaviour(matrix),
                                                                   dtype=np.float64)
        noisy = rng.random(fleet.m) < mix
        taken[noisy] += noise * rng.standard_normal((int(noisy.sum()), 2))
        _, done, _ = fleet.step(np.clip(taken, 0.0, 1.0))
        for i in np.flatnonzero(done):
            fleet.reset_lane(int(i))
    return Demonstrations(np.concatenate(obs_rows).astype(np.float32),
                          np.concatenate(act_rows).astype(np.float32))
