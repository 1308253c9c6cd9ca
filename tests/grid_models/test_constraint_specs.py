"""grid_models.constraint_probe: constraint specs, weights and what the probe reads from a
power flow (values, flow signs, unknown steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grid_models.constraint_probe import (
    VOLTAGE_SCALE_PU,
    ConstraintProbe,
    ConstraintSpec,
    constraint_weights,
)
from grid_models.errors import GridModelError
from grid_models.feeders import load_feeder
from grid_models.grid_model import GridModel
from grid_models.powerflow.interface import GridResult
from grid_models.sensitivity import downstream_buses, linearised_sensitivities

BUSES = [12, 16, 17, 18, 19, 12]  # cigre_lv residential buses, one shared
WEIGHT_ATOL = 1e-12
PEAK_ATOL_KW = 1e-9


@pytest.fixture(scope="module")
def feeder():
    return load_feeder("pandapower:cigre_lv")


@pytest.fixture(scope="module")
def grid(feeder):
    return GridModel.build(feeder, building_bus=BUSES, n_steps=4, backend="power-grid-model",
                           power_factor=0.95, fleet_scale=2.0)


@pytest.fixture(scope="module")
def sens(feeder):
    return linearised_sensitivities(feeder, BUSES, power_factor=0.95, fleet_scale=2.0)


def _line_into(feeder, bus: int) -> int:
    return int(feeder.line.index[feeder.line.to_bus == bus][0])


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"name": "x", "kind": "loading_min", "limit": 1.0}, "kind"),
    ({"name": "x", "kind": "peak_kw_max", "limit": 0.0}, "limit"),
    ({"name": "x", "kind": "peak_kw_max", "limit": float("nan")}, "limit"),
    ({"name": "x", "kind": "loading_max", "limit": 100.0}, "element"),
    ({"name": "x", "kind": "voltage_max", "limit": 1.05, "element": ("line", 1)}, "element"),
    ({"name": "x", "kind": "voltage_min", "limit": 0.95}, "buses"),
])
def test_bad_specs_are_refused(kwargs, words):
    with pytest.raises(GridModelError, match=words):
        ConstraintSpec(**kwargs)


def test_scale_and_description():
    loading = ConstraintSpec("trafo 0 loading", "loading_max", 90.0, element=("trafo", 0))
    volt = ConstraintSpec("v", "voltage_max", 1.05, buses=(12, 16))
    assert loading.scale == 90.0 and volt.scale == VOLTAGE_SCALE_PU
    assert json.loads(json.dumps(loading.describe()))["element"] == {"table": "trafo",
                                                                      "index": 0}
    assert volt.describe()["buses"] == [12, 16]


def test_weights_follow_the_feeder(feeder, sens):
    n = len(BUSES)
    trafo = ConstraintSpec("t", "loading_max", 100.0, element=("trafo", 0))
    w = constraint_weights(trafo, n, sens=sens)
    assert w.min() >= 0 and w.max() == pytest.approx(1.0, abs=WEIGHT_ATOL)
    vmax = constraint_weights(ConstraintSpec("v", "voltage_max", 1.05, buses=(19,)), n,
                              sens=sens)
    vmin = constraint_weights(ConstraintSpec("v", "voltage_min", 0.95, buses=(19,)), n,
                              sens=sens)
    assert vmax.max() <= 0 and vmax.min() == pytest.approx(-1.0, abs=WEIGHT_ATOL)
    np.testing.assert_allclose(vmin, -vmax, atol=WEIGHT_ATOL, rtol=0)
    peak = constraint_weights(ConstraintSpec("p", "peak_kw_max", 10.0), n)
    np.testing.assert_array_equal(peak, np.ones(n))
    # membership: 1 for the buildings downstream of the line into bus 19, 0 elsewhere
    line = _line_into(feeder, 19)
    down = downstream_buses(feeder, meshed="empty")[("line", line)]
    mask = np.isin(BUSES, down)
    spec = ConstraintSpec("l", "loading_max", 100.0, element=("line", line))
    got = constraint_weights(spec, n, downstream_mask=mask, mode="membership")
    np.testing.assert_array_equal(got, mask.astype(float))
    with pytest.raises(GridModelError, match="no building"):
        constraint_weights(spec, n, downstream_mask=np.zeros(n, bool), mode="membership")
    with pytest.raises(GridModelError, match="weights mode"):
        constraint_weights(spec, n, sens=sens, mode="voronoi")


def test_probe_reads_the_power_flow(feeder, grid):
    line = _line_into(feeder, 19)
    specs = [ConstraintSpec("t", "loading_max", 100.0, element=("trafo", 0)),
             ConstraintSpec("l", "loading_max", 100.0, element=("line", line)),
             ConstraintSpec("vmax", "voltage_max", 1.05, buses=(12, 19)),
             ConstraintSpec("vmin", "voltage_min", 0.95, buses=(12, 19)),
             ConstraintSpec("peak", "peak_kw_max", 50.0)]
    probe = ConstraintProbe(specs, grid.bus_ids, grid.line_ids, grid.trafo_ids,
                            downstream_buses(feeder, meshed="empty"), grid.fleet_scale)
    load = np.full(len(BUSES), 5.0)
    result = grid.solve(0, load)
    measured, sign = probe.measure(result, load)
    trafo_col = list(grid.trafo_ids).index(0)
    line_col = list(grid.line_ids).index(line)
    bus_cols = [list(grid.bus_ids).index(b) for b in (12, 19)]
    assert measured[0] == result.trafo_loading_percent[trafo_col]
    assert measured[1] == result.line_loading_percent[line_col]
    assert measured[2] == result.bus_vm_pu[bus_cols].max()
    assert measured[3] == result.bus_vm_pu[bus_cols].min()
    assert measured[4] == pytest.approx(2.0 * load.sum(), abs=PEAK_ATOL_KW)
    np.testing.assert_array_equal(sign, np.ones(5))
    export = np.full(len(BUSES), -60.0)  # strong export: the flow runs upstream
    _, sign = probe.measure(grid.solve(1, export), export)
    assert sign[0] == -1.0 and sign[1] == -1.0 and (sign[2:] == 1.0).all()
    unknown = GridResult.nan(len(grid.bus_ids), len(grid.line_ids), len(grid.trafo_ids))
    measured, sign = probe.measure(unknown, load)
    assert np.isnan(measured[:4]).all() and (sign == 1.0).all()


def test_probe_refuses_elements_the_results_lack(feeder, grid):
    spec = ConstraintSpec("l", "loading_max", 100.0, element=("line", 9999))
    with pytest.raises(GridModelError, match="not in"):
        ConstraintProbe([spec], grid.bus_ids, grid.line_ids, grid.trafo_ids, {}, 1.0)
