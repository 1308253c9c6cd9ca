"""The mosaik co-simulation: equals the plain loop, its grid results are a real AC
power flow (recomputed with pandapower from the run's own files), it is
deterministic, and a sharded ("cmd") run equals the in-process run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from agents.runner import run_plain
from cosim.results import TABLES, read_status, recorded_bus_loads
from cosim.run import execute, prepare_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "paper_fig1d.yaml"
STEPS = 48
BUILDING_ATOL = 1e-9  # issue: mosaik vs plain loop, every building column
VM_ATOL_PU = 1e-4  # power-grid-model (in the run) vs pandapower (recomputed)
LOADING_ATOL_PERCENT = 0.1
QUICK = [("output.plots", False)]
GRID_BATCH_ATOL = 1e-9  # batched vs per-step power flow: the solver's tolerance, any unit

pytestmark = pytest.mark.cosim


def _run(tmp: Path, name: str, overrides=(), engine: str = "mosaik") -> Path:
    sc, built = prepare_scenario(SCENARIO, [*QUICK, *overrides], steps=STEPS)
    return execute(sc, built, tmp / name, progress=False, engine=engine).run_dir


@pytest.fixture(scope="module")
def mosaik_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("cosim"), "mosaik")


def test_run_directory_is_complete(mosaik_run: Path):
    for name in ("scenario.yaml", "feeder.json", "comm_graph.json", "kpis.json",
                 *(f"{t}.parquet" for t in TABLES)):
        assert (mosaik_run / name).is_file(), name
    assert read_status(mosaik_run)["state"] == "complete"
    assert not (mosaik_run / ".parts").exists()
    kpis = json.loads((mosaik_run / "kpis.json").read_text())
    assert kpis["limit_kwh"] > 0 and kpis["fleet"]["steps"] == STEPS
    assert kpis["grid"]["nonconverged_steps"] == 0


def test_mosaik_equals_plain_loop_runner(mosaik_run: Path):
    sc, built = prepare_scenario(SCENARIO, QUICK, steps=STEPS)
    reference = run_plain(built.setup, built.controller, built.duals)
    got = pd.read_parquet(mosaik_run / "buildings.parquet")
    assert list(got.columns) == list(reference.columns)
    assert (got["building"].to_numpy() == reference["building"].to_numpy()).all()
    for col in reference.columns.drop("building"):
        np.testing.assert_allclose(got[col].to_numpy(float), reference[col].to_numpy(float),
                                   rtol=0, atol=BUILDING_ATOL, err_msg=col)
    assert (reference["lambda"] > 0).any(), "the duals must actually move in this test"


def test_grid_results_equal_pandapower_recomputed_from_files(mosaik_run: Path):
    net = pp.from_json(str(mosaik_run / "feeder.json"))
    buses = pd.read_parquet(mosaik_run / "buses.parquet")
    lines = pd.read_parquet(mosaik_run / "lines.parquet")
    p_mw, q_mvar = recorded_bus_loads(mosaik_run, net.ext_grid.bus)
    net.load["in_service"] = False
    net.sgen["in_service"] = False
    for t in (0, STEPS // 2, STEPS - 1):
        step = buses[buses.time == t].set_index("bus")
        trial = copy.deepcopy(net)
        for bus in p_mw.columns:
            pp.create_load(trial, int(bus), p_mw=p_mw.at[t, bus], q_mvar=q_mvar.at[t, bus])
        pp.runpp(trial)
        np.testing.assert_allclose(trial.res_bus.loc[step.index, "vm_pu"].to_numpy(),
                                   step["vm_pu"].to_numpy(), atol=VM_ATOL_PU, rtol=0)
        ln = lines[lines.time == t].set_index("line")
        np.testing.assert_allclose(trial.res_line.loc[ln.index, "loading_percent"].to_numpy(),
                                   ln["loading_percent"].to_numpy(), atol=LOADING_ATOL_PERCENT,
                                   rtol=0)


def _same_files(a: Path, b: Path) -> None:
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{t}.parquet"),
                                      pd.read_parquet(b / f"{t}.parquet"), check_exact=True)
    for name in ("scenario.yaml", "comm_graph.json", "feeder.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ka, kb = (json.loads((d / "kpis.json").read_text()) for d in (a, b))
    for k in (ka, kb):
        k.pop("wall_s", None)
        k.pop("steps_per_s", None)
    assert ka == kb


def test_same_seed_identical_files(mosaik_run: Path, tmp_path: Path):
    _same_files(mosaik_run, _run(tmp_path, "again"))


@pytest.mark.slow
def test_sharded_cmd_run_equals_in_process(mosaik_run: Path, tmp_path: Path):
    sharded = _run(tmp_path, "sharded", [("sharding.shards", 3), ("sharding.mode", "cmd")])
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(mosaik_run / f"{t}.parquet"),
                                      pd.read_parquet(sharded / f"{t}.parquet"),
                                      check_exact=True)


@pytest.mark.slow
def test_cmd_shards_run_the_feeder_topology(tmp_path: Path):
    """A shard builds without the feeder; a 'feeder' communication graph must not stop it
    (the duals, which need the graph, run in the main process)."""
    feeder = [("communication.topology", "feeder")]
    whole = _run(tmp_path, "whole", feeder)
    sharded = _run(tmp_path, "sharded", [*feeder, ("sharding.shards", 2),
                                         ("sharding.mode", "cmd")])
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(whole / f"{t}.parquet"),
                                      pd.read_parquet(sharded / f"{t}.parquet"),
                                      check_exact=True)


def test_batched_grid_equals_per_step(mosaik_run: Path, tmp_path: Path):
    """The default run batches its power flows (nothing reads the grid within the run);
    a run whose world is extended solves per step. Same numbers (power-grid-model's batch
    and single calculations agree here to the last bit; the tolerance is the solver's)."""
    sc, built = prepare_scenario(SCENARIO, list(QUICK), steps=STEPS)
    per_step = execute(sc, built, tmp_path / "per_step", progress=False,
                       extend=lambda handles: None).run_dir
    assert read_status(mosaik_run)["grid_solve"] == "batch"
    assert read_status(per_step)["grid_solve"] == "per_step"
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(mosaik_run / f"{t}.parquet"),
                                      pd.read_parquet(per_step / f"{t}.parquet"),
                                      check_exact=False, rtol=0, atol=GRID_BATCH_ATOL)


def test_plain_engine_writes_the_same_run(mosaik_run: Path, tmp_path: Path):
    plain = _run(tmp_path, "plain", engine="plain")
    for t in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(mosaik_run / f"{t}.parquet"),
                                      pd.read_parquet(plain / f"{t}.parquet"), check_exact=True)


@pytest.mark.parametrize("overrides", [
    [("duals.mode", "independent")],
    [("controller.kind", "none")],
    [("controller.kind", "rule")],
    [("duals.mode", "averaging")],
    [("duals.mode", "centralized")],
])
def test_variants_run(tmp_path: Path, overrides):
    run = _run(tmp_path, "v", overrides)
    b = pd.read_parquet(run / "buildings.parquet")
    lhs = b.demand_kwh.to_numpy() + b.groupby("building").backlog_kwh.shift(1, fill_value=0.0)
    rhs = b.grid_kwh + b.battery_kwh + b.backlog_kwh + b.dropped_kwh
    np.testing.assert_allclose(lhs, rhs, atol=1e-9)
    if overrides[0] == ("controller.kind", "none"):
        np.testing.assert_allclose(b.grid_kwh, b.demand_kwh, atol=1e-12)
