"""A step whose power flow fails or yields NaN is unknown, never "no overload"."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from grid_models.errors import BackendError, PowerFlowInputError
from grid_models.kpis import HOURS_KEYS, KPI_KEYS, UNKNOWN_SUFFIX, grid_kpis, hours_text
from grid_models.powerflow.interface import GridResult, PowerFlowNotConvergedWarning, make_powerflow

NAN, INF = np.nan, np.inf
BACKENDS = ("pandapower", "power-grid-model")
#: 100 MW on one bus of a 0.16 MVA LV feeder: no power flow converges.
ABSURD_MW = 100.0
NORMAL_MW = 0.003


def step(vm, line, trafo, losses=0.01, converged=True):
    n_bus = len(vm)
    return GridResult(
        bus_vm_pu=vm, bus_va_degree=np.zeros(n_bus), bus_p_mw=np.zeros(n_bus),
        bus_q_mvar=np.zeros(n_bus), line_loading_percent=line,
        line_i_ka=np.zeros(len(line)), trafo_loading_percent=trafo,
        trafo_p_hv_mw=np.zeros(len(trafo)), losses_mw=losses, ext_grid_p_mw=0.1,
        ext_grid_q_mvar=0.0, converged=converged,
    )


def test_nonconverged_steps_are_unknown_not_fine():
    series = [
        step([1.0, 0.97], [50.0], [120.0]),  # trafo over
        GridResult.nan(2, 1, 1),  # did not converge: could have been anything
        GridResult.nan(2, 1, 1),
        step([1.0, 0.99], [40.0], [80.0]),
    ]
    kpis = grid_kpis(series, dt_h=1.0)
    assert list(kpis) == list(KPI_KEYS)
    assert kpis["nonconverged_steps"] == 2 and kpis["unknown_steps"] == 2
    assert kpis["trafo_overload_hours"] == 1  # at least 1 ...
    for key in HOURS_KEYS:
        assert kpis[key + UNKNOWN_SUFFIX] == 2, key  # ... unknown for 2 steps
    assert hours_text(kpis, "trafo_overload_hours") == "at least 1 (unknown for 2 steps)"
    assert kpis["max_trafo_loading_percent"] == 120.0  # from known steps only
    assert kpis["losses_mwh"] == pytest.approx(0.02)


def test_no_known_step_gives_nan_extremes_and_all_unknown():
    kpis = grid_kpis([GridResult.nan(3, 2, 1)] * 3)
    assert kpis["unknown_steps"] == 3 and kpis["trafo_overload_hours"] == 0
    assert kpis["trafo_overload_hours_unknown_steps"] == 3
    for key in ("max_trafo_loading_percent", "max_line_loading_percent", "min_vm_pu",
                "max_vm_pu", "losses_mwh"):  # unknown is never zero
        assert math.isnan(kpis[key]), key


def test_a_converged_step_without_numbers_is_unknown():
    series = [
        step([1.0, 1.0], [10.0], [10.0]),
        step([1.0, 1.0], [10.0], [10.0], losses=NAN),  # claims convergence, no losses
        step([NAN, NAN], [NAN], [NAN]),  # claims convergence, no voltage at all
        step([1.0, 1.2], [10.0], [INF]),  # an infinite loading
    ]
    kpis = grid_kpis(series)
    assert kpis["nonconverged_steps"] == 0 and kpis["unknown_steps"] == 3
    assert kpis["hours_outside_090_110_pu"] == 0  # the 1.2 pu step is not trusted
    assert kpis["hours_outside_090_110_pu_unknown_steps"] == 3
    assert kpis["max_vm_pu"] == 1.0


def test_energised_element_without_value_makes_its_quantity_unknown():
    series = [
        step([1.0, 1.0, NAN], [50.0, NAN], [90.0]),  # bus 2 and line 1 de-energised: fine
        step([1.0, 1.0, NAN], [NAN, NAN], [90.0]),  # line 0 had a value: unknown now
        step([1.0, NAN, NAN], [150.0, NAN], [90.0]),  # bus 1 unknown; line 0 known over
    ]
    kpis = grid_kpis(series)
    assert kpis["line_overload_hours"] == 1  # a known overload counts despite the gap
    assert kpis["line_overload_hours_unknown_steps"] == 1
    assert kpis["hours_outside_095_105_pu_unknown_steps"] == 1
    assert kpis["trafo_overload_hours_unknown_steps"] == 0
    assert kpis["unknown_steps"] == 2
    assert hours_text(kpis, "trafo_overload_hours") == "0"


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_injection_is_an_unknown_step_when_asked(rural1, backend):
    pf = make_powerflow(rural1, backend, nonfinite="unknown")
    n = len(pf.buses)
    normal = np.full(n, NORMAL_MW)
    poisoned = normal.copy()
    poisoned[4] = NAN
    with pytest.warns(PowerFlowNotConvergedWarning, match=r"step=7\).*p_mw non-finite"):
        bad = pf.solve(poisoned, step=7)
    assert not bad.converged and np.isnan(bad.bus_vm_pu).all()
    assert pf.nonconverged_steps == [7]
    assert pf.solve(normal, step=8).converged
    pf.set_background(load_p_mw=np.full(len(pf.load_ids), INF))  # a broken profile
    with pytest.warns(PowerFlowNotConvergedWarning, match="background load_p_mw"):
        assert not pf.solve(normal, step=9).converged
    # the default stays strict
    with pytest.raises(PowerFlowInputError, match="non-finite"):
        make_powerflow(rural1, backend).solve(poisoned)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_with_nan_and_absurd_rows_counts_them_unknown(rural1, backend):
    pf = make_powerflow(rural1, backend, nonfinite="unknown")
    n = len(pf.buses)
    normal = np.full(n, NORMAL_MW)
    absurd, poisoned = normal.copy(), normal.copy()
    absurd[5], poisoned[2] = ABSURD_MW, NAN
    p = np.stack([normal, absurd, poisoned, 2 * normal])
    with pytest.warns(PowerFlowNotConvergedWarning):
        batch = pf.solve_batch(p, first_step=20)
    np.testing.assert_array_equal(batch.converged, [True, False, False, True])
    assert np.isnan(batch.bus_vm_pu[2]).all() and np.isfinite(batch.bus_vm_pu[3]).any()
    reference = make_powerflow(rural1, backend).solve(2 * normal)
    np.testing.assert_allclose(batch.bus_vm_pu[3], reference.bus_vm_pu, atol=1e-9)
    assert sorted(pf.nonconverged_steps) == [21, 22]
    kpis = grid_kpis(batch)
    assert kpis["nonconverged_steps"] == 2 and kpis["unknown_steps"] == 2
    assert kpis["trafo_overload_hours_unknown_steps"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_converged_claim_without_numbers_is_not_trusted(rural1, backend, monkeypatch):
    pf = make_powerflow(rural1, backend)
    real = pf._solve_step

    def no_losses(p, q, step):
        return dataclasses.replace(real(p, q, step), losses_mw=NAN)

    monkeypatch.setattr(pf, "_solve_step", no_losses)
    with pytest.warns(PowerFlowNotConvergedWarning, match="non-finite results"):
        result = pf.solve(np.full(len(pf.buses), NORMAL_MW), step=3)
    assert not result.converged and pf.nonconverged_steps == [3]


def test_unknown_nonfinite_mode_is_rejected(rural1):
    with pytest.raises(BackendError, match="nonfinite"):
        make_powerflow(rural1, "pandapower", nonfinite="ignore")
