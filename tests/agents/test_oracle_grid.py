"""The oracle LP under linearised grid limits: the plan respects them, the replay follows
the plan, an impossible limit is named, and the linearisation is close to an AC flow."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

from agents.control.oracle import OracleController, OracleInfeasible, solve_oracle
from agents.control.oracle_grid import LinearGridLimits, grid_limits_from_sensitivities, offsets_at
from agents.fleet.runner import FleetSetup, district_limit_kwh, run_plain
from grid_models.sensitivity import linearised_sensitivities
from tests.grid_models.test_sensitivity import radial_net

#: HiGHS's primal feasibility tolerance is 1e-7 per row; rows are in % (or pu).
GRID_ATOL = 1e-5
LP_ATOL_KWH = 1e-6
COST_RTOL = 1e-6
#: The linearised loading against a re-solved AC power flow at the planned peak step.
LINEARISATION_ATOL_PP = 2.0
NAMES = [f"Building_{i}" for i in range(1, 5)]
STEPS = 72
#: The binding loading limit, as a fraction of the unconstrained plan's peak (above its
#: zero-fleet offset).
BINDING_FRACTION = 0.8
BUILDING_BUS = np.array([2, 3, 4, 5])


@pytest.fixture(scope="module")
def setup() -> FleetSetup:
    return FleetSetup.from_citylearn(NAMES, 2000, STEPS, demand_scale=[1, 2, 1, 1],
                                     backlog_cap_kwh=24.0)


@pytest.fixture(scope="module")
def sens():
    return linearised_sensitivities(radial_net(), BUILDING_BUS)


def _solve(setup: FleetSetup, grid: LinearGridLimits | None, limit: float | None = None):
    c = district_limit_kwh(setup, 1.0) if limit is None else limit
    return solve_oracle(setup.params, setup.base_demand_kwh, setup.solar_w_per_kw,
                        setup.price_per_kwh, c, setup.dt_h, grid_limits=grid)


def _trafo_limits(setup, sens, upper: float | None = None) -> LinearGridLimits:
    loading, vm = offsets_at(sens)
    return grid_limits_from_sensitivities(sens, loading, vm, steps=setup.n_steps,
                                          loading_max_percent=upper or 100.0,
                                          voltage_band=None, elements=[("trafo", 0)])


def _binding_upper(setup, sens) -> float:
    free = _solve(setup, None)
    lim = _trafo_limits(setup, sens)
    peak = lim.value((free.grid_kwh - free.export_kwh) / setup.dt_h).max()
    low = lim.offset.min()
    return float(low + BINDING_FRACTION * (peak - low))


def test_validation_names_the_field():
    with pytest.raises(ValueError, match="LinearGridLimits.upper"):
        LinearGridLimits(["a"], np.zeros((3, 1)), np.zeros((1, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="LinearGridLimits.offset"):
        LinearGridLimits(["a", "b"], np.zeros((3, 1)), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="LinearGridLimits.sensitivity"):
        LinearGridLimits(["a"], np.zeros((3, 1)), np.zeros(2), np.zeros(1))


def test_builder_rows(sens):
    loading, vm = offsets_at(sens)
    lim = grid_limits_from_sensitivities(sens, loading, vm, steps=5, elements=[("line", 1)],
                                         buses=[4])
    assert lim.names == ["line 1 loading <= 100 %", "bus 4 vm <= 1.05 pu",
                         "bus 4 vm >= 0.95 pu"]
    assert lim.offset.shape == (5, 3)
    np.testing.assert_allclose(lim.sensitivity[2], -lim.sensitivity[1])
    np.testing.assert_allclose(lim.upper, [100.0, 1.05, -0.95])


def test_binding_loading_limit_plan_and_replay(setup, sens):
    free = _solve(setup, None)
    upper = _binding_upper(setup, sens)
    lim = _trafo_limits(setup, sens, upper)
    assert lim.value((free.grid_kwh - free.export_kwh) / setup.dt_h).max() > upper  # binds
    plan = _solve(setup, lim)
    assert (plan.grid_value <= upper + GRID_ATOL).all()
    assert plan.grid_peak[0] == pytest.approx(upper, abs=GRID_ATOL)
    assert plan.cost >= free.cost * (1 - COST_RTOL)
    # the model's greedy charging gives the planned export
    np.testing.assert_allclose(plan.replay_grid_value, plan.grid_value, atol=GRID_ATOL)
    df = run_plain(setup, OracleController(plan), None)
    shape = (setup.n_steps, setup.n)
    grid = df["grid_kwh"].to_numpy().reshape(shape)
    export = df["export_kwh"].to_numpy().reshape(shape)
    np.testing.assert_allclose(grid, plan.grid_kwh, atol=LP_ATOL_KWH)
    np.testing.assert_allclose(export, plan.export_kwh, atol=LP_ATOL_KWH)
    replayed = lim.value((grid - export) / setup.dt_h)
    assert (replayed <= upper + GRID_ATOL).all()
    assert df["dropped_kwh"].sum() <= LP_ATOL_KWH * setup.n


def test_slack_limit_costs_the_same(setup, sens):
    free = _solve(setup, None)
    plan = _solve(setup, _trafo_limits(setup, sens, 1e4))
    assert plan.cost == pytest.approx(free.cost, rel=COST_RTOL)


def test_impossible_limit_is_named(setup, sens):
    lim = _trafo_limits(setup, sens, float(_trafo_limits(setup, sens).offset.min()) - 1.0)
    with pytest.raises(OracleInfeasible, match=r"trafo 0 loading <= .* %.*relax"):
        _solve(setup, lim)


def test_voltage_min_row(setup, sens):
    free = _solve(setup, None)
    loading, vm = offsets_at(sens)
    probe = grid_limits_from_sensitivities(sens, loading, vm, steps=setup.n_steps,
                                           loading_max_percent=None, buses=[4])
    v_free = -probe.value((free.grid_kwh - free.export_kwh) / setup.dt_h)[:, 1]  # vm at bus 4
    v_min = float(v_free.min() + 0.3 * (vm[sens.bus_index(4)] - v_free.min()))
    lim = grid_limits_from_sensitivities(sens, loading, vm, steps=setup.n_steps,
                                         loading_max_percent=None,
                                         voltage_band=(v_min, 2.0), buses=[4])
    plan = _solve(setup, lim)
    assert lim.names[1] == f"bus 4 vm >= {v_min:g} pu"
    vm_plan = -plan.grid_value[:, 1]
    assert (vm_plan >= v_min - GRID_ATOL).all()
    assert v_free.min() < v_min  # the unconstrained plan would break it
    assert plan.cost >= free.cost * (1 - COST_RTOL)


def test_linearisation_error_at_the_planned_peak(setup, sens):
    lim = _trafo_limits(setup, sens, _binding_upper(setup, sens))
    plan = _solve(setup, lim)
    t = int(plan.grid_peak_step[0])
    net = radial_net()
    p_kw = plan.net_load_kw[t]
    for bus, p in zip(BUILDING_BUS, p_kw, strict=True):
        pp.create_load(net, int(bus), p_mw=float(p) / 1000.0)
    pp.runpp(net)
    ac = float(net.res_trafo.loading_percent.at[0])
    print(f"linearised {plan.grid_peak[0]:.3f} %, AC {ac:.3f} % at step {t}")
    assert abs(ac - plan.grid_peak[0]) <= LINEARISATION_ATOL_PP


LONG_STEPS = 336


def test_long_run_replay_matches_plan(sens):
    """Two weeks under a binding loading limit: stage 2's greedy charging keeps the
    replay's linearised loading on the plan and within the limit."""
    setup = FleetSetup.from_citylearn(NAMES, 2000, LONG_STEPS, demand_scale=[1, 2, 1, 1],
                                      backlog_cap_kwh=24.0)
    upper = _binding_upper(setup, sens)
    lim = _trafo_limits(setup, sens, upper)
    plan = _solve(setup, lim)
    assert plan.grid_peak[0] == pytest.approx(upper, abs=GRID_ATOL)  # binds
    assert np.abs(plan.replay_grid_value - plan.grid_value).max() <= GRID_ATOL
    df = run_plain(setup, OracleController(plan), None)
    shape = (setup.n_steps, setup.n)
    grid = df["grid_kwh"].to_numpy().reshape(shape)
    export = df["export_kwh"].to_numpy().reshape(shape)
    replayed = lim.value((grid - export) / setup.dt_h)
    assert (replayed <= upper + GRID_ATOL).all()
    assert df["dropped_kwh"].sum() <= LP_ATOL_KWH * setup.n
