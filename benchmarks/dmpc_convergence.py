"""Does DMPC's negotiation converge? The share of steps that meet its stopping rule.

    python benchmarks/dmpc_convergence.py [--scenario paper_fig1d] [--fraction 0.35]
                                          [--steps 720] [--iterations 30]

Runs ``controller.kind: dmpc`` on the scenario with ``constraint.fraction_of_peak`` set
(the plain engine, the same fleet model, power flow and run directory as ``cosim run
--engine plain``) and reads its ``decisions/dmpc_steps.csv`` and ``kpis.json``:

- ``met``: the share of steps whose stopping rule was met (the coordinator: the master's
  optimum within ``dmpc_tolerance`` of the best dual bound), and the iterations per step;
- where the rule was not met: how many of those steps, and the largest and median
  relative excess of the applied plan over the coupling rows;
- the run's energy cost, the steps whose district grid energy exceeded c, the peak
  district import and the backlog at the end (``kpis.json``).

The figures depend on nothing but the scenario and the code (no timing is compared).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import pandas as pd  # noqa: E402

from cosim.engine.run import execute, prepare_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the scenario with DMPC and print its convergence figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="paper_fig1d")
    ap.add_argument("--fraction", type=float, default=0.35)
    ap.add_argument("--steps", type=int, default=720)
    ap.add_argument("--iterations", type=int, default=None,
                    help="controller.dmpc_iterations (default: the scenario's)")
    args = ap.parse_args()
    overrides = [("output.plots", False), ("controller.kind", "dmpc"),
                 ("constraint.fraction_of_peak", args.fraction)]
    if args.iterations is not None:
        overrides.append(("controller.dmpc_iterations", args.iterations))
    sc, built = prepare_scenario(ROOT / "scenarios" / f"{args.scenario}.yaml", overrides,
                                 steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        execute(sc, built, out, progress=False, engine="plain", force=True)
        wall = time.perf_counter() - t0
        log = pd.read_csv(out / "decisions" / "dmpc_steps.csv")
        kpis = json.loads((out / "kpis.json").read_text())
    fleet = kpis["fleet"]
    missed = log[~log.converged]
    print(f"{args.scenario}, c = {args.fraction} x peak ({fleet['limit_kwh']:.2f} kWh), "
          f"{len(log)} steps, dmpc_iterations {sc.controller.dmpc_iterations}, "
          f"{wall:.0f} s")
    print(f"stopping rule met in {log.converged.mean():.1%} of steps; iterations per step "
          f"mean {log.iterations.mean():.1f}, median {log.iterations.median():.0f}, "
          f"max {log.iterations.max()}")
    if len(missed):
        print(f"not met in {len(missed)} steps: relative excess of the applied plan max "
              f"{missed.max_rel_excess.max():.4f}, median {missed.max_rel_excess.median():.4f}")
    print(f"steps with a plan over c by more than 1 %: {(log.max_rel_excess > 0.01).sum()}")
    print(f"energy cost {fleet['total_cost']:.2f} $, steps over c {fleet['steps_over_limit']}, "
          f"peak district import {fleet['peak_district_import_kwh']:.2f} kWh, backlog at the "
          f"end {kpis['trajectory']['final_backlog_kwh']:.1f} kWh")
    print(f"met_share={log.converged.mean():.4f} cost={fleet['total_cost']:.2f} "
          f"steps_over_limit={fleet['steps_over_limit']}")


if __name__ == "__main__":
    main()
