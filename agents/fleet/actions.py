"""Action orders: how a policy's two outputs map onto the building model's actions.

The building model (``agents.fleet.building.step_fleet``) takes ``(u_grid, u_batt)``: the
grid serves the share ``u_grid`` of the demand to serve ``D = d + b``, and the
battery the share ``u_batt`` of what the grid leaves. A policy whose grid share is
1 leaves ``u_batt`` without effect, so learning to use the battery first means
crossing a region of postponed demand (data/policies/README.md).

``battery_first`` reads a policy's outputs ``(v_grid, v_batt)`` the other way round:
the battery serves ``x = min(v_batt * D, A)`` first (A: what it can deliver this
step), then the grid serves ``g = v_grid * (D - x)``. The model's actions that do
exactly this are ``u_grid = g / D`` and ``u_batt = x / (D - g)`` (0 where the
denominators are 0). Pure numpy.
"""

from __future__ import annotations

import numpy as np

ACTION_ORDERS = ("grid_first", "battery_first")


def model_actions(grid_kwh: np.ndarray, battery_kwh: np.ndarray,
                  to_serve_kwh: np.ndarray) -> np.ndarray:
    """(N, 2) model actions ``(u_grid, u_batt)`` under which ``step_fleet`` takes ``grid_kwh``
    from the grid and ``battery_kwh`` from the battery (the battery amount must be one it
    can deliver): ``u_grid = g / D``, ``u_batt = x / (D - g)``, 0 where a denominator is 0."""
    d = np.asarray(to_serve_kwh, dtype=np.float64)
    actions = np.zeros((d.shape[0], 2))
    np.divide(grid_kwh, d, out=actions[:, 0], where=d > 0)
    rest = d - grid_kwh
    np.divide(battery_kwh, rest, out=actions[:, 1], where=rest > 0)
    return np.clip(actions, 0.0, 1.0)


def battery_first_to_model(outputs: np.ndarray, to_serve_kwh: np.ndarray,
                           available_kwh: np.ndarray) -> np.ndarray:
    """(N, 2) model actions ``(u_grid, u_batt)`` from battery-first outputs ``(v_grid, v_batt)``."""
    out = np.clip(np.asarray(outputs, dtype=np.float64), 0.0, 1.0)
    d = np.asarray(to_serve_kwh, dtype=np.float64)
    x = np.minimum(out[:, 1] * d, np.maximum(available_kwh, 0.0))
    return model_actions(out[:, 0] * (d - x), x, d)
