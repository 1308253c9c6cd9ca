"""The plain-loop runner: contract columns, energy balance, determinism, duals, KPIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.consensus.duals import DualConfig, DualDynamics
from agents.consensus.faults import FaultModel
from agents.consensus.graphs import make_graph
from agents.control.rules import NoControl, RuleBasedPeakShaving
from agents.fleet.data import load_citylearn
from agents.fleet.kpis import cumulative_average_unmet_kwh, fleet_kpis
from agents.fleet.observation import FleetObservation
from agents.fleet.runner import RESULT_COLUMNS, FleetSetup, district_limit_kwh, run_plain

# Named tolerances.
BALANCE_ATOL_KWH = 1e-11  # a few additions of numbers below ~1e2 kWh
LAMBDA_ATOL = 0.0  # recomputing the duals from the table repeats the same float operations
KPI_ATOL = 1e-12

N, T = 5, 72


class RandomPostponer:
    """Serves a random share from the grid and the battery, postpones the rest."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: FleetObservation) -> np.ndarray:
        return self.rng.uniform(0.3, 1.0, (obs.n, 2))


class Recorder:
    """NoControl that keeps every observation it was given."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[FleetObservation] = []

    def act(self, obs: FleetObservation) -> np.ndarray:
        self.seen.append(obs)
        return NoControl().act(obs)


@pytest.fixture(scope="module")
def setup() -> FleetSetup:
    names = load_citylearn().names[:N]
    return FleetSetup.from_citylearn(
        names, start=4000, steps=T, demand_scale=[1.0, 2.0, 1.0, 1.0, 2.0],
        backlog_cap_kwh=[np.inf, 3.0, 1.0, np.inf, 2.0], bus=[3, 4, 4, 7, -1],
        initial_soc_fraction=0.5,
    )


def _duals(setup: FleetSetup, faults: FaultModel | None = None) -> DualDynamics:
    limit = district_limit_kwh(setup, 0.5)
    return DualDynamics(DualConfig(alpha=0.2, beta=0.1, eta=0.3), make_graph("ring", setup.n),
                        limit, faults, seed=3)


def _wide(df: pd.DataFrame, column: str) -> np.ndarray:
    return df.pivot(index="time", columns="building", values=column)[
        list(df["building"].iloc[: df["building"].nunique()])
    ].to_numpy()


def test_columns_and_shape(setup):
    df = run_plain(setup, RandomPostponer(0), _duals(setup))
    assert tuple(df.columns) == RESULT_COLUMNS
    assert len(df) == N * T
    assert df["time"].tolist() == np.repeat(np.arange(T), N).tolist()
    assert df["building"].iloc[:N].tolist() == setup.names
    assert df["bus"].iloc[:N].tolist() == [3, 4, 4, 7, -1]
    assert df["time"].dtype == np.int64 and df["bus"].dtype == np.int64
    assert len(run_plain(setup, NoControl(), None, steps=10)) == N * 10


def test_energy_balance_every_row(setup):
    df = run_plain(setup, RandomPostponer(1), _duals(setup))
    backlog = _wide(df, "backlog_kwh")
    previous = np.vstack([np.zeros((1, N)), backlog[:-1]])
    lhs = _wide(df, "demand_kwh") + previous
    rhs = (_wide(df, "grid_kwh") + _wide(df, "battery_kwh") + backlog
           + _wide(df, "dropped_kwh"))
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=BALANCE_ATOL_KWH)
    assert df["dropped_kwh"].sum() > 0 and df["backlog_kwh"].max() > 0  # both were exercised
    np.testing.assert_allclose(df["unmet_kwh"], df["backlog_kwh"] + df["dropped_kwh"],
                               rtol=0, atol=BALANCE_ATOL_KWH)
    np.testing.assert_allclose(df["cost"], df["price"] * df["grid_kwh"], rtol=0, atol=0)


def test_two_runs_are_identical(setup):
    faults = FaultModel(drop_probability=0.3, delay_steps=1)
    a = run_plain(setup, RandomPostponer(5), _duals(setup, faults))
    b = run_plain(setup, RandomPostponer(5), _duals(setup, faults))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_no_control_serves_all_demand_from_the_grid(setup):
    df = run_plain(setup, NoControl(), None)
    np.testing.assert_array_equal(df["grid_kwh"], df["demand_kwh"])
    assert (df["backlog_kwh"] == 0).all() and (df["unmet_kwh"] == 0).all()
    assert (df["battery_kwh"] == 0).all()
    for col in ("lambda", "mu", "nu"):
        assert (df[col] == 0).all()


def test_lambda_column_recomputes_from_the_table(setup):
    """The duals can be rebuilt from buildings.parquet alone (results contract)."""
    df = run_plain(setup, RandomPostponer(2), _duals(setup))
    grid, battery, demand = (_wide(df, c) for c in ("grid_kwh", "battery_kwh", "demand_kwh"))
    again = _duals(setup)
    for t in range(T):
        state = again.state
        for col, value in (("lambda", state.lam), ("mu", state.mu), ("nu", state.nu)):
            np.testing.assert_allclose(_wide(df, col)[t], value, rtol=0, atol=LAMBDA_ATOL)
        again.update(grid[t], grid[t] + battery[t] - demand[t])
    assert df["lambda"].max() > 0 and (df["nu"] != 0).any()  # the duals did move


def test_controller_sees_the_multipliers_and_hour_it_was_given(setup):
    rec = Recorder()
    df = run_plain(setup, rec, _duals(setup), steps=30)
    lam = _wide(df, "lambda")
    nu = _wide(df, "nu")
    for t, obs in enumerate(rec.seen):
        np.testing.assert_array_equal(obs.lam, lam[t])
        np.testing.assert_array_equal(obs.nu, nu[t])
        assert obs.hour_of_day[0] == (4000 + t) % 24


def test_runner_rejects_mismatches(setup):
    class Broken:
        name = "broken"

        def act(self, obs):
            return np.ones((obs.n, 3))

    with pytest.raises(ValueError, match=r"controller 'broken' at step 0: actions must have "
                       r"shape \(N, 2\) = \(5, 2\)"):
        run_plain(setup, Broken(), None)
    small = DualDynamics(DualConfig(), make_graph("ring", 3), 1.0)
    with pytest.raises(ValueError, match="duals are for 3 agents, the fleet has 5"):
        run_plain(setup, NoControl(), small)
    with pytest.raises(ValueError, match="steps must lie in 1..72"):
        run_plain(setup, NoControl(), None, steps=73)


def test_setup_validation():
    params = load_citylearn()
    with pytest.raises(ValueError, match="distinct building ids"):
        FleetSetup.from_citylearn(["Building_1", "Building_1"], 0, 5, data=params)
    s = FleetSetup.from_citylearn(["Building_1"], 0, 5)
    with pytest.raises(ValueError, match=r"expected shape \(T, 1\)"):
        FleetSetup(s.names, s.params, s.bus, np.ones((5, 2)), s.solar_w_per_kw, s.price_per_kwh)


def test_district_limit_is_a_fraction_of_the_aggregated_peak(setup):
    aggregated = (setup.base_demand_kwh * np.array([1.0, 2.0, 1.0, 1.0, 2.0])).sum(axis=1)
    assert district_limit_kwh(setup, 0.27) == pytest.approx(0.27 * aggregated.max(), abs=1e-12)
    assert district_limit_kwh(setup, 1.0, steps=10) == pytest.approx(aggregated[:10].max())


def test_rule_based_controller_runs_and_uses_the_battery(setup):
    df = run_plain(setup, RuleBasedPeakShaving(setup.params), None)
    assert df["battery_kwh"].sum() > 0
    # nothing postponed, up to the rounding of u_grid = (D - x) / D times D
    np.testing.assert_allclose(df["unmet_kwh"], 0.0, rtol=0, atol=BALANCE_ATOL_KWH)


# --- KPIs ---------------------------------------------------------------------------------------


def _table(grid: list[list[float]], unmet: list[list[float]], lam: list[float]) -> pd.DataFrame:
    rows = []
    for t, (g_t, u_t) in enumerate(zip(grid, unmet, strict=True)):
        for i, (g, u) in enumerate(zip(g_t, u_t, strict=True)):
            rows.append(dict(time=t, building=f"b{i}", grid_kwh=g, unmet_kwh=u,
                             dropped_kwh=0.5 * u, cost=0.1 * g, lam=lam[i] if t else 0.0))
    return pd.DataFrame(rows).rename(columns={"lam": "lambda"})


def test_fleet_kpis_definitions():
    df = _table(grid=[[1.0, 2.0], [4.0, 0.0], [0.5, 0.5]],  # G = 3, 4, 1
                unmet=[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]],  # U = 1, 2, 0
                lam=[15.0, 5.0])
    k = fleet_kpis(df, limit_kwh=2.5, dt_h=0.5)
    expected = {
        "n_buildings": 2, "steps": 3, "total_cost": 0.8, "mean_district_grid_kwh": 8.0 / 3,
        "limit_kwh": 2.5, "steps_over_limit": 2, "final_avg_unmet_kwh": 1.0,
        "dropped_kwh": 1.5, "peak_district_import_kwh": 4.0, "peak_district_import_kw": 8.0,
        "peak_to_average": 4.0 / (8.0 / 3), "ramping_kwh": 1.0 + 3.0,
        # 3 steps: the window is the last one, S = 15 - 5 (the other steps' lambdas are 0)
        "lambda_spread_last10pct": 10.0, "lambda_spread_last10pct_mean": 10.0,
        "lambda_spread_last10pct_rel": 10.0 / 15.0,
        "final_lambda": [15.0, 5.0], "agents_at_lambda_max": 1,
    }
    assert k.keys() == expected.keys()
    for key, value in expected.items():
        assert k[key] == pytest.approx(value, abs=KPI_ATOL), key
    np.testing.assert_allclose(cumulative_average_unmet_kwh(df), [1.0, 1.5, 1.0],
                               rtol=0, atol=KPI_ATOL)


def test_fleet_kpis_of_a_run(setup):
    limit = district_limit_kwh(setup, 0.5)
    df = run_plain(setup, NoControl(), _duals(setup))
    k = fleet_kpis(df, limit, setup.dt_h)
    assert k["final_avg_unmet_kwh"] == 0.0 and k["dropped_kwh"] == 0.0
    assert k["peak_district_import_kwh"] == pytest.approx(2 * limit)  # NoControl: the peak
    assert len(k["final_lambda"]) == N
