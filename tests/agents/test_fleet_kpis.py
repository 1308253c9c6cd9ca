"""The consensus error of the fleet KPIs (issue 12): the absolute lambda spread
S_t = max_i lambda_i,t - min_i lambda_i,t over the last ceil(10 % of T) steps, its mean
there and its share of lambda_max, in memory and streamed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from agents.fleet.kpis import (
    FLEET_KPI_UNITS,
    FleetKpiStream,
    consensus_window_steps,
    fleet_kpis,
)
from cosim.results.jsonio import json_safe

SPREAD_KEYS = ("lambda_spread_last10pct", "lambda_spread_last10pct_mean",
               "lambda_spread_last10pct_rel")
SPREAD_ATOL = 0.0  # max, min and a mean of two or three small binary fractions: exact


def _table(lam: np.ndarray) -> pd.DataFrame:
    """A results table with ``lam[t, i]`` as building i's lambda at step t."""
    steps, n = lam.shape
    return pd.DataFrame({
        "time": np.repeat(np.arange(steps), n),
        "building": np.tile([f"b{i}" for i in range(n)], steps),
        "grid_kwh": 1.0, "unmet_kwh": 0.0, "cost": 0.1, "dropped_kwh": 0.0,
        "lambda": lam.ravel(),
    })


def _both(df: pd.DataFrame, lambda_max: float, cuts: tuple[int, ...] = ()) -> list[dict]:
    """fleet_kpis of the whole table, and the stream fed one step a piece and in
    pieces of several steps (``cuts``: the steps where a piece starts)."""
    out = [fleet_kpis(df, 1.0, 1.0, lambda_max=lambda_max)]
    steps = sorted(df["time"].unique())
    for starts in ([*steps], [0, *cuts]):
        stream = FleetKpiStream(len(df))
        ends = [*starts[1:], len(steps)]
        for a, b in zip(starts, ends, strict=True):
            stream.add(df[(df["time"] >= a) & (df["time"] < b)])
        out.append(stream.kpis(1.0, 1.0, lambda_max=lambda_max))
    return out


def _hand_built() -> np.ndarray:
    """20 steps, 3 agents: the window is steps 18 and 19. Step 17 has the largest spread
    of the run (9), step 18 the largest in the window (4), step 19 a small one (0.5)."""
    lam = np.tile(np.linspace(0.0, 4.0, 20)[:, None], (1, 3))  # agreed: S_t = 0
    lam[3] = [1.0, 8.0, 2.0]  # S = 7, early
    lam[17] = [0.0, 9.0, 3.0]  # S = 9, just before the window
    lam[18] = [2.0, 6.0, 3.0]  # S = 4
    lam[19] = [5.0, 5.5, 5.25]  # S = 0.5, the last step
    return lam


def test_spread_over_the_last_10_percent_by_hand():
    df = _table(_hand_built())
    for k in _both(df, lambda_max=8.0, cuts=(5, 18, 19)):
        # not the whole run's max (9), not the last step's (0.5), not a 3-step window (9)
        assert k["lambda_spread_last10pct"] == pytest.approx(4.0, abs=SPREAD_ATOL)
        assert k["lambda_spread_last10pct_mean"] == pytest.approx((4.0 + 0.5) / 2,
                                                                  abs=SPREAD_ATOL)
        assert k["lambda_spread_last10pct_rel"] == pytest.approx(4.0 / 8.0, abs=SPREAD_ATOL)
        assert "consensus_error" not in k


def test_window_is_ceil_of_10_percent():
    # 30 steps: exactly 3 steps, not 4
    lam = np.zeros((30, 3))
    lam[26] = [0.0, 0.0, 6.0]  # the 4th step from the end: outside
    lam[27] = [1.0, 0.0, 0.0]
    lam[29] = [0.0, 2.0, 0.5]
    for k in _both(_table(lam), lambda_max=15.0, cuts=(10, 27)):
        assert k["lambda_spread_last10pct"] == 2.0
        assert k["lambda_spread_last10pct_mean"] == pytest.approx(1.0, abs=1e-15)
    # 21 steps: ceil(2.1) = 3 steps, so step 18 counts
    lam = np.zeros((21, 2))
    lam[18] = [0.0, 3.0]
    k = fleet_kpis(_table(lam), 1.0, 1.0, lambda_max=15.0)
    assert k["lambda_spread_last10pct"] == 3.0
    assert k["lambda_spread_last10pct_mean"] == 1.0


@pytest.mark.parametrize(("steps", "window"), [
    (1, 1), (2, 1), (9, 1), (10, 1), (11, 2), (20, 2), (21, 3), (30, 3), (70, 7),
    (8760, 876), (8761, 877),
])
def test_consensus_window_steps(steps: int, window: int):
    assert consensus_window_steps(steps) == window


def test_all_lambdas_zero_give_zero_not_nan():
    df = _table(np.zeros((20, 3)))
    for k in _both(df, lambda_max=15.0, cuts=(7,)):
        for key in SPREAD_KEYS:
            assert k[key] == 0.0 and isinstance(k[key], float), key
        assert json.loads(json.dumps(json_safe(k), allow_nan=False))[SPREAD_KEYS[0]] == 0.0


@pytest.mark.parametrize("lambda_max", [0.5, 1.0, 15.0, 40.0])
def test_rel_is_the_spread_over_lambda_max(lambda_max: float):
    rng = np.random.default_rng(3)
    lam = rng.uniform(0.0, lambda_max, (50, 4))
    k = fleet_kpis(_table(lam), 1.0, 1.0, lambda_max=lambda_max)
    spread = lam.max(axis=1) - lam.min(axis=1)
    assert k["lambda_spread_last10pct"] == spread[-5:].max()
    assert k["lambda_spread_last10pct_mean"] == pytest.approx(spread[-5:].mean(), rel=1e-15)
    assert k["lambda_spread_last10pct_rel"] == k["lambda_spread_last10pct"] / lambda_max


def test_missing_lambdas_are_left_out():
    lam = _hand_built()
    lam[18, 0] = np.nan  # S_18 = 6 - 3
    lam[19, :] = np.nan  # no lambda at all: no S_19
    for k in _both(_table(lam), lambda_max=8.0, cuts=(18,)):
        assert k["lambda_spread_last10pct"] == 3.0
        assert k["lambda_spread_last10pct_mean"] == 3.0
    lam[18, :] = np.nan  # nothing left in the window: null, not NaN
    k = fleet_kpis(_table(lam), 1.0, 1.0, lambda_max=8.0)
    assert all(k[key] is None for key in SPREAD_KEYS)


def test_every_kpi_has_a_unit():
    k = fleet_kpis(_table(_hand_built()), 1.0, 1.0)
    assert k.keys() == FLEET_KPI_UNITS.keys()
    assert all(FLEET_KPI_UNITS[key] for key in SPREAD_KEYS)


def test_steps_over_limit_ignores_float_rounding_at_c():
    """A schedule planned at exactly c (the per-step oracle) sums to c +- a few ulp: not
    a violation; one a millionth above c is."""
    from agents.fleet.kpis import OVER_LIMIT_RTOL

    c = 8.48
    df = _table(np.zeros((4, 2)))
    df["grid_kwh"] = np.repeat([c / 2 + 2e-15, c / 2, c / 2 * (1 + 1e-6), 0.1], 2)
    assert 2e-15 < OVER_LIMIT_RTOL * c < 1e-6 * c
    assert fleet_kpis(df, c, 1.0)["steps_over_limit"] == 1


def test_every_fleet_kpi_by_hand_in_memory_and_streamed():
    """Two buildings, four steps, dt = 0.5 h, rows shuffled: each KPI worked out by hand.

    G_t = 3, 1, 4, 2 kWh; unmet per step 2, 0, 1, 3 -> cumulative average 2, 1, 1, 1.5;
    cost 0.5 per row; dropped 0.25 once; lambda at the last step 2 and 15 (lambda_max).
    """
    df = pd.DataFrame({
        "time": np.repeat(np.arange(4), 2),
        "building": ["a", "b"] * 4,
        "grid_kwh": [1.0, 2.0, 0.5, 0.5, 3.0, 1.0, 1.5, 0.5],
        "unmet_kwh": [2.0, 0.0, 0.0, 0.0, 0.5, 0.5, 2.0, 1.0],
        "cost": 0.5, "dropped_kwh": [0, 0, 0, 0, 0.25, 0, 0, 0],
        "lambda": [0.0, 1.0, 1.0, 1.0, 3.0, 7.0, 2.0, 15.0 - 1e-10],
    }).sample(frac=1.0, random_state=3)  # groups by step, not by row order
    kpis = fleet_kpis(df, limit_kwh=2.0, dt_h=0.5, lambda_max=15.0)
    ordered = df.sort_values(["time", "building"])
    stream = FleetKpiStream(len(df))
    for t in range(4):
        stream.add(ordered[ordered.time == t])
    for got in (kpis, stream.kpis(2.0, 0.5, lambda_max=15.0)):
        assert got["n_buildings"] == 2 and got["steps"] == 4
        assert got["total_cost"] == pytest.approx(4.0)
        assert got["mean_district_grid_kwh"] == pytest.approx(2.5)
        assert got["steps_over_limit"] == 2  # G = 3 and 4 exceed c = 2; G = 2 does not
        assert got["final_avg_unmet_kwh"] == pytest.approx(1.5)  # (2 + 0 + 1 + 3) / 4
        assert got["dropped_kwh"] == pytest.approx(0.25)
        assert got["peak_district_import_kwh"] == pytest.approx(4.0)
        assert got["peak_district_import_kw"] == pytest.approx(8.0)  # 4 kWh in half an hour
        assert got["peak_to_average"] == pytest.approx(1.6)
        assert got["ramping_kwh"] == pytest.approx(2.0 + 3.0 + 2.0)
        # (in the order of the last step's rows; a run writes them in building order)
        assert sorted(got["final_lambda"]) == pytest.approx([2.0, 15.0 - 1e-10])
        assert got["agents_at_lambda_max"] == 1  # within 1e-9 of lambda_max counts
        assert got["lambda_spread_last10pct"] == pytest.approx(13.0 - 1e-10)  # last step
    from agents.fleet.kpis import cumulative_average_unmet_kwh, district_grid_kwh

    assert district_grid_kwh(df).tolist() == pytest.approx([3.0, 1.0, 4.0, 2.0])
    assert cumulative_average_unmet_kwh(df).tolist() == pytest.approx([2.0, 1.0, 1.0, 1.5])


def test_kpi_edge_cases():
    one = pd.DataFrame({"time": [0], "building": ["a"], "grid_kwh": [0.0], "unmet_kwh": [0.0],
                        "cost": [0.0], "dropped_kwh": [0.0], "lambda": [0.0]})
    kpis = fleet_kpis(one, limit_kwh=1.0, dt_h=1.0, lambda_max=0.0)
    assert kpis["steps"] == 1 and kpis["peak_to_average"] is None  # mean 0: no ratio
    assert kpis["lambda_spread_last10pct_rel"] is None  # lambda_max 0: no share
    assert kpis["agents_at_lambda_max"] == 1
    low = fleet_kpis(one.assign(grid_kwh=0.5), limit_kwh=1.0, dt_h=1.0)
    assert low["peak_to_average"] == 1.0 and low["steps_over_limit"] == 0  # any mean > 0
    with pytest.raises(ValueError, match="the results table is empty"):
        fleet_kpis(one.iloc[:0], 1.0, 1.0)
    for dt_h in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="dt_h must be > 0"):
            fleet_kpis(one, 1.0, dt_h)


@pytest.mark.parametrize("n", [1, 127, 128, 129, 1000, 4097, 20_011])
def test_pairwise_sum_in_pieces_equals_numpy_bit_for_bit(n: int):
    """Fed in uneven pieces with the smallest block (many blocks), the total is exactly
    numpy's sum of the whole array (the order of float additions is numpy's)."""
    from agents.fleet.kpis import PairwiseSum

    rng = np.random.default_rng(n)
    values = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
    values[rng.random(n) < 0.01] = np.nan  # NaN counted as 0, like pandas' sum
    acc = PairwiseSum(n, block=128)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, 7), replace=False)) if n > 1 \
        else np.zeros(0, dtype=int)
    for piece in np.split(values, cuts):
        acc.add(piece)
    assert acc.result() == np.where(np.isnan(values), 0.0, values).sum()
    assert acc.result() == pd.Series(values).sum()
    with pytest.raises(ValueError, match="more than the"):
        acc.add([1.0])
    short = PairwiseSum(n, block=128)
    short.add(values[:-1])
    with pytest.raises(ValueError, match=f"got {n - 1} of {n} values"):
        short.result()
    with pytest.raises(ValueError, match="block must be >= 128"):
        PairwiseSum(n, block=127)
