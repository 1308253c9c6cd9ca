"""The building model's numbers, not only its invariants: every step of the vectorised
model against a scalar transcription of the equations in agents/fleet/building.py's docstring
(step lengths other than one hour, actions outside [0, 1], a battery nearly full), the
CityLearn defaults, and the errors that name the argument. Written after mutation testing
(``make mutation``) showed which changes the balance and bound tests let through."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.fleet.building import FleetParams, FleetState, exogenous_kwh, step_fleet
from agents.fleet.data import load_citylearn

VALUE_ATOL_KWH = 1e-12  # the same few float operations in another order
CITYLEARN_CAPACITY_KWH = 6.4  # data/citylearn_2022/schema.json
CITYLEARN_POWER_KW = 5.0
CITYLEARN_ROUND_TRIP = 0.9
CITYLEARN_PV_KW = 4.0


def _scalar_step(p: dict, backlog: float, soc: float, base: float, solar: float,
                 price: float, u_grid: float, u_batt: float, dt_h: float) -> dict:
    """One building, one step, straight from the module docstring's equations."""
    d = p["demand_scale"] * base
    s = p["pv_kw"] * max(solar, 0.0) / 1000.0 * dt_h
    ug, ub = min(max(u_grid, 0.0), 1.0), min(max(u_batt, 0.0), 1.0)
    big_d = d + backlog
    g = ug * big_d
    x = min(ub * (big_d - g), soc * p["eta_dis"], p["power_kw"] * dt_h)
    unmet = big_d - g - x
    b_next = min(unmet, p["cap_backlog"])
    e_mid = max(soc - x / p["eta_dis"], 0.0)
    c = min(s, p["power_kw"] * dt_h, max(p["capacity"] - e_mid, 0.0) / p["eta_ch"])
    e_next = min(p["capacity"], e_mid + p["eta_ch"] * c)
    export = s - c if p["export"] else 0.0
    return {"demand_kwh": d, "pv_kwh": s, "grid_kwh": g, "battery_kwh": x,
            "unmet_kwh": unmet, "backlog_kwh": b_next, "dropped_kwh": unmet - b_next,
            "soc_kwh": e_next, "pv_to_battery_kwh": c, "export_kwh": export,
            "curtailed_kwh": s - c - export, "cost": price * g}


@pytest.mark.parametrize("dt_h", [0.25, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_quantity_equals_the_scalar_equations(dt_h: float, seed: int):
    rng = np.random.default_rng(seed)
    n = 64
    params = FleetParams(
        capacity_kwh=rng.uniform(0.0, 10.0, n), power_kw=rng.uniform(0.5, 6.0, n),
        eta_charge=rng.uniform(0.6, 1.0, n), eta_discharge=rng.uniform(0.6, 1.0, n),
        pv_kw=rng.uniform(0.0, 8.0, n), demand_scale=rng.uniform(0.5, 2.0, n),
        backlog_cap_kwh=rng.uniform(0.0, 4.0, n), export_pv=rng.random(n) < 0.5)
    # batteries from empty to full (the room to charge binds near full)
    state = FleetState(rng.uniform(0.0, 3.0, n), params.capacity_kwh * rng.uniform(0, 1, n))
    base, solar = rng.uniform(0.0, 5.0, n), rng.uniform(-50.0, 1000.0, n)
    price = rng.uniform(0.1, 0.6, n)
    u_grid, u_batt = rng.uniform(-0.5, 1.5, n), rng.uniform(-0.5, 1.5, n)  # clipped
    new_state, res = step_fleet(params, state, base, solar, price, u_grid, u_batt, dt_h)
    for i in range(n):
        p = {"demand_scale": params.demand_scale[i], "pv_kw": params.pv_kw[i],
             "eta_dis": params.eta_discharge[i], "eta_ch": params.eta_charge[i],
             "power_kw": params.power_kw[i], "capacity": params.capacity_kwh[i],
             "cap_backlog": params.backlog_cap_kwh[i], "export": bool(params.export_pv[i])}
        want = _scalar_step(p, state.backlog_kwh[i], state.soc_kwh[i], base[i], solar[i],
                            price[i], u_grid[i], u_batt[i], dt_h)
        for key, value in want.items():
            assert getattr(res, key)[i] == pytest.approx(value, abs=VALUE_ATOL_KWH), (key, i)
        assert res.price_per_kwh[i] == price[i]
    np.testing.assert_array_equal(new_state.backlog_kwh, res.backlog_kwh)
    np.testing.assert_array_equal(new_state.soc_kwh, res.soc_kwh)
    np.testing.assert_allclose(res.net_load_kw(dt_h), (res.grid_kwh - res.export_kwh) / dt_h,
                               rtol=0, atol=VALUE_ATOL_KWH)
    # the draws reach the cases that matter: clipped actions, a binding room to charge
    assert (u_batt < 0).any() and (u_grid > 1).any()
    room = (params.capacity_kwh - np.maximum(state.soc_kwh - res.battery_kwh
                                             / params.eta_discharge, 0)) / params.eta_charge
    assert np.isclose(res.pv_to_battery_kwh, room).any()


def test_net_load_is_power_over_the_step_length():
    params = FleetParams.uniform(1, pv_kw=0.0)
    _, res = step_fleet(params, FleetState.initial(params), [2.0], [0.0], 0.3, [1.0], [0.0],
                        dt_h=0.5)
    assert res.net_load_kw(0.5)[0] == pytest.approx(4.0)  # 2 kWh in half an hour: 4 kW


def test_uniform_defaults_are_citylearns_battery_and_pv():
    p = FleetParams.uniform(2)
    assert p.capacity_kwh.tolist() == [CITYLEARN_CAPACITY_KWH] * 2
    assert p.power_kw.tolist() == [CITYLEARN_POWER_KW] * 2
    assert p.eta_charge[0] == p.eta_discharge[0] == pytest.approx(math.sqrt(0.9))
    assert p.pv_kw.tolist() == [CITYLEARN_PV_KW] * 2
    assert p.demand_scale.tolist() == [1.0, 1.0]
    assert np.isinf(p.backlog_cap_kwh).all()
    assert p.export_pv.dtype == bool and p.export_pv.all()
    assert FleetParams.uniform(1, export_pv=0).export_pv.dtype == bool
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['size'\]"):
        FleetParams.uniform(1, size=3)


def test_from_buildings_takes_the_square_root_of_the_round_trip_efficiency():
    data = load_citylearn()
    buildings = [data.building(name) for name in data.names[:3]]
    p = FleetParams.from_buildings(buildings)
    assert [b.battery.efficiency for b in buildings] == [CITYLEARN_ROUND_TRIP] * 3
    np.testing.assert_allclose(p.eta_charge, math.sqrt(CITYLEARN_ROUND_TRIP), rtol=1e-15)
    np.testing.assert_array_equal(p.eta_discharge, p.eta_charge)
    assert p.demand_scale.tolist() == [1.0] * 3 and np.isinf(p.backlog_cap_kwh).all()
    assert p.export_pv.dtype == bool and p.export_pv.all()
    q = FleetParams.from_buildings(buildings, demand_scale=[1, 2, 3], backlog_cap_kwh=5,
                                   export_pv=[True, False, True])
    assert q.demand_scale.tolist() == [1.0, 2.0, 3.0] and q.backlog_cap_kwh.tolist() == [5] * 3
    assert q.export_pv.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="demand_scale: expected a scalar or 3 values"):
        FleetParams.from_buildings(buildings, demand_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="backlog_cap_kwh: expected a scalar or 3 values"):
        FleetParams.from_buildings(buildings, backlog_cap_kwh=[1.0])
    with pytest.raises(ValueError, match="export_pv: expected a scalar or 3 values"):
        FleetParams.from_buildings(buildings, export_pv=[True])


def test_integers_become_floats_and_bounds_are_exact():
    p = FleetParams.uniform(2, capacity_kwh=[6, 7], power_kw=5)
    assert p.capacity_kwh.dtype == np.float64 and p.power_kw.dtype == np.float64
    assert FleetParams.uniform(1, eta_charge=1.0).eta_charge[0] == 1.0  # 1 is allowed
    with pytest.raises(ValueError, match=r"eta_charge: every value must lie in \(0, 1\]"):
        FleetParams.uniform(1, eta_charge=0.0)
    with pytest.raises(ValueError, match="capacity_kwh: every value must be finite"):
        FleetParams.uniform(1, capacity_kwh=np.inf)  # only the backlog cap may be inf
    with pytest.raises(ValueError, match="backlog_cap_kwh: every value must be finite"):
        FleetParams.uniform(1, backlog_cap_kwh=np.nan)


def test_initial_state_fills_the_battery_by_fraction():
    p = FleetParams.uniform(3)
    state = FleetState.initial(p, [0.0, 0.5, 1.0])  # both ends allowed
    np.testing.assert_allclose(state.soc_kwh, [0.0, 3.2, 6.4], rtol=0, atol=1e-15)
    assert state.backlog_kwh.tolist() == [0.0, 0.0, 0.0]
    assert FleetState.initial(p).soc_kwh.tolist() == [0.0, 0.0, 0.0]
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match=r"soc_fraction must lie in \[0, 1\], got"):
            FleetState.initial(p, bad)
    with pytest.raises(ValueError, match="soc_fraction: expected a scalar or 3 values"):
        FleetState.initial(p, [0.5, 0.5])


@pytest.mark.parametrize("arg", ["base", "solar", "price", "u_grid", "u_batt"])
def test_a_wrong_length_names_the_argument(arg: str):
    p = FleetParams.uniform(3)
    args = {"base": np.ones(3), "solar": np.ones(3), "price": 0.3, "u_grid": np.ones(3),
            "u_batt": np.ones(3)}
    args[arg] = np.ones(2)
    names = {"base": "base_demand_kwh", "solar": "solar_w_per_kw", "price": "price_per_kwh",
             "u_grid": "u_grid", "u_batt": "u_batt"}
    with pytest.raises(ValueError, match=rf"^{names[arg]}: expected a scalar or 3 values, "
                                         r"got shape \(2,\)$"):
        step_fleet(p, FleetState.initial(p), args["base"], args["solar"], args["price"],
                   args["u_grid"], args["u_batt"])
    if arg in ("base", "solar"):
        with pytest.raises(ValueError, match=rf"^{names[arg]}: expected"):
            exogenous_kwh(p, args["base"], args["solar"], 1.0)


def test_a_step_of_no_length_is_refused():
    p = FleetParams.uniform(1)
    for dt_h in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^dt_h must be > 0, got {dt_h}$"):
            step_fleet(p, FleetState.initial(p), [1.0], [0.0], 0.3, [1.0], [0.0], dt_h=dt_h)


def test_direct_construction_casts_and_names_each_field():
    scalars = dict(capacity_kwh=6.4, power_kw=5, eta_charge=1, eta_discharge=1, pv_kw=4,
                   demand_scale=1, backlog_cap_kwh=np.inf, export_pv=1)
    one = FleetParams(**scalars)  # scalars: a fleet of one
    assert one.n == 1 and one.power_kw.dtype == np.float64 and one.export_pv.dtype == bool
    two = FleetParams(**{**scalars, "capacity_kwh": [6, 7], "export_pv": [1, 0]})
    assert two.capacity_kwh.dtype == np.float64 and two.export_pv.tolist() == [True, False]
    with pytest.raises(ValueError, match=r"^power_kw: expected a scalar or 2 values"):
        FleetParams(**{**scalars, "capacity_kwh": [6, 7], "power_kw": [1.0, 2.0, 3.0]})
