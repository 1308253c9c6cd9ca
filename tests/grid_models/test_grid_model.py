"""GridModel: calendar, background stitching, injections, per-step and batched power flow.

The batched power flow (``GridModel.solve_batch``) must give what ``GridModel.solve``
gives step by step, to the solver's tolerance, including steps that fail or have
non-finite inputs, and leave the same state behind (pandapower's warm start).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from grid_models.background import BackgroundProfiles, background_profiles
from grid_models.errors import BackendError, BackgroundError, GridModelError, PlacementError
from grid_models.feeders import load_feeder
from grid_models.grid_model import (
    CITYLEARN_ROW0_HOUR_OF_YEAR,
    HOURS_PER_YEAR,
    GridModel,
    calendar_background,
    hour_of_year,
)
from grid_models.kpis import grid_kpis
from grid_models.placement import bus_injections, place_buildings
from grid_models.powerflow.interface import (
    ARRAY_FIELDS,
    SCALAR_FIELDS,
    BatchGridResult,
    GridResult,
    PowerFlowNotConvergedWarning,
)

BACKENDS = ("power-grid-model", "pandapower")
#: Batched vs per-step agreement: the solvers' own tolerances (power-grid-model's
#: Newton-Raphson stops at a 1e-8 pu voltage update, pandapower at a 1e-8 MVA mismatch;
#: two pandapower runs from different warm starts differ by ~1e-6 %-points of loading on
#: CIGRE LV). Observed today: 0 for every field and both backends (the same injections
#: bit for bit; pandapower's batch is the same sequence of warm-started runs, which the
#: tests also check bit for bit).
BATCH_VM_ATOL_PU = 1e-8
BATCH_P_ATOL_MW = 1e-8
BATCH_LOADING_ATOL_PERCENT = 1e-5
#: What cosim.results.writer.RunWriter writes of a GridResult (buses, lines, trafos, grid).
WRITER_FIELDS = ("bus_vm_pu", "bus_p_mw", "bus_q_mvar", "line_loading_percent", "line_i_ka",
                 "trafo_loading_percent", "trafo_p_hv_mw", "converged", "losses_mw",
                 "ext_grid_p_mw", "ext_grid_q_mvar")
ATOL = {
    "bus_vm_pu": BATCH_VM_ATOL_PU,
    "bus_va_degree": BATCH_VM_ATOL_PU * 180 / math.pi,
    "bus_p_mw": BATCH_P_ATOL_MW,
    "bus_q_mvar": BATCH_P_ATOL_MW,
    "line_loading_percent": BATCH_LOADING_ATOL_PERCENT,
    "line_i_ka": BATCH_LOADING_ATOL_PERCENT,  # kA of LV/MV lines are well below 100 x rating
    "trafo_loading_percent": BATCH_LOADING_ATOL_PERCENT,
    "trafo_p_hv_mw": BATCH_P_ATOL_MW,
    "losses_mw": BATCH_P_ATOL_MW,
    "ext_grid_p_mw": BATCH_P_ATOL_MW,
    "ext_grid_q_mvar": BATCH_P_ATOL_MW,
}
#: paper_fig1d's buildings on the CIGRE LV residential branch
FIG1D_BUSES = [12, 12, 16, 17, 18, 19, 19]
#: a run of 48 hourly steps that crosses the end of the SimBench year
ROW_BEFORE_NEW_YEAR = HOURS_PER_YEAR - CITYLEARN_ROW0_HOUR_OF_YEAR - 20


@pytest.fixture(scope="module")
def cigre():
    return load_feeder("pandapower:cigre_lv")


@pytest.fixture(scope="module")
def semiurb():
    return load_feeder("simbench:1-LV-semiurb4--0-sw")


def _loads(n_steps: int, n_buildings: int, seed: int = 1) -> np.ndarray:
    """Building net consumption in kW: mostly load, some PV export."""
    return np.random.default_rng(seed).uniform(-2.0, 6.0, (n_steps, n_buildings))


def _model(net, backend: str, buses, n_steps: int, **kw) -> GridModel:
    return GridModel.build(net, building_bus=buses, n_steps=n_steps, backend=backend,
                           power_factor=0.95, **kw)


def _step_numbers(caught) -> list[int]:
    return [int(re.search(r"step=(\d+)", str(w.message)).group(1)) for w in caught
            if issubclass(w.category, PowerFlowNotConvergedWarning)]


def max_differences(a: BatchGridResult, b: BatchGridResult) -> dict[str, float]:
    """max |a - b| per field over the rows where both have numbers; asserts equal NaNs."""
    out = {}
    for name in ARRAY_FIELDS + SCALAR_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=name)
        both = ~np.isnan(x)
        out[name] = float(np.max(np.abs(x[both] - y[both]), initial=0.0))
    return out


def assert_batch_equals_steps(batch: BatchGridResult, steps: BatchGridResult,
                              backend: str) -> dict:
    np.testing.assert_array_equal(batch.converged, steps.converged)
    np.testing.assert_array_equal(batch.steps, steps.steps)
    diffs = max_differences(batch, steps)
    for name, d in diffs.items():
        assert d <= ATOL[name], f"{name}: batched and per-step differ by {d:.3g}"
        if backend == "pandapower":  # the very same runpp calls, warm starts included
            assert d == 0, f"{name}: pandapower's batch differs from its steps by {d:.3g}"
    return diffs


# -- calendar and background ------------------------------------------------------------


def test_hour_of_year_follows_the_citylearn_calendar():
    assert hour_of_year(0) == CITYLEARN_ROW0_HOUR_OF_YEAR == 5087  # 31 July, 23:00
    assert hour_of_year(HOURS_PER_YEAR - 5087) == 0  # 1 January, 00:00
    assert hour_of_year(HOURS_PER_YEAR) == 5087


def test_calendar_background_stitches_over_the_end_of_the_year():
    rural1 = load_feeder("simbench:1-LV-rural1--0-sw")
    start_row = HOURS_PER_YEAR - 5087 - 2  # hours 8758, 8759, then 0, 1, 2
    bg = calendar_background(rural1, start_row, 5, dt_h=1.0, mode="simbench", scale=2.0)
    tail = background_profiles(rural1, 2, start=8758, dt_h=1.0, scale=2.0)
    head = background_profiles(rural1, 3, start=0, dt_h=1.0, scale=2.0)
    for name in ("load_p_mw", "load_q_mvar", "sgen_p_mw", "sgen_q_mvar"):
        np.testing.assert_array_equal(
            getattr(bg, name), np.concatenate([getattr(tail, name), getattr(head, name)]))
    assert len(bg) == 5 and bg.start == 8758
    one_piece = calendar_background(rural1, 0, 3, mode="simbench")
    np.testing.assert_array_equal(one_piece.load_p_mw,
                                  background_profiles(rural1, 3, start=5087,
                                                      dt_h=1.0).load_p_mw)
    nominal = calendar_background(rural1, start_row, 4, mode="nominal")
    np.testing.assert_array_equal(nominal.load_p_mw,
                                  background_profiles(rural1, 4, mode="nominal").load_p_mw)


def test_build_refuses_bad_parameters(cigre):
    with pytest.raises(BackendError):
        _model(cigre, "matpower", FIG1D_BUSES, 4)
    with pytest.raises(BackgroundError):
        _model(cigre, "power-grid-model", FIG1D_BUSES, 4, background_mode="weekly")
    with pytest.raises(BackgroundError, match="SimBench profiles"):
        _model(cigre, "power-grid-model", FIG1D_BUSES, 4, background_mode="simbench")
    with pytest.raises(PlacementError):
        _model(cigre, "power-grid-model", [12, 9999], 4)
    with pytest.raises(GridModelError, match="power_factor"):
        GridModel.build(cigre, building_bus=FIG1D_BUSES, n_steps=4, power_factor=0.0)
    gm = _model(cigre, "power-grid-model", FIG1D_BUSES, 4)
    other = background_profiles(load_feeder("simbench:1-LV-rural1--0-sw"), 4, mode="off")
    with pytest.raises(BackgroundError, match="another feeder"):
        GridModel(gm.net, gm.powerflow, gm.building_bus, other, gm.q_per_p, 1.0)


# -- injections -------------------------------------------------------------------------


def test_injections_are_the_same_alone_and_in_a_batch(semiurb):
    buses = place_buildings(semiurb, 300, seed=3)
    gm = _model(semiurb, "power-grid-model", buses, 10, fleet_scale=1.7)
    p_kw = _loads(10, 300)
    p_mw, q_mvar = gm.injections(p_kw)
    for t in range(10):
        single_p, single_q = gm.injections(p_kw[t])
        np.testing.assert_array_equal(p_mw[t], single_p)  # bit for bit
        np.testing.assert_array_equal(q_mvar[t], single_q)
    ref_p, ref_q = bus_injections(buses, p_kw, p_kw * gm.q_per_p, bus_ids=gm.bus_ids,
                                  scale=1.7)
    np.testing.assert_allclose(p_mw, ref_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(q_mvar, ref_q, rtol=0, atol=1e-12)
    assert gm.q_per_p == pytest.approx(math.tan(math.acos(0.95)))
    np.testing.assert_allclose(p_mw.sum(axis=1), p_kw.sum(axis=1) * 1.7 / 1000, atol=1e-12)


# -- batched vs per-step ----------------------------------------------------------------


def _case(name: str, cigre, semiurb):
    if name == "cigre_lv":  # paper_fig1d's buildings, the feeder's own loads as background
        return cigre, FIG1D_BUSES, {"background_mode": "nominal", "background_scale": 0.5}
    buses = place_buildings(semiurb, 40, seed=0)
    return semiurb, buses, {"background_mode": "simbench", "start_row": ROW_BEFORE_NEW_YEAR,
                            "fleet_scale": 3.0}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("feeder", ["cigre_lv", "semiurb4"])
def test_solve_batch_equals_solve_step_by_step(feeder, backend, cigre, semiurb):
    net, buses, kw = _case(feeder, cigre, semiurb)
    n_steps = 48
    p_kw = _loads(n_steps, len(buses))
    stepwise = _model(net, backend, buses, n_steps, **kw)
    batched = _model(net, backend, buses, n_steps, **kw)
    singles = [stepwise.solve(t, p_kw[t]) for t in range(n_steps)]
    # two batches: the second starts mid-run (background rows and step numbers from t0)
    batch = BatchGridResult.concatenate([batched.solve_batch(0, p_kw[:20]),
                                         batched.solve_batch(20, p_kw[20:])])
    diffs = assert_batch_equals_steps(batch, BatchGridResult.from_results(singles), backend)
    print(f"{feeder} {backend}: max |batch - step| "
          + ", ".join(f"{k}={v:.1e}" for k, v in diffs.items()))
    assert batch.converged.all()
    # what a writer reads: batch[t] is the step's GridResult
    for t, single in enumerate(singles):
        row = batch[t]
        assert isinstance(row, GridResult) and row.step == single.step == t
        for name in WRITER_FIELDS:
            np.testing.assert_allclose(getattr(row, name), getattr(single, name), rtol=0,
                                       atol=ATOL.get(name, 0), err_msg=name)
    # the state left behind: the last step's background, the same warm start
    pf_s, pf_b = stepwise.powerflow, batched.powerflow
    np.testing.assert_array_equal(pf_b._bg_load_p, pf_s._bg_load_p)
    np.testing.assert_array_equal(pf_b._bg_sgen_p, pf_s._bg_sgen_p)
    ws, wb = stepwise.warm_start_state(), batched.warm_start_state()
    assert sorted(ws) == sorted(wb) and (backend == "power-grid-model") == (not ws)
    for key in ws:
        np.testing.assert_allclose(wb[key], ws[key], rtol=0, atol=BATCH_VM_ATOL_PU * 180)
    # and a later step solves alike
    assert max_differences(BatchGridResult.from_results([stepwise.solve(5, p_kw[5])]),
                           batched.solve_batch(5, p_kw[5:6]))["bus_vm_pu"] <= BATCH_VM_ATOL_PU


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_steps_in_a_batch_are_unknown_as_step_by_step(backend, cigre):
    """Non-finite loads, a broken background row and a step that cannot converge."""
    n_steps = 12
    p_kw = _loads(n_steps, len(FIG1D_BUSES), seed=4)
    p_kw[3, 2] = np.nan  # a building without a number
    p_kw[7, 0] = 1e5  # 100 MW on a 0.63 MVA feeder: no power flow converges
    results, states, counts, warned = {}, {}, {}, {}
    for way in ("step", "batch"):
        gm = _model(cigre, backend, FIG1D_BUSES, n_steps, background_mode="nominal")
        bg = gm.background
        load_p = np.array(bg.load_p_mw)
        load_p[10, 0] = np.inf  # a broken background profile
        gm.background = BackgroundProfiles(load_p, bg.load_q_mvar, bg.sgen_p_mw,
                                           bg.sgen_q_mvar, bg.load_ids, bg.sgen_ids, bg.dt_h,
                                           bg.start, bg.mode)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if way == "step":
                out = BatchGridResult.from_results(
                    [gm.solve(t, p_kw[t]) for t in range(n_steps)])
            else:
                out = BatchGridResult.concatenate([gm.solve_batch(0, p_kw[:6]),
                                                   gm.solve_batch(6, p_kw[6:])])
        results[way], states[way] = out, gm.warm_start_state()
        counts[way] = (gm.powerflow.n_nonconverged, list(gm.powerflow.nonconverged_steps))
        warned[way] = _step_numbers(caught)
    step, batch = results["step"], results["batch"]
    assert np.flatnonzero(~step.converged).tolist() == [3, 7, 10]
    assert_batch_equals_steps(batch, step, backend)
    for t in (3, 7, 10):
        row = batch[t]
        assert not row.converged and math.isnan(row.losses_mw)
        assert np.isnan(row.bus_vm_pu).all() and np.isnan(row.trafo_loading_percent).all()
    assert counts["batch"] == counts["step"] == (3, [3, 7, 10])
    assert warned["batch"] == warned["step"] == [3, 7, 10]
    assert grid_kpis(batch) == pytest.approx(grid_kpis(step), nan_ok=True)
    assert grid_kpis(batch)["unknown_steps"] == 3
    assert sorted(states["batch"]) == sorted(states["step"])
    for key in states["step"]:  # pandapower: the warm start after the run is the same
        np.testing.assert_allclose(states["batch"][key], states["step"][key], rtol=0,
                                   atol=BATCH_VM_ATOL_PU * 180)


def test_pandapower_batch_resumes_from_a_saved_warm_start(cigre):
    """A batch after set_warm_start_state continues like the uninterrupted sequence."""
    p_kw = _loads(10, len(FIG1D_BUSES))
    straight = _model(cigre, "pandapower", FIG1D_BUSES, 10)
    whole = straight.solve_batch(0, p_kw)
    first = _model(cigre, "pandapower", FIG1D_BUSES, 10)
    first.solve_batch(0, p_kw[:4])
    resumed = _model(cigre, "pandapower", FIG1D_BUSES, 10)
    resumed.set_warm_start_state(first.warm_start_state())
    rest = resumed.solve_batch(4, p_kw[4:])
    for name in ARRAY_FIELDS + SCALAR_FIELDS:
        np.testing.assert_array_equal(getattr(rest, name), getattr(whole, name)[4:],
                                      err_msg=name)


def test_batch_rows_and_slices(cigre):
    gm = _model(cigre, "power-grid-model", FIG1D_BUSES, 30)
    batch = gm.solve_batch(10, _loads(8, len(FIG1D_BUSES)))
    assert len(batch) == 8 and batch.steps.tolist() == list(range(10, 18))
    part = batch[2:5]
    assert isinstance(part, BatchGridResult) and part.steps.tolist() == [12, 13, 14]
    np.testing.assert_array_equal(part.bus_vm_pu, batch.bus_vm_pu[2:5])
    assert batch[-1].step == 17
    # long-table order: (T, n) rows raveled = the per-step arrays concatenated
    np.testing.assert_array_equal(batch.line_loading_percent.ravel(),
                                  np.concatenate([r.line_loading_percent for r in batch]))


def test_solve_and_solve_batch_refuse_steps_outside_the_run(cigre):
    gm = _model(cigre, "power-grid-model", FIG1D_BUSES, 6)
    p_kw = _loads(6, len(FIG1D_BUSES))
    with pytest.raises(IndexError):
        gm.solve_batch(2, p_kw)  # steps 2..7 of 6
    with pytest.raises(IndexError):
        gm.solve(6, p_kw[0])
    with pytest.raises(IndexError):
        gm.solve(-1, p_kw[0])
    with pytest.raises(PlacementError):
        gm.solve_batch(0, p_kw[:, :3])
    with pytest.raises(PlacementError):
        gm.solve_batch(0, p_kw[0])
    assert len(gm.solve_batch(0, p_kw)) == 6 == gm.n_steps


def test_grid_feed_batches_end_at_multiples_of_every(cigre):
    """A feed started mid-run (a resume at step 6) batches exactly as one started at 0."""
    from grid_models.grid_model import GridFeed

    total, every = 11, 3
    model = _model(cigre, "power-grid-model", FIG1D_BUSES, total)
    p = _loads(total, len(FIG1D_BUSES))
    whole = GridFeed(model, "batch", every, total)
    got_whole = [r for t in range(total) for r in whole.add(t, p[t])]
    assert [t for t, _ in got_whole] == list(range(total))
    resumed = GridFeed(model, "batch", every, total)
    ready = [len(resumed.add(t, p[t])) for t in range(6, total)]
    assert ready == [0, 0, 3, 0, 2]  # steps 6, 7, 8 | 9, 10 (the last step ends a batch)
    per_step = GridFeed(model, "per_step", every, total)
    for t in range(total):
        ((step, r),) = per_step.add(t, p[t])
        assert step == t
        np.testing.assert_allclose(r.bus_vm_pu, got_whole[t][1].bus_vm_pu, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="fed after"):
        broken = GridFeed(model, "batch", every, total)
        broken.add(0, p[0])
        broken.add(2, p[2])
