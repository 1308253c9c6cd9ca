"""Grid KPIs on a tiny hand-made series, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grid_models.kpis import KPI_KEYS, grid_kpis
from grid_models.powerflow.interface import BatchGridResult, GridResult

KPI_ATOL = 1e-12
NAN = np.nan


def step(vm, line, trafo, losses):
    n_bus = len(vm)
    return GridResult(
        bus_vm_pu=vm,
        bus_va_degree=np.zeros(n_bus),
        bus_p_mw=np.zeros(n_bus),
        bus_q_mvar=np.zeros(n_bus),
        line_loading_percent=line,
        line_i_ka=np.zeros(len(line)),
        trafo_loading_percent=trafo,
        trafo_p_hv_mw=np.zeros(len(trafo)),
        losses_mw=losses,
        ext_grid_p_mw=0.0,
        ext_grid_q_mvar=0.0,
        converged=True,
    )


SERIES = [
    step([1.00, 0.96, 1.06], [50.0, 101.0], [99.0], 0.01),  # line over, V out of 0.95-1.05
    step([0.94, 1.00, 1.00], [100.0, 20.0], [120.0], 0.02),  # exactly 100 % is not over
    GridResult.nan(3, 2, 1),  # did not converge: counted, else ignored
    step([0.89, 1.00, 1.11], [10.0, 10.0], [50.0], 0.03),  # out of both bands
    step([1.00, NAN, 1.00], [NAN, 30.0], [100.0], 0.04),  # isolated bus and line
]

EXPECTED_1H = {
    "steps": 5,
    "nonconverged_steps": 1,
    "trafo_overload_hours": 1,
    "line_overload_hours": 1,
    "max_trafo_loading_percent": 120.0,
    "max_line_loading_percent": 101.0,
    "hours_outside_095_105_pu": 3,
    "hours_outside_090_110_pu": 1,
    "min_vm_pu": 0.89,
    "max_vm_pu": 1.11,
    "losses_mwh": 0.10,
}


def assert_kpis(actual, expected):
    assert list(actual) == list(KPI_KEYS)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=KPI_ATOL), key


def test_hand_computed_hourly():
    assert_kpis(grid_kpis(SERIES, dt_h=1.0), EXPECTED_1H)


def test_hand_computed_quarter_hourly():
    hours = {k for k in EXPECTED_1H if k.endswith("_hours") or k.startswith("hours_")}
    expected = {k: v * 0.25 if k in hours else v for k, v in EXPECTED_1H.items()}
    expected["losses_mwh"] = 0.10 * 0.25
    assert_kpis(grid_kpis(SERIES, dt_h=0.25), expected)


def test_batch_and_list_forms_agree():
    batch = BatchGridResult.from_results(SERIES)
    assert_kpis(grid_kpis(batch), EXPECTED_1H)
    assert_kpis(grid_kpis([batch]), EXPECTED_1H)
    halves = [BatchGridResult.from_results(SERIES[:2]), BatchGridResult.from_results(SERIES[2:])]
    assert_kpis(grid_kpis(halves), EXPECTED_1H)


def test_no_converged_step_gives_nan_extremes():
    kpis = grid_kpis([GridResult.nan(3, 2, 1), GridResult.nan(3, 2, 1)])
    assert kpis["nonconverged_steps"] == 2 and kpis["trafo_overload_hours"] == 0
    assert math.isnan(kpis["max_trafo_loading_percent"]) and math.isnan(kpis["min_vm_pu"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="no results"):
        grid_kpis([])
    with pytest.raises(ValueError, match="dt_h"):
        grid_kpis(SERIES, dt_h=0)
