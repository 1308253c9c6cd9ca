"""Candidate day plans of the buildings (I-EPOS, :mod:`agents.control.epos`).

**Candidate plans** (:func:`candidate_plans`). Once a day every building makes k plans
of its grid energy for the day, each simulated with the building model
(:func:`agents.fleet.building.step_fleet`) from its state and the forecast, so every plan is
feasible under its own dynamics. Plan 0 serves everything at once, battery first. Plans
1-4 are capped: battery first, and the grid serves at most a cap, the rest waiting until
an hour below it (peak shaving without a rebound). With a district limit c the caps are
0.8, 0.9, 1 and 1.1 x c x the building's share of the day's forecast demand (if every
building takes its factor-1 plan, the district stays within c in every hour); without
one, 40, 55, 70 and 85 % of the building's largest hourly demand of the day. Every
other plan draws (per building, seeded) a window ``[start, start + width)`` (width 1..6
h), a share ``f`` in {0.5, 1} of what is to be served in that window that is postponed,
and whether the battery serves first; outside the window everything is served. The plan's
**discomfort** is the demand kept waiting, ``sum_h backlog_h`` (kWh h), plus
``DROP_PENALTY`` per kWh dropped.

**Serving the demand is a local hard constraint** (:func:`serving_plans`): a plan that
drops demand is replaced by the building's plan 0 wherever the building has a plan that
drops nothing. Without it the district bound, being hard, made the selection drop
demand to meet it (418 kWh at c = 0.3 x peak on ``paper_fig1d``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from agents.fleet.actions import model_actions
from agents.fleet.building import FleetParams, FleetState, step_fleet

#: A plan drops demand when it drops more than this (kWh over the day).
DROP_ATOL_KWH = 1e-9
#: Discomfort per kWh of dropped demand (kWh h equivalent).
DROP_PENALTY = 100.0
#: Capped candidate plans: the grid serves at most these shares of the building's largest
#: hourly demand of the day (peak shaving without the rebound of a window).
CAP_LEVELS = (0.4, 0.55, 0.7, 0.85)
#: With a district limit c, the capped plans' caps are these multiples of c times the
#: building's share of the day's demand.
CAP_FACTORS = (0.8, 0.9, 1.0, 1.1)
#: Longest deferral window of a candidate plan, hours.
MAX_WINDOW_H = 6


@dataclass(frozen=True)
class Plans:
    """k candidate day plans per building: energies (N, k, H) and discomfort (N, k)."""

    grid_kwh: np.ndarray
    export_kwh: np.ndarray
    battery_kwh: np.ndarray
    backlog_kwh: np.ndarray
    dropped_kwh: np.ndarray  # (N, k), over the day
    discomfort: np.ndarray  # (N, k), kWh h


def candidate_plans(params: FleetParams, backlog0_kwh: np.ndarray, soc0_kwh: np.ndarray,
                    demand_kwh: np.ndarray, pv_kwh: np.ndarray, k: int,
                    rng: np.random.Generator, dt_h: float = 1.0,
                    cap_kwh: np.ndarray | None = None) -> Plans:
    """k plans per building for ``demand_kwh`` and ``pv_kwh`` (H, N), simulated with the
    building model from the state ``(backlog0, soc0)`` (module docstring).

    ``cap_kwh`` (N, m): the grid caps of the capped plans 1..m (default: ``CAP_LEVELS`` x
    each building's largest hourly demand of the day).
    """
    h, n = demand_kwh.shape
    rep = np.repeat(np.arange(n), k)  # copy c = building i, plan p: c = i k + p
    copies = n * k
    # the model scales demand and converts solar: feed it kWh directly
    sim = replace(params.select(rep), demand_scale=np.ones(copies),
                  pv_kw=np.full(copies, 1000.0 / dt_h))
    start = rng.integers(0, h, size=(n, k))
    width = rng.integers(1, MAX_WINDOW_H + 1, size=(n, k))
    share = rng.choice([0.5, 1.0], size=(n, k))
    battery_on = rng.random((n, k)) < 0.5
    start[:, 0], width[:, 0], share[:, 0], battery_on[:, 0] = 0, 0, 0.0, True
    # capped plans (p = 1 .. len(CAP_LEVELS), as k allows): battery first, then the grid
    # serves at most a level x the building's largest hourly demand of the day
    cap = np.full((n, k), np.inf)
    if cap_kwh is None:
        cap_kwh = np.asarray(CAP_LEVELS)[None, :] * demand_kwh.max(axis=0)[:, None]
    m = min(cap_kwh.shape[1], max(k - 1, 0))
    cap[:, 1:1 + m] = cap_kwh[:, :m]
    width[:, 1:1 + m], battery_on[:, 1:1 + m] = 0, True
    start, width, share = start.ravel(), width.ravel(), share.ravel()
    battery_on, cap_flat = battery_on.ravel(), cap.ravel()
    state = FleetState(backlog0_kwh[rep].astype(float), soc0_kwh[rep].astype(float))
    out = {name: np.empty((h, copies)) for name in ("grid", "export", "battery", "backlog")}
    dropped = np.zeros(copies)
    energy = sim.power_kw * dt_h
    for step in range(h):
        demand = demand_kwh[step, rep]
        to_serve = demand + state.backlog_kwh
        available = np.minimum(state.soc_kwh * sim.eta_discharge, energy)
        battery = np.where(battery_on, np.minimum(to_serve, available), 0.0)
        rest = to_serve - battery
        in_window = (step >= start) & (step < start + width)
        grid = np.minimum(np.where(in_window, (1.0 - share) * rest, rest), cap_flat)
        actions = model_actions(grid, battery, to_serve)
        state, r = step_fleet(sim, state, demand, pv_kwh[step, rep], 0.0, actions[:, 0],
                              actions[:, 1], dt_h)
        out["grid"][step], out["export"][step] = r.grid_kwh, r.export_kwh
        out["battery"][step], out["backlog"][step] = r.battery_kwh, r.backlog_kwh
        dropped += r.dropped_kwh

    def per_plan(a: np.ndarray) -> np.ndarray:
        result: np.ndarray = a.T.reshape(n, k, h)
        return result

    backlog = per_plan(out["backlog"])
    drops = dropped.reshape(n, k)
    return Plans(per_plan(out["grid"]), per_plan(out["export"]), per_plan(out["battery"]),
                 backlog, drops, backlog.sum(axis=2) * dt_h + DROP_PENALTY * drops)


def serving_plans(plans: Plans) -> Plans:
    """The plans with the local hard constraint "serve the demand": a plan that drops demand
    is replaced by the building's plan 0 (which serves everything at once, and so drops only
    what even it cannot serve) wherever the building has a plan that drops nothing."""
    drops = plans.dropped_kwh > DROP_ATOL_KWH  # (N, k)
    replace_it = drops & ~drops.all(axis=1, keepdims=True)
    if not replace_it.any():
        return plans
    arrays = {}
    for name in ("grid_kwh", "export_kwh", "battery_kwh", "backlog_kwh"):
        a = getattr(plans, name).copy()
        a[replace_it] = np.broadcast_to(a[:, :1], a.shape)[replace_it]
        arrays[name] = a
    dropped, discomfort = plans.dropped_kwh.copy(), plans.discomfort.copy()
    dropped[replace_it] = np.broadcast_to(dropped[:, :1], dropped.shape)[replace_it]
    discomfort[replace_it] = np.broadcast_to(discomfort[:, :1], discomfort.shape)[replace_it]
    return Plans(arrays["grid_kwh"], arrays["export_kwh"], arrays["battery_kwh"],
                 arrays["backlog_kwh"], dropped, discomfort)
