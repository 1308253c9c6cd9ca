"""Background profiles: SimBench's own values for the same steps, nominal, or off."""

from __future__ import annotations

import numpy as np
import pytest
import simbench

from grid_models.background import background_profiles
from grid_models.errors import BackgroundError
from grid_models.feeders import load_feeder
from grid_models.powerflow.interface import make_powerflow

POWER_ATOL_MW = 1e-12


def test_simbench_mode_equals_simbench_absolute_values(rural1):
    start = 4 * 24 * 100  # 10 April, 00:00
    bg = background_profiles(rural1, 96, start=start)
    absolute = simbench.get_absolute_values(rural1, profiles_instead_of_study_cases=True)
    rows = slice(start, start + 96)
    np.testing.assert_allclose(
        bg.load_p_mw, absolute[("load", "p_mw")].to_numpy()[rows], atol=POWER_ATOL_MW
    )
    np.testing.assert_allclose(
        bg.load_q_mvar, absolute[("load", "q_mvar")].to_numpy()[rows], atol=POWER_ATOL_MW
    )
    np.testing.assert_allclose(
        bg.sgen_p_mw, absolute[("sgen", "p_mw")].to_numpy()[rows], atol=POWER_ATOL_MW
    )
    np.testing.assert_array_equal(bg.load_ids, rural1.load.index)
    assert bg.sgen_p_mw.max() > 0  # PV in spring daytime


def test_hourly_steps_are_quarter_hour_means(rural1):
    quarter = background_profiles(rural1, 8, start=400)
    hourly = background_profiles(rural1, 2, start=100, dt_h=1.0)
    np.testing.assert_allclose(
        hourly.load_p_mw, quarter.load_p_mw.reshape(2, 4, -1).mean(axis=1), atol=POWER_ATOL_MW
    )
    np.testing.assert_allclose(
        hourly.sgen_p_mw, quarter.sgen_p_mw.reshape(2, 4, -1).mean(axis=1), atol=POWER_ATOL_MW
    )


def test_nominal_off_and_scale(rural1):
    nominal = background_profiles(rural1, 3, mode="nominal", scale=2.0, sgen_scale=0.5)
    np.testing.assert_allclose(nominal.load_p_mw[2], 2.0 * rural1.load.p_mw * rural1.load.scaling)
    np.testing.assert_allclose(nominal.sgen_p_mw[0], 0.5 * rural1.sgen.p_mw * rural1.sgen.scaling)
    off = background_profiles(rural1, 3, mode="off")
    assert not off.load_p_mw.any() and not off.sgen_p_mw.any()
    scaled = background_profiles(rural1, 4, start=10, scale=3.0)
    base = background_profiles(rural1, 4, start=10)
    np.testing.assert_allclose(scaled.load_p_mw, 3.0 * base.load_p_mw)
    np.testing.assert_allclose(scaled.sgen_p_mw, base.sgen_p_mw)


def test_window_and_apply(rural1):
    bg = background_profiles(rural1, 10, start=50)
    part = bg.window(2, 5)
    assert len(part) == 3 and part.start == 52
    pf = make_powerflow(rural1, "power-grid-model")
    bg.apply(pf, 3)
    by_apply = pf.solve(np.zeros(len(pf.buses)))
    by_batch = pf.solve_batch(np.zeros((1, len(pf.buses))), background=part.window(1, 2))
    np.testing.assert_allclose(by_apply.bus_vm_pu, by_batch.bus_vm_pu[0])


def test_errors_name_the_field(rural1):
    with pytest.raises(BackgroundError, match="simbench, nominal, off"):
        background_profiles(rural1, 4, mode="yearly")
    with pytest.raises(BackgroundError, match="35136"):
        background_profiles(rural1, 10, start=35130)
    with pytest.raises(BackgroundError, match="multiple of 0.25"):
        background_profiles(rural1, 4, dt_h=0.4)
    with pytest.raises(BackgroundError, match="n_steps"):
        background_profiles(rural1, 0)
    with pytest.raises(BackgroundError, match="nominal"):
        background_profiles(load_feeder("pandapower:kerber_landnetz"), 4)
