"""Building dynamics (docs/equations.md): balance, bounds, limits, fleet == single."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agents.fleet.building import FleetParams, FleetState, step_fleet
from agents.fleet.data import load_citylearn

# Named tolerances. The balance is exact arithmetic up to float rounding of a few
# additions of numbers below ~1e3 kWh, so a few ulps of 1e3 bound it.
BALANCE_ATOL_KWH = 1e-11
SOC_ATOL_KWH = 1e-12
FLEET_VS_SINGLE_ATOL = 0.0  # the same float operations per element: bit-identical

N_MAX = 6
T_STEPS = 12
finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def fleet_cases(draw):
    n = draw(st.integers(1, N_MAX))
    vec = lambda lo, hi: arrays(np.float64, n, elements=st.floats(lo, hi, **finite))  # noqa: E731
    cap = draw(vec(0.0, 20.0))
    params = FleetParams(
        capacity_kwh=cap,
        power_kw=draw(vec(0.0, 10.0)),
        eta_charge=draw(vec(0.5, 1.0)),
        eta_discharge=draw(vec(0.5, 1.0)),
        pv_kw=draw(vec(0.0, 10.0)),
        demand_scale=draw(vec(0.0, 3.0)),
        backlog_cap_kwh=draw(vec(0.0, 30.0)),
        export_pv=draw(arrays(bool, n)),
    )
    soc0 = cap * draw(vec(0.0, 1.0))
    mat = lambda lo, hi: draw(  # noqa: E731
        arrays(np.float64, (T_STEPS, n), elements=st.floats(lo, hi, **finite))
    )
    return params, soc0, mat(0.0, 10.0), mat(0.0, 1000.0), mat(0.0, 1.0), mat(0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(fleet_cases())
def test_energy_balance_and_bounds_every_step(case):
    params, soc0, demand, solar, ug, ub = case
    state = FleetState(np.zeros(params.n), soc0)
    dt_h = 1.0
    for t in range(T_STEPS):
        before = state
        state, r = step_fleet(params, state, demand[t], solar[t], 0.2, ug[t], ub[t], dt_h)
        lhs = r.demand_kwh + before.backlog_kwh
        rhs = r.grid_kwh + r.battery_kwh + r.backlog_kwh + r.dropped_kwh
        np.testing.assert_allclose(lhs, rhs, rtol=0, atol=BALANCE_ATOL_KWH)
        assert (r.grid_kwh >= 0).all() and (r.battery_kwh >= 0).all()
        assert (r.backlog_kwh >= 0).all() and (r.dropped_kwh >= 0).all()
        assert (r.backlog_kwh <= params.backlog_cap_kwh).all()
        assert (state.soc_kwh >= -SOC_ATOL_KWH).all()
        assert (state.soc_kwh <= params.capacity_kwh + SOC_ATOL_KWH).all()
        # battery power limit binds on discharge and on PV charging
        assert (r.battery_kwh <= params.power_kw * dt_h + SOC_ATOL_KWH).all()
        assert (r.pv_to_battery_kwh <= params.power_kw * dt_h + SOC_ATOL_KWH).all()
        # PV is stored, exported or curtailed; nothing else
        np.testing.assert_allclose(
            r.pv_kwh, r.pv_to_battery_kwh + r.export_kwh + r.curtailed_kwh, atol=BALANCE_ATOL_KWH
        )
        assert (r.export_kwh[~params.export_pv] == 0).all()
        assert (r.curtailed_kwh[params.export_pv] == 0).all()
        # battery energy balance
        np.testing.assert_allclose(
            state.soc_kwh,
            before.soc_kwh - r.battery_kwh / params.eta_discharge
            + params.eta_charge * r.pv_to_battery_kwh,
            atol=1e-9,
        )


def test_battery_power_limit_binds():
    params = FleetParams.uniform(1, capacity_kwh=100.0, power_kw=2.0, pv_kw=0.0)
    state = FleetState(np.zeros(1), np.array([50.0]))
    _, r = step_fleet(params, state, np.array([10.0]), np.zeros(1), 0.2, 0.0, 1.0, dt_h=0.5)
    assert r.battery_kwh[0] == pytest.approx(1.0)  # 2 kW for half an hour
    assert r.backlog_kwh[0] == pytest.approx(9.0)


def test_pv_charging_limited_by_power_and_room():
    params = FleetParams.uniform(2, capacity_kwh=[10.0, 1.0], power_kw=3.0, pv_kw=10.0,
                                 eta_charge=1.0, export_pv=[True, False])
    state = FleetState(np.zeros(2), np.zeros(2))
    _, r = step_fleet(params, state, np.zeros(2), np.full(2, 800.0), 0.2, 1.0, 0.0)
    np.testing.assert_allclose(r.pv_kwh, [8.0, 8.0])
    np.testing.assert_allclose(r.pv_to_battery_kwh, [3.0, 1.0])
    np.testing.assert_allclose(r.export_kwh, [5.0, 0.0])
    np.testing.assert_allclose(r.curtailed_kwh, [0.0, 7.0])
    np.testing.assert_allclose(r.net_load_kw(1.0), [-5.0, 0.0])


def test_demand_beyond_backlog_cap_is_dropped_exactly():
    params = FleetParams.uniform(1, backlog_cap_kwh=2.5, capacity_kwh=0.0, pv_kw=0.0)
    state = FleetState(np.array([1.0]), np.zeros(1))
    state, r = step_fleet(params, state, np.array([4.0]), np.zeros(1), 0.3, 0.25, 0.0)
    # D = 5, g = 1.25, unmet = 3.75, backlog 2.5, dropped 1.25 (all exact in binary)
    assert r.grid_kwh[0] == 1.25
    assert r.backlog_kwh[0] == 2.5
    assert r.dropped_kwh[0] == 1.25
    assert r.cost[0] == pytest.approx(0.375)
    assert state.backlog_kwh[0] == 2.5


def test_actions_are_clipped():
    params = FleetParams.uniform(1, pv_kw=0.0)
    state = FleetState(np.zeros(1), np.zeros(1))
    _, r = step_fleet(params, state, np.array([2.0]), np.zeros(1), 0.2, 7.0, -3.0)
    assert r.grid_kwh[0] == 2.0 and r.battery_kwh[0] == 0.0


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_fleet_equals_buildings_stepped_alone(n):
    data = load_citylearn()
    rng = np.random.default_rng(n)
    names = [data.names[i % len(data.names)] for i in range(n)]
    params = FleetParams.from_buildings(
        [data.building(x) for x in names],
        demand_scale=rng.choice([1.0, 2.0], n),
        backlog_cap_kwh=rng.uniform(1.0, 20.0, n),
        export_pv=rng.random(n) < 0.5,
    )
    steps = 24
    demand, solar, price = data.window(names, 4000, steps)
    actions = rng.random((steps, n, 2))
    fleet_state = FleetState.initial(params, rng.random(n))
    singles = [fleet_state.select([i]) for i in range(n)]
    one_params = [params.select([i]) for i in range(n)]
    for t in range(steps):
        fleet_state, fr = step_fleet(params, fleet_state, demand[t], solar[t], price[t],
                                     actions[t, :, 0], actions[t, :, 1])
        for i in range(n):
            singles[i], sr = step_fleet(one_params[i], singles[i], demand[t, i:i + 1],
                                        solar[t, i:i + 1], price[t], actions[t, i, 0],
                                        actions[t, i, 1])
            for name in ("grid_kwh", "battery_kwh", "unmet_kwh", "dropped_kwh", "backlog_kwh",
                         "soc_kwh", "pv_kwh", "export_kwh", "cost"):
                np.testing.assert_allclose(getattr(fr, name)[i], getattr(sr, name)[0],
                                           rtol=0, atol=FLEET_VS_SINGLE_ATOL, err_msg=name)


def test_parameter_validation_names_the_field():
    with pytest.raises(ValueError, match="capacity_kwh"):
        FleetParams.uniform(2, capacity_kwh=[1.0, -1.0])
    with pytest.raises(ValueError, match="eta_charge"):
        FleetParams.uniform(1, eta_charge=1.5)
    with pytest.raises(ValueError, match="demand_scale"):
        FleetParams.uniform(3, demand_scale=[1.0, 2.0])
    with pytest.raises(TypeError, match="unknown parameter"):
        FleetParams.uniform(1, capacity=3.0)
