"""Controllers that act for a whole fleet in one call.

Every controller has ``act(obs: FleetObservation) -> np.ndarray`` of shape (N, 2):
column 0 is ``u_grid``, column 1 ``u_batt`` (docs/equations.md), both in [0, 1].
Trained policies (``agents.policy.PolicyLibrary``) follow the same interface.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from agents.building import FleetParams
from agents.observation import FleetObservation


class Controller(Protocol):
    name: str

    def act(self, obs: FleetObservation) -> np.ndarray: ...


class NoControl:
    """Serve all demand from the grid; the battery only stores PV."""

    name = "none"

    def act(self, obs: FleetObservation) -> np.ndarray:
        actions = np.zeros((obs.n, 2))
        actions[:, 0] = 1.0
        return actions


class RuleBasedPeakShaving:
    """Battery covers demand above a per-building threshold; the grid serves the rest.

    Nothing is postponed: whatever the battery cannot supply comes from the grid.
    ``threshold_kwh`` defaults to each building's demand scale x 1 kWh per step.
    """

    name = "rule"

    def __init__(self, params: FleetParams, threshold_kwh: np.ndarray | float | None = None,
                 dt_h: float = 1.0) -> None:
        self.params = params
        self.dt_h = dt_h
        if threshold_kwh is None:
            threshold_kwh = params.demand_scale * 1.0 * dt_h
        self.threshold_kwh = np.broadcast_to(np.asarray(threshold_kwh, dtype=float), (params.n,))
        if (self.threshold_kwh < 0).any():
            raise ValueError(f"threshold_kwh must be >= 0, got {self.threshold_kwh}")

    def act(self, obs: FleetObservation) -> np.ndarray:
        p = self.params
        to_serve = obs.demand_kwh + obs.backlog_kwh
        available = np.minimum(obs.soc_kwh * p.eta_discharge, p.power_kw * self.dt_h)
        from_battery = np.minimum(np.maximum(to_serve - self.threshold_kwh, 0.0), available)
        u_grid = np.divide(to_serve - from_battery, to_serve, out=np.ones(obs.n),
                           where=to_serve > 0)
        actions = np.empty((obs.n, 2))
        actions[:, 0] = np.clip(u_grid, 0.0, 1.0)
        actions[:, 1] = 1.0
        return actions
