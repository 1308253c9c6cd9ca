"""The three ways a controller gets on the bench, each against the same controller
in-process, measured side by side in one run.

    python benchmarks/controller_ways.py [--steps 720] [--repeats 3]

The controller is the price-aware heuristic (agents.control.rules.PriceAwareHeuristic)
on ``paper_fig1d`` (mosaik, power flows solved per step in every case, so that only the
controller's way in differs):

- ``inprocess``: ``controller.kind: heuristic``, the reference;
- ``python_class``: the same class named in the scenario (``controller.kind: python``,
  ``entry: agents.control.rules:PriceAwareHeuristic``-like, through a user module);
- ``remote_cmd``: ``examples/remote_controller.py`` in a process of its own (mosaik
  "cmd"; process start and connection included);
- ``fleet_env``: ``cosim.engine.fleet_env.FleetParallelEnv`` stepped with the heuristic's
  actions (no mosaik, no results written), against the plain engine with the heuristic,
  power flows per step (``plain_inprocess``).

Each figure is the best of ``--repeats`` wall times, scenario building excluded. The
last line holds steps/s and the ratios to the in-process runs as key=value pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/cosim.py is named like the package: keep this folder off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from agents.control.rules import PriceAwareHeuristic  # noqa: E402
from cosim.engine.fleet_env import FleetParallelEnv  # noqa: E402
from cosim.engine.run import execute, prepare_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "paper_fig1d.yaml"
USER_MODULE = '''
from agents.control.rules import PriceAwareHeuristic


class Heuristic(PriceAwareHeuristic):
    def __init__(self, context):
        super().__init__(context.params)
'''
CONTROLLERS = {
    "inprocess": {"kind": "heuristic"},
    "python_class": {"kind": "python", "entry": "bench_user_heuristic:Heuristic"},
    "remote_cmd": {"kind": "remote",
                   "remote_cmd": "%(python)s examples/remote_controller.py %(addr)s"},
}


def run_s(controller: dict[str, object], steps: int, out: Path, engine: str = "mosaik"
          ) -> float:
    """Wall time of one run (scenario built before the clock starts)."""
    sc, built = prepare_scenario(SCENARIO, [("controller", controller),
                                            ("output.plots", False)], steps)
    t0 = time.perf_counter()
    execute(sc, built, out, progress=False, force=True, engine=engine, grid_solve="per_step")
    return time.perf_counter() - t0


def env_s(steps: int) -> float:
    """Wall time of one episode of the fleet env driven by the heuristic."""
    env = FleetParallelEnv.from_scenario(SCENARIO, steps=steps)
    heuristic = PriceAwareHeuristic(env.built.setup.params)
    t0 = time.perf_counter()
    env.reset(seed=0)
    while env.agents:
        actions = heuristic.act(env.loop.observe())
        env.step({a: actions[i] for i, a in enumerate(env.possible_agents)})
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        (code / "bench_user_heuristic.py").write_text(USER_MODULE)
        CONTROLLERS["python_class"]["path"] = str(code)
        best: dict[str, float] = {}
        for _ in range(args.repeats):  # interleaved, so that load changes hit all alike
            for name, controller in CONTROLLERS.items():
                s = run_s(controller, args.steps, Path(tmp) / name)
                best[name] = min(best.get(name, float("inf")), s)
            s = run_s(CONTROLLERS["inprocess"], args.steps, Path(tmp) / "plain", "plain")
            best["plain_inprocess"] = min(best.get("plain_inprocess", float("inf")), s)
            best["fleet_env"] = min(best.get("fleet_env", float("inf")), env_s(args.steps))
    rate = {k: args.steps / v for k, v in best.items()}
    ratio = {"python_class": rate["python_class"] / rate["inprocess"],
             "remote_cmd": rate["remote_cmd"] / rate["inprocess"],
             "fleet_env": rate["fleet_env"] / rate["plain_inprocess"],
             "fleet_env_vs_mosaik": rate["fleet_env"] / rate["inprocess"]}
    print(f"paper_fig1d, {args.steps} steps, best of {args.repeats}")
    print(f"{'way':<18}{'wall s':>10}{'steps/s':>10}{'ratio':>8}  against")
    for name, against in (("inprocess", ""), ("python_class", "inprocess"),
                          ("remote_cmd", "inprocess"), ("plain_inprocess", ""),
                          ("fleet_env", "plain_inprocess")):
        r = f"{ratio[name]:.3f}" if name in ratio else ""
        print(f"{name:<18}{best[name]:>10.3f}{rate[name]:>10.1f}{r:>8}  {against}")
    print(" ".join([f"steps_per_s_{k}={v:.1f}" for k, v in rate.items()]
                   + [f"ratio_{k}={v:.3f}" for k, v in ratio.items()]))


if __name__ == "__main__":
    main()
