"""Action orders (agents.fleet.actions): battery-first outputs become model actions that make
the building model do exactly what they say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.fleet.actions import battery_first_to_model
from agents.fleet.building import FleetParams, FleetState, step_fleet
from agents.fleet.observation import battery_available_kwh, fleet_observation

KWH_ATOL = 1e-9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 6), st.floats(0, 20),
                          st.floats(0, 6.4)), min_size=1, max_size=8))
def test_battery_serves_first_then_the_grid(rows):
    v_grid, v_batt, demand, backlog, soc = (np.array(c) for c in zip(*rows, strict=True))
    n = len(rows)
    params = FleetParams.uniform(n, pv_kw=0.0)
    state = FleetState(backlog, soc)
    obs = fleet_observation(params, state, demand, np.zeros(n), 0.3, 12.0, 0.0, 0.0)
    to_serve = demand + backlog
    available = battery_available_kwh(params, state, 1.0)
    actions = battery_first_to_model(np.stack([v_grid, v_batt], axis=1), to_serve,
                                     obs.battery_available_kwh)
    assert ((actions >= 0) & (actions <= 1)).all()
    _, r = step_fleet(params, state, demand, np.zeros(n), 0.3, actions[:, 0], actions[:, 1])
    x = np.minimum(v_batt * to_serve, available)
    np.testing.assert_allclose(r.battery_kwh, x, atol=KWH_ATOL)
    np.testing.assert_allclose(r.grid_kwh, v_grid * (to_serve - x), atol=KWH_ATOL)


def test_nothing_to_serve_gives_zero_actions():
    actions = battery_first_to_model(np.array([[1.0, 1.0]]), np.array([0.0]), np.array([3.0]))
    assert actions.tolist() == [[0.0, 0.0]]


def test_full_battery_share_with_the_grid_covering_the_rest():
    """v = (1, 1): the battery delivers what it can (2 kWh), the grid the other 3."""
    actions = battery_first_to_model(np.array([[1.0, 1.0]]), np.array([5.0]), np.array([2.0]))
    assert actions[0] == pytest.approx([3.0 / 5.0, 1.0])
