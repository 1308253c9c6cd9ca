"""Where a step of a large fleet goes: fleet, duals, power flow, results, transport.

    python benchmarks/scale_parts.py [--scenario scenarios/hv_mv_100000.yaml]
                                     [--n 100000] [--steps 6] [--shards 4]

Builds the scenario in this process (``buildings.generate.count`` = ``--n``) and runs
``--steps`` steps of the plain engine's loop by hand, timing each part per step:

* ``controller``: the policies' forward pass for every building (``FleetLoop._act``);
* ``duals``: the consensus update on the communication graph (``DualDynamics.update``);
* ``fleet rest``: the building model and the step's bookkeeping (the step minus the two);
* ``power flow``: one power-grid-model solve of the whole grid for the step
  (``grid_solve: per_step``; a run batches its steps, which is faster per step);
* ``results``: handing the step's values to the results stream (``RunWriter``);
* ``transport``: what a cmd-mode run adds per step on the wire, measured as mosaik's
  own encoding: JSON of every shard's messages (its record of every value column,
  ``grid_kwh``, ``r2_kwh`` and ``p_kw`` out, ``lambda``, ``mu``, ``nu`` in), encoded
  and decoded once, as the run process does for all ``--shards`` shards in one thread
  (the shards' own halves run in parallel in their processes and are not counted).

Times are medians over the steps after the first (warm-up). The last line holds the
figures as key=value pairs (milliseconds per step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)
    return wrapper


def _transport_s(values: dict[str, np.ndarray], shards: int) -> float:
    """One step's JSON encode + decode of every shard's messages (the run's side)."""
    from agents.fleet.records import VALUE_COLUMNS

    t0 = time.perf_counter()
    for part in np.array_split(np.arange(len(values["grid_kwh"])), shards):
        lo, hi = int(part[0]), int(part[-1]) + 1
        out = {"record": {"index": lo, **{c: np.asarray(values[c])[lo:hi].tolist()
                                          for c in VALUE_COLUMNS}},
               **{a: np.asarray(values[a])[lo:hi].tolist()
                  for a in ("grid_kwh", "r2_kwh", "p_kw")}}
        json.loads(json.dumps(out))
        back = {a: np.broadcast_to(np.asarray(values[a], float), (len(values["grid_kwh"]),))
                [lo:hi].tolist() for a in ("lambda", "mu", "nu")}
        json.loads(json.dumps(back))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "hv_mv_100000.yaml")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()

    from agents.fleet.runner import FleetLoop
    from cosim.engine.plain import grid_step
    from cosim.engine.run import _writer, prepare_scenario
    from grid_models.grid_model import GridFeed

    t0 = time.perf_counter()
    sc, built = prepare_scenario(args.scenario, [
        ("buildings.generate.count", args.n), ("sharding.shards", 1),
        ("sharding.mode", "inprocess"), ("output.plots", False)], steps=args.steps)
    build_s = time.perf_counter() - t0
    setup = built.setup
    loop = FleetLoop(setup, built.controller, built.duals, built.grid_constraints)
    parts: dict[str, list[float]] = {k: [] for k in
                                     ("step", "controller", "duals", "power flow", "results",
                                      "transport")}
    loop._act = _timed(loop._act, parts["controller"])  # type: ignore[method-assign]
    if loop.duals is not None:
        loop.duals.update = _timed(loop.duals.update, parts["duals"])  # type: ignore[method-assign]
    feed = GridFeed(built.grid, "per_step", 1, setup.n_steps) if built.grid else None
    with tempfile.TemporaryDirectory(prefix="fleetcosim_parts_") as tmp:
        writer = _writer(sc, built, Path(tmp) / "run")
        for t in range(setup.n_steps):
            s0 = time.perf_counter()
            values = loop.step()
            parts["step"].append(time.perf_counter() - s0)
            if feed is not None:
                s0 = time.perf_counter()
                grid_step(feed, None, t, values["p_kw"])
                parts["power flow"].append(time.perf_counter() - s0)
            s0 = time.perf_counter()
            writer.add_buildings(t, values)
            writer.step_done(t)
            parts["results"].append(time.perf_counter() - s0)
            parts["transport"].append(_transport_s(values, args.shards))

    def med(key: str) -> float:
        xs = parts[key][1:] or parts[key]
        return statistics.median(xs) * 1e3 if xs else float("nan")

    figures = {"controller": med("controller"), "duals": med("duals")}
    figures["fleet_rest"] = med("step") - figures["controller"] - figures["duals"]
    figures["power_flow"] = med("power flow")
    figures["results"] = med("results")
    figures["transport"] = med("transport")
    print(f"{args.scenario.name}: {args.n} buildings, {args.steps} steps, built in "
          f"{build_s:.1f} s; transport as for {args.shards} shards")
    for k, v in figures.items():
        print(f"  {k:<12} {v:9.1f} ms/step")
    print(" ".join(f"{k}_ms={v:.1f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
