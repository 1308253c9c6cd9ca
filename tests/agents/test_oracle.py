"""The perfect-foresight LP: its replay follows the plan, it is a lower bound, it
says when no schedule exists; the per-step variant keeps every step under c."""

from __future__ import annotations

import numpy as np
import pytest

from agents.control.oracle import OracleController, OracleInfeasible, solve_oracle
from agents.control.rules import NoControl, RuleBasedPeakShaving
from agents.fleet.runner import FleetSetup, district_limit_kwh, run_plain

LP_ATOL_KWH = 1e-6  # HiGHS's primal feasibility tolerance is 1e-7 per row
COST_RTOL = 1e-6
NAMES = [f"Building_{i}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def setup() -> FleetSetup:
    return FleetSetup.from_citylearn(NAMES, 2000, 96, demand_scale=[1, 2, 1, 1],
                                     backlog_cap_kwh=24.0)


def _solve(setup: FleetSetup, limit: float, mode: str = "run_average"):
    return solve_oracle(setup.params, setup.base_demand_kwh, setup.solar_w_per_kw,
                        setup.price_per_kwh, limit, setup.dt_h, limit=mode)


def test_replay_follows_the_plan_and_serves_all_demand(setup: FleetSetup):
    limit = district_limit_kwh(setup, 0.5)
    plan = _solve(setup, limit)
    df = run_plain(setup, OracleController(plan), None)
    shape = (setup.n_steps, setup.n)
    for col, planned in (("grid_kwh", plan.grid_kwh), ("battery_kwh", plan.battery_kwh),
                         ("backlog_kwh", plan.backlog_kwh)):
        np.testing.assert_allclose(df[col].to_numpy().reshape(shape), planned, atol=LP_ATOL_KWH,
                                   err_msg=col)
    # the model charges greedily from PV: at least the planned energy is in the battery
    assert (df["soc_kwh"].to_numpy().reshape(shape) >= plan.soc_kwh - LP_ATOL_KWH).all()
    assert df["cost"].sum() == pytest.approx(plan.cost, rel=COST_RTOL)
    assert df["dropped_kwh"].sum() <= LP_ATOL_KWH * setup.n
    assert df[df.time == setup.n_steps - 1]["backlog_kwh"].sum() <= LP_ATOL_KWH * setup.n
    assert plan.mean_district_grid_kwh <= limit * (1 + 1e-9)


def test_oracle_is_a_lower_bound_on_cost(setup: FleetSetup):
    plan = _solve(setup, district_limit_kwh(setup, 1.0))
    for controller in (NoControl(), RuleBasedPeakShaving(setup.params)):
        df = run_plain(setup, controller, None)
        assert df[df.time == setup.n_steps - 1]["backlog_kwh"].sum() < 1e-9  # all served
        assert plan.cost <= df["cost"].sum() * (1 + COST_RTOL)


def test_tighter_limit_binds_and_costs_more(setup: FleetSetup):
    loose = _solve(setup, district_limit_kwh(setup, 1.0))
    tight_limit = loose.mean_district_grid_kwh * 1.0  # just the unconstrained need
    tight = _solve(setup, tight_limit)
    assert tight.mean_district_grid_kwh <= tight_limit * (1 + 1e-9)
    assert tight.cost >= loose.cost * (1 - COST_RTOL)


def test_impossible_limit_is_reported(setup: FleetSetup):
    with pytest.raises(OracleInfeasible, match="no schedule serves all demand"):
        _solve(setup, 0.1)


# --- the per-step limit: sum_i g_it <= c in every step ---------------------------------------

# On this setup (4 buildings, 96 h, caps 24 kWh): both forms are feasible at 35 % of the
# peak and the per-step one binds; at 30 % only the run average is feasible.
PER_STEP_BINDING_FRACTION = 0.35
PER_STEP_INFEASIBLE_FRACTION = 0.30


def _district(grid_kwh: np.ndarray) -> np.ndarray:
    return np.asarray(grid_kwh).sum(axis=1)


def test_per_step_plan_keeps_every_step_under_c_and_costs_at_least_the_average(
        setup: FleetSetup):
    limit = district_limit_kwh(setup, PER_STEP_BINDING_FRACTION)
    average = _solve(setup, limit)
    per_step = _solve(setup, limit, "per_step")
    assert (average.limit, per_step.limit) == ("run_average", "per_step")
    assert (_district(per_step.grid_kwh) <= limit + LP_ATOL_KWH).all()
    assert per_step.peak_district_grid_kwh <= limit + LP_ATOL_KWH
    assert average.peak_district_grid_kwh > limit  # the average alone lets a step exceed c
    assert per_step.cost >= average.cost * (1 - COST_RTOL)
    assert per_step.cost > average.cost * (1 + COST_RTOL)  # binding here: strictly more
    assert per_step.backlog_kwh[-1].sum() <= LP_ATOL_KWH * setup.n


def test_per_step_equals_run_average_when_c_is_loose(setup: FleetSetup):
    # no step can buy more than sum_i (d_it + B_max_i): such a c never binds
    loose = float(setup.demand_kwh().sum(axis=1).max() + setup.params.backlog_cap_kwh.sum())
    average = _solve(setup, loose)
    per_step = _solve(setup, loose, "per_step")
    assert per_step.cost == pytest.approx(average.cost, rel=COST_RTOL)


def test_per_step_replay_follows_the_plan(setup: FleetSetup):
    limit = district_limit_kwh(setup, PER_STEP_BINDING_FRACTION)
    plan = _solve(setup, limit, "per_step")
    df = run_plain(setup, OracleController(plan), None)
    grid = df["grid_kwh"].to_numpy().reshape(setup.n_steps, setup.n)
    np.testing.assert_allclose(grid, plan.grid_kwh, atol=LP_ATOL_KWH)
    assert (_district(grid) <= limit + LP_ATOL_KWH * setup.n).all()
    assert df["cost"].sum() == pytest.approx(plan.cost, rel=COST_RTOL)
    assert df["dropped_kwh"].sum() <= LP_ATOL_KWH * setup.n


def test_per_step_infeasible_where_the_average_is_not(setup: FleetSetup):
    limit = district_limit_kwh(setup, PER_STEP_INFEASIBLE_FRACTION)
    _solve(setup, limit)  # the run average can be met
    with pytest.raises(OracleInfeasible, match="in every one of the 96 steps"):
        _solve(setup, limit, "per_step")


def test_unknown_limit_form_is_refused(setup: FleetSetup):
    with pytest.raises(ValueError, match="unknown oracle limit 'peak'"):
        _solve(setup, 1.0, "peak")
