"""Building placement: deterministic, spread over the load buses, strict about bad buses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid_models.errors import PlacementError
from grid_models.feeders import load_feeder
from grid_models.placement import (
    bus_injections,
    fleet_scale_for_trafo_loading,
    load_buses,
    place_buildings,
)
from grid_models.powerflow.interface import make_powerflow

POWER_ATOL_MW = 1e-12
LOADING_RTOL = 0.05  # the scale helper is first-order (no losses, no voltage drop)


def test_same_seed_same_placement(rural1):
    a = place_buildings(rural1, 40, seed=7)
    b = place_buildings(load_feeder("simbench:1-LV-rural1--0-sw"), 40, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, place_buildings(rural1, 40, seed=8))


def test_automatic_placement_spreads_over_load_buses(rural1):
    candidates = load_buses(rural1)
    assert len(candidates) == rural1.load.bus.nunique()
    few = place_buildings(rural1, len(candidates) - 1, seed=0)
    assert len(set(few.tolist())) == len(few)  # no bus twice before every bus had one
    many = place_buildings(rural1, 3 * len(candidates) + 2, seed=0)
    counts = np.array([np.sum(many == b) for b in candidates])
    assert set(many.tolist()) == set(candidates.tolist())
    assert counts.max() - counts.min() <= 1


def test_explicit_placement_is_kept(rural1):
    buses = [int(b) for b in rural1.bus.index[:3]]
    np.testing.assert_array_equal(place_buildings(rural1, 3, seed=0, buses=buses), buses)


def test_unknown_bus_is_rejected_with_valid_ones(rural1):
    with pytest.raises(PlacementError) as err:
        place_buildings(rural1, 2, seed=0, buses=[int(rural1.bus.index[0]), 9999])
    message = str(err.value)
    assert "9999" in message and "valid buses" in message
    assert str(int(rural1.bus.index[-1])) in message


def test_out_of_service_bus_and_wrong_count_are_rejected(rural1):
    bus = int(load_buses(rural1)[0])
    rural1.bus.loc[bus, "in_service"] = False
    with pytest.raises(PlacementError, match="out-of-service"):
        place_buildings(rural1, 1, seed=0, buses=[bus])
    with pytest.raises(PlacementError, match="expected 3"):
        place_buildings(rural1, 3, seed=0, buses=[bus])
    with pytest.raises(PlacementError, match=">= 1"):
        place_buildings(rural1, 0, seed=0)


def test_bus_injections_sum_per_bus():
    bus_ids = np.array([10, 11, 12])
    building_bus = np.array([12, 10, 12])
    p, q = bus_injections(building_bus, [1.0, 2.0, 3.0], [0.5, 0.0, 0.5], bus_ids=bus_ids, scale=2)
    np.testing.assert_allclose(p, [0.004, 0.0, 0.008], atol=POWER_ATOL_MW)
    np.testing.assert_allclose(q, [0.0, 0.0, 0.002], atol=POWER_ATOL_MW)
    with pytest.raises(PlacementError, match="not in bus_ids"):
        bus_injections(np.array([99]), [1.0], bus_ids=bus_ids)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 30),
    steps=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.0, 10.0),
)
def test_bus_injections_conserve_power(n, steps, seed, scale):
    rng = np.random.default_rng(seed)
    bus_ids = np.arange(100, 108)
    building_bus = rng.choice(bus_ids, n)
    p_kw = rng.uniform(-5, 10, (steps, n))
    p_mw, q_mw = bus_injections(building_bus, p_kw, bus_ids=bus_ids, scale=scale)
    assert p_mw.shape == (steps, len(bus_ids))
    np.testing.assert_allclose(p_mw.sum(axis=1), p_kw.sum(axis=1) * scale / 1000, atol=1e-9)
    assert not q_mw.any()


def test_scale_makes_the_fleet_overload_the_transformer(rural1):
    building_bus = place_buildings(rural1, 30, seed=1)
    p_kw = np.full(30, 3.0)  # 90 kW fleet peak
    scale = fleet_scale_for_trafo_loading(rural1, p_kw.sum(), target_loading_percent=130.0)
    pf = make_powerflow(rural1, "power-grid-model")
    pf.set_background(
        np.zeros(len(pf.load_ids)),
        np.zeros(len(pf.load_ids)),
        np.zeros(len(pf.sgen_ids)),
        np.zeros(len(pf.sgen_ids)),
    )
    p_mw, q_mvar = bus_injections(building_bus, p_kw, bus_ids=pf.bus_ids, scale=scale)
    result = pf.solve(p_mw, q_mvar)
    assert result.trafo_loading_percent.max() > 100.0
    np.testing.assert_allclose(result.trafo_loading_percent.max(), 130.0, rtol=LOADING_RTOL)
