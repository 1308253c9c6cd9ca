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

Per step or batched, as a run solves it (``--scenarios``)::

    python benchmarks/powerflow.py --scenarios scenarios/paper_fig1d.yaml \
        scenarios/mv_rural_1000.yaml [--scenario-steps 500] [--repeats 3]

builds each scenario's :class:`grid_models.grid_model.GridModel` exactly as ``cosim run``
does (``cosim.scenario.grid.build_grid``: feeder, placement, backend, background on the data's
calendar, power factor, fleet scale; ``time.steps`` set to ``--scenario-steps``) and
solves the same building loads (seeded, -1..4 kW per building and step) four ways:
``GridModel.solve`` step by step (``step``), ``GridModel.solve_batch`` over all steps
(``batch``) and in windows of the scenario's ``output.flush_every`` steps
(``batch_flush``, what a run that batches per flush does), and the pandapower backend
step by step (``pp_step``, warm-started, the reference). Times include the injections,
the background and the typed results. The last line holds ``key=value`` pairs.
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
from grid_models.powerflow.interface import make_powerflow  # noqa: E402

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


def _scenario_grid(path: str, steps: int, backend: str | None = None):
    """The scenario's GridModel, built as cosim builds it (no data, policies or graph)."""
    from cosim.scenario.build import BuildingRow
    from cosim.scenario.grid import build_grid
    from cosim.scenario.loader import load_scenario

    overrides: list[tuple[str, object]] = [("time.steps", steps)]
    if backend is not None:
        overrides.append(("feeder.backend", backend))
    sc = load_scenario(path, overrides)
    b = sc.buildings
    if b.explicit is not None:
        rows = [BuildingRow(f"buildings.explicit.{i}", s.id, None, 1.0, None, None, None, s.bus)
                for i, s in enumerate(b.explicit)]
    else:
        rows = [BuildingRow("buildings.generate", f"B{i}", None, 1.0, None, None, None,
                            b.generate.buses[i] if b.generate.buses else None)
                for i in range(b.generate.count)]
    return sc, build_grid(sc, rows, path)


def _time_scenario(path: str, steps: int, repeats: int) -> tuple:
    """ms per step of the four ways for one scenario, and their differences to ``step``."""
    from grid_models.powerflow.interface import BatchGridResult

    sc, gm = _scenario_grid(path, steps)
    _, gm_pp = _scenario_grid(path, steps, backend="pandapower")
    flush = sc.output.flush_every
    p_kw = np.random.default_rng(0).uniform(-1.0, 4.0, (steps, gm.n_buildings))

    def step(model=gm) -> BatchGridResult:
        return BatchGridResult.from_results([model.solve(t, p_kw[t]) for t in range(steps)])

    def batch() -> BatchGridResult:
        return gm.solve_batch(0, p_kw)

    def batch_flush() -> BatchGridResult:
        return BatchGridResult.concatenate([
            gm.solve_batch(t, p_kw[t:t + flush]) for t in range(0, steps, flush)])

    def pp_step() -> BatchGridResult:
        gm_pp.set_warm_start_state({})  # every repeat from the same cold start
        return step(gm_pp)

    ways = {"step": step, "batch": batch, "batch_flush": batch_flush, "pp_step": pp_step}
    ms, out = {}, {}
    for way, run in ways.items():
        run()  # warm-up (numba, model set-up), not timed
        ms[way], out[way] = _median_ms_per_step(run, steps, repeats)
    ref = out["step"]
    dvm = {w: float(np.nanmax(np.abs(out[w].bus_vm_pu - ref.bus_vm_pu))) for w in ways}
    dload = {w: float(np.nanmax(np.abs(out[w].line_loading_percent
                                       - ref.line_loading_percent))) for w in ways}
    return (Path(path).stem, sc.feeder.source, sc.feeder.backend, gm.n_buildings,
            len(gm.bus_ids), flush, ms, dvm, dload)


def scenario_main(args: argparse.Namespace) -> int:
    """Per-step vs batched GridModel solves of each scenario's feeder (see the docstring)."""
    steps, repeats = args.scenario_steps, args.repeats
    rows = [_time_scenario(path, steps, repeats) for path in args.scenarios]
    headline: dict[str, object] = {"steps": steps, "repeats": repeats}
    print(f"GridModel per step vs batched, {steps} hourly steps from each scenario's start, "
          f"median of {repeats} runs, warm-up excluded; machine: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'scenario':<16} {'feeder':<28} {'N':>5} {'buses':>5} {'way':<12} {'ms/step':>9} "
          f"{'vs step':>8} {'max|dvm| pu':>12} {'max|dload| %':>13}")
    for name, source, backend, n, n_bus, flush, ms, dvm, dload in rows:
        labels = {"step": f"{backend} GridModel.solve per step",
                  "batch": f"{backend} solve_batch, all {steps} steps",
                  "batch_flush": f"{backend} solve_batch per flush_every={flush}",
                  "pp_step": "pandapower GridModel.solve per step (warm start)"}
        for way in ("step", "batch", "batch_flush", "pp_step"):
            print(f"{name:<16} {source:<28} {n:>5} {n_bus:>5} {way:<12} {ms[way]:>9.4f} "
                  f"{ms['step'] / ms[way]:>7.1f}x {dvm[way]:>12.1e} {dload[way]:>13.1e}  "
                  f"{labels[way]}")
        key = name.replace("-", "_")
        headline.update({f"{key}_ms_step": f"{ms['step']:.4f}",
                         f"{key}_ms_batch": f"{ms['batch']:.4f}",
                         f"{key}_ms_batch_flush": f"{ms['batch_flush']:.4f}",
                         f"{key}_ms_pp_step": f"{ms['pp_step']:.3f}",
                         f"{key}_batch_speedup": f"{ms['step'] / ms['batch']:.1f}",
                         f"{key}_batch_flush_speedup": f"{ms['step'] / ms['batch_flush']:.1f}",
                         f"{key}_max_dvm_batch_vs_step": f"{dvm['batch']:.1e}"})
    print(" ".join(f"{k}={v}" for k, v in headline.items()))
    return 0


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
    parser.add_argument("--scenarios", nargs="+", metavar="YAML",
                        help="instead: GridModel per step vs batched for these scenarios")
    parser.add_argument("--scenario-steps", type=int, default=500,
                        help="steps per scenario with --scenarios")
    args = parser.parse_args(argv)
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if args.scenarios:
        return scenario_main(args)

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
