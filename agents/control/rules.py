"""Controllers that act for a whole fleet in one call.

Every controller implements the contract of :mod:`agents.control.contract` (re-exported here as
``Controller``): ``act(obs: FleetObservation) -> np.ndarray`` of shape (N, 2), column 0
``u_grid``, column 1 ``u_batt`` (docs/equations.md), both in [0, 1]. Trained policies
(``agents.learning.policy.PolicyLibrary``), the oracle, DMPC and EPOS follow the same contract.
"""

from __future__ import annotations

import numpy as np

from agents.control.contract import Controller
from agents.fleet.actions import model_actions
from agents.fleet.building import FleetParams
from agents.fleet.observation import FleetObservation

__all__ = ["Controller", "NoControl", "PriceAwareHeuristic", "RuleBasedPeakShaving"]


class NoControl:
    """Serve all demand from the grid; the battery only stores PV."""

    name = "none"

    def act(self, obs: FleetObservation) -> np.ndarray:
        """All demand from the grid: ``u_grid = 1``, ``u_batt = 0``."""
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
        """Actions under which the battery serves, as far as it can, demand above the threshold."""
        to_serve = obs.demand_kwh + obs.backlog_kwh
        from_battery = np.minimum(np.maximum(to_serve - self.threshold_kwh, 0.0),
                                  obs.battery_available_kwh)
        u_grid = np.divide(to_serve - from_battery, to_serve, out=np.ones(obs.n),
                           where=to_serve > 0)
        actions = np.empty((obs.n, 2))
        actions[:, 0] = np.clip(u_grid, 0.0, 1.0)
        actions[:, 1] = 1.0
        return actions


#: ``PriceAwareHeuristic`` defaults: "expensive" from this price on, and the share of the
#: backlog cap up to which it postpones demand while expensive.
HEURISTIC_PRICE_THRESHOLD_PER_KWH = 0.3
HEURISTIC_BACKLOG_MARGIN = 0.8


class PriceAwareHeuristic:
    """Battery first; postpone grid purchases while the price is high (causal baseline).

    Per building and step, with ``D = d + b`` (new demand plus backlog) and
    ``A = min(e * eta_dis, P * dt)`` (what the battery can deliver now):

    - the battery serves ``x = min(D, A)``, and ``rest = D - x`` remains;
    - price below ``price_threshold_per_kwh``: the grid serves all the rest, ``g = rest``;
    - price at or above it: the grid serves only what would push the backlog above
      ``backlog_margin * B_max``, ``g = max(rest - backlog_margin * B_max, 0)``; the rest
      is postponed. With no backlog cap (``B_max = inf``) nothing is bought during the
      whole expensive period.

    Nothing is dropped as long as the margin leaves room (``backlog_margin <= 1``): the
    backlog after the step is ``min(rest, backlog_margin * B_max) <= B_max``. It reads
    only the current observation and its own parameters, and ignores the district
    limit and the multipliers.
    """

    name = "heuristic"

    def __init__(self, params: FleetParams,
                 price_threshold_per_kwh: np.ndarray | float = HEURISTIC_PRICE_THRESHOLD_PER_KWH,
                 backlog_margin: np.ndarray | float = HEURISTIC_BACKLOG_MARGIN) -> None:
        self.params = params
        self.price_threshold = np.broadcast_to(
            np.asarray(price_threshold_per_kwh, dtype=float), (params.n,))
        self.backlog_margin = np.broadcast_to(np.asarray(backlog_margin, dtype=float),
                                              (params.n,))
        if not (np.isfinite(self.price_threshold).all() and (self.price_threshold > 0).all()):
            raise ValueError(f"price_threshold_per_kwh must be finite and > 0, got "
                             f"{self.price_threshold}")
        if ((self.backlog_margin <= 0) | (self.backlog_margin > 1)).any():
            raise ValueError(f"backlog_margin must lie in (0, 1], got {self.backlog_margin}")
        # margin * inf = inf: no cap, postpone for the whole expensive period
        self.backlog_room_kwh = self.backlog_margin * params.backlog_cap_kwh

    def plan(self, obs: FleetObservation) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``(g, x)`` it asks from the grid and from the battery, kWh, shape (N,)."""
        to_serve = obs.demand_kwh + obs.backlog_kwh
        battery = np.minimum(to_serve, obs.battery_available_kwh)
        rest = to_serve - battery
        expensive = obs.price_per_kwh >= self.price_threshold
        grid = np.where(expensive, np.maximum(rest - self.backlog_room_kwh, 0.0), rest)
        return grid, battery

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Model actions of :meth:`plan`, shape (N, 2)."""
        grid, battery = self.plan(obs)
        return model_actions(grid, battery, obs.demand_kwh + obs.backlog_kwh)
