"""grid_models.constraint_probe on a real feeder: spec validation, per-building weights
(sensitivity and membership) and what the probe reads from both power-flow backends
(measured values, flow signs, unknown steps, ids that the results lack)."""

from __future__ import annotations

import copy
import dataclasses
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
from grid_models.sensitivity import downstream_buses, linearised_sensitivities, membership

FEEDER_SOURCE = "pandapower:cigre_lv"
#: Buildings on the CIGRE LV residential branch (two share bus 19).
BUILDING_BUS = np.array([12, 16, 17, 18, 19, 19])
N_BUILDINGS = len(BUILDING_BUS)
POWER_FACTOR = 0.95
BACKENDS = ("power-grid-model", "pandapower")
#: Backend options: pandapower without numba (its JIT costs ~3 s on a first runpp).
BACKEND_OPTIONS: dict[str, dict[str, object]] = {"power-grid-model": {},
                                                 "pandapower": {"numba": False}}
#: Residential trafo, and lines whose downstream side is exactly one building bus.
TRAFO = ("trafo", 0)
LINE_TO_BUS_12 = ("line", 9)  # downstream [12]: building 0
LINE_TO_BUS_16 = ("line", 13)  # downstream [16]: building 1
LINE_TO_BUS_19 = ("line", 16)  # downstream [19]: buildings 4 and 5
#: Elements of the industrial / commercial branches: no building downstream.
NO_BUILDING_ELEMENTS = (("trafo", 1), ("trafo", 2), ("line", 17), ("line", 28))
VOLTAGE_BUSES = (12, 16, 19)

#: Normalised weights: the largest magnitude is 1 to this much.
WEIGHT_ATOL = 1e-12
#: A building beside a line moves its loading only through the voltage: its sensitivity
#: weight stays below this fraction of the downstream building's (measured ~0.02).
BESIDE_WEIGHT_MAX = 0.05
#: The probe copies the result's numbers: loading and voltage agree to rounding.
LOADING_ATOL_PERCENT = 1e-9
VM_ATOL_PU = 1e-12
PEAK_ATOL_KW = 1e-9
#: Linearised sensitivities of a loading that the buildings really move (~0.2 pp/kW for
#: the residential trafo) are well above this; numerical noise is ~1e-11.
MOVED_PP_PER_KW = 1e-3
#: The smallest loading CONSUME_KW gives (3 kW on the line into bus 12: ~0.46 %).
MIN_LOADING_PERCENT = 0.1
#: power-grid-model leaves ~1e-15 MW of noise on buses without any load.
BUS_P_NOISE_MW = 1e-9

CONSUME_KW = np.array([3.0, 7.0, 2.0, 5.0, 11.0, 4.0])
EXPORT_KW = np.full(N_BUILDINGS, -50.0)
#: Building 0 (bus 12) exports 50 kW, the others consume 5 kW: net export of 25 kW.
MIXED_KW = np.array([-50.0, 5.0, 5.0, 5.0, 5.0, 5.0])


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feeder():
    return load_feeder(FEEDER_SOURCE)


@pytest.fixture(scope="module")
def downstream(feeder):
    return downstream_buses(feeder)


@pytest.fixture(scope="module")
def masks(feeder):
    return membership(feeder, BUILDING_BUS)


@pytest.fixture(scope="module")
def sens(feeder):
    return linearised_sensitivities(feeder, BUILDING_BUS, backend="power-grid-model",
                                    power_factor=POWER_FACTOR)


@pytest.fixture(scope="module")
def quiet_feeder(feeder):
    """The feeder without its own loads and generators (as background_mode="off")."""
    net = copy.deepcopy(feeder)
    net.load["scaling"] = 0.0
    net.sgen["scaling"] = 0.0
    return net


@pytest.fixture(scope="module", params=BACKENDS)
def grid(request, feeder):
    """The feeder with the buildings only (no background), fleet_scale 1."""
    return GridModel.build(feeder, building_bus=BUILDING_BUS, n_steps=4,
                           backend=request.param, background_mode="off",
                           power_factor=POWER_FACTOR, fleet_scale=1.0,
                           **BACKEND_OPTIONS[request.param])


def _loading(key: tuple[str, int], limit: float = 100.0) -> ConstraintSpec:
    return ConstraintSpec(f"{key[0]} {key[1]} loading", "loading_max", limit, element=key)


def _probe(grid: GridModel, specs, downstream, fleet_scale: float | None = None):
    scale = grid.fleet_scale if fleet_scale is None else fleet_scale
    return ConstraintProbe(specs, grid.bus_ids, grid.line_ids, grid.trafo_ids, downstream,
                           scale)


def _col(ids: np.ndarray, idx: int) -> int:
    return int(np.flatnonzero(np.asarray(ids) == idx)[0])


# -- ConstraintSpec ----------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"kind": "loading_min", "limit": 100.0, "element": ("line", 1)}, "kind"),
    ({"kind": "voltage", "limit": 1.05, "buses": (1,)}, "kind"),
    ({"kind": "peak_kw_max", "limit": 0.0}, "limit"),
    ({"kind": "peak_kw_max", "limit": -5.0}, "limit"),
    ({"kind": "peak_kw_max", "limit": float("nan")}, "limit"),
    ({"kind": "peak_kw_max", "limit": float("inf")}, "limit"),
    ({"kind": "loading_max", "limit": -1.0, "element": ("trafo", 0)}, "limit"),
    ({"kind": "voltage_max", "limit": float("nan"), "buses": (12,)}, "limit"),
    ({"kind": "loading_max", "limit": 100.0}, "element"),
    ({"kind": "voltage_max", "limit": 1.05, "element": ("line", 1), "buses": (12,)},
     "element"),
    ({"kind": "voltage_min", "limit": 0.95, "element": ("trafo", 0), "buses": (12,)},
     "element"),
    ({"kind": "peak_kw_max", "limit": 50.0, "element": ("trafo", 0)}, "element"),
    ({"kind": "voltage_max", "limit": 1.05}, "buses"),
    ({"kind": "voltage_min", "limit": 0.95, "buses": ()}, "buses"),
])
def test_bad_specs_are_refused(kwargs, words):
    with pytest.raises(GridModelError, match=words) as err:
        ConstraintSpec(name="bad one", **kwargs)
    assert "'bad one'" in str(err.value)  # the message names the constraint


def test_scale_is_the_limit_or_the_voltage_band():
    assert _loading(TRAFO, 90.0).scale == 90.0
    assert _loading(LINE_TO_BUS_19, 120.0).scale == 120.0
    assert ConstraintSpec("p", "peak_kw_max", 42.5).scale == 42.5
    assert VOLTAGE_SCALE_PU == 0.05
    for kind, limit in (("voltage_max", 1.05), ("voltage_min", 0.95)):
        assert ConstraintSpec("v", kind, limit, buses=(12,)).scale == VOLTAGE_SCALE_PU


def test_describe_is_plain_json():
    cases = {
        "loading": (_loading(("line", 16), 80.0),
                    {"name": "line 16 loading", "kind": "loading_max", "limit": 80.0,
                     "scale": 80.0, "element": {"table": "line", "index": 16}}),
        "voltage": (ConstraintSpec("vmax", "voltage_max", 1.05, buses=(12, 19)),
                    {"name": "vmax", "kind": "voltage_max", "limit": 1.05,
                     "scale": VOLTAGE_SCALE_PU, "buses": [12, 19]}),
        "peak": (ConstraintSpec("peak", "peak_kw_max", 30.0),
                 {"name": "peak", "kind": "peak_kw_max", "limit": 30.0, "scale": 30.0}),
    }
    for label, (spec, expected) in cases.items():
        text = json.dumps(spec.describe(), allow_nan=False)
        assert json.loads(text) == expected, label


# -- constraint_weights ------------------------------------------------------------------


def test_sensitivity_weights_of_a_loading(sens):
    w = constraint_weights(_loading(TRAFO), N_BUILDINGS, sens=sens)
    assert w.shape == (N_BUILDINGS,)
    assert (w >= 0).all() and (w <= 1.0 + WEIGHT_ATOL).all()
    assert w.max() == pytest.approx(1.0, abs=WEIGHT_ATOL)
    row = np.abs(sens.loading_pp_per_kw[sens.element_index(TRAFO)])
    np.testing.assert_allclose(w, row / row.max(), atol=WEIGHT_ATOL, rtol=0)
    assert (w > 0.5).all()  # every building is downstream of the residential trafo
    # a line into one building's bus: that building leads, the others barely move it
    w = constraint_weights(_loading(LINE_TO_BUS_16), N_BUILDINGS, sens=sens)
    assert w[1] == pytest.approx(1.0, abs=WEIGHT_ATOL)
    assert (np.delete(w, 1) < BESIDE_WEIGHT_MAX).all() and (w >= 0).all()


def test_sensitivity_weights_of_voltages(sens):
    vmax = ConstraintSpec("vmax", "voltage_max", 1.05, buses=VOLTAGE_BUSES)
    vmin = ConstraintSpec("vmin", "voltage_min", 0.95, buses=VOLTAGE_BUSES)
    w_max = constraint_weights(vmax, N_BUILDINGS, sens=sens)
    w_min = constraint_weights(vmin, N_BUILDINGS, sens=sens)
    assert (w_max <= 0).all() and w_max.min() == pytest.approx(-1.0, abs=WEIGHT_ATOL)
    assert (w_min >= 0).all() and w_min.max() == pytest.approx(1.0, abs=WEIGHT_ATOL)
    np.testing.assert_allclose(w_min, -w_max, atol=WEIGHT_ATOL, rtol=0)
    rows = np.abs(sens.vm_pu_per_kw[[sens.bus_index(b) for b in VOLTAGE_BUSES]])
    expected = rows.max(axis=0) / rows.max()
    np.testing.assert_allclose(w_min, expected, atol=WEIGHT_ATOL, rtol=0)
    # voltages always use the sensitivities, whatever the mode
    np.testing.assert_array_equal(
        constraint_weights(vmin, N_BUILDINGS, sens=sens, mode="membership"), w_min)


def test_membership_weights_are_the_downstream_mask(masks):
    concerned = [key for key, mask in masks.items() if mask.any()]
    assert TRAFO in concerned and LINE_TO_BUS_19 in concerned and len(concerned) >= 10
    for key in concerned:
        w = constraint_weights(_loading(key), N_BUILDINGS, downstream_mask=masks[key],
                               mode="membership")
        np.testing.assert_array_equal(w, masks[key].astype(np.float64), err_msg=str(key))
    np.testing.assert_array_equal(masks[LINE_TO_BUS_19], [0, 0, 0, 0, 1, 1])


@pytest.mark.parametrize("key", NO_BUILDING_ELEMENTS)
def test_membership_without_building_downstream_is_refused(key, masks):
    assert not masks[key].any()
    with pytest.raises(GridModelError, match="no building"):
        constraint_weights(_loading(key), N_BUILDINGS, downstream_mask=masks[key],
                           mode="membership")


def test_peak_weights_are_ones(sens):
    peak = ConstraintSpec("peak", "peak_kw_max", 30.0)
    for mode in ("sensitivity", "membership"):
        w = constraint_weights(peak, N_BUILDINGS, mode=mode)
        np.testing.assert_array_equal(w, np.ones(N_BUILDINGS))
    np.testing.assert_array_equal(constraint_weights(peak, 3, sens=sens), np.ones(3))


def test_weights_refuse_bad_arguments(sens, masks):
    spec = _loading(TRAFO)
    with pytest.raises(GridModelError, match="weights mode"):
        constraint_weights(spec, N_BUILDINGS, sens=sens, mode="voronoi")
    with pytest.raises(GridModelError, match="weights mode"):  # even for a peak
        constraint_weights(ConstraintSpec("p", "peak_kw_max", 1.0), N_BUILDINGS, mode="")
    with pytest.raises(GridModelError, match="downstream mask"):
        constraint_weights(spec, N_BUILDINGS, sens=sens, mode="membership")
    with pytest.raises(GridModelError, match="sensitivities"):
        constraint_weights(spec, N_BUILDINGS, downstream_mask=masks[TRAFO])
    with pytest.raises(GridModelError, match="shape"):
        constraint_weights(spec, N_BUILDINGS + 1, sens=sens)
    with pytest.raises(GridModelError, match="shape"):
        constraint_weights(spec, N_BUILDINGS, downstream_mask=masks[TRAFO][:-1],
                           mode="membership")


# found by this test: noise (~1e-11 pp/kW) used to be normalised to weights ~1
@pytest.mark.parametrize("key", [("trafo", 1), ("line", 17)])
def test_sensitivity_without_building_downstream_is_refused(key, sens):
    row = sens.loading_pp_per_kw[sens.element_index(key)]
    assert np.abs(row).max() < MOVED_PP_PER_KW  # the buildings do not move it
    with pytest.raises(GridModelError, match="no building"):
        constraint_weights(_loading(key), N_BUILDINGS, sens=sens)


# -- ConstraintProbe on a real power flow ------------------------------------------------


def test_measure_copies_the_results(grid, downstream):
    vm_buses = (12, 16, 19)
    specs = [_loading(TRAFO), _loading(LINE_TO_BUS_19), _loading(LINE_TO_BUS_12),
             ConstraintSpec("vmax", "voltage_max", 1.05, buses=vm_buses),
             ConstraintSpec("vmin", "voltage_min", 0.95, buses=vm_buses),
             ConstraintSpec("vmin all", "voltage_min", 0.95,
                            buses=tuple(int(b) for b in grid.bus_ids)),
             ConstraintSpec("peak", "peak_kw_max", 20.0)]
    probe = _probe(grid, specs, downstream)
    assert probe.n_constraints == len(specs)
    result = grid.solve(0, CONSUME_KW)
    assert result.converged
    measured, sign = probe.measure(result, CONSUME_KW)
    assert measured.shape == sign.shape == (len(specs),)
    loading = [result.trafo_loading_percent[_col(grid.trafo_ids, TRAFO[1])],
               result.line_loading_percent[_col(grid.line_ids, LINE_TO_BUS_19[1])],
               result.line_loading_percent[_col(grid.line_ids, LINE_TO_BUS_12[1])]]
    np.testing.assert_allclose(measured[:3], loading, atol=LOADING_ATOL_PERCENT, rtol=0)
    assert (measured[:3] > MIN_LOADING_PERCENT).all()  # real loadings, not zeros
    vm = result.bus_vm_pu[[_col(grid.bus_ids, b) for b in vm_buses]]
    assert measured[3] == pytest.approx(vm.max(), abs=VM_ATOL_PU)
    assert measured[4] == pytest.approx(vm.min(), abs=VM_ATOL_PU)
    assert measured[5] == pytest.approx(np.nanmin(result.bus_vm_pu), abs=VM_ATOL_PU)
    assert measured[4] < measured[3] < 1.0  # consumption lowers the voltage
    assert measured[6] == pytest.approx(CONSUME_KW.sum(), abs=PEAK_ATOL_KW)
    np.testing.assert_array_equal(sign, np.ones(len(specs)))
    # the peak follows the probe's fleet_scale (the feeder sees scale * kW)
    scaled = _probe(grid, specs[-1:], downstream, fleet_scale=2.5)
    assert scaled.measure(result, CONSUME_KW)[0][0] == pytest.approx(
        2.5 * CONSUME_KW.sum(), abs=PEAK_ATOL_KW)


def test_sign_follows_the_downstream_flow(grid, downstream, masks):
    concerned = [key for key, mask in masks.items() if mask.any()]
    probe = _probe(grid, [_loading(k) for k in concerned], downstream)
    trafo_col = _col(grid.trafo_ids, TRAFO[1])
    i_trafo = concerned.index(TRAFO)

    result = grid.solve(0, CONSUME_KW)
    _, sign = probe.measure(result, CONSUME_KW)
    np.testing.assert_array_equal(sign, np.ones(len(concerned)))
    assert result.trafo_p_hv_mw[trafo_col] > 0  # import through the trafo

    result = grid.solve(1, EXPORT_KW)  # every building exports 50 kW: reverse flow
    assert result.converged
    _, sign = probe.measure(result, EXPORT_KW)
    np.testing.assert_array_equal(sign, -np.ones(len(concerned)))
    assert result.trafo_p_hv_mw[trafo_col] < 0

    result = grid.solve(2, MIXED_KW)  # bus 12 exports 50 kW, the others consume 25 kW
    _, sign = probe.measure(result, MIXED_KW)
    expected = {TRAFO: -1.0, LINE_TO_BUS_12: -1.0, LINE_TO_BUS_16: 1.0, LINE_TO_BUS_19: 1.0}
    for key, s in expected.items():
        assert sign[concerned.index(key)] == s, key
    assert np.sign(result.trafo_p_hv_mw[trafo_col]) == sign[i_trafo]


@pytest.mark.parametrize(("p_kw", "expected"), [(CONSUME_KW, 1.0), (EXPORT_KW, -1.0)])
def test_sign_matches_the_linearised_slope(grid, quiet_feeder, downstream, p_kw,
                                           expected):
    """d loading / d p_i = sign * |d loading / d p_i| at the step's operating point."""
    probe = _probe(grid, [_loading(TRAFO)], downstream)
    _, sign = probe.measure(grid.solve(0, p_kw), p_kw)
    assert sign[0] == expected
    base_p, base_q = grid.injections(p_kw)
    backend = grid.powerflow.backend
    local = linearised_sensitivities(quiet_feeder, BUILDING_BUS, base_p, base_q,
                                     power_factor=POWER_FACTOR, backend=backend,
                                     **BACKEND_OPTIONS[backend])
    slope = local.loading_pp_per_kw[local.element_index(TRAFO)]
    assert (np.sign(slope) == expected).all() and (np.abs(slope) > MOVED_PP_PER_KW).all()


def test_element_without_downstream_keeps_sign_plus_one(grid, downstream):
    specs = [_loading(TRAFO), _loading(LINE_TO_BUS_19)]
    # no downstream sets at all, and empty ones (an element on a loop)
    for down in ({}, {TRAFO: np.zeros(0, np.int64), LINE_TO_BUS_19: np.zeros(0, np.int64)}):
        probe = _probe(grid, specs, down)
        _, sign = probe.measure(grid.solve(1, EXPORT_KW), EXPORT_KW)
        np.testing.assert_array_equal(sign, [1.0, 1.0])
    # voltage and peak constraints never change sign
    probe = _probe(grid, [ConstraintSpec("v", "voltage_max", 1.05, buses=(19,)),
                          ConstraintSpec("p", "peak_kw_max", 10.0)], downstream)
    measured, sign = probe.measure(grid.solve(1, EXPORT_KW), EXPORT_KW)
    np.testing.assert_array_equal(sign, [1.0, 1.0])
    assert measured[0] > 1.0 and measured[1] == pytest.approx(EXPORT_KW.sum(), abs=PEAK_ATOL_KW)


def test_elements_without_load_downstream_keep_sign_plus_one(grid, downstream):
    # found by this test: power-grid-model's ~-1e-16 MW on unloaded buses flipped the sign
    probe = _probe(grid, [_loading(k) for k in NO_BUILDING_ELEMENTS], downstream)
    for t, p_kw in enumerate((CONSUME_KW, EXPORT_KW)):
        result = grid.solve(t, p_kw)
        down_p = [np.abs(result.bus_p_mw[[_col(grid.bus_ids, b) for b in downstream[k]]]).max()
                  for k in NO_BUILDING_ELEMENTS]
        assert max(down_p) < BUS_P_NOISE_MW  # nothing consumes there (background off)
        _, sign = probe.measure(result, p_kw)
        np.testing.assert_array_equal(sign, np.ones(len(NO_BUILDING_ELEMENTS)))


def test_unknown_step_gives_nan(grid, downstream):
    specs = [_loading(TRAFO), _loading(LINE_TO_BUS_19),
             ConstraintSpec("vmax", "voltage_max", 1.05, buses=VOLTAGE_BUSES),
             ConstraintSpec("vmin", "voltage_min", 0.95, buses=VOLTAGE_BUSES),
             ConstraintSpec("peak", "peak_kw_max", 20.0)]
    probe = _probe(grid, specs, downstream)
    unknown = GridResult.nan(len(grid.bus_ids), len(grid.line_ids), len(grid.trafo_ids),
                             step=3)
    for p_kw in (CONSUME_KW, EXPORT_KW):
        measured, sign = probe.measure(unknown, p_kw)
        assert np.isnan(measured[:4]).all()
        np.testing.assert_array_equal(sign, np.ones(len(specs)))
        # the peak is the fleet's own kW: known without the power flow
        assert measured[4] == pytest.approx(p_kw.sum(), abs=PEAK_ATOL_KW)
    bad_kw = CONSUME_KW.copy()
    bad_kw[2] = np.nan
    measured, sign = probe.measure(grid.solve(0, CONSUME_KW), bad_kw)
    assert np.isnan(measured[4]) and np.isfinite(measured[:4]).all()


def test_voltage_ignores_nan_buses(grid, downstream):
    specs = [ConstraintSpec("vmax", "voltage_max", 1.05, buses=VOLTAGE_BUSES),
             ConstraintSpec("vmin", "voltage_min", 0.95, buses=VOLTAGE_BUSES)]
    probe = _probe(grid, specs, downstream)
    result = grid.solve(0, CONSUME_KW)
    cols = [_col(grid.bus_ids, b) for b in VOLTAGE_BUSES]
    vm = result.bus_vm_pu.copy()
    vm[cols[-1]] = np.nan  # bus 19: the lowest voltage
    partial = dataclasses.replace(result, bus_vm_pu=vm)
    measured, _ = probe.measure(partial, CONSUME_KW)
    np.testing.assert_allclose(measured, [vm[cols[:-1]].max(), vm[cols[:-1]].min()],
                               atol=VM_ATOL_PU, rtol=0)
    assert measured[1] > result.bus_vm_pu[cols[-1]]
    vm[cols] = np.nan
    measured, _ = probe.measure(dataclasses.replace(result, bus_vm_pu=vm), CONSUME_KW)
    assert np.isnan(measured).all()


@pytest.mark.parametrize("spec", [
    _loading(("line", 9999)),
    _loading(("trafo", 99)),
    ConstraintSpec("v", "voltage_max", 1.05, buses=(12, 9999)),
])
def test_ids_the_results_lack_are_refused(grid, downstream, spec):
    with pytest.raises(GridModelError, match="not in the power flow"):
        _probe(grid, [_loading(TRAFO), spec], downstream)


def test_probe_maps_ids_not_positions():
    """Results in an order other than the ids' (as a backend may give them)."""
    bus_ids = np.array([30, 10, 20])
    line_ids = np.array([7, 3])
    trafo_ids = np.array([5])
    down = {("line", 3): np.array([20, 99]),  # 99: not a result bus, ignored
            ("trafo", 5): np.array([10, 20, 30])}
    specs = [_loading(("line", 3)), _loading(("line", 7)), _loading(("trafo", 5)),
             ConstraintSpec("vmin", "voltage_min", 0.9, buses=(20, 30)),
             ConstraintSpec("vmax", "voltage_max", 1.1, buses=(10,))]
    probe = ConstraintProbe(specs, bus_ids, line_ids, trafo_ids, down, 1.0)
    zeros = np.zeros(3)
    result = GridResult(bus_vm_pu=[0.97, 1.0, 0.99], bus_va_degree=zeros,
                        bus_p_mw=[0.5, 0.0, -0.2], bus_q_mvar=zeros,
                        line_loading_percent=[11.0, 33.0], line_i_ka=[0.0, 0.0],
                        trafo_loading_percent=[55.0], trafo_p_hv_mw=[0.3], losses_mw=0.0,
                        ext_grid_p_mw=0.3, ext_grid_q_mvar=0.0, converged=True)
    measured, sign = probe.measure(result, np.array([1.0]))
    np.testing.assert_array_equal(measured, [33.0, 11.0, 55.0, 0.97, 1.0])
    # line 3 feeds bus 20 (-0.2 MW: export); the trafo's side nets +0.3 MW
    np.testing.assert_array_equal(sign, [-1.0, 1.0, 1.0, 1.0, 1.0])
