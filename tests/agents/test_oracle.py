"""The perfect-foresight LP: its replay follows the plan, it is a lower bound, it
says when no schedule exists."""

from __future__ import annotations

import numpy as np
import pytest

from agents.controllers import NoControl, RuleBasedPeakShaving
from agents.oracle import OracleController, OracleInfeasible, solve_oracle
from agents.runner import FleetSetup, district_limit_kwh, run_plain

LP_ATOL_KWH = 1e-6  # HiGHS's primal feasibility tolerance is 1e-7 per row
COST_RTOL = 1e-6
NAMES = [f"Building_{i}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def setup() -> FleetSetup:
    return FleetSetup.from_citylearn(NAMES, 2000, 96, demand_scale=[1, 2, 1, 1],
                                     backlog_cap_kwh=24.0)


def _solve(setup: FleetSetup, limit: float):
    return solve_oracle(setup.params, setup.base_demand_kwh, setup.solar_w_per_kw,
                        setup.price_per_kwh, limit, setup.dt_h)


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
