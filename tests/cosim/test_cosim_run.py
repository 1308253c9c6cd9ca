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

from agents.fleet.calendar import row_datetimes
from agents.fleet.runner import run_plain
from cosim.engine.run import execute, prepare_scenario
from cosim.results.parts import TABLES
from cosim.results.readers import read_status, recorded_bus_loads
from cosim.scenario.build import controller_for

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "paper_fig1d.yaml"
STEPS = 48
BUILDING_ATOL = 1e-9  # issue: mosaik vs plain loop, every building column
VM_ATOL_PU = 1e-4  # power-grid-model (in the run) vs pandapower (recomputed)
LOADING_ATOL_PERCENT = 0.1
QUICK = [("output.plots", False)]
GRID_BATCH_ATOL = 1e-9  # batched vs per-step power flow: the solver's tolerance, any unit
ORACLE_REPLAY_ATOL_KWH = 1e-6  # the LP's plan vs its replay (HiGHS: 1e-7 per row)

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
    # the writer adds the calendar beside the step (agents.fleet.calendar; the runner has none)
    np.testing.assert_array_equal(got.pop("datetime").to_numpy().astype("datetime64[s]"),
                                  row_datetimes(sc.time.start, got["time"].to_numpy()))
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


def _table(run: Path, n: int) -> dict[str, np.ndarray]:
    """The buildings table as (steps, buildings) arrays, one per column."""
    b = pd.read_parquet(run / "buildings.parquet")
    return {c: b[c].to_numpy(float).reshape(-1, n) for c in
            ("demand_kwh", "backlog_kwh", "grid_kwh", "battery_kwh", "soc_kwh", "dropped_kwh",
             "price")}


def test_heuristic_run_follows_its_rule(tmp_path: Path):
    """kind heuristic through the engine: every recorded step is the heuristic's rule
    applied to the recorded state (battery first; while price >= threshold, buy only
    what would push the backlog above margin x cap)."""
    overrides = [("controller.kind", "heuristic"), ("controller.heuristic_price_threshold", 0.45),
                 ("controller.heuristic_backlog_margin", 0.1)]
    sc, built = prepare_scenario(SCENARIO, [*QUICK, *overrides], steps=STEPS)
    run = execute(sc, built, tmp_path / "heuristic", progress=False, engine="plain").run_dir
    p, n = built.setup.params, built.n
    col = _table(run, n)
    backlog0 = np.vstack([np.zeros((1, n)), col["backlog_kwh"][:-1]])
    soc0 = np.vstack([p.capacity_kwh * sc.buildings.initial_soc_fraction,
                      col["soc_kwh"][:-1]])
    to_serve = col["demand_kwh"] + backlog0
    battery = np.minimum(to_serve, np.minimum(soc0 * p.eta_discharge, p.power_kw))
    rest = to_serve - battery
    expensive = col["price"] >= 0.45
    room = 0.1 * p.backlog_cap_kwh
    grid = np.where(expensive, np.maximum(rest - room, 0.0), rest)
    np.testing.assert_allclose(col["battery_kwh"], battery, atol=BUILDING_ATOL)
    np.testing.assert_allclose(col["grid_kwh"], grid, atol=BUILDING_ATOL)
    assert (col["dropped_kwh"] == 0).all()
    assert expensive.any() and (expensive & (grid > 0)).any() and (battery > 0).any()
    # a shard's controller acts as the fleet's does on its buildings
    index = np.array([1, 5])
    shard = controller_for(built, index)
    assert shard.name == "heuristic" and shard.params.n == 2
    np.testing.assert_array_equal(shard.backlog_room_kwh, built.controller.backlog_room_kwh[index])


def test_per_step_oracle_run_follows_its_plan(tmp_path: Path):
    """kind oracle with oracle_limit per_step through the engine: the recorded grid
    energies are the plan's, and no step's district grid energy exceeds c."""
    # the scenario's 27 % of the peak cannot be met in every one of these 48 steps
    overrides = [("controller.kind", "oracle"), ("controller.oracle_limit", "per_step"),
                 ("constraint.fraction_of_peak", 0.4)]
    sc, built = prepare_scenario(SCENARIO, [*QUICK, *overrides], steps=STEPS)
    run = execute(sc, built, tmp_path / "per_step", progress=False, engine="plain").run_dir
    plan = built.oracle
    assert plan.limit == "per_step"
    assert plan.peak_district_grid_kwh == pytest.approx(built.limit_kwh, rel=1e-6)  # it binds
    col = _table(run, built.n)
    np.testing.assert_allclose(col["grid_kwh"], plan.grid_kwh, atol=ORACLE_REPLAY_ATOL_KWH)
    district = col["grid_kwh"].sum(axis=1)
    assert (district <= built.limit_kwh + ORACLE_REPLAY_ATOL_KWH * built.n).all()
    kpis = json.loads((run / "kpis.json").read_text())
    assert kpis["oracle"]["limit"] == "per_step"
    assert kpis["fleet"]["total_cost"] == pytest.approx(plan.cost, rel=1e-6)
    assert "oracle_limit: per_step" in (run / "scenario.yaml").read_text()
