"""Time one fleet step of the vectorised building model vs stepping buildings one by one.

    python benchmarks/building_step.py [--sizes 7 1000 10000] [--repeats 50]

Both ways run side by side in this process on the same CityLearn inputs. The last
line holds the headline figures as key=value pairs.
"""

from __future__ import annotations

import argparse

import numpy as np
from timing import best_of  # benchmarks/timing.py

from agents.fleet.building import FleetParams, FleetState, step_fleet
from agents.fleet.data import load_citylearn


def _fleet(n: int, seed: int = 0):
    data = load_citylearn()
    rng = np.random.default_rng(seed)
    names = [data.names[i % len(data.names)] for i in range(n)]
    params = FleetParams.from_buildings([data.building(x) for x in names],
                                        demand_scale=rng.choice([1.0, 2.0], n))
    demand, solar, price = data.window(names, 4000, 1)
    actions = rng.random((n, 2))
    return params, FleetState.initial(params, 0.5), demand[0], solar[0], price[0], actions



def measure(n: int, repeats: int) -> tuple[float, float]:
    params, state, demand, solar, price, actions = _fleet(n)

    def vectorised():
        step_fleet(params, state, demand, solar, price, actions[:, 0], actions[:, 1])

    singles = [(params.select([i]), state.select([i])) for i in range(n)]

    def one_by_one():
        for i, (p, s) in enumerate(singles):
            step_fleet(p, s, demand[i:i + 1], solar[i:i + 1], price, actions[i, 0], actions[i, 1])

    vectorised()
    one_by_one()
    loop_repeats = max(3, min(repeats, 20_000 // n))
    return best_of(vectorised, repeats), best_of(one_by_one, loop_repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[7, 1000, 10000])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print("best of repeats; one step of the whole fleet")
    print(f"{'N':>7} {'fleet step [ms]':>16} {'one by one [ms]':>16} {'speed-up':>9}")
    figures = []
    for n in args.sizes:
        vec_s, loop_s = measure(n, args.repeats)
        speedup = loop_s / vec_s
        print(f"{n:>7} {vec_s * 1e3:>16.4f} {loop_s * 1e3:>16.2f} {speedup:>8.1f}x")
        figures += [f"ms_fleet_step_{n}={vec_s * 1e3:.4f}", f"speedup_{n}={speedup:.1f}"]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
