"""Power-flow speed: pandapower vs power-grid-model on one feeder and the same steps.

Five ways to solve the same T steps (default 96 quarter-hours of 29 June, the feeder's
own loads and PV following SimBench's profiles), measured side by side in one run:

* ``pp_default``: ``pandapower.runpp`` with its defaults, step by step
  (``make_powerflow(net, "pandapower", tuned=False).solve``);
* ``pp_tuned``: ``runpp`` with ``init="results"`` and ``recycle`` (``tuned=True``);
* ``pgm_step``: power-grid-model, one step at a time (``PgmPowerFlow.solve``);
* ``pgm_batch``: power-grid-model, all steps in one batch (``PgmPowerFlow.solve_batch``);
* ``run_timeseries``: pandapower's own ``run_timeseries`` with ``ConstControl`` on the
  loads' P and Q and the static generators' P, and an ``OutputWriter`` that keeps bus
  voltages and line/trafo loadings (what the other four return too).

The four ``make_powerflow`` ways are timed through this package's API, i.e. including
writing the inputs and building the typed results. Each way first solves the first
steps once untimed (numba compilation, model set-up: warm-up excluded); then every way
runs ``--repeats`` times and the median is reported. Results are checked against
``pp_default`` (|dvm|, |dloading|) so that no fast way wins by being wrong.

Usage::

    python benchmarks/powerflow.py [--grid 1-LV-rural1--0-sw] [--steps 96] [--repeats 3]

The last line holds the headline figures as ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grid_models.background import BackgroundProfiles, background_profiles  # noqa: E402
from grid_models.feeders import load_feeder  # noqa: E402
from grid_models.powerflow import make_powerflow  # noqa: E402

SUMMER_DAY = 4 * 24 * 180  # first quarter-hour of 29 June 2016
WARMUP_STEPS = 4


def _source(grid: str) -> str:
    return grid if ":" in grid or grid.endswith(".json") else f"simbench:{grid}"


def _median_ms_per_step(
    run: Callable[[], object], steps: int, repeats: int
) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / steps * 1e3, result


def _stepwise(pf, bg: BackgroundProfiles) -> Callable[[], dict[str, np.ndarray]]:
    zero = np.zeros(len(pf.buses))

    def run() -> dict[str, np.ndarray]:
        vm, line, trafo = [], [], []
        for t in range(len(bg)):
            bg.apply(pf, t)
            r = pf.solve(zero, zero, step=t)
            vm.append(r.bus_vm_pu)
            line.append(r.line_loading_percent)
            trafo.append(r.trafo_loading_percent)
        return {"vm": np.array(vm), "line": np.array(line), "trafo": np.array(trafo)}

    return run


def _batch(pf, bg: BackgroundProfiles) -> Callable[[], dict[str, np.ndarray]]:
    zero = np.zeros((len(bg), len(pf.buses)))

    def run() -> dict[str, np.ndarray]:
        r = pf.solve_batch(zero, zero, background=bg)
        return {"vm": r.bus_vm_pu, "line": r.line_loading_percent, "trafo": r.trafo_loading_percent}

    return run


def _run_timeseries(net, bg: BackgroundProfiles) -> Callable[[], dict[str, np.ndarray]]:
    import pandas as pd
    from pandapower.control import ConstControl
    from pandapower.timeseries import DFData, OutputWriter, run_timeseries

    ts_net = copy.deepcopy(net)
    if "profiles" in ts_net:
        del ts_net["profiles"]
    ts_net.load["scaling"] = 1.0  # the profiles carry the scaling already
    ts_net.sgen["scaling"] = 1.0
    data = pd.DataFrame(
        np.hstack([bg.load_p_mw, bg.load_q_mvar, bg.sgen_p_mw]),
        columns=[f"load_p_{i}" for i in bg.load_ids]
        + [f"load_q_{i}" for i in bg.load_ids]
        + [f"sgen_p_{i}" for i in bg.sgen_ids],
    )
    source = DFData(data)
    for element, variable, prefix, ids in (
        ("load", "p_mw", "load_p_", bg.load_ids),
        ("load", "q_mvar", "load_q_", bg.load_ids),
        ("sgen", "p_mw", "sgen_p_", bg.sgen_ids),
    ):
        if len(ids):
            ConstControl(ts_net, element=element, variable=variable, element_index=list(ids),
                         data_source=source, profile_name=[f"{prefix}{i}" for i in ids])
    writer = OutputWriter(ts_net, time_steps=range(len(bg)), output_path=None, log_variables=[])
    for table, column in (("res_bus", "vm_pu"), ("res_line", "loading_percent"),
                          ("res_trafo", "loading_percent")):
        writer.log_variable(table, column)

    def run() -> dict[str, np.ndarray]:
        run_timeseries(ts_net, time_steps=range(len(bg)), verbose=False)
        out = writer.output
        return {
            "vm": out["res_bus.vm_pu"].to_numpy(),
            "line": out["res_line.loading_percent"].to_numpy(),
            "trafo": out["res_trafo.loading_percent"].to_numpy(),
        }

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="1-LV-rural1--0-sw",
                        help="SimBench code (or any grid_models feeder source)")
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--start", type=int, default=SUMMER_DAY,
                        help="first quarter-hour of the SimBench year")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=-1,
                        help="power-grid-model batch threading (-1 sequential, 0 all cores)")
    args = parser.parse_args(argv)
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    net = load_feeder(_source(args.grid))
    mode = "simbench" if "profiles" in net else "nominal"
    bg = background_profiles(net, args.steps, start=args.start, mode=mode)
    warm = bg.window(0, min(WARMUP_STEPS, len(bg)))

    t0 = time.perf_counter()
    pgm = make_powerflow(net, "power-grid-model", threads=args.threads)
    setup_pgm_ms = (time.perf_counter() - t0) * 1e3
    ways: dict[str, tuple[Callable[[BackgroundProfiles], Callable[[], object]], str]] = {
        "pp_default": (lambda b: _stepwise(make_powerflow(net, "pandapower", tuned=False), b),
                       "pandapower runpp, defaults, step by step"),
        "pp_tuned": (lambda b: _stepwise(make_powerflow(net, "pandapower", tuned=True), b),
                     "pandapower runpp, init=results + recycle bus_pq"),
        "pgm_step": (lambda b: _stepwise(pgm, b), "power-grid-model, one step at a time"),
        "pgm_batch": (lambda b: _batch(pgm, b), "power-grid-model, one batch of all steps"),
        "run_timeseries": (lambda b: _run_timeseries(net, b),
                           "pandapower run_timeseries + ConstControl + OutputWriter"),
    }
    ms: dict[str, float] = {}
    results: dict[str, dict[str, np.ndarray]] = {}
    for name, (make, _) in ways.items():
        make(warm)()  # warm-up, not timed
        ms[name], results[name] = _median_ms_per_step(make(bg), len(bg), args.repeats)

    ref = results["pp_default"]
    print(f"grid {args.grid}: {len(net.bus)} buses, {len(net.line)} lines, {len(net.trafo)} "
          f"trafos, {len(net.load)} loads, {len(net.sgen)} sgens; {len(bg)} steps of 15 min "
          f"from quarter-hour {args.start} (background: {mode})")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"median of {args.repeats} runs; warm-up ({len(warm)} steps per way) excluded; "
          f"power-grid-model set-up (convert + model) {setup_pgm_ms:.1f} ms, not counted")
    print(f"{'way':<16} {'ms/step':>10} {'vs run_ts':>10} {'max|dvm| pu':>12} "
          f"{'max|dload| %':>13}  description")
    for name, (_, description) in ways.items():
        r = results[name]
        dvm = float(np.nanmax(np.abs(r["vm"] - ref["vm"])))
        dload = float(max(np.nanmax(np.abs(r["line"] - ref["line"])),
                          np.nanmax(np.abs(r["trafo"] - ref["trafo"]))))
        print(f"{name:<16} {ms[name]:>10.4f} {ms['run_timeseries'] / ms[name]:>9.1f}x "
              f"{dvm:>12.2e} {dload:>13.2e}  {description}")
    headline = {
        "grid": args.grid,
        "steps": len(bg),
        "ms_pp_default": f"{ms['pp_default']:.3f}",
        "ms_pp_tuned": f"{ms['pp_tuned']:.3f}",
        "ms_pgm_step": f"{ms['pgm_step']:.4f}",
        "ms_pgm_batch": f"{ms['pgm_batch']:.4f}",
        "ms_run_timeseries": f"{ms['run_timeseries']:.3f}",
        "speedup_pgm_batch_vs_run_timeseries": f"{ms['run_timeseries'] / ms['pgm_batch']:.1f}",
        "speedup_pgm_step_vs_run_timeseries": f"{ms['run_timeseries'] / ms['pgm_step']:.1f}",
        "speedup_pgm_batch_vs_pp_default": f"{ms['pp_default'] / ms['pgm_batch']:.1f}",
        "speedup_pp_tuned_vs_pp_default": f"{ms['pp_default'] / ms['pp_tuned']:.2f}",
        "pgm_threads": args.threads,
    }
    print(" ".join(f"{k}={v}" for k, v in headline.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
