"""The PowerFlow interface: backends agree, power balances, failures are flagged and contained."""

from __future__ import annotations

import warnings

import numpy as np
import pandapower as pp
import pytest

from grid_models.background import background_profiles
from grid_models.errors import BackendError, ConversionError, PowerFlowInputError
from grid_models.feeders import load_feeder
from grid_models.powerflow.interface import (
    BatchGridResult,
    GridResult,
    PowerFlow,
    PowerFlowNotConvergedWarning,
    make_powerflow,
)

from .conftest import PANDAPOWER_SOURCES, SIMBENCH_SOURCES

VM_ATOL_PU = 1e-4  # |dvm| between backends (the tolerance)
VA_ATOL_DEGREE = 1e-2  # angles, incl. the transformers' 150 degree shift
LOADING_ATOL_PERCENT = 0.1  # |dloading| between backends, percentage points
I_ATOL_KA = 1e-5
POWER_ATOL_MW = 1e-5  # losses, ext-grid power, bus power between backends
POWER_BALANCE_ATOL_MW = 1e-6  # within one backend: injections + losses = supply
SAME_SOLVER_ATOL = 1e-9  # one backend, two code paths (single step vs batch; tuned vs default)

SUMMER_DAY = 4 * 24 * 180  # first quarter-hour of 29 June 2016 (PV and load both active)


def bus_profile_injections(net, pf, n_steps, start):
    """SimBench's own load and PV profiles summed per bus (net consumption, MW/Mvar)."""
    bg = background_profiles(net, n_steps, start=start)
    position = {b: i for i, b in enumerate(pf.bus_ids)}
    p = np.zeros((n_steps, len(pf.bus_ids)))
    q = np.zeros_like(p)
    for j, bus in enumerate(net.load.bus):
        p[:, position[bus]] += bg.load_p_mw[:, j]
        q[:, position[bus]] += bg.load_q_mvar[:, j]
    for j, bus in enumerate(net.sgen.bus):
        p[:, position[bus]] -= bg.sgen_p_mw[:, j]
        q[:, position[bus]] -= bg.sgen_q_mvar[:, j]
    return p, q


def background_off(pf):
    pf.set_background(
        np.zeros(len(pf.load_ids)),
        np.zeros(len(pf.load_ids)),
        np.zeros(len(pf.sgen_ids)),
        np.zeros(len(pf.sgen_ids)),
    )


def assert_agree(a, b, atol_scale=1.0):
    """pandapower result ``a`` vs power-grid-model result ``b`` (single or batch)."""
    np.testing.assert_array_equal(a.converged, b.converged)
    np.testing.assert_array_equal(np.isnan(a.bus_vm_pu), np.isnan(b.bus_vm_pu))
    np.testing.assert_allclose(b.bus_vm_pu, a.bus_vm_pu, atol=VM_ATOL_PU * atol_scale, rtol=0)
    np.testing.assert_allclose(b.bus_va_degree, a.bus_va_degree, atol=VA_ATOL_DEGREE, rtol=0)
    np.testing.assert_allclose(
        b.line_loading_percent, a.line_loading_percent, atol=LOADING_ATOL_PERCENT, rtol=0
    )
    np.testing.assert_allclose(
        b.trafo_loading_percent, a.trafo_loading_percent, atol=LOADING_ATOL_PERCENT, rtol=0
    )
    np.testing.assert_allclose(b.line_i_ka, a.line_i_ka, atol=I_ATOL_KA, rtol=0)
    for name in (
        "losses_mw",
        "ext_grid_p_mw",
        "ext_grid_q_mvar",
        "trafo_p_hv_mw",
        "bus_p_mw",
        "bus_q_mvar",
    ):
        np.testing.assert_allclose(
            getattr(b, name), getattr(a, name), atol=POWER_ATOL_MW, rtol=0, err_msg=name
        )


@pytest.mark.slow
@pytest.mark.parametrize("source", SIMBENCH_SOURCES)
def test_backends_agree_over_96_steps_of_real_profiles(source):
    net = load_feeder(source)
    ref = make_powerflow(net, "pandapower")
    fast = make_powerflow(net, "power-grid-model")
    for pf in (ref, fast):
        background_off(pf)
    p, q = bus_profile_injections(net, ref, 96, SUMMER_DAY)
    a = ref.solve_batch(p, q, first_step=SUMMER_DAY)
    b = fast.solve_batch(p, q, first_step=SUMMER_DAY)
    assert a.converged.all() and b.converged.all()
    assert_agree(a, b)
    np.testing.assert_array_equal(b.steps, np.arange(SUMMER_DAY, SUMMER_DAY + 96))
    # the same flows when SimBench's profiles drive the feeder's own loads instead
    bg = background_profiles(net, 96, start=SUMMER_DAY)
    zero = np.zeros_like(p)
    assert_agree(a, fast.solve_batch(zero, zero, background=bg))
    # one step at a time gives the batch's numbers
    for t in (0, 50, 95):
        single = fast.solve(p[t], q[t], step=t)
        np.testing.assert_allclose(single.bus_vm_pu, b.bus_vm_pu[t], atol=SAME_SOLVER_ATOL)
        np.testing.assert_allclose(
            single.line_loading_percent, b.line_loading_percent[t], atol=SAME_SOLVER_ATOL
        )


@pytest.mark.parametrize("source", PANDAPOWER_SOURCES)
def test_backends_agree_on_pandapower_networks(source):
    net = load_feeder(source)
    ref = make_powerflow(net, "pandapower", tuned=False)
    fast = make_powerflow(net, "power-grid-model")
    rng = np.random.default_rng(3)
    for _ in range(3):
        p = rng.uniform(-0.005, 0.01, len(ref.buses))
        q = 0.3 * p
        assert_agree(ref.solve(p, q), fast.solve(p, q))


def test_ratio_tap_and_open_line_switch_agree():
    net = load_feeder("pandapower:kerber_dorfnetz")
    net.trafo["tap_pos"] = 2  # Ratio tap changer, +5 % on the HV side
    p = np.full(len(net.bus), 0.002)
    assert_agree(
        make_powerflow(net, "pandapower").solve(p), make_powerflow(net, "power-grid-model").solve(p)
    )
    rural = load_feeder("simbench:1-LV-rural1--0-sw")
    line = rural.line.index[3]
    switch = rural.switch.index[(rural.switch.et == "l") & (rural.switch.element == line)][0]
    rural.switch.loc[switch, "closed"] = False
    a = make_powerflow(rural, "pandapower").solve(np.zeros(len(rural.bus)))
    b = make_powerflow(rural, "power-grid-model").solve(np.zeros(len(rural.bus)))
    assert np.isnan(a.bus_vm_pu).any()  # the open switch isolates part of the feeder
    assert_agree(a, b)


def test_tuned_pandapower_equals_defaults(rural1):
    tuned = make_powerflow(rural1, "pandapower", tuned=True)
    plain = make_powerflow(rural1, "pandapower", tuned=False)
    rng = np.random.default_rng(5)
    for t in range(4):
        p = rng.uniform(0, 0.01, len(tuned.buses))
        a, b = tuned.solve(p, 0.2 * p, step=t), plain.solve(p, 0.2 * p, step=t)
        np.testing.assert_allclose(a.bus_vm_pu, b.bus_vm_pu, atol=SAME_SOLVER_ATOL)
        np.testing.assert_allclose(a.line_loading_percent, b.line_loading_percent, atol=1e-7)


@pytest.mark.parametrize("backend", ["pandapower", "power-grid-model"])
def test_power_balance(rural1, backend):
    """Injections plus losses equal the external grid's supply, step by step."""
    pf = make_powerflow(rural1, backend)
    bg = background_profiles(rural1, 8, start=SUMMER_DAY + 48)
    rng = np.random.default_rng(11)
    p = rng.uniform(-0.01, 0.02, (8, len(pf.buses)))
    q = 0.25 * p
    batch = pf.solve_batch(p, q, background=bg)
    supply = p.sum(axis=1) + bg.total_p_mw() + batch.losses_mw
    np.testing.assert_allclose(batch.ext_grid_p_mw, supply, atol=POWER_BALANCE_ATOL_MW, rtol=0)
    supply_q = q.sum(axis=1) + bg.load_q_mvar.sum(axis=1) - bg.sgen_q_mvar.sum(axis=1)
    assert np.all(batch.ext_grid_q_mvar > supply_q - POWER_BALANCE_ATOL_MW)  # lines draw Q
    # the buses' net consumption (slack included) sums to minus the losses
    np.testing.assert_allclose(
        np.nansum(batch.bus_p_mw, axis=1), -batch.losses_mw, atol=POWER_BALANCE_ATOL_MW, rtol=0
    )
    assert (batch.losses_mw > 0).all()


@pytest.mark.parametrize(
    ("backend", "options"),
    [("pandapower", {"tuned": True}), ("pandapower", {"tuned": False}), ("power-grid-model", {})],
)
def test_forced_nonconvergence_is_flagged_and_contained(rural1, backend, options):
    pf = make_powerflow(rural1, backend, **options)
    fresh = make_powerflow(rural1, backend, **options)
    n = len(pf.buses)
    normal = np.full(n, 0.003)
    absurd = normal.copy()
    absurd[5] = 100.0  # 100 MW on a 0.16 MVA LV feeder
    pf.solve(0.5 * normal, step=0)  # a warm start to be spoiled
    with pytest.warns(PowerFlowNotConvergedWarning) as record:
        bad = pf.solve(absurd, step=1)
    message = str(record[0].message)
    assert "step=1" in message and f"bus {pf.buses[5]} p=100 MW" in message
    assert f"bus injections P={absurd.sum():.6g} MW" in message
    assert not bad.converged
    for name in ("bus_vm_pu", "bus_p_mw", "line_loading_percent", "trafo_loading_percent"):
        assert np.isnan(getattr(bad, name)).all(), name
    assert np.isnan(bad.losses_mw) and np.isnan(bad.ext_grid_p_mw)
    assert pf.n_nonconverged == 1 and pf.nonconverged_steps == [1]
    good = pf.solve(normal, step=2)
    expected = fresh.solve(normal, step=2)
    assert good.converged
    np.testing.assert_allclose(good.bus_vm_pu, expected.bus_vm_pu, atol=SAME_SOLVER_ATOL)
    # and inside a batch: only the bad step is NaN, its neighbours are right
    steps = np.stack([normal, absurd, normal, 0.5 * normal])
    with pytest.warns(PowerFlowNotConvergedWarning, match="step=11"):
        batch = pf.solve_batch(steps, first_step=10)
    np.testing.assert_array_equal(batch.converged, [True, False, True, True])
    assert np.isnan(batch.bus_vm_pu[1]).all() and np.isnan(batch.losses_mw[1])
    np.testing.assert_allclose(batch.bus_vm_pu[2], expected.bus_vm_pu, atol=SAME_SOLVER_ATOL)
    assert pf.n_nonconverged == 2 and pf.nonconverged_steps == [1, 11]


def test_interface_and_input_checks(rural1):
    pf = make_powerflow(rural1, "power-grid-model")
    assert isinstance(pf, PowerFlow)
    np.testing.assert_array_equal(pf.buses, rural1.bus.index)
    np.testing.assert_array_equal(pf.line_ids, rural1.line.index)
    np.testing.assert_array_equal(pf.load_ids, rural1.load.index)
    assert len(pf.net.load) == len(rural1.load) + len(rural1.bus)  # one injection load per bus
    assert len(rural1.load) == 13  # the caller's net is untouched
    with pytest.raises(PowerFlowInputError, match=r"shape \(15,\)"):
        pf.solve(np.zeros(3))
    with pytest.raises(PowerFlowInputError, match="non-finite"):
        pf.solve(np.full(15, np.nan))
    with pytest.raises(PowerFlowInputError, match=r"\(T, 15\)"):
        pf.solve_batch(np.zeros(15))
    with pytest.raises(PowerFlowInputError, match="load_p_mw"):
        pf.set_background(load_p_mw=np.zeros(2))
    with pytest.raises(BackendError, match="pandapower, power-grid-model"):
        make_powerflow(rural1, "matpower")
    result = pf.solve(np.zeros(15))
    assert isinstance(result, GridResult)
    with pytest.raises(ValueError, match="read-only"):
        result.bus_vm_pu[0] = 1.0


def test_background_persists_until_changed(rural1):
    pf = make_powerflow(rural1, "power-grid-model")
    zero = np.zeros(len(pf.buses))
    nominal = pf.solve(zero)
    pf.set_background(load_p_mw=2 * rural1.load.p_mw.to_numpy())
    heavier = pf.solve(zero)
    assert heavier.ext_grid_p_mw > nominal.ext_grid_p_mw + 0.05
    again = pf.solve(zero)
    assert again.ext_grid_p_mw == pytest.approx(heavier.ext_grid_p_mw, abs=1e-12)


def test_runs_are_deterministic(rural1):
    p = np.random.default_rng(0).uniform(0, 0.01, (6, len(rural1.bus)))
    for backend in ("pandapower", "power-grid-model"):
        a = make_powerflow(rural1, backend).solve_batch(p)
        b = make_powerflow(rural1, backend).solve_batch(p)
        np.testing.assert_array_equal(a.bus_vm_pu, b.bus_vm_pu)
        np.testing.assert_array_equal(a.losses_mw, b.losses_mw)


def test_batch_result_containers(rural1):
    pf = make_powerflow(rural1, "power-grid-model")
    p = np.full((3, len(pf.buses)), 0.001)
    batch = pf.solve_batch(p, first_step=5)
    assert len(batch) == 3 and batch[1].step == 6 and batch.n_nonconverged == 0
    stacked = BatchGridResult.from_results(list(batch))
    np.testing.assert_array_equal(stacked.bus_vm_pu, batch.bus_vm_pu)
    joined = BatchGridResult.concatenate([batch, batch])
    assert len(joined) == 6
    nan = GridResult.nan(2, 1, 1)
    assert not nan.converged and np.isnan(nan.bus_vm_pu).all()


def test_unsupported_elements_are_named(rural1):
    pp.create_gen(rural1, bus=rural1.bus.index[4], p_mw=0.01, vm_pu=1.0)
    with pytest.raises(ConversionError, match="1 in-service gen.*backend='pandapower'"):
        make_powerflow(rural1, "power-grid-model")
    pf = make_powerflow(rural1, "pandapower")  # the reference handles it
    with warnings.catch_warnings():
        warnings.simplefilter("error", PowerFlowNotConvergedWarning)
        assert pf.solve(np.zeros(len(pf.buses))).converged
