"""The causal price-aware heuristic: battery first, no purchase while expensive unless
the backlog nears its cap, everything bought while cheap; vectorised over the fleet."""

from __future__ import annotations

import numpy as np
import pytest

from agents.control.rules import PriceAwareHeuristic
from agents.fleet.building import FleetParams, FleetState, step_fleet
from agents.fleet.observation import fleet_observation
from agents.fleet.runner import FleetSetup, run_plain

# The actions are shares (g / D, x / (D - g)) that step_fleet multiplies back: a few
# float roundings of kWh-sized numbers.
ACTION_ATOL_KWH = 1e-12
BALANCE_ATOL_KWH = 1e-9
NAMES = [f"Building_{i}" for i in range(1, 5)]
CHEAP, EXPENSIVE = 0.21, 0.45  # the CityLearn tariff's off-peak and a peak price


def _step(params: FleetParams, controller: PriceAwareHeuristic, backlog, soc, demand, price,
          solar=0.0):
    state = FleetState(np.asarray(backlog, float), np.asarray(soc, float))
    obs = fleet_observation(params, state, demand, solar, price, 17.0, 0.0, 0.0)
    actions = controller.act(obs)
    assert actions.shape == (params.n, 2)
    assert ((actions >= 0) & (actions <= 1)).all()
    _, result = step_fleet(params, state, demand, solar, price, actions[:, 0], actions[:, 1])
    return result


@pytest.fixture
def params() -> FleetParams:
    # battery: up to min(e * 0.9, 5) kWh a step; backlog cap 10 kWh (margin 0.8: 8 kWh)
    return FleetParams.uniform(3, capacity_kwh=10.0, power_kw=5.0, eta_charge=0.9,
                               eta_discharge=0.9, pv_kw=0.0, backlog_cap_kwh=10.0)


def test_expensive_with_room_buys_nothing_and_uses_the_battery_first(params):
    ctl = PriceAwareHeuristic(params)
    # D = 3, 6, 9 kWh; the battery can give min(e * 0.9, 5) = 1.8, 5, 5 kWh
    r = _step(params, ctl, backlog=[1.0, 2.0, 4.0], soc=[2.0, 8.0, 10.0],
              demand=[2.0, 4.0, 5.0], price=EXPENSIVE)
    np.testing.assert_allclose(r.grid_kwh, 0.0, atol=ACTION_ATOL_KWH)
    np.testing.assert_allclose(r.battery_kwh, [1.8, 5.0, 5.0], atol=ACTION_ATOL_KWH)
    np.testing.assert_allclose(r.backlog_kwh, [1.2, 1.0, 4.0], atol=ACTION_ATOL_KWH)
    assert (r.dropped_kwh == 0).all()


def test_battery_covers_everything_when_it_can(params):
    ctl = PriceAwareHeuristic(params)
    for price in (CHEAP, EXPENSIVE):
        r = _step(params, ctl, backlog=[0.0, 1.0, 0.5], soc=[10.0, 10.0, 10.0],
                  demand=[1.0, 2.0, 4.5], price=price)
        np.testing.assert_allclose(r.battery_kwh, [1.0, 3.0, 5.0], atol=ACTION_ATOL_KWH)
        np.testing.assert_allclose(r.grid_kwh, 0.0, atol=ACTION_ATOL_KWH)
        np.testing.assert_allclose(r.backlog_kwh, 0.0, atol=ACTION_ATOL_KWH)


def test_expensive_buys_just_enough_to_keep_the_backlog_at_the_margin(params):
    ctl = PriceAwareHeuristic(params, backlog_margin=0.8)
    # rest after the battery: 7 + 4 - 1.8 = 9.2, 6 + 6 - 0 = 12, 7.5 + 0.5 - 0 = 8.0
    r = _step(params, ctl, backlog=[7.0, 6.0, 7.5], soc=[2.0, 0.0, 0.0],
              demand=[4.0, 6.0, 0.5], price=EXPENSIVE)
    np.testing.assert_allclose(r.battery_kwh, [1.8, 0.0, 0.0], atol=ACTION_ATOL_KWH)
    np.testing.assert_allclose(r.grid_kwh, [1.2, 4.0, 0.0], atol=ACTION_ATOL_KWH)
    np.testing.assert_allclose(r.backlog_kwh, [8.0, 8.0, 8.0], atol=ACTION_ATOL_KWH)
    assert (r.dropped_kwh == 0).all()


def test_cheap_buys_all_the_battery_does_not_serve(params):
    ctl = PriceAwareHeuristic(params)
    r = _step(params, ctl, backlog=[7.0, 0.0, 3.0], soc=[2.0, 0.0, 10.0],
              demand=[4.0, 1.0, 6.0], price=CHEAP)
    np.testing.assert_allclose(r.battery_kwh, [1.8, 0.0, 5.0], atol=ACTION_ATOL_KWH)
    np.testing.assert_allclose(r.grid_kwh, [9.2, 1.0, 4.0], atol=ACTION_ATOL_KWH)
    np.testing.assert_allclose(r.backlog_kwh, 0.0, atol=ACTION_ATOL_KWH)


def test_threshold_is_inclusive_and_per_building_prices_are_read(params):
    ctl = PriceAwareHeuristic(params, price_threshold_per_kwh=0.3)
    r = _step(params, ctl, backlog=[1.0, 1.0, 1.0], soc=[0.0, 0.0, 0.0],
              demand=[1.0, 1.0, 1.0], price=[0.3, 0.3 - 1e-9, 0.5])
    np.testing.assert_allclose(r.grid_kwh, [0.0, 2.0, 0.0], atol=ACTION_ATOL_KWH)


def test_no_cap_postpones_through_the_whole_expensive_period():
    params = FleetParams.uniform(2, capacity_kwh=0.0, pv_kw=0.0)  # backlog cap inf
    ctl = PriceAwareHeuristic(params)
    r = _step(params, ctl, backlog=[1e4, 0.0], soc=[0.0, 0.0], demand=[50.0, 1.0],
              price=EXPENSIVE)
    assert (r.grid_kwh == 0).all() and (r.dropped_kwh == 0).all()
    np.testing.assert_allclose(r.backlog_kwh, [1e4 + 50.0, 1.0])


@pytest.fixture(scope="module")
def setup() -> FleetSetup:
    # four days with the evening peak price; a double-demand building fills its backlog
    return FleetSetup.from_citylearn(NAMES, 2000, 96, demand_scale=[1, 2, 1, 1],
                                     backlog_cap_kwh=[24.0, 6.0, 24.0, 3.0])


def test_run_never_drops_keeps_the_balance_and_follows_the_rule(setup: FleetSetup):
    ctl = PriceAwareHeuristic(setup.params, backlog_margin=0.8)
    df = run_plain(setup, ctl, None)
    shape = (setup.n_steps, setup.n)
    col = {c: df[c].to_numpy(float).reshape(shape) for c in
           ("demand_kwh", "backlog_kwh", "grid_kwh", "battery_kwh", "dropped_kwh", "price")}
    before = np.vstack([np.zeros((1, setup.n)), col["backlog_kwh"][:-1]])
    lhs = col["demand_kwh"] + before
    rhs = col["grid_kwh"] + col["battery_kwh"] + col["backlog_kwh"] + col["dropped_kwh"]
    np.testing.assert_allclose(lhs, rhs, atol=BALANCE_ATOL_KWH)
    assert (col["dropped_kwh"] == 0).all()
    room = 0.8 * setup.params.backlog_cap_kwh
    assert (col["backlog_kwh"] <= room + BALANCE_ATOL_KWH).all()
    expensive = col["price"] >= 0.3
    assert expensive.any() and (~expensive).any()
    # while cheap nothing is left over; while expensive only what exceeds the margin is bought
    np.testing.assert_allclose(col["backlog_kwh"][~expensive], 0.0, atol=BALANCE_ATOL_KWH)
    at_margin = np.isclose(col["backlog_kwh"], room, atol=BALANCE_ATOL_KWH)
    bought = col["grid_kwh"] > BALANCE_ATOL_KWH
    assert (at_margin[expensive & bought]).all()
    assert (expensive & bought).any()  # the small caps bind during the evening peak


def test_fleet_equals_per_building(setup: FleetSetup):
    fleet = run_plain(setup, PriceAwareHeuristic(setup.params, 0.35, 0.6), None)
    for i in range(setup.n):
        one = setup.select([i])
        alone = run_plain(one, PriceAwareHeuristic(one.params, 0.35, 0.6), None)
        mine = fleet[fleet.building == setup.names[i]].reset_index(drop=True)
        for c in ("grid_kwh", "battery_kwh", "backlog_kwh", "soc_kwh", "cost"):
            np.testing.assert_array_equal(mine[c].to_numpy(), alone[c].to_numpy(), err_msg=c)


@pytest.mark.parametrize("kwargs", [dict(price_threshold_per_kwh=0.0),
                                    dict(price_threshold_per_kwh=np.inf),
                                    dict(backlog_margin=0.0), dict(backlog_margin=1.5)])
def test_bad_parameters_are_refused(params, kwargs):
    with pytest.raises(ValueError):
        PriceAwareHeuristic(params, **kwargs)
