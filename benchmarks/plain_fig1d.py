"""The paper's Fig. 1d setup through the plain-loop runner: paper vs pi vs independent.

    python benchmarks/plain_fig1d.py [--steps 3000] [--fraction 0.27]

Seven CityLearn 2022 buildings (Building_1..7), two weakly connected clusters
({0,1,2} and {3,4,5,6}, one bridge edge), one double-demand agent per cluster
(agents 1 and 5), the shipped policies, c = fraction x peak district demand,
backlog capped at the training recipe's 24 kWh. Prints, per dual mode, the
fleet KPIs and a description of the lambda trajectories, then the steps/s of the
plain loop; the last line holds key=value pairs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from agents.consensus.duals import DualConfig, DualDynamics
from agents.consensus.graphs import make_graph
from agents.fleet.kpis import fleet_kpis
from agents.fleet.paths import REPO_ROOT
from agents.fleet.runner import FleetSetup, district_limit_kwh, run_plain
from agents.learning.policy import PolicyLibrary

NAMES = [f"Building_{i}" for i in range(1, 8)]
DEMAND_SCALE = [1.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0]
LAMBDA_MAX = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--fraction", type=float, default=0.27)
    args = parser.parse_args()
    setup = FleetSetup.from_citylearn(NAMES, 0, args.steps, demand_scale=DEMAND_SCALE,
                                      backlog_cap_kwh=24.0)
    limit = district_limit_kwh(setup, args.fraction)
    classes = ["double" if s == 2.0 else "normal" for s in DEMAND_SCALE]
    library = PolicyLibrary.from_directory(REPO_ROOT / "data" / "policies", classes)
    graph = make_graph("two_clusters", len(NAMES))
    figures = [f"steps={args.steps}", f"limit_kwh={limit:.3f}"]
    print(f"c = {args.fraction:g} x peak = {limit:.2f} kWh per step, {args.steps} steps")
    for mode in ("paper", "pi", "independent"):
        duals = DualDynamics(DualConfig(mode=mode, lambda_max=LAMBDA_MAX), graph, limit)
        t0 = time.perf_counter()
        df = run_plain(setup, library, duals)
        wall = time.perf_counter() - t0
        k = fleet_kpis(df, limit, setup.dt_h, lambda_max=LAMBDA_MAX)
        lam = df.pivot(index="time", columns="building", values="lambda")[NAMES].to_numpy()
        final = lam[-1]
        at_max_share = (lam >= LAMBDA_MAX - 1e-9).mean(axis=0)
        last_third = lam[2 * len(lam) // 3:].mean(axis=0)
        print(f"\n{mode}: {wall:.2f} s, {args.steps / wall:.0f} steps/s")
        print(f"  mean district grid {k['mean_district_grid_kwh']:.3f} kWh/step (c {limit:.3f}), "
              f"final avg unmet {k['final_avg_unmet_kwh']:.2f} kWh, "
              f"dropped {k['dropped_kwh']:.1f} kWh, cost {k['total_cost']:.1f}")
        print(f"  final lambda          {np.round(final, 2)}")
        print(f"  mean lambda, last 1/3 {np.round(last_third, 2)}")
        print(f"  share of steps at lambda_max {np.round(at_max_share, 2)}")
        spread = float(final.max() - final.min())
        figures += [
            f"{mode}_final_spread={spread:.3f}",
            f"{mode}_last_third_spread={float(last_third.max() - last_third.min()):.3f}",
            f"{mode}_agents_at_lambda_max={int((final >= LAMBDA_MAX - 1e-9).sum())}",
            f"{mode}_mean_grid_kwh={k['mean_district_grid_kwh']:.3f}",
            f"{mode}_dropped_kwh={k['dropped_kwh']:.1f}",
            f"{mode}_steps_per_s={args.steps / wall:.0f}",
        ]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
