"""Time one dual update (docs/equations.md) for growing fleets, vectorised vs agent by agent.

    python benchmarks/duals.py [--sizes 10 1000 10000] [--repeats 200]

Graph: small world (Watts-Strogatz, k = 4, p = 0.1), so every agent has a bounded
number of neighbours and one update should cost O(N). Modes: paper, pi, and
atc and averaging with K = 3 rounds, without faults, plus pi with 10 % message
drops. Both implementations run side by side in this process on the same inputs;
times are the best of the repeats. The last line holds the headline figures as
key=value pairs; growth = time(10,000) / time(1,000), 10 meaning linear.
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import best_of  # benchmarks/timing.py

from agents.consensus.duals import DualConfig, DualDynamics
from agents.consensus.faults import FaultModel
from agents.consensus.graphs import make_graph

CASES = {
    "paper": (DualConfig(mode="paper"), None),
    "pi": (DualConfig(mode="pi"), None),
    "atc": (DualConfig(mode="atc", rounds=3), None),
    "averaging": (DualConfig(mode="averaging", rounds=3), None),
    "pi_drops": (DualConfig(mode="pi"), FaultModel(drop_probability=0.1)),
}



def measure(case: str, n: int, repeats: int) -> tuple[float, float]:
    """Seconds per update: (vectorised, agent-by-agent reference)."""
    config, faults = CASES[case]
    graph = make_graph("small_world", n, seed=0)
    rng = np.random.default_rng(0)
    grid = rng.uniform(0.0, 2.0, n)
    r2 = rng.normal(0.0, 0.5, n)
    limit = float(grid.sum())
    fast = DualDynamics(config, graph, limit, faults, seed=0)
    slow = DualDynamics(config, graph, limit, faults, seed=0)
    fast.update(grid, r2)  # warm-up
    vec = best_of(lambda: fast.update(grid, r2), repeats)
    loop = best_of(lambda: slow.reference_update(grid, r2), max(2, min(repeats, 2000 // n)))
    return vec, loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    print("one dual update, best of repeats; small-world graph (k=4, p=0.1)")
    print(f"{'mode':>16} {'N':>7} {'vectorised [us]':>16} {'per-agent loop [us]':>20} "
          f"{'speed-up':>9}")
    times: dict[tuple[str, int], float] = {}
    for case in CASES:
        for n in args.sizes:
            vec, loop = measure(case, n, args.repeats)
            times[case, n] = vec
            print(f"{case:>16} {n:>7} {vec * 1e6:>16.1f} {loop * 1e6:>20.0f} "
                  f"{loop / vec:>8.0f}x")
    figures = [f"us_{case}_{n}={times[case, n] * 1e6:.1f}" for case in CASES for n in args.sizes]
    if 1000 in args.sizes and 10000 in args.sizes:
        for case in CASES:
            figures.append(
                f"growth_1000_to_10000_{case}={times[case, 10000] / times[case, 1000]:.2f}"
            )
    print(" ".join(figures))


if __name__ == "__main__":
    main()
