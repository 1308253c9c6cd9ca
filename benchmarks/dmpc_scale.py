"""DMPC at fleet size: ms/step and cost against the central LP, 1,000 distinct buildings.

    python benchmarks/dmpc_scale.py [--n 1000] [--steps 6] [--solvers persistent,linprog]
                                    [--threads 1,2] [--fraction 0.8] [--seed 0]

The fleet: ``--n`` buildings cycling the CityLearn 2022 profiles, each with its own
demand scale (uniform 0.5-1.5) and its own shift of its demand and solar rows (0-23 h,
both drawn from ``--seed``), so no two local problems are alike and DMPC's ``dedupe``
saves nothing. The coupling row is the district limit ``--fraction`` x the fleet's
peak over the run. Every solver path (``DmpcConfig.local_solver``) and thread count
(``--threads``) runs the same closed loop (:func:`agents.fleet.runner.run_plain`) of
``--steps`` steps in this process, side by side, and reports

- ``ms/step``: the closed loop's wall time per step, and inside it the local problems'
  wall time (``solve_s``), the coordinator's master problem (``master_s``) and the rest
  (the fleet model, negotiation bookkeeping);
- ``iter``: the mean negotiation iterations per step, ``iter>0`` the same after the
  first step (from the second step on the master starts with the last step's plans),
  and ``met`` the share of steps whose stopping rule was met;
- ``cost vs central``: at step 0 (empty batteries and backlog), the negotiated plan's
  energy cost over the horizon over that of the central LP (the oracle,
  :func:`agents.control.oracle.solve_oracle`, ``limit="per_step"``) over the same horizon
  and fleet, both with no value on stored energy and a terminal backlog cost high enough
  that every plan ends with the backlog empty, as the oracle's does.

Timings depend on the machine and its load; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402

from agents.control.coupling import (  # noqa: E402
    CouplingRows,
    Forecast,
    history_steps,
    wrapped_rows,
)
from agents.control.dmpc import DmpcConfig, DmpcController  # noqa: E402
from agents.control.oracle import solve_oracle  # noqa: E402
from agents.fleet.building import FleetParams  # noqa: E402
from agents.fleet.data import load_citylearn  # noqa: E402
from agents.fleet.runner import FleetSetup, run_plain  # noqa: E402

START, HORIZON = 2000, 24


def distinct_fleet(n: int, steps: int, seed: int) -> tuple[FleetSetup, Forecast]:
    """``n`` buildings with distinct demand (scaled and shifted per building) and PV."""
    data = load_citylearn()
    rng = np.random.default_rng(seed)
    profiles = [data.names[i % len(data.names)] for i in range(n)]
    scale = rng.uniform(0.5, 1.5, n)
    shift = rng.integers(0, 24, n)
    params = FleetParams.from_buildings([data.building(p) for p in profiles],
                                        demand_scale=scale, backlog_cap_kwh=24.0)
    history = history_steps(HORIZON)
    span = history + steps + HORIZON
    demand = np.empty((span, n))
    solar = np.empty((span, n))
    for i, p in enumerate(profiles):
        rows = wrapped_rows(START - history + int(shift[i]), span, data.n_steps)
        b = data.building(p)
        demand[:, i] = b.demand_kwh[rows]
        solar[:, i] = b.solar_w_per_kw[rows]
    price = np.asarray(data.price_per_kwh)[wrapped_rows(START - history, span, data.n_steps)]
    forecast = Forecast(params, demand, solar, price, history)
    run = slice(history, history + steps)
    setup = FleetSetup([f"b{i}" for i in range(n)], params, np.asarray(-1), demand[run],
                       solar[run], price[run], start_hour=START)
    return setup, forecast


def main() -> None:
    """Time each solver path and thread count on the same fleet and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--solvers", default="persistent")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--master-groups", default="none",
                    help="comma-separated DmpcConfig.master_groups (none: one per building)")
    ap.add_argument("--fraction", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    span = max(args.steps, HORIZON)
    setup, forecast = distinct_fleet(args.n, span, args.seed)
    limit = args.fraction * float(setup.demand_kwh()[:HORIZON].sum(axis=1).max())
    rows = CouplingRows.district(args.n, limit, span)
    oracle = solve_oracle(setup.params, setup.base_demand_kwh[:HORIZON],
                          setup.solar_w_per_kw[:HORIZON], setup.price_per_kwh[:HORIZON],
                          limit, limit="per_step").cost
    print(f"{args.n} buildings, limit {limit:.1f} kWh/step, central LP over the first "
          f"{HORIZON} h: {oracle:.2f} $")
    print(f"{'solver':<11} {'threads':>7} {'groups':>6} {'ms/step':>8} {'local ms':>9} "
          f"{'master ms':>10} {'rest ms':>8} {'iter':>5} {'iter>0':>6} {'met':>5} "
          f"{'cost vs central':>16}")
    figures = []
    cases = [(solver, int(t), None if g == "none" else int(g))
             for solver in args.solvers.split(",") for t in args.threads.split(",")
             for g in args.master_groups.split(",")]
    for solver, threads, groups in cases:
        config = DmpcConfig(local_solver=solver, threads=threads, master_groups=groups)
        ctl = DmpcController(setup.params, forecast, rows, config, span)
        t0 = time.perf_counter()
        run_plain(setup, ctl, None, steps=args.steps)
        wall = time.perf_counter() - t0
        log = ctl.decisions()["dmpc_steps"]
        probe = DmpcController(setup.params, forecast, rows,
                               DmpcConfig(local_solver=solver, threads=threads,
                                          master_groups=groups, soc_value=0.0,
                                          backlog_value=10.0, iterations=60), span)
        step = probe.plan(0, np.zeros(args.n), np.zeros(args.n))
        ratio = step.cost_planned / oracle
        per = 1e3 * wall / args.steps
        local = 1e3 * ctl.timing["solve_s"] / args.steps
        master = 1e3 * ctl.timing["master_s"] / args.steps
        later = log.iterations[1:].mean() if len(log) > 1 else float("nan")
        print(f"{solver:<11} {threads:>7} {groups or 'all':>6} {per:>8.1f} {local:>9.1f} "
              f"{master:>10.1f} {per - local - master:>8.1f} "
              f"{log.iterations.mean():>5.1f} {later:>6.1f} "
              f"{log.converged.mean():>5.0%} {ratio:>16.4f}", flush=True)
        case = f"{solver}_t{threads}_g{groups or 'all'}"
        figures += [f"{case}_ms_per_step={per:.1f}",
                    f"{case}_cost_vs_central={ratio:.4f}"]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
