"""Forecasts and coupling rows of the model-based controllers (agents/control/coupling.py)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.control.coupling import CouplingRows, Forecast
from agents.control.oracle_grid import LinearGridLimits
from agents.fleet.data import load_citylearn
from agents.fleet.runner import FleetSetup

NAMES = ["Building_1", "Building_2", "Building_3"]
START, STEPS, HORIZON = 0, 48, 24


@pytest.fixture(scope="module")
def setup() -> FleetSetup:
    return FleetSetup.from_citylearn(NAMES, START, STEPS, demand_scale=[1.0, 2.0, 1.0])


def _forecast(setup: FleetSetup, mode: str) -> Forecast:
    return Forecast.from_citylearn(load_citylearn(), NAMES, setup.params, START, STEPS,
                                   HORIZON, mode)  # type: ignore[arg-type]


def test_perfect_forecast_is_the_run_data(setup: FleetSetup):
    demand, pv, price = _forecast(setup, "perfect").window(10, HORIZON)
    np.testing.assert_array_equal(demand[:STEPS - 10], setup.demand_kwh()[10:10 + HORIZON])
    np.testing.assert_array_equal(price, setup.price_per_kwh[10:10 + HORIZON])
    solar = setup.solar_w_per_kw[10:10 + HORIZON]
    np.testing.assert_allclose(pv, setup.params.pv_kw * solar / 1000.0, rtol=0, atol=0)


def test_persistence_is_yesterday_and_wraps_the_year_at_the_start(setup: FleetSetup):
    f = _forecast(setup, "persistence")
    demand, _, price = f.window(30, HORIZON)
    np.testing.assert_array_equal(demand, setup.demand_kwh()[6:6 + HORIZON])
    np.testing.assert_array_equal(price[:STEPS - 30], setup.price_per_kwh[30:])  # tariff known
    # at step 0 yesterday is the end of the data year (rows 8736..8759)
    first, _, _ = f.window(0, HORIZON)
    data = load_citylearn()
    expected = np.stack([data.building(x).demand_kwh[8736:8760] for x in NAMES], axis=1)
    np.testing.assert_array_equal(first, expected * setup.params.demand_scale)


def test_a_window_beyond_the_forecast_is_refused(setup: FleetSetup):
    f = _forecast(setup, "perfect")
    with pytest.raises(ValueError, match="holds run steps"):
        f.window(STEPS + 1, HORIZON)
    with pytest.raises(ValueError, match="history"):
        Forecast(setup.params, f.base_demand_kwh, f.solar_w_per_kw, f.price_per_kwh,
                 f.base_demand_kwh.shape[0])
    with pytest.raises(ValueError, match="unknown forecast"):
        Forecast(setup.params, f.base_demand_kwh, f.solar_w_per_kw, f.price_per_kwh, 24,
                 "oracle")  # type: ignore[arg-type]


def test_district_and_grid_rows_compute_their_values():
    rows = CouplingRows.district(3, 5.0, steps=48)
    grid = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    export = np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(rows.value(0, grid, export), [[6.0], [1.0]])
    sens = np.array([[0.1, 0.2, 0.3]])
    offset = np.arange(48, dtype=float)[:, None]
    limits = LinearGridLimits(["trafo 0 loading <= 100 %"], offset, sens, np.array([100.0]))
    both = rows.with_grid_limits(limits, dt_h=0.5)
    assert both.n_rows == 2 and both.names[1].startswith("trafo")
    value = both.value(46, grid, export)
    p_kw = (grid - export) / 0.5
    np.testing.assert_allclose(value[:, 1], [46.0, 47.0] + p_kw @ sens[0])
    # past the table the offsets repeat the day before
    np.testing.assert_array_equal(both.offset_window(47, 3)[:, 1], [47.0, 24.0, 25.0])
