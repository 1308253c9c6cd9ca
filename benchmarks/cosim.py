"""Co-simulation speed, measured side by side in one run.

    python benchmarks/cosim.py [--steps 3000] [--ts-steps 500] [--mv-steps 168]

1. ``paper_fig1d`` through mosaik (power-grid-model backend), the whole run
   (buildings, policies, consensus, an AC power flow and the results stream), with
   the power flows batched (the default when nothing reads the grid within the run)
   and solved per step (``*_per_step``).
2. The same scenario and physics through the plain-loop engine (no mosaik):
   ``overhead_ratio`` = co-simulation wall time / plain-loop wall time.
3. pandapower's ``run_timeseries`` (``ConstControl`` on the feeder's loads and an
   ``OutputWriter``) over the same feeder and the same bus load series as the
   co-simulation recorded, for ``--ts-steps`` steps (it is ~15 ms a step, so a
   shorter stretch is timed): ``speedup_vs_run_timeseries`` = its time per step /
   the co-simulation's time per step.
4. ``mv_rural_1000`` (1,000 buildings) through mosaik: ``steps_per_s_1000``.

Wall times exclude building the scenario (loading data, feeder, policies) and
include writing the run directory. Plots are switched off. The last line holds
the headline figures as key=value pairs.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the package it measures; keep its folder off the import
# path so that ``import cosim`` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cosim.engine.run import execute, prepare_scenario  # noqa: E402
from cosim.results.readers import recorded_bus_loads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NO_PLOTS = [("output.plots", False)]


def timed_run(scenario: str, steps: int, out: Path, engine: str = "mosaik",
              grid_solve: str = "batch") -> float:
    sc, built = prepare_scenario(ROOT / "scenarios" / scenario, NO_PLOTS, steps=steps)
    t0 = time.perf_counter()
    execute(sc, built, out, progress=False, engine=engine, force=True, grid_solve=grid_solve)
    return time.perf_counter() - t0


def run_timeseries_seconds(run_dir: Path, steps: int) -> float:
    """pandapower run_timeseries over the run's feeder with its recorded bus loads."""
    import pandapower as pp
    from pandapower.control import ConstControl
    from pandapower.timeseries import DFData, OutputWriter, run_timeseries

    net = pp.from_json(str(run_dir / "feeder.json"))
    buses = pd.read_parquet(run_dir / "buses.parquet")
    buses = buses[buses.time < steps]
    p, q = recorded_bus_loads(run_dir, net.ext_grid.bus)
    p, q = p.iloc[:steps], q.iloc[:steps]
    ts_net = copy.deepcopy(net)
    ts_net.load["in_service"] = False
    ts_net.sgen["in_service"] = False
    idx = [pp.create_load(ts_net, int(b), p_mw=0.0, q_mvar=0.0) for b in p.columns]
    data = pd.DataFrame(np.hstack([p.to_numpy(), q.to_numpy()]),
                        columns=[f"p_{i}" for i in idx] + [f"q_{i}" for i in idx])
    source = DFData(data)
    ConstControl(ts_net, "load", "p_mw", element_index=idx, data_source=source,
                 profile_name=[f"p_{i}" for i in idx])
    ConstControl(ts_net, "load", "q_mvar", element_index=idx, data_source=source,
                 profile_name=[f"q_{i}" for i in idx])
    writer = OutputWriter(ts_net, time_steps=range(steps), output_path=None, log_variables=[])
    for table, column in (("res_bus", "vm_pu"), ("res_line", "loading_percent"),
                          ("res_trafo", "loading_percent")):
        writer.log_variable(table, column)
    pp.runpp(ts_net)  # warm-up (numba compilation) outside the timing
    t0 = time.perf_counter()
    run_timeseries(ts_net, time_steps=range(steps), verbose=False)
    wall = time.perf_counter() - t0
    vm = writer.output["res_bus.vm_pu"].to_numpy()
    ref = buses.pivot(index="time", columns="bus", values="vm_pu").to_numpy()
    worst = float(np.nanmax(np.abs(vm[:, :ref.shape[1]] - ref)))
    print(f"  run_timeseries check: max |dvm| vs the co-simulation = {worst:.2e} pu")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--ts-steps", type=int, default=500)
    parser.add_argument("--mv-steps", type=int, default=168)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up: imports, numba, first mosaik world (not timed)
        timed_run("paper_fig1d.yaml", 24, tmp / "warm")
        cosim_s = timed_run("paper_fig1d.yaml", args.steps, tmp / "fig1d")
        plain_s = timed_run("paper_fig1d.yaml", args.steps, tmp / "plain", engine="plain")
        cosim_ps = timed_run("paper_fig1d.yaml", args.steps, tmp / "fig1d_ps",
                             grid_solve="per_step")
        plain_ps = timed_run("paper_fig1d.yaml", args.steps, tmp / "plain_ps", engine="plain",
                             grid_solve="per_step")
        ts_steps = min(args.ts_steps, args.steps)
        ts_s = run_timeseries_seconds(tmp / "fig1d", ts_steps)
        mv_s = timed_run("mv_rural_1000.yaml", args.mv_steps, tmp / "mv")
        mv_plain_s = timed_run("mv_rural_1000.yaml", args.mv_steps, tmp / "mv_plain",
                               engine="plain")
    rows = [
        ("paper_fig1d, mosaik, batched power flow", args.steps, cosim_s),
        ("paper_fig1d, plain loop, batched", args.steps, plain_s),
        ("paper_fig1d, mosaik, power flow per step", args.steps, cosim_ps),
        ("paper_fig1d, plain loop, per step", args.steps, plain_ps),
        ("pandapower run_timeseries, same feeder+loads", ts_steps, ts_s),
        ("mv_rural_1000, mosaik (1,000 buildings)", args.mv_steps, mv_s),
        ("mv_rural_1000, plain loop", args.mv_steps, mv_plain_s),
    ]
    print(f"{'what':<46} {'steps':>6} {'wall [s]':>9} {'ms/step':>9} {'steps/s':>9}")
    for what, steps, wall in rows:
        print(f"{what:<46} {steps:>6} {wall:>9.2f} {wall / steps * 1e3:>9.3f} "
              f"{steps / wall:>9.1f}")
    cosim_ms = cosim_s / args.steps * 1e3
    figures = {
        "steps_per_s_fig1d": args.steps / cosim_s,
        "steps_per_s_plain": args.steps / plain_s,
        "steps_per_s_run_timeseries": ts_steps / ts_s,
        "overhead_ratio": cosim_s / plain_s,
        "speedup_vs_run_timeseries": (ts_s / ts_steps * 1e3) / cosim_ms,
        "steps_per_s_fig1d_per_step": args.steps / cosim_ps,
        "overhead_ratio_per_step": cosim_ps / plain_ps,
        "speedup_vs_run_timeseries_per_step": (ts_s / ts_steps) / (cosim_ps / args.steps),
        "steps_per_s_1000": args.mv_steps / mv_s,
        "overhead_ratio_1000": mv_s / mv_plain_s,
    }
    print(" ".join(f"{k}={v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
